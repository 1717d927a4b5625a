"""parity's speed and memory, measured: one command, every measurement, recorded in benchmarks/RESULTS.json.

    python3 benchmarks/run.py [--repeat 3] [--forward-repeat 7] [--pytest-repeat 3] [--workers 2]

This file measures; it states nothing. The run is one typed record (record.Run), saved whole to
RESULTS.json; benchmarks/render.py turns that record into RESULTS.md, and run.py calls it once the
record is saved, so one command still leaves both files. Rewording the report is a re-render
(`python3 benchmarks/render.py`), never a re-measurement; targets.py judges the run.

Every measurement runs in a fresh subprocess (warm page cache, fresh Python and TensorFlow state),
so its peak RSS (ru_maxrss from os.wait4) is its own, and the CPU time other processes took
meanwhile (from /proc/stat) says how disturbed it was. The measurements:

1. Caffemodel load (VGG-19): parity memory-maps the file and returns numpy views; real pycaffe's
   `caffe.Net(prototxt, caffemodel)` and the protobuf route (ParseFromString + np.array) are the baselines.
2. All-layer capture: one multi-output model returns every layer's output in one forward pass, against
   the plain forward; one truncated model per output (what per-layer probing does) is timed on a subset.
3. End-to-end `parity check` for every fixture, after one warm-up step that builds all weights.
3b. VGG-19's check under the fixed rule and under the noise rule (float64 twin run, and cached).
3c. Scale: chain nets of SCALE_SIZES layers (prototxt + caffemodel converted, V1 prototxt, frozen graph)
   with the check's bookkeeping.
4. Peak RSS: every subprocess above records its own (for pytest, the largest process of its tree).
5. The parity suite under `pytest -n 0` and `-n WORKERS` on the whole zoo, with a timeline (start-up,
   tests, shut-down, each worker's groups), and `-n WORKERS` once more with TensorFlow's thread pools
   split between the workers (TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS).

Progress lines go to stderr.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import render
from record import (
    CACHED,
    CHAIN_FORMS,
    FIXED,
    MEASURING,
    PROTOBUF,
    PYCAFFE,
    READ_ALL,
    SERIAL,
    VIEWS,
    Chain,
    ChainRun,
    Check,
    Forward,
    Load,
    LoadRun,
    Machine,
    PytestConfig,
    PytestProcess,
    PytestRun,
    Rule,
    Run,
    Settings,
    decode,
    parallel_label,
    save,
    split_label,
    split_threads,
)
from targets import DISTURBED, targets

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PROBES = BENCH / "probes.py"
CAFFE_PYTHON = Path(os.environ.get("PARITY_CAFFE_DIR", REPO / ".cache" / "caffe")) / "venv" / "bin" / "python"
ENV = {**os.environ, "GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "2"}
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
SCALE_SIZES = (10_000, 20_000)  # layers of the chain nets; the second twice the first
SCALE_LIGHT_REPEAT = 3  # runs of the V1 and frozen-graph chains at least (about a second each): median

_START = time.perf_counter()


def say(message: str) -> None:
    """One progress line on stderr, with the time since the run began."""
    print(f"[{time.perf_counter() - _START:6.1f} s] {message}", file=sys.stderr, flush=True)


# -- subprocesses -----------------------------------------------------------------------------------
def _busy_ticks() -> int:
    """CPU ticks the whole machine has spent busy (every process, every core) since boot."""
    with open("/proc/stat") as fh:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fh.readline().split()[1:9])
    return user + nice + system + irq + softirq + steal


@dataclass
class Child:
    """One finished subprocess: exit code, wall and CPU seconds, peak RSS, and what else ran meanwhile."""

    argv: list[str]
    rc: int
    wall_s: float
    cpu_s: float  # its own and its reaped descendants' user + system time
    maxrss_kib: int  # the largest process of its tree (Linux reports the maximum, not the sum)
    foreign_cpu_s: float  # CPU seconds other processes took while it ran
    stdout: str = field(repr=False, default="")
    stderr: str = field(repr=False, default="")

    @property
    def disturbance(self) -> float:
        """Other processes' CPU as a share of the machine's capacity during this run."""
        return self.foreign_cpu_s / (self.wall_s * CORES) if self.wall_s else 0.0

    def last_json(self) -> dict:
        """The JSON line a probe or harness printed last."""
        return json.loads(self.stdout.strip().splitlines()[-1])


def run_child(argv: list[str], env: dict | None = None) -> Child:
    """Run argv from the repository root; os.wait4 gives this child's own rusage (peak RSS, CPU)."""
    hz = os.sysconf("SC_CLK_TCK")
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        ticks, t0 = _busy_ticks(), time.perf_counter()
        proc = subprocess.Popen(argv, cwd=REPO, env=env or ENV, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        busy = (_busy_ticks() - ticks) / hz
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; Popen must not wait again
        out.seek(0), err.seek(0)
        cpu = usage.ru_utime + usage.ru_stime
        return Child(argv, proc.returncode, wall, cpu, usage.ru_maxrss, max(0.0, busy - cpu), out.read(), err.read())


def probe(*args: str, env: dict | None = None) -> tuple[dict, Child]:
    """Run one benchmarks/probes.py command; its JSON result and the subprocess facts."""
    child = run_child([sys.executable, str(PROBES), *args], env=env)
    if child.rc != 0:
        raise RuntimeError(f"probe {' '.join(args)} failed (rc {child.rc}):\n{child.stderr[-3000:]}")
    return child.last_json(), child


def measured(kind: type, result: dict, child: Child, **extra: Any) -> Any:
    """A record of `kind` from what a subprocess printed and the facts of the subprocess itself."""
    return decode(kind, {**result, "wall_s": child.wall_s, "maxrss_kib": child.maxrss_kib,
                         "disturbance": child.disturbance, **extra})


def median_by(runs: list, key: str) -> Any:
    """The run whose `key` is the median (the upper one of an even count): a real run, not a blend."""
    return sorted(runs, key=lambda r: getattr(r, key))[len(runs) // 2]


# -- the machine ---------------------------------------------------------------------------------------
def _version(*dists: str) -> str:
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "not installed"


def _proc_field(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.split(":")[0].strip() == key:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _os_name() -> str:
    os_name = platform.system()
    try:
        release = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
        os_name = release.get("PRETTY_NAME", os_name).strip('"')
    except OSError:
        pass
    return f"{os_name}, {platform.system()} {platform.release()} {platform.machine()}"


def cpu_model() -> str:
    return _proc_field("/proc/cpuinfo", "model name") or platform.processor() or "unknown"


def machine_facts(started: datetime.datetime, load_at_start: tuple[float, float, float]) -> Machine:
    """What the numbers were measured on (read without importing TensorFlow into this process), at the end."""
    mem_kib = _proc_field("/proc/meminfo", "MemTotal")
    return Machine(date=started.strftime("%Y-%m-%d %H:%M:%S %Z"),
                   date_utc=started.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
                   cpu=cpu_model(), cores=os.cpu_count() or 1, usable_cores=CORES,
                   ram_gib=round(int(mem_kib.split()[0]) / 2**20, 1) if mem_kib else None, os=_os_name(),
                   python=platform.python_version(), tensorflow=_version("tensorflow", "tensorflow-cpu"),
                   keras=_version("keras"), numpy=_version("numpy"), pytest_xdist=_version("pytest-xdist"),
                   load_average_at_start=load_at_start, load_average_at_end=os.getloadavg(),
                   run_s=time.perf_counter() - _START)


# -- 1. caffemodel load ---------------------------------------------------------------------------
# Each loader: (imports, load statement); argv: prototxt caffemodel. The snippet prints one JSON line.
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
    VIEWS: (
        "from parity.caffe.reading.caffemodel import read_caffemodel",
        "w = read_caffemodel(path)"),
    READ_ALL: (
        "from parity.caffe.reading.caffemodel import read_caffemodel",
        "w = read_caffemodel(path); total = sum(float(a.sum()) for bs in w.blobs.values() for a in bs)"),
    PYCAFFE: (
        "import caffe",
        "net = caffe.Net(prototxt, path, caffe.TEST)"),
    PROTOBUF: (
        "import numpy as np; from parity.caffe.schema import caffe_pb2",
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


def bench_loads(prototxt: str, caffemodel: str, repeat: int) -> tuple[dict[str, Load], str]:
    """Median load seconds, peak-RSS growth and whole-process peak RSS per loader, interleaved.

    Why: parity's claim is that reading a caffemodel costs next to nothing and copies nothing. The
    load alone is timed (after imports); peak-RSS growth is ru_maxrss after minus before the load.
    Loaders take turns, so a burst of load on the machine hits them alike.
    """
    caffe_py, why_not = caffe_python()
    runs: dict[str, list[LoadRun]] = {name: [] for name in LOADERS if caffe_py or name != PYCAFFE}
    for i in range(repeat):
        for name in runs:
            say(f"caffemodel load {i + 1}/{repeat}: {name}")
            imports, load = LOADERS[name]
            python = caffe_py if name == PYCAFFE else sys.executable
            child = run_child([python, "-c", HARNESS.format(imports=imports, load=load), prototxt, caffemodel])
            if child.rc != 0:
                raise RuntimeError(f"{name} subprocess failed (rc {child.rc}):\n{child.stderr[-2000:]}")
            runs[name].append(decode(LoadRun, {**child.last_json(), "maxrss_kib": child.maxrss_kib,
                                               "disturbance": child.disturbance}))
    loads = {name: Load(seconds=statistics.median(r.seconds for r in rs),
                        rss_growth_kib=statistics.median(r.rss_growth_kib for r in rs),
                        maxrss_kib=max(r.maxrss_kib for r in rs), runs=rs) for name, rs in runs.items()}
    return loads, why_not


# -- 2. capture vs plain forward ------------------------------------------------------------------
def bench_forward(repeat: int, every: int) -> Forward:
    """VGG-19 plain forward vs all-layer capture (interleaved medians), per-layer truncation extrapolated.

    Why: the one-pass capture is what makes checking every layer affordable; it should cost about
    one forward pass, where per-layer truncation costs one pass per output.
    """
    say(f"forward: VGG-19 plain vs capture ({repeat} each) and per-layer truncation (every {every}th output)")
    return measured(Forward, *probe("forward", str(repeat), str(every)))


# -- 3. end-to-end checks -------------------------------------------------------------------------
def bench_checks(fixtures: list[str], repeat: dict[str, int]) -> dict[str, Check]:
    """`parity check --model NAME -q` for every fixture, each in its own process, weights prebuilt.

    Why: this is what a user waits for. check_s is everything after the imports (the phases say
    where it goes); the process's wall time adds Python start-up and importing TensorFlow. A fixture
    that cannot be checked (no references, a bug) is said on stderr and left out.
    """
    results = {}
    for n, name in enumerate(fixtures, 1):
        times = repeat.get(name, 1)
        runs = []
        for i in range(times):
            say(f"check {n}/{len(fixtures)}: {name}" + (f" (run {i + 1}/{times})" if times > 1 else ""))
            try:
                runs.append(measured(Check, *probe("check", name)))
            except RuntimeError as exc:
                say(f"  ERROR: {str(exc).strip().splitlines()[-1]}")
                break
        if runs:
            results[name] = replace(median_by(runs, "check_s"), runs=[r.check_s for r in runs])
            if results[name].status != "pass":
                say(f"  WARNING: {name} does not pass: {results[name].verdicts}")
    return results


# -- 3b. the noise rule's cost ------------------------------------------------------------------------
RULES = {FIXED: ("fixed", {}), MEASURING: ("noise", {"PARITY_NOISE_CACHE": "0"}), CACHED: ("noise", {})}


def bench_rules(repeat: int) -> dict[str, Rule]:
    """VGG-19 `parity check` under the fixed rule (no float64 twin) and the noise rule, the twin run
    every time (PARITY_NOISE_CACHE=0) and with its result cached from an earlier run; interleaved.

    Why: the noise rule runs the model once more in float64 per sample, the first time; its cost in time
    and memory is what the calibrated verdict adds. The cache is keyed by what the twin explains, so
    every later check of the same model, weights and input reads it.
    """
    say("rules: filling the noise cache for VGG-19 (not timed)")
    probe("check", "vgg19", "noise")
    runs: dict[str, list[Check]] = {label: [] for label in RULES}
    for i in range(repeat):
        for label, (rule, extra) in RULES.items():
            say(f"rules {i + 1}/{repeat}: VGG-19 check, {label}")
            runs[label].append(measured(Check, *probe("check", "vgg19", rule, env={**ENV, **extra})))
    return {label: Rule(check_s=statistics.median(r.check_s for r in rs),
                        maxrss_kib=statistics.median(r.maxrss_kib for r in rs),
                        runs=[r.check_s for r in rs], rss_runs=[r.maxrss_kib for r in rs],
                        status=rs[0].status, verdict=rs[0].verdicts[0]) for label, rs in runs.items()}


# -- 3c. scale: chain nets ------------------------------------------------------------------------------
def bench_scale(repeat: int, sizes: tuple[int, ...] = SCALE_SIZES) -> dict[str, Chain]:
    """Chain nets of `sizes` layers (Input, then InnerProduct and in-place ReLU taking turns on a tiny
    blob, so the weights are tiny and the net's structure is what costs), in every CHAIN_FORMS form. Each
    then does the check's bookkeeping: parents_of and the in-place chain of every entry, and
    locate_first_divergence() on results failing from the third entry on. The files are written by one
    process, measured in another (fresh), runs interleaved.

    Why: a net twice as deep should cost twice as much, not four times. The peak RSS compared is its growth
    above ru_maxrss after the imports (TensorFlow's would otherwise flatten any ratio). The caffe chains
    run `repeat` times, the others at least SCALE_LIGHT_REPEAT times (they take a second).
    """
    with tempfile.TemporaryDirectory(prefix="parity-scale-") as folder:
        made = {f"{kind}-{n}": make_chain(Path(folder) / f"{kind}-{n}", kind, n) for kind in CHAIN_FORMS for n in sizes}
        runs: dict[str, list[ChainRun]] = {key: [] for key in made}
        rounds = max(repeat, SCALE_LIGHT_REPEAT)
        for i in range(rounds):
            for key, (kind, n, _) in made.items():
                if kind == "caffe" and i >= repeat:
                    continue
                say(f"scale {i + 1}/{rounds}: {n}-layer {kind} chain")
                result, child = probe("scale", kind, str(Path(folder) / key))
                growth = result["peak_kib"] - result["baseline_kib"]
                runs[key].append(measured(ChainRun, result, child, growth_kib=growth))
    return {key: chain_of(kind, n, size, runs[key]) for key, (kind, n, size) in made.items()}


def make_chain(where: Path, kind: str, n: int) -> tuple[str, int, int]:
    """Write one chain net (in a process of its own: what building it cost is no part of the measurement)."""
    where.mkdir()
    say(f"scale: writing a {n}-layer {kind} chain (not timed)")
    made, _ = probe("scale-make", str(where), kind, str(n))
    return kind, n, made["bytes"]


def chain_of(kind: str, n: int, size: int, runs: list[ChainRun]) -> Chain:
    """One chain's record: the median run's figures (by total time), every run, the median RSS growth."""
    median = median_by(runs, "total_s")
    return Chain(kind=kind, n=n, bytes=size, runs=runs, total_s=median.total_s, cpu_s=median.cpu_s,
                 phases_s=median.phases_s, phases_cpu_s=median.phases_cpu_s, baseline_kib=median.baseline_kib,
                 peak_kib=median.peak_kib, maxrss_kib=median.maxrss_kib, disturbance=median.disturbance,
                 totals=[r.total_s for r in runs], growth_kib=statistics.median(r.growth_kib for r in runs),
                 layers=median.layers if median.layers is not None else median.ops,
                 keras_map_graph_s=median.keras_map_graph_s)


# -- 5. pytest -n 0 vs -n WORKERS -----------------------------------------------------------------
def _pytest_once(label: str, dist: list[str], extra_env: dict) -> PytestRun:
    """One `python -m pytest parity/ -q -p no:cacheprovider DIST` run, with its per-process timeline."""
    with tempfile.TemporaryDirectory(prefix="parity-bench-") as folder:
        env = {**ENV, **extra_env, "PARITY_BENCH_TIMELINE": folder,
               "PYTHONPATH": os.pathsep.join(p for p in (str(BENCH), os.environ.get("PYTHONPATH")) if p)}
        spawned = time.time()
        child = run_child([sys.executable, "-m", "pytest", "parity/", "-q", "-p", "no:cacheprovider",
                           "-p", "pytest_timeline", *dist], env=env)
        exited = time.time()
        timelines = [json.loads(p.read_text()) for p in sorted(Path(folder).glob("*.json"))]
    lines = [line for line in child.stdout.splitlines() if line.strip()]
    summary = lines[-1].strip("= ") if lines else "(no output)"
    if child.rc not in (0, 1):  # 1: some tests failed, the timing still stands (and the table says so)
        raise RuntimeError(f"pytest {label} failed (rc {child.rc}): {summary}\n"
                           f"{child.stdout[-3000:]}{child.stderr[-2000:]}")
    return PytestRun(label=label, rc=child.rc, wall_s=child.wall_s, cpu_s=child.cpu_s, maxrss_kib=child.maxrss_kib,
                     disturbance=child.disturbance, summary=summary, **timeline_phases(timelines, spawned, exited))


def timeline_phases(timelines: list[dict], spawned: float, exited: float) -> dict[str, Any]:
    """Split a pytest run's wall time: start-up until the first test, the tests, after the last test."""
    runners = [t for t in timelines if t["groups"]]
    if not runners:
        return {"processes": []}
    first = min(g["start"] for t in runners for g in t["groups"].values())
    last = max(g["end"] for t in runners for g in t["groups"].values())
    processes = [timeline_process(t, spawned) for t in sorted(timelines, key=lambda t: t["role"])]
    return {"startup_s": first - spawned, "tests_s": last - first, "shutdown_s": exited - last, "processes": processes}


def timeline_process(t: dict, spawned: float) -> PytestProcess:
    """One process's timeline file (benchmarks/pytest_timeline.py), in seconds after the spawn."""
    groups = sorted(t["groups"].items(), key=lambda kv: kv[1]["start"])
    return PytestProcess(role=t["role"], maxrss_kib=t["maxrss_kib"],
                         marks_s={mark: round(at - spawned, 3) for mark, at in t["marks"].items()},
                         ready_s=t["marks"].get("collected", t["marks"]["configured"]) - spawned,
                         startup_cpu_s=t.get("cpu", {}).get("collected"),
                         busy_s=sum(g["busy_s"] for _, g in groups),
                         last_test_s=max((g["end"] for _, g in groups), default=spawned) - spawned,
                         groups=[(name.removeprefix("parity-"), round(g["busy_s"], 2)) for name, g in groups])


def bench_pytest(repeat: int, workers: int) -> dict[str, PytestConfig]:
    """Wall time of the parity suite on the whole zoo under -n 0 and -n WORKERS, runs interleaved.

    Why: the plugin groups each (model, sample) on one worker, so xdist should cut the suite's time.
    By default every worker's TensorFlow sizes its thread pools to the whole machine, so WORKERS
    workers oversubscribe the cores; the third configuration splits the pools instead, to measure
    whether that matters (TensorFlow reads these variables when it starts its runtime).
    """
    threads = str(split_threads(workers, CORES))
    configs = {SERIAL: (["-n", "0"], {}), parallel_label(workers): (["-n", str(workers)], {}),
               split_label(workers, CORES): (["-n", str(workers)], {"TF_NUM_INTRAOP_THREADS": threads,
                                                                     "TF_NUM_INTEROP_THREADS": threads})}
    runs: dict[str, list[PytestRun]] = {label: [] for label in configs}
    for i in range(repeat):
        for label, (dist, extra_env) in configs.items():
            say(f"pytest {i + 1}/{repeat}: parity/ {label} (about half a minute)")
            run = _pytest_once(label, dist, extra_env)
            say(f"  {run.wall_s:.1f} s wall, {run.summary}" + (" (TESTS FAILED)" if run.rc else "")
                + (f"; other processes took {100 * run.disturbance:.0f}% of the machine"
                   if run.disturbance > DISTURBED else ""))
            runs[label].append(run)
    return {label: PytestConfig(wall_s=statistics.median(r.wall_s for r in rs), median_run=median_by(rs, "wall_s"),
                                walls=[r.wall_s for r in rs]) for label, rs in runs.items()}


# -- the run --------------------------------------------------------------------------------------
def measure(settings: Settings) -> Run:
    """Every measurement, in order, into one Run."""
    started, load_at_start = datetime.datetime.now().astimezone(), os.getloadavg()
    say(f"parity benchmarks on {cpu_model()}, {CORES} cores, load average {load_at_start[0]:.2f}")
    say("warm-up: building every fixture's weights and reading every file once (not timed)")
    warm, _ = probe("warm")
    loads, why_not = bench_loads(warm["vgg19_prototxt"], warm["vgg19_caffemodel"], settings.repeat)
    forward = bench_forward(settings.forward_repeat, settings.every)
    checks = bench_checks(warm["fixtures"], {"vgg19": settings.repeat})
    rules = bench_rules(settings.repeat)
    scale = bench_scale(settings.scale_repeat)
    pytest_runs = bench_pytest(settings.pytest_repeat, settings.workers)
    return Run(machine=machine_facts(started, load_at_start), settings=settings,
               caffemodel_bytes=Path(warm["vgg19_caffemodel"]).stat().st_size, loads=loads,
               pycaffe_skipped=why_not or None, forward=forward, checks=checks, rules=rules, scale=scale,
               pytest=pytest_runs)


def print_targets(run: Run) -> None:
    """The verdicts on stdout, for whoever ran the command."""
    rows = targets(run)
    width = max(len(t.measure) for t in rows)
    print(f"\n{'measure':<{width}}  {'value':<48} {'target':<8} met")
    for t in rows:
        print(f"{t.measure:<{width}}  {t.value:<48} {t.target:<8} {'yes' if t.met else 'NO'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3,
                        help="fresh-process loads per loader, and VGG-19 checks (median)")
    parser.add_argument("--forward-repeat", type=int, default=7, help="timed forward passes per model (median)")
    parser.add_argument("--every", type=int, default=5, help="per-layer truncation: measure every Nth output")
    parser.add_argument("--pytest-repeat", type=int, default=3, help="pytest runs per configuration (median)")
    parser.add_argument("--scale-repeat", type=int, default=1, help="fresh-process runs per chain net (median)")
    parser.add_argument("--workers", type=int, default=CORES,
                        help="xdist workers to compare with -n 0 (default: one per core, what -n auto starts)")
    parser.add_argument("--json", type=Path, default=BENCH / "RESULTS.json", help="the run (replaced atomically)")
    parser.add_argument("--markdown", type=Path, default=BENCH / "RESULTS.md",
                        help="the report rendered from it (replaced atomically)")
    args = parser.parse_args()
    run = measure(Settings(repeat=args.repeat, forward_repeat=args.forward_repeat, every=args.every,
                           pytest_repeat=args.pytest_repeat, scale_repeat=args.scale_repeat, workers=args.workers))
    save(run, args.json)
    render.write(run, args.markdown)
    print_targets(run)
    print(f"\nwrote {args.json} and rendered {args.markdown} from it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
