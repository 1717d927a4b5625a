"""Benchmarks for parity's two performance claims, each against a baseline measured in the same run.

1. Caffemodel loading. parity memory-maps the file and returns numpy views, so loading VGG-19
   (575 MB) should cost a small fraction of what real pycaffe (`caffe.Net(prototxt, caffemodel)`)
   costs, and should not copy the weights into process memory. Each loader runs in a fresh
   subprocess (warm page cache, fresh Python state, attributable peak RSS); the load alone is timed,
   after imports, and peak-RSS growth is ru_maxrss after minus before the load. The protobuf route
   (ParseFromString + np.array per blob) is shown as a second baseline, and as the fallback when
   pycaffe is not installed.
2. All-layer capture. One multi-output keras.Model returns every layer's output in one forward
   pass; it should cost little more than the plain forward pass. The quadratic alternative, one
   truncated model per layer, is measured on a subset and extrapolated, for information.

Targets are ratios to in-run baselines, never absolute seconds: the machines are shared and noisy.

    python3 benchmarks/run.py [--repeat 3] [--forward-repeat 7] [--json PATH]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CAFFE_PYTHON = Path(os.environ.get("PARITY_CAFFE_DIR", REPO / ".cache" / "caffe")) / "venv" / "bin" / "python"
ENV = {**os.environ, "GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "2"}

LOAD_TARGET = 5.0  # pycaffe / parity load time, at least
RSS_TARGET = 0.10  # parity's peak-RSS growth, below this fraction of the file size
CAPTURE_TARGET = 1.5  # capture / plain forward time, at most

# Each loader: (imports, load statement). argv: prototxt caffemodel. The snippet prints one JSON line.
HARNESS = """
import json, resource, sys, time
{imports}
prototxt, path = sys.argv[1], sys.argv[2]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
{load}
seconds = time.perf_counter() - t0
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"seconds": seconds, "rss_growth_kib": after - before}}))
"""
LOADERS = {
    "parity (views)": (
        "from parity.reading.caffemodel import read_caffemodel",
        "w = read_caffemodel(path)"),
    "parity + read all values": (
        "from parity.reading.caffemodel import read_caffemodel",
        "w = read_caffemodel(path); total = sum(float(a.sum()) for bs in w.blobs.values() for a in bs)"),
    "pycaffe caffe.Net": (
        "import caffe",
        "net = caffe.Net(prototxt, path, caffe.TEST)"),
    "protobuf + np.array": (
        "import numpy as np; from parity.schema import caffe_pb2",
        "net = caffe_pb2.NetParameter(); net.ParseFromString(open(path, 'rb').read())\n"
        "arrays = [np.array(b.data, np.float32) for l in net.layer for b in l.blobs]"),
}


def caffe_python() -> tuple[str | None, str]:
    """The pycaffe venv's python, or None and why not."""
    if not CAFFE_PYTHON.exists():
        return None, f"{CAFFE_PYTHON} does not exist (build it with tools/build_caffe.sh)"
    r = subprocess.run([str(CAFFE_PYTHON), "-c", "import caffe"], capture_output=True, text=True, env=ENV)
    if r.returncode != 0:
        return None, f"`import caffe` fails in {CAFFE_PYTHON}: {r.stderr.strip().splitlines()[-1:]}"
    return str(CAFFE_PYTHON), ""


def load_once(python: str, name: str, prototxt: Path, caffemodel: Path) -> dict:
    imports, load = LOADERS[name]
    code = HARNESS.format(imports=imports, load=load)
    r = subprocess.run([python, "-c", code, str(prototxt), str(caffemodel)], capture_output=True, text=True, env=ENV)
    if r.returncode != 0:
        raise RuntimeError(f"{name} subprocess failed (rc {r.returncode}):\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def bench_loads(prototxt: Path, caffemodel: Path, repeat: int) -> tuple[dict, str]:
    """Median seconds and median peak-RSS growth (KiB) per loader; skipped loaders are absent."""
    caffe_py, why_not = caffe_python()
    results = {}
    for name in LOADERS:
        python = caffe_py if name.startswith("pycaffe") else sys.executable
        if python is None:
            continue
        runs = [load_once(python, name, prototxt, caffemodel) for _ in range(repeat)]
        results[name] = {"seconds": statistics.median(r["seconds"] for r in runs),
                         "rss_growth_kib": statistics.median(r["rss_growth_kib"] for r in runs),
                         "runs": runs}
    return results, why_not


def timed(model, feed) -> float:
    t0 = time.perf_counter()
    model.predict_on_batch(feed)
    return time.perf_counter() - t0


def bench_forward(repeat: int, every: int) -> dict:
    """Plain vs capture forward (interleaved medians), and per-layer truncation extrapolated from a subset."""
    import keras

    from parity._tf import quiet_native_stderr
    from parity.check import prepare, target_from_fixture

    target = target_from_fixture("vgg19")
    prepared = prepare(target)
    plain, capture = prepared.converted.model, prepared.capture.model
    feed = prepared.capture.feed(target.references[0].inputs())
    with quiet_native_stderr():
        timed(plain, feed), timed(capture, feed)  # first calls trace
        plain_s, capture_s = [], []
        for _ in range(repeat):
            plain_s.append(timed(plain, feed))
            capture_s.append(timed(capture, feed))
        keys = prepared.capture.keys
        subset = keys[every - 1::every]
        first, steady = [], []
        for key in subset:
            truncated = keras.Model(plain.inputs, prepared.converted.tensors[key])
            first.append(timed(truncated, feed))  # includes tracing, as a per-layer probe pays it
            steady.append(timed(truncated, feed))
    scale = len(keys) / len(subset)
    return {"plain_s": statistics.median(plain_s), "capture_s": statistics.median(capture_s),
            "plain_runs": plain_s, "capture_runs": capture_s, "outputs": len(keys), "every": every, "subset": len(subset),
            "truncation_first_call_s": sum(first) * scale, "truncation_steady_s": sum(steady) * scale}


def machine_facts(caffemodel: Path) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    return {"date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
            "platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__,
            "caffemodel": str(caffemodel), "caffemodel_bytes": caffemodel.stat().st_size}


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report_loads(loads: dict, why_not: str, size: int) -> dict:
    print(f"\nCaffemodel load (fresh subprocess each, median of {len(next(iter(loads.values()))['runs'])})")
    print(f"  {'loader':<26} {'load s':>9} {'peak RSS growth MB':>19} {'% of file':>10}")
    for name, r in loads.items():
        mb = r["rss_growth_kib"] * 1024 / 1e6
        print(f"  {name:<26} {r['seconds']:>9.4f} {mb:>19.1f} {100 * r['rss_growth_kib'] * 1024 / size:>9.1f}%")
    if why_not:
        print(f"  pycaffe caffe.Net           SKIPPED: {why_not}")
    parity = loads["parity (views)"]
    baseline = "pycaffe caffe.Net" if "pycaffe caffe.Net" in loads else "protobuf + np.array"
    ratio = loads[baseline]["seconds"] / parity["seconds"]
    growth = parity["rss_growth_kib"] * 1024
    if baseline.startswith("pycaffe"):
        print(f"\ncaffemodel load: pycaffe / parity = {ratio:.1f}x (target >= {LOAD_TARGET:.0f}x) "
              f"{verdict(ratio >= LOAD_TARGET)}")
    else:
        print(f"\ncaffemodel load: pycaffe / parity cannot be computed (pycaffe unavailable); "
              f"INSTEAD protobuf route / parity = {ratio:.1f}x (target >= {LOAD_TARGET:.0f}x, vs protobuf) "
              f"{verdict(ratio >= LOAD_TARGET)}")
    print(f"peak RSS growth: {growth / 1e6:.0f} MB = {100 * growth / size:.1f}% of file "
          f"(target < {100 * RSS_TARGET:.0f}%) {verdict(growth < RSS_TARGET * size)}")
    return {"baseline": baseline, "ratio": ratio, "ratio_pass": ratio >= LOAD_TARGET,
            "rss_growth_fraction": growth / size, "rss_pass": growth < RSS_TARGET * size}


def report_forward(fw: dict) -> dict:
    n = len(fw["plain_runs"])
    print(f"\nVGG-19 forward, batch 1 (after one warm-up call each; median of {n}, interleaved)")
    print(f"  {'model':<44} {'seconds':>9}")
    print(f"  {'plain converted model':<44} {fw['plain_s']:>9.4f}")
    print(f"  {'all-layer capture (%d outputs, one pass)' % fw['outputs']:<44} {fw['capture_s']:>9.4f}")
    print(f"  per-layer truncation, one model per output: extrapolated linearly from every "
          f"{fw['every']}th output ({fw['subset']} of {fw['outputs']}), model building not timed")
    print(f"  {'  first call each (includes tracing)':<44} {fw['truncation_first_call_s']:>9.4f}")
    print(f"  {'  already-traced call each':<44} {fw['truncation_steady_s']:>9.4f}")
    ratio = fw["capture_s"] / fw["plain_s"]
    print(f"\nall-layer capture / plain forward = {ratio:.2f}x (target <= {CAPTURE_TARGET}x) "
          f"{verdict(ratio <= CAPTURE_TARGET)}")
    return {"ratio": ratio, "ratio_pass": ratio <= CAPTURE_TARGET}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="fresh-subprocess loads per loader (median)")
    parser.add_argument("--forward-repeat", type=int, default=7, help="timed forward passes per model (median)")
    parser.add_argument("--every", type=int, default=5, help="per-layer truncation: measure every Nth output")
    parser.add_argument("--json", type=Path, help="also write all measurements here")
    args = parser.parse_args()

    from parity.fixtures import load_fixture

    fixture = load_fixture("vgg19")
    caffemodel = fixture.weights_path()
    facts = machine_facts(caffemodel)
    print("parity benchmarks")
    for key, value in facts.items():
        print(f"  {key:<17} {value}")

    loads, why_not = bench_loads(fixture.prototxt, caffemodel, args.repeat)
    load_verdict = report_loads(loads, why_not, facts["caffemodel_bytes"])
    forward = bench_forward(args.forward_repeat, args.every)
    forward_verdict = report_forward(forward)

    if args.json:
        args.json.write_text(json.dumps({"machine": facts, "loads": loads, "pycaffe_skipped": why_not or None,
                                         "load_verdict": load_verdict, "forward": forward,
                                         "forward_verdict": forward_verdict}, indent=2))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
