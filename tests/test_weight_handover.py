"""Weights go into Keras' variables as they are created (parity.convert.preset), in one copy at most,
and `import parity` registers parity's layers without importing TensorFlow itself."""
from __future__ import annotations

import subprocess
import sys

import keras
import numpy as np
import pytest

from parity.convert.preset import call_with_weights, handed_over
from parity.data.layout import ALIGNMENT, Owned, copy_blocked


def test_copy_blocked_equals_a_plain_copy_for_transposed_views_and_is_aligned():
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(70, 6, 3, 5)).astype(np.float32)
    for view in (weight, weight.transpose(2, 3, 1, 0), weight[:, ::2], weight.reshape(70, -1).T):
        out = copy_blocked(view)
        assert isinstance(out, Owned) and out.flags.c_contiguous and out.ctypes.data % ALIGNMENT == 0
        np.testing.assert_array_equal(out, view)
    flat = copy_blocked(weight.reshape(70, -1).T, (90, 70))
    np.testing.assert_array_equal(flat, np.ascontiguousarray(weight.reshape(70, -1).T))


def test_the_variables_hold_the_given_weights_and_the_layer_keeps_its_initializers():
    kernel = np.arange(12, dtype=np.float32).reshape(3, 4)
    bias = np.array([1, 2, 3, 4], np.float32)
    dense = keras.layers.Dense(4, name="fc")
    y = call_with_weights(dense, keras.Input((3,)), [kernel, bias])
    assert tuple(y.shape) == (None, 4)
    np.testing.assert_array_equal(dense.kernel.numpy(), kernel)
    np.testing.assert_array_equal(dense.bias.numpy(), bias)
    assert dense.get_config()["kernel_initializer"]["class_name"] == "GlorotUniform"
    assert "add_weight" not in vars(dense)  # the creation hook is gone once the layer is built


@pytest.mark.parametrize("weights, message", [
    ([np.zeros((3, 5), np.float32), np.zeros(4, np.float32)], "weight 0 has shape"),
    ([np.zeros((3, 4), np.float32)], "made 2 variable"),  # a bias left to its initializer would be random
    ([np.zeros((3, 4), np.float32), np.zeros(4, np.float32), np.zeros(4, np.float32)], "made 2 variable"),
])
def test_weights_that_do_not_fit_are_refused(weights, message):
    with pytest.raises(ValueError, match=message):
        call_with_weights(keras.layers.Dense(4), keras.Input((3,)), weights)


def test_only_parity_owned_buffers_are_taken_over():
    theirs = np.ones((64, 64), np.float32)
    tensor = handed_over(theirs, "float32")
    theirs[:] = 2  # the caller's array is copied: changing it later changes nothing
    assert float(np.asarray(tensor).max()) == 1.0
    ours = copy_blocked(np.ones((64, 64), np.float32))
    tensor = handed_over(ours, "float32")
    ours[:] = 3  # a buffer parity allocated for the variable is shared, not copied again
    assert float(np.asarray(tensor).max()) == 3.0


def test_a_read_only_map_is_copied_into_aligned_memory():
    buffer = bytearray(4 * 1001)
    view = np.frombuffer(bytes(buffer), np.float32, 1000, offset=4)  # read-only and misaligned, as in a caffemodel
    tensor = handed_over(view.reshape(10, 100), "float32")
    np.testing.assert_array_equal(np.asarray(tensor), view.reshape(10, 100))
    out = keras.layers.Dense(2)
    call_with_weights(out, keras.Input((100,)), [np.ones((100, 2), np.float32), np.zeros(2, np.float32)])
    assert float(np.asarray(out(np.ones((1, 100), np.float32))).max()) == 100.0


def _fresh(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()[-1]


def test_import_parity_leaves_tensorflow_unimported():
    assert _fresh("import sys, parity; print('tensorflow' in sys.modules, 'keras' in sys.modules)") == "False False"


@pytest.mark.parametrize("order", ["import parity, keras", "import keras, parity"])
def test_parity_layers_are_registered_whichever_is_imported_first(order):
    code = f"{order}\nprint(keras.saving.get_registered_object('parity>CaffePooling2D').__name__)"
    assert _fresh(code) == "CaffePooling2D"


def test_a_weight_parity_built_is_handed_over_through_call_with_weights_without_a_copy():
    kernel = copy_blocked(np.ones((3, 4), np.float32))  # what dense_kernel and copy_blocked return
    dense = keras.layers.Dense(4, use_bias=False)
    call_with_weights(dense, keras.Input((3,)), [kernel])
    kernel[:] = 5  # shared with the variable: no second copy of a 411 MB fc6 kernel was made
    assert float(np.asarray(dense.kernel.numpy()).max()) == 5.0
