"""`parity dump` runs any net the reference Caffe runs: its preflight does not depend on what parity can
convert (issue 14). Caffe decides, in a child process, and what it stops on is one line."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from support import caffe_python_or_skip
from test_dump_input import IMAGE, dump_fails_with, run_parity

from parity.caffe.fixtures import load_fixture
from parity.caffe.reading.caffemodel_writer import write_caffemodel
from parity.caffe.reading.prototxt import read_prototxt
from parity.cli import main

SSD = load_fixture("ssd")
FILTER = """name: "filtered"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "total" type: "Reduction" bottom: "conv" top: "total" reduction_param { operation: ASUM axis: 1 } }
layer { name: "keep" type: "Threshold" bottom: "total" top: "keep" threshold_param { threshold: 0 } }
layer { name: "chosen" type: "Filter" bottom: "conv" bottom: "keep" top: "chosen" }
"""


def ssd_argv() -> list:
    return [SSD.prototxt, SSD.weights_path(quiet=True), "--image", IMAGE, "--resize", "64,64", "--mean",
            "104,117,123", "--granularity", "blob"]


@pytest.mark.caffe
def test_a_layer_parity_does_not_convert_is_dumped_and_then_a_clear_check_error(tmp_path, capsys):
    """Filter (its top's batch depends on the data) is refused by `check` with the reason; `dump` runs it."""
    python = caffe_python_or_skip()
    prototxt = tmp_path / "filtered.prototxt"
    prototxt.write_text(FILTER)
    weights = write_caffemodel(tmp_path / "filtered.caffemodel", read_prototxt(prototxt),
                               {"conv": [np.full((4, 3, 3, 3), 0.01, np.float32), np.zeros(4, np.float32)]})
    out = tmp_path / "refs"
    proc = run_parity(python, ["dump", prototxt, weights, "--image", IMAGE, "--resize", "8,8", "--out", out])
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((out / "chelsea" / "manifest.json").read_text())
    assert [(e["layer"], e["type"]) for e in manifest["entries"]][-1] == ("chosen", "Filter")
    assert main(["check", str(prototxt), str(weights), "--blobs", str(out), "-q"]) == 2
    assert "unsupported layer types: Filter (chosen): not converted, because" in capsys.readouterr().err
    assert main(["check", str(prototxt), str(weights), "--blobs", str(out), "--until", "keep", "-q"]) == 0


@pytest.mark.caffe
def test_a_detector_is_dumped_and_checked_end_to_end_head_included(tmp_path):
    python = caffe_python_or_skip()
    argv = ssd_argv()
    out = tmp_path / "refs"
    proc = run_parity(python, ["dump", *argv, "--out", out])
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((out / "chelsea" / "manifest.json").read_text())
    assert [e["type"] for e in manifest["entries"]][-2:] == ["DetectionOutput"] * 2
    assert main(["check", str(argv[0]), str(argv[1]), "--blobs", str(out), "-q"]) == 0


@pytest.mark.caffe
def test_dump_until_runs_the_net_up_to_that_layer(tmp_path):
    python = caffe_python_or_skip()
    argv = ssd_argv()
    out = tmp_path / "refs"
    proc = run_parity(python, ["dump", *argv, "--until", "mbox_conf", "--out", out])
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((out / "chelsea" / "manifest.json").read_text())
    assert manifest["until"] == "mbox_conf" and manifest["entries"][-1]["layer"] == "mbox_conf"
    assert manifest["model"]["prototxt"]["file"] == "deploy.prototxt"  # the file given, not a cut copy
    (tmp_path / "x").mkdir()
    dump_fails_with(tmp_path / "x", [*argv, "--until", "no_such_layer"], "--until 'no_such_layer'")


def test_learned_blobs_the_caffemodel_lacks_are_refused_from_the_net_caffe_built(tmp_path):
    """The backstop for types parity's preflight cannot size: the learned blobs of the net Caffe built
    (`params`), looked up in the caffemodel. A layer missing there ran on Caffe's random fillers."""
    from parity.caffe.dump import _check_filled
    from parity.caffe.graph import Net
    from parity.errors import ParityError

    prototxt = tmp_path / "embed.prototxt"
    prototxt.write_text(EMBED)
    weights = write_caffemodel(tmp_path / "empty.caffemodel", read_prototxt(data_only(tmp_path)), {})
    with pytest.raises(ParityError, match="layer 'embed' has learned blobs.*random fillers"):
        _check_filled(Net.from_prototxt(prototxt), weights, {"embed": [(10, 4), (4,)]})


EMBED = ('name: "embed"\nlayer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 } } }\n'
         'layer { name: "embed" type: "Embed" bottom: "data" top: "embed" '
         'embed_param { num_output: 4 input_dim: 10 } }\n')


def data_only(tmp_path: Path) -> Path:
    """The embed net without its embed layer: a caffemodel of it lacks the layer entirely."""
    path = tmp_path / "data_only.prototxt"
    path.write_text(EMBED.split('layer { name: "embed"')[0])
    return path


@pytest.mark.caffe
def test_learned_blobs_the_caffemodel_lacks_are_one_line_naming_the_layer(tmp_path):
    prototxt = tmp_path / "embed.prototxt"
    prototxt.write_text(EMBED)
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 3), np.float32))
    for weights in (write_caffemodel(tmp_path / "empty.caffemodel", read_prototxt(data_only(tmp_path)), {}),
                    write_caffemodel(tmp_path / "no_blobs.caffemodel", read_prototxt(prototxt), {})):
        dump_fails_with(tmp_path, [prototxt, weights, "--input", x], "layer 'embed' (Embed)", "needs 2 blob(s)")
