"""What benchmarks/run.py runs inside its subprocesses; each command prints one JSON line on stdout.

Every measurement runs in a fresh process, so its peak RSS is its own (run.py reads it with
os.wait4) and no measurement inherits another's warm TensorFlow state. Timings start after the
imports: importing TensorFlow (about 3 s here) is reported separately, as `import_s`.

    python3 benchmarks/probes.py warm                 build every fixture's weights, read every file once
    python3 benchmarks/probes.py forward REPEAT EVERY plain vs capture vs per-layer truncation (VGG-19)
    python3 benchmarks/probes.py check MODEL [RULE]   `parity check --model MODEL -q`, in phases (RULE: noise or fixed)
    python3 benchmarks/probes.py scale-make DIR KIND N write a chain net of N layers (KIND: caffe, v1 or tf) into DIR
    python3 benchmarks/probes.py scale KIND DIR        read, Net, convert (caffe), locate a divergence: in phases
"""
from __future__ import annotations

import contextlib
import json
import statistics
import sys
import time

T0 = time.perf_counter()


def emit(result: dict) -> None:
    print(json.dumps(result), flush=True)


def warm() -> dict:
    """Build every fixture's seeded weights (once, into .cache/) and read every input file once.

    Weight building is a one-time cost that the checks must not be charged for, and reading the
    caffemodels and reference blobs here puts them in the page cache: every later measurement
    starts warm, whatever ran before it.
    """
    from parity.caffe.fixtures import list_fixtures, load_fixture
    from parity.tfgraph.fixture import fixture_graph

    names, total = list_fixtures(), 0
    for name in names:
        fixture = load_fixture(name)
        files = ([fixture_graph(fixture)] if fixture.kind == "tensorflow-graph"
                 else [fixture.prototxt, fixture.weights_path()])
        if fixture.references.is_dir():
            files += sorted(p for p in fixture.references.rglob("*") if p.is_file())
        for path in files:
            with open(path, "rb") as fh:
                while chunk := fh.read(1 << 24):
                    total += len(chunk)
    return {"fixtures": names, "bytes_read": total, "vgg19_caffemodel": str(load_fixture("vgg19").weights_path()),
            "vgg19_prototxt": str(load_fixture("vgg19").prototxt)}


def _timed(model, feed) -> float:
    t0 = time.perf_counter()
    model.predict_on_batch(feed)
    return time.perf_counter() - t0


def forward(repeat: int, every: int) -> dict:
    """VGG-19, batch 1: conversion, the first (tracing) call, then plain vs capture interleaved.

    The capture model returns every referenced tensor in one pass; per-layer truncation (one model
    per output, as per-layer probing tools do) is timed on every `every`th output and extrapolated.
    """
    import keras

    from parity._tf import quiet_native_stderr
    from parity.caffe.reading.caffemodel import read_caffemodel
    from parity.check.capture import Capture
    from parity.convert import convert_net
    from parity.targets import from_fixture

    target = from_fixture("vgg19")
    ref = target.references[0]
    t0 = time.perf_counter()
    weights = read_caffemodel(target.caffemodel)
    t1 = time.perf_counter()
    converted = convert_net(target.net(), weights)
    t2 = time.perf_counter()
    capture = Capture(converted, [(e.layer, e.top) for e in ref.entries])
    plain, feed = converted.model, capture.feed(ref.inputs())
    with quiet_native_stderr():
        plain_first = _timed(plain, feed)
        capture_first = _timed(capture.model, feed)
        plain_s, capture_s = [], []
        for _ in range(repeat):  # interleaved, so drifting machine load hits both alike
            plain_s.append(_timed(plain, feed))
            capture_s.append(_timed(capture.model, feed))
        subset = capture.keys[every - 1::every]
        first, steady = [], []
        for key in subset:
            truncated = keras.Model(plain.inputs, converted.tensors[key])
            first.append(_timed(truncated, feed))  # includes tracing, as a per-layer probe pays it
            steady.append(_timed(truncated, feed))
    scale = len(capture.keys) / len(subset)
    return {"read_caffemodel_s": t1 - t0, "convert_s": t2 - t1,
            "plain_first_call_s": plain_first, "capture_first_call_s": capture_first,
            "plain_s": statistics.median(plain_s), "capture_s": statistics.median(capture_s),
            "plain_runs": plain_s, "capture_runs": capture_s, "outputs": len(capture.keys), "every": every,
            "subset": len(subset), "truncation_first_call_s": sum(first) * scale,
            "truncation_steady_s": sum(steady) * scale}


def check(model: str, rule: str = "noise") -> dict:
    """What `parity check --model MODEL -q` does after its imports, timed in phases; `rule` "fixed" is
    `parity check --atol 1e-2 --rtol 1e-4` (the fixed rule, no float64 twin).

    The same calls as parity.commands.check (fixture target, tolerance settings, run_target, render);
    run_target's progress messages mark the phase boundaries: provenance (until conversion starts; the
    sha256 checks run beside the conversion), conversion (read + convert + capture model), then per
    sample the capture forward and the comparison of every entry.
    """
    from parity._tf import import_keras_quietly
    from parity.check.pipeline import DEFAULT_ATOL, DEFAULT_RTOL, gate_settings, run_target
    from parity.diagnose.report import render
    from parity.targets import from_fixture

    import_keras_quietly()  # `import parity` no longer imports TensorFlow; its import is no part of the check
    marks = {}
    t0 = time.perf_counter()
    target = from_fixture(model)
    fixed = (DEFAULT_ATOL, DEFAULT_RTOL) if rule == "fixed" else (None, None)
    policy, baseline = gate_settings(target, *fixed, None, None)
    marks["setup"] = time.perf_counter()

    def progress(message: str) -> None:
        marks.setdefault("converting" if message.startswith("converting") else "comparing", time.perf_counter())

    reports = run_target(target, policy, progress=progress, baseline=baseline)
    marks["compared"] = time.perf_counter()
    verdicts = [render(r).splitlines()[-1] for r in reports]
    end = time.perf_counter()
    return {"model": model, "rule": rule, "check_s": end - t0,
            "phases": {"setup_s": marks["setup"] - t0, "provenance_s": marks["converting"] - marks["setup"],
                       "convert_s": marks["comparing"] - marks["converting"],
                       "forward_compare_s": marks["compared"] - marks["comparing"],
                       "report_s": end - marks["compared"]},
            "samples": len(reports), "entries": sum(len(r.layers) for r in reports),
            "status": "pass" if all(r.status == "pass" for r in reports) else "fail", "verdicts": verdicts}


# -- scale: a chain net of N layers -------------------------------------------------------------------
SCALE_WIDTH = 8  # the chain's blob: (1, 8), so 20k layers' weights are a few MB and the structure is what costs


def _maxrss_kib() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _chain_layers(n: int) -> list[tuple[str, str, str, str]]:
    """(name, type, bottom, top) of a chain of `n` layers: an Input, then InnerProduct and in-place ReLU
    taking turns, as a conv -> ReLU net has them (so every ReLU makes a two-layer in-place chain). Names
    have a fixed width, so that a chain twice as long is a file twice as large."""
    layers, blob = [("data", "Input", "", "data")], "data"
    for i in range(1, n):
        if i % 2:
            layers.append((f"ip{i:06d}", "InnerProduct", blob, f"ip{i:06d}"))
            blob = f"ip{i:06d}"
        else:
            layers.append((f"relu{i:06d}", "ReLU", blob, blob))
    return layers


def _chain_prototxt(n: int, v1: bool) -> str:
    """The chain in the current form, or in V1's `layers { type: INNER_PRODUCT }` with legacy input fields."""
    w = SCALE_WIDTH
    if v1:
        out = [f'name: "chain{n}"', 'input: "data"', "input_dim: 1", f"input_dim: {w}", "input_dim: 1", "input_dim: 1"]
    else:
        out = [f'name: "chain{n}"']
    for name, kind, bottom, top in _chain_layers(n):
        if kind == "Input":
            if not v1:
                out.append(f'layer {{\n  name: "{name}"\n  type: "Input"\n  top: "{top}"\n'
                           f"  input_param {{ shape {{ dim: 1 dim: {w} }} }}\n}}")
            continue
        head = "layers" if v1 else "layer"
        type_ = {"InnerProduct": "INNER_PRODUCT", "ReLU": "RELU"}[kind] if v1 else f'"{kind}"'
        param = f"\n  inner_product_param {{ num_output: {w} }}" if kind == "InnerProduct" else ""
        out.append(f'{head} {{\n  name: "{name}"\n  type: {type_}\n  bottom: "{bottom}"\n  top: "{top}"{param}\n}}')
    return "\n".join(out) + "\n"


def _chain_graph_def(n: int):
    """A frozen-graph chain of `n` computing ops: a Placeholder, then BiasAdd (reading its own Const) and
    Relu taking turns; the nodes are written last op first, as no order is promised in a GraphDef."""
    import numpy as np
    from tensorflow.core.framework import graph_pb2, node_def_pb2, types_pb2
    from tensorflow.python.framework import tensor_util

    nodes, previous = [], "input"
    x = node_def_pb2.NodeDef(name="input", op="Placeholder")
    x.attr["dtype"].type = types_pb2.DT_FLOAT
    x.attr["shape"].shape.dim.add().size = -1
    x.attr["shape"].shape.dim.add().size = SCALE_WIDTH
    nodes.append(x)
    bias = tensor_util.make_tensor_proto(np.linspace(-0.1, 0.1, SCALE_WIDTH, dtype=np.float32))
    for i in range(1, n):
        if i % 2:
            const = node_def_pb2.NodeDef(name=f"layer{i:06d}/bias", op="Const")
            const.attr["dtype"].type = types_pb2.DT_FLOAT
            const.attr["value"].tensor.CopyFrom(bias)
            node = node_def_pb2.NodeDef(name=f"layer{i:06d}/BiasAdd", op="BiasAdd", input=[previous, const.name])
            nodes.append(const)
        else:
            node = node_def_pb2.NodeDef(name=f"layer{i:06d}/Relu", op="Relu", input=[previous])
        node.attr["T"].type = types_pb2.DT_FLOAT
        nodes.append(node)
        previous = node.name
    graph_def = graph_pb2.GraphDef()
    graph_def.node.extend(reversed(nodes))
    return graph_def


def scale_make(folder: str, kind: str, n: int) -> dict:
    """Write the chain of `n` layers into `folder`: chain.prototxt + chain.caffemodel (caffe), chain.prototxt
    in the V1 form (v1), or chain.pb (tf). Run in its own process, so that the measurement does not carry
    what building the files cost."""
    from pathlib import Path

    out = Path(folder)
    if kind == "tf":
        path = out / "chain.pb"
        path.write_bytes(_chain_graph_def(n).SerializeToString())
        return {"files": {"pb": str(path)}, "bytes": path.stat().st_size}
    text = _chain_prototxt(n, v1=kind == "v1")
    prototxt = out / "chain.prototxt"
    prototxt.write_text(text, encoding="utf-8")
    files = {"prototxt": str(prototxt)}
    if kind == "caffe":
        from google.protobuf import text_format

        from parity.caffe.reading.caffemodel_writer import write_caffemodel
        from parity.caffe.recipes import BIAS_BOUND, uniform
        from parity.caffe.schema import caffe_pb2

        proto = text_format.Parse(text, caffe_pb2.NetParameter())
        w, bound = SCALE_WIDTH, (6.0 / SCALE_WIDTH) ** 0.5
        blobs = {name: [uniform(0, name, (w, w), bound), uniform(0, f"{name}/bias", (w,), BIAS_BOUND)]
                 for name, type_, _, _ in _chain_layers(n) if type_ == "InnerProduct"}
        files["caffemodel"] = str(write_caffemodel(out / "chain.caffemodel", proto, blobs))
    return {"files": files, "bytes": sum(Path(p).stat().st_size for p in files.values())}


def _check_work(net, tick) -> dict:
    """What `parity check` does with the net besides running it: every blob's last writer as a reference
    entry (blob granularity), the in-place chain of each (parents_of, check_reference's `covers`), and
    locate_first_divergence() on results failing from the third entry on (every later one downstream: the
    worst case)."""
    from parity.check.compare import FAIL, LayerResult
    from parity.check.divergence import locate_first_divergence
    from parity.check.pipeline import parents_of

    last: dict[str, str] = {}
    by_name = {layer.name: layer for layer in net.layers}
    for layer in net.layers:
        last.update((top, layer.name) for top in layer.tops)
    keys = sorted(((name, top) for top, name in last.items()), key=lambda k: by_name[k[0]].index)
    referenced = {name for name, _ in keys}
    parents = parents_of(net, keys)
    covers = sum(len(net.inplace_chain(name, top, referenced)) > 1 for name, top in keys)
    tick("parents")
    results = [LayerResult(name, by_name[name].type, top, order, (1, SCALE_WIDTH))
               for order, (name, top) in enumerate(keys)]
    for r in results[2:]:
        r.status = FAIL
    first = locate_first_divergence(results, net)
    tick("divergence")
    downstream = sum(r.downstream_of == first for r in results)
    return {"entries": len(keys), "with_parents": sum(bool(p) for p in parents.values()), "chains": covers,
            "first": first, "downstream": downstream}


@contextlib.contextmanager
def _timing_keras_map_graph():
    """Seconds spent in Keras's map_graph while inside (observing only; [None] where Keras has none)."""
    try:
        from keras.src.ops import function as keras_function

        real = keras_function.map_graph
    except (ImportError, AttributeError):
        yield [None]
        return
    spent = [0.0]

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - t0

    keras_function.map_graph = timed
    try:
        yield spent
    finally:
        keras_function.map_graph = real


def scale(kind: str, folder: str) -> dict:
    """Read the chain in `folder` and do what a check does with it, phase by phase: wall and CPU seconds
    (this process, all its threads) and ru_maxrss (KiB) after each. `baseline_kib` is ru_maxrss after the
    imports, before any work. For the caffe form, `keras_map_graph_s` is the part of the conversion spent in
    Keras's functional-graph validation (keras.src.ops.function.map_graph, timed by a wrapper), whose
    unique-name check is quadratic in the layers (`all_names.count(name)` for every name)."""
    import gc
    from pathlib import Path

    from parity.caffe.graph import Net
    from parity.caffe.reading.prototxt import read_prototxt

    out = Path(folder)
    # The imports' heap (TensorFlow, Keras: about a million objects) leaves the collector's view: a full
    # collection would traverse it all, a fixed cost that lands in one phase or another, or in none, and
    # says nothing about how the work grows with the net (parity's pytest plugin freezes it likewise)
    gc.collect()
    gc.freeze()
    baseline = _maxrss_kib()
    marks, cpu, rss = {}, {}, {}
    t0 = last = time.perf_counter()
    c0 = last_cpu = time.process_time()

    def tick(phase: str) -> None:
        nonlocal last, last_cpu
        now, now_cpu = time.perf_counter(), time.process_time()
        marks[phase], cpu[phase], rss[phase] = now - last, now_cpu - last_cpu, _maxrss_kib()
        last, last_cpu = now, now_cpu

    if kind == "tf":
        from parity.tfgraph.graph import constants, load_graph, output_layouts, placeholders

        graph_def, net = load_graph(out / "chain.pb")
        tick("load_graph")
        layouts = output_layouts(net, "NHWC", constants(graph_def))
        tick("layouts")
        extra = {"ops": len(net.layers), "nodes": len(graph_def.node), "layouts": len(layouts),
                 "placeholders": len(placeholders(net))}
    else:
        proto = read_prototxt(out / "chain.prototxt")
        tick("read_prototxt")
        net = Net.from_proto(proto, out / "chain.prototxt", (out / "chain.prototxt").read_text(encoding="utf-8"))
        tick("net")
        extra = {"layers": len(net.layers)}
        if kind == "caffe":
            from parity.caffe.reading.caffemodel import read_caffemodel
            from parity.convert import convert_net

            weights = read_caffemodel(out / "chain.caffemodel")
            tick("read_caffemodel")
            # convert_net gives Keras's recursive graph walk the recursion room a chain this deep needs
            with _timing_keras_map_graph() as spent:
                converted = convert_net(net, weights)
            tick("convert")
            extra["keras_layers"] = len(converted.model.layers)
            extra["keras_map_graph_s"] = spent[0]
    extra.update(_check_work(net, tick))
    return {"kind": kind, "total_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "phases_s": marks,
            "phases_cpu_s": cpu, "maxrss_after_kib": rss,
            "baseline_kib": baseline, "peak_kib": _maxrss_kib(), **extra}


def main(argv: list[str]) -> int:
    command, args = argv[0], argv[1:]
    if command == "scale-make" and args[1] != "tf":  # no TensorFlow needed to write a prototxt and caffemodel
        emit(scale_make(args[0], args[1], int(args[2])))
        return 0
    import keras  # noqa: F401  (imports TensorFlow: timed apart from the measurement)

    import parity  # noqa: F401  (registers its Keras layers as Keras loads)

    import_s = time.perf_counter() - T0
    if command == "scale-make":
        result = scale_make(args[0], args[1], int(args[2]))
    elif command == "scale":
        result = scale(args[0], args[1])
    elif command == "warm":
        result = warm()
    elif command == "forward":
        result = forward(int(args[0]), int(args[1]))
    elif command == "check":
        result = check(*args)
    else:
        raise SystemExit(f"unknown probe {command!r}")
    emit({"import_s": import_s, **result})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
