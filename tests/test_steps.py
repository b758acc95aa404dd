"""Tests of the pipeline's file-to-file steps (matsam/workflow/steps.py) on tiny synthetic files,
without the SAM model, and of the wiring rule -> script -> step."""

from __future__ import annotations

import ast
import re

import numpy as np
import pandas as pd
import pytest
import tifffile
from conftest import REPO
from synthetic import voronoi_micrograph
from test_merge import write_merge_inputs

from matsam import io
from matsam.config import STAGES, CropConfig, MergeConfig, PromptConfig, QuantifyConfig, ReadConfig
from matsam.measurement.metrics import METRIC_COLUMNS
from matsam.segmentation.crops import Crop
from matsam.segmentation.merge import Candidate
from matsam.segmentation.prompts import adaptive_grid
from matsam.workflow import steps

# --- prepare_image, plan_crops, make_prompts ----------------------------------------------------


def sixteen_bit(tmp_path):
    """A 16-bit micrograph whose grey levels use a narrow part of the range (1000 and 2000) and
    one pixel each at 0 and 65535."""
    raw = np.full((32, 32), 1000, np.uint16)
    raw[:16] = 2000
    raw[0, 0], raw[0, 1] = 65535, 0
    tifffile.imwrite(tmp_path / "raw.tif", raw)
    return tmp_path / "raw.tif"


def test_prepare_image_full_maps_the_dtype_range(tmp_path):
    steps.prepare_image(sixteen_bit(tmp_path), tmp_path / "full.png", ReadConfig(scale16="full"))
    rgb = io.read_image(tmp_path / "full.png")
    assert rgb.shape == (32, 32, 3) and rgb.dtype == np.uint8
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 0] == rgb[..., 2]).all()
    assert rgb[0, 0, 0] == 255 and rgb[0, 1, 0] == 0
    assert rgb[8, 8, 0] == round(2000 / 65535 * 255) == 8  # full range: the narrow band stays dark
    assert rgb[24, 24, 0] == round(1000 / 65535 * 255) == 4


def test_prepare_image_percentile_stretches_the_used_range(tmp_path):
    raw = sixteen_bit(tmp_path)
    steps.prepare_image(raw, tmp_path / "pct.png", ReadConfig(scale16="percentile"))
    steps.prepare_image(raw, tmp_path / "full.png", ReadConfig(scale16="full"))
    pct, full = io.read_image(tmp_path / "pct.png"), io.read_image(tmp_path / "full.png")
    assert pct[24, 24, 0] == 0 and pct[8, 8, 0] == 255  # the 0.5 / 99.5 percentiles: 1000 and 2000
    assert not np.array_equal(pct, full)


def test_prepare_image_leaves_8_bit_rgb_as_it_is(tmp_path):
    rgb, _ = voronoi_micrograph(0, size=48, n_grains=6)
    rgb = rgb.copy()
    rgb[..., 0] //= 2  # a colour image, so the channels must not be mixed up
    io.write_png(tmp_path / "in.png", rgb)
    steps.prepare_image(tmp_path / "in.png", tmp_path / "out.png", ReadConfig(scale16="full"))
    assert np.array_equal(io.read_image(tmp_path / "out.png"), rgb)


def test_plan_crops_with_one_layer_writes_five_crops_covering_the_image(tmp_path):
    io.write_png(tmp_path / "image.png", np.zeros((60, 90, 3), np.uint8))
    steps.plan_crops(tmp_path / "image.png", tmp_path / "crops.json", CropConfig(n_layers=1))
    plan = io.read_json(tmp_path / "crops.json")
    assert (plan["height"], plan["width"]) == (60, 90)
    crops = steps.read_crops(tmp_path / "crops.json")
    assert len(crops) == 5 and [c.index for c in crops] == [0, 1, 2, 3, 4]
    assert crops[0] == Crop(0, 0, 0, 0, 90, 60)
    assert [c.layer for c in crops] == [0, 1, 1, 1, 1]
    covered = np.zeros((60, 90), int)
    for c in crops[1:]:
        assert 0 <= c.x0 < c.x1 <= 90 and 0 <= c.y0 < c.y1 <= 60
        assert c.width < 90 and c.height < 60
        covered[c.y0 : c.y1, c.x0 : c.x1] += 1
    assert (covered >= 1).all()  # the layer tiles the whole image ...
    assert (covered >= 2).any()  # ... with overlap


def dark_squares(size: int = 96):
    """Dark squares (40) on a bright ground (190): RGB image and the squares as (y0, x0, side)."""
    squares = [(10, 10, 16), (40, 40, 16), (70, 14, 16)]
    grey = np.full((size, size), 190, np.uint8)
    for y0, x0, side in squares:
        grey[y0 : y0 + side, x0 : x0 + side] = 40
    return np.repeat(grey[..., None], 3, axis=2), squares


def test_make_prompts_writes_every_crops_points_in_the_crops_frame(tmp_path):
    """A crop's seed points are in its own pixel frame: shifted by the crop's offset they land on
    a dark square; grid points lie inside the crop's box."""
    rgb, _ = dark_squares()
    io.write_png(tmp_path / "image.png", rgb)
    steps.plan_crops(tmp_path / "image.png", tmp_path / "crops.json", CropConfig(n_layers=1))
    steps.make_prompts(tmp_path / "image.png", tmp_path / "crops.json", tmp_path / "prompts.npz", "phase",
                       PromptConfig())
    prompts = io.read_npz(tmp_path / "prompts.npz")
    assert str(prompts["foreground"]) == "dark"
    assert 40 < float(prompts["threshold"]) < 190
    crops = steps.read_crops(tmp_path / "crops.json")
    assert {k for k in prompts if k.startswith("points_")} == {f"points_{c.index}" for c in crops}
    dark = rgb[..., 0] < 100
    shifted = 0
    for crop in crops:
        points, n_seed = prompts[f"points_{crop.index}"], int(prompts[f"n_seed_{crop.index}"])
        assert points.dtype == np.float32 and points.ndim == 2 and points.shape[1] == 2
        assert (points[:, 0] >= 0).all() and (points[:, 0] < crop.width).all()
        assert (points[:, 1] >= 0).all() and (points[:, 1] < crop.height).all()
        seeds = points[:n_seed].astype(int)
        assert n_seed >= 1
        assert dark[seeds[:, 1] + crop.y0, seeds[:, 0] + crop.x0].all(), crop
        shifted += crop.x0 > 0 or crop.y0 > 0
    assert shifted == 3  # crops with an offset: the frame is tested, not assumed


def test_make_prompts_of_a_grain_image_has_no_threshold(tmp_path):
    rgb, boundary = voronoi_micrograph(1, size=96, n_grains=10)
    io.write_png(tmp_path / "image.png", rgb)
    steps.plan_crops(tmp_path / "image.png", tmp_path / "crops.json", CropConfig())
    steps.make_prompts(tmp_path / "image.png", tmp_path / "crops.json", tmp_path / "prompts.npz", "grain",
                       PromptConfig())
    prompts = io.read_npz(tmp_path / "prompts.npz")
    assert np.isnan(float(prompts["threshold"])) and str(prompts["foreground"]) == ""
    assert set(prompts) == {"threshold", "foreground", "points_0", "n_seed_0"}
    seeds = prompts["points_0"][: int(prompts["n_seed_0"])].astype(int)
    assert len(seeds) >= 5 and not boundary[seeds[:, 1], seeds[:, 0]].any()  # inside grains
    assert len(prompts["points_0"]) <= PromptConfig().max_points


def many_dots(n_side: int = 20, pitch: int = 10):
    """n_side**2 dark 5 x 5 dots on a bright ground: as many pre-segmented regions."""
    grey = np.full((n_side * pitch, n_side * pitch), 190, np.uint8)
    for y in range(n_side):
        for x in range(n_side):
            grey[y * pitch + 2 : y * pitch + 7, x * pitch + 2 : x * pitch + 7] = 40
    return np.repeat(grey[..., None], 3, axis=2)


@pytest.mark.parametrize("n_side, max_points", [(20, 400), (6, 400), (6, 120)])
def test_the_grid_is_kept_whole_and_seeds_fill_the_room_left_by_max_points(tmp_path, n_side, max_points):
    """400 regions: the grid alone exceeds the cap, so grid points only (measured more accurate than
    seeds on UHCS); 36 regions: every seed fits; a lower cap trims the seeds, never the grid."""
    io.write_png(tmp_path / "image.png", many_dots(n_side))
    steps.plan_crops(tmp_path / "image.png", tmp_path / "crops.json", CropConfig())
    cfg = PromptConfig(max_points=max_points)
    steps.make_prompts(tmp_path / "image.png", tmp_path / "crops.json", tmp_path / "prompts.npz", "phase", cfg)
    prompts = io.read_npz(tmp_path / "prompts.npz")
    n_points, n_seed = len(prompts["points_0"]), int(prompts["n_seed_0"])
    side = n_side * 10
    grid = adaptive_grid(side, side, n_side**2, cfg)
    assert n_points - n_seed == len(grid)
    assert n_seed == min(n_side**2, max(max_points - len(grid), 0))
    np.testing.assert_array_equal(prompts["points_0"][n_seed:], grid)


# --- merge_masks, draw_overlay, quantify_objects, evaluate_image ---------------------------------

PHASE_SQUARES = [(8, 8, 16), (36, 30, 20)]  # (y0, x0, side)


@pytest.fixture
def phase_result(tmp_path):
    """A phase image with two dark squares, SAM's masks of exactly them, and merge_masks' outputs."""
    grey = np.full((64, 64), 180, np.uint8)
    truth = np.zeros((64, 64), np.uint8)
    for y0, x0, side in PHASE_SQUARES:
        grey[y0 : y0 + side, x0 : x0 + side] = 40
        truth[y0 : y0 + side, x0 : x0 + side] = 1
    cands = [Candidate(np.ones((side, side), bool), x0, y0, 64 * 64, 0.9) for y0, x0, side in PHASE_SQUARES]
    write_merge_inputs(tmp_path, grey, cands)
    steps.merge_masks(tmp_path / "image.png", tmp_path / "crops.json", tmp_path / "prompts.npz", tmp_path / "masks",
                      "img", tmp_path / "labels.tif", tmp_path / "phase.png", "phase", MergeConfig(), 3, 0.5)
    return tmp_path, truth


def test_merge_masks_writes_labels_and_the_phase_mask(phase_result):
    folder, truth = phase_result
    labels = io.read_image(folder / "labels.tif")
    phase = io.read_image(folder / "phase.png")
    assert labels.dtype == np.uint32 and labels.shape == (64, 64)
    assert np.array_equal(phase, truth)
    ids = [labels[y0 + 1, x0 + 1] for y0, x0, _ in PHASE_SQUARES]
    assert sorted(ids) == [1, 2]
    for (y0, x0, side), i in zip(PHASE_SQUARES, ids):
        assert np.count_nonzero(labels == i) == side * side
        assert (labels[y0 : y0 + side, x0 : x0 + side] == i).all()
    assert io.tiff_pixel_size_um(folder / "labels.tif") == pytest.approx(0.5)  # Fiji opens it at scale


def test_draw_overlay_tints_the_objects(phase_result):
    folder, truth = phase_result
    steps.draw_overlay(folder / "image.png", folder / "labels.tif", folder / "phase.png", folder / "overlay.png",
                       "phase")
    overlay = io.read_image(folder / "overlay.png")
    image = io.read_image(folder / "image.png")
    assert overlay.shape == image.shape and overlay.dtype == np.uint8
    changed = (overlay != image).any(axis=2)
    assert changed[truth == 1].all()
    assert changed[truth == 0].mean() < 0.1  # the ground is left as it is (outlines aside)


def test_quantify_objects_measures_the_squares(phase_result):
    folder, _ = phase_result
    steps.quantify_objects(folder / "image.png", folder / "labels.tif", folder / "phase.png", folder / "objects.csv",
                           folder / "summary.json", "phase", QuantifyConfig(pixel_size_um=0.5), "img",
                           folder / "coco.json")
    table = pd.read_csv(folder / "objects.csv").sort_values("area_px")
    assert table["area_px"].tolist() == [256, 400]
    assert table["area_um2"].tolist() == pytest.approx([64.0, 100.0])
    assert table["mean_intensity"].tolist() == pytest.approx([40.0, 40.0])
    assert table["feret_min_px"].tolist() == pytest.approx([16.0, 20.0])
    assert table["feret_min_um"].tolist() == pytest.approx([8.0, 10.0])
    assert table["centroid_x"].tolist() == pytest.approx([15.5, 39.5])
    assert not table["touches_border"].any()
    summary = io.read_json(folder / "summary.json")
    assert (summary["image"], summary["mode"], summary["n_objects"]) == ("img", "phase", 2)
    assert summary["mean_area_px"] == pytest.approx(328.0)
    assert summary["phase_fraction"] == pytest.approx(656 / 4096)
    assert summary["astm_g_planimetric"] is None  # no grain size for particles
    coco = io.read_json(folder / "coco.json")
    assert len(coco["annotations"]) == 2 and coco["images"][0]["file_name"] == "image.png"
    assert sorted(a["area"] for a in coco["annotations"]) == [256, 400]


def test_evaluate_image_scores_matsam_and_the_baselines(phase_result):
    folder, truth = phase_result
    io.write_png(folder / "label.png", truth)
    steps.evaluate_image(folder / "image.png", folder / "phase.png", folder / "label.png", folder / "prompts.npz",
                         folder / "metrics.csv", "phase", "img", ["otsu", "adaptive"])
    table = pd.read_csv(folder / "metrics.csv")
    assert list(table.columns) == METRIC_COLUMNS
    assert table["method"].tolist() == ["matsam", "otsu", "adaptive"]
    assert (table["image"] == "img").all()
    matsam = table.iloc[0]
    assert (matsam["iou"], matsam["f1"], matsam["recall"]) == (1.0, 1.0, 1.0)
    assert table.loc[table["method"] == "otsu", "iou"].item() == pytest.approx(1.0)  # two clean levels


def test_grain_merge_and_quantify_on_four_grains(tmp_path):
    """Four square grains split by a dark cross: labels tile the image, the boundary map is one
    line, and the summary has the ASTM counts."""
    grey = np.full((64, 64), 180, np.uint8)
    grey[31:33, :] = grey[:, 31:33] = 40
    cands = [Candidate(np.ones((31, 31), bool), x, y, 64 * 64, 0.9) for y in (0, 33) for x in (0, 33)]
    write_merge_inputs(tmp_path, grey, cands)
    steps.merge_masks(tmp_path / "image.png", tmp_path / "crops.json", tmp_path / "prompts.npz", tmp_path / "masks",
                      "img", tmp_path / "labels.tif", tmp_path / "boundaries.png", "grain", MergeConfig(), 3, None)
    labels = io.read_image(tmp_path / "labels.tif")
    assert sorted(np.unique(labels).tolist()) == [1, 2, 3, 4]
    assert len({labels[5, 5], labels[5, 60], labels[60, 5], labels[60, 60]}) == 4
    boundaries = io.read_image(tmp_path / "boundaries.png")
    assert set(np.unique(boundaries).tolist()) == {0, 1}
    assert 64 + 63 <= boundaries.sum() <= 2 * (64 + 64)  # a one-pixel cross
    steps.quantify_objects(tmp_path / "image.png", tmp_path / "labels.tif", tmp_path / "boundaries.png",
                           tmp_path / "objects.csv", tmp_path / "summary.json", "grain",
                           QuantifyConfig(pixel_size_um=0.5), "img")
    summary = io.read_json(tmp_path / "summary.json")
    assert summary["n_objects"] == 4 and summary["unlabelled_fraction"] == 0.0
    assert summary["astm_n_edge"] == 4 and summary["astm_g_planimetric"] is not None
    assert len(pd.read_csv(tmp_path / "objects.csv")) == 4
    assert not (tmp_path / "coco.json").exists()  # no coco_out, no COCO file


# --- aggregation --------------------------------------------------------------------------------


def write_metrics(path, rows, columns):
    pd.DataFrame(rows).reindex(columns=columns).to_csv(path, index=False)


def test_aggregate_dataset_puts_the_metric_columns_in_order(tmp_path):
    """Per-class IoU columns come after the fixed ones in class order (2 before 10), whatever
    order the images' files had and whichever images have them."""
    write_metrics(tmp_path / "a.csv", [{"image": "a", "method": "matsam", "iou": 0.5, "iou_class_10": 0.1,
                                        "iou_class_2": 0.2, "recall": 0.7}],
                  ["recall", "iou_class_10", "method", "iou", "image", "iou_class_2"])
    write_metrics(tmp_path / "b.csv", [{"image": "b", "method": "matsam", "iou": 0.9, "f1": 0.8}],
                  ["f1", "image", "iou", "method"])
    io.write_json(tmp_path / "a.json", {"image": "a", "n_objects": 3})
    io.write_json(tmp_path / "b.json", {"image": "b", "n_objects": 5})
    steps.aggregate_dataset([tmp_path / "a.csv", tmp_path / "b.csv"], [tmp_path / "a.json", tmp_path / "b.json"],
                            tmp_path / "metrics.csv", tmp_path / "summary.csv")
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert list(metrics.columns) == [*METRIC_COLUMNS, "iou_class_2", "iou_class_10"]
    assert metrics["image"].tolist() == ["a", "b"] and metrics["iou"].tolist() == [0.5, 0.9]
    assert np.isnan(metrics.loc[1, "iou_class_2"]) and metrics.loc[0, "iou_class_2"] == 0.2
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert summary["image"].tolist() == ["a", "b"] and summary["n_objects"].tolist() == [3, 5]


def test_aggregate_dataset_of_an_unlabelled_dataset_has_the_metric_header(tmp_path):
    io.write_json(tmp_path / "a.json", {"image": "a", "n_objects": 3})
    steps.aggregate_dataset([], [tmp_path / "a.json"], tmp_path / "metrics.csv", tmp_path / "summary.csv")
    assert (tmp_path / "metrics.csv").read_text().strip() == ",".join(METRIC_COLUMNS)


def test_aggregate_all_one_row_per_dataset_and_method(tmp_path):
    write_metrics(tmp_path / "grains.csv", [
        {"image": "a", "method": "matsam", "ari": 0.8, "iou": 0.6},
        {"image": "b", "method": "matsam", "ari": 0.6, "iou": 0.4},
        {"image": "a", "method": "canny", "ari": 0.2, "iou": 0.1},
    ], METRIC_COLUMNS[::-1])
    write_metrics(tmp_path / "alloy.csv", [
        {"image": "x", "method": "matsam", "iou": 0.9, "iou_class_10": 0.3, "iou_class_2": 0.5},
        {"image": "y", "method": "matsam", "iou": 0.7, "iou_class_10": 0.5, "iou_class_2": 0.7},
    ], [*METRIC_COLUMNS, "iou_class_10", "iou_class_2"])
    steps.aggregate_all(["grains", "alloy"], [tmp_path / "grains.csv", tmp_path / "alloy.csv"], tmp_path / "all.csv")
    table = pd.read_csv(tmp_path / "all.csv")
    assert list(table.columns) == ["dataset", "method", "n_images", *METRIC_COLUMNS[2:], "iou_class_2", "iou_class_10"]
    assert list(zip(table["dataset"], table["method"], table["n_images"])) == [
        ("grains", "matsam", 2), ("grains", "canny", 1), ("alloy", "matsam", 2)]
    assert table["ari"].tolist()[:2] == pytest.approx([0.7, 0.2])
    assert table["iou"].tolist() == pytest.approx([0.5, 0.1, 0.8])
    assert table.loc[2, "iou_class_2"] == pytest.approx(0.6) and table.loc[2, "iou_class_10"] == pytest.approx(0.4)
    assert table.loc[:1, "iou_class_2"].isna().all()


# --- rules -> scripts -> steps --------------------------------------------------------------------

SCRIPT_LINE = re.compile(r'^    script:\n\s+"\.\./scripts/(\w+)\.py"', re.MULTILINE)


def rule_blocks() -> dict[str, str]:
    """Each rule (and checkpoint) of rules/*.smk: its name -> its text."""
    blocks = {}
    for smk in sorted((REPO / "rules").glob("*.smk")):
        text = smk.read_text()
        for match in re.finditer(r"^(?:rule|checkpoint) (\w+):\n((?:[ \t]+.*\n|\n)*)", text, re.MULTILINE):
            blocks[match.group(1)] = match.group(2)
    return blocks


def directive_keys(block: str, directive: str) -> set[str] | None:
    """The named entries of one directive (input, output, params) of a rule; None when it has
    entries that are not plain names (unpack)."""
    match = re.search(rf"^    {directive}:\n((?:        .*\n|\n)*)", block, re.MULTILINE)
    if not match:
        return set()
    if "unpack(" in match.group(1):
        return None
    return set(re.findall(r"^        (\w+)=", match.group(1), re.MULTILINE))


def script_rules() -> dict[str, str]:
    """Rules whose script is ../scripts/<name>.py: rule name -> script name."""
    out = {}
    for rule, block in rule_blocks().items():
        match = SCRIPT_LINE.search(block)
        if match:
            out[rule] = match.group(1)
    return out


def test_the_rules_and_their_scripts_are_found():
    """Guard for the tests below: the parsing sees the pipeline's rules."""
    rules = script_rules()
    assert {"prepare_image", "plan_crops", "make_prompts", "embed_crops", "segment_crops", "merge_grain_masks",
            "draw_overlay", "quantify_objects", "evaluate_image", "aggregate_dataset", "aggregate_all",
            "link_stack"} <= set(rules)
    assert rules["merge_grain_masks"] == "merge_masks" and rules["embed_crops"] == "embed_crops"


def smk_uses(tree: ast.AST) -> dict[str, set[str]]:
    """smk.<kind>.<name> read by a script: kind (input, output, params, wildcards) -> names."""
    uses: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                and isinstance(node.value.value, ast.Name) and node.value.value.id == "smk"):
            uses.setdefault(node.value.attr, set()).add(node.attr)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "section"
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "job"):
            uses.setdefault("sections", set()).add(node.args[1].value)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "sam_section"):
            uses.setdefault("sections", set()).add("sam")
    return uses


@pytest.mark.parametrize("rule, script", sorted(script_rules().items()))
def test_every_script_calls_existing_steps_inside_one_job_run(rule, script):
    path = REPO / "scripts" / f"{script}.py"
    assert path.is_file(), f"rule {rule}: {path} does not exist"
    tree = ast.parse(path.read_text(), str(path))
    called = {node.func.attr for node in ast.walk(tree)
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and isinstance(node.func.value, ast.Name) and node.func.value.id == "steps"}
    missing = sorted(name for name in called if not callable(getattr(steps, name, None)))
    assert not missing, f"{path.name} calls steps.{', steps.'.join(missing)}, which do not exist"
    runs = [node for node in ast.walk(tree) if isinstance(node, ast.With)
            and any(isinstance(item.context_expr, ast.Call) and ast.unparse(item.context_expr.func) == "job.run"
                    for item in node.items)]
    assert len(runs) == 1, f"{path.name}: {len(runs)} `with job.run` blocks, expected exactly one"


@pytest.mark.parametrize("rule, script", sorted(script_rules().items()))
def test_every_script_reads_only_what_its_rule_passes(rule, script):
    """smk.input.x, smk.output.x, smk.params.x and job.section(smk, "x") must name entries of the
    rule; a missing one would fail only when the job runs."""
    block = rule_blocks()[rule]
    uses = smk_uses(ast.parse((REPO / "scripts" / f"{script}.py").read_text()))
    methods = {"get", "items", "keys", "values"}
    for kind in ("input", "output", "params"):
        keys = directive_keys(block, kind)
        if keys is None:  # unpack(...): names known only when the DAG is built
            continue
        missing = uses.get(kind, set()) - methods - keys
        assert not missing, f"rule {rule}: {script}.py reads smk.{kind}.{', '.join(sorted(missing))}"
    for name in uses.get("sections", set()):
        assert name in STAGES or name == "link", name
        assert name in (directive_keys(block, "params") or set()), f"rule {rule} passes no params.{name}"
    for wildcard in uses.get("wildcards", set()):
        assert "{" + wildcard + "}" in block, f"rule {rule} has no wildcard {wildcard}"


def test_every_step_is_run_by_a_script():
    """Each file-to-file step of steps.py has a rule (embed_and_segment is the CLI's pair of SAM steps)."""
    called = set()
    for script in set(script_rules().values()):
        tree = ast.parse((REPO / "scripts" / f"{script}.py").read_text())
        called |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                   and isinstance(node.value, ast.Name) and node.value.id == "steps"}
    expected = {"prepare_image", "plan_crops", "make_prompts", "embed_images", "segment_images", "merge_masks",
                "draw_overlay", "quantify_objects", "evaluate_image", "aggregate_dataset", "aggregate_all",
                "link_stack"}
    assert expected <= called, sorted(expected - called)

