# Config validation, the dataset catalogue, wildcard constraints and every input function.

from matsam.config import ConfigError
from matsam.workflow.catalogue import NAME_PATTERN, load_catalog, load_stacks
from matsam.workflow.schema import validate

try:
    # One pass: a one-line error naming the key, then the schema's run-level defaults filled in.
    validate(config)
    DATASETS = load_catalog(config)
except ConfigError as error:
    raise WorkflowError(f"invalid configuration: {error}")

RESULTS = config["results"]
WORK = f"{RESULTS}/_work"
LOGS = f"{RESULTS}/_logs"
CONDA_ENV = "../envs/matsam.yaml"

try:  # serial-section stacks: their slices join the catalogue as datasets "<stack>/slices"
    STACKS = load_stacks(config, DATASETS, f"{WORK}/_stacks")
except ConfigError as error:
    raise WorkflowError(f"invalid configuration: {error}")
DATASETS.update({stack.dataset.name: stack.dataset for stack in STACKS.values()})

if workflow.is_main_process:  # not again inside each cluster job
    from matsam.io import OutputError
    from matsam.workflow.preflight import preflight
    from matsam.segmentation.weights import WeightsError

    try:
        models = [dataset.method.model for dataset in DATASETS.values()]
        preflight(models, RESULTS, workflow.local_exec)
    except (ConfigError, WeightsError, OutputError) as error:
        raise WorkflowError(f"pre-flight: {error}")


wildcard_constraints:
    dataset="|".join(DATASETS) or "(?!)",
    image=NAME_PATTERN,
    shard=NAME_PATTERN,


def datasets_of_mode(mode):
    return "|".join(n for n, d in DATASETS.items() if d.mode == mode) or "(?!)"


def labelled_datasets():
    return [name for name, d in DATASETS.items() if d.labels]


def raw_image(wildcards):
    return DATASETS[wildcards.dataset].images[wildcards.image]


def label_file(wildcards):
    return DATASETS[wildcards.dataset].labels[wildcards.image]


def sam_shard(wildcards):
    """The SAM job's folder holding this image's crop masks."""
    dataset = DATASETS[wildcards.dataset]
    return f"{WORK}/{dataset.name}/sam/{dataset.shard_of(wildcards.image)}"


def shard_inputs(kind):
    """Input function: the `kind` work file (image.png, crops.json, prompts.npz) of every image
    of a SAM shard."""

    def files(wildcards):
        dataset = DATASETS[wildcards.dataset]
        good = passed_images(dataset.name)
        return [
            f"{WORK}/{dataset.name}/{image}/{kind}"
            for image in dataset.shards[wildcards.shard]
            if image in good
        ]

    return files


def check_inputs(wildcards):
    """check_input's files: the raw image and, when labelled, its label."""
    dataset = DATASETS[wildcards.dataset]
    files = {"raw": dataset.images[wildcards.image]}
    if wildcards.image in dataset.labels:
        files["label"] = dataset.labels[wildcards.image]
    return files


def dataset_check_files(wildcards):
    dataset = DATASETS[wildcards.dataset]
    return [f"{WORK}/{dataset.name}/{image}/check.json" for image in dataset.images]


STACK_DATASETS = {stack.dataset.name for stack in STACKS.values()}


def checked_datasets():
    """Datasets whose files are checked; a stack's slices were already read at DAG time."""
    return [name for name in DATASETS if name not in STACK_DATASETS]


def passed_images(name):
    """Images of dataset `name` whose check passed (waits for collect_checks)."""
    from matsam.workflow.input_check import passed_images as read_passed

    if name in STACK_DATASETS:
        return set(DATASETS[name].images)
    return read_passed(checkpoints.collect_checks.get(dataset=name).output.checks)


def map_file(wildcards):
    name = DATASETS[wildcards.dataset].map_name
    return f"{RESULTS}/{wildcards.dataset}/{wildcards.image}/{name}.png"


def section(name):
    """params function: the dataset's settings of one stage section (a dict), so editing a value
    reruns only the rules that take the section."""

    def params(wildcards):
        return DATASETS[wildcards.dataset].section(name)

    return params


def dataset_mode(wildcards):
    return DATASETS[wildcards.dataset].mode


def dataset_baselines(wildcards):
    return config["baselines"][DATASETS[wildcards.dataset].mode]


def sam_gpus(wildcards):
    """One GPU per SAM job unless the run is told to stay on CPUs (`device: cpu`); with `auto`
    a job uses the GPU it gets and falls back to the CPU where there is none."""
    return 0 if config["device"] == "cpu" else 1


def megapixels(png):
    """Pixels of a PNG from its header, in millions (no decoding)."""
    import struct

    with open(png, "rb") as fh:
        width, height = struct.unpack(">II", fh.read(24)[16:24])
    return width * height / 1e6


def image_megapixels(input):
    return megapixels(input.image)


def crop_megapixels(crops_json):
    """Largest crop of an image, in millions of pixels (from crops.json)."""
    import json

    with open(crops_json) as fh:
        crops = json.load(fh)["crops"]
    return max((c["x1"] - c["x0"]) * (c["y1"] - c["y0"]) for c in crops) / 1e6


def embed_mem_mb(wildcards, input, attempt):
    largest = max(megapixels(f) for f in input.images)
    return int((2000 + 1500 * largest) * attempt)


def embed_runtime(wildcards, input, attempt):
    """Minutes: one encoder pass (seconds on a CPU) per crop, doubled per retry."""
    crops = DATASETS[wildcards.dataset].n_crops
    return int((10 + 0.5 * crops * len(input.images)) * attempt)


def decode_mem_mb(wildcards, input, attempt):
    largest = max(crop_megapixels(f) for f in input.crops)
    return int((1500 + 1500 * largest) * attempt)


def decode_runtime(wildcards, input, attempt):
    """Minutes: generous for a CPU (about a minute per megapixel and crop), doubled per retry."""
    total = sum(crop_megapixels(f) for f in input.crops)
    return int(
        (10 + 2 * DATASETS[wildcards.dataset].n_crops * max(total, 0.25)) * attempt
    )


def decode_points_per_batch(wildcards, attempt):
    """Prompts decoded at once, halved on each retry: a decoder job that ran out of memory
    is retried with smaller batches (and twice the memory)."""
    from matsam.workflow.job import retry_batch

    batch = DATASETS[wildcards.dataset].method.sam.points_per_batch
    return retry_batch(batch, attempt)


def embeddings_output(path):
    """The encoder's output folder; deleted once decoded unless `keep_embeddings` (the cache)."""
    return (
        directory(path)
        if config.get("keep_embeddings", True)
        else temp(directory(path))
    )


def cpu_mem_mb(wildcards, input, attempt):
    return int((500 + 800 * image_megapixels(input)) * attempt)


def dataset_metrics(wildcards):
    dataset = DATASETS[wildcards.dataset]
    good = passed_images(dataset.name)
    return [
        f"{RESULTS}/{dataset.name}/{image}/metrics.csv"
        for image in dataset.labels
        if image in good
    ]


def dataset_summaries(wildcards):
    dataset = DATASETS[wildcards.dataset]
    good = passed_images(dataset.name)
    return [
        f"{RESULTS}/{dataset.name}/{image}/summary.json"
        for image in dataset.images
        if image in good
    ]


def final_outputs(wildcards):
    """Every per-image file of the images that passed their check, not only the tables:
    `--batch all=i/n` (inputs sorted by path) then runs whole image chains in each batch, and
    the last batch has only the tables left to write.
    """
    outputs = [f"{RESULTS}/summary.csv", f"{RESULTS}/failed.csv"]
    for name, dataset in DATASETS.items():
        good = passed_images(name)
        for image in dataset.images:
            if image not in good:
                continue
            folder = f"{RESULTS}/{name}/{image}"
            outputs += [
                f"{folder}/overlay.png",
                f"{folder}/objects.csv",
                f"{folder}/{dataset.map_name}.png",
                f"{folder}/summary.json",
                f"{folder}/objects.coco.json",
            ]
            if image in dataset.labels:
                outputs.append(f"{folder}/metrics.csv")
    outputs += stack_outputs()
    return outputs


def stack_outputs():
    names = [
        "labels3d.h5",
        "grains3d.csv",
        "neighbours3d.csv",
        "summary.csv",
        "shifts.json",
        "ortho_xy.png",
        "ortho_xz.png",
        "ortho_yz.png",
    ]
    return [f"{RESULTS}/{stack}/{name}" for stack in STACKS for name in names]


def stack_slice_files(kind):
    """link_stack input function: per slice in z order, its labels.tif ("labels"; grain stacks),
    phase.png ("maps"; phase stacks) or 8-bit image.png ("grey")."""

    def files(wildcards):
        stack = STACKS[wildcards.stack]
        name = stack.dataset.name
        if kind == "grey":
            return [
                f"{WORK}/{name}/{image}/image.png" for image in stack.dataset.images
            ]
        if (kind == "labels") != (stack.mode == "grain"):
            return []
        file = "labels.tif" if kind == "labels" else f"{stack.dataset.map_name}.png"
        return [f"{RESULTS}/{name}/{image}/{file}" for image in stack.dataset.images]

    return files


def stack_voxel_size(wildcards):
    voxel = STACKS[wildcards.stack].voxel_size_um
    return list(voxel) if voxel else None


def stack_link(wildcards):
    """The stack's `link:` settings (config.LinkConfig) as a dict."""
    from dataclasses import asdict

    return asdict(STACKS[wildcards.stack].link)


def stack_mem_mb(wildcards, input, attempt):
    """About 16 bytes per voxel (2D and 3D labels, grey, measurements) plus the interpreter."""
    import struct

    with open(input.grey[0], "rb") as fh:
        width, height = struct.unpack(">II", fh.read(24)[16:24])
    return int((1000 + 16 * len(input.grey) * width * height / 1e6) * attempt)


def stack_runtime(wildcards, attempt):
    return int((10 + len(STACKS[wildcards.stack].dataset.images) / 20) * attempt)
