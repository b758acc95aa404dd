import numpy as np

from matsam.measurement.overlay import CLASS_COLORS, overlay


def test_overlay_tints_objects_by_phase_class():
    rgb = np.full((20, 30, 3), 100, np.uint8)
    labels = np.zeros((20, 30), np.int64)
    labels[2:8, 2:8], labels[2:8, 12:18], labels[12:18, 2:8] = 1, 2, 3
    classes = np.zeros((20, 30), np.uint8)
    classes[2:8, 2:8] = classes[2:8, 12:18] = 1
    classes[12:18, 2:8] = 2
    out = overlay(rgb, labels, classes=classes, alpha=0.5)
    inner = (slice(4, 6), slice(4, 6))
    expected1 = (0.5 * 100 + 0.5 * CLASS_COLORS[0].astype(np.float32)).astype(np.uint8)
    assert (out[inner] == expected1).all()
    assert (out[4:6, 14:16] == expected1).all()  # two objects of one class share a colour
    assert (out[14:16, 4:6] == (0.5 * 100 + 0.5 * CLASS_COLORS[1].astype(np.float32)).astype(np.uint8)).all()
    assert (out[10, 25] == 100).all()  # matrix untouched
    assert (out[7, 2:8] == (255, 40, 40)).all()  # outlines in red, as for binary phases
    # Without classes: one random colour per object, as before.
    plain = overlay(rgb, labels, alpha=0.5)
    assert not (plain[4:6, 4:6] == plain[4:6, 14:16]).all()


def test_overlay_drawn_in_bands_equals_the_overlay_in_one_piece():
    """Bands that do not divide the height give the very pixels of one band (huge images)."""
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (53, 40, 3), dtype=np.uint8)
    labels = np.kron(rng.integers(0, 9, (11, 8)), np.ones((5, 5), np.int64))[:53, :40].astype(np.uint32)
    classes = (labels % 3).astype(np.uint8)
    boundaries = (rng.random((53, 40)) < 0.1).astype(np.uint8)
    for kwargs in ({}, {"boundaries": boundaries}, {"classes": classes}):
        whole = overlay(rgb, labels, **kwargs)
        np.testing.assert_array_equal(overlay(rgb, labels, rows_per_band=7, **kwargs), whole)
        assert (whole != rgb).any()
