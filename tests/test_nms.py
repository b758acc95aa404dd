"""Tests of the numpy box NMS (matsam/segmentation/nms.py) that keeps one mask per object inside a crop."""

from __future__ import annotations

import numpy as np
import pytest

from matsam.segmentation.nms import box_iou, nms

A = np.array([0, 0, 10, 10])


@pytest.mark.parametrize("other, expected", [
    ([0, 0, 10, 10], 1.0),  # identical
    ([20, 20, 30, 30], 0.0),  # disjoint
    ([10, 0, 20, 10], 0.0),  # sharing an edge only: half-open boxes do not overlap
    ([0, 0, 10, 5], 0.5),  # the lower half of A: 50 / 100
    ([5, 0, 15, 10], 1 / 3),  # shifted by half its width: 50 / (100 + 100 - 50)
    ([2, 2, 8, 8], 0.36),  # inside A: 36 / 100
    ([5, 5, 15, 15], 25 / 175),  # corner overlap
])
def test_box_iou_on_hand_computed_boxes(other, expected):
    assert box_iou(A, np.array([other]))[0] == pytest.approx(expected, abs=1e-12)


def test_box_iou_is_vectorised_and_symmetric():
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    ious = box_iou(A, boxes)
    assert ious.shape == (3,)
    assert ious == pytest.approx([1.0, 1 / 3, 0.0])
    assert box_iou(boxes[1], A[None])[0] == pytest.approx(ious[1])


@pytest.mark.parametrize("box, others", [
    ([3, 3, 3, 3], [[3, 3, 3, 3]]),  # two zero-area boxes at one point: union 0
    ([3, 3, 3, 8], [[3, 3, 3, 8], [0, 0, 10, 10]]),  # a line, with itself and with a box around it
    ([0, 0, 10, 10], [[4, 4, 4, 4]]),
])
def test_zero_area_boxes_give_zero_not_nan(box, others):
    with np.errstate(all="raise"):  # no 0 / 0 either
        ious = box_iou(np.array(box, float), np.array(others, float))
    assert np.isfinite(ious).all() and (ious == 0).all()


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 1, 10, 11]])  # pairwise IoU >= 0.68
    assert nms(boxes, np.array([0.5, 0.9, 0.7]), 0.5).tolist() == [1]


def test_nms_keeps_disjoint_boxes_best_score_first():
    boxes = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [0, 20, 10, 30]])
    keep = nms(boxes, np.array([0.2, 0.9, 0.5, 0.7]), 0.1)
    assert keep.tolist() == [1, 3, 2, 0]
    assert keep.dtype == np.int64


def test_nms_suppresses_only_through_kept_boxes():
    """B overlaps A (kept) and C; C overlaps only B. B goes, so C survives though it overlaps B."""
    boxes = np.array([[0, 0, 10, 10], [4, 0, 14, 10], [8, 0, 18, 10]])  # IoU(A,B) = IoU(B,C) = 6/14
    keep = nms(boxes, np.array([0.9, 0.8, 0.7]), 0.4)
    assert keep.tolist() == [0, 2]


def test_an_iou_equal_to_the_threshold_is_kept():
    """A box is dropped only when its IoU exceeds the threshold (SAM's and torchvision's rule)."""
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5]])  # IoU exactly 0.5
    scores = np.array([0.9, 0.8])
    assert nms(boxes, scores, 0.5).tolist() == [0, 1]
    assert nms(boxes, scores, 0.49).tolist() == [0]


def test_ties_keep_the_first_box():
    """Equal scores: the order is stable, so the earlier box wins, run after run."""
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10], [20, 20, 30, 30]])
    assert nms(boxes, np.array([0.5, 0.5, 0.5, 0.5]), 0.7).tolist() == [0, 1]
    assert nms(boxes, np.array([0.5, 0.6, 0.5, 0.6]), 0.7).tolist() == [1, 0]


def test_nms_of_no_boxes_is_empty():
    keep = nms(np.zeros((0, 4)), np.zeros(0), 0.7)
    assert keep.shape == (0,) and keep.dtype == np.int64


def test_nms_takes_lists_and_integer_boxes():
    assert nms([[0, 0, 4, 4], [0, 0, 4, 4]], [0.1, 0.2], 0.7).tolist() == [1]
