"""The float64 twin that measures each output's float32 noise: exact where it computes directly, cached
by the float32 outputs it explains, and falling back (parity's own conversion, else the fixed rule)
where a model cannot compute in float64."""
from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

import parity.check.noise
from parity.check.compare import EPS32, NoiseRule, effective_noise
from parity.check.noise import Twin, run_float64
from parity.check.pipeline import FALLBACK, check_reference, prepare
from parity.convert import convert_net
from parity.diagnose.report import render
from parity.targets import from_fixture


def exact(model, x):
    """`model` rebuilt layer by layer in NumPy float64 (its float32 weights widened): the truth."""
    y = x.astype(np.float64)
    for layer in model.layers[1:]:
        if isinstance(layer, keras.layers.Conv2D):
            k = layer.kernel.numpy().astype(np.float64)
            kh, kw, per_in, out = k.shape
            groups = layer.groups
            hh, ww = y.shape[1] - kh + 1, y.shape[2] - kw + 1
            z = np.zeros((1, hh, ww, out))
            for o in range(out):
                g = o // (out // groups)
                patch_in = y[..., g * per_in:(g + 1) * per_in]
                for i in range(kh):
                    for j in range(kw):
                        z[0, :, :, o] += patch_in[0, i:i + hh, j:j + ww, :] @ k[i, j, :, o]
            y = z + layer.bias.numpy().astype(np.float64)
        elif isinstance(layer, keras.layers.Dense):
            y = y @ layer.kernel.numpy().astype(np.float64) + layer.bias.numpy().astype(np.float64)
        elif isinstance(layer, keras.layers.Flatten):
            y = y.reshape(1, -1)
    return y


def small_model():
    rng = np.random.default_rng(0)
    x = keras.Input((6, 7, 4))
    y = keras.layers.Conv2D(6, 3, name="plain")(x)
    y = keras.layers.Conv2D(6, 3, groups=6, name="depthwise")(y)
    y = keras.layers.Conv2D(4, 1, groups=2, name="grouped")(y)
    y = keras.layers.Flatten()(y)
    y = keras.layers.Dense(9, name="dense")(y)
    model = keras.Model(x, y)
    for v in model.weights:
        v.assign(rng.standard_normal(v.shape).astype(np.float32))
    return model, rng.standard_normal((1, 6, 7, 4)).astype(np.float32)


@pytest.mark.parametrize("slice_bytes", [64 << 20, 64])  # whole kernels, and a slice per output channel
def test_the_twin_computes_conv_depthwise_grouped_and_dense_exactly_in_float64(monkeypatch, slice_bytes):
    monkeypatch.setattr(parity.check.noise, "SLICE_BYTES", slice_bytes)
    model, x = small_model()
    (twin,) = run_float64(model, [x])
    truth = exact(model, x)
    assert twin.dtype == np.float64
    assert np.abs(twin - truth).max() < 1e-9 * np.abs(truth).max()
    float32 = np.asarray(model(x)).astype(np.float64)
    assert np.abs(float32 - truth).max() > 0  # the float32 run rounds: that difference is the noise


def test_effective_noise_adds_what_is_inherited_and_one_float32_step():
    assert effective_noise(0.0, 2.0) == 2 * EPS32  # an exact copy: one step of its largest value
    assert effective_noise(1e-6, 2.0) == pytest.approx(1e-6 + 2 * EPS32)
    assert effective_noise(1e-9, 2.0, inherited=1e-6) == pytest.approx(2e-6 + 2 * EPS32)  # inputs' relative noise


def test_noise_is_cached_by_the_float32_outputs_it_explains(monkeypatch, tmp_path):
    monkeypatch.setenv("PARITY_CACHE", str(tmp_path))
    target = from_fixture("tiny")
    prepared = prepare(target)
    ref = target.references[0]
    first = check_reference(prepared, ref, NoiseRule())
    assert list((tmp_path / "noise").glob("*.json"))

    def no_twin(*_args):
        raise AssertionError("the twin ran although the noise was cached")

    monkeypatch.setattr(parity.check.noise, "run_float64", no_twin)
    again = check_reference(prepared, ref, NoiseRule())
    assert [r.noise for r in again.layers] == [r.noise for r in first.layers]
    inputs = {"data": ref.inputs()["data"] * np.float32(1.01)}  # another input: other outputs, a miss
    with pytest.raises(AssertionError, match="the twin ran"):
        check_reference(prepared, ref, NoiseRule(), inputs)


def casting(layer_name: str):
    """A converter whose `layer_name` insists on float32: such a model cannot be run in float64."""
    def convert(net, weights):
        converted = convert_net(net, weights)
        layer = converted.model.get_layer(converted.keras_names[layer_name])
        call = layer.call
        layer.call = lambda x, *a, **k: ops.cast(call(x, *a, **k), "float32")
        return converted
    return convert


def test_a_model_that_cannot_run_in_float64_borrows_parity_s_own_conversion(monkeypatch, tmp_path):
    monkeypatch.setenv("PARITY_CACHE", str(tmp_path))
    target = from_fixture("tiny")
    prepared = prepare(target, convert=casting("relu1"))
    report = check_reference(prepared, target.references[0], NoiseRule())
    assert report.status == "pass" and all(r.noise is not None for r in report.layers)
    assert report.header["noise"]["source"].startswith("parity's own conversion of the Caffe net")
    assert "noise: measured by parity's own conversion" in render(report)


def test_without_any_float64_twin_the_fixed_rule_decides_and_the_report_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("PARITY_CACHE", str(tmp_path))
    target = from_fixture("tiny")
    prepared = prepare(target, convert=casting("relu1"))
    prepared.twin = Twin(prepared.capture)  # no fallback, as for a TensorFlow graph
    report = check_reference(prepared, target.references[0], NoiseRule())
    assert report.status == "pass" and all(r.noise is None and r.atol == FALLBACK.atol for r in report.layers)
    assert "cannot compute in float64" in report.header["noise"]["unavailable"]
    assert f"used the fixed rule, atol {FALLBACK.atol:g}" in render(report)
