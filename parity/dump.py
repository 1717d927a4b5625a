"""`parity dump`: run real Caffe (pycaffe) and save every layer's output as the reference.

Runs inside the pycaffe environment made by tools/build_caffe.sh (no TensorFlow there).
granularity "layer" runs the net one layer at a time (Net::ForwardFromTo(i, i)) and saves that
layer's tops right away, so in-place chains (conv -> ReLU on one blob) keep a reference per layer;
"blob" runs once and saves each blob's final value, labelled with the layer that wrote it last.
Each sample is written to a temporary folder and renamed into place: never half a reference.
OpenBLAS runs one pinned kernel (Haswell unless --blas-core or OPENBLAS_CORETYPE says otherwise) on one
thread, checked after the import and recorded in the manifest as caffe.blas (parity/blas.py).

Caffe answers bad input by aborting the whole process (glog CHECK, SIGABRT), and silently fills a
layer missing from the caffemodel with its random fillers. So before Caffe sees anything, `preflight`
reads the net and the weights with parity's own readers and refuses, as one line, everything it
would abort on or quietly make up.
"""
from __future__ import annotations

import datetime
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from .atomic import atomic_directory, sha256_file
from .blas import Pin, blas_library, choose_core, describe, pin, verify
from .errors import ParityError
from .graph import Net
from .reference import FORMAT, FORMAT_VERSION, safe_filename

Shape = tuple[int, ...]


@dataclass
class Sample:
    """One input to run: its name, the NCHW array per input blob, and where it came from."""

    name: str
    arrays: dict[str, np.ndarray]
    source: dict  # {"kind": "image"|"npy", "file": ..., "sha256": ..., "preprocessing": ...}


def import_caffe(core: Pin | None = None, log=print):
    """Import pycaffe quietly, its OpenBLAS pinned to one kernel and one thread (see parity/blas.py), or
    explain how to get it. Returns the module and the record of its BLAS, checked against the pin."""
    core = core or choose_core(None)
    os.environ.setdefault("GLOG_minloglevel", "2")
    pin(core)  # before the import: OpenBLAS reads both settings once, when it loads
    try:
        import caffe  # noqa: F401
    except ImportError as exc:
        raise ParityError(f"pycaffe does not import here ({exc}). Build it with tools/build_caffe.sh and "
                          "run this command as .cache/caffe/venv/bin/parity dump ...") from None
    record = describe(blas_library(getattr(getattr(caffe, "_caffe", None), "__file__", None)))
    record["OPENBLAS_CORETYPE"] = os.environ.get("OPENBLAS_CORETYPE")
    verify(record, core, log)
    return caffe, record


def caffe_build_info(caffe, blas: dict) -> dict:
    """The record tools/build_caffe.sh left beside the pycaffe it built, with the BLAS as this run found
    it (build_caffe.sh's "blas", the package it built against, is kept as blas.package)."""
    info_path = Path(caffe.__file__).resolve().parents[2] / "parity-build.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {
        "distribution": "unknown", "note": "this pycaffe was not built by tools/build_caffe.sh"}
    info["caffe_version"] = getattr(caffe, "__version__", "unknown")
    package = info.pop("blas", None)
    info["blas"] = {**blas, **({"package": package} if package else {})}
    return info


def preflight(prototxt: Path, caffemodel: Path) -> Net:
    """The net, once parity's readers have found nothing in it or in the caffemodel that Caffe would
    abort on (or fill with random weights): types parity cannot convert (`parity convert`'s error),
    shapes that do not work out, and learned blobs missing or of the wrong count or shape, checked by
    the converter's own rules (`learned_blobs` sizes them, `Context.blobs` compares). A caffemodel
    layer the prototxt does not have is fine: Caffe ignores it."""
    from .convert import check_supported
    from .convert.context import Context
    from .reading.caffemodel import read_caffemodel
    from .recipes import learned_blobs

    net = Net.from_prototxt(prototxt)
    check_supported(net)
    expected = learned_blobs(net)
    ctx = Context(net, read_caffemodel(caffemodel))
    for layer in net.layers:
        shapes = [param.shape for param in expected.get(layer.name, [])]
        if shapes or ctx.weights.get(layer.name):  # blobs for a layer without any: Caffe aborts as well
            ctx.blobs(layer, shapes)
    return net


def input_shapes(net: Net) -> dict[str, Shape]:
    """Each input blob's shape, as the Input layer's converter reads it (legacy input fields included)."""
    from .convert.registry import shapes_for

    shapes: dict[str, Shape] = {}
    for layer in net.layers:
        if layer.type == "Input":
            try:
                shapes.update(zip(layer.tops, shapes_for("Input").shapes(layer, []).tops))
            except ValueError as exc:
                raise net.error(layer.name, str(exc)) from None
    if not shapes:
        raise ParityError("the net has no Input layer or input fields", net.path)
    return shapes


def check_fits(array: np.ndarray, blob: str, shape: Shape, where: Path) -> None:
    """Caffe reshapes the input to any array and then aborts on the first layer it no longer fits:
    only the batch size may differ from the net's input shape."""
    if array.ndim != len(shape) or array.shape[1:] != tuple(shape[1:]) or array.shape[0] < 1:
        raise ParityError(f"array of shape {array.shape} does not fit the net's input {blob!r} {tuple(shape)} "
                          "(only the batch size may differ)", where)


def check_sample_names(paths: list[Path]) -> None:
    """Each input is written to OUT/<its file name's stem>/: two inputs of one name would overwrite each other."""
    seen: dict[str, Path] = {}
    for path in paths:
        folder = safe_filename(path.stem)
        if folder in seen:
            raise ParityError(f"this input and {seen[folder]} would both be written to OUT/{folder}/; "
                              "rename one", path)
        seen[folder] = path


def dump(prototxt: Path, caffemodel: Path, samples: list[Sample], out: Path, granularity: str = "layer",
         log=print, blas_core: Pin | None = None) -> list[Path]:
    """Run Caffe on each sample and write OUT/<sample>/. `blas_core`: the OpenBLAS kernel to pin
    (blas.choose_core; by default OPENBLAS_CORETYPE if set, else Haswell), always on one thread."""
    if granularity not in ("layer", "blob"):
        raise ParityError(f"granularity must be 'layer' or 'blob', got {granularity!r}")
    core = blas_core or choose_core(None)
    own_layers = {layer.name for layer in preflight(prototxt, caffemodel).layers}
    caffe, blas = import_caffe(core, log)
    caffe.set_mode_cpu()
    model = {"prototxt": {"file": prototxt.name, "sha256": sha256_file(prototxt)},
             "caffemodel": {"file": caffemodel.name, "sha256": sha256_file(caffemodel)}}
    net = caffe.Net(str(prototxt), caffe.TEST, weights=str(caffemodel))
    build = caffe_build_info(caffe, blas)
    log(f"parity dump: BLAS {blas['library']} {blas.get('version', '')}, kernel {blas.get('core') or 'unknown'}, "
        f"{blas.get('threads', '?')} thread(s) ({blas['file']})")
    written = []
    for sample in samples:
        target = out / safe_filename(sample.name)
        log(f"parity dump: {sample.name}: running Caffe ({granularity} granularity) ...")
        with atomic_directory(target) as stage:
            entries = _run(net, sample, stage, granularity, own_layers)
            manifest = _manifest(model, build, sample, entries, granularity, stage)
            (stage / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        size = sum(f.stat().st_size for f in target.iterdir()) / 1e6
        log(f"parity dump: {sample.name}: {len(entries)} entries, {size:.1f} MB -> {target}")
        written.append(target)
    return written


def _run(net, sample: Sample, stage: Path, granularity: str, own_layers: set[str]) -> list[dict]:
    """Forward `sample` and save the entries. Split layers Caffe inserted itself (a blob read by several
    layers) are not in the user's net and only copy their bottom, so they get no entry."""
    for blob, array in sample.arrays.items():
        if blob not in net.blobs:
            raise ParityError(f"the net has no input blob {blob!r} (inputs: {', '.join(net.inputs)})")
        net.blobs[blob].reshape(*array.shape)
        net.blobs[blob].data[...] = array
    net.reshape()
    names = list(net._layer_names)
    types = [layer.type for layer in net.layers]
    entries: dict[tuple[int, str], np.ndarray] = {}
    if granularity == "layer":
        for i, name in enumerate(names):
            net._forward(i, i)
            for top in net.top_names[name]:
                entries[(i, top)] = np.array(net.blobs[top].data, dtype=np.float32, copy=True)
    else:
        net._forward(0, len(names) - 1)
        last_writer = {top: i for i, name in enumerate(names) for top in net.top_names[name]}
        for top, i in sorted(last_writer.items(), key=lambda kv: kv[1]):
            entries[(i, top)] = np.array(net.blobs[top].data, dtype=np.float32, copy=True)
    records = []
    for (i, top), array in sorted(entries.items(), key=lambda kv: kv[0][0]):
        if names[i] not in own_layers and types[i] == "Split":
            continue
        tops = net.top_names[names[i]]
        suffix = f"__{safe_filename(top)}" if len(tops) > 1 else ""
        file = f"{len(records):03d}_{safe_filename(names[i])}{suffix}.npy"
        np.save(stage / file, array, allow_pickle=False)
        records.append({"order": i, "layer": names[i], "type": types[i], "top": top, "file": file,
                        "shape": list(array.shape), "dtype": "float32"})
    return records


def _manifest(model, build, sample: Sample, entries, granularity, stage: Path) -> dict:
    blobs = {}
    for blob, array in sample.arrays.items():
        file = f"input__{safe_filename(blob)}.npy"
        np.save(stage / file, np.ascontiguousarray(array, np.float32), allow_pickle=False)
        blobs[blob] = {"file": file, "shape": list(array.shape), "sha256": sha256_file(stage / file)}
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "source": "caffe",
        "caffe": build,
        "created_by": f"parity {__version__} dump",
        "created": datetime.date.today().isoformat(),
        "model": model,
        "input": {"name": sample.name, **sample.source, "blobs": blobs},
        "granularity": granularity,
        "entries": entries,
    }
