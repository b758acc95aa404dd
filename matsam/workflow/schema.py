"""The workflow config's contract: its JSON schema, with the stage sections generated from the
dataclasses of `matsam.config`, and the one validation pass the Snakefile runs.

Every leaf of a stage section (and of a stack's `link:`) gets its type, its default and its
description (the comment above the field in config.py) from the dataclass, so the schema, the
defaults and `config/README.md` cannot drift apart:

    python -m matsam.workflow.schema           # rewrite the generated parts
    python -m matsam.workflow.schema --check   # exit 1 if they are out of date (the test command)
"""

from __future__ import annotations

import argparse
import dataclasses
import io as _io
import sys
import tokenize
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml

from matsam import config as config_module
from matsam.config import STAGES, ConfigError, LinkConfig

SCHEMA = Path(__file__).parents[1] / "schemas" / "config.schema.yaml"
README = Path(__file__).parents[2] / "config" / "README.md"
# Set from the config's top-level key of the same name, never per dataset.
WORKFLOW_ONLY = {"model": {"device"}}


def field_comments(cls: type) -> dict[str, str]:
    """The comment lines right above each field of `cls` in config.py, and its inline comment."""
    source = Path(config_module.__file__).read_text()
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(_io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    lines = source.splitlines()
    heads = (f"class {cls.__name__}:", f"class {cls.__name__}(")
    start = next(i for i, line in enumerate(lines) if line.startswith(heads))
    out: dict[str, str] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    for i in range(start + 1, len(lines)):
        line = lines[i]
        if line and not line.startswith(" "):
            break
        name = line.strip().split(":", 1)[0]
        if name not in names or not line.startswith("    " + name + ":"):
            continue
        above = []
        j = i  # line numbers are 1-based: lines[i] is line i + 1
        while j in comments and lines[j - 1].strip().startswith("#"):
            above.insert(0, comments[j])
            j -= 1
        inline = comments.get(i + 1, "")
        out[name] = " ".join([*above, inline]).strip()
    return out


def type_schema(annotation: Any) -> dict[str, Any]:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return {"type": "string", "enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        schema = type_schema(inner[0])
        if type(None) in args:
            if "enum" in schema:
                return {"enum": [*schema["enum"], None]}
            schema["type"] = [schema["type"], "null"]
        return schema
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": type_schema(args[0])}
        return {"type": "array", "items": type_schema(args[0]), "minItems": len(args), "maxItems": len(args)}
    simple = {bool: "boolean", int: "integer", float: "number", str: "string"}
    if annotation in simple:
        return {"type": simple[annotation]}
    raise TypeError(f"no schema for {annotation!r}")


def section_schema(cls: type, skip: set[str] = frozenset()) -> dict[str, Any]:
    """The schema of one stage section: additionalProperties false, each field typed, described
    and with the dataclass's default."""
    hints = typing.get_type_hints(cls, vars(config_module))
    comments = field_comments(cls)
    properties: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        properties[f.name] = {
            **type_schema(hints[f.name]),
            "description": comments.get(f.name) or "",
            "default": list(default) if isinstance(default, tuple) else default,
        }
    return {"type": "object", "description": " ".join((cls.__doc__ or "").split("\n\n")[0].split()),
            "additionalProperties": False, "properties": properties, "default": {}}


def stage_sections() -> dict[str, Any]:
    return {name: section_schema(cls, WORKFLOW_ONLY.get(name, set())) for name, cls in STAGES.items()}


def generated_schema(current: Mapping[str, Any]) -> dict[str, Any]:
    """`current` (the schema file) with its stage sections and `link` replaced by the generated ones."""
    schema = yaml.safe_load(yaml.safe_dump(dict(current)))  # a deep copy
    props = schema["properties"]
    sections = stage_sections()  # one object, written once (a YAML anchor) and referred to twice
    props["defaults"]["properties"] = sections
    props["datasets"]["additionalProperties"]["properties"]["overrides"]["properties"] = sections
    stack = props["stacks"]["additionalProperties"]["properties"]
    stack["overrides"]["properties"] = sections
    stack["link"] = section_schema(LinkConfig)
    return schema


def render_schema(schema: Mapping[str, Any]) -> str:
    header = ("# Generated in part by `python -m matsam.workflow.schema`: the stage sections (defaults,\n"
              "# overrides) and a stack's `link` come from the dataclasses in matsam/config.py; edit them\n"
              "# there. The other keys are edited here.\n")
    return header + yaml.safe_dump(dict(schema), sort_keys=False, allow_unicode=True, width=100)


def _cell(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip().replace("|", "\\|")


def _type(prop: Mapping[str, Any]) -> str:
    if "enum" in prop:
        return " \\| ".join("null" if v is None else str(v) for v in prop["enum"])
    kind = prop.get("type", "")
    return " or ".join(kind) if isinstance(kind, list) else str(kind)


def render_readme(schema: Mapping[str, Any]) -> str:
    """config/README.md: the examples (by hand, in EXAMPLES) and the key reference (generated)."""
    out = [README_INTRO]
    out.append("## Top-level keys\n\n| key | type | default | what it does |\n|---|---|---|---|")
    for key, prop in schema["properties"].items():
        out.append(f"| `{key}` | {_type(prop)} | `{_cell(prop.get('default'))}` | "
                   f"{' '.join(str(prop.get('description', '')).split())} |")
    out.append("")
    sections = {**stage_sections(), "link": section_schema(LinkConfig)}
    for name, section in sections.items():
        where = "a stack's `link:`" if name == "link" else f"`defaults: {{{name}: ...}}` or a dataset's `overrides`"
        out.append(f"## `{name}` ({where})\n\n{section['description']}\n")
        out.append("| key | type | default | what it does |\n|---|---|---|---|")
        for key, prop in section["properties"].items():
            out.append(f"| `{key}` | {_type(prop)} | `{_cell(prop['default'])}` | {prop['description']} |")
        out.append("")
    out.append(EXAMPLES)
    return "\n".join(out).rstrip() + "\n"


README_INTRO = """# The workflow configuration

`config/config.yaml` says which micrographs to segment and how; Snakemake reads it (or the file
given with `--configfile`), and `matsam/schemas/config.schema.yaml` checks it before any job
runs: an unknown key or a wrong type is a one-line error naming it. Every stage setting has its
default in `matsam/config.py` (one dataclass per stage); this page and the schema are generated
from there (`python -m matsam.workflow.schema`), so the tables below are the defaults a run
uses. Change a setting for every dataset under `defaults:`, for one dataset under its
`overrides:`; a change reruns only the rules that take that section (a `sam` change reruns
the decoder, never the encoder).

`matsam init FOLDER` writes a commented config for a folder of micrographs.
"""

EXAMPLES = """## Examples

A grain dataset with labels and a pixel size, a finer grid of prompts for it only:

```yaml
results: results
datasets:
  steel:
    images: data/steel/images
    labels: data/steel/labels        # optional: scored against the baselines
    mode: grain
    pixel_size_um: 0.5               # µm columns and the ASTM E112 grain size number
    overrides:
      prompts: {grid_min: 16}
```

A phase dataset with three classes (matrix and two phases), SAM's filter a little stricter for
every dataset:

```yaml
defaults:
  sam: {pred_iou_thresh: 0.85}
datasets:
  superalloy:
    images: data/superalloy
    mode: phase
    overrides:
      merge: {n_phases: 3}
```

A serial-section stack (a multi-page TIFF, a folder of slices or `file.h5:/dataset`), registered
before linking:

```yaml
stacks:
  sections:
    path: data/sections.h5:/scan/grey
    mode: grain
    voxel_size_um: [0.2, 0.05, 0.05]   # z, y, x
    align: true
    link: {max_gap: 2}
```

On a cluster (`snakemake --profile profiles/slurm`, docs/cluster.md): `device: auto` (the
default) sends both SAM rules to the GPU partition asking for one GPU each and runs on the GPU
the job gets; more images per SAM job amortise the model load:

```yaml
device: auto            # cpu: SAM on CPUs, no GPU requested (or MATSAM_SLURM_SAM_GPUS=0)
sam_threads: 4
sam_images_per_job: 32
keep_embeddings: true   # a prompt/sam/merge change reruns only the decoder
```
"""


def fill_defaults(config: dict[str, Any], schema: Mapping[str, Any]) -> None:
    """Write the schema's defaults of the run-level keys into `config` (in place). Not those of
    the stage sections: their defaults are the dataclasses', and a filled-in dataset override
    would hide the config's `defaults:` section."""
    for key, prop in schema.get("properties", {}).items():
        if "default" in prop and key not in config:
            config[key] = yaml.safe_load(yaml.safe_dump(prop["default"]))
        if key not in ("defaults", "datasets", "stacks") and isinstance(config.get(key), dict):
            fill_defaults(config[key], prop)


def validate(config: dict[str, Any]) -> None:
    """Check the workflow config against the schema and fill in its defaults (in place); the
    first violation is a ConfigError of one line (where, what)."""
    import jsonschema

    schema = yaml.safe_load(SCHEMA.read_text())
    for where, values in _model_devices(config):
        raise ConfigError(f"{where}.model.device: the device is the config's top-level `device` "
                          f"(one setting for the whole run), got {values!r} here")
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(config))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "top level"
        raise ConfigError(f"{where}: {error.message}")
    fill_defaults(config, schema)


def _model_devices(config: Mapping[str, Any]) -> list[tuple[str, Any]]:
    found = []
    sections = [("defaults", config.get("defaults"))]
    for kind in ("datasets", "stacks"):
        entries = config.get(kind)
        for name, entry in entries.items() if isinstance(entries, Mapping) else []:
            if isinstance(entry, Mapping):
                sections.append((f"{kind}.{name}.overrides", entry.get("overrides")))
    for where, section in sections:
        model = section.get("model") if isinstance(section, Mapping) else None
        if isinstance(model, Mapping) and "device" in model:
            found.append((where, model["device"]))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the generated files are out of date")
    args = parser.parse_args(argv)
    schema = generated_schema(yaml.safe_load(SCHEMA.read_text()))
    files = {SCHEMA: render_schema(schema), README: render_readme(schema)}
    stale = [path for path, text in files.items() if not path.is_file() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path} is out of date: run python -m matsam.workflow.schema", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.write_text(files[path])
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
