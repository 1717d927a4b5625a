"""One benchmark run as typed records: what benchmarks/run.py measures and benchmarks/render.py reads.

Measuring takes minutes of both cores; rendering takes a moment and changes with the wording. The two
are separate programs joined only by RESULTS.json, and the dataclasses here are that file's schema:
a field renamed on one side fails on the other when the file is read, not as a KeyError halfway
through a report. `save` writes through parity.atomic, so a reader never sees half a file.

Sizes are in KiB as Linux reports ru_maxrss; times in seconds; `disturbance` is the share of the
machine's CPU that other processes took while a measurement ran.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parity.atomic import atomic_path

VIEWS, READ_ALL = "parity (views)", "parity + read all values"
PYCAFFE, PROTOBUF = "pycaffe caffe.Net", "protobuf + np.array"
FIXED, MEASURING, CACHED = "fixed rule", "noise rule, measuring the noise", "noise rule, noise cached"
SERIAL = "-n 0"


@dataclass(frozen=True)
class ChainForm:
    """One form of the chain nets: what each run of it does, and the name its targets go by."""

    does: str
    named: str


CHAIN_FORMS = {
    "caffe": ChainForm("prototxt + caffemodel: read, Net, convert to Keras, check bookkeeping",
                       "chain net (convert to Keras + check bookkeeping)"),
    "v1": ChainForm("V1 prototxt: read and upgrade, Net, check bookkeeping",
                    "V1 prototxt chain (read + Net + check bookkeeping)"),
    "tf": ChainForm("frozen graph (.pb): read, order, Net, layouts, check bookkeeping",
                    "frozen-graph chain (read + order + Net + check bookkeeping)")}


@dataclass(frozen=True)
class Machine:
    """What the numbers were measured on, when, and how busy the machine was around the run."""

    date: str
    date_utc: str
    cpu: str
    cores: int
    usable_cores: int  # the cores this process may run on: what -n auto starts and what the ceiling counts
    ram_gib: float | None
    os: str
    python: str
    tensorflow: str
    keras: str
    numpy: str
    pytest_xdist: str
    load_average_at_start: tuple[float, float, float]
    load_average_at_end: tuple[float, float, float]
    run_s: float


@dataclass(frozen=True)
class Settings:
    """run.py's options for this run, so that the record says how it was measured, not the renderer's flags."""

    repeat: int
    forward_repeat: int
    every: int
    pytest_repeat: int
    scale_repeat: int
    workers: int


@dataclass(frozen=True)
class LoadRun:
    """One fresh-process caffemodel load: the load alone (after the imports) and the process's peak RSS."""

    seconds: float
    rss_growth_kib: int
    maxrss_kib: int
    disturbance: float


@dataclass(frozen=True)
class Load:
    """One loader's medians (seconds, RSS growth) and largest process over its interleaved runs."""

    seconds: float
    rss_growth_kib: float
    maxrss_kib: int
    runs: list[LoadRun]


@dataclass(frozen=True)
class Forward:
    """VGG-19 in one process: conversion, first (tracing) calls, plain vs capture, truncation extrapolated."""

    import_s: float
    read_caffemodel_s: float
    convert_s: float
    plain_first_call_s: float
    capture_first_call_s: float
    plain_s: float
    capture_s: float
    plain_runs: list[float]
    capture_runs: list[float]
    outputs: int
    every: int
    subset: int
    truncation_first_call_s: float
    truncation_steady_s: float
    wall_s: float
    maxrss_kib: int
    disturbance: float


@dataclass(frozen=True)
class Phases:
    """Where a `parity check` spends its time after the imports."""

    setup_s: float
    provenance_s: float
    convert_s: float
    forward_compare_s: float
    report_s: float


@dataclass(frozen=True)
class Check:
    """One fixture's `parity check`: its median run in full, and every run's check seconds."""

    import_s: float
    model: str
    rule: str
    check_s: float
    phases: Phases
    samples: int
    entries: int
    status: str
    verdicts: list[str]
    wall_s: float
    maxrss_kib: int
    disturbance: float
    runs: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Rule:
    """VGG-19's check under one tolerance configuration: medians, every run, and the verdict."""

    check_s: float
    maxrss_kib: float
    runs: list[float]
    rss_runs: list[int]
    status: str
    verdict: str


@dataclass(frozen=True, kw_only=True)
class ChainRun:
    """One fresh-process run over a chain net: phases (wall, CPU, ru_maxrss after each) and what it counted.

    The counts differ by form: `layers` for the prototxt forms, `ops`, `nodes`, `layouts` and
    `placeholders` for the frozen graph, `keras_layers` and `keras_map_graph_s` for the conversion."""

    import_s: float
    kind: str
    total_s: float
    cpu_s: float
    phases_s: dict[str, float]
    phases_cpu_s: dict[str, float]
    maxrss_after_kib: dict[str, int]
    baseline_kib: int  # ru_maxrss after the imports, before any work
    peak_kib: int
    entries: int
    with_parents: int
    chains: int
    first: str | None
    downstream: int
    layers: int | None = None
    keras_layers: int | None = None
    keras_map_graph_s: float | None = None
    ops: int | None = None
    nodes: int | None = None
    layouts: int | None = None
    placeholders: int | None = None
    wall_s: float
    maxrss_kib: int
    growth_kib: int  # peak_kib - baseline_kib
    disturbance: float


@dataclass(frozen=True)
class Chain:
    """One chain net (a form and a size): its file, every run, and the median run's figures."""

    kind: str
    n: int
    bytes: int
    runs: list[ChainRun]
    total_s: float
    cpu_s: float
    phases_s: dict[str, float]
    phases_cpu_s: dict[str, float]
    baseline_kib: int
    peak_kib: int
    maxrss_kib: int
    disturbance: float
    totals: list[float]
    growth_kib: float  # the median over runs
    layers: int
    keras_map_graph_s: float | None


@dataclass(frozen=True)
class PytestProcess:
    """One process of a pytest run (single, controller or worker), from the timeline plugin."""

    role: str
    maxrss_kib: int
    marks_s: dict[str, float]  # each start-up and shut-down step, seconds after the spawn
    ready_s: float
    startup_cpu_s: float | None
    busy_s: float
    last_test_s: float
    groups: list[tuple[str, float]]  # (xdist group, seconds busy) in the order run


@dataclass(frozen=True)
class PytestRun:
    """One `pytest parity/` run: wall, CPU, peak RSS, what pytest said, and where the time went."""

    label: str
    rc: int
    wall_s: float
    cpu_s: float
    maxrss_kib: int
    disturbance: float
    summary: str
    processes: list[PytestProcess]
    startup_s: float | None = None  # the phases are None where no process ran a test
    tests_s: float | None = None
    shutdown_s: float | None = None


@dataclass(frozen=True)
class PytestConfig:
    """One pytest configuration: the median wall, that run in full, and every run's wall."""

    wall_s: float
    median_run: PytestRun
    walls: list[float]


@dataclass(frozen=True)
class Run:
    """Everything one `python3 benchmarks/run.py` measured; RESULTS.json is this, and RESULTS.md is rendered from it."""

    machine: Machine
    settings: Settings
    caffemodel_bytes: int  # VGG-19's, the file every load in `loads` read
    loads: dict[str, Load]  # VIEWS, READ_ALL, PYCAFFE (where it imports), PROTOBUF
    pycaffe_skipped: str | None  # why pycaffe was not measured, or None
    forward: Forward
    checks: dict[str, Check]
    rules: dict[str, Rule]  # FIXED, MEASURING, CACHED
    scale: dict[str, Chain]  # "KIND-N"
    pytest: dict[str, PytestConfig]  # SERIAL, then parallel_label() and split_label()

    def chain_pair(self, kind: str) -> tuple[Chain, Chain]:
        """One form's smaller and larger chain."""
        small, big = sorted((c for c in self.scale.values() if c.kind == kind), key=lambda c: c.n)
        return small, big

    def serial(self) -> PytestConfig:
        return self.pytest[SERIAL]

    def parallel(self) -> PytestConfig:
        return self.pytest[parallel_label(self.settings.workers)]

    def split(self) -> PytestConfig | None:
        return self.pytest.get(split_label(self.settings.workers, self.machine.usable_cores))


def parallel_label(workers: int) -> str:
    return f"-n {workers}"


def split_label(workers: int, cores: int) -> str:
    """-n WORKERS with TensorFlow's thread pools split between the workers: cores // workers threads each."""
    return f"-n {workers}, TF threads split: {split_threads(workers, cores)} per worker"


def split_threads(workers: int, cores: int) -> int:
    return max(1, cores // workers)


def save(run: Run, path: Path) -> None:
    """RESULTS.json, written whole or not at all."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(encode(run), indent=2) + "\n", encoding="utf-8")


def encode(value: Any) -> Any:
    """A record as JSON values; an optional field left at None is left out (a chain form's counts it has not)."""
    if dataclasses.is_dataclass(value):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not (f.default is None and getattr(value, f.name) is None)}
    if isinstance(value, dict):
        return {key: encode(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(item) for item in value]
    return value


def load(path: Path) -> Run:
    """A Run from RESULTS.json; a field missing or unknown fails here, naming the record."""
    return decode(Run, json.loads(path.read_text(encoding="utf-8")))


def decode(kind: Any, value: Any) -> Any:
    """Parsed JSON as `kind`: dataclasses field by field, dict[str, X], list[X], tuple[...], X | None."""
    if value is None:
        return None
    if dataclasses.is_dataclass(kind):
        return _decode_record(kind, value)
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is dict:
        return {key: decode(args[1], item) for key, item in value.items()}
    if origin is list:
        return [decode(args[0], item) for item in value]
    if origin is tuple:
        return tuple(decode(arg, item) for arg, item in zip(args, value, strict=True))
    if origin in (typing.Union, types.UnionType):
        return decode(next(arg for arg in args if arg is not type(None)), value)
    return value


def _decode_record(kind: type, value: dict) -> Any:
    hints = typing.get_type_hints(kind)
    unknown = value.keys() - hints.keys()
    if unknown:
        raise ValueError(f"{kind.__name__}: unknown fields {sorted(unknown)} (a RESULTS.json of another version?)")
    try:
        return kind(**{name: decode(hints[name], item) for name, item in value.items()})
    except TypeError as exc:  # a required field missing
        raise ValueError(f"{kind.__name__}: {exc}") from None
