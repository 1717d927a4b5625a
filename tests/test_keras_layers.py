"""Every custom Keras layer survives a `.keras` round trip: same config, same outputs, no custom_objects.

A converted model is only as portable as its least carefully serialized layer: a get_config that
forgets a constructor argument still saves and loads, but the reloaded layer quietly runs with the
default. So each layer parity exports is built here with arguments other than its defaults, inside a
tiny functional model with random weights, saved, loaded with plain `keras.saving.load_model` (as a
user would, after `import parity`), and compared with the original: config and outputs alike.

The table is keyed by the names in `parity.keras_layers.__all__`, so a new layer without a case fails.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
import pytest

from parity import keras_layers
from parity.convert.proposal import anchors

Shape = tuple[int, ...]
Inputs = Callable[[np.random.Generator], list[np.ndarray]]


def normal(*shapes: Shape) -> Inputs:
    """Standard normal float32 arrays of these shapes (the default input)."""
    return lambda rng: [rng.standard_normal(s).astype(np.float32) for s in shapes]


@dataclass(frozen=True)
class LayerCase:
    """One layer configured away from its defaults, with fixed-shape inputs (batch axis included)."""

    kwargs: dict
    shapes: tuple[Shape, ...]
    inputs: Inputs | None = None  # default: normal(*shapes); always float32, as Caffe's blobs are

    def arrays(self, rng: np.random.Generator) -> list[np.ndarray]:
        return (self.inputs or normal(*self.shapes))(rng)


def detection_inputs(rng: np.random.Generator) -> list[np.ndarray]:
    """SSD's DetectionOutput bottoms for 6 priors, 3 classes, locations per class (Caffe's memory order)."""
    priors, classes = 6, 3
    centres = rng.uniform(0.2, 0.8, (priors, 2))
    sizes = rng.uniform(0.1, 0.4, (priors, 2))
    corners = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)
    variances = np.tile([0.1, 0.1, 0.2, 0.2], (priors, 1))
    prior_blob = np.stack([corners.reshape(-1), variances.reshape(-1)])[None].astype(np.float32)
    loc = (0.5 * rng.standard_normal((1, priors * classes * 4))).astype(np.float32)
    conf = rng.uniform(0.0, 1.0, (1, priors * classes)).astype(np.float32)
    return [loc, conf, prior_blob]


PROPOSAL_ANCHORS = anchors(8, [0.5, 2.0], [1.0, 2.0])  # 4 anchors, as the Proposal converter makes them


def proposal_inputs(rng: np.random.Generator) -> list[np.ndarray]:
    """Faster R-CNN's Proposal bottoms on a 3x4 map of 4 anchors, for a 24x32 image."""
    count = len(PROPOSAL_ANCHORS)
    scores = rng.uniform(0.0, 1.0, (1, 3, 4, 2 * count)).astype(np.float32)
    deltas = (0.2 * rng.standard_normal((1, 3, 4, 4 * count))).astype(np.float32)
    return [scores, deltas, np.array([[24.0, 32.0, 1.0]], np.float32)]


def recurrent_inputs(rng: np.random.Generator) -> list[np.ndarray]:
    """x (T=4, N=2, 5), cont (4, 2) with a sequence restarting at step 2, x_static (2, 2), h_0 (1, 2, 3)."""
    cont = np.ones((4, 2), np.float32)
    cont[0] = cont[2, 1] = 0.0
    return [rng.standard_normal((4, 2, 5)).astype(np.float32), cont,
            rng.standard_normal((2, 2)).astype(np.float32), rng.standard_normal((1, 2, 3)).astype(np.float32)]


# Every constructor argument is set, to a value other than its default except where the default is what lets
# other arguments act (DetectionOutput's nms=True for nms_threshold, eta and top_k, and its priors' variances
# read; Reduce's normalize_variance for eps; global_pooling=False for the kernel; use_scale beside use_bias).
# An argument that then does nothing (an MVN's coeff, a "within" LRN's k, exp's power and threshold) is still
# set: the config check catches a get_config without it.
CASES: dict[str, LayerCase] = {
    "CaffeArgMax": LayerCase({"top_k": 2, "values": True}, ((2, 3, 5),)),
    "CaffeBroadcast": LayerCase({"operation": "add", "caffe_shape": (2, 3), "placed": (2, 3, 1, 1)},
                                ((2, 4, 5, 3), (2, 3))),
    "CaffeConstant": LayerCase({"value_shape": (2, 3)}, ((2, 4),)),
    "CaffeCrop": LayerCase({"begin": (1, 0, 1), "size": (2, 3, 1)}, ((2, 4, 5, 3),)),
    "CaffeDeconvolution": LayerCase({"filters": 4, "kernel_size": (2, 3), "strides": (2, 1), "dilation_rate": (1, 2),
                                     "groups": 2, "use_bias": False}, ((1, 3, 4, 2),)),
    "CaffeDetectionOutput": LayerCase({"num_classes": 3, "share_location": False, "background_label_id": 1,
                                       "code_type": "CENTER_SIZE", "variance_encoded_in_target": False,
                                       "keep_top_k": 4, "confidence_threshold": 0.2, "nms": True,
                                       "nms_threshold": 0.45, "eta": 0.9, "top_k": 5},
                                      ((1, 72), (1, 18), (1, 2, 24)), detection_inputs),
    "CaffeEltwise": LayerCase({"operation": "sum", "coeffs": [0.5, -2.0]}, ((2, 4, 3), (2, 4, 3))),
    "CaffeLRN": LayerCase({"size": 3, "alpha": 0.5, "beta": 0.6, "k": 2.0, "region": "within"}, ((1, 5, 6, 4),)),
    "CaffeNormalize": LayerCase({"across_spatial": False, "eps": 1e-6, "scale_shape": (3,)}, ((2, 4, 5, 3),)),
    "CaffePooling2D": LayerCase({"method": "ave", "kernel": (3, 2), "stride": (2, 1), "pad": (1, 1),
                                 "ceil_mode": False, "global_pooling": False}, ((1, 5, 6, 2),)),
    "CaffeReduce": LayerCase({"operation": "mvn", "axes": (1, 2), "coeff": 2.0, "eps": 1e-3,
                              "normalize_variance": True}, ((2, 4, 5, 3),)),
    "CaffeScale": LayerCase({"weight_shape": (1, 1, 3), "use_bias": True, "use_scale": True}, ((2, 4, 5, 3),)),
    "CaffeSlice": LayerCase({"axis": 2, "points": (1, 3)}, ((2, 4, 5, 3),)),
    "CaffeTile": LayerCase({"axis": 2, "tiles": 3}, ((2, 4, 5, 3),)),
    "CaffeUnary": LayerCase({"op": "exp", "power": 2.0, "scale": 0.5, "shift": 0.25, "base": 2.0, "threshold": 0.1},
                            ((2, 4, 3),)),
    "CaffeBatchReindex": LayerCase({}, ((3, 2, 4), (5,)), lambda rng: [
        rng.standard_normal((3, 2, 4)).astype(np.float32), rng.uniform(0.0, 2.99, (5,)).astype(np.float32)]),
    "CaffeEmbed": LayerCase({"input_dim": 5, "num_output": 3, "bias_term": False}, ((2, 4),),
                            lambda rng: [rng.uniform(0.0, 4.99, (2, 4)).astype(np.float32)]),
    "CaffeIm2col": LayerCase({"kernel": (2, 3), "stride": (2, 1), "pad": (1, 0), "dilation": (1, 2)},
                             ((1, 5, 7, 2),)),
    "CaffeParameter": LayerCase({"value_shape": (3, 4)}, ((2, 5),)),
    "CaffeRecurrent": LayerCase({"cell": "rnn", "num_output": 3, "steps": 4, "streams": 2, "input_dim": 5,
                                 "static_dim": 2, "expose_hidden": True},
                                ((4, 2, 5), (4, 2), (2, 2), (1, 2, 3)), recurrent_inputs),
    "CaffeMaxPoolMask": LayerCase({"kernel": (3, 2), "stride": (2, 1), "pad": (1, 0), "ceil_mode": False,
                                   "global_pooling": False}, ((1, 5, 6, 2),)),
    "CaffeMaxUnpool": LayerCase({"size": (5, 6)}, ((1, 2, 3, 2), (1, 2, 3, 2)), lambda rng: [
        rng.standard_normal((1, 2, 3, 2)).astype(np.float32), rng.integers(0, 30, (1, 2, 3, 2)).astype(np.float32)]),
    "CaffePad": LayerCase({"pads": (1, 2, 0, 1), "mode": "replicate", "value": 2.5}, ((1, 3, 4, 2),)),
    "CaffeProposal": LayerCase({"anchors": PROPOSAL_ANCHORS.tolist(), "feat_stride": 8, "min_size": 4.0,
                                "pre_nms_topn": 20, "post_nms_topn": 5, "nms_thresh": 0.6, "with_scores": True},
                               ((1, 3, 4, 8), (1, 3, 4, 16), (1, 3)), proposal_inputs),
    "CaffeResize2D": LayerCase({"size": (5, 7), "mode": "align_corners"}, ((1, 3, 4, 2),)),
}


def plain(value):
    """`value` with tuples as lists, at any depth: a config read back from JSON holds lists only."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def own_arguments(cls: type) -> list[str]:
    """The constructor arguments `cls` adds to keras.layers.Layer's (trainable, dtype, name, ...)."""
    base = set(inspect.signature(keras.layers.Layer.__init__).parameters)
    return sorted(p.name for p in inspect.signature(cls.__init__).parameters.values()
                  if p.name not in base and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))


def outputs(model: keras.Model, arrays: list[np.ndarray]) -> list[np.ndarray]:
    result = model(arrays, training=False)
    return [keras.ops.convert_to_numpy(t) for t in (result if isinstance(result, (list, tuple)) else [result])]


def test_the_table_covers_exactly_the_exported_layers():
    assert sorted(CASES) == sorted(keras_layers.__all__)


@pytest.mark.parametrize("name", keras_layers.__all__)
def test_a_saved_layer_reloads_with_its_config_and_outputs(name, tmp_path):
    cls = getattr(keras_layers, name)
    case = CASES.get(name)
    if case is None:
        pytest.fail(f"{name} is exported by parity.keras_layers but has no case in CASES")
    assert keras.saving.get_registered_object(f"parity>{name}") is cls, "not registered for load_model"
    # Every constructor argument is in the case, so a get_config that leaves one out is caught below.
    assert sorted(case.kwargs) == own_arguments(cls), "the case must set every constructor argument"

    rng = np.random.default_rng(0)
    inputs = [keras.Input(batch_shape=s, dtype="float32") for s in case.shapes]
    layer = cls(**case.kwargs, name="under_test")
    model = keras.Model(inputs, layer(inputs if len(inputs) > 1 else inputs[0]))
    layer.set_weights([rng.standard_normal(w.shape).astype(w.dtype) for w in layer.get_weights()])
    arrays = case.arrays(rng)

    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # no custom_objects: importing parity registered the layers
    reloaded = loaded.get_layer("under_test")
    assert type(reloaded) is cls
    config = reloaded.get_config()
    assert plain(config) == plain(layer.get_config())
    for key, value in case.kwargs.items():
        assert plain(config.get(key)) == plain(value), f"get_config has {key}={config.get(key)!r}, was given {value!r}"
    for got, expected in zip(outputs(loaded, arrays), outputs(model, arrays), strict=True):
        assert got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)
