import numpy as np
import pytest

from matsam.segmentation.crops import crop_boxes, n_crops


@pytest.mark.parametrize("n_layers", [0, 1, 2])
@pytest.mark.parametrize(("height", "width"), [(256, 256), (475, 645), (1000, 300)])
def test_crops_cover_the_image_and_count_is_size_independent(n_layers, height, width):
    crops = crop_boxes(height, width, n_layers, 512 / 1500)
    assert len(crops) == n_crops(n_layers) == sum(4**i for i in range(n_layers + 1))
    assert [c.index for c in crops] == list(range(len(crops)))
    for layer in range(n_layers + 1):
        covered = np.zeros((height, width), int)
        for c in crops:
            if c.layer == layer:
                assert 0 <= c.x0 < c.x1 <= width and 0 <= c.y0 < c.y1 <= height
                covered[c.y0 : c.y1, c.x0 : c.x1] += 1
        assert covered.min() >= 1, f"layer {layer} leaves pixels uncovered"
        if layer > 0:
            assert covered.max() >= 2, "crops of a layer must overlap"


def test_layer_one_has_four_overlapping_quadrants():
    crops = crop_boxes(300, 300, 1, 0.2)
    first, last = crops[1], crops[4]
    assert (first.x0, first.y0) == (0, 0) and (last.x1, last.y1) == (300, 300)
    overlap = first.x1 - crops[2].x0
    assert overlap == int(0.2 * 300)
