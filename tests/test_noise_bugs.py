"""Subtle bugs, each about 30x its float noise, are named at their own layer by the noise rule.

The planted bug scales one output channel's kernel of a Convolution or InnerProduct by (1 + d), with
d chosen so that the layer's output moves by about 30 times its float32 noise there: far below what
the old fixed tolerance (atol 1e-2) saw in early layers, far above what float noise explains. It is
planted early, in the middle and late in three deep fixtures. The noise rule must name the planted
layer's reference as the first divergence and report the error as a multiple of its noise; the fixed
rule, for contrast, misses the early ones.
"""
from __future__ import annotations

import numpy as np
import pytest

from parity.check.compare import FAIL, K, NoiseRule, Tolerance
from parity.check.pipeline import DEFAULT_ATOL, DEFAULT_RTOL, check_reference, prepare
from parity.targets import from_fixture

MOVE = 30.0  # the bug's size, in units of the output's noise
PLANTS = {  # (early, middle, late), each a layer with a kernel
    "vgg19": ("conv1_2", "conv3_4", "fc7"),
    "resnet50": ("conv1", "res3b_branch2b", "res5c_branch2c"),
    "mobilenet": ("conv2_2/sep", "conv7_1/dw", "fc7"),
}
CASES = [(model, where, layer) for model, layers in PLANTS.items()
         for where, layer in zip(("early", "middle", "late"), layers)]


@pytest.fixture(scope="module")
def prepared_models():
    """One conversion per fixture, shared: each test scales one channel in place, then restores it."""
    cache = {}

    def get(model):
        if model not in cache:
            target = from_fixture(model)
            cache[model] = (target, prepare(target))
        return cache[model]

    return get


def kernel_of(prepared, layer: str):
    """The Keras layer holding `layer`'s kernel (channels last on its last axis)."""
    return prepared.converted.model.get_layer(prepared.converted.keras_names[layer])


def entry_for(report, layer: str):
    """The report row whose reference reflects `layer` (the end of its in-place chain)."""
    return next(r for r in report.layers if r.layer == layer or layer in (r.covers or ()))


def scaled(keras_layer, channel: int, factor: float):
    """Scale one output channel of the kernel; returns a function that puts it back."""
    original = keras_layer.kernel.numpy()
    kernel = original.copy()
    kernel[..., channel] *= np.float32(factor)
    keras_layer.kernel.assign(kernel)
    return lambda: keras_layer.kernel.assign(original)


def plant_size(prepared, ref, layer: str, row, channel: int) -> float:
    """d such that scaling `channel` by (1 + d) moves the layer's checked output by MOVE x its noise:
    measured with a small trial scale, as the response is linear in d for a kernel."""
    keras_layer, key = kernel_of(prepared, layer), (row.layer, row.top)
    clean = prepared.capture.run(ref.inputs())[key]
    trial = 1e-3
    restore = scaled(keras_layer, channel, 1 + trial)
    try:
        moved = float(np.abs(prepared.capture.run(ref.inputs())[key].astype(np.float64) - clean).max())
    finally:
        restore()
    assert moved > 0, f"scaling {layer} channel {channel} does not reach {row.layer}"
    return trial * MOVE * row.noise / moved


@pytest.mark.parametrize("model,where,layer", CASES, ids=[f"{m}-{w}-{lay}" for m, w, lay in CASES])
def test_a_bug_of_30x_its_noise_is_named_at_its_layer(prepared_models, model, where, layer):
    target, prepared = prepared_models(model)
    ref = target.references[0]
    clean = check_reference(prepared, ref, NoiseRule())
    assert clean.status == "pass"
    row = entry_for(clean, layer)
    keras_layer = kernel_of(prepared, layer)
    channels = keras_layer.kernel.shape[-1]
    got = prepared.capture.run(ref.inputs())[(row.layer, row.top)].reshape(-1, channels)
    channel = int(np.argmax(np.abs(got).max(axis=0)))  # a channel that is active on this input
    d = plant_size(prepared, ref, layer, row, channel)
    restore = scaled(keras_layer, channel, 1 + d)
    try:
        report = check_reference(prepared, ref, NoiseRule())
        fixed = check_reference(prepared, ref, Tolerance(DEFAULT_ATOL, DEFAULT_RTOL))
    finally:
        restore()
    assert report.status == FAIL, f"a bug of {MOVE:g}x the noise at {layer} went unnoticed"
    assert layer in report.first_divergence_covers, (report.first_divergence, report.first_divergence_covers)
    named = entry_for(report, layer)
    assert K < named.ratio < 3 * MOVE, named.ratio  # reported as a multiple of the noise, about MOVE
    assert f"{named.ratio:.0f}x its float32 noise" in "\n".join(_lines(report))
    if where == "early":  # the fixed tolerance is blind here: the bug is far below 1e-2
        assert layer not in (fixed.first_divergence_covers or []), fixed.first_divergence


def _lines(report) -> list[str]:
    from parity.diagnose.report import render

    return render(report).splitlines()
