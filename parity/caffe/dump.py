"""`parity dump`: run real Caffe (pycaffe) and save every layer's output as the reference.

Runs inside the pycaffe environment made by tools/build_caffe.sh (no TensorFlow there).
granularity "layer" runs the net one layer at a time (Net::ForwardFromTo(i, i)) and saves that
layer's tops right away, so in-place chains (conv -> ReLU on one blob) keep a reference per layer;
"blob" runs once and saves each blob's final value, labelled with the layer that wrote it last.
Each sample is written to a temporary folder and renamed into place: never half a reference.
OpenBLAS runs one pinned kernel (Haswell unless --blas-core or OPENBLAS_CORETYPE says otherwise) on one
thread, checked after the import and recorded in the manifest as caffe.blas (parity/caffe/blas.py).

Caffe answers bad input by aborting the whole process (glog CHECK, SIGABRT), and silently fills a
layer missing from the caffemodel with its random fillers. So before Caffe sees anything, `preflight`
reads the net and the weights with parity's own readers and refuses, as one line, what it knows Caffe
would abort on or quietly make up, for the layers parity knows: a blob of more than 2**31 - 1 elements
(Caffe's INT_MAX CHECK) included, at the declared shapes and at each input's batch, and a run that
cannot fit in memory. Caffe itself decides what it can run, in a child process (parity.caffe.child):
what it stops on is one line too, and the net it built says which layers ran on fillers.
Caffe runs before a sample's stage folder exists, so an abort that no check foresaw leaves nothing on
disk; and a dump replaces only a sample folder parity wrote (one holding its manifest).
"""
from __future__ import annotations

import datetime
import json
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..atomic import SWAP_TRIES, atomic_directory, check_replaceable, sha256_file
from ..data.reference import FORMAT, FORMAT_VERSION, safe_filename, write_npy_gz
from ..errors import ParityError
from .blas import Pin, blas_library, choose_core, describe, pin, verify
from .graph import Net

Shape = tuple[int, ...]


@dataclass
class Sample:
    """One input to run: its name, the NCHW array per input blob, and where it came from."""

    name: str
    arrays: dict[str, np.ndarray]
    source: dict  # {"kind": "image"|"npy", "file": ..., "sha256": ..., "preprocessing": ...}


def import_caffe(core: Pin | None = None, log=print):
    """Import pycaffe quietly, its OpenBLAS pinned to one kernel and one thread (see parity/caffe/blas.py), or
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


def preflight(prototxt: Path, caffemodel: Path, until: str | None = None) -> Net:
    """The net (cut after `until`), once parity's readers have found nothing in it or in the caffemodel
    that Caffe would abort on or fill with random weights, as far as parity knows Caffe's rules: up to
    the first layer parity cannot size (a type it does not convert, or parameters its rules refuse),
    blobs too large (`check_sizes`, at the declared input shapes) and learned blobs missing or of the
    wrong count or shape. Past that layer Caffe decides (parity.caffe.child), and a layer the caffemodel
    lacks is found from the net Caffe built. A caffemodel layer the prototxt does not have is fine:
    Caffe ignores it."""
    from ..convert.context import Context
    from ..convert.sizing import check_activations
    from .reading.caffemodel import read_caffemodel

    net = Net.from_prototxt(prototxt)
    if until:
        net = net.until(until)
    check_sizes(net, {})
    check_activations(net)
    ctx = Context(net, read_caffemodel(caffemodel))
    for layer, _, params in known_prefix(net, {})[0]:
        shapes = [param.shape for param in params]
        if shapes or ctx.weights.get(layer.name):  # blobs for a layer without any: Caffe aborts as well
            ctx.blobs(layer, shapes)
    return net


def known_prefix(net: Net, inputs: dict[str, "Shape"]) -> tuple[list, tuple[str, str] | None]:
    """(layer, its top shapes, its learned blobs' Params) for the layers parity can size, in order, up to
    the first it cannot; and that layer with the reason (None when parity knows them all). `inputs`:
    blob -> shape for Input tops."""
    from ..convert.handler import checked_shapes
    from ..convert.registry import shapes_for

    shapes: dict[str, Shape] = {}
    known = []
    for layer in net.layers:
        handler = shapes_for(layer.type)
        if handler is None:
            return known, (layer.name, f"parity does not convert {layer.type}")
        try:
            result = checked_shapes(handler, layer, [shapes[b] for b in layer.bottoms])
        except (ValueError, KeyError) as exc:
            return known, (layer.name, str(exc))
        tops = [tuple(inputs.get(t, s)) if layer.type == "Input" else tuple(s) for t, s in zip(layer.tops, result.tops)]
        shapes.update(zip(layer.tops, tops))
        known.append((layer, tops, list(result.params)))
    return known, None


INT_MAX = 2**31 - 1  # Caffe's Blob::Reshape CHECKs that a blob's count fits an int


@dataclass
class BlobSize:
    """One blob Caffe reshapes: the layer that makes it, what it is, its shape, whether it takes memory of
    its own (an in-place top shares its bottom's), and whether the dump keeps a copy (every top)."""

    layer: str
    what: str
    shape: Shape
    allocated: bool = True
    copied: bool = False

    @property
    def count(self) -> int:
        return int(np.prod(self.shape, dtype=object))


def caffe_blobs(net: Net, inputs: dict[str, Shape]) -> list[BlobSize]:
    """Every blob Caffe would make for `net` fed `inputs` (blob -> shape; the others as declared), up to
    the first layer parity cannot size: tops, learned blobs and the convolutions' im2col buffers, by the
    converters' own shape rules."""
    shapes: dict[str, Shape] = {}
    sizes = []
    for layer, tops, params in known_prefix(net, inputs)[0]:
        sizes += [BlobSize(layer.name, f"top {t!r}", s, allocated=t not in shapes, copied=True)
                  for t, s in zip(layer.tops, tops)]
        sizes += [BlobSize(layer.name, f"learned blob {i}", tuple(p.shape)) for i, p in enumerate(params)]
        sizes += _im2col_buffer(layer, [shapes[b] for b in layer.bottoms], tops)
        shapes.update(zip(layer.tops, tops))
    return sizes


def _im2col_buffer(layer, bottoms: list[Shape], tops: list[Shape]) -> list[BlobSize]:
    """Caffe's (De)Convolution lowers each image into a column buffer, a blob of its own: C x kh x kw rows
    (C the channels on the input side of the im2col: the bottom's, or a Deconvolution's top) by the
    positions on the other side."""
    from .shapes import conv_geometry

    if layer.type not in ("Convolution", "Deconvolution") or not bottoms or not tops:
        return []
    (kh, kw), _, _, _ = conv_geometry(layer.param.convolution_param)
    image, columns = (bottoms[0], tops[0]) if layer.type == "Convolution" else (tops[0], bottoms[0])
    return [BlobSize(layer.name, "im2col buffer", (image[1] * kh * kw, *columns[2:]))]


def check_sizes(net: Net, inputs: dict[str, Shape]) -> None:
    """Refuse, naming the layer and shape, a blob Caffe would CHECK-fail on (more than INT_MAX elements),
    and a run whose blobs and saved copies cannot fit in the memory available now."""
    sizes = caffe_blobs(net, inputs)
    for size in sizes:
        if size.count > INT_MAX:
            raise net.error(size.layer, f"its {size.what} would be of shape {size.shape}: {size.count} elements, "
                                        "more than Caffe's limit of 2**31 - 1 per blob (Caffe aborts on it)")
    available = available_memory()
    needed = 4 * sum(size.count * (size.allocated + size.copied) for size in sizes)  # float32
    if available is not None and needed > available:
        largest = max(sizes, key=lambda size: size.count)
        raise ParityError(f"the dump needs about {needed / 1e9:.2f} GB of memory for Caffe's blobs and the copies "
                          f"it saves, {available / 1e9:.2f} GB is available (largest: layer {largest.layer!r}, "
                          f"{largest.what} of shape {largest.shape})", net.path)


def available_memory() -> int | None:
    """Bytes of memory a run can count on (None: unknown): MemAvailable, capped by a cgroup's limit. The
    cgroup's own usage is not subtracted, as it counts page cache the kernel would give back."""
    amounts = []
    try:
        with open("/proc/meminfo") as fh:
            amounts += [int(line.split()[1]) * 1024 for line in fh if line.startswith("MemAvailable:")]
    except (OSError, ValueError, IndexError):
        pass
    try:
        amounts.append(int(Path("/sys/fs/cgroup/memory.max").read_text()))
    except (OSError, ValueError):  # absent, or "max"
        pass
    return min(amounts) if amounts else None


def input_shapes(net: Net) -> dict[str, Shape]:
    """Each input blob's shape, as the Input layer's converter reads it (legacy input fields included)."""
    from ..convert.registry import shapes_for

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


MAX_NAME = 200  # bytes: the stage and aside folders add '.' + '.old.' + 8 characters, within NAME_MAX (255)


def sample_folder(name: str, where: str | Path | None = None) -> str:
    """The folder OUT/<name>/ a sample is written to. The name comes from a file name, so refuse what is
    no plain folder name: '.' (from '..npy': OUT/. is OUT itself, and replacing it deleted the whole
    output folder), '..', a hidden name (parity's own temporary folders start with '.'), a path
    separator, a control character, or a name too long for the file system."""
    bad = (name in ("", ".", "..") or name.startswith(".") or "/" in name or "\\" in name
           or any(ord(c) < 32 or ord(c) == 127 for c in name) or len(name.encode("utf-8", "replace")) > MAX_NAME)
    if bad:
        raise ParityError(f"the input's name {name!r} cannot name a sample folder (OUT/<name>/): it must not be "
                          f"empty, '.' or '..', start with '.', hold a path separator or control character, or "
                          f"exceed {MAX_NAME} bytes; rename the file", where)
    return safe_filename(name)


def written_by_parity(folder: Path) -> bool:
    """Whether a dump may replace `folder`: an empty folder, or a real folder (not a link) holding a parity
    manifest. A concurrent dump of the same folder may be renaming it aside and deleting it meanwhile: a
    refusal counts only if the folder judged is still the one at that path (else it is judged again),
    and a folder gone has nothing left to lose."""
    for _ in range(SWAP_TRIES):
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return True
        except OSError:  # a file, a symbolic link, a folder parity may not read
            return False
        try:
            verdict = not os.listdir(fd) or _holds_parity_manifest(fd)
            if verdict or _still_at(fd, folder):
                return verdict
        finally:
            os.close(fd)
    return False


def _still_at(fd: int, path: Path) -> bool:
    """Whether the folder open as `fd` is the one `path` names now (not renamed aside since)."""
    try:
        now = os.lstat(path)
    except FileNotFoundError:
        return False
    here = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (here.st_dev, here.st_ino)


def _holds_parity_manifest(folder_fd: int) -> bool:
    """A regular manifest.json (no link, no FIFO to block on, not huge) whose format is parity's."""
    try:
        fd = os.open("manifest.json", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=folder_fd)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > 1 << 26:
            return False
        try:
            content = json.loads(fh.read().decode("utf-8"))
        except (OSError, ValueError):
            return False
    return isinstance(content, dict) and content.get("format") == FORMAT


def check_sample_names(paths: list[Path], out: Path | None = None) -> None:
    """Each input is written to OUT/<its file name's stem>/: the name must make a folder name, two inputs
    of one name would overwrite each other, and (given `out`) a folder there must be one parity wrote."""
    seen: dict[str, Path] = {}
    for path in paths:
        folder = sample_folder(path.stem, path)
        if folder in seen:
            raise ParityError(f"this input and {seen[folder]} would both be written to OUT/{folder}/; "
                              "rename one", path)
        seen[folder] = path
        if out is not None:
            check_replaceable(out / folder, written_by_parity)


def check_samples(net: Net, samples: list["Sample"], out: Path) -> None:
    """Everything about the samples Caffe would abort on or that would lose data, before Caffe runs."""
    declared, seen = input_shapes(net), set()
    for sample in samples:
        folder = sample_folder(sample.name)
        if folder in seen:
            raise ParityError(f"two samples would both be written to OUT/{folder}/; rename one", out)
        seen.add(folder)
        check_replaceable(out / folder, written_by_parity)
        unknown = sorted(set(sample.arrays) - set(declared))
        if unknown:
            raise ParityError(f"the net has no input blob {unknown[0]!r} (inputs: {', '.join(declared)})", net.path)
        check_sizes(net, {blob: array.shape for blob, array in sample.arrays.items()})


def dump(prototxt: Path, caffemodel: Path, samples: list[Sample], out: Path, granularity: str = "layer",
         log=print, blas_core: Pin | None = None, net: Net | None = None, until: str | None = None) -> list[Path]:
    """Run Caffe on each sample and write OUT/<sample>/. `blas_core`: the OpenBLAS kernel to pin
    (blas.choose_core; by default OPENBLAS_CORETYPE if set, else Haswell), always on one thread.
    `net`: what `preflight` returned for these files, when the caller ran it already. `until`: run the net
    only up to this layer (inclusive; the manifest says so). Caffe runs in a child process
    (parity.caffe.child): whatever it stops on is one ParityError naming the layer."""
    import shutil
    import tempfile

    if granularity not in ("layer", "blob"):
        raise ParityError(f"granularity must be 'layer' or 'blob', got {granularity!r}")
    core = blas_core or choose_core(None)
    own_net = net or preflight(prototxt, caffemodel, until)
    check_samples(own_net, samples, out)
    model = {"prototxt": {"file": prototxt.name, "sha256": sha256_file(prototxt)},
             "caffemodel": {"file": caffemodel.name, "sha256": sha256_file(caffemodel)}}
    work = Path(tempfile.mkdtemp(prefix="parity-caffe-"))
    try:
        runnable = _cut_prototxt(own_net, work) if until else prototxt
        log(f"parity dump: running Caffe on {len(samples)} sample(s) ({granularity} granularity) ...")
        ran = _run_caffe(own_net, runnable, caffemodel, samples, granularity, core, work)
        blas = ran["build"]["blas"]
        log(f"parity dump: BLAS {blas['library']} {blas.get('version', '')}, kernel {blas.get('core') or 'unknown'}, "
            f"{blas.get('threads', '?')} thread(s) ({blas['file']})")
        _check_filled(own_net, caffemodel, ran["params"])
        written = []
        for sample, records in zip(samples, ran["samples"]):
            target = out / sample_folder(sample.name)
            with atomic_directory(target, written_by_parity) as stage:
                entries = _save(records, work, stage)
                manifest = _manifest(model, ran["build"], sample, entries, granularity, stage)
                if until:
                    manifest["until"] = until
                (stage / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
            size = sum(f.stat().st_size for f in target.iterdir()) / 1e6
            log(f"parity dump: {sample.name}: {len(entries)} entries, {size:.1f} MB -> {target}")
            written.append(target)
        return written
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _cut_prototxt(net: Net, work: Path) -> Path:
    """The net up to --until as a prototxt of its own, for Caffe to build (the layers as parity read them)."""
    from google.protobuf import text_format

    from .schema import caffe_pb2

    proto = caffe_pb2.NetParameter(name=net.name)
    for layer in net.layers:
        proto.layer.add().CopyFrom(layer.param)
    path = work / "until.prototxt"
    path.write_text(text_format.MessageToString(proto))
    return path


def _run_caffe(net: Net, prototxt: Path, caffemodel: Path, samples: list[Sample], granularity: str, core: Pin,
               work: Path) -> dict:
    """Every sample through Caffe, in a child process; its arrays in `work`, their records returned."""
    from .child import PROGRESS, CaffeFailure, run_in_child

    own_layers = {layer.name for layer in net.layers}

    def job(folder: Path) -> dict:
        caffe, blas = import_caffe(core, lambda message: print(message, file=sys.stderr))
        caffe.set_mode_cpu()
        caffe_net = caffe.Net(str(prototxt), caffe.TEST, weights=str(caffemodel))
        params = {name: [list(blob.data.shape) for blob in blobs] for name, blobs in caffe_net.params.items()}
        done = []
        for i, sample in enumerate(samples):
            def progress(layer: str, i=i) -> None:
                (folder / PROGRESS).write_text(json.dumps({"sample": i, "layer": layer}))

            records = []
            for k, (record, array) in enumerate(_run(caffe_net, sample, granularity, own_layers, progress)):
                np.save(folder / f"s{i}_{k}.npy", array, allow_pickle=False)
                records.append({**record, "work_file": f"s{i}_{k}.npy"})
            done.append(records)
        (folder / PROGRESS).unlink(missing_ok=True)
        return {"build": caffe_build_info(caffe, blas), "params": params, "samples": done}

    try:
        return run_in_child(work, job)
    except CaffeFailure as failure:
        raise caffe_error(net, failure) from None


def caffe_error(net: Net, failure) -> ParityError:
    """Caffe's failure as one line: the layer it was setting up or running, its own words, and what
    parity's rules had against that layer, if anything."""
    if failure.error is not None:
        return failure.error
    stop = known_prefix(net, {})[1]
    layer = failure.layer if failure.layer in {lay.name for lay in net.layers} else None
    if layer is None and failure.unknown_type:
        layer = next((lay.name for lay in net.layers if lay.type == failure.unknown_type), None)
    if layer is None and stop:  # Caffe does not say which layer it was setting up: parity's rules may
        return ParityError(f"Caffe could not build the net: {failure.message} (parity's rules stop at layer "
                           f"{stop[0]!r}: {stop[1]})", net.path, net.line_of(stop[0]))
    note = f" (parity: {stop[1]})" if stop and layer == stop[0] else ""
    if layer is None:
        return ParityError(f"Caffe could not build the net: {failure.message}", net.path)
    doing = "running" if failure.running else "setting up"
    return ParityError(f"Caffe stopped {doing} layer {layer!r} ({net.layer(layer).type}): {failure.message}{note}",
                       net.path, net.line_of(layer))


def _check_filled(net: Net, caffemodel: Path, params: dict[str, list]) -> None:
    """A layer with learned blobs the caffemodel lacks ran on Caffe's random fillers: refuse it. (parity's
    preflight finds these for the layers it knows; this is for the others, from the net Caffe built.)"""
    from .reading.caffemodel import read_caffemodel

    weights = read_caffemodel(caffemodel)
    for name in params:
        if not weights.get(name):
            raise ParityError(f"layer {name!r} has learned blobs and the caffemodel has none for it: Caffe ran it "
                              "on its random fillers", caffemodel)


def _run(net, sample: Sample, granularity: str, own_layers: set[str], progress=lambda layer: None
         ) -> list[tuple[dict, np.ndarray]]:
    """Forward `sample` one layer at a time (`progress` told of each first, so a failure is placed):
    each entry's record (without its file) and array, in Caffe's order. At blob granularity each blob's
    final value is kept, labelled with the layer that wrote it last. Split layers Caffe inserted itself
    (a blob read by several layers) are not in the user's net and only copy their bottom: no entry."""
    for blob, array in sample.arrays.items():
        if blob not in net.blobs:
            raise ParityError(f"the net has no input blob {blob!r} (inputs: {', '.join(net.inputs)})")
        net.blobs[blob].reshape(*array.shape)
        net.blobs[blob].data[...] = array
    net.reshape()
    names = list(net._layer_names)
    types = [layer.type for layer in net.layers]
    entries: dict[tuple[int, str], np.ndarray] = {}
    for i, name in enumerate(names):
        progress(name)
        net._forward(i, i)
        if granularity == "layer":
            for top in net.top_names[name]:
                entries[(i, top)] = np.array(net.blobs[top].data, dtype=np.float32, copy=True)
    if granularity == "blob":
        last_writer = {top: i for i, name in enumerate(names) for top in net.top_names[name]}
        for top, i in sorted(last_writer.items(), key=lambda kv: kv[1]):
            entries[(i, top)] = np.array(net.blobs[top].data, dtype=np.float32, copy=True)
    return [({"order": i, "layer": names[i], "type": types[i], "top": top,
              "suffix": f"__{safe_filename(top)}" if len(net.top_names[names[i]]) > 1 else ""}, array)
            for (i, top), array in sorted(entries.items(), key=lambda kv: kv[0][0])
            if names[i] in own_layers or types[i] != "Split"]


def _save(records: list[dict], work: Path, stage: Path) -> list[dict]:
    """Each entry's .npy from the child's work folder compressed into the stage (.npy.gz: Caffe's outputs,
    ReLU's zeros above all, take about half the room); the manifest's entry records."""
    out = []
    for record in records:
        record = dict(record)
        file = f"{len(out):03d}_{safe_filename(record['layer'])}{record.pop('suffix')}.npy.gz"
        source = work / record.pop("work_file")
        array = np.load(source, allow_pickle=False)  # the child's own file, written a moment ago
        write_npy_gz(array, stage / file)
        source.unlink()
        out.append({**record, "file": file, "shape": list(array.shape), "dtype": "float32"})
    return out


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
