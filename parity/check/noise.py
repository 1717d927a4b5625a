"""Float32 rounding noise per compared output, measured by running the checked model once more in float64.

Why measure it: a correct float32 conversion differs from Caffe by rounding alone, and rounding error
grows with depth and magnitude: about 2e-6 at MobileNet's first ReLU, 4e-2 at its fourteenth. Any fixed
tolerance is therefore blind where a net is shallow and trips where it is deep, and the references
themselves move by that much between BLAS kernels. The float32 model's distance from the same model
computed in float64 is that rounding error, measured on this input, for this computation: on the zoo it
agrees within about 2x with the distance between Caffe and Keras, and between two BLAS kernels of
Caffe (README, "Tolerances").

The "twin" is not a second model. The float32 capture graph is run once more with every layer's
compute dtype set to float64 for the duration of its call: its float32 variables are cast as each
layer reads them (Keras' autocast), so nothing of the weights is kept twice, and the twin exists only
while it runs. Where a model's layers cannot compute in float64, `estimate` says why, and the caller
estimates with another model (parity's own conversion of the Caffe net) or falls back.
"""
from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

CACHE_FORMAT = 1  # bump when what a cache file holds changes


class TwinUnavailable(Exception):
    """The model's layers cannot run in float64 (a layer fixed to float32, a dtype clash); the message says where."""


@contextmanager
def _float64_compute(layer):
    """`layer` (and the layers inside it) computing in float64 while keeping float32 variables."""
    import keras

    policy = _float64_policy(keras)
    layers = list(layer._flatten_layers(include_self=True, recursive=True))
    saved = [sub._dtype_policy for sub in layers]
    try:
        for sub in layers:
            sub._dtype_policy = policy
        yield
    finally:
        for sub, old in zip(layers, saved):
            sub._dtype_policy = old


_POLICY = {}


def _float64_policy(keras):
    """A dtype policy with float64 compute and float32 variables: Keras then casts each variable as it is
    read, inside the layer's call, and the cast copy is gone when the call returns."""
    if "policy" not in _POLICY:
        class Float64Compute(keras.dtype_policies.DTypePolicy):
            def __init__(self):
                super().__init__("float32")
                self._compute_dtype = "float64"

        _POLICY["policy"] = Float64Compute()
    return _POLICY["policy"]


def run_float64(model, feed: Sequence[np.ndarray]) -> list[np.ndarray]:
    """`model` (a functional keras.Model) run on `feed` with every layer computing in float64."""
    import keras
    import tensorflow as tf

    def in_float64(operation):
        if not isinstance(operation, keras.layers.Layer):
            return operation
        direct = _DIRECT.get(type(operation))
        if direct is not None and direct[0](operation):
            return lambda x, **_: direct[1](operation, x)

        def call(*args, **kwargs):
            with _float64_compute(operation):
                return operation(*args, **kwargs)
        return call

    _register_direct(keras)
    inputs = [tf.convert_to_tensor(np.asarray(x, np.float64)) for x in feed]
    try:
        outputs = model._run_through_graph(inputs, operation_fn=in_float64)
    except (TypeError, ValueError, tf.errors.OpError) as exc:
        message = str(getattr(exc, "message", exc)).strip().splitlines()
        raise TwinUnavailable(message[0] if message else type(exc).__name__) from None
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    arrays = [np.asarray(o) for o in outputs]
    wrong = [str(a.dtype) for a in arrays if a.dtype != np.float64 and np.issubdtype(a.dtype, np.floating)]
    if wrong:
        raise TwinUnavailable(f"some layers computed in {wrong[0]}, not float64")
    return arrays


# Keras' own Conv2D and Dense, computed directly in float64, for two reasons. Memory: a float64 copy of
# VGG-19's fc6 kernel alone is 822 MB, so large kernels are cast and applied a slice of output channels
# at a time. Time: Keras compiles every grouped convolution with XLA on each call (1 s per MobileNet
# depthwise layer in float64); TensorFlow's own depthwise and grouped kernels take milliseconds. Only
# exactly these classes, unquantized, qualify: a subclass may compute something else.
SLICE_BYTES = 64 << 20  # the float64 kernel slice cast at a time
_DIRECT: dict = {}


def _register_direct(keras) -> None:
    if not _DIRECT:
        _DIRECT[keras.layers.Conv2D] = (_plain_conv, _conv2d_float64)
        _DIRECT[keras.layers.Dense] = (_plain_dense, _dense_float64)


def _plain(layer) -> bool:
    return getattr(layer, "quantization_mode", None) is None and not getattr(layer, "lora_enabled", False)


def _plain_conv(layer) -> bool:
    return _plain(layer) and layer.data_format == "channels_last" and (
        layer.groups == 1 or all(d == 1 for d in layer.dilation_rate) or all(s == 1 for s in layer.strides))


def _plain_dense(layer) -> bool:
    return _plain(layer)


def _slices(count: int, bytes_each: int):
    """Output-channel ranges whose float64 kernel slices stay under SLICE_BYTES."""
    step = max(1, SLICE_BYTES // max(1, bytes_each))
    return [(start, min(count, start + step)) for start in range(0, count, step)]


def _finish(layer, y):
    import tensorflow as tf

    if layer.use_bias:
        y = y + tf.cast(layer.bias.value, tf.float64)
    return layer.activation(y) if layer.activation is not None else y


def _conv2d_float64(layer, x):
    import tensorflow as tf

    kernel = layer.kernel.value  # float32 (kh, kw, in/groups, out)
    kh, kw, cin, cout = kernel.shape
    strides, dilations, padding = list(layer.strides), list(layer.dilation_rate), layer.padding.upper()
    if layer.groups == 1:
        parts = [tf.nn.convolution(x, tf.cast(kernel[..., a:b], tf.float64), strides, padding, dilations=dilations)
                 for a, b in _slices(cout, kh * kw * cin * 8)]
        y = parts[0] if len(parts) == 1 else tf.concat(parts, axis=-1)
    elif cin == 1:  # depthwise: output channel g*m + j comes from input channel g
        groups = layer.groups
        depthwise = tf.reshape(tf.cast(kernel, tf.float64), (kh, kw, groups, cout // groups))
        y = tf.nn.depthwise_conv2d(x, depthwise, [1, *strides, 1], padding, dilations=dilations)
    else:
        per = cout // layer.groups
        xs = tf.split(x, layer.groups, axis=-1)
        y = tf.concat([tf.nn.convolution(xs[g], tf.cast(kernel[..., g * per:(g + 1) * per], tf.float64), strides,
                                         padding, dilations=dilations) for g in range(layer.groups)], axis=-1)
    return _finish(layer, y)


def _dense_float64(layer, x):
    import tensorflow as tf

    kernel = layer.kernel.value  # float32 (in, out)
    k, n = kernel.shape
    parts = [tf.tensordot(x, tf.cast(kernel[:, a:b], tf.float64), axes=[[x.shape.rank - 1], [0]])
             for a, b in _slices(n, k * 8)]
    return _finish(layer, parts[0] if len(parts) == 1 else tf.concat(parts, axis=-1))


def layer_noise(got32: np.ndarray, got64: np.ndarray) -> float:
    """The float32 rounding noise of one output: max |float32 - float64| over its elements.

    Non-finite values make no noise estimate (0.0: the strict side, a NaN still fails as it did)."""
    if got32.size == 0 or got32.shape != got64.shape:  # a data-dependent output (detections): judged from its inputs
        return 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(got32.astype(np.float64) - got64)
    finite = diff[np.isfinite(diff)]
    return float(finite.max()) if finite.size else 0.0


@dataclass(frozen=True)
class NoiseTable:
    """The noise of every captured output of one (model, sample), and where it came from."""

    noise: dict[tuple[str, str], float]
    source: str  # what was run in float64, in words, for the report

    def to_json(self) -> dict:
        return {"format": CACHE_FORMAT, "source": self.source,
                "noise": [[layer, top, value] for (layer, top), value in self.noise.items()]}

    @classmethod
    def from_json(cls, data: dict) -> "NoiseTable":
        return cls({(layer, top): float(value) for layer, top, value in data["noise"]}, data["source"])


def fingerprint(keys: Iterable[tuple[str, str]], outputs32: dict, feed: Sequence[np.ndarray], source: str) -> str:
    """The cache key: sha256 over the captured names, the float32 outputs and input bit for bit, and the
    twin's kind. Why the outputs: any change to the graph, the weights, the input or TensorFlow's kernels
    changes them, so a stale noise table is never reused, whoever built the model."""
    import keras
    import tensorflow as tf

    h = hashlib.sha256(json.dumps([CACHE_FORMAT, source, tf.__version__, keras.__version__]).encode())
    for array in feed:
        h.update(np.ascontiguousarray(array).data)
    for key in keys:
        value = np.ascontiguousarray(outputs32[key])
        h.update(json.dumps([key[0], key[1], list(value.shape), str(value.dtype)]).encode())
        h.update(value.data)
    return h.hexdigest()


def cache_path(key: str) -> Path:
    from ..caffe.fixtures import cache_dir

    return cache_dir() / "noise" / f"{key[:32]}.json"


def cached(key: str) -> NoiseTable | None:
    path = cache_path(key)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return NoiseTable.from_json(data) if data.get("format") == CACHE_FORMAT else None
    except (OSError, ValueError, KeyError, TypeError):  # missing or damaged: measure again
        return None


def store(key: str, table: NoiseTable) -> None:
    from ..atomic import atomic_path

    path = cache_path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps(table.to_json()), encoding="utf-8")
    except OSError:  # a read-only cache only costs the next run the twin
        pass


def estimate(model, keys: Sequence[tuple[str, str]], feed: Sequence[np.ndarray], outputs32: dict,
             source: str, use_cache: bool = True) -> NoiseTable:
    """Every key's noise for this input: from the cache when the same float32 outputs were explained
    before, else by running `model` (whose outputs are `keys`, in order) in float64."""
    key = fingerprint(keys, outputs32, feed, source) if use_cache else None
    if key is not None and (hit := cached(key)) is not None and set(hit.noise) >= set(keys):
        return hit
    outputs64 = run_float64(model, feed)
    table = NoiseTable({k: layer_noise(outputs32[k], v) for k, v in zip(keys, outputs64)}, source)
    if key is not None:
        store(key, table)
    return table


def cache_enabled() -> bool:
    """PARITY_NOISE_CACHE=0 measures every time (benchmarks time the twin so)."""
    return os.environ.get("PARITY_NOISE_CACHE", "1").strip() not in ("0", "false", "no")




class Twin:
    """What runs in float64 for one prepared check, chosen on first use and kept for every sample.

    First the checked model itself. Where its layers cannot compute in float64 (a user's layer fixed to
    float32), parity's own conversion of the same Caffe net, whose rounding is the same computation's
    (`fallback` builds its capture; None where there is no Caffe net, as for a TensorFlow graph). Where
    neither runs, `table` returns None with `unavailable` saying why, and the check uses the fixed rule.
    """

    def __init__(self, capture, fallback=None):
        self.capture = capture
        self._fallback = fallback
        self.source = "the checked model, run again in float64"
        self.unavailable: str | None = None
        self._use_fallback = False

    def table(self, feed: Sequence[np.ndarray], outputs32: dict) -> NoiseTable | None:
        if self.unavailable is not None:
            return None
        if not self._use_fallback:
            try:
                return estimate(self.capture.model, self.capture.keys, feed, outputs32, self.source, cache_enabled())
            except TwinUnavailable as exc:
                if self._fallback is None:
                    self.unavailable = f"the checked model cannot compute in float64 ({exc})"
                    return None
                self._use_fallback = True
                self.source = (f"parity's own conversion of the Caffe net, run in float32 and float64 (the checked "
                               f"model cannot compute in float64: {exc})")
                self._fallback = self._fallback()
        own = self._fallback.forward(feed)
        try:
            return estimate(self._fallback.model, self._fallback.keys, feed, own, self.source, cache_enabled())
        except TwinUnavailable as exc:
            self.unavailable = f"neither the checked model nor parity's conversion computes in float64 ({exc})"
            return None


def peak(array: np.ndarray) -> float:
    """The largest finite magnitude in `array` (0 for none): the scale of its float32 steps."""
    finite = np.abs(array[np.isfinite(array)]) if array.size else array
    return float(finite.max()) if finite.size else 0.0


def output_noise(table: NoiseTable, keys: Sequence[tuple[str, str]], peaks: dict, parents: dict) -> dict:
    """Each key's effective noise (parity.check.compare.effective_noise): the twin's, at least the relative
    noise of the outputs it reads (`parents`, keys measured before it) times its own largest value."""
    from .compare import effective_noise

    relative, out = {}, {}
    for key in keys:
        if key not in table.noise:
            continue
        twin, peak = table.noise[key], peaks[key]
        inherited = max((relative[p] for p in parents.get(key, ()) if p in relative), default=0.0)
        relative[key] = twin / peak if peak > 0 else 0.0
        out[key] = effective_noise(twin, peak, inherited)
    return out
