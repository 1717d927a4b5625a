"""The targets a benchmark run is judged by, each a ratio to a baseline measured in the same run.

Why ratios, never absolute seconds: the machines are shared and noisy, and a ratio survives a slower
machine where a time limit does not. The judging lives apart from the measuring and the rendering so
that run.py's summary and render.py's report state one verdict from one definition. Everything here
reads a Run and nothing else: the machine that renders is not the machine that measured.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass

from record import CACHED, CHAIN_FORMS, FIXED, MEASURING, PROTOBUF, PYCAFFE, VIEWS, Chain, Run

LOAD_TARGET = 5.0  # pycaffe / parity load time, at least
RSS_TARGET = 0.10  # parity's peak-RSS growth while loading, below this fraction of the file size
CAPTURE_TARGET = 1.5  # capture / plain forward, at most
CHECK_TARGET = 3.0  # VGG-19 end-to-end check / (caffemodel load + one plain forward), at most
XDIST_TARGET = 1.0  # pytest -n 0 wall / -n WORKERS wall (-n auto: WORKERS = cores), at least: never slower
RULE_TIME_TARGET = 1.5  # VGG-19 check under the noise rule (cached) / under the fixed rule, at most
RULE_RSS_TARGET = 1.3  # peak RSS of that check, noise rule (float64 twin running) / fixed rule, at most
SCALE_TIME_TARGET = 2.0  # time(twice the layers) / time(the layers), at most: linear (n log n at worst)
SCALE_RSS_TARGET = 2.0  # the same for peak-RSS growth above the interpreter's (after imports), at most
DISTURBED = 0.10  # other processes' CPU above this share of the machine marks a measurement disturbed
OPS = {">=": operator.ge, "<=": operator.le, "<": operator.lt}


@dataclass(frozen=True)
class Target:
    """One target: the measured ratio, the figures behind it, and the limit it is held to."""

    measure: str
    value: str  # the figures behind the ratio, as the report prints them
    ratio: float
    op: str  # ">=", "<=" or "<": how `ratio` must compare with `limit`
    limit: float
    percent: bool = False  # the limit reads as a percentage (a share of the file's size)
    note: str = ""  # what the verdict leaves out (the noise rule's first run)

    @property
    def met(self) -> bool:
        return OPS[self.op](self.ratio, self.limit)

    @property
    def target(self) -> str:
        return f"{self.op} {100 * self.limit:.0f}%" if self.percent else f"{self.op} {self.limit:g}x"

    @property
    def miss(self) -> float:
        """How far the ratio is on the wrong side of the limit, as a fraction of the limit."""
        return self.limit / self.ratio - 1 if self.op == ">=" else self.ratio / self.limit - 1


@dataclass(frozen=True)
class Ceiling:
    """The most -n WORKERS can gain over -n 0 on the machine, from the run's own CPU accounting."""

    serial_cpu_s: float
    extra_startup_cpu_s: float
    floor_s: float
    ceiling: float
    serial_busy_cores: float


def targets(run: Run) -> list[Target]:
    """Every target of the run, in the report's order."""
    scale = [target for kind in CHAIN_FORMS for target in scale_targets(run, kind)]
    return [*load_targets(run), capture_target(run), check_target(run), *rule_targets(run), *scale, xdist_target(run)]


def load_targets(run: Run) -> list[Target]:
    """parity's memory-mapped load against pycaffe's (or protobuf's, without pycaffe), and what it copies."""
    parity = run.loads[VIEWS]
    baseline = PYCAFFE if PYCAFFE in run.loads else PROTOBUF
    versus = "pycaffe" if baseline == PYCAFFE else "protobuf (pycaffe unavailable)"
    base, ratio = run.loads[baseline].seconds, run.loads[baseline].seconds / parity.seconds
    growth, size = parity.rss_growth_kib * 1024, run.caffemodel_bytes
    return [Target(f"VGG-19 caffemodel load, {versus} / parity",
                   f"{base:.3f} s / {parity.seconds:.4f} s = {ratio:.0f}x", ratio, ">=", LOAD_TARGET),
            Target("peak-RSS growth during parity's load / file size",
                   f"{growth / 1e6:.1f} MB / {size / 1e6:.0f} MB = {100 * growth / size:.1f}%", growth / size, "<",
                   RSS_TARGET, percent=True)]


def capture_target(run: Run) -> Target:
    f = run.forward
    ratio = f.capture_s / f.plain_s
    return Target("all-layer capture / one plain forward (VGG-19, batch 1)",
                  f"{f.capture_s:.3f} s / {f.plain_s:.3f} s = {ratio:.2f}x", ratio, "<=", CAPTURE_TARGET)


def check_target(run: Run) -> Target:
    """VGG-19's check against what pycaffe's caffe.Net does (a runnable net: for parity read + convert) + a forward."""
    f, check = run.forward, run.checks["vgg19"]
    load = f.read_caffemodel_s + f.convert_s
    ratio = check.check_s / (load + f.plain_s)
    return Target("VGG-19 end-to-end check / (caffemodel load into a runnable net + one plain forward)",
                  f"{check.check_s:.2f} s / ({load:.2f} + {f.plain_s:.3f}) s = {ratio:.2f}x", ratio, "<=", CHECK_TARGET)


def rule_targets(run: Run) -> list[Target]:
    """The noise rule's cost: time with the noise cached (the first run's beside it), peak RSS with the twin."""
    fixed, measuring, cached = (run.rules[label] for label in (FIXED, MEASURING, CACHED))
    ratio, first = cached.check_s / fixed.check_s, measuring.check_s / fixed.check_s
    rss = measuring.maxrss_kib / fixed.maxrss_kib
    return [Target("VGG-19 check, noise rule / fixed rule (time)",
                   f"noise cached: {cached.check_s:.2f} s / {fixed.check_s:.2f} s = {ratio:.2f}x; "
                   f"measuring it (first run): {measuring.check_s:.2f} s = {first:.2f}x", ratio, "<=", RULE_TIME_TARGET,
                   note="" if first <= RULE_TIME_TARGET else "first run: no"),
            Target("VGG-19 check, noise rule with its float64 twin / fixed rule (peak RSS)",
                   f"{mb(measuring.maxrss_kib)} MB / {mb(fixed.maxrss_kib)} MB = {rss:.2f}x", rss, "<=",
                   RULE_RSS_TARGET)]


def scale_targets(run: Run, kind: str) -> list[Target]:
    """Twice the layers: at most twice the time and twice the peak-RSS growth."""
    small, big, time_ratio, rss_ratio = scale_ratios(run, kind)
    what = f"{layers(big.n)} / {layers(small.n)}-layer {CHAIN_FORMS[kind].named}"
    rest = without_keras(small, big)
    keras = (f" (Keras's map_graph {small.keras_map_graph_s:.1f} -> {big.keras_map_graph_s:.1f} s; without it "
             f"{rest:.2f}x)" if rest is not None else "")
    return [Target(f"{what}: time", f"{big.total_s:.2f} s / {small.total_s:.2f} s = {time_ratio:.2f}x{keras}",
                   time_ratio, "<=", SCALE_TIME_TARGET),
            Target(f"{what}: peak-RSS growth above the interpreter's",
                   f"{mb(big.growth_kib)} MB / {mb(small.growth_kib)} MB = {rss_ratio:.2f}x", rss_ratio, "<=",
                   SCALE_RSS_TARGET)]


def xdist_target(run: Run) -> Target:
    """-n auto never slower than -n 0, with the ceiling the machine allows beside it."""
    serial, parallel, workers = run.serial().wall_s, run.parallel().wall_s, run.settings.workers
    bound = xdist_ceiling(run)
    auto = " (-n auto)" if workers == run.machine.usable_cores else ""
    return Target(f"`pytest parity/` whole zoo, wall -n 0 / -n {workers}{auto}",
                  f"{serial:.1f} s / {parallel:.1f} s = {serial / parallel:.2f}x"
                  + (f" (at most {bound.ceiling:.2f}x on this machine)" if bound else ""),
                  serial / parallel, ">=", XDIST_TARGET)


def scale_ratios(run: Run, kind: str) -> tuple[Chain, Chain, float, float]:
    """(small, big, time ratio, peak-RSS growth ratio) of one chain form's two sizes."""
    small, big = run.chain_pair(kind)
    return small, big, big.total_s / small.total_s, big.growth_kib / small.growth_kib


def without_keras(small: Chain, big: Chain) -> float | None:
    """The time ratio less Keras's map_graph (quadratic, and Keras's own), or None where it was not timed."""
    if small.keras_map_graph_s is None or big.keras_map_graph_s is None:
        return None
    return (big.total_s - big.keras_map_graph_s) / (small.total_s - small.keras_map_graph_s)


def xdist_ceiling(run: Run) -> Ceiling | None:
    """The most -n WORKERS can gain over -n 0 on the machine that ran, from the run's CPU accounting.

    Why: however xdist splits the groups, the workers must do the CPU work the -n 0 run did, plus one
    more start-up (Python, pytest, TensorFlow, collection) per extra worker, and N cores deliver at
    most N CPU seconds per second. So wall(-n WORKERS) >= that CPU / N. A lower bound, generous: it
    ignores the controller and any slowdown of two processes sharing caches and memory bandwidth.
    """
    s, q = run.serial().median_run, run.parallel().median_run
    starts = [p.startup_cpu_s for p in q.processes if p.groups and p.startup_cpu_s]
    if not starts:
        return None
    extra = (run.settings.workers - 1) * min(starts)
    floor = (s.cpu_s + extra) / run.machine.usable_cores
    return Ceiling(serial_cpu_s=s.cpu_s, extra_startup_cpu_s=extra, floor_s=floor,
                   ceiling=s.wall_s / floor,  # wall and CPU of the same (median) run
                   serial_busy_cores=s.cpu_s / s.wall_s)


def layers(n: int) -> str:
    """A chain's size as the report names it: 20k, or 1,500 where it is no whole thousand."""
    return f"{n // 1000}k" if n % 1000 == 0 else f"{n:,}"


def mb(kib: float) -> str:
    """KiB (as ru_maxrss counts) as whole megabytes with thousands separators."""
    return f"{kib * 1024 / 1e6:,.0f}"
