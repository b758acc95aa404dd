"""Rule name -> matsam step, for `scripts/run_stage.py`.

Each entry maps the rule's named inputs, outputs and params onto one function of
`matsam.workflow.steps`. Errors are written as one line naming the file to the rule's log (and stderr),
and the job fails; outputs are only ever written atomically, so nothing half-done is left.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable

from matsam.workflow import input_check, steps
from matsam.workflow.catalogue import method_from_params

log = logging.getLogger("matsam")


def _cfg(smk: Any):
    return method_from_params(smk.params.cfg)


def retry_batch(batch: int, attempt: int) -> int:
    """The prompt batch of a decoder job's `attempt` (1, 2, ...): halved per retry, at least 1."""
    return max(1, batch >> (attempt - 1))


def _decode_cfg(smk: Any):
    """The decoder's settings with the prompt batch of this attempt (smaller after an OOM)."""
    cfg = _cfg(smk)
    batch = int(getattr(smk.resources, "points_per_batch", cfg.sam.points_per_batch))
    if batch == cfg.sam.points_per_batch:
        return cfg
    log.info("attempt with points_per_batch=%d (configured %d)", batch, cfg.sam.points_per_batch)
    return dataclasses.replace(cfg, sam=dataclasses.replace(cfg.sam, points_per_batch=batch))


def _names(files: Any) -> list[str]:
    """Image names of a SAM shard's work files (<work>/<dataset>/<image>/<file>)."""
    return [Path(f).parent.name for f in files]


def _merge(smk: Any) -> None:
    steps.merge_masks(smk.input.image, smk.input.crops, smk.input.prompts, smk.input.masks,
                       smk.wildcards.image, smk.output.labels, smk.output.map, _cfg(smk))


STEPS: dict[str, Callable[[Any], None]] = {
    "prepare_image": lambda s: steps.prepare_image(s.input.image, s.output.image, _cfg(s)),
    "plan_crops": lambda s: steps.plan_crops(s.input.image, s.output.crops, _cfg(s)),
    "make_prompts": lambda s: steps.make_prompts(s.input.image, s.input.crops, s.output.prompts, _cfg(s)),
    "embed_crops": lambda s: steps.embed_images(
        _names(s.input.images), s.input.images, s.input.crops, s.output.embeddings, _cfg(s)
    ),
    "segment_crops": lambda s: steps.segment_images(
        _names(s.input.crops), s.input.crops, s.input.prompts, s.input.embeddings, s.output.masks, _decode_cfg(s)
    ),
    "merge_grain_masks": _merge,
    "merge_phase_masks": _merge,
    "draw_overlay": lambda s: steps.draw_overlay(
        s.input.image, s.input.labels, s.input.map, s.output.overlay, s.params.cfg["mode"]
    ),
    "quantify_objects": lambda s: steps.quantify_objects(
        s.input.raw, s.input.labels, s.input.map, s.output.objects, s.output.summary, _cfg(s), s.wildcards.image,
        s.output.coco,
    ),
    "evaluate_image": lambda s: steps.evaluate_image(
        s.input.image, s.input.map, s.input.label, s.input.prompts, s.output.metrics, _cfg(s),
        s.wildcards.image, s.params.baselines,
    ),
    "aggregate_dataset": lambda s: steps.aggregate_dataset(
        s.input.metrics, s.input.summaries, s.output.metrics, s.output.summary
    ),
    "aggregate_all": lambda s: steps.aggregate_all(s.params.datasets, s.input.metrics, s.output.summary),
    "dataset_report": lambda s: __import__("matsam.measurement.report").report.dataset_report(
        s.wildcards.dataset, s.params.cfg["mode"], s.input.summary, s.input.metrics, s.input.objects,
        s.output.astm, s.output.sizes, s.output.fields, s.output.tables,
    ),
    "run_report": lambda s: __import__("matsam.measurement.report").report.run_report(
        s.params.config, s.params.checkpoints, s.output.run
    ),
    "check_input": lambda s: input_check.check_input(
        s.wildcards.dataset, s.wildcards.image, s.params.mode, s.input.raw, s.input.get("label"), s.output.check
    ),
    "collect_checks": lambda s: input_check.collect_checks(s.input.checks, s.output.checks),
    "failed_table": lambda s: input_check.write_failed_table(s.input.checks, s.output.failed),
    "link_stack": lambda s: __import__("matsam.workflow.stack_steps").stack_stages.link_stack_rule(s),
}


def run(smk: Any) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
        handlers=[logging.FileHandler(smk.log[0]), logging.StreamHandler(sys.stderr)] if smk.log else None,
    )
    if smk.threads:
        import os

        os.environ.setdefault("OMP_NUM_THREADS", str(smk.threads))
        if smk.rule in ("embed_crops", "segment_crops"):
            import torch

            torch.set_num_threads(int(smk.threads))
    start = time.perf_counter()
    try:
        STEPS[smk.rule](smk)
    except Exception as exc:
        log.error("%s: %s", smk.rule, exc)
        raise SystemExit(f"matsam {smk.rule} failed: {exc}") from None
    log.info("%s %s done in %.1f s", smk.rule, dict(smk.wildcards), time.perf_counter() - start)
