import cv2
import numpy as np
import pytest
import tifffile

from matsam.io import InputError, atomic_path, read_image, read_label, to_rgb8, write_png


@pytest.mark.parametrize(
    ("name", "array"),
    [
        ("grey8.tif", np.arange(64 * 64, dtype=np.uint16).reshape(64, 64).astype(np.uint8)),
        ("grey16.tif", (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)),
        ("rgb16.tif", np.stack([(np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)] * 3, -1)),
        ("rgba.tif", np.dstack([np.full((64, 64, 3), 90, np.uint8), np.full((64, 64), 255, np.uint8)])),
        ("float.tif", np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)),
    ],
)
def test_tiff_variants_become_8bit_rgb(tmp_path, name, array):
    path = tmp_path / name
    tifffile.imwrite(path, array)
    raw = read_image(path)
    assert raw.dtype == array.dtype
    rgb = to_rgb8(raw)
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
    if array.dtype != np.uint8 and array.ndim == 2:
        assert rgb.min() == 0 and rgb.max() == 255  # percentile scaling uses the whole range


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp"])
def test_common_formats_read_as_rgb(tmp_path, suffix):
    bgr = np.zeros((32, 48, 3), np.uint8)
    bgr[..., 2] = 200  # red in OpenCV's BGR order
    cv2.imwrite(str(tmp_path / f"x{suffix}"), bgr)
    rgb = read_image(tmp_path / f"x{suffix}")
    assert rgb.shape == (32, 48, 3) and rgb[..., 0].mean() > 190 and rgb[..., 2].mean() < 10


def test_full_range_scaling_of_16bit(tmp_path):
    img = np.full((32, 32), 32768, np.uint16)
    assert to_rgb8(img, scale16="full")[0, 0, 0] == 128


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"not an image", "not a readable PNG"), (None, "no such file")],
)
def test_bad_input_names_the_file(tmp_path, content, message):
    path = tmp_path / "broken.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message) as err:
        read_image(path)
    assert str(path) in str(err.value)


def test_stack_given_as_an_image_is_refused(tmp_path):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.zeros((5, 64, 64), np.uint8))
    with pytest.raises(InputError, match="stacks"):
        read_image(path)


def test_label_of_wrong_size_is_refused(tmp_path):
    cv2.imwrite(str(tmp_path / "l.png"), np.zeros((20, 30), np.uint8))
    with pytest.raises(InputError, match="30x20 px, image is 40x20"):
        read_label(tmp_path / "l.png", (20, 40))


def test_failed_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "out.png"
    write_png(target, np.full((16, 16), 7, np.uint8))
    before = target.read_bytes()
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("job killed")
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]
