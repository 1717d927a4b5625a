"""A Keras model written by hand, checked against Caffe: `parity check --keras-model` and export-weights."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from parity.caffe.fixtures import load_fixture
from parity.cli import main

VGG = load_fixture("vgg19")


def check(capsys, tmp_path, builder, *extra):
    report = tmp_path / "report.json"
    code = main(["check", "--model", "vgg19", "--keras-model", f"handwritten_vgg19:{builder}", "--json", str(report),
                 "-q", *extra])
    return code, json.loads(report.read_text()) if report.exists() else None, capsys.readouterr()


def test_handwritten_vgg19_passes(capsys, tmp_path):
    code, report, _ = check(capsys, tmp_path, "build_vgg19")
    assert code == 0 and report["status"] == "pass"
    assert {lay["layer"] for lay in report["layers"]} >= {"data", "relu1_1", "pool5", "drop6", "fc8", "prob"}


def test_handwritten_vgg19_with_one_padding_moved_fails_at_that_layer(capsys, tmp_path):
    code, report, _ = check(capsys, tmp_path, "build_vgg19_shifted_pad")
    assert code == 1
    assert report["first_divergence"] == "relu3_2" and "conv3_2" in report["first_divergence_covers"]


def test_weight_shape_mismatches_are_named(capsys, tmp_path):
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"fc7": "fc6"}))  # a wrong mapping: fc6's kernel does not fit fc7
    code, _, out = check(capsys, tmp_path, "build_vgg19", "--mapping", str(mapping))
    assert code == 2 and "fc7.kernel: shape (4096, 4096), Caffe's fc6 gives (25088, 4096)" in out.err


def test_a_mapping_that_pairs_nothing_is_refused(capsys, tmp_path):
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"fc_7": "fc7", "fc8": "fc_eight"}))  # typos on both sides: nothing paired
    code, _, out = check(capsys, tmp_path, "build_vgg19", "--mapping", str(mapping))
    assert code == 2 and "Keras layer 'fc_7' is not in the model" in out.err
    assert "Caffe layer 'fc_eight' does not exist" in out.err and "Traceback" not in out.err


def test_unimportable_builder_is_a_clear_error(capsys, tmp_path):
    code, _, out = check(capsys, tmp_path, "no_such_function")
    assert code == 2 and "no function 'no_such_function'" in out.err


@pytest.mark.parametrize("suffix", [".npz", ".h5"])
def test_export_weights_in_keras_layout(tmp_path, suffix):
    out = tmp_path / f"tiny{suffix}"
    tiny = load_fixture("tiny")
    assert main(["export-weights", str(tiny.prototxt), str(tiny.weights_path()), "-o", str(out)]) == 0
    if suffix == ".npz":
        with np.load(out, allow_pickle=False) as f:
            arrays = dict(f)
    else:
        with h5py.File(out, "r") as f:
            arrays = {f"{layer}/{name}": f[layer][name][()] for layer in f for name in f[layer]}
    assert arrays["conv1/kernel"].shape == (3, 3, 3, 8) and arrays["fc1/kernel"].shape == (96, 10)


def test_the_pytest_plugin_checks_a_handwritten_model_too():
    """`pytest parity/ --keras-model`: the same verdict as the CLI, one item per Caffe layer."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(repo / "tests"))
    proc = subprocess.run([sys.executable, "-m", "pytest", "parity/", "-p", "no:cacheprovider", "-p", "no:xdist", "-rA",
                           "--model=vgg19", "--keras-model=handwritten_vgg19:build_vgg19_shifted_pad"],
                          cwd=repo, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "PASSED parity/test_parity.py::test_layer[vgg19-chelsea-relu3_1]" in proc.stdout
    assert "FAILED parity/test_parity.py::test_layer[vgg19-chelsea-relu3_2]" in proc.stdout
    assert "vgg19/chelsea: FAIL: first divergence at relu3_2" in proc.stdout
    # the layers after it are downstream, not failures of their own: one failure for the model
    assert "XFAIL parity/test_parity.py::test_layer[vgg19-chelsea-relu4_1]" in proc.stdout
    assert "downstream of the first divergence of vgg19/chelsea at relu3_2" in proc.stdout
    assert " 1 failed," in proc.stdout.splitlines()[-1], proc.stdout.splitlines()[-1]


def test_a_bad_mapping_is_one_error_in_pytest_not_one_per_layer(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"fc7": "fc6"}))  # fc6's kernel does not fit fc7
    env = dict(os.environ, PYTHONPATH=str(repo / "tests"))
    proc = subprocess.run([sys.executable, "-m", "pytest", "parity/", "-p", "no:cacheprovider", "-p", "no:xdist", "-rA",
                           "--model=vgg19", "--keras-model=handwritten_vgg19:build_vgg19", f"--mapping={mapping}"],
                          cwd=repo, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 1, proc.stdout[-3000:]
    last = proc.stdout.splitlines()[-1]
    assert " 1 failed" in last and "skipped" in last, last
    assert proc.stdout.count("fc7.kernel: shape (4096, 4096), Caffe's fc6 gives (25088, 4096)") >= 1
    assert "could not be checked: see parity/test_parity.py::test_layer[vgg19-chelsea-" in proc.stdout


def test_every_report_says_a_handwritten_model_was_checked(capsys, tmp_path):
    page, report_path = tmp_path / "r.html", tmp_path / "r.json"
    code = main(["check", "--model", "vgg19", "--keras-model", "handwritten_vgg19:build_vgg19",
                 "--html", str(page), "--json", str(report_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert "  checked: hand-written Keras model handwritten_vgg19:build_vgg19 (no mapping; layers paired:" in out
    assert json.loads(report_path.read_text())["checked"]["model"] == "handwritten_vgg19:build_vgg19"
    assert "hand-written Keras model handwritten_vgg19:build_vgg19" in page.read_text()
    # parity's own conversion says nothing of the kind
    assert main(["check", "--model", "tiny", "--json", str(report_path)]) == 0
    assert "checked:" not in capsys.readouterr().out and "checked" not in json.loads(report_path.read_text())


def test_mapping_entries_are_checked_when_read(tmp_path):
    from parity.errors import ParityError
    from parity.targets.handwritten import read_mapping

    path = tmp_path / "map.json"
    path.write_text(json.dumps({"conv": {"weights": "conv1", "output": "relu1"}, "fc": "fc6"}))
    assert read_mapping(path)["fc"] == "fc6"
    with pytest.raises(ParityError, match="are for Caffe references"):
        read_mapping(path, names_only=True)  # a TensorFlow graph pairs names with ops and scopes
    path.write_text(json.dumps({"conv": {"weights": 3}}))
    with pytest.raises(ParityError, match="'weights' must be a Caffe layer name"):
        read_mapping(path)
    path.write_text(json.dumps({"conv": {"kernel": "conv1"}}))
    with pytest.raises(ParityError, match="expected a Caffe layer name or"):
        read_mapping(path)
