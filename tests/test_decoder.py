"""matsam's mask decoder against SAM's own, on the same prompts: it must be exact (fp32 within 1e-3)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import REPO

from matsam import io
from matsam.config import PromptConfig
from matsam.segmentation import prompts
from matsam.segmentation.crops import Crop
from matsam.segmentation.decoder import FastMaskDecoder
from matsam.segmentation.sam import Segmenter, build_model, input_size

SAMPLE = REPO / "data" / "samples" / "phase" / "images" / "spot6_0d_2.tif"


def reference(net, embedding, sparse, dense):
    return net.mask_decoder(image_embeddings=embedding, image_pe=net.prompt_encoder.get_dense_pe(),
                            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                            multimask_output=True)


def embed_points(net, points, scale):
    coords = torch.as_tensor(points, dtype=torch.float32)[:, None, :] * scale
    labels = torch.ones(len(points), 1, dtype=torch.int)
    return net.prompt_encoder(points=(coords, labels), boxes=None, masks=None)


@pytest.fixture(scope="module")
def segmenter(mobile_sam_weights):
    return Segmenter(build_model("mobile_sam", mobile_sam_weights), torch.device("cpu"))


def micrograph_prompts(rgb, n):
    """Seeds of the real pre-segmentation plus points on the crop's edges and corners."""
    h, w = rgb.shape[:2]
    pre = prompts.presegment(rgb, "phase", PromptConfig())
    seeds = prompts.crop_prompts(pre, Crop(0, 0, 0, 0, w, h), PromptConfig())["points"]
    edges = np.array([[0, 0], [w - 1, h - 1], [w / 2, 0], [0, h / 2], [w - 1, 3]], np.float32)
    return np.concatenate([seeds[: n - len(edges)], edges])


@pytest.mark.slow
@pytest.mark.parametrize("width", [512, 300])  # square, and a crop whose low-res grid is part padding
def test_matches_mobile_sam_decoder_on_a_micrograph(segmenter, width):
    rgb = io.stretch_contrast(io.to_rgb8(io.read_image(SAMPLE)))[:, :width].copy()
    h, w = rgb.shape[:2]
    points = micrograph_prompts(rgb, 24)
    net = segmenter.net
    with torch.inference_mode():
        embedding = segmenter.embed(rgb)
        th, tw = input_size(h, w)
        sparse, dense = embed_points(net, points, torch.tensor([tw / w, th / h]))
        want_logits, want_iou = reference(net, embedding, sparse, dense)
        valid = (-(-th * 256 // 1024), -(-tw * 256 // 1024))
        logits, iou = segmenter.decoder.fast.decode(segmenter.decoder.fast.prepare(embedding), sparse, valid)
    want_logits = want_logits[:, :, : valid[0], : valid[1]]
    assert logits.shape == want_logits.shape == (24, 3, *valid)
    assert torch.allclose(logits, want_logits, rtol=0, atol=1e-3), (logits - want_logits).abs().max()
    assert torch.allclose(iou, want_iou, rtol=0, atol=1e-3)
    assert ((logits > 0) == (want_logits > 0)).float().mean() > 0.9999
    assert want_logits.abs().max() > 5  # real masks, not a degenerate all-zero case


@pytest.mark.slow
def test_prompts_are_decoded_independently_of_their_batch(segmenter):
    rgb = io.stretch_contrast(io.to_rgb8(io.read_image(SAMPLE)))
    points = micrograph_prompts(rgb, 8)
    with torch.inference_mode():
        state = segmenter.decoder.fast.prepare(segmenter.embed(rgb))
        sparse, _ = embed_points(segmenter.net, points, torch.tensor([2.0, 2.0]))
        together, _ = segmenter.decoder.fast.decode(state, sparse)
        alone = torch.cat([segmenter.decoder.fast.decode(state, sparse[i : i + 1])[0] for i in range(8)])
    assert torch.allclose(together, alone, rtol=0, atol=1e-3), (together - alone).abs().max()


def test_matches_the_sam_vit_decoder_architecture():
    """SAM ViT-B/L/H share one decoder architecture (segment_anything); random weights, with the
    LayerNorms' scales and shifts randomised too, on a random embedding."""
    from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer

    torch.manual_seed(0)
    prompt_encoder = PromptEncoder(embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024),
                                   mask_in_chans=16)
    decoder = MaskDecoder(num_multimask_outputs=3, transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256,
                          transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8))
    for module in decoder.modules():
        if isinstance(module, torch.nn.LayerNorm) or type(module).__name__ == "LayerNorm2d":
            torch.nn.init.normal_(module.weight, 1.0, 0.3)
            torch.nn.init.normal_(module.bias, 0.0, 0.3)
    net = SimpleNamespace(prompt_encoder=prompt_encoder.eval(), mask_decoder=decoder.eval())
    embedding = torch.randn(1, 256, 64, 64)
    points = np.random.default_rng(0).uniform(0, 1024, size=(6, 2))
    fast = FastMaskDecoder(net)
    with torch.inference_mode():
        sparse, dense = embed_points(net, points, 1.0)
        want_logits, want_iou = reference(net, embedding, sparse, dense)
        logits, iou = fast.decode(fast.prepare(embedding), sparse)
    assert torch.allclose(logits, want_logits, rtol=0, atol=1e-3), (logits - want_logits).abs().max()
    assert torch.allclose(iou, want_iou, rtol=0, atol=1e-3)
