"""Compress a reference tree's entry arrays in place: each NNN_*.npy becomes NNN_*.npy.gz, its manifest
entry renamed to match. Lossless (the arrays read back bit for bit, checked before the .npy is removed);
input__*.npy stay as they are, since manifests record their sha256.

    python tools/compress_references.py reference_blobs
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from parity.atomic import atomic_path
from parity.data.reference import load_npy, write_npy_gz


def compress_folder(folder: Path) -> int:
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    done = 0
    for entry in manifest["entries"]:
        if not entry["file"].endswith(".npy"):
            continue
        source, target = folder / entry["file"], folder / (entry["file"] + ".gz")
        array = load_npy(source)
        write_npy_gz(array, target)
        if not np.array_equal(load_npy(target), array, equal_nan=True):
            raise SystemExit(f"{target}: does not read back as {source}")
        entry["file"] = target.name
        done += 1
    with atomic_path(manifest_path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    for entry in manifest["entries"]:
        stale = folder / entry["file"][: -len(".gz")]
        if entry["file"].endswith(".gz") and stale.exists():
            stale.unlink()
    return done


def main(root: str) -> None:
    for manifest in sorted(Path(root).rglob("manifest.json")):
        print(f"{manifest.parent}: {compress_folder(manifest.parent)} arrays compressed")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "reference_blobs")
