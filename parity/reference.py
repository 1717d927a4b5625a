"""Reference blob folders: a manifest.json plus one float32 NCHW .npy per entry.

Written by `parity dump` (real Caffe) or `parity dump-tf` (a frozen TensorFlow graph; its NHWC entries
say so with "layout" and are read back as NCHW). Reading is
strict: a folder without manifest, a manifest missing keys, a .npy that would need pickle or whose
shape disagrees with the manifest are each one clear ParityError naming the file.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ParityError
from .layout import caffe_shape, keras_shape, to_caffe_layout

FORMAT = "parity-reference"
FORMAT_VERSION = 1
ENTRY_KEYS = ("order", "layer", "type", "top", "file", "shape", "dtype")
MODEL_FILES = {"caffe": ("prototxt", "caffemodel"), "tensorflow-graph": ("graph",)}  # sha256s by source


def safe_filename(text: str) -> str:
    """Layer and blob names may hold '/', spaces and more; file names get [A-Za-z0-9._-] only."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


@dataclass(frozen=True)
class Entry:
    order: int  # the layer's position in Caffe's execution order
    layer: str
    type: str
    top: str
    file: str
    shape: tuple[int, ...]  # in Caffe's order (N, C, H, W) whatever the file's layout
    dtype: str
    layout: str = "NCHW"  # how the .npy holds a 4-D blob; NHWC ones (TensorFlow graphs) turn NCHW on load

    @property
    def stored_shape(self) -> tuple[int, ...]:
        return keras_shape(self.shape) if self.layout == "NHWC" else self.shape


@dataclass
class Reference:
    dir: Path
    manifest: dict
    entries: list[Entry]

    @property
    def name(self) -> str:
        """The sample's name (the image or input file's stem)."""
        return self.manifest["input"].get("name", self.dir.name)

    @property
    def granularity(self) -> str:
        return self.manifest.get("granularity", "layer")

    @property
    def source(self) -> str:
        return self.manifest["source"]

    def load(self, entry: Entry) -> np.ndarray:
        """The entry's array in Caffe's layout (NCHW for 4-D), as every comparison expects it."""
        array = load_npy(self.dir / entry.file, entry.stored_shape)
        return to_caffe_layout(array) if entry.layout == "NHWC" else array

    def inputs(self) -> dict[str, np.ndarray]:
        """The preprocessed input blobs the source was fed, by blob name (NCHW)."""
        out = {}
        for blob, spec in self.manifest["input"]["blobs"].items():
            array = load_npy(self.dir / spec["file"], tuple(spec["shape"]))
            out[blob] = to_caffe_layout(array) if spec.get("layout") == "NHWC" else array
        return out


def load_npy(path: Path, shape: tuple[int, ...] | None = None) -> np.ndarray:
    if not path.is_file():
        raise ParityError("reference array not found", path)
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise ParityError("this .npy holds Python objects and would need pickle to load; refusing", path) from None
        raise ParityError(f"not a valid .npy file ({exc})", path) from None
    except (OSError, EOFError) as exc:
        raise ParityError(f"cannot read .npy ({exc})", path) from None
    if not isinstance(array, np.ndarray) or array.dtype.kind != "f":
        raise ParityError(f"expected a float array, found dtype {getattr(array, 'dtype', type(array))}", path)
    if shape is not None and tuple(array.shape) != tuple(shape):
        raise ParityError(f"array shape {array.shape} differs from the manifest's {tuple(shape)}", path)
    return array


def load_reference(directory: str | Path) -> Reference:
    d = Path(directory)
    path = d / "manifest.json"
    if not d.is_dir():
        raise ParityError("reference folder not found", d)
    if not path.is_file():
        raise ParityError("no manifest.json in this reference folder (make one with `parity dump`)", d)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ParityError(f"manifest is not valid JSON ({exc})", path, getattr(exc, "lineno", None)) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ParityError(f"not a parity reference manifest (format must be {FORMAT!r})", path)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ParityError(f"manifest format_version {manifest.get('format_version')!r}; this parity reads "
                          f"{FORMAT_VERSION}", path)
    files = MODEL_FILES.get(manifest.get("source"), MODEL_FILES["caffe"])
    for keys in (("source",), *(("model", f, "sha256") for f in files), ("input", "blobs"), ("entries",)):
        node = manifest
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                raise ParityError(f"manifest misses key {'.'.join(keys)!r}", path)
            node = node[key]
    for blob, spec in manifest["input"]["blobs"].items():
        if not isinstance(spec, dict) or not {"file", "shape"} <= set(spec):
            raise ParityError(f"manifest input blob {blob!r} needs 'file' and 'shape'", path)
    entries = []
    for i, raw in enumerate(manifest["entries"]):
        missing = [k for k in ENTRY_KEYS if k not in raw]
        if missing:
            raise ParityError(f"entry {i} misses {', '.join(missing)}", path)
        shape, layout = tuple(int(s) for s in raw["shape"]), raw.get("layout", "NCHW")
        if layout not in ("NCHW", "NHWC") or (layout == "NHWC" and len(shape) != 4):
            raise ParityError(f"entry {i} ({raw['layer']}): layout must be NCHW or NHWC (NHWC only for 4-D), "
                              f"got {layout!r} for shape {list(shape)}", path)
        entries.append(Entry(int(raw["order"]), raw["layer"], raw["type"], raw["top"], raw["file"],
                             caffe_shape(shape) if layout == "NHWC" else shape, raw["dtype"], layout))
    return Reference(d, manifest, entries)


def find_references(directory: str | Path) -> list[Reference]:
    """`directory` itself if it holds a manifest, else each sub-folder that does (one per sample)."""
    d = Path(directory)
    if (d / "manifest.json").is_file():
        return [load_reference(d)]
    subs = sorted(p.parent for p in d.glob("*/manifest.json")) if d.is_dir() else []
    if not subs:
        return [load_reference(d)]  # raises the precise error
    return [load_reference(s) for s in subs]
