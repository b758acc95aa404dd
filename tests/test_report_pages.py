"""The report's figures and tables from small hand-made tables (no pipeline run)."""

from __future__ import annotations

import cv2
import pandas as pd

from matsam.measurement import report


def test_dataset_pages_show_statistics_flags_and_metrics(tmp_path):
    summary = pd.DataFrame({"image": ["a", "b", "c"], "mode": "grain", "n_objects": [60, 70, 3],
                            "mean_area_px": [100.0, 90.0, 3000.0], "astm_n_counted": [55.0, 66.0, 2.5],
                            "astm_na_per_mm2": [5000.0, 5500.0, 400.0], "astm_g_planimetric": [9.3, 9.5, 5.7],
                            "astm_mean_intercept_um": [12.0, 11.0, 40.0], "astm_g_heyn": [9.0, 9.2, 5.5],
                            "unlabelled_fraction": [0.0, 0.01, 0.5]})
    summary.to_csv(tmp_path / "summary.csv", index=False)
    pd.DataFrame({"image": ["a", "a"], "method": ["matsam", "canny"], "ari": [0.8, 0.3],
                  "vi": [1.0, 3.0]}).to_csv(tmp_path / "metrics.csv", index=False)
    objects = pd.DataFrame({"equivalent_diameter_um": [1.0, 2.0, 4.0, 8.0, 3.0], "touches_border": [0, 0, 0, 1, 0]})
    objects.to_csv(tmp_path / "objects.csv", index=False)
    out = {name: tmp_path / name for name in ("astm.csv", "sizes.png", "fields.png", "tables.html")}
    report.dataset_report("tbm", "grain", tmp_path / "summary.csv", tmp_path / "metrics.csv",
                          [tmp_path / "objects.csv"], *out.values())
    astm = pd.read_csv(out["astm.csv"]).set_index("quantity")
    assert astm.loc["planimetric", "n_fields"] == 3 and "at least 5" in astm.loc["planimetric", "warning"]
    for png in ("sizes.png", "fields.png"):
        assert cv2.imread(str(out[png])).shape[1] > 300
    page = out["tables.html"].read_text()
    assert page.count("<table") == 4 and "1 image(s) flagged" in page and "very few objects (3)" in page
    assert "50 % of the pixels in no grain" in page and "<td>matsam</td>" in page


def test_unlabelled_phase_dataset_says_so(tmp_path):
    pd.DataFrame({"image": ["a", "b"], "mode": "phase", "n_objects": [40, 42], "phase_fraction": [0.3, 0.32]}
                 ).to_csv(tmp_path / "summary.csv", index=False)
    pd.DataFrame(columns=["image", "method", "miou"]).to_csv(tmp_path / "metrics.csv", index=False)
    objects = pd.DataFrame({"equivalent_diameter_px": [5.0, 6.0], "touches_border": [0, 0]})
    objects.to_csv(tmp_path / "o.csv", index=False)
    out = [tmp_path / n for n in ("astm.csv", "sizes.png", "fields.png", "tables.html")]
    report.dataset_report("nbs", "phase", tmp_path / "summary.csv", tmp_path / "metrics.csv", [tmp_path / "o.csv"],
                          *out)
    assert pd.read_csv(out[0])["quantity"].tolist() == ["phase_fraction"]
    assert "No reference labels" in out[3].read_text() and "No image flagged" in out[3].read_text()


def test_run_page_lists_versions_and_weights_hash(tmp_path, mobile_sam_weights):
    config = {"results": "r", "datasets": {"x": {"mode": "grain"}}}
    report.run_report(config, [("mobile_sam", "")], tmp_path / "run.html")
    page = (tmp_path / "run.html").read_text()
    from matsam.segmentation.weights import SHA256

    assert SHA256 in page and "torch" in page and "datasets:" in page
