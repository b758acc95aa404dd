"""ASTM E112 §15 field statistics, per-image counts and the flags of suspicious images."""

from __future__ import annotations

import math

import numpy as np
import pytest

from matsam.measurement import astm


def test_field_statistics_use_student_t():
    st = astm.field_statistics([7.0, 8.0, 9.0, float("nan")])
    assert st["n_fields"] == 3 and st["mean"] == pytest.approx(8.0) and st["sd"] == pytest.approx(1.0)
    assert st["ci95"] == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)  # t(0.975, 2) = 4.3027
    assert st["ra_pct"] == pytest.approx(100 * 4.302653 / math.sqrt(3) / 8.0, rel=1e-6)


def test_one_field_has_no_spread():
    st = astm.field_statistics([5.0])
    assert st["n_fields"] == 1 and st["mean"] == 5.0 and math.isnan(st["sd"]) and math.isnan(st["ci95"])


def test_g_comes_from_the_mean_count_and_warns_on_few_fields():
    # N_A = 1000 and 4000 grains/mm^2: G from the mean (2500), not the mean of the two G values.
    rows = [{"astm_na_per_mm2": na, "astm_g_planimetric": astm.g_from_na(na), "astm_mean_intercept_um": 30.0,
             "astm_g_heyn": astm.g_from_intercept(0.03)} for na in (1000.0, 4000.0)]
    plan, heyn = astm.dataset_statistics(rows, "grain")
    assert plan["G"] == pytest.approx(3.321928 * math.log10(2500) - 2.954)
    assert plan["G_mean"] == pytest.approx((astm.g_from_na(1000) + astm.g_from_na(4000)) / 2)
    assert plan["G"] != pytest.approx(plan["G_mean"], abs=1e-3)
    assert "only 2 field(s)" in plan["warning"] and "%RA" in plan["warning"]
    assert heyn["sd"] == 0 and heyn["ra_pct"] == 0 and heyn["G"] == pytest.approx(-6.643856 * math.log10(0.03) - 3.288)


def test_enough_consistent_fields_pass():
    rows = [{"phase_fraction": f} for f in (0.30, 0.31, 0.29, 0.30, 0.305, 0.295)]
    (st,) = astm.dataset_statistics(rows, "phase")
    assert st["quantity"] == "phase_fraction" and st["ra_pct"] < 10 and st["warning"] == ""


def test_field_counts_follow_the_iso_643_rectangle():
    # 4 x 4 equal square grains in a 40 x 40 px field: 4 inside, 8 edge (half), 4 corner (quarter).
    labels = (np.arange(40)[:, None] // 10) * 4 + np.arange(40)[None, :] // 10 + 1
    counts = astm.field_counts(labels, pixel_size_um=1.0)
    assert counts["astm_n_inside"] == 4 and counts["astm_n_edge"] == 12
    assert counts["astm_n_counted"] == pytest.approx(4 + 8 / 2 + 4 / 4)
    assert counts["astm_na_per_mm2"] == pytest.approx(9 / (0.04 * 0.04))
    # 10 horizontal + 10 vertical lines each cross 3 boundaries.
    assert counts["astm_n_intersections"] == 60
    assert counts["astm_mean_intercept_um"] == pytest.approx(20 * 40 / 60)


def test_flags_name_what_looks_wrong():
    assert astm.image_flags({"n_objects": 80, "astm_n_counted": 70.0, "unlabelled_fraction": 0.02}, "grain") == []
    flags = astm.image_flags({"n_objects": 3, "astm_n_counted": 2.5, "unlabelled_fraction": 0.4}, "grain")
    assert len(flags) == 3 and "very few objects (3)" in flags[0] and "40 %" in flags[1] and "2.5 grains" in flags[2]
    assert astm.image_flags({"n_objects": 3}, "phase") == ["very few objects (3)"]
