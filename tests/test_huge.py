"""Huge images: band-by-band reading, tiles instead of crop layers, stitching objects cut by tiles.

A small `min_object_px` makes small test images "huge" (tile side 64 x min_object_px)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import tifffile
from skimage.measure import label as connected_label
from sklearn.metrics import adjusted_rand_score
from synthetic import voronoi_micrograph

from matsam import io
from matsam.config import CropConfig, MergeConfig, method_config
from matsam.segmentation.crops import crop_boxes, tile_boxes
from matsam.segmentation.masks import CropMasks
from matsam.segmentation.merge import candidates, fill_gaps, fill_gaps_by_window, own_parts
from matsam.workflow import steps


def sixteen_bit_tiff(path, shape, seed=0):
    rng = np.random.default_rng(seed)
    raw = (rng.gamma(2.0, 3000.0, shape)).clip(0, 65535).astype(np.uint16)
    tifffile.imwrite(path, raw)
    return raw


@pytest.mark.parametrize("shape", [(200, 300), (200, 300, 3)])
@pytest.mark.parametrize("scale16", ["percentile", "full"])
def test_banded_read_of_a_tiff_equals_the_whole_image_read(tmp_path, shape, scale16):
    """The memory-mapped, band-by-band conversion (histogram percentiles) gives the very bytes
    of the whole-image conversion, with bands that do not divide the height."""
    sixteen_bit_tiff(tmp_path / "raw.tif", shape)
    raw = io.memmap_tiff(tmp_path / "raw.tif")
    assert isinstance(raw, np.memmap)
    whole = io.to_rgb8(io.read_image(tmp_path / "raw.tif"), scale16, (0.5, 99.5))
    np.testing.assert_array_equal(io.banded_rgb8(raw, scale16, (0.5, 99.5), rows=37), whole)


def test_read_rgb8_maps_a_huge_tiff_and_decodes_a_compressed_one_band_by_band(tmp_path, monkeypatch):
    raw = sixteen_bit_tiff(tmp_path / "raw.tif", (120, 90))
    tifffile.imwrite(tmp_path / "zip.tif", raw, compression="zlib", rowsperstrip=16)
    monkeypatch.setattr(io, "BANDED_MIN_PIXELS", 0)
    assert io.memmap_tiff(tmp_path / "zip.tif") is None  # compressed: not mappable
    assert io.CompressedTiffRows.open(tmp_path / "zip.tif") is not None
    whole = io.to_rgb8(raw)
    np.testing.assert_array_equal(io.read_rgb8(tmp_path / "raw.tif"), whole)
    np.testing.assert_array_equal(io.read_rgb8(tmp_path / "zip.tif"), whole)


@pytest.mark.parametrize("shape", [(200, 300), (200, 300, 3), (200, 300, 4)])
@pytest.mark.parametrize("layout", [{"rowsperstrip": 24}, {"rowsperstrip": 7}, {"tile": (64, 64)}])
def test_compressed_tiff_rows_decode_only_their_segments_and_give_the_image(tmp_path, shape, layout):
    """Strips or tiles (tiles padded past the image edge), any row range, grey / RGB / RGBA:
    the very pixels of the whole-image read; the banded 8-bit conversion equals the whole one."""
    raw = (np.random.default_rng(1).gamma(2.0, 3000.0, shape)).clip(0, 65535).astype(np.uint16)
    tifffile.imwrite(tmp_path / "zip.tif", raw, compression="zlib", **layout)
    rows = io.CompressedTiffRows.open(tmp_path / "zip.tif")
    assert rows is not None and rows.shape == raw.shape and rows.band_rows % rows.segment_rows == 0
    np.testing.assert_array_equal(rows[0:200], raw)
    np.testing.assert_array_equal(rows[13:101], raw[13:101])
    for scale16 in ("percentile", "full"):
        np.testing.assert_array_equal(io.banded_rgb8(rows, scale16, (0.5, 99.5), rows.band_rows),
                                      io.to_rgb8(raw, scale16, (0.5, 99.5)))


def test_a_corrupt_strip_of_a_huge_compressed_tiff_is_a_one_line_error(tmp_path, monkeypatch):
    raw = sixteen_bit_tiff(tmp_path / "raw.tif", (200, 90))
    tifffile.imwrite(tmp_path / "zip.tif", raw, compression="zlib", rowsperstrip=16)
    data = bytearray((tmp_path / "zip.tif").read_bytes())
    with tifffile.TiffFile(tmp_path / "zip.tif") as tif:
        offset = tif.pages.first.dataoffsets[5]
    data[offset : offset + 64] = b"\xff" * 64
    (tmp_path / "zip.tif").write_bytes(bytes(data))
    monkeypatch.setattr(io, "BANDED_MIN_PIXELS", 0)
    assert io.CompressedTiffRows.open(tmp_path / "zip.tif") is not None  # the header is fine
    with pytest.raises(io.InputError, match=r"zip\.tif: cannot read image \(") as err:
        io.read_rgb8(tmp_path / "zip.tif")
    assert "\n" not in str(err.value)


def test_a_one_strip_or_float_tiff_is_left_to_the_whole_image_reader(tmp_path):
    raw = np.zeros((1000, 40), np.uint16)
    tifffile.imwrite(tmp_path / "one.tif", raw, compression="zlib", rowsperstrip=1000)
    tifffile.imwrite(tmp_path / "float.tif", raw.astype(np.float32), compression="zlib", rowsperstrip=16)
    tifffile.imwrite(tmp_path / "plain.tif", raw)
    for name in ("one.tif", "float.tif", "plain.tif"):
        assert io.CompressedTiffRows.open(tmp_path / name) is None, name
    (tmp_path / "bad.tif").write_text("not a tiff")
    assert io.CompressedTiffRows.open(tmp_path / "bad.tif") is None


def test_png_size_reads_the_header(tmp_path):
    io.write_png(tmp_path / "a.png", np.zeros((70, 130, 3), np.uint8))
    assert io.png_size(tmp_path / "a.png") == (70, 130)


@pytest.mark.parametrize("size", [(2048, 1500), (1024, 2048), (300, 200)])
def test_a_normal_size_image_keeps_its_crops(tmp_path, size):
    """The tiling defaults change no crop of an image whose longer side is at most 2048 px."""
    height, width = size
    io.write_png(tmp_path / "image.png", np.zeros((height, width, 3), np.uint8))
    for cfg in (CropConfig(), CropConfig(n_layers=1)):
        steps.plan_crops(tmp_path / "image.png", tmp_path / "crops.json", cfg)
        plan = io.read_json(tmp_path / "crops.json")
        assert "tiled" not in plan
        assert steps.read_crops(tmp_path / "crops.json") == crop_boxes(height, width, cfg.n_layers,
                                                                       cfg.overlap_ratio)


def test_a_huge_image_is_planned_as_overlapping_tiles(tmp_path):
    io.write_png(tmp_path / "image.png", np.zeros((2049, 5000, 3), np.uint8))
    steps.plan_crops(tmp_path / "image.png", tmp_path / "crops.json", CropConfig())
    assert steps.is_tiled(tmp_path / "crops.json")
    tiles = steps.read_crops(tmp_path / "crops.json")
    assert len(tiles) == 2 * 3 and {t.layer for t in tiles} == {1}
    assert max(t.width for t in tiles) == max(t.height for t in tiles) == 2048
    covered = np.zeros((2049, 5000), np.uint8)
    for t in tiles:
        covered[t.y0 : t.y1, t.x0 : t.x1] += 1
    assert covered.min() >= 1
    xs = sorted({t.x0 for t in tiles})
    assert all(2048 - (b - a) >= 256 for a, b in zip(xs, xs[1:]))  # overlap >= 12.5 % of 2048


def crop_masks_of(mask: np.ndarray, tile) -> CropMasks:
    """One tile's CropMasks holding the part of `mask` inside it (if any)."""
    part = mask[tile.y0 : tile.y1, tile.x0 : tile.x1]
    if not part.any():
        return CropMasks.empty((tile.height, tile.width))
    ys, xs = np.nonzero(part)
    box = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.int32)
    return CropMasks(np.packbits(part.ravel())[None], part.shape, np.ones(1, np.float32), np.ones(1, np.float32),
                     box, np.array([part.sum()]), np.zeros(1, np.int64))


def test_a_disc_cut_by_tile_borders_becomes_one_object():
    """A disc wider than the tiles' overlap is cut in every tile that holds it: its pieces are
    stitched into one object, while a small disc cut by one tile comes whole from its neighbour."""
    height, width = 200, 300
    tiles = tile_boxes(height, width, 128, 0.125)  # starts x 0, 86, 172; y 0, 72
    big, small = np.zeros((height, width), np.uint8), np.zeros((height, width), np.uint8)
    cv2.circle(big, (128, 100), 45, 1, -1)  # cut by the edges of all six tiles it lies in
    cv2.circle(small, (210, 20), 8, 1, -1)  # whole in the top row's last tile, cut by its left neighbour
    big, small = big.astype(bool), small.astype(bool)
    masks = [crop_masks_of(big, t) for t in tiles]
    found = candidates(tiles, masks, height, width, MergeConfig(), tiled=True)
    assert len(found) == 1
    x0, y0, x1, y1 = found[0].box
    stitched = np.zeros((height, width), bool)
    stitched[y0:y1, x0:x1] = found[0].mask
    np.testing.assert_array_equal(stitched, big)
    assert candidates(tiles, masks, height, width, MergeConfig(), tiled=False) == []  # layer rule alone: lost

    small_masks = [crop_masks_of(small, t) for t in tiles]
    found = candidates(tiles, small_masks, height, width, MergeConfig(), tiled=True)
    assert len(found) == 1 and found[0].area == small.sum()


def run_chain(folder, raw_file, cfg, segmenter) -> np.ndarray:
    """prepare -> merge for one image, through the steps the rules call; the labels."""
    folder.mkdir()
    image, crops, prompts_file = folder / "image.png", folder / "crops.json", folder / "prompts.npz"
    steps.prepare_image(raw_file, image, cfg.read)
    steps.plan_crops(image, crops, cfg.crops)
    steps.make_prompts(image, crops, prompts_file, "grain", cfg.prompts)
    steps.embed_and_segment(["img"], [image], [crops], [prompts_file], folder / "emb", folder / "masks", cfg,
                            segmenter)
    steps.merge_masks(image, crops, prompts_file, folder / "masks", "img", folder / "labels.tif",
                      folder / "boundaries.png", "grain", cfg.merge, cfg.prompts.blur, None)
    return io.read_image(folder / "labels.tif")


def test_mobile_sam_on_tiles_matches_the_whole_image(tmp_path, mobile_sam_weights):
    """Real MobileSAM on a 320-px grain image, whole and as 2 x 2 tiles of 256 px (32-px overlap,
    less than the grains: many are stitched): the two segmentations agree (ARI >= 0.95) or score
    within 0.05 of each other against the truth."""
    from matsam.segmentation.sam import Segmenter

    rgb, boundary = voronoi_micrograph(seed=3, size=320, n_grains=30)
    io.write_png(tmp_path / "raw.png", rgb)
    truth = connected_label(~boundary, background=0, connectivity=1)
    cfg = method_config("grain", {"model": {"device": "cpu", "checkpoint": str(mobile_sam_weights)}})
    tiled_cfg = method_config("grain", {"model": {"device": "cpu", "checkpoint": str(mobile_sam_weights)},
                                        "crops": {"min_object_px": 4}})
    segmenter = Segmenter.from_config(cfg.model)
    whole = run_chain(tmp_path / "whole", tmp_path / "raw.png", cfg, segmenter)
    tiled = run_chain(tmp_path / "tiled", tmp_path / "raw.png", tiled_cfg, segmenter)
    assert steps.is_tiled(tmp_path / "tiled" / "crops.json") and not steps.is_tiled(tmp_path / "whole" / "crops.json")
    inside = truth > 0
    agree = adjusted_rand_score(whole[inside], tiled[inside])
    vs_truth = [adjusted_rand_score(truth[inside], lab[inside]) for lab in (whole, tiled)]
    assert agree >= 0.95 or abs(vs_truth[0] - vs_truth[1]) <= 0.05, (agree, vs_truth)


def test_own_parts_tile_the_image_inside_their_tiles():
    height, width = 200, 300
    tiles = tile_boxes(height, width, 128, 0.125)
    covered = np.zeros((height, width), np.uint8)
    for (x0, y0, x1, y1), (tx0, ty0, tx1, ty1) in own_parts(tiles):
        assert tx0 <= x0 < x1 <= tx1 and ty0 <= y0 < y1 <= ty1
        covered[y0:y1, x0:x1] += 1
    assert (covered == 1).all()


def test_gaps_filled_tile_by_tile_match_the_whole_image_fill():
    """Wide gaps (grains no mask covered) that cross tile borders become one gap grain each,
    joined across tiles, and the grains are as right as when the whole image is filled at once."""
    rgb, boundary = voronoi_micrograph(seed=5, size=256, n_grains=40)
    truth = connected_label(~boundary, background=0, connectivity=1).astype(np.int32)
    rng = np.random.default_rng(0)
    missed = rng.choice(np.arange(1, truth.max() + 1), size=truth.max() // 3, replace=False)
    labels = np.where(np.isin(truth, missed), 0, truth).astype(np.int32)
    cfg = MergeConfig(min_object_area=16, gap_grain_radius=3)
    tiles = tile_boxes(256, 256, 96, 0.25)
    tiled = fill_gaps_by_window(labels, rgb, cfg, tiles)
    assert (tiled > 0).all()
    np.testing.assert_array_equal(tiled[labels > 0], labels[labels > 0])  # SAM's grains keep their ids
    crossing = [k for k in missed if sum((truth[t.y0 : t.y1, t.x0 : t.x1] == k).any() for t in tiles) > 1]
    assert len(crossing) >= 5  # the test needs gap grains that cross tile borders
    for k in crossing:
        ids = tiled[truth == k]
        assert np.bincount(ids).max() >= 0.95 * ids.size, k  # one grain, not one per tile
    inside = truth > 0
    whole = fill_gaps(labels, rgb, cfg)
    scores = [adjusted_rand_score(truth[inside], filled[inside]) for filled in (tiled, whole)]
    assert scores[0] >= scores[1] - 0.005, scores
