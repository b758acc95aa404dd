"""The package's floors, read from its imports: a newcomer can trust the folder a module is in.

ground (config, io, imaging) -> algorithms (segmentation, measurement, volumes) -> workflow
(catalogue, steps, ...) -> entry points (cli). Imports go down or sideways inside one folder,
never up; no algorithm borrows a helper from a baseline.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "matsam"
GROUND = {"matsam.config", "matsam.io", "matsam.imaging"}
ALGORITHMS = ("matsam.segmentation.", "matsam.measurement.", "matsam.volumes.")


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


@functools.cache
def imports() -> dict[str, set[str]]:
    """module -> the matsam modules it imports (at any depth of its code)."""
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("matsam"):
                assert node.level == 0, f"{name}: relative import"
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    found.add(sub if sub in known else node.module)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("matsam.")}
        graph[name] = {m for m in found if m in known and m != name and m != "matsam"
                       and not (known[m].name == "__init__.py" and m != "matsam")}
    return graph


def floor(name: str) -> int:
    if name in GROUND or name == "matsam":
        return 0
    if name.startswith(ALGORITHMS):
        return 1
    if name.startswith("matsam.workflow."):
        return 2
    return 3  # cli


def height(name: str, seen: tuple[str, ...] = ()) -> int:
    assert name not in seen, f"import cycle: {' -> '.join((*seen, name))}"
    return 1 + max((height(m, (*seen, name)) for m in imports()[name]), default=0)


def test_every_module_has_a_floor_and_imports_only_downwards_or_sideways():
    for name, deps in imports().items():
        for dep in deps:
            assert floor(dep) <= floor(name), f"{name} (floor {floor(name)}) imports {dep} (floor {floor(dep)})"


def test_the_ground_floor_imports_no_other_matsam_module():
    for name in GROUND:
        assert not imports()[name], f"{name} imports {imports()[name]}"


def test_algorithms_of_one_folder_do_not_reach_into_the_workflow_or_the_baselines():
    for name, deps in imports().items():
        if name.startswith(ALGORITHMS):
            assert not {d for d in deps if d.startswith("matsam.workflow")}, name
            if name != "matsam.measurement.baselines":
                assert "matsam.measurement.baselines" not in deps, f"{name} borrows from the baselines"


def test_the_import_tower_is_at_most_four_floors_below_the_entry_points():
    tower = {name: height(name) for name in imports()}
    library = {name: h for name, h in tower.items() if floor(name) < 3}
    assert max(library.values()) <= 4, sorted(library.items(), key=lambda kv: -kv[1])[:5]
    assert tower["matsam.cli"] <= 5


def test_only_the_steps_module_and_the_cli_combine_segmentation_measurement_and_volumes():
    for name, deps in imports().items():
        folders = {d.split(".")[1] for d in deps if d.startswith(ALGORITHMS)}
        if len(folders) == 3:
            assert name in ("matsam.workflow.steps",), f"{name} imports from {sorted(folders)}"
