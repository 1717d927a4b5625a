"""`parity dump` runs any net the reference Caffe runs: its preflight does not depend on what parity can
convert (issue 14). Caffe decides, in a child process, and what it stops on is one line."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from parity.cli import main
from parity.fixtures import load_fixture
from parity.reading.caffemodel_writer import write_caffemodel
from parity.reading.prototxt import read_prototxt
from support import caffe_python_or_skip
from test_dump_input import IMAGE, dump_fails_with, run_parity

SSD = load_fixture("ssd")
DETECTION = ('layer { name: "detection_out" type: "DetectionOutput" bottom: "mbox_loc" bottom: "mbox_conf_flatten" '
             'bottom: "mbox_priorbox" top: "detection_out" detection_output_param { num_classes: 21 '
             'share_location: true background_label_id: 0 nms_param { nms_threshold: 0.45 top_k: 400 } '
             'code_type: CENTER_SIZE keep_top_k: 200 confidence_threshold: 0.01 } }\n')


def ssd_with_its_head(tmp_path: Path) -> list:
    prototxt = tmp_path / "ssd_head.prototxt"
    prototxt.write_text(SSD.prototxt.read_text() + DETECTION)
    return [prototxt, SSD.weights_path(quiet=True), "--image", IMAGE, "--resize", "64,64", "--mean", "104,117,123",
            "--granularity", "blob"]


@pytest.mark.caffe
def test_a_layer_parity_does_not_convert_is_dumped_and_then_a_clear_check_error(tmp_path, capsys):
    python = caffe_python_or_skip()
    argv = ssd_with_its_head(tmp_path)
    out = tmp_path / "refs"
    proc = run_parity(python, ["dump", *argv, "--out", out])
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((out / "chelsea" / "manifest.json").read_text())
    last = manifest["entries"][-1]
    assert (last["layer"], last["type"]) == ("detection_out", "DetectionOutput") and last["shape"][-1] == 7
    # checking it: the clear error it was, naming the type; up to the layer before it, a pass
    assert main(["check", str(argv[0]), str(argv[1]), "--blobs", str(out), "-q"]) == 2
    assert "unsupported layer types: DetectionOutput (detection_out)" in capsys.readouterr().err
    assert main(["check", str(argv[0]), str(argv[1]), "--blobs", str(out), "--until", "mbox_conf_flatten", "-q"]) == 0


@pytest.mark.caffe
def test_dump_until_runs_the_net_up_to_that_layer(tmp_path):
    python = caffe_python_or_skip()
    argv = ssd_with_its_head(tmp_path)
    out = tmp_path / "refs"
    proc = run_parity(python, ["dump", *argv, "--until", "mbox_conf", "--out", out])
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((out / "chelsea" / "manifest.json").read_text())
    assert manifest["until"] == "mbox_conf" and manifest["entries"][-1]["layer"] == "mbox_conf"
    assert manifest["model"]["prototxt"]["file"] == "ssd_head.prototxt"  # the file given, not a cut copy
    (tmp_path / "x").mkdir()
    dump_fails_with(tmp_path / "x", [*argv, "--until", "no_such_layer"], "--until 'no_such_layer'")


@pytest.mark.caffe
def test_learned_blobs_the_caffemodel_lacks_are_refused_for_a_type_parity_does_not_know(tmp_path):
    """Embed has learned blobs and parity does not convert it: its preflight cannot see the missing
    weights, the net Caffe built does (Caffe would have run it on random fillers)."""
    prototxt = tmp_path / "embed.prototxt"
    prototxt.write_text('name: "embed"\nlayer { name: "data" type: "Input" top: "data" '
                        'input_param { shape { dim: 1 dim: 3 } } }\n'
                        'layer { name: "embed" type: "Embed" bottom: "data" top: "embed" '
                        'embed_param { num_output: 4 input_dim: 10 } }\n')
    data_only = tmp_path / "data_only.prototxt"  # a caffemodel without the embed layer at all
    data_only.write_text(prototxt.read_text().split("layer { name: \"embed\"")[0])
    weights = write_caffemodel(tmp_path / "empty.caffemodel", read_prototxt(data_only), {})
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 3), np.float32))
    dump_fails_with(tmp_path, [prototxt, weights, "--input", x], "layer 'embed' has learned blobs",
                    "random fillers")
    # a caffemodel that has the layer with the wrong number of blobs: Caffe's own CHECK, as one line
    weights = write_caffemodel(tmp_path / "no_blobs.caffemodel", read_prototxt(prototxt), {})
    dump_fails_with(tmp_path, [prototxt, weights, "--input", x], "Incompatible number of blobs for layer embed",
                    "embed.prototxt:3")
