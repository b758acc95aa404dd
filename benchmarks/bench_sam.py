"""The SAM stage against SAM's official automatic mask generator, all in one run on the same images.

    .venv/bin/python benchmarks/bench_sam.py                  # first image of nbs2, nbs3, aza, uhcs, tbm
    .venv/bin/python benchmarks/bench_sam.py --per-set 2 --threads 2

Rows per image (every row in its own process, so its time includes imports and the model load,
and its peak RSS is its own):
  amg        `SamAutomaticMaskGenerator` of `mobile_sam` (32 x 32 grid, its defaults, the model
             built, loaded, then `eval()`ed), its masks merged and scored by matsam's own merge;
  matsam     `matsam segment` end to end (the CLI), scored as the pipeline scores it.
Per image, in one process on one image embedding and matsam's own prompts (all of them, none
skipped): `mobile_sam`'s `MaskDecoder` and matsam's decoder at batch sizes 1-64 (ms per prompt;
the best batch of each is reported) and the share of the three masks per prompt that agree at
IoU >= 0.95. The floor: multiply-adds of the encoder and of one prompt's decoding (counted with
torch's FlopCounterMode), divided by this CPU's measured float32 matmul throughput.

Writes benchmarks/results/bench_sam.md (and .json). Timings are wall seconds on this machine; the
ratios (amg / matsam) compare rows measured back to back on the same image.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SETS = {"nbs2": "phase", "nbs3": "phase", "aza": "phase", "uhcs": "phase", "tbm": "grain"}
BATCHES = (1, 4, 8, 16, 32, 64)
OUT = REPO / "benchmarks" / "results" / "bench_sam"


def images(per_set: int, names: list[str]) -> list[tuple[str, str, Path, Path]]:
    out = []
    for name in names:
        folder = SHARED / SETS[name] / name
        for image in sorted((folder / "images").iterdir())[:per_set]:
            out.append((name, SETS[name], image, folder / "labels" / f"{image.stem}.png"))
    return out


def popen_rss(cmd: list[str], threads: int) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB, from wait4: the child's own) and stdout of one child process."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MATSAM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status):
            raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{err.read()[-2000:]}")
        return wall, usage.ru_maxrss / 1024, out.read()


# --- workers (run in child processes) --------------------------------------------------------

def score_candidates(mode: str, rgb: np.ndarray, masks: list[dict], label_file: Path) -> float:
    """AMG masks through matsam's merge and scoring, as if they were matsam's own."""
    from matsam import imaging
    from matsam.config import method_config
    from matsam.io import read_label
    from matsam.measurement import metrics
    from matsam.segmentation import merge, prompts

    cfg = method_config(mode)
    h, w = rgb.shape[:2]
    cands = []
    for m in masks:
        x, y, bw, bh = (int(v) for v in m["bbox"])
        seg = m["segmentation"][y : y + bh + 1, x : x + bw + 1]
        cands.append(merge.Candidate(seg, x, y, h * w, float(m["predicted_iou"])))
    cands = [c for c in cands if c.area >= cfg.merge.min_object_area]
    if mode == "grain":
        _, predicted = merge.merge_grains(cands, rgb, cfg.merge)
    else:
        pre = prompts.presegment(rgb, mode, cfg.prompts)
        smooth = imaging.blurred(imaging.grey8(rgb), cfg.prompts.blur)
        side, depth = merge.phase_side(smooth, pre.threshold, pre.foreground)
        _, predicted = merge.merge_phase(cands, side, cfg.merge, depth)
    scores = metrics.score(mode, predicted, read_label(label_file, (h, w)))
    return scores["ari" if mode == "grain" else "miou"]


def amg_worker(mode: str, image: str, label: str) -> None:
    import torch
    from mobile_sam import SamAutomaticMaskGenerator

    from matsam import io
    from matsam.segmentation.sam import build_model
    from matsam.segmentation.weights import default_checkpoint

    torch.set_num_threads(int(os.environ["MATSAM_THREADS"]))
    net = build_model("mobile_sam", default_checkpoint())  # weights loaded, then eval()
    rgb = io.to_rgb8(io.read_image(image))
    start = time.perf_counter()
    with torch.inference_mode():
        masks = SamAutomaticMaskGenerator(net).generate(rgb)
    seconds = time.perf_counter() - start
    print(json.dumps({"masks": len(masks), "metric": score_candidates(mode, rgb, masks, Path(label)),
                      "decoder_calls": 32 * 32, "generate_s": seconds}))


def decoder_worker(mode: str, image: str) -> None:
    """ms per prompt of both decoders on the same embedding and prompts, and their agreement."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from matsam import io
    from matsam.config import method_config
    from matsam.segmentation import prompts
    from matsam.segmentation.crops import crop_boxes
    from matsam.segmentation.sam import Segmenter, input_size

    torch.set_num_threads(int(os.environ["MATSAM_THREADS"]))
    cfg = method_config(mode)
    seg = Segmenter.from_config(cfg.model)
    rgb = io.to_rgb8(io.read_image(image))
    h, w = rgb.shape[:2]
    pre = prompts.presegment(rgb, mode, cfg.prompts)
    points = prompts.crop_prompts(pre, crop_boxes(h, w, 0, 0.0)[0], cfg.prompts)["points"][:64]
    net = seg.net
    with torch.inference_mode():
        t0 = time.perf_counter()
        embedding = seg.embed(io.stretch_contrast(rgb))
        encoder_s = time.perf_counter() - t0
        th, tw = input_size(h, w)
        coords = torch.as_tensor(points)[:, None, :] * torch.tensor([tw / w, th / h])
        sparse, dense = net.prompt_encoder(points=(coords, torch.ones(len(points), 1, dtype=torch.int)),
                                           boxes=None, masks=None)
        pe = net.prompt_encoder.get_dense_pe()
        valid = (-(-th * 256 // 1024), -(-tw * 256 // 1024))

        def reference(sl):
            logits, iou = net.mask_decoder(image_embeddings=embedding, image_pe=pe, sparse_prompt_embeddings=sparse[sl],
                                           dense_prompt_embeddings=dense[sl], multimask_output=True)
            return logits[:, :, : valid[0], : valid[1]], iou

        state = seg.decoder.fast.prepare(embedding)

        def fast(sl):
            return seg.decoder.fast.decode(state, sparse[sl], valid)

        fast(slice(0, 1))  # the per-image part, cached for every later batch
        timings = {}
        for name, run in (("reference", reference), ("matsam", fast)):
            timings[name] = {}
            for batch in BATCHES:
                t0 = time.perf_counter()
                for start in range(0, len(points), batch):
                    run(slice(start, start + batch))
                timings[name][batch] = (time.perf_counter() - t0) / len(points) * 1000
        ref_logits, _ = reference(slice(None))
        new_logits, _ = fast(slice(None))
        a, b = ref_logits > 0, new_logits > 0
        union = (a | b).sum(dim=(-1, -2)).clamp(min=1)
        agree = ((a & b).sum(dim=(-1, -2)) / union >= 0.95) | ((a | b).sum(dim=(-1, -2)) == 0)
        macs = {}
        fresh = seg.decoder.fast
        for name, fn in (("encoder", lambda: seg.embed(io.stretch_contrast(rgb))),
                         ("reference", lambda: reference(slice(0, 1))),
                         ("matsam", lambda: fresh.decode(fresh.prepare(embedding), sparse[:1], valid))):
            counter = FlopCounterMode(display=False)
            with counter:
                fn()
            macs[name] = counter.get_total_flops() / 2
        state2 = seg.decoder.fast.prepare(embedding)
        fast_first = FlopCounterMode(display=False)
        seg.decoder.fast.decode(state2, sparse[:1], valid)  # fill the per-image cache, then count one prompt
        with fast_first:
            seg.decoder.fast.decode(state2, sparse[1:2], valid)
        macs["matsam_per_prompt"] = fast_first.get_total_flops() / 2
    print(json.dumps({"encoder_s": encoder_s, "ms_per_prompt": timings, "agree": float(agree.float().mean()),
                      "n_prompts": len(points), "macs": macs}))


def matmul_gmacs(threads: int) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    t0 = time.perf_counter()
    for _ in range(5):
        a @ b
    return 5 * 2048**3 / (time.perf_counter() - t0) / 1e9


# --- the benchmark ---------------------------------------------------------------------------

def matsam_row(mode: str, image: Path, label: Path, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [str(Path(sys.executable).parent / "matsam"), "segment", str(image), "--mode", mode, "-o", tmp,
               "--label", str(label), "--no-baselines", "--device", "cpu"]
        wall, rss, _ = popen_rss(cmd, threads)
        import pandas as pd

        metric = pd.read_csv(Path(tmp) / "metrics.csv").iloc[0]["ari" if mode == "grain" else "miou"]
        decoded = sum(int(np.load(f)["decoded"]) for f in (Path(tmp) / "work" / "masks").rglob("crop_*.npz"))
    return {"wall_s": wall, "rss_mb": rss, "metric": float(metric), "decoder_calls": decoded}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-set", type=int, default=1)
    p.add_argument("--sets", default=",".join(SETS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    rows = []
    for dataset, mode, image, label in images(args.per_set, args.sets.split(",")):
        print(f"{dataset}/{image.name} ...", flush=True)
        me = [sys.executable, __file__]
        wall, rss, out = popen_rss([*me, "--worker", "amg", mode, str(image), str(label)], args.threads)
        amg = {"wall_s": wall, "rss_mb": rss, **json.loads(out.strip().splitlines()[-1])}
        ours = matsam_row(mode, image, label, args.threads)
        _, _, out = popen_rss([*me, "--worker", "decoder", mode, str(image)], args.threads)
        dec = json.loads(out.strip().splitlines()[-1])
        rows.append({"dataset": dataset, "image": image.stem, "mode": mode, "amg": amg, "matsam": ours,
                     "decoders": dec})
        print(f"  amg {amg['wall_s']:.1f} s, matsam {ours['wall_s']:.1f} s ({amg['wall_s'] / ours['wall_s']:.1f}x), "
              f"decoder {min(dec['ms_per_prompt']['reference'].values()):.1f} -> "
              f"{min(dec['ms_per_prompt']['matsam'].values()):.1f} ms/prompt", flush=True)
    gmacs = matmul_gmacs(args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"rows": rows, "matmul_gmacs": gmacs}, indent=1))
    text = table(rows, gmacs, args.threads)
    args.out.with_suffix(".md").write_text(text)
    print(text)


def table(rows: list[dict], gmacs: float, threads: int) -> str:
    lines = [f"# SAM stage vs the official generator ({platform.machine()}, {os.cpu_count()} CPUs, "
             f"{threads} threads, MobileSAM, CPU)", "",
             f"float32 matmul throughput here: {gmacs:.1f} GMAC/s. Floor = (encoder MACs + decoder calls x "
             "MACs per prompt) / throughput.", "",
             "| image | row | s per image | decoder ms/prompt (best batch) | decoder calls | peak RSS MB | "
             "mIoU / ARI | masks agree (IoU >= 0.95) | floor s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        d = r["decoders"]
        ref_ms = d["ms_per_prompt"]["reference"]
        new_ms = d["ms_per_prompt"]["matsam"]
        rb, nb = min(ref_ms, key=ref_ms.get), min(new_ms, key=new_ms.get)
        m = d["macs"]
        floor_amg = (m["encoder"] + r["amg"]["decoder_calls"] * m["reference"]) / gmacs / 1e9
        floor_ours = (m["encoder"] + r["matsam"]["decoder_calls"] * m["matsam_per_prompt"]) / gmacs / 1e9
        name = f"{r['dataset']}/{r['image']}"
        lines.append(f"| {name} | amg | {r['amg']['wall_s']:.1f} | {ref_ms[rb]:.1f} (batch {rb}) | "
                     f"{r['amg']['decoder_calls']} | {r['amg']['rss_mb']:.0f} | {r['amg']['metric']:.4f} | | "
                     f"{floor_amg:.1f} |")
        lines.append(f"| {name} | matsam | {r['matsam']['wall_s']:.1f} "
                     f"(**{r['amg']['wall_s'] / r['matsam']['wall_s']:.1f}x**) | {new_ms[nb]:.1f} (batch {nb}; "
                     f"**{ref_ms[rb] / new_ms[nb]:.1f}x**) | {r['matsam']['decoder_calls']} | "
                     f"{r['matsam']['rss_mb']:.0f} | {r['matsam']['metric']:.4f} | {d['agree']:.4f} | "
                     f"{floor_ours:.1f} |")
    lines += ["", "Decoder ms per prompt by batch size (same embedding and prompts):", "",
              "| image | decoder | " + " | ".join(f"batch {b}" for b in BATCHES) + " |",
              "|---|---|" + "---|" * len(BATCHES)]
    for r in rows:
        for name in ("reference", "matsam"):
            ms = r["decoders"]["ms_per_prompt"][name]
            lines.append(f"| {r['dataset']}/{r['image']} | {name} | "
                         + " | ".join(f"{ms[str(b)] if str(b) in ms else ms[b]:.1f}" for b in BATCHES) + " |")
    macs = rows[0]["decoders"]["macs"] if rows else {}
    if macs:
        lines += ["", f"MACs: encoder {macs['encoder'] / 1e9:.2f} G per 1024² pass; decoder per prompt: "
                  f"mobile_sam {macs['reference'] / 1e9:.3f} G, matsam {macs['matsam_per_prompt'] / 1e9:.3f} G "
                  f"(+ {(macs['matsam'] - macs['matsam_per_prompt']) / 1e9:.3f} G once per image)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        {"amg": amg_worker, "decoder": decoder_worker}[sys.argv[2]](*sys.argv[3:])
    else:
        main()
