"""A settings sweep with and without the embedding cache: three `sam.pred_iou_thresh` values.

    .venv/bin/python benchmarks/sweep_cache.py            # the sample micrographs (config/config.yaml)

For each of `keep_embeddings: true` (the default: the encoder's output stays on disk) and
`false` (Snakemake deletes it once decoded), in a fresh folder: one full run (untimed set-up),
then three runs that change only `pred_iou_thresh`, each timed as the whole `snakemake` command.
With the cache those reruns are the decoder and what follows it; without it every rerun also
encodes every crop again. Writes benchmarks/results/sweep_cache.md.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "sweep_cache.md"
THRESHOLDS = (0.84, 0.88, 0.92)


def snakemake(folder: Path, cores: int) -> tuple[float, dict[str, int]]:
    """Wall seconds of one run and how many jobs of each rule it ran."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(folder),
           "--configfile", str(folder / "config.yaml"), "--cores", str(cores)]
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    jobs: dict[str, int] = {}
    for rule in re.findall(r"^(?:local)?rule (\w+):", out.stderr, flags=re.MULTILINE):
        jobs[rule] = jobs.get(rule, 0) + 1
    return wall, jobs


def sweep(keep: bool, cores: int) -> list[dict]:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shutil.copytree(REPO / "data", folder / "data")
        config.update(device="cpu", keep_embeddings=keep)
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
        rows = []
        wall, jobs = snakemake(folder, cores)
        rows.append({"run": "first run", "wall_s": wall, "jobs": jobs})
        for threshold in THRESHOLDS:
            config["defaults"] = {"sam": {"pred_iou_thresh": threshold}}
            (folder / "config.yaml").write_text(yaml.safe_dump(config))
            wall, jobs = snakemake(folder, cores)
            rows.append({"run": f"pred_iou_thresh {threshold}", "wall_s": wall, "jobs": jobs})
            print(f"keep_embeddings={keep} {threshold}: {wall:.1f} s {jobs}", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cores", type=int, default=2)
    args = p.parse_args()
    results = {keep: sweep(keep, args.cores) for keep in (True, False)}
    lines = [f"# Sweep of three `pred_iou_thresh` values over the sample micrographs ({args.cores} cores, CPU)", "",
             "| run | with the cache: s | encoder jobs | without: s | encoder jobs |", "|---|---|---|---|---|"]
    for cached, plain in zip(results[True], results[False], strict=True):
        lines.append(f"| {cached['run']} | {cached['wall_s']:.1f} | {cached['jobs'].get('embed_crops', 0)} | "
                     f"{plain['wall_s']:.1f} | {plain['jobs'].get('embed_crops', 0)} |")
    with_cache = sum(r["wall_s"] for r in results[True][1:])
    without = sum(r["wall_s"] for r in results[False][1:])
    lines += ["", f"Three reruns: {with_cache:.1f} s with the cache, {without:.1f} s without "
              f"(**{without / with_cache:.2f}x**)."]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
