"""What benchmarks/run.py runs inside its subprocesses; each command prints one JSON line on stdout.

Every measurement runs in a fresh process, so its peak RSS is its own (run.py reads it with
os.wait4) and no measurement inherits another's warm TensorFlow state. Timings start after the
imports: importing TensorFlow (about 3 s here) is reported separately, as `import_s`.

    python3 benchmarks/probes.py warm                 build every fixture's weights, read every file once
    python3 benchmarks/probes.py forward REPEAT EVERY plain vs capture vs per-layer truncation (VGG-19)
    python3 benchmarks/probes.py check MODEL [RULE]   `parity check --model MODEL -q`, in phases (RULE: noise or fixed)
"""
from __future__ import annotations

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
    from parity.fixtures import list_fixtures, load_fixture

    names, total = list_fixtures(), 0
    for name in names:
        fixture = load_fixture(name)
        files = [fixture.graph_path()] if fixture.kind == "tensorflow-graph" else [fixture.prototxt, fixture.weights_path()]
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
    from parity.capture import Capture
    from parity.check import target_from_fixture
    from parity.convert import convert_net
    from parity.reading.caffemodel import read_caffemodel

    target = target_from_fixture("vgg19")
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
    from parity.check import DEFAULT_ATOL, DEFAULT_RTOL, gate_settings, run_target, target_from_fixture
    from parity.report import render

    import_keras_quietly()  # `import parity` no longer imports TensorFlow; its import is no part of the check
    marks = {}
    t0 = time.perf_counter()
    target = target_from_fixture(model)
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
                       "forward_compare_s": marks["compared"] - marks["comparing"], "report_s": end - marks["compared"]},
            "samples": len(reports), "entries": sum(len(r.layers) for r in reports),
            "status": "pass" if all(r.status == "pass" for r in reports) else "fail", "verdicts": verdicts}


def main(argv: list[str]) -> int:
    command, args = argv[0], argv[1:]
    import keras  # noqa: F401  (imports TensorFlow: timed apart from the measurement)
    import parity  # noqa: F401  (registers its Keras layers as Keras loads)

    import_s = time.perf_counter() - T0
    if command == "warm":
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
