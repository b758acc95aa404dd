"""Grain size and phase fraction statistics over the fields of a dataset (ASTM E112 §15, E562).

Every image of a dataset is one field. Per field, `field_counts` gives the planimetric (Jeffries,
ISO 643 rectangle: edge grains 1/2, corner grains 1/4) and the Heyn lineal intercept counts and G
(the per-image counting lives in `quantify.astm_planimetric` / `quantify.astm_heyn`). Over the
fields, `field_statistics` gives what the standard asks for: the mean, the standard deviation s,
the 95 % confidence interval t·s/√n and the % relative accuracy, computed, as E112 §15 does, on
the measured quantity (grains per mm² N_A, mean intercept ℓ), with G converted from its mean.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from scipy import stats

from matsam.measurement.quantify import astm_heyn, astm_planimetric

MAX_RA_PCT = 10.0  # E112 §15.5: measure more fields above this relative accuracy
MIN_FIELDS = 5  # E112 §15: at least five fields
MIN_GRAINS_PER_FIELD = 50  # E112 §11.1: a field should hold about 50 grains for the planimetric count


def g_from_na(n_a_per_mm2: float) -> float:
    """ASTM E112 G from grains per mm² (planimetric)."""
    return 3.321928 * math.log10(n_a_per_mm2) - 2.954 if n_a_per_mm2 > 0 else math.nan


def g_from_intercept(mean_intercept_mm: float) -> float:
    """ASTM E112 G from the mean lineal intercept in mm (Heyn)."""
    return -6.643856 * math.log10(mean_intercept_mm) - 3.288 if mean_intercept_mm > 0 else math.nan


def field_counts(labels: np.ndarray, pixel_size_um: float | None) -> dict[str, float]:
    """One field's ASTM counts and G: `astm_*` columns of the image summary."""
    plan = astm_planimetric(labels, pixel_size_um)
    heyn = astm_heyn(labels, pixel_size_um)
    return {
        "astm_n_inside": plan["n_inside"],
        "astm_n_edge": plan["n_border"] + plan["n_corner"],
        "astm_n_counted": plan["n_counted"],
        "astm_na_per_mm2": plan["N_A_per_mm2"],
        "astm_g_planimetric": plan["G"],
        "astm_n_intersections": heyn["n_intersections"],
        "astm_mean_intercept_um": heyn["mean_intercept_mm"] * 1e3,
        "astm_g_heyn": heyn["G"],
    }


def field_statistics(values: Sequence[float]) -> dict[str, float]:
    """Mean, standard deviation, 95 % CI (t·s/√n, Student t with n-1 degrees) and %RA of one
    quantity over fields; NaN fields are left out, and s, CI and %RA are NaN below 2 fields."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    n = x.size
    mean = float(x.mean()) if n else math.nan
    sd = float(x.std(ddof=1)) if n > 1 else math.nan
    ci = float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)) if n > 1 else math.nan
    ra = 100.0 * ci / abs(mean) if n > 1 and mean != 0 else math.nan
    return {"n_fields": n, "mean": mean, "sd": sd, "ci95": ci, "ra_pct": ra}


def _warning(st: dict[str, float]) -> str:
    problems = []
    if st["n_fields"] < MIN_FIELDS:
        problems.append(f"only {st['n_fields']} field(s), E112 asks for at least {MIN_FIELDS}")
    if st["ra_pct"] > MAX_RA_PCT:
        problems.append(f"%RA {st['ra_pct']:.1f} > {MAX_RA_PCT:g}: measure more fields")
    return "; ".join(problems)


def dataset_statistics(rows: Sequence[dict[str, Any]], mode: str) -> list[dict[str, Any]]:
    """The dataset's ASTM table from its per-image summary rows, one row per quantity.

    Grain datasets: the planimetric and the intercept method. `G` is converted from the mean
    N_A (or mean ℓ) as E112 §15.6 prescribes; `G_mean`, `G_sd`, `G_ci95` are the same statistics
    on the fields' G values; `ra_pct` is on N_A (ℓ). Phase datasets: the phase area fraction
    (E562 style field statistics on the per-image fraction). `warning` is empty when the
    estimate meets the standard.
    """
    out: list[dict[str, Any]] = []
    if mode == "grain":
        methods = (("planimetric", "astm_na_per_mm2", "astm_g_planimetric", g_from_na),
                   ("heyn_intercept", "astm_mean_intercept_um", "astm_g_heyn",
                    lambda um: g_from_intercept(um * 1e-3)))
        for name, measure, g_column, to_g in methods:
            st = field_statistics([r.get(measure, math.nan) for r in rows])
            g = field_statistics([r.get(g_column, math.nan) for r in rows])
            out.append({"quantity": name, **st, "G": to_g(st["mean"]) if st["n_fields"] else math.nan,
                        "G_mean": g["mean"], "G_sd": g["sd"], "G_ci95": g["ci95"], "warning": _warning(st)})
    else:
        st = field_statistics([r.get("phase_fraction", math.nan) for r in rows])
        out.append({"quantity": "phase_fraction", **st, "warning": _warning(st)})
    return out


def image_flags(row: dict[str, Any], mode: str) -> list[str]:
    """Why one image's result looks suspicious (empty when it looks fine)."""
    flags = []
    n = row.get("n_objects", 0) or 0
    if n < 5:
        flags.append(f"very few objects ({n})")
    unlabelled = row.get("unlabelled_fraction")
    if mode == "grain" and unlabelled is not None and unlabelled > 0.25:
        flags.append(f"{100 * unlabelled:.0f} % of the pixels in no grain")
    counted = row.get("astm_n_counted")
    if mode == "grain" and counted is not None and counted < MIN_GRAINS_PER_FIELD:
        flags.append(f"{counted:g} grains counted in the field (E112: about {MIN_GRAINS_PER_FIELD})")
    return flags
