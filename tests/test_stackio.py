"""Tests of the stack I/O the workflow uses between its 2D rules and `link_stack`
(matsam/volumes/stackio.py): per-slice files back into volumes, and the cheap re-export of a
stack's slices when the DAG is built."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tifffile

from matsam import imaging, io
from matsam.volumes import stackio

OLD_NS = 1_000_000_000 * 10**9  # an mtime far in the past (2001): a rewrite always changes it


def rgb_slice(seed: int, shape=(20, 24)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (*shape, 3), dtype=np.uint8)


# --- read_slices -------------------------------------------------------------------------------


def test_read_slices_grey_is_the_luminance_of_the_rgb_pngs(tmp_path):
    images = [rgb_slice(z) for z in range(3)]
    files = []
    for z, rgb in enumerate(images):
        io.write_png(tmp_path / f"s{z}.png", rgb)
        files.append(tmp_path / f"s{z}.png")
    grey = stackio.read_slices(files, "grey")
    assert grey.shape == (3, 20, 24) and grey.dtype == np.uint8
    for z, rgb in enumerate(images):
        assert np.array_equal(grey[z], imaging.grey8(rgb))
    assert not np.array_equal(grey[0], grey[1])


def test_read_slices_mask_keeps_class_ids(tmp_path):
    masks = [np.zeros((18, 18), np.uint8) for _ in range(2)]
    masks[0][2:6, 2:6] = 1
    masks[1][5:9, 5:9] = 2  # a multi-phase class map
    files = [tmp_path / "m0.png", tmp_path / "m1.png"]
    for f, m in zip(files, masks):
        io.write_png(f, m)
    out = stackio.read_slices(files, "mask")
    assert out.dtype == np.uint8 and np.array_equal(out, np.stack(masks))


def test_read_slices_labels_keeps_uint32_ids(tmp_path):
    """Label ids above 65535 must survive (a large slice holds that many grains)."""
    labels = np.zeros((2, 16, 20), np.uint32)
    labels[0, :8] = 70000
    labels[0, 8:] = 3
    labels[1, :, :10] = 2**32 - 1
    files = []
    for z in range(2):
        io.write_tiff(tmp_path / f"labels{z}.tif", labels[z])
        files.append(str(tmp_path / f"labels{z}.tif"))
    out = stackio.read_slices(files, "labels")
    assert out.dtype == np.uint32 and np.array_equal(out, labels)


def test_read_slices_names_the_slice_of_another_size(tmp_path):
    io.write_png(tmp_path / "a.png", rgb_slice(0, (20, 24)))
    io.write_png(tmp_path / "b.png", rgb_slice(1, (20, 24)))
    io.write_png(tmp_path / "c.png", rgb_slice(2, (24, 20)))
    files = [tmp_path / n for n in ("a.png", "b.png", "c.png")]
    with pytest.raises(ValueError) as info:
        stackio.read_slices(files, "grey")
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'c.png'}: slice is (24, 20)")
    assert f"but {tmp_path / 'a.png'} is (20, 24)" in message


def test_read_slices_of_no_files_is_an_error():
    with pytest.raises(ValueError, match="at least one slice"):
        stackio.read_slices([], "grey")


# --- export_if_changed -------------------------------------------------------------------------


def write_folder_stack(folder, n: int = 3, shape=(20, 24)) -> list[np.ndarray]:
    folder.mkdir(exist_ok=True)
    slices = [np.full(shape, 40 * (z + 1), np.uint8) for z in range(n)]
    for z, image in enumerate(slices):
        io.write_png(folder / f"sec{z + 1}.png", image)
    return slices


def age(paths) -> None:
    """Set the mtimes far back, so that any rewrite is visible whatever the clock's resolution."""
    for p in paths:
        os.utime(p, ns=(OLD_NS, OLD_NS))


def test_export_writes_the_slices_and_a_stamp(tmp_path):
    slices = write_folder_stack(tmp_path / "src")
    paths = stackio.export_if_changed(str(tmp_path / "src"), tmp_path / "out")
    assert [p.name for p in paths] == ["slice_0000.tif", "slice_0001.tif", "slice_0002.tif"]
    assert all(np.array_equal(tifffile.imread(p), s) for p, s in zip(paths, slices))
    stamp = json.loads((tmp_path / "out" / "source.json").read_text())
    assert stamp["n_slices"] == 3 and stamp["slice_shape"] == [20, 24]
    assert [f[0] for f in stamp["files"]] == ["sec1.png", "sec2.png", "sec3.png"]


def test_export_of_an_unchanged_source_rewrites_nothing(tmp_path):
    write_folder_stack(tmp_path / "src")
    first = stackio.export_if_changed(str(tmp_path / "src"), tmp_path / "out")
    age([*first, tmp_path / "out" / "source.json"])
    second = stackio.export_if_changed(str(tmp_path / "src"), tmp_path / "out")
    assert second == first
    assert all(p.stat().st_mtime_ns == OLD_NS for p in [*second, tmp_path / "out" / "source.json"])


def test_touching_the_source_rereads_it_but_rewrites_no_slice(tmp_path):
    write_folder_stack(tmp_path / "src")
    first = stackio.export_if_changed(str(tmp_path / "src"), tmp_path / "out")
    age(first)
    os.utime(tmp_path / "src" / "sec2.png", ns=(OLD_NS + 5, OLD_NS + 5))  # same bytes, new mtime
    second = stackio.export_if_changed(str(tmp_path / "src"), tmp_path / "out")
    assert second == first
    assert all(p.stat().st_mtime_ns == OLD_NS for p in second)
    stamp = json.loads((tmp_path / "out" / "source.json").read_text())
    assert ["sec2.png", (tmp_path / "src" / "sec2.png").stat().st_size, OLD_NS + 5] in stamp["files"]


def test_modifying_one_source_slice_rewrites_only_its_slice(tmp_path):
    slices = write_folder_stack(tmp_path / "src")
    first = stackio.export_if_changed(str(tmp_path / "src"), tmp_path / "out")
    age(first)
    changed = slices[1].copy()
    changed[5:10, 5:10] = 255
    io.write_png(tmp_path / "src" / "sec2.png", changed)
    second = stackio.export_if_changed(str(tmp_path / "src"), tmp_path / "out")
    assert second == first
    assert [p.stat().st_mtime_ns == OLD_NS for p in second] == [True, False, True]
    assert np.array_equal(tifffile.imread(second[1]), changed)


def test_a_deleted_slice_file_is_exported_again(tmp_path):
    write_folder_stack(tmp_path / "src")
    first = stackio.export_if_changed(str(tmp_path / "src"), tmp_path / "out")
    first[2].unlink()
    assert stackio.export_if_changed(str(tmp_path / "src"), tmp_path / "out") == first
    assert first[2].is_file()


def test_a_shorter_stack_removes_the_extra_slices(tmp_path):
    write_folder_stack(tmp_path / "src", n=3)
    stackio.export_if_changed(str(tmp_path / "src"), tmp_path / "out")
    (tmp_path / "src" / "sec3.png").unlink()
    paths = stackio.export_if_changed(str(tmp_path / "src"), tmp_path / "out")
    assert [p.name for p in paths] == ["slice_0000.tif", "slice_0001.tif"]
    assert sorted(p.name for p in (tmp_path / "out").glob("slice_*.tif")) == ["slice_0000.tif", "slice_0001.tif"]


def test_a_multipage_tiff_stack_is_exported_per_page(tmp_path):
    volume = np.arange(5 * 16 * 16, dtype=np.uint16).reshape(5, 16, 16)
    tifffile.imwrite(tmp_path / "stack.tif", volume, photometric="minisblack")
    paths = stackio.export_if_changed(str(tmp_path / "stack.tif"), tmp_path / "out")
    assert len(paths) == 5
    assert all(np.array_equal(tifffile.imread(p), volume[z]) for z, p in enumerate(paths))


@pytest.mark.parametrize("shape", [(15, 40), (40, 8)])
def test_slices_smaller_than_16_px_are_an_error(tmp_path, shape):
    write_folder_stack(tmp_path / "src", n=2, shape=shape)
    with pytest.raises(ValueError, match=r"at least 16x16 px"):
        stackio.export_if_changed(str(tmp_path / "src"), tmp_path / "out")
    assert not (tmp_path / "out" / "source.json").exists()  # no stamp: the next DAG build fails again


# --- specs and source identity ----------------------------------------------------------------


@pytest.mark.parametrize("spec, file, dataset", [
    ("a.h5:/x/y", "a.h5", "/x/y"),
    ("b.hdf5", "b.hdf5", None),
    ("dir/scan.HDF:/grey", "dir/scan.HDF", "/grey"),
    ("c.he5:data", "c.he5", "data"),
])
def test_h5_spec_splits_file_and_dataset(spec, file, dataset):
    match = stackio.H5_SPEC.match(spec)
    assert match is not None and (match.group(1), match.group(2)) == (file, dataset)


@pytest.mark.parametrize("spec", ["stack.tif", "slices/", "a.h5x", "notes.h5.txt"])
def test_h5_spec_does_not_match_other_stacks(spec):
    assert stackio.H5_SPEC.match(spec) is None


def test_source_identity_lists_slice_files_sorted_without_hidden_ones(tmp_path):
    for name in ("s2.png", "s10.png", "a.tif", ".s1.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"x" * len(name))
    (tmp_path / "sub.png").mkdir()  # a folder is not a slice, whatever its name
    identity = stackio.source_identity(str(tmp_path))
    assert identity["spec"] == str(tmp_path)
    assert [f[0] for f in identity["files"]] == ["a.tif", "s10.png", "s2.png"]
    assert [f[1] for f in identity["files"]] == [5, 7, 6]
    assert all(f[2] == (tmp_path / f[0]).stat().st_mtime_ns for f in identity["files"])


def test_source_identity_of_a_file_and_of_an_h5_spec(tmp_path):
    (tmp_path / "scan.h5").write_bytes(b"12345")
    identity = stackio.source_identity(f"{tmp_path / 'scan.h5'}:/grey")
    assert identity["spec"].endswith(":/grey")
    assert [f[:2] for f in identity["files"]] == [["scan.h5", 5]]
    assert stackio.source_identity(str(tmp_path / "missing.tif"))["files"] == []
