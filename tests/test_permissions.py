"""Results get the mode the user's umask gives any new file, so a group can read them on a
shared project directory (mkstemp alone would leave every output 0600)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from matsam import io as mio
from matsam.volumes.stackio import export_slices, write_labels_h5


@pytest.fixture(params=[0o002, 0o022, 0o077])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_current_umask_reads_the_process_umask(umask):
    assert mio.current_umask() == umask
    assert mio.new_file_mode() == 0o666 & ~umask


def test_every_writer_gives_the_umask_mode(tmp_path, umask):
    out = tmp_path / "results" / "deeper"  # folders are created by the writers
    writers = {
        "a.png": lambda p: mio.write_png(p, np.zeros((16, 16), np.uint8)),
        "b.tif": lambda p: mio.write_tiff(p, np.zeros((16, 16), np.uint32)),
        "c.json": lambda p: mio.write_json(p, {"x": 1.0}),
        "d.csv": lambda p: mio.write_csv(p, pd.DataFrame({"x": [1]})),
        "e.npz": lambda p: mio.write_npz(p, x=np.arange(3)),
        "f.npy": lambda p: mio.write_npy(p, np.arange(3)),
        "g.h5": lambda p: write_labels_h5(p, np.zeros((2, 8, 8), np.uint32), (1.0, 1.0, 1.0)),
    }
    for name, write in writers.items():
        write(out / name)
        assert mode(out / name) == 0o666 & ~umask, name
    assert mode(out) == 0o777 & ~umask and mode(out.parent) == 0o777 & ~umask
    assert sorted(p.name for p in out.iterdir()) == sorted(writers)  # no temporary files left


def test_exported_slices_and_their_folder_get_the_umask_mode(tmp_path, umask):
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.zeros((3, 16, 16), np.uint8), photometric="minisblack")
    paths = export_slices(stack, tmp_path / "slices")
    assert mode(tmp_path / "slices") == 0o777 & ~umask
    assert {mode(p) for p in paths} == {0o666 & ~umask}
