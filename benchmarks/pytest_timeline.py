"""An observing pytest plugin for benchmarks/run.py: where a pytest run's wall time goes, per process.

Loaded with `-p pytest_timeline` (benchmarks/ on PYTHONPATH), so xdist workers load it too. Each
process (the controller, each worker, or the single process under -n 0) writes one JSON file into
$PARITY_BENCH_TIMELINE at exit: wall-clock times and CPU seconds of its start-up steps, the time each xdist group
(one model and sample) spent running its tests, and its peak RSS. It changes nothing it observes.
"""
from __future__ import annotations

import atexit
import json
import os
import resource
import time

import pytest

IMPORTED = time.time()  # -p plugins are imported before conftest.py (which imports TensorFlow)
_STATE: dict = {"role": "single", "marks": {"plugin_imported": IMPORTED},
                "cpu": {"plugin_imported": time.process_time()}, "groups": {}}


def _mark(name: str) -> None:
    """Wall clock and this process's CPU seconds (all threads, since it started) at a step."""
    _STATE["marks"][name] = time.time()
    _STATE["cpu"][name] = time.process_time()


def pytest_configure(config):
    _mark("configured")
    workerinput = getattr(config, "workerinput", None)
    if workerinput:
        _STATE["role"] = workerinput["workerid"]
    elif getattr(config.option, "numprocesses", None):
        _STATE["role"] = "controller"
    folder = os.environ.get("PARITY_BENCH_TIMELINE")
    if folder:
        atexit.register(_write, folder)


def pytest_collection_finish(session):
    _mark("collected")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    marker = item.get_closest_marker("xdist_group")
    group = marker.args[0] if marker and marker.args else item.nodeid.split("::")[0]
    start = time.time()
    yield
    end = time.time()
    g = _STATE["groups"].setdefault(group, {"start": start, "end": end, "busy_s": 0.0, "tests": 0})
    g["end"], g["busy_s"], g["tests"] = end, g["busy_s"] + (end - start), g["tests"] + 1


def pytest_sessionfinish(session):
    _mark("sessionfinish")


def pytest_unconfigure(config):
    _mark("unconfigured")


def _write(folder: str) -> None:
    _mark("atexit")
    _STATE["pid"] = os.getpid()
    _STATE["maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    path = os.path.join(folder, f"{_STATE['role']}-{os.getpid()}.json")
    with open(path, "w") as fh:
        json.dump(_STATE, fh)
