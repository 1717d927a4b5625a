"""`parity convert`: a .keras file a fresh process loads with no custom_objects, and weights-only files."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from parity.caffe.fixtures import load_fixture
from parity.caffe.graph import Net
from parity.caffe.reading.caffemodel import read_caffemodel
from parity.cli import main
from parity.convert import convert_net
from parity.data.layout import to_keras_layout

TINY = load_fixture("tiny")


@pytest.fixture(scope="module")
def converted():
    return convert_net(Net.from_prototxt(TINY.prototxt), read_caffemodel(TINY.weights_path()))


@pytest.fixture(scope="module")
def sample():
    from parity.data.reference import find_references

    return to_keras_layout(find_references(TINY.references)[0].inputs()["data"])


def run_convert(tmp_path, *extra) -> None:
    assert main(["convert", str(TINY.prototxt), str(TINY.weights_path()), *map(str, extra)]) == 0


def test_keras_file_loads_in_a_fresh_process_without_custom_objects(tmp_path, converted, sample):
    path = tmp_path / "tiny.keras"
    run_convert(tmp_path, "-o", path)
    np.save(tmp_path / "x.npy", sample, allow_pickle=False)
    script = (
        "import json, sys, numpy as np, keras, parity\n"
        f"m = keras.saving.load_model({str(path)!r})\n"
        f"y = m.predict_on_batch(np.load({str(tmp_path / 'x.npy')!r}, allow_pickle=False))\n"
        f"np.save({str(tmp_path / 'y.npy')!r}, np.asarray(y[0] if isinstance(y, list) else y), allow_pickle=False)\n"
        "print(json.dumps([type(l).__name__ for l in m.layers]))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    classes = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "Lambda" not in classes and "CaffePooling2D" in classes
    expected = converted.model.predict_on_batch(sample)
    expected = expected[0] if isinstance(expected, list) else expected
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy", allow_pickle=False), expected)


def test_layers_carry_caffe_names(converted):
    names = {layer.name for layer in converted.model.layers}
    assert {"conv1", "relu1", "pool1", "conv2", "fc1", "prob"} <= names


def zeroed_copy():
    """The same converted architecture with every weight set to zero."""
    fresh = convert_net(Net.from_prototxt(TINY.prototxt), read_caffemodel(TINY.weights_path())).model
    for layer in fresh.layers:
        layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    return fresh


def test_weights_h5_loads_with_load_weights(tmp_path, converted, sample):
    path = tmp_path / "tiny.weights.h5"
    run_convert(tmp_path, "--weights-h5", path)
    model = zeroed_copy()
    model.load_weights(path)
    for got, want in zip(model.get_weights(), converted.model.get_weights()):
        np.testing.assert_array_equal(got, want)


def test_weights_npz_holds_keras_layout_arrays_by_layer_and_param(tmp_path, converted):
    path = tmp_path / "tiny.npz"
    run_convert(tmp_path, "--weights-npz", path)
    caffe = read_caffemodel(TINY.weights_path()).blobs
    with np.load(path, allow_pickle=False) as npz:
        arrays = dict(npz)
    assert set(arrays) >= {"conv1/kernel", "conv1/bias", "conv2/kernel", "fc1/kernel", "fc1/bias"}
    assert "conv2/bias" not in arrays  # bias_term: false
    # Keras kernel (kh, kw, in, out) is Caffe's (out, in, kh, kw) transposed.
    np.testing.assert_array_equal(arrays["conv1/kernel"], caffe["conv1"][0].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(arrays["fc1/bias"], caffe["fc1"][1])
    # The Dense kernel is re-ordered from Caffe's (C, H, W) flatten order to Keras' (H, W, C).
    weight = caffe["fc1"][0].reshape(10, 8, 3, 4)  # pool_clip is 8x3x4
    np.testing.assert_array_equal(arrays["fc1/kernel"], weight.transpose(2, 3, 1, 0).reshape(96, 10))


def test_nothing_is_written_when_conversion_fails(tmp_path, capsys):
    bad = tmp_path / "bad.prototxt"
    bad.write_text("layer { name: 'x' type: 'Nope' top: 'x' }\n")
    out = tmp_path / "m.keras"
    assert main(["convert", str(bad), str(TINY.weights_path()), "-o", str(out)]) == 2
    assert not out.exists() and list(tmp_path.iterdir()) == [bad]


BATCHNORM_NET = """name: "bn_only"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 3 dim: 4 } } }
layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" batch_norm_param { use_global_stats: true } }
"""

CAFFE_FORWARD = """import sys, numpy as np, caffe
caffe.set_mode_cpu()
net = caffe.Net(sys.argv[1], sys.argv[2], caffe.TEST)
net.blobs["data"].data[...] = np.load(sys.argv[3], allow_pickle=False)
np.save(sys.argv[4], net.forward()["bn"], allow_pickle=False)
"""


@pytest.mark.caffe
def test_batchnorm_with_a_zero_scale_factor_matches_real_caffe(tmp_path):
    """batch_norm_layer.cpp: scale_factor s == 0 means the stored mean and variance count as 0 (not as
    mean/1, variance/1), so the output is x / sqrt(eps). Real Caffe's output on a fixed input is the
    reference; a conversion that treated s == 0 as "no scaling" would subtract mean [1, 2] and divide by
    sqrt([3, 4] + eps)."""
    import os

    from support import caffe_python_or_skip

    from parity.caffe.reading.caffemodel_writer import write_caffemodel
    from parity.caffe.reading.prototxt import read_prototxt

    python = caffe_python_or_skip()
    prototxt = tmp_path / "bn.prototxt"
    prototxt.write_text(BATCHNORM_NET)
    blobs = {"bn": [np.array([1.0, 2.0], np.float32), np.array([3.0, 4.0], np.float32), np.array([0.0], np.float32)]}
    weights = write_caffemodel(tmp_path / "bn.caffemodel", read_prototxt(prototxt), blobs)
    x = np.random.default_rng(5).uniform(-0.01, 0.01, (1, 2, 3, 4)).astype(np.float32)  # outputs ~ +-3
    np.save(tmp_path / "x.npy", x, allow_pickle=False)
    proc = subprocess.run([python, "-c", CAFFE_FORWARD, prototxt, weights, tmp_path / "x.npy", tmp_path / "y.npy"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "GLOG_minloglevel": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    caffe_out = np.load(tmp_path / "y.npy", allow_pickle=False)
    np.testing.assert_allclose(caffe_out, x / np.sqrt(np.float32(1e-5)), rtol=1e-5)  # Caffe's semantics, as read
    converted = convert_net(Net.from_prototxt(prototxt), read_caffemodel(weights))
    got = np.asarray(converted.model.predict_on_batch(to_keras_layout(x)))
    np.testing.assert_allclose(got, to_keras_layout(caffe_out), rtol=0, atol=1e-5)
