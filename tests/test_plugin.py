"""The pytest plugin, driven as a user drives it: `pytest parity/ --model=...` in a fresh process."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from parity.caffe.fixtures import load_fixture
from parity.data.reference import load_npy, write_npy_gz

REPO = Path(__file__).resolve().parents[1]


def run_suite(*args, env_extra=None, tmp_path=None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "pytest", "parity/", "-p", "no:cacheprovider", "-rA", *args],
                          cwd=REPO, capture_output=True, text=True, env=env, timeout=600)


def test_one_item_per_layer_and_a_json_report(tmp_path):
    out = tmp_path / "parity.json"
    proc = run_suite("--model=tiny", f"--parity-json={out}")
    assert proc.returncode == 0, proc.stdout[-3000:]
    from parity.caffe.graph import Net

    layers = [layer.name for layer in Net.from_prototxt(load_fixture("tiny").prototxt).layers]
    items = {line.split("test_layer[tiny-chelsea-")[1].split("]")[0] for line in proc.stdout.splitlines()
             if line.startswith("PASSED") and "test_layer[tiny-chelsea-" in line}
    assert items == set(layers)  # one item per Caffe layer (layer granularity: none skipped)
    assert "tiny/chelsea: PASS" in proc.stdout
    (report,) = json.loads(out.read_text())
    assert report["model"] == "tiny" and report["image"] == "chelsea" and report["status"] == "pass"
    assert report["first_divergence"] is None
    assert {"atol", "rtol", "layers"} <= set(report)
    assert [row["layer"] for row in report["layers"]][:3] == ["data", "conv1", "relu1"]
    assert {"layer", "type", "top", "shape", "max_abs", "rel_l2", "cosine", "status"} <= set(report["layers"][0])


def test_a_diverging_reference_fails_with_the_first_divergence_named(tmp_path):
    refs = tmp_path / "refs"
    shutil.copytree(load_fixture("tiny").references, refs / "tiny")
    manifest = json.loads((refs / "tiny" / "chelsea" / "manifest.json").read_text())
    entry = next(e for e in manifest["entries"] if e["layer"] == "pool2")
    path = refs / "tiny" / "chelsea" / entry["file"]
    write_npy_gz(load_npy(path) + np.float32(0.5), path)
    out = tmp_path / "parity.json"
    proc = run_suite("--model=tiny", f"--parity-json={out}", env_extra={"PARITY_REFERENCES": str(refs)})
    assert proc.returncode == 1
    assert "FAILED parity/test_parity.py::test_layer[tiny-chelsea-pool2]" in proc.stdout
    assert "tiny/chelsea: FAIL: first divergence at pool2" in proc.stdout
    report = json.loads(out.read_text())[0]
    statuses = {row["layer"]: row["status"] for row in report["layers"]}
    assert report["first_divergence"] == "pool2" and statuses["pool2"] == "fail"
    assert statuses["conv2"] == "pass"  # before the planted error
    assert statuses["pool_global"] == "pass"  # a sibling branch, not downstream of pool2


def test_xdist_never_computes_a_model_twice(tmp_path):
    trace = tmp_path / "trace.txt"
    proc = run_suite("-n", "2", "--model=tiny", "--model=tiny_v1", env_extra={"PARITY_TRACE": str(trace)})
    assert proc.returncode == 0, proc.stdout[-3000:]
    lines = [line.split() for line in trace.read_text().splitlines()]
    prepares = [(pid, model) for pid, step, model, *_ in lines if step == "prepare"]
    captures = [(model, image) for pid, step, model, *rest in lines if step == "capture" for image in rest]
    assert len(prepares) == len(set(prepares)), prepares
    assert sorted(captures) == [("tiny", "chelsea"), ("tiny_v1", "coffee")]


RUN_TWICE = '''
"""Every parity item runs twice in its process, as pytest-rerunfailures or flaky rerun a failed item:
the same item, its fixtures set up and torn down again."""
import pytest
from _pytest.runner import runtestprotocol


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    if "parity_case" in getattr(item, "fixturenames", ()):
        runtestprotocol(item, nextitem=nextitem, log=False)  # the attempt a rerun plugin discards
        item._initrequest()
'''


def test_an_item_run_again_never_computes_its_model_again(tmp_path):
    """A rerun item (here every item, the last of each model's too) must find its report, not count as
    a second item: once the count said "none left" too early, the model was let go and converted and
    captured again in the same process (two "capture tiny chelsea" lines in the trace)."""
    (tmp_path / "run_twice.py").write_text(RUN_TWICE)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    for args, order in ((["-n", "2"], None), ([], ("tiny_v1", "tiny"))):
        trace = tmp_path / "trace.txt"
        trace.unlink(missing_ok=True)
        proc = run_suite("-p", "run_twice", *args, "--model=tiny_v1", "--model=tiny",
                         env_extra={**env, "PARITY_TRACE": str(trace)})
        assert proc.returncode == 0, (args, proc.stdout[-3000:])
        trace_lines = trace.read_text().splitlines()
        steps = [(step, model, *rest) for _, step, model, *rest in (line.split() for line in trace_lines)]
        assert sorted(steps) == [("capture", "tiny", "chelsea"), ("capture", "tiny_v1", "coffee"), ("prepare", "tiny"),
                                 ("prepare", "tiny_v1"), ("release", "tiny"), ("release", "tiny_v1")], (args, steps)
        if order:  # one process: each model let go before the next is converted
            assert [s[:2] for s in steps] == [(step, m) for m in order for step in ("prepare", "capture", "release")]


def test_local_mode_and_one_html_page_across_xdist_workers(tmp_path):
    """--local names the bug on Caffe's own inputs; --parity-html gathers every worker's report into one page."""
    refs = tmp_path / "refs"
    shutil.copytree(load_fixture("tiny").references, refs / "tiny")
    shutil.copytree(load_fixture("tiny_v1").references, refs / "tiny_v1")
    manifest = json.loads((refs / "tiny" / "chelsea" / "manifest.json").read_text())
    entry = next(e for e in manifest["entries"] if e["layer"] == "conv2")
    path = refs / "tiny" / "chelsea" / entry["file"]
    write_npy_gz(load_npy(path) * np.float32(1.05), path)
    page, summary = tmp_path / "parity.html", tmp_path / "parity.json"
    proc = run_suite("-n", "2", "--model=tiny", "--model=tiny_v1", "--local", f"--parity-html={page}",
                     f"--parity-json={summary}", env_extra={"PARITY_REFERENCES": str(refs)})
    assert proc.returncode == 1
    assert "tiny/chelsea: FAIL: conversion bug at conv2 (fails on Caffe's own inputs)" in proc.stdout
    assert "tiny_v1/coffee: PASS" in proc.stdout
    text = page.read_text()
    assert text.count('<article class="report"') == 2 and "data:image/png;base64," in text
    assert "Conversion bug (fails on Caffe's own inputs): conv2" in text
    tiny = next(r for r in json.loads(summary.read_text()) if r["model"] == "tiny")
    assert tiny["conversion_bugs"][0] == "conv2" and tiny["local"] is True


def test_xdist_runs_costliest_models_first_and_lets_each_go_when_done(tmp_path):
    """Longest-processing-time-first: one worker takes the groups in descending estimated cost (given
    here in ascending order, so collection order alone would fail), releasing each model after its
    last item instead of holding the whole zoo."""
    from parity.pytest_plugin.collection import estimated_cost
    from parity.targets import from_fixture

    models = sorted(["tiny", "tiny_v1", "layers/conv_variants"], key=lambda m: estimated_cost(from_fixture(m)))
    trace = tmp_path / "trace.txt"
    proc = run_suite("-n", "1", *(f"--model={m}" for m in models), env_extra={"PARITY_TRACE": str(trace)})
    assert proc.returncode == 0, proc.stdout[-3000:]
    steps = [(step, model) for _, step, model, *_ in (line.split() for line in trace.read_text().splitlines())]
    assert [m for step, m in steps if step == "prepare"] == models[::-1]
    assert steps == [(step, m) for m in models[::-1] for step in ("prepare", "capture", "release")]


def test_without_xdist_models_run_in_the_order_given_and_are_released(tmp_path):
    trace = tmp_path / "trace.txt"
    proc = run_suite("--model=tiny_v1", "--model=tiny", env_extra={"PARITY_TRACE": str(trace)})
    assert proc.returncode == 0, proc.stdout[-3000:]
    steps = [(step, model) for _, step, model, *_ in (line.split() for line in trace.read_text().splitlines())]
    assert steps == [(step, m) for m in ("tiny_v1", "tiny") for step in ("prepare", "capture", "release")]


def planted_pool2(tmp_path) -> dict:
    """tiny's references with pool2's blob off by 0.5: env for run_suite."""
    refs = tmp_path / "refs"
    shutil.copytree(load_fixture("tiny").references, refs / "tiny")
    manifest = json.loads((refs / "tiny" / "chelsea" / "manifest.json").read_text())
    path = refs / "tiny" / "chelsea" / next(e for e in manifest["entries"] if e["layer"] == "pool2")["file"]
    write_npy_gz(load_npy(path) + np.float32(0.5), path)
    return {"PARITY_REFERENCES": str(refs)}


def test_wrong_options_are_one_usage_error_before_any_model_runs(tmp_path):
    """Exit 4 and one line, where each used to fail every item (or traceback) after converting."""
    a_file = tmp_path / "plain.txt"
    a_file.write_text("x")
    trace = tmp_path / "trace.txt"
    for args, expected in ((["--model=nosuch"], "no fixture 'nosuch'"),
                           (["--model=tiny", "--until=nolayer"], "--until 'nolayer': no such layer"),
                           (["--model=tiny", "--atol=nan"], "--atol must be a finite number"),
                           (["--model=tiny", "--parity-growth=0.5"], "--parity-growth must be a finite number >= 1"),
                           (["--model=tiny", "--mapping=m.json"], "--mapping goes with --keras-model"),
                           (["--model=tiny", f"--parity-json={a_file / 'r.json'}"], "plain.txt is not a folder"),
                           (["--model=tiny", f"--parity-baseline={tmp_path / 'missing.json'}"], "no such baseline")):
        proc = run_suite(*args, env_extra={"PARITY_TRACE": str(trace)})
        assert proc.returncode == 4, (args, proc.stdout[-2000:], proc.stderr[-2000:])
        assert expected in proc.stderr and "Traceback" not in proc.stderr + proc.stdout, (args, proc.stderr)
    assert not trace.exists()  # no model was prepared for any of them


def test_a_model_that_errors_is_reported_and_a_stale_report_replaced(tmp_path):
    """A model that stops before any numbers (here the user's builder raises) still gets its report,
    with the CLI's `error`; and a report file from an earlier run is replaced even when nothing ran."""
    builder = tmp_path / "broken_model.py"
    builder.write_text("def build():\n    raise RuntimeError('half-written model')\n")
    out = tmp_path / "parity.json"
    out.write_text("stale")
    proc = run_suite("--model=tiny", f"--parity-json={out}", f"--keras-model={builder}:build")
    assert proc.returncode == 1, proc.stdout[-3000:]
    (report,) = json.loads(out.read_text())
    assert report["status"] == "fail" and "half-written model" in report["error"] and report["layers"] == []
    assert "tiny/chelsea: FAIL:" in proc.stdout and "half-written model" in proc.stdout
    out.write_text("stale")
    run_suite("--model=tiny", f"--parity-json={out}", "-k", "no_such_layer")
    assert json.loads(out.read_text()) == []


def test_a_partial_run_still_fails_on_a_divergence_it_did_not_select(tmp_path):
    """-k conv1: pool2's planted divergence is outside the selection, but the model does not pass."""
    out = tmp_path / "parity.json"
    proc = run_suite("--model=tiny", f"--parity-json={out}", "-k", "conv1", env_extra=planted_pool2(tmp_path))
    (report,) = json.loads(out.read_text())
    assert report["first_divergence"] == "pool2" and report["status"] == "fail"
    assert "tiny/chelsea: FAIL: first divergence at pool2" in proc.stdout


def test_a_model_named_twice_is_checked_once(tmp_path):
    out = tmp_path / "parity.json"
    proc = run_suite("--model=tiny", "--model=tiny/", f"--parity-json={out}")
    assert proc.returncode == 0 and "conv1_0" not in proc.stdout
    (report,) = json.loads(out.read_text())
    assert len({row["layer"] for row in report["layers"]}) == len(report["layers"])


def test_the_configured_baseline_applies_from_another_folder(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pytest", str(REPO / "parity"), "-p", "no:cacheprovider",
                           "--model=tiny", f"--parity-json={tmp_path / 'r.json'}", f"--rootdir={REPO}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:]
    (report,) = json.loads((tmp_path / "r.json").read_text())
    assert report["baseline"] and report["baseline"]["path"].endswith("parity-baseline.json")


def test_in_place_layers_skip_naming_where_their_output_is_checked():
    """At blob granularity conv3_2 has no reference of its own: its item says relu3_2 holds its output."""
    proc = run_suite("--model=vgg19", "-k", "conv3_2 or relu3_2 or fc6 or pool5")
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert ("no reference entry for conv3_2 at blob granularity; its output is checked at relu3_2 (in place)"
            in proc.stdout)
    assert "no reference entry for fc6 at blob granularity; its output is checked at drop6 (in place)" in proc.stdout
    assert "PASSED parity/test_parity.py::test_layer[vgg19-chelsea-relu3_2]" in proc.stdout


def test_junit_xml_stays_small_and_the_json_complete(tmp_path):
    """The report data rides to the controller on user_properties; JUnit gets one short line per layer."""
    junit, out = tmp_path / "j.xml", tmp_path / "r.json"
    proc = run_suite("--model=tiny", f"--junitxml={junit}", f"--parity-json={out}", "--parity-html",
                     str(tmp_path / "p.html"))
    assert proc.returncode == 0, proc.stdout[-2000:]
    xml = junit.read_text()
    assert 'name="parity_layer" value="tiny/chelsea conv1: pass, max_abs' in xml
    assert "<html" not in xml and "environment" not in xml and len(xml) < 40_000
    (report,) = json.loads(out.read_text())
    assert len(report["layers"]) == 13 and report["environment"]


def test_the_plugin_checks_the_project_settings_only_where_the_parity_suite_may_run():
    """`pytest tests/` must not stop on a broken baseline file; `pytest parity/` and `--model` must."""
    from types import SimpleNamespace

    from parity.pytest_plugin.settings import runs_parity

    def config(*args, model=()):
        return SimpleNamespace(args=[str(a) for a in args], option=SimpleNamespace(model=list(model)),
                               getoption=lambda name: None)

    assert not runs_parity(config(REPO / "tests"))
    assert not runs_parity(config(REPO / "tests" / "test_gate.py::test_x"))
    assert runs_parity(config(REPO / "parity")) and runs_parity(config(REPO))
    assert runs_parity(config(REPO / "parity" / "test_parity.py"))
    assert runs_parity(config(REPO / "tests", model=["tiny"]))


def test_under_xdist_each_model_runs_on_one_worker():
    """What caught pytest 9.2 with pytest-xdist 3.8: the groups were silently dropped, and both workers
    converted both models. Every item of one (model, sample) must run on one worker, tagged with its group."""
    import re

    proc = run_suite("--model=tiny", "--model=tiny_v1", "-n", "2", "-v")
    assert proc.returncode == 0, proc.stdout[-3000:]
    workers: dict[str, set[str]] = {}
    for worker, case in re.findall(r"\[(gw\d+)\].*PASSED parity/test_parity.py::test_layer\[(tiny(?:_v1)?-\w+)-",
                                   proc.stdout):
        workers.setdefault(case, set()).add(worker)
    assert set(workers) == {"tiny-chelsea", "tiny_v1-coffee"}, proc.stdout[-3000:]
    assert all(len(w) == 1 for w in workers.values()), workers
    assert "@parity-tiny-chelsea" in proc.stdout and "groups are ignored" not in proc.stdout
