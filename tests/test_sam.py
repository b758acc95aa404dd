"""The real MobileSAM on small synthetic images (no downloads: weights come from setup-env)."""

import dataclasses

import numpy as np
import pytest
import torch
from synthetic import few_discs

from matsam.config import ModelConfig, SamConfig
from matsam.segmentation.sam import Segmenter, build_model, mask_boxes
from matsam.segmentation.weights import WeightsError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def segmenter(mobile_sam_weights):
    return Segmenter(build_model("mobile_sam", mobile_sam_weights), torch.device("cpu"))


def test_attention_bias_cache_holds_the_loaded_weights(segmenter):
    """TinyViT caches its attention biases at eval(); they must be the checkpoint's, not the init's."""
    checked = 0
    for module in segmenter.net.image_encoder.modules():
        if hasattr(module, "attention_biases") and hasattr(module, "ab"):
            expected = module.attention_biases[:, module.attention_bias_idxs]
            assert torch.equal(module.ab, expected)
            checked += 1
    assert checked > 0


def test_each_disc_is_segmented_from_a_point_inside_it(segmenter):
    image, mask = few_discs(seed=0)
    from scipy import ndimage as ndi

    discs, n = ndi.label(mask)
    centres = np.array(ndi.center_of_mass(mask, discs, range(1, n + 1)))[:, ::-1]  # (x, y)
    masks = segmenter.segment(image, centres.astype(np.float32), SamConfig(skip_covered_points=False))
    assert len(masks) == n
    for i in range(len(masks)):
        m = masks.mask(i)
        disc = discs == discs[int(centres[masks.point_index[i], 1]), int(centres[masks.point_index[i], 0])]
        iou = (m & disc).sum() / (m | disc).sum()
        assert iou > 0.8, f"disc {i}: IoU {iou:.2f}"
        x0, y0, x1, y1 = masks.boxes[i]
        assert m[y0:y1, x0:x1].sum() == m.sum() == masks.areas[i]


def test_points_inside_kept_masks_are_skipped(segmenter):
    image, mask = few_discs(seed=1)
    ys, xs = np.nonzero(mask)
    pick = np.random.default_rng(0).choice(len(xs), 40, replace=False)
    points = np.stack([xs[pick], ys[pick]], 1).astype(np.float32)
    skipping = segmenter.segment(image, points, SamConfig(points_per_batch=4))
    assert 1 <= len(skipping) <= 8  # a few masks per disc at most, not one per point


def test_mask_boxes_are_half_open():
    masks = torch.zeros(2, 10, 10, dtype=torch.bool)
    masks[0, 2:5, 3:7] = True
    assert mask_boxes(masks).tolist() == [[3, 2, 7, 5], [0, 0, 0, 0]]


def test_vit_b_architecture_builds_without_weights():
    net = build_model("vit_b", None)
    assert net.image_encoder.img_size == 1024 and not net.training
    assert sum(p.numel() for p in net.parameters()) > 80e6


def test_a_missing_checkpoint_for_vit_h_is_a_clear_error():
    from matsam.segmentation.sam import checkpoint_for

    with pytest.raises(ValueError, match="needs model.checkpoint"):
        checkpoint_for(ModelConfig(name="vit_h"))
    with pytest.raises(WeightsError, match="nowhere.pth: SAM checkpoint not found"):
        checkpoint_for(ModelConfig(name="vit_h", checkpoint="/nowhere.pth"))


def test_smallest_choice_keeps_the_inner_object_of_nested_ones(segmenter):
    yy, xx = np.mgrid[:128, :128]
    disc = (yy - 64) ** 2 + (xx - 64) ** 2 < 12**2
    square = (abs(yy - 64) < 34) & (abs(xx - 64) < 34)
    grey = np.where(disc, 40, np.where(square, 120, 210)).astype(np.uint8)
    image = np.repeat(grey[..., None], 3, axis=2)
    point = np.array([[64.0, 64.0]], np.float32)
    loose = SamConfig(pred_iou_thresh=0.5, stability_score_thresh=0.5, max_mask_fraction=0.9)
    small = segmenter.segment(image, point, dataclasses.replace(loose, multimask_choice="smallest"))
    best = segmenter.segment(image, point, loose)
    assert len(small) == 1 and len(best) == 1
    m = small.mask(0)
    assert (m & disc).sum() / (m | disc).sum() > 0.8
    assert small.areas[0] <= best.areas[0]


def test_the_decoder_job_model_holds_the_checkpoint_s_decoder(segmenter, mobile_sam_weights):
    from matsam.segmentation.sam import build_decoder_model

    decoder = build_decoder_model(mobile_sam_weights).state_dict()
    full = {k: v for k, v in segmenter.net.state_dict().items() if k.startswith(("prompt_encoder.", "mask_decoder."))}
    assert decoder.keys() == full.keys() and len(full) > 100
    assert all(torch.equal(decoder[k], full[k]) for k in full)


def test_the_decoder_job_does_not_import_the_image_encoder_s_timm():
    import subprocess
    import sys

    code = ("import sys; from matsam.config import ModelConfig; from matsam.segmentation.sam import Decoder; "
            "Decoder.from_config(ModelConfig(device='cpu')); print(sorted({m.split('.')[0] for m in sys.modules} "
            "& {'timm', 'mobile_sam'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_stored_embeddings_give_the_in_process_masks(segmenter, tmp_path):
    """The two SAM rules (encoder writes .npy, decoder reads it) give what one process gives."""
    from matsam import io
    from matsam.config import method_config
    from matsam.workflow import steps

    image, _ = few_discs(seed=2)
    io.write_png(tmp_path / "w" / "image.png", image)
    cfg = method_config("phase", {"prompts": {"grid_min": 4, "grid_max": 4}})
    work = tmp_path / "w"
    steps.plan_crops(work / "image.png", work / "crops.json", cfg.crops)
    steps.make_prompts(work / "image.png", work / "crops.json", work / "prompts.npz", "phase", cfg.prompts)
    steps.embed_images(["w"], [work / "image.png"], [work / "crops.json"], tmp_path / "emb", cfg.read, cfg.model,
                       segmenter.encoder)
    steps.segment_images(["w"], [work / "crops.json"], [work / "prompts.npz"], tmp_path / "emb", tmp_path / "masks",
                         cfg.model, cfg.sam, segmenter.decoder)
    stored = io.read_npz(steps.mask_file(tmp_path / "masks", "w", 0))
    points = io.read_npz(work / "prompts.npz")
    rgb = io.stretch_contrast(io.read_image(work / "image.png"))
    direct = segmenter.segment(rgb, points["points_0"], cfg.sam, points["n_seed_0"]).to_arrays()
    assert len(direct["scores"]) > 0
    for key in ("packed", "scores", "point_index", "decoded"):
        assert np.array_equal(stored[key], direct[key]), key


def test_half_precision_gives_the_float32_masks(segmenter):
    """The autocast path a GPU takes with `model.precision: float16`, run here with bfloat16 (the
    half type a CPU autocasts to): same objects as float32, to within a few pixels."""
    image, _ = few_discs(seed=3)
    half = Segmenter(segmenter.net, torch.device("cpu"), precision="bfloat16")
    points = np.array([[x, y] for y in range(8, 128, 24) for x in range(8, 128, 24)], np.float32)
    cfg = SamConfig(skip_covered_points=False)
    full, low = segmenter.segment(image, points, cfg), half.segment(image, points, cfg)
    assert len(full) >= 4
    matched = 0
    for i in range(len(full)):
        ious = [(full.mask(i) & low.mask(j)).sum() / (full.mask(i) | low.mask(j)).sum() for j in range(len(low))]
        matched += max(ious, default=0) >= 0.9
    assert matched >= 0.9 * len(full)
