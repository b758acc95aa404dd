# Input and params functions of the report rules (rules/report.smk).


def dataset_objects(wildcards):
    dataset = DATASETS[wildcards.dataset]
    good = passed_images(dataset.name)
    return [
        f"{RESULTS}/{dataset.name}/{image}/objects.csv"
        for image in dataset.images
        if image in good
    ]


def sam_checkpoints():
    """(model, checkpoint) of every dataset, for the weights' sha256 in the run report."""
    return sorted(
        {
            (d.method.model.name, d.method.model.checkpoint or "")
            for d in DATASETS.values()
        }
    )


def report_outputs():
    names = ["astm.csv", "report/sizes.png", "report/fields.png", "report/tables.html"]
    return [f"{RESULTS}/report/run.html"] + [
        f"{RESULTS}/{dataset}/{name}" for dataset in DATASETS for name in names
    ]
