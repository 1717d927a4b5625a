"""Reference blob folders: a manifest.json plus one float32 NCHW array per entry (.npy, or .npy.gz as
`parity dump` writes them: Caffe's outputs compress to about half).

Written by `parity dump` (real Caffe) or `parity dump-tf` (a frozen TensorFlow graph; its NHWC entries
say so with "layout" and are read back as NCHW). Reading is
strict: a folder without manifest, a manifest missing keys or holding a value of the wrong type, an
entry file outside the folder, a file that is not a .npy, a .npy that would need pickle or whose shape
disagrees with the manifest are each one clear ParityError naming the file (and the manifest's key or
entry), raised before any model runs where the manifest alone shows it.
"""
from __future__ import annotations

import gzip
import json
import math
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ParityError, file_kind, is_int, parsing, require_file
from .layout import caffe_shape, keras_shape, to_caffe_layout

FORMAT = "parity-reference"
FORMAT_VERSION = 1
ENTRY_KEYS = ("order", "layer", "type", "top", "file", "shape", "dtype")
NPY_MAGIC = np.lib.format.MAGIC_PREFIX  # the first bytes of every .npy file
GZIP_MAGIC = b"\x1f\x8b"  # a .npy.gz
MAX_INFLATION = 1032  # deflate expands at most about 1032:1, so a .npy.gz holds at most this times its size
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
    """The float array in the .npy (or gzip-compressed .npy.gz) file at `path`, read without ever unpickling.

    Read with numpy.lib.format, not np.load: np.load also opens zip archives (.npz) and calls any other
    file one that needs pickle; here a file without .npy's magic bytes is said to be not a .npy file.
    The header is judged before a byte of data is read: its dtype, its shape against the manifest's,
    and the bytes it claims against what the file can hold (numpy would allocate the claim first). A
    .npy.gz can hold at most deflate's largest expansion of its size, and its data is read only up to
    the claim: a small file that claims (or inflates to) gigabytes is refused, never allocated.
    """
    if not path.is_file():
        raise ParityError("reference array not found", path)
    try:
        with open(path, "rb") as raw:
            start = raw.read(len(NPY_MAGIC))
            raw.seek(0)
            if start.startswith(GZIP_MAGIC):
                return _read_gzipped(raw, path, shape)
            if start != NPY_MAGIC:
                raise ParityError("not a .npy file (it starts with neither numpy's magic bytes nor gzip's)", path)
            raw.seek(0)
            _check_npy_header(raw, path, shape, os.fstat(raw.fileno()).st_size)
            raw.seek(0)
            return np.lib.format.read_array(raw, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise ParityError("this .npy holds Python objects and would need pickle to load; refusing", path) from None
        raise ParityError(f"not a valid .npy file ({exc})", path) from None
    except (OSError, EOFError, zlib.error) as exc:
        raise ParityError(f"cannot read .npy ({exc})", path) from None


def _read_gzipped(raw, path: Path, shape: tuple[int, ...] | None) -> np.ndarray:
    with gzip.GzipFile(fileobj=raw, mode="rb") as fh:
        if fh.read(len(NPY_MAGIC)) != NPY_MAGIC:
            raise ParityError("not a gzip-compressed .npy file (no numpy magic bytes inside)", path)
        fh.seek(0)
        stored, fortran, dtype = _check_npy_header(fh, path, shape, MAX_INFLATION * os.fstat(raw.fileno()).st_size)
        claimed = math.prod(stored) * dtype.itemsize
        data = fh.read(claimed)
        if len(data) != claimed or fh.read(1):
            raise ParityError(f"the .npy header claims shape {stored} of {dtype} ({claimed:,} bytes), but the "
                              f"compressed file holds {'fewer' if len(data) != claimed else 'more'} bytes", path)
    return np.frombuffer(data, dtype).reshape(stored, order="F" if fortran else "C").copy()


def write_npy_gz(array: np.ndarray, path: Path) -> None:
    """`array` as a gzip-compressed .npy at `path`, the same bytes for the same array (no name, no time
    in the gzip header), so a re-dump that reproduces Caffe's values reproduces the file."""
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as fh:
        np.lib.format.write_array(fh, np.ascontiguousarray(array), allow_pickle=False)


def _check_npy_header(fh, path: Path, shape: tuple[int, ...] | None, size: int):
    """Read the .npy header at `fh` (parsed by numpy as literals, never unpickled) and refuse a dtype that is
    not float, a shape unlike `shape`, or a claim of more bytes than the file (of `size` bytes, or able to
    inflate to `size`) can hold after the header. Returns (shape, fortran_order, dtype)."""
    version = np.lib.format.read_magic(fh)
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:  # 3.0 only adds UTF-8 field names, which no float array has
        raise ParityError(f"not a .npy file parity reads (format version {version[0]}.{version[1]})", path)
    stored, fortran, dtype = readers[version](fh)
    stored = tuple(stored)
    if any(d < 0 for d in stored):
        raise ParityError(f"not a valid .npy file (negative dimension in shape {stored})", path)
    if dtype.hasobject:
        raise ParityError("this .npy holds Python objects and would need pickle to load; refusing", path)
    if dtype.kind != "f":
        raise ParityError(f"expected a float array, found dtype {dtype}", path)
    if shape is not None and stored != tuple(shape):
        raise ParityError(f"array shape {stored} differs from the manifest's {tuple(shape)}", path)
    claimed = math.prod(stored) * dtype.itemsize  # Python ints: a corrupt header cannot wrap around
    held = size - fh.tell()
    if claimed > held:
        raise ParityError(f"the .npy header claims shape {stored} of {dtype} ({claimed:,} bytes), but the file "
                          f"holds {held:,} bytes of data", path)
    return stored, fortran, dtype


def load_reference(directory: str | Path) -> Reference:
    d = Path(directory)
    path = d / "manifest.json"
    if not d.is_dir():
        raise ParityError(f"not a reference folder (it is {file_kind(d)})" if d.exists() else
                          "reference folder not found", d)
    if not path.exists():
        raise ParityError("no manifest.json in this reference folder (make one with `parity dump`)", d)
    try:
        with parsing(path, "manifest"):
            manifest = json.loads(require_file(path, "manifest").read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
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
    _check_inputs(manifest["input"]["blobs"], d, path)
    raw_entries = manifest["entries"]
    if not isinstance(raw_entries, list) or not raw_entries:
        raise ParityError(f"manifest entries must be a non-empty list of layer outputs, got {shown(raw_entries)}",
                          path)
    return Reference(d, manifest, [_entry(i, raw, d, path) for i, raw in enumerate(raw_entries)])


def shown(value) -> str:
    """A wrong value as a one-line error shows it: scalars as written, containers (maybe huge) by their type."""
    if isinstance(value, (dict, list)):
        return f"{'a' if value else 'an empty'} {type(value).__name__}"
    return repr(value)



def _check_inputs(blobs, folder: Path, manifest: Path) -> None:
    """input.blobs: each input blob's name mapped to its array's file and shape (at least one blob)."""
    if not isinstance(blobs, dict) or not blobs:
        raise ParityError(f"manifest input.blobs must map each input blob to its file and shape, got {shown(blobs)}",
                          manifest)
    for blob, spec in blobs.items():
        if not isinstance(spec, dict) or not {"file", "shape"} <= set(spec):
            raise ParityError(f"manifest input blob {blob!r} needs 'file' and 'shape'", manifest)
        shape, _ = _array_spec(spec, folder, manifest, f"input blob {blob!r}")
        if shape and shape[0] == 0:  # else TensorFlow fails inside the first convolution, blamed on the net
            raise ParityError(f"manifest input blob {blob!r} has shape {list(shape)}: a batch of 0 samples, "
                              "nothing to run the net on", manifest)


def _entry(i: int, raw, folder: Path, manifest: Path) -> Entry:
    """Entry `i`, every field's type checked here: a wrong one would otherwise end the check in a traceback."""
    if not isinstance(raw, dict):
        raise ParityError(f"entry {i} must be an object with {', '.join(ENTRY_KEYS)}, got {shown(raw)}", manifest)
    missing = [k for k in ENTRY_KEYS if k not in raw]
    if missing:
        raise ParityError(f"entry {i} misses {', '.join(missing)}", manifest)
    what = f"entry {i} ({raw['layer']})" if isinstance(raw["layer"], str) else f"entry {i}"
    if not is_int(raw["order"]):
        raise ParityError(f"{what}: order must be an integer, got {shown(raw['order'])}", manifest)
    for key in ("layer", "type", "top", "dtype"):
        if not isinstance(raw[key], str):
            raise ParityError(f"{what}: {key} must be a string, got {shown(raw[key])}", manifest)
    shape, layout = _array_spec(raw, folder, manifest, what)
    return Entry(raw["order"], raw["layer"], raw["type"], raw["top"], raw["file"],
                 caffe_shape(shape) if layout == "NHWC" else shape, raw["dtype"], layout)


def _inside(folder: Path, file) -> bool:
    """Whether `file` names a path strictly inside `folder` (after '..' and symlinks)."""
    return isinstance(file, str) and "\0" not in file and folder.resolve() in (folder / file).resolve().parents


def _array_spec(spec: dict, folder: Path, manifest: Path, what: str) -> tuple[tuple[int, ...], str]:
    """The shape and layout of an entry's or input blob's array, its file checked to lie inside `folder`
    (a manifest is input too: an absolute or '..' path would read files from anywhere)."""
    file, shape, layout = spec["file"], spec["shape"], spec.get("layout", "NCHW")
    if not _inside(folder, file):
        raise ParityError(f"{what}: file {shown(file)} is not a file inside the reference folder", manifest)
    if not isinstance(shape, list) or not all(is_int(s) and s >= 0 for s in shape):
        raise ParityError(f"{what}: shape must be a list of non-negative integers, got {shown(shape)}", manifest)
    if layout not in ("NCHW", "NHWC") or (layout == "NHWC" and len(shape) != 4):
        raise ParityError(f"{what}: layout must be NCHW or NHWC (NHWC only for 4-D), got {shown(layout)} for "
                          f"shape {shape}", manifest)
    return tuple(shape), layout


def find_references(directory: str | Path) -> list[Reference]:
    """`directory` itself if it holds a manifest, else each sub-folder that does (one per sample)."""
    d = Path(directory)
    if (d / "manifest.json").is_file():
        return [load_reference(d)]
    subs = sorted(p.parent for p in d.glob("*/manifest.json")) if d.is_dir() else []
    if not subs:
        return [load_reference(d)]  # raises the precise error
    return [load_reference(s) for s in subs]
