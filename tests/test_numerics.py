"""The numeric environment: recorded in every report, TF32 off unless asked, op determinism on request."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from parity.check.pipeline import DEFAULT_ATOL, DEFAULT_RTOL, Tolerance, run_target
from parity.diagnose.report import render
from parity.targets import from_fixture

REPO = Path(__file__).resolve().parents[1]


def test_every_report_records_the_numeric_environment():
    import tensorflow as tf

    (report,) = run_target(from_fixture("tiny"), Tolerance(DEFAULT_ATOL, DEFAULT_RTOL))
    env = report.to_dict()["environment"]
    assert env["tensorflow"] == tf.__version__ and env["keras_backend"] == "tensorflow"
    assert {"devices", "onednn", "tf32_allowed", "deterministic_ops", "threads"} <= set(env)
    assert env["devices"] and env["devices"][0].startswith("CPU")
    assert set(env["onednn"]) == {"built", "enabled", "TF_ENABLE_ONEDNN_OPTS"}
    assert env["tf32_allowed"] is False  # a check disables TF32 by default
    assert not tf.config.experimental.tensor_float_32_execution_enabled()
    assert "numerics: TensorFlow" in render(report) and "TF32 off" in render(report)


def test_deterministic_and_tf32_flags_reach_tensorflow_and_the_report(tmp_path):
    """In a child process: op determinism cannot be switched off again once on."""
    out = tmp_path / "r.json"
    env_off = {"TF_ENABLE_ONEDNN_OPTS": "0"}
    proc = subprocess.run([sys.executable, "-m", "parity", "check", "--model", "tiny", "--deterministic",
                           "--allow-tf32", "-q", "--json", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=300,
                          env={**__import__("os").environ, **env_off})
    assert proc.returncode == 0, proc.stderr[-2000:]
    env = json.loads(out.read_text())["environment"]
    assert env["deterministic_ops"] is True and env["tf32_allowed"] is True
    assert env["onednn"]["enabled"] is False and env["onednn"]["TF_ENABLE_ONEDNN_OPTS"] == "0"


@pytest.mark.parametrize("setting", ["0", "1"])
def test_the_onednn_record_follows_what_tensorflow_runs(setting):
    """`enabled` is TensorFlow's own answer (it depends on the CPU too when unset), not guessed from the
    platform: an AVX2-only x86 machine runs without oneDNN unless TF_ENABLE_ONEDNN_OPTS=1."""
    code = ("import json; from parity.check.numerics import onednn; "
            "from tensorflow.python.util import _pywrap_util_port as p; "
            "print(json.dumps([onednn(), bool(p.IsMklEnabled())]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "TF_ENABLE_ONEDNN_OPTS": setting})
    record, running = json.loads(proc.stdout.strip().splitlines()[-1])
    assert record["enabled"] is running is (setting == "1")
    assert record["TF_ENABLE_ONEDNN_OPTS"] == setting
