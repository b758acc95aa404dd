"""Tests of the stage dataclasses (matsam/config.py) and the workflow config's schema (matsam/workflow/schema.py)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from conftest import REPO

from matsam import io
from matsam.config import (
    STAGES,
    ConfigError,
    CropConfig,
    LinkConfig,
    MergeConfig,
    MethodConfig,
    ModelConfig,
    PromptConfig,
    ReadConfig,
    SamConfig,
    build,
    merge_sections,
    method_config,
    section_from_params,
)
from matsam.workflow import catalogue, schema

# --- build ----------------------------------------------------------------------------------


def test_build_rejects_an_unknown_key_naming_it_and_the_allowed_keys():
    """A typo must never fall back to the default silently: the error names the key, where it
    was found and what would have been accepted."""
    with pytest.raises(ConfigError) as info:
        build(CropConfig, {"n_layer": 1}, "datasets.steel.crops")
    message = str(info.value)
    assert message.startswith("datasets.steel.crops: unknown key(s) n_layer;")
    assert "allowed: min_object_px, n_layers, overlap_ratio, tile_overlap" in message


def test_build_lists_every_unknown_key_and_names_the_class_without_where():
    with pytest.raises(ConfigError, match=r"^SamConfig: unknown key\(s\) nope, zzz; allowed: box_nms_thresh"):
        build(SamConfig, {"zzz": 1, "nope": 2})


def test_build_of_nothing_is_the_defaults():
    assert build(SamConfig, None) == SamConfig() and build(SamConfig, {}) == SamConfig()


def test_build_turns_lists_into_tuples():
    """YAML and JSON give lists; the frozen dataclasses hold tuples (hashable, comparable)."""
    read = build(ReadConfig, {"percentiles": [1.0, 99.0]})
    assert read.percentiles == (1.0, 99.0) and isinstance(read.percentiles, tuple)
    merge = build(MergeConfig, {"phase_features": ["log_area", "solidity"]})
    assert merge.phase_features == ("log_area", "solidity")
    hash(merge)  # a list inside would make the frozen dataclass unhashable


@pytest.mark.parametrize("values, fragment", [
    ({"n_phases": 1}, "n_phases must be an integer >= 2"),
    ({"n_phases": True}, "n_phases must be an integer >= 2"),
    ({"n_phases": 2.5}, "n_phases must be an integer >= 2"),
    ({"phase_features": ["log_area", "colour"]}, "phase_features must be a non-empty list"),
    ({"phase_features": []}, "phase_features must be a non-empty list"),
    ({"phase_classes": "kmeans"}, "phase_classes must be auto, features or grey"),
])
def test_a_dataclass_value_check_is_a_config_error_naming_where(values, fragment):
    """MergeConfig's own checks run in __post_init__; build prefixes where the value came from."""
    with pytest.raises(ConfigError) as info:
        build(MergeConfig, values, "datasets.alloy.overrides.merge")
    assert str(info.value).startswith("datasets.alloy.overrides.merge: ")
    assert fragment in str(info.value)


# --- method_config and merge_sections ----------------------------------------------------------


def test_method_config_rejects_an_unknown_section():
    with pytest.raises(ConfigError, match=r"^datasets\.x: unknown section\(s\) link, segment$"):
        method_config("grain", {"segment": {}, "link": {}}, where="datasets.x")


def test_method_config_rejects_a_bad_mode():
    with pytest.raises(ConfigError, match=r"datasets\.x: mode must be one of \('grain', 'phase'\), got 'volume'"):
        method_config("volume", {}, where="datasets.x")


def test_method_config_names_the_section_of_a_bad_key():
    with pytest.raises(ConfigError, match=r"^datasets\.x\.sam: unknown key\(s\) pred_iou;"):
        method_config("grain", {"sam": {"pred_iou": 0.9}}, where="datasets.x")


def test_method_config_applies_overrides_and_keeps_the_other_defaults():
    cfg = method_config("phase", {"sam": {"pred_iou_thresh": 0.9}, "crops": {"n_layers": 1}})
    assert cfg.mode == "phase"
    assert cfg.sam == dataclasses.replace(SamConfig(), pred_iou_thresh=0.9)
    assert cfg.crops == CropConfig(n_layers=1)
    assert (cfg.read, cfg.prompts, cfg.merge) == (ReadConfig(), PromptConfig(), MergeConfig())


def test_merge_sections_later_layers_win_key_by_key():
    """A dataset's override of one key keeps the other keys of `defaults:` in that section."""
    defaults = {"sam": {"pred_iou_thresh": 0.9, "min_mask_area": 20}, "crops": {"n_layers": 1}}
    dataset = {"sam": {"pred_iou_thresh": 0.7}, "merge": {"n_phases": 3}}
    merged = merge_sections(defaults, None, dataset, {"crops": None})
    assert merged == {
        "sam": {"pred_iou_thresh": 0.7, "min_mask_area": 20},
        "crops": {"n_layers": 1},
        "merge": {"n_phases": 3},
    }
    assert defaults["sam"] == {"pred_iou_thresh": 0.9, "min_mask_area": 20}  # inputs untouched
    assert merge_sections() == {}


# --- section_from_params ---------------------------------------------------------------------

NON_DEFAULT = {
    "read": ReadConfig(scale16="full", percentiles=(1.0, 99.0), stretch=False),
    "crops": CropConfig(n_layers=2, overlap_ratio=0.25),
    "prompts": PromptConfig(method="otsu", canny_low=10.0, foreground="bright", max_points=100),
    "model": ModelConfig(name="vit_b", checkpoint="/tmp/sam_vit_b.pth", device="cpu", precision="bfloat16"),
    "sam": SamConfig(points_per_batch=64, skip_covered_points=False, multimask_choice="smallest"),
    "merge": MergeConfig(n_phases=3, phase_classes="grey", phase_features=("solidity", "thinness")),
    "quantify": build(STAGES["quantify"], {"pixel_size_um": 0.25}),
    "link": LinkConfig(min_overlap=0.4, max_gap=0, refine_boundaries="dark", consistent=False),
}


@pytest.mark.parametrize("name", [*STAGES, "link"])
def test_section_from_params_rebuilds_the_dataclass_from_its_dict(name):
    """A rule's params are `dataclasses.asdict` of a section; the job rebuilds exactly it, also after
    the lists that Snakemake's params pickling or JSON would give in place of tuples."""
    cls = LinkConfig if name == "link" else STAGES[name]
    for cfg in (cls(), NON_DEFAULT[name]):
        assert type(section_from_params(name, dataclasses.asdict(cfg))) is cls
        assert section_from_params(name, dataclasses.asdict(cfg)) == cfg
        assert section_from_params(name, json.loads(json.dumps(dataclasses.asdict(cfg)))) == cfg


def test_every_section_has_a_non_default_case():
    """Guard for the round trip above: each case differs from the defaults."""
    assert set(NON_DEFAULT) == {*STAGES, "link"}
    for name, cfg in NON_DEFAULT.items():
        assert cfg != type(cfg)(), name


def test_section_from_params_names_the_rule_of_a_bad_key():
    with pytest.raises(ConfigError, match=r"^rule merge params\.merge: unknown key\(s\) old_key;"):
        section_from_params("merge", {**dataclasses.asdict(MergeConfig()), "old_key": 1}, where="rule merge params")


# --- the generated schema --------------------------------------------------------------------


def test_generated_schema_and_readme_are_up_to_date():
    """`python -m matsam.workflow.schema --check`: the schema file and config/README.md match the dataclasses."""
    result = subprocess.run([sys.executable, "-m", "matsam.workflow.schema", "--check"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def _default(field: dataclasses.Field):
    value = field.default if field.default is not dataclasses.MISSING else field.default_factory()
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("name", list(STAGES))
def test_every_stage_leaf_has_a_description_and_the_dataclass_default(name):
    section = schema.stage_sections()[name]
    assert section["additionalProperties"] is False and section["description"]
    fields = {f.name: f for f in dataclasses.fields(STAGES[name])}
    expected = set(fields) - ({"device"} if name == "model" else set())
    assert set(section["properties"]) == expected
    for key, prop in section["properties"].items():
        assert prop["description"].strip(), f"{name}.{key} has no description"
        assert prop["default"] == _default(fields[key]), f"{name}.{key}"
        assert type(prop["default"]) is type(_default(fields[key])), f"{name}.{key}"


def test_model_device_is_not_a_stage_setting():
    """The device is the config's top-level `device`, one setting for the whole run."""
    assert "device" not in schema.stage_sections()["model"]["properties"]
    assert "device" in ModelConfig.__dataclass_fields__


def test_link_section_leaves_have_descriptions_and_defaults():
    section = schema.section_schema(LinkConfig)
    for f in dataclasses.fields(LinkConfig):
        assert section["properties"][f.name]["description"].strip(), f.name
        assert section["properties"][f.name]["default"] == _default(f), f.name


def test_the_schema_file_holds_the_generated_sections():
    on_disk = yaml.safe_load(schema.SCHEMA.read_text())
    props = on_disk["properties"]
    sections = json.loads(json.dumps(schema.stage_sections()))
    assert props["defaults"]["properties"] == sections
    assert props["datasets"]["additionalProperties"]["properties"]["overrides"]["properties"] == sections
    assert props["stacks"]["additionalProperties"]["properties"]["link"] == json.loads(
        json.dumps(schema.section_schema(LinkConfig)))


# --- validate --------------------------------------------------------------------------------


def test_validate_fills_the_run_level_defaults():
    config: dict = {"baselines": {"grain": ["otsu"]}}
    schema.validate(config)
    assert config["results"] == "results"
    assert config["device"] == "auto"
    assert config["sam_threads"] == 2
    assert config["sam_images_per_job"] == 16
    assert config["keep_embeddings"] is True
    assert config["baselines"] == {"grain": ["otsu"], "phase": ["otsu", "adaptive"]}  # nested, key by key
    assert config["datasets"] == {} and config["stacks"] == {} and config["defaults"] == {}


def test_validate_keeps_given_values():
    config = {"results": "out", "device": "cpu", "sam_threads": 8}
    schema.validate(config)
    assert (config["results"], config["device"], config["sam_threads"]) == ("out", "cpu", 8)


def _dataset_folder(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    io.write_png(images / "a.png", np.full((32, 32), 128, np.uint8))
    return "imgs"


def test_validate_leaves_stage_defaults_out_of_dataset_overrides(tmp_path):
    """Filled-in stage defaults in a dataset's `overrides` would hide the config's `defaults:`."""
    config = {
        "defaults": {"sam": {"pred_iou_thresh": 0.9}},
        "datasets": {"d": {"images": _dataset_folder(tmp_path), "mode": "grain", "overrides": {}}},
    }
    schema.validate(config)
    assert config["datasets"]["d"]["overrides"] == {}
    assert config["defaults"] == {"sam": {"pred_iou_thresh": 0.9}}
    dataset = catalogue.load_catalog(config, base=tmp_path)["d"]
    assert dataset.method.sam.pred_iou_thresh == 0.9
    assert dataset.method.sam.min_mask_area == SamConfig().min_mask_area
    assert sorted(dataset.images) == ["a"]


def test_a_dataset_override_beats_defaults_after_validate(tmp_path):
    config = {
        "defaults": {"sam": {"pred_iou_thresh": 0.9, "min_mask_area": 30}},
        "device": "cpu",
        "datasets": {"d": {"images": _dataset_folder(tmp_path), "mode": "phase",
                           "overrides": {"sam": {"pred_iou_thresh": 0.6}}}},
    }
    schema.validate(config)
    method: MethodConfig = catalogue.load_catalog(config, base=tmp_path)["d"].method
    assert (method.sam.pred_iou_thresh, method.sam.min_mask_area) == (0.6, 30)
    assert method.model.device == "cpu"  # from the top-level `device`


@pytest.mark.parametrize("config, pattern", [
    ({"resutls": "x"}, r"^top level: .*'resutls' was unexpected"),
    ({"sam_threads": "two"}, r"^sam_threads: 'two' is not of type 'integer'"),
    ({"defaults": {"sam": {"nope": 1}}}, r"^defaults\.sam: .*'nope' was unexpected"),
    ({"defaults": {"crops": {"n_layers": 1.5}}}, r"^defaults\.crops\.n_layers: 1\.5 is not of type 'integer'"),
    ({"datasets": {"d": {"images": "x", "mode": "grain", "overrides": {"sam": {"nope": 1}}}}},
     r"^datasets\.d\.overrides\.sam: .*'nope' was unexpected"),
])
def test_validate_errors_are_one_line_naming_where(config, pattern):
    with pytest.raises(ConfigError, match=pattern) as info:
        schema.validate(config)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("config, where", [
    ({"defaults": {"model": {"device": "cuda"}}}, "defaults.model.device"),
    ({"datasets": {"d": {"images": "x", "mode": "grain", "overrides": {"model": {"device": "cuda"}}}}},
     "datasets.d.overrides.model.device"),
    ({"stacks": {"s": {"path": "s.tif", "mode": "grain", "overrides": {"model": {"device": "cpu"}}}}},
     "stacks.s.overrides.model.device"),
])
def test_a_per_dataset_device_points_to_the_top_level_device(config, where):
    with pytest.raises(ConfigError) as info:
        schema.validate(config)
    message = str(info.value)
    assert message.startswith(where + ":") and "top-level `device`" in message and "\n" not in message


@pytest.mark.parametrize("config", [{"datasets": ["steel"]}, {"stacks": "sections.tif"}])
def test_validate_a_datasets_list_is_a_config_error(config):
    with pytest.raises(ConfigError, match=r"^(datasets|stacks): .* is not of type 'object'"):
        schema.validate(config)
