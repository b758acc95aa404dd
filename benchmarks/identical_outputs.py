"""Do two commits give the same results? Run the pipeline of each on the same micrographs and
compare every result file: a refactor must leave all of them identical.

    python benchmarks/identical_outputs.py REF_A REF_B [--config config/config.yaml]
        [--images-per-dataset N] [--out DIR]

Each ref is checked out as a git worktree under --out and runs its own Snakefile and its own
package (PYTHONPATH) on a config derived from --config (datasets' image folders reduced to their
first N images, copied, so both runs read the same files). Images (PNG, TIFF) are compared as
arrays, tables as frames, JSON as values, anything else byte by byte; logs, benchmark files,
Snakemake's metadata and the run report's page of versions are not results. Prints a table and
exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
NOT_RESULTS = ("_logs", "_work", ".snakemake")
SKIP_FILES = {"run.html"}  # the run report's configuration and versions page names the commit


def reduced_data(config: dict, base: Path, data: Path, n: int) -> dict:
    """The config with each dataset's images (and labels) cut to the first n, copied under data."""
    out = json.loads(json.dumps(config))
    for name, entry in (out.get("datasets") or {}).items():
        images = sorted(p for p in (base / entry["images"]).iterdir() if p.is_file())[:n]
        target = data / name / "images"
        target.mkdir(parents=True, exist_ok=True)
        for image in images:
            shutil.copy2(image, target / image.name)
        entry["images"] = str(target)
        if entry.get("labels"):
            labels = data / name / "labels"
            labels.mkdir(parents=True, exist_ok=True)
            for image in images:
                for label in (base / entry["labels"]).glob(f"{image.stem}.*"):
                    shutil.copy2(label, labels / label.name)
            entry["labels"] = str(labels)
    out.pop("stacks", None)
    return out


def run(ref: str, out: Path, config: Path, cores: int) -> tuple[Path, float]:
    tree = out / f"tree-{ref.replace('/', '_')}"
    if not tree.exists():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), ref], check=True,
                       capture_output=True)
    results = out / f"results-{ref.replace('/', '_')}"
    cfg = yaml.safe_load(config.read_text()) | {"results": str(results)}
    cfg_file = out / f"config-{ref.replace('/', '_')}.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(tree)}  # cwd=out: `python -m` puts the cwd before PYTHONPATH
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(tree / "Snakefile"),
                           "--directory", str(out), "--configfile", str(cfg_file), "--cores", str(cores),
                           "--rerun-triggers", "mtime"], env=env, cwd=out, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{ref}: snakemake failed\n{proc.stderr[-3000:]}")
    return results, time.perf_counter() - start


def read(path: Path):
    if path.suffix in (".png", ".tif", ".tiff"):
        from matsam.io import read_image

        return read_image(path)
    if path.suffix == ".csv":
        return pd.read_csv(path)
    if path.suffix == ".json":
        return json.loads(path.read_text())
    if path.suffix == ".h5":
        import h5py

        with h5py.File(path) as f:
            return {k: f[k][()] for k in f}
    return path.read_bytes()


def same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, pd.DataFrame):
        try:
            pd.testing.assert_frame_equal(a, b, check_exact=True)
            return True
        except AssertionError:
            return False
    if isinstance(a, dict) and a and isinstance(next(iter(a.values())), np.ndarray):
        return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    return a == b


def compare(a: Path, b: Path) -> tuple[int, list[str]]:
    files = {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
    files |= {p.relative_to(b) for p in b.rglob("*") if p.is_file()}
    files = {f for f in files if f.parts[0] not in NOT_RESULTS and f.name not in SKIP_FILES}
    differ = []
    for f in sorted(files):
        if not (a / f).is_file() or not (b / f).is_file():
            differ.append(f"{f} (only in {'B' if not (a / f).is_file() else 'A'})")
        elif not same(read(a / f), read(b / f)):
            differ.append(str(f))
    return len(files), differ


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ref_a")
    parser.add_argument("ref_b")
    parser.add_argument("--config", type=Path, default=REPO / "config" / "config.yaml")
    parser.add_argument("--images-per-dataset", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("/tmp/matsam-identical"))
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    config = reduced_data(yaml.safe_load(args.config.read_text()), REPO, args.out / "data", args.images_per_dataset)
    (args.out / "config.yaml").write_text(yaml.safe_dump(config))
    (a, ta), (b, tb) = (run(ref, args.out, args.out / "config.yaml", args.cores) for ref in (args.ref_a, args.ref_b))
    n, differ = compare(a, b)
    print(f"| config | datasets | images each | result files | identical | differ | {args.ref_a} s | {args.ref_b} s |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {args.config.name} | {len(config.get('datasets') or {})} | {args.images_per_dataset} | {n} | "
          f"{n - len(differ)} | {len(differ)} | {ta:.0f} | {tb:.0f} |")
    for f in differ:
        print(f"  differs: {f}")
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
