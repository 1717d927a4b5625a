"""--until: convert and check a net up to a layer; layers without an inference meaning are named."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from parity.caffe.fixtures import load_fixture
from parity.cli import main

TINY = load_fixture("tiny")
REPO = Path(__file__).resolve().parents[1]


def with_training_layers(tmp_path) -> Path:
    path = tmp_path / "train_like.prototxt"
    path.write_text(TINY.prototxt.read_text() + (
        'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc1" bottom: "prob" top: "loss" }\n'
        'layer { name: "accuracy" type: "Accuracy" bottom: "fc1" bottom: "prob" top: "accuracy" }\n'
        'layer { name: "norm" type: "FancyNorm" bottom: "pool1" top: "norm" }\n'))  # a fork's custom type
    return path


def test_layers_without_inference_meaning_are_named_with_the_way_out(capsys, tmp_path):
    code = main(["convert", str(with_training_layers(tmp_path)), str(TINY.weights_path()),
                 "-o", str(tmp_path / "m.keras")])
    err = capsys.readouterr().err
    assert code == 2
    assert "without an inference meaning: SoftmaxWithLoss (loss); Accuracy (accuracy)" in err
    assert "--until" in err and "unsupported layer types: FancyNorm (norm)" in err


def test_until_converts_up_to_the_layer(capsys, tmp_path):
    out = tmp_path / "m.npz"
    assert main(["convert", str(with_training_layers(tmp_path)), str(TINY.weights_path()), "--until", "prob",
                 "--weights-npz", str(out)]) == 0
    assert out.exists()


def test_until_checks_only_the_layers_up_to_it(capsys, tmp_path):
    report = tmp_path / "r.json"
    assert main(["check", "--model", "tiny", "--until", "pool2", "--json", str(report), "-q"]) == 0
    layers = [lay["layer"] for lay in json.loads(report.read_text())["layers"]]
    assert layers[-1] == "pool2" and "fc1" not in layers and "conv1" in layers


def test_until_an_unknown_layer_lists_the_layers(capsys):
    assert main(["check", "--model", "tiny", "--until", "nope"]) == 2
    assert "no such layer" in capsys.readouterr().err


def test_pytest_until(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pytest", "parity/", "--model=tiny", "--until=conv2", "-q",
                           "-p", "no:cacheprovider"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "6 passed" in proc.stdout  # data conv1 relu1 pool1 pool_clip conv2
