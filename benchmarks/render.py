"""RESULTS.md from RESULTS.json: the report of one benchmark run, rendered without measuring anything.

    python3 benchmarks/render.py [--json benchmarks/RESULTS.json] [--markdown benchmarks/RESULTS.md]

Why apart from run.py: measuring takes minutes of both cores, while the wording changes often; a
rewording is a re-render of the same run. Every figure in the report is computed from the Run (never
from the rendering machine, never typed in), so the report cannot state a number the run did not
measure; tests/test_benchmarks.py holds the committed RESULTS.md to what this renders from the
committed RESULTS.json, and the README's benchmark table to the same targets.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from record import CHAIN_FORMS, FIXED, READ_ALL, VIEWS, PytestProcess, Run, load
from targets import DISTURBED, XDIST_TARGET, Target, layers, mb, scale_ratios, targets, without_keras, xdist_ceiling

from parity.atomic import atomic_path

BENCH = Path(__file__).resolve().parent
LIGHT_GROUP_S = 0.5  # pytest groups busy less than this are counted, not named
SPLIT_NOISE = 0.10  # a thread split changing -n WORKERS's wall by less than this share is noise


def markdown(run: Run) -> str:
    """The whole report: machine, verdicts, each measurement's details, then what the numbers say."""
    sections = (header, machine_table, targets_section, loads_section, forward_section, checks_section,
                rules_section, scale_section, rss_section, pytest_section, findings_section)
    return "\n".join(line for section in sections for line in section(run)) + "\n"


def write(run: Run, path: Path) -> None:
    """RESULTS.md, replaced whole or not at all."""
    with atomic_path(path) as tmp:
        tmp.write_text(markdown(run), encoding="utf-8")


def readme_excerpt(run: Run) -> str:
    """What the README's Benchmarks section quotes from the run: a line saying which run, and the targets."""
    m = run.machine
    return "\n".join([f"The run in `benchmarks/RESULTS.md` ({m.usable_cores} cores, {m.cpu}, TensorFlow "
                      f"{m.tensorflow}, one run of {m.run_s:.0f} s):", "", *target_table(targets(run))])


def header(run: Run) -> list[str]:
    m = run.machine
    date = m.date + (f" ({m.date_utc})" if not m.date.endswith("UTC") else "")
    return ["# parity benchmarks", "",
            f"Measured by `python3 benchmarks/run.py` on {date}, which records every measurement in `RESULTS.json`; "
            "this file is rendered from it by `python3 benchmarks/render.py`, and every figure in it is computed "
            "from that run. Targets are ratios to baselines measured in the same run."]


def machine_table(run: Run) -> list[str]:
    m = run.machine
    loads = "; ".join(", ".join(f"{v:.2f}" for v in averages)
                      for averages in (m.load_average_at_start, m.load_average_at_end))
    return ["", "## Machine", "", "| | |", "|---|---|", f"| CPU | {m.cpu} |",
            f"| cores | {m.cores} ({m.usable_cores} usable) |", f"| RAM | {m.ram_gib} GiB |", f"| OS | {m.os} |",
            f"| Python, TensorFlow, Keras, NumPy, pytest-xdist | {m.python}, {m.tensorflow}, {m.keras}, {m.numpy}, "
            f"{m.pytest_xdist} |", f"| load average (1, 5, 15 min) at start, at end | {loads} |",
            f"| run took | {m.run_s:.0f} s |"]


def targets_section(run: Run) -> list[str]:
    return ["", "## Targets", "", *target_table(targets(run))]


def target_table(rows: list[Target]) -> list[str]:
    return ["| measure | value | target | met |", "|---|---|---|---|",
            *(f"| {t.measure} | {t.value} | {t.target} | {met_cell(t)} |" for t in rows)]


def met_cell(t: Target) -> str:
    """yes, or no with how far off; the note after either."""
    verdict = "yes" if t.met else f"**no** (by {100 * t.miss:.0f}%)"
    return f"{verdict} ({t.note})" if t.note else verdict


def loads_section(run: Run) -> list[str]:
    size = run.caffemodel_bytes
    out = ["", f"## 1. Caffemodel load (VGG-19, {size / 1e6:.0f} MB)", "",
           f"A fresh process per load, loaders interleaved, median of {len(run.loads[VIEWS].runs)}; the load alone "
           "is timed, after the imports.", "",
           "| loader | load s | peak-RSS growth MB | % of file | process peak RSS MB |", "|---|---|---|---|---|"]
    for name, r in run.loads.items():
        growth = r.rss_growth_kib * 1024
        out.append(f"| {name} | {r.seconds:.4f} | {growth / 1e6:,.1f} | {100 * growth / size:.1f}% "
                   f"| {mb(r.maxrss_kib)} |")
    if run.pycaffe_skipped:
        out.append(f"| pycaffe caffe.Net | skipped: {run.pycaffe_skipped} | | | |")
    return out


def forward_section(run: Run) -> list[str]:
    fw = run.forward
    return ["", "## 2. All-layer capture vs plain forward vs per-layer truncation (VGG-19, batch 1)", "",
            f"One process; after one first call each, plain and capture interleaved, median of {len(fw.plain_runs)}.",
            "", "| what | seconds |", "|---|---|",
            f"| read the caffemodel (views) | {fw.read_caffemodel_s:.4f} |",
            f"| convert (Keras model + weights) | {fw.convert_s:.2f} |",
            f"| plain model, first call (traces) | {fw.plain_first_call_s:.3f} |",
            f"| capture model, first call (traces) | {fw.capture_first_call_s:.3f} |",
            f"| **plain forward** | **{fw.plain_s:.3f}** |",
            f"| **all-layer capture ({fw.outputs} outputs, one pass)** | **{fw.capture_s:.3f}** |",
            f"| one truncated model per output, first call each (includes tracing; extrapolated from {fw.subset} of "
            f"{fw.outputs}) | {fw.truncation_first_call_s:.2f} "
            f"({fw.truncation_first_call_s / fw.capture_s:.0f}x the capture) |",
            f"| the same, already traced | {fw.truncation_steady_s:.2f} "
            f"({fw.truncation_steady_s / fw.capture_s:.1f}x the capture) |",
            "", f"Process peak RSS: {mb(fw.maxrss_kib)} MB."]


def tf_import_s(run: Run) -> float:
    """Importing TensorFlow (and Keras), the median over the checks' fresh processes."""
    return statistics.median(c.import_s for c in run.checks.values())


def checks_section(run: Run) -> list[str]:
    checks = run.checks
    out = ["", "## 3. End-to-end `parity check --model NAME -q`, every fixture", "",
           "Weights were built (and every file read once) before any timing. `check` is everything after the "
           "imports, as `parity check` runs it: setup (fixture, references, tolerances), provenance (what is left "
           "before conversion starts; the sha256 of the prototxt and caffemodel against each manifest runs beside the "
           "conversion), conversion (read, convert, capture model), forward + compare (per sample: the eager capture "
           "pass and every entry compared), report. `process` adds Python start-up and importing TensorFlow "
           f"(about {tf_import_s(run):.1f} s). VGG-19: median of {len(checks['vgg19'].runs)} runs.", "",
           "| fixture | entries | check s | setup | provenance | convert | forward + compare | report | process s "
           "| peak RSS MB | verdict |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, c in checks.items():
        p = c.phases
        out.append(f"| {name} | {c.entries} | **{c.check_s:.2f}** | {p.setup_s:.2f} | {p.provenance_s:.2f} "
                   f"| {p.convert_s:.2f} | {p.forward_compare_s:.2f} | {p.report_s:.2f} | {c.wall_s:.1f} "
                   f"| {mb(c.maxrss_kib)} | {c.status} |")
    out.append(f"| **all {len(checks)}** | {sum(c.entries for c in checks.values())} "
               f"| **{sum(c.check_s for c in checks.values()):.1f}** | | | | | "
               f"| {sum(c.wall_s for c in checks.values()):.0f} | {mb(max(c.maxrss_kib for c in checks.values()))} | |")
    return out + vgg19_baselines(run)


def vgg19_baselines(run: Run) -> list[str]:
    """VGG-19's check against the run's other baselines, beside its target."""
    fw, v = run.forward, run.checks["vgg19"]
    load_all = run.loads[READ_ALL].seconds
    cold = fw.read_caffemodel_s + fw.convert_s + fw.plain_first_call_s
    return ["", "VGG-19's check against other in-run baselines (for information):", "",
            f"- with the load that reads every value ({load_all:.3f} s): {v.check_s:.2f} / ({load_all:.3f} + "
            f"{fw.plain_s:.3f}) = {v.check_s / (load_all + fw.plain_s):.1f}x;",
            f"- against what running the converted model once from scratch costs (read + convert + first plain "
            f"call, {cold:.2f} s): {v.check_s / cold:.2f}x;",
            f"- the check's conversion phase alone is {v.phases.convert_s:.2f} s = "
            f"{v.phases.convert_s / (run.loads[VIEWS].seconds + fw.plain_s):.0f}x the (load + forward) baseline."]


def rules_section(run: Run) -> list[str]:
    fixed = run.rules[FIXED]
    out = ["", "## 3b. The noise rule's cost (VGG-19 `parity check -q`)", "",
           f"Fresh processes, the {len(run.rules)} configurations interleaved, median of {len(fixed.runs)}. The fixed "
           "rule is `--atol`/`--rtol` at parity's defaults (its verdict names them) and runs no float64 twin. The "
           "noise rule measures each output's noise by running the model once more in float64, the first time "
           "(`PARITY_NOISE_CACHE=0` makes every run a first); afterwards it reads the result from "
           "`.cache/parity/noise/`, keyed by the sha256 of the float32 outputs it explains.", "",
           "| configuration | check s (runs) | vs fixed | peak RSS MB | vs fixed | verdict |",
           "|---|---|---|---|---|---|"]
    for label, r in run.rules.items():
        out.append(f"| {label} | {r.check_s:.2f} ({', '.join(f'{x:.2f}' for x in r.runs)}) | "
                   f"{r.check_s / fixed.check_s:.2f}x | {mb(r.maxrss_kib)} | "
                   f"{r.maxrss_kib / fixed.maxrss_kib:.2f}x | {r.verdict} |")
    return out


def scale_section(run: Run) -> list[str]:
    sizes = sorted({c.n for c in run.scale.values()})
    medians = ", ".join(f"{len(run.chain_pair(kind)[0].runs)} ({kind})" for kind in CHAIN_FORMS)
    out = ["", f"## 3c. Scale: chain nets of {' and '.join(f'{n:,}' for n in sizes)} layers", "",
           "Input, then InnerProduct and in-place ReLU taking turns on a tiny blob (names of a fixed width, so the "
           "file of twice the layers is twice as large): the weights are tiny, so what grows is the net's structure. "
           "The files are written by one process and measured in a fresh one, after the imports (whose heap is then "
           "frozen out of the garbage collector's view: a full collection traverses all of TensorFlow's objects, a "
           "fixed cost that says nothing about growth), sizes and forms interleaved, median of "
           f"{medians}. Every form ends with the check's bookkeeping: parents_of and the in-place chain of every "
           "entry (blob granularity), and locate_first_divergence() with every entry from the third on failing (the "
           "rest downstream: the worst case). Peak-RSS growth is ru_maxrss at the end minus after the imports.", "",
           "| chain | layers | file KB | total s (runs) | phases s | peak-RSS growth MB | process peak RSS MB |",
           "|---|---|---|---|---|---|---|"]
    for c in run.scale.values():
        phases = ", ".join(f"{name} {seconds:.2f}" + (f" (Keras's map_graph {c.keras_map_graph_s:.2f} of it)"
                                                      if name == "convert" and c.keras_map_graph_s is not None else "")
                           for name, seconds in c.phases_s.items())
        out.append(f"| {c.kind}: {CHAIN_FORMS[c.kind].does} | {c.layers:,} | {c.bytes / 1e3:,.0f} | "
                   f"**{c.total_s:.2f}** ({', '.join(f'{t:.2f}' for t in c.totals)}) | {phases} | "
                   f"{mb(c.growth_kib)} | {mb(c.maxrss_kib)} |")
    return out + keras_share(run)


def keras_share(run: Run) -> list[str]:
    """What the larger Caffe chain's time is: mostly Keras building the model."""
    big = run.chain_pair("caffe")[1]
    share = big.phases_s.get("convert", 0) / big.total_s
    return ["", f"Of the {big.n:,}-layer chain's {big.total_s:.1f} s, {100 * share:.0f}% is `convert_net`: Keras "
            "building one layer per Caffe layer, then the functional model, whose validation (`map_graph`) checks "
            "that names are unique with `all_names.count(name)` for every name, quadratic in the layers. Keras also "
            "walks the functional graph recursively, a frame per layer of depth; `convert_net` raises Python's "
            "recursion limit for its own duration (`recursion_room`), or a chain deeper than Python's default limit "
            "would stop with RecursionError inside `keras.Model()`."]


def rss_section(run: Run) -> list[str]:
    imported = statistics.median(c.baseline_kib for c in run.scale.values()) * 1024 / 1e9
    out = ["", "## 4. Peak RSS", "",
           "ru_maxrss of each subprocess (os.wait4): its largest resident set, including the interpreter and its "
           f"imports (with TensorFlow about {imported:.1f} GB before any work, in the chain nets' processes); for "
           "pytest the largest single process of the tree.", "", "| process | peak RSS MB |", "|---|---|"]
    out += [f"| caffemodel load: {name} | {mb(r.maxrss_kib)} |" for name, r in run.loads.items()]
    out.append("| VGG-19 forward benchmark (converted model, capture, truncated models) | "
               f"{mb(run.forward.maxrss_kib)} |")
    big = max(run.checks, key=lambda name: run.checks[name].maxrss_kib)
    out.append(f"| `parity check`, largest ({big}) | {mb(run.checks[big].maxrss_kib)} |")
    out.append(f"| `parity check`, median over fixtures | "
               f"{mb(statistics.median(c.maxrss_kib for c in run.checks.values()))} |")
    for label, r in run.pytest.items():
        each = ", ".join(f"{p.role} {mb(p.maxrss_kib)}" for p in r.median_run.processes)
        out.append(f"| pytest {label} | {mb(r.median_run.maxrss_kib)} ({each}) |")
    return out


def pytest_section(run: Run) -> list[str]:
    out = ["", f"## 5. `pytest parity/ -q -p no:cacheprovider` on the whole zoo: -n 0 vs -n {run.settings.workers}", "",
           f"Runs interleaved, median of {len(run.serial().walls)}. A timeline plugin "
           "(`benchmarks/pytest_timeline.py`, observing only) splits each run: start-up until the first test (Python, "
           "importing TensorFlow, spawning and starting workers, collection), the tests, and shut-down after the last "
           "test. Peak RSS is the largest single process.", "",
           "| configuration | wall s (runs) | start-up | tests | shut-down | CPU s | peak RSS MB | other load "
           "| pytest said |",
           "|---|---|---|---|---|---|---|---|---|"]
    for label, r in run.pytest.items():
        m = r.median_run
        out.append(f"| {label} | **{r.wall_s:.1f}** ({', '.join(f'{w:.1f}' for w in r.walls)}) | "
                   f"{m.startup_s or 0:.1f} | {m.tests_s or 0:.1f} | {m.shutdown_s or 0:.1f} | "
                   f"{m.cpu_s:.0f} | {mb(m.maxrss_kib)} | {100 * m.disturbance:.0f}% | {m.summary} |")
    out += ["", "Per process in each configuration's median run (ready: collection finished; busy: time inside "
            "tests; groups in the order run, seconds busy):", ""]
    out += [f"- {label}, {process_line(p)}" for label, r in run.pytest.items() for p in r.median_run.processes
            if p.groups or p.role == "controller"]
    return out


def process_line(p: PytestProcess) -> str:
    """One pytest process: when it was ready, how long it was busy and with which groups, its peak RSS."""
    line = f"{p.role}: ready at {p.ready_s:.1f} s"
    if p.groups:
        heavy = ", ".join(f"{g.removesuffix('-chelsea').removesuffix('-coffee')} {s:.1f}"
                          for g, s in p.groups if s >= LIGHT_GROUP_S)
        light = sum(1 for _, s in p.groups if s < LIGHT_GROUP_S)
        line += f", busy {p.busy_s:.1f} s, last test ended at {p.last_test_s:.1f} s: {heavy}"
        line += f" + {light} group{'s' if light > 1 else ''} under {LIGHT_GROUP_S} s" if light else ""
    return line + f"; peak RSS {mb(p.maxrss_kib)} MB"


def findings_section(run: Run) -> list[str]:
    """What the numbers say, every figure computed from this run."""
    lines = [scale_finding(run), vgg19_finding(run), *xdist_findings(run)]
    disturbed = [f"{label} ({100 * r.median_run.disturbance:.0f}%)" for label, r in run.pytest.items()
                 if r.median_run.disturbance > DISTURBED]
    if disturbed:
        lines.append(f"- Other processes took more than {100 * DISTURBED:.0f}% of the machine during: "
                     f"{', '.join(disturbed)}; those timings are noisy.")
    return ["", "## What the numbers say", "", *lines]


def scale_finding(run: Run) -> str:
    small, big, time_ratio, rss_ratio = scale_ratios(run, "caffe")
    own = [c.total_s - c.phases_s.get("convert", 0) for c in (small, big)]
    keras = [c.keras_map_graph_s or 0.0 for c in (small, big)]
    light = ", ".join(f"{kind} {scale_ratios(run, kind)[2]:.2f}x in time and {scale_ratios(run, kind)[3]:.2f}x "
                      "in memory" for kind in CHAIN_FORMS if kind != "caffe")
    return (f"- **Scale.** Twice the layers: {light}; the Caffe chain {time_ratio:.2f}x in time and {rss_ratio:.2f}x "
            f"in memory. Its phases other than `convert_net` (reading, the Net, the check's bookkeeping) took "
            f"{own[0]:.2f} s and {own[1]:.2f} s ({own[1] / own[0]:.2f}x); the conversion is Keras's work, and within "
            f"it the functional model's name check (`map_graph`) went from {keras[0]:.1f} s to {keras[1]:.1f} s, "
            f"quadratic; without it the chain took {without_keras(small, big):.2f}x. Nothing in parity's path does "
            "more than constant work per layer and blob, but even constant work costs a little more per item as the "
            f"working set outgrows the CPU caches (dict lookups of {layers(big.n)} names against {layers(small.n)}), "
            f"which puts linear work at {big.n / small.n:g}x or slightly above.")


def vgg19_finding(run: Run) -> str:
    fw, check = run.forward, run.checks["vgg19"]
    p, total = check.phases, check.check_s
    views, every = run.loads[VIEWS].seconds, run.loads[READ_ALL].seconds
    return ("- **VGG-19 check vs load + forward.** \"Caffemodel load\" here is what pycaffe's `caffe.Net(prototxt, "
            "caffemodel)` does, the baseline of section 1: a network holding the weights, ready to run. For parity "
            f"that is reading the caffemodel and converting it ({fw.read_caffemodel_s + fw.convert_s:.2f} s in "
            f"section 2). The check takes {total:.2f} s: conversion {p.convert_s:.2f} s (the provenance hashes run "
            f"beside it; {p.provenance_s:.2f} s before it), the eager capture pass plus comparing every entry "
            f"{p.forward_compare_s:.2f} s. Against the bare memory map plus the forward, which no check can match, "
            f"it is {total / (views + fw.plain_s):.0f}x; against the load that reads every value ({every:.2f} s) "
            f"plus the forward, {total / (every + fw.plain_s):.1f}x. The conversion copies the "
            f"{run.caffemodel_bytes / 1e6:.0f} MB of weights into memory TensorFlow owns.")


def xdist_findings(run: Run) -> list[str]:
    """-n WORKERS against -n 0: the phases, the ceiling, the workers side by side, fixed costs, TF threads."""
    s, q = run.serial().median_run, run.parallel().median_run
    if not (s.tests_s and q.tests_s):
        return []
    return [xdist_phases(run), *xdist_bound(run), xdist_side_by_side(run), *fixed_costs(run), *thread_split(run)]


def xdist_phases(run: Run) -> str:
    serial, parallel, workers = run.serial(), run.parallel(), run.settings.workers
    s, q = serial.median_run, parallel.median_run
    speedup = serial.wall_s / parallel.wall_s
    ideal = s.startup_s + s.tests_s / workers + s.shutdown_s
    verdict = "met" if speedup >= XDIST_TARGET else "not met"
    return (f"- **pytest -n {workers} vs -n 0: {speedup:.2f}x, {verdict}.** Under -n 0: start-up {s.startup_s:.1f} s, "
            f"tests {s.tests_s:.1f} s, shut-down {s.shutdown_s:.1f} s. Under -n {workers}: {q.startup_s:.1f} s, "
            f"{q.tests_s:.1f} s, {q.shutdown_s:.1f} s. Every process that runs tests imports TensorFlow once (about "
            f"{tf_import_s(run):.1f} s, while collecting the TensorFlow-graph fixture, or else in its first test); the "
            f"workers do it side by side, so it does not shrink. Counting wall time only, a perfect split of the test "
            f"phase would give {ideal:.1f} s, {serial.wall_s / ideal:.2f}x; the CPU count below says what the cores "
            "allow.")


def xdist_bound(run: Run) -> list[str]:
    bound, workers, cores = xdist_ceiling(run), run.settings.workers, run.machine.usable_cores
    if not bound:
        return []
    return [f"- **The ceiling on this machine: {bound.ceiling:.2f}x.** However the groups are split, -n {workers} has "
            f"to do the CPU work of -n 0 ({bound.serial_cpu_s:.1f} CPU s) plus one more start-up per extra worker "
            f"(Python, pytest, TensorFlow, collection: {bound.extra_startup_cpu_s:.1f} CPU s, measured in this run's "
            f"workers), and {cores} cores deliver {cores} CPU s per second: at least {bound.floor_s:.1f} s, against "
            f"{run.serial().wall_s:.1f} s for -n 0. The -n 0 run already kept {bound.serial_busy_cores:.2f} of the "
            f"{cores} cores busy (TensorFlow's thread pools, the provenance hashes beside each conversion): the faster "
            "-n 0 already is, through TensorFlow's own threads, the less there is for xdist to win, which is why the "
            "target is only that -n auto never be slower. The bound is generous: it ignores the controller and what "
            "processes sharing caches and memory bandwidth cost each other."]


def xdist_side_by_side(run: Run) -> str:
    serial, s, q = run.serial(), run.serial().median_run, run.parallel().median_run
    runners = [p for p in q.processes if p.groups]
    busy_serial = sum(p.busy_s for p in s.processes if p.groups)
    busy_parallel = sum(p.busy_s for p in runners)
    ends = sorted(p.last_test_s for p in runners)
    return (f"- **{len(runners)} workers on {run.machine.usable_cores} cores.** The workers were busy "
            f"{' and '.join(f'{p.busy_s:.1f}' for p in runners)} s, {busy_parallel:.1f} s in all against "
            f"{busy_serial:.1f} s under -n 0: the same groups take {100 * (busy_parallel / busy_serial - 1):.0f}% "
            "longer side by side, because under -n 0 TensorFlow's thread pools already spread convolutions over the "
            f"cores (the -n 0 run used {s.cpu_s:.0f} CPU s in {serial.wall_s:.1f} s). Groups are handed out "
            "costliest first (the plugin orders them by an estimate), and the workers' last tests ended "
            f"{ends[-1] - ends[0]:.1f} s apart.")


def fixed_costs(run: Run) -> list[str]:
    s, q = run.serial().median_run, run.parallel().median_run
    controller = next((p for p in q.processes if p.role == "controller"), None)
    if not controller:
        return []
    single = s.processes[0].marks_s
    return [f"- **Fixed costs.** The controller imports no TensorFlow (peak RSS {mb(controller.maxrss_kib)} MB) and "
            f"was ready at {controller.marks_s['configured']:.1f} s; workers let go of each model after its last test "
            "and freeze the heap before pytest's clean-up, so exits take a fraction of a second. What is left of -n "
            f"0's shut-down: {single['unconfigured'] - single['sessionfinish']:.1f} s summary (pytest's hypothesis "
            f"plugin imports hypothesis there), {single['atexit'] - single['unconfigured']:.1f} s clean-up, "
            f"{s.wall_s - single['atexit']:.1f} s interpreter exit."]


def thread_split(run: Run) -> list[str]:
    """Whether splitting TensorFlow's pools between the workers paid, and so what the plugin does."""
    parallel, split, workers = run.parallel(), run.split(), run.settings.workers
    if not split:
        return []
    if abs(parallel.wall_s - split.wall_s) < SPLIT_NOISE * parallel.wall_s:
        said = ("within this run's noise, so the plugin leaves TensorFlow's defaults alone. A split also costs where "
                "one worker is left alone with a big model at the end and could use every core.")
    elif split.wall_s > parallel.wall_s:
        said = "slower with the split, so the plugin leaves TensorFlow's defaults alone."
    else:
        said = f"faster with the split by more than {100 * SPLIT_NOISE:.0f}%: worth making the plugin's default."
    return [f"- **TensorFlow threads per worker.** -n {workers} took {parallel.wall_s:.1f} s with TensorFlow's "
            f"default pools (each worker as wide as the machine) and {split.wall_s:.1f} s with the pools split between "
            f"the workers ({parallel.median_run.cpu_s:.0f} vs {split.median_run.cpu_s:.0f} CPU s): {said}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, default=BENCH / "RESULTS.json", help="the run (from benchmarks/run.py)")
    parser.add_argument("--markdown", type=Path, default=BENCH / "RESULTS.md", help="the report (replaced atomically)")
    args = parser.parse_args(argv)
    write(load(args.json), args.markdown)
    print(f"rendered {args.markdown} from {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
