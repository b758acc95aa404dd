from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import variation_of_information as sk_vi
from sklearn.metrics import adjusted_rand_score

from matsam.measurement.metrics import (
    adjusted_rand_index,
    grain_scores,
    match_classes,
    multiclass_miou,
    multiclass_scores,
    per_class_iou,
    phase_scores,
    regions_from_boundaries,
    split_ignore,
    variation_of_information,
)


def notebook_miou(pred: np.ndarray, mask: np.ndarray) -> float:
    """The official MatSAM notebook's ``Metric.get_iou``, transcribed as the reference."""
    class_num = np.amax(mask) + 1
    temp = 0.0
    for i_cl in range(class_num):
        n_ii = np.count_nonzero(mask[pred == i_cl] == i_cl)
        t_i = np.count_nonzero(mask == i_cl)
        temp += n_ii / (t_i + np.count_nonzero(pred == i_cl) - n_ii)
    return temp / class_num


def random_labels(rng: np.random.Generator, shape=(40, 50)) -> tuple[np.ndarray, np.ndarray]:
    """Two correlated label maps: blocky regions, the second with some relabelled noise."""
    a = np.kron(rng.integers(0, 12, (shape[0] // 5, shape[1] // 5)), np.ones((5, 5), int))
    b = a.copy()
    noise = rng.random(shape) < 0.2
    b[noise] = rng.integers(0, 20, noise.sum())
    return a, b


# --- regions_from_boundaries ----------------------------------------------------------------


def test_regions_from_boundaries_splits_on_boundaries():
    boundary = np.array(
        [
            [0, 0, 1, 0, 0],
            [0, 0, 1, 0, 0],
            [1, 1, 1, 0, 0],
        ]
    )
    expected = np.array(
        [
            [1, 1, 0, 2, 2],
            [1, 1, 0, 2, 2],
            [0, 0, 0, 2, 2],
        ]
    )
    regions = regions_from_boundaries(boundary)
    assert regions.dtype == np.int32
    np.testing.assert_array_equal(regions, expected)


def test_regions_from_boundaries_is_4_connected():
    # The two interior pixels touch only diagonally -> two grains.
    regions = regions_from_boundaries(np.array([[False, True], [True, False]]))
    np.testing.assert_array_equal(regions, [[1, 0], [0, 2]])


# --- ARI / VI -------------------------------------------------------------------------------


def test_ari_and_vi_by_hand():
    a = np.array([0, 0, 1, 1])
    b = np.array([0, 0, 1, 2])
    # Contingency: (a0,b0)=2, (a1,b1)=1, (a1,b2)=1.
    # sum C(n_ij,2) = 1; sum C(a_i,2) = 1+1 = 2; sum C(b_j,2) = 1; C(4,2) = 6.
    # expected = 2*1/6 = 1/3; max = (2+1)/2 = 3/2; ARI = (1-1/3)/(3/2-1/3) = 4/7.
    assert adjusted_rand_index(a, b) == pytest.approx(4 / 7, abs=1e-12)
    # H(b|a): a=1 (half the pixels) is split 50/50 by b -> 0.5 * 1 bit; H(a|b) = 0.
    assert variation_of_information(a, b) == pytest.approx((0.5, 0.0), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_ari_vi_match_sklearn_and_skimage(seed):
    rng = np.random.default_rng(seed)
    a, b = random_labels(rng)
    mask = rng.random(a.shape) < 0.7
    assert adjusted_rand_index(a, b) == pytest.approx(
        adjusted_rand_score(a.ravel(), b.ravel()), abs=1e-9
    )
    assert adjusted_rand_index(a, b, mask) == pytest.approx(
        adjusted_rand_score(a[mask], b[mask]), abs=1e-9
    )
    np.testing.assert_allclose(variation_of_information(a, b), sk_vi(a, b), atol=1e-9)
    np.testing.assert_allclose(
        variation_of_information(a, b, mask), sk_vi(a[mask], b[mask]), atol=1e-9
    )


def test_ari_vi_any_label_values():
    # Negative and huge labels are just names of clusters.
    rng = np.random.default_rng(7)
    a, b = random_labels(rng)
    a_renamed = np.where(a == 3, -5, a * 10**12)
    assert adjusted_rand_index(a_renamed, b) == pytest.approx(adjusted_rand_index(a, b), abs=1e-12)
    np.testing.assert_allclose(
        variation_of_information(a_renamed, b), variation_of_information(a, b), atol=1e-12
    )


def test_ari_vi_identical_and_empty():
    a, _ = random_labels(np.random.default_rng(3))
    permuted = np.random.default_rng(4).permutation(a.max() + 1)[a]
    assert adjusted_rand_index(a, permuted) == 1.0
    assert variation_of_information(a, permuted) == (0.0, 0.0)
    nothing = np.zeros(a.shape, bool)
    assert np.isnan(adjusted_rand_index(a, permuted, nothing))
    assert variation_of_information(a, permuted, nothing) == (0.0, 0.0)


def test_mask_excludes_disagreement():
    a = np.array([[1, 1, 2, 2]])
    b = np.array([[1, 1, 2, 1]])
    assert adjusted_rand_index(a, b) < 1.0
    assert adjusted_rand_index(a, b, mask=np.array([[True, True, True, False]])) == 1.0


# --- grain_scores / split_ignore --------------------------------------------------------------


def test_grain_scores_perfect_and_merged():
    true = np.zeros((2, 5), np.uint8)
    true[:, 2] = 1
    assert grain_scores(true, true) == {"ari": 1.0, "vi": 0.0}
    # Prediction without the boundary: one region of 10 px against true regions of 4, 2 (the
    # boundary, region 0) and 4 px. All pairs agree with chance: sum C(n_ij,2) = 6+1+6 = 13
    # = sum C(true,2) = 13, sum C(pred,2) = C(10,2) = 45, expected = 13*45/45 = 13 -> ARI 0.
    # VI = H(true|pred) = H(0.4, 0.2, 0.4) = 0.8*log2(2.5) + 0.2*log2(5) bits; H(pred|true) = 0.
    scores = grain_scores(np.zeros_like(true), true)
    assert scores["ari"] == pytest.approx(0.0, abs=1e-12)
    assert scores["vi"] == pytest.approx(0.8 * np.log2(2.5) + 0.2 * np.log2(5), abs=1e-12)


def test_split_ignore():
    label = np.array([[0, 1, 255], [1, 0, 0]], np.uint8)
    cleaned, ignore = split_ignore(label)
    np.testing.assert_array_equal(cleaned, [[0, 1, 0], [1, 0, 0]])
    np.testing.assert_array_equal(ignore, [[False, False, True], [False, False, False]])
    assert label[0, 2] == 255  # input untouched
    same, none = split_ignore(cleaned)
    assert none is None
    np.testing.assert_array_equal(same, cleaned)


def test_grain_scores_partial_labels():
    # Two labelled blocks (columns 0-9 and 20-29) with a boundary in each (columns 5 and 25);
    # columns 10-19 are unlabelled (255). The true grains right of column 5 and left of column 25
    # only "meet" through the unlabelled strip, so they must stay two grains.
    label = np.zeros((10, 30), np.uint8)
    label[:, [5, 25]] = 1
    label[:, 10:20] = 255
    true, ignore = split_ignore(label)
    # The prediction sees a real boundary inside the unlabelled strip: on the labelled pixels it
    # equals the truth exactly.
    pred = np.zeros_like(true)
    pred[:, [5, 15, 25]] = 1
    assert grain_scores(pred, true, ignore) == {"ari": 1.0, "vi": 0.0}
    # Anything else inside the unlabelled strip does not matter ...
    pred[2:8, 11:14] = 1
    assert grain_scores(pred, true, ignore) == {"ari": 1.0, "vi": 0.0}
    # ... but merging the two grains across the strip does.
    pred[:, 15] = 0
    assert grain_scores(pred, true, ignore)["ari"] < 0.9


# --- phase scores ---------------------------------------------------------------------------


def test_phase_scores_by_hand():
    pred = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    true = np.array([1, 0, 0, 0, 0, 0, 0, 1])
    # tp=1, fp=2, fn=1, tn=4: fg IoU = 1/4, bg IoU = 4/7, F1 = 2/(2+2+1), recall = 1/2.
    scores = phase_scores(pred, true)
    assert scores["iou"] == pytest.approx(1 / 4)
    assert scores["miou"] == pytest.approx((1 / 4 + 4 / 7) / 2)
    assert scores["f1"] == pytest.approx(2 / 5)
    assert scores["recall"] == pytest.approx(1 / 2)
    assert phase_scores(pred.astype(bool), true.astype(bool)) == scores


def test_phase_scores_empty_cases():
    zeros = np.zeros((3, 3), np.uint8)
    assert phase_scores(zeros, zeros) == {"iou": 1.0, "miou": 1.0, "f1": 1.0, "recall": 1.0}
    pred = zeros.copy()
    pred[0, 0] = 1
    # No true foreground: like the notebook, mIoU is the background IoU alone (8/9).
    scores = phase_scores(pred, zeros)
    assert scores["iou"] == 0.0 and scores["f1"] == 0.0 and scores["recall"] == 1.0
    assert scores["miou"] == pytest.approx(8 / 9)


@pytest.mark.parametrize("seed", range(3))
def test_phase_miou_matches_notebook(seed):
    rng = np.random.default_rng(seed)
    true = (rng.random((30, 40)) < 0.3).astype(np.uint8)
    pred = np.where(rng.random(true.shape) < 0.2, 1 - true, true)
    assert phase_scores(pred, true)["miou"] == pytest.approx(notebook_miou(pred, true), abs=1e-12)


def test_phase_scores_ignore():
    rng = np.random.default_rng(5)
    true = (rng.random((20, 20)) < 0.4).astype(np.uint8)
    pred = (rng.random((20, 20)) < 0.4).astype(np.uint8)
    ignore = rng.random((20, 20)) < 0.3
    assert phase_scores(pred, true, ignore) == phase_scores(pred[~ignore], true[~ignore])
    assert phase_scores(pred, true, ignore) != phase_scores(pred, true)


def test_per_class_iou_by_hand():
    true = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    # class 0: inter {0}, union {0,1,5} -> 1/3; class 1: inter {2,3}, union {1,2,3} -> 2/3;
    # class 2: inter {4}, union {4,5} -> 1/2; class 3 is in neither -> 1.
    np.testing.assert_allclose(per_class_iou(pred, true, 4), [1 / 3, 2 / 3, 1 / 2, 1.0])
    assert multiclass_miou(pred, true) == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    # A predicted id outside 0..K-1 is wrong for every class.
    np.testing.assert_allclose(
        per_class_iou(np.where(pred == 2, 9, pred), true, 3), [1 / 3, 2 / 3, 0]
    )


def test_multiclass_miou_matches_notebook_and_ignores_255():
    rng = np.random.default_rng(11)
    true = rng.integers(0, 3, (25, 25))
    pred = np.where(rng.random(true.shape) < 0.3, rng.integers(0, 3, true.shape), true)
    assert multiclass_miou(pred, true) == pytest.approx(notebook_miou(pred, true), abs=1e-12)
    labelled = true.copy()
    labelled[:5] = 255
    clean, ignore = split_ignore(labelled)
    assert multiclass_miou(pred, clean, ignore) == pytest.approx(
        notebook_miou(pred[5:], true[5:]), abs=1e-12
    )


def test_line_width_and_redrawing_compare_positions_not_thickness():
    from matsam.measurement.metrics import line_width, redraw_lines

    truth = np.zeros((40, 40), bool)
    truth[:, 19:22] = True  # a 3-px line splitting two grains
    thin = np.zeros((40, 40), bool)
    thin[:, 20] = True
    assert line_width(truth) == 3 and line_width(thin) == 1
    assert (redraw_lines(thin, 3) == truth).all()
    plain = grain_scores(thin, truth)["ari"]
    matched = grain_scores(thin, truth, match_width=True)["ari"]
    assert matched == pytest.approx(1.0) and plain < 0.95


# --- multi-phase scores ---------------------------------------------------------------------


def test_match_classes_undoes_a_permutation():
    rng = np.random.default_rng(3)
    true = np.kron(rng.integers(0, 4, (8, 10)), np.ones((4, 4), int))
    pred = np.array([0, 3, 1, 2])[true]  # the same classes under other ids
    np.testing.assert_array_equal(match_classes(pred, true), true)
    scores = multiclass_scores(pred, true)
    assert scores["miou"] == 1.0 and scores["iou"] == 1.0
    assert {k: v for k, v in scores.items() if k.startswith("iou_class_")} == {
        "iou_class_1": 1.0, "iou_class_2": 1.0, "iou_class_3": 1.0}
    # Without matching the same prediction would score badly.
    assert multiclass_miou(pred, true) < 0.5


def test_multiclass_scores_by_hand():
    true = np.array([0, 0, 1, 1, 1, 2, 2, 2])
    pred = np.array([0, 2, 2, 2, 0, 1, 1, 2])
    # Overlaps: pred 1 covers true 2 twice; pred 2 covers true 1 twice, true 2 once -> 1->2, 2->1.
    np.testing.assert_array_equal(match_classes(pred, true), [0, 1, 1, 1, 0, 2, 2, 1])
    # class 0: {0} / {0,1,4}; class 1: {2,3} / {1,2,3,4,7}; class 2: {5,6} / {5,6,7}.
    # Foreground: tp 5 (2,3,5,6,7), fp 1 (1), fn 1 (4).
    scores = multiclass_scores(pred, true)
    assert scores["iou_class_1"] == pytest.approx(2 / 5)
    assert scores["iou_class_2"] == pytest.approx(2 / 3)
    assert scores["miou"] == pytest.approx((1 / 3 + 2 / 5 + 2 / 3) / 3)
    assert scores["iou"] == pytest.approx(5 / 7)
    assert scores["f1"] == pytest.approx(10 / 12)
    assert scores["recall"] == pytest.approx(5 / 6)


def test_binary_mask_against_three_classes_cannot_separate_them():
    true = np.array([0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2])
    pred = (true > 0).astype(np.uint8)  # a perfect binary baseline
    scores = multiclass_scores(pred, true)
    assert scores["iou"] == 1.0 and scores["f1"] == 1.0 and scores["recall"] == 1.0
    assert scores["iou_class_1"] == pytest.approx(6 / 10)  # its one class goes to the larger one
    assert scores["iou_class_2"] == 0.0
    assert scores["miou"] == pytest.approx((1 + 6 / 10 + 0) / 3)


def test_extra_predicted_class_is_wrong_for_every_label_class():
    true = np.array([0, 0, 1, 1, 1, 1])
    pred = np.array([0, 0, 1, 1, 1, 2])  # three predicted classes, two label classes
    matched = match_classes(pred, true)
    np.testing.assert_array_equal(matched, [0, 0, 1, 1, 1, 2])  # 2 = max(true) + 1: no partner
    scores = multiclass_scores(pred, true)
    assert scores["iou_class_1"] == pytest.approx(3 / 4) and scores["iou"] == 1.0
    assert scores["miou"] == pytest.approx((1 + 3 / 4) / 2)


@pytest.mark.parametrize("seed", range(4))
def test_multiclass_scores_of_binary_maps_equal_phase_scores(seed):
    rng = np.random.default_rng(seed)
    true = (rng.random((30, 40)) < 0.3).astype(np.uint8)
    pred = np.where(rng.random(true.shape) < 0.2, 1 - true, true)
    ignore = rng.random(true.shape) < 0.2 if seed % 2 else None
    assert multiclass_scores(pred, true, ignore) == {**phase_scores(pred, true, ignore), "iou_class_1":
                                                    pytest.approx(phase_scores(pred, true, ignore)["iou"])}
    empty = np.zeros_like(true)
    assert multiclass_scores(pred, empty, ignore) == phase_scores(pred, empty, ignore)
    assert multiclass_scores(empty, true, ignore)["miou"] == phase_scores(empty, true, ignore)["miou"]


def test_multiclass_scores_leave_ignored_pixels_out():
    rng = np.random.default_rng(8)
    true = rng.integers(0, 3, (20, 20))
    pred = np.where(rng.random(true.shape) < 0.3, rng.integers(0, 3, true.shape), true)
    pred = np.array([0, 2, 1])[pred]
    labelled = true.copy()
    labelled[:6] = 255
    clean, ignore = split_ignore(labelled)
    assert multiclass_scores(pred, clean, ignore) == multiclass_scores(pred[6:], true[6:])
    assert multiclass_scores(pred, clean, ignore) != multiclass_scores(pred, true)


# --- scoring and tables in the pipeline (stages) --------------------------------------------


def test_stage_score_is_binary_unless_a_class_id_exceeds_one():
    from matsam.workflow.steps import score

    rng = np.random.default_rng(2)
    true = (rng.random((20, 20)) < 0.4).astype(np.uint8)
    true[:3] = 255
    pred = (rng.random((20, 20)) < 0.4).astype(np.uint8)
    clean, ignore = split_ignore(true)
    assert score("phase", pred, true) == phase_scores(pred, clean, ignore)  # no iou_class_* columns
    three = clean.copy()
    three[10:] *= 2
    three[:3] = 255
    multi = score("phase", pred, three)
    assert set(multi) == {"iou", "miou", "f1", "recall", "iou_class_1", "iou_class_2"}
    assert multi["iou"] == phase_scores(pred, clean, ignore)["iou"]  # foreground is foreground
    assert "iou_class_1" in score("phase", pred * 2, true)  # a class map against a binary label


def test_metric_tables_append_class_columns(tmp_path):
    import pandas as pd

    from matsam.measurement.metrics import METRIC_COLUMNS
    from matsam.workflow.steps import aggregate_all, aggregate_dataset

    binary = pd.DataFrame({"image": ["a", "b"], "method": ["matsam", "otsu"], "iou": [0.5, 0.7],
                           "miou": [0.6, 0.8], "f1": [0.1, 0.2], "recall": [0.3, 0.4]})
    multi = pd.DataFrame({"image": ["c", "c", "d"], "method": ["matsam", "otsu", "matsam"],
                          "iou_class_10": [0.5, 0.1, 0.7], "iou_class_2": [0.2, 0.0, 0.4], "iou": [0.9, 0.8, 0.7],
                          "miou": [0.5, 0.4, 0.3], "f1": [0.1, 0.1, 0.1], "recall": [1.0, 1.0, 1.0]})
    binary.to_csv(tmp_path / "b.csv", index=False)
    multi.to_csv(tmp_path / "m1.csv", index=False)
    aggregate_dataset([tmp_path / "m1.csv"], [], tmp_path / "m.csv", tmp_path / "s.csv")
    table = pd.read_csv(tmp_path / "m.csv")
    assert list(table.columns) == METRIC_COLUMNS + ["iou_class_2", "iou_class_10"]
    aggregate_dataset([tmp_path / "b.csv"], [], tmp_path / "b2.csv", tmp_path / "s.csv")
    assert list(pd.read_csv(tmp_path / "b2.csv").columns) == METRIC_COLUMNS
    aggregate_all(["bin", "multi"], [tmp_path / "b2.csv", tmp_path / "m.csv"], tmp_path / "all.csv")
    summary = pd.read_csv(tmp_path / "all.csv")
    assert list(summary.columns) == ["dataset", "method", "n_images", *METRIC_COLUMNS[2:], "iou_class_2",
                                     "iou_class_10"]
    row = summary[(summary.dataset == "multi") & (summary.method == "matsam")].iloc[0]
    assert row["n_images"] == 2 and row["iou_class_2"] == pytest.approx(0.3)
    assert row["iou_class_10"] == pytest.approx(0.6) and row["iou"] == pytest.approx(0.8)
    assert summary[summary.dataset == "bin"]["iou_class_2"].isna().all()
