"""parity: check a Caffe -> Keras 3 conversion layer by layer against real Caffe's blobs.

Importing parity registers its Keras layers with Keras (at once if Keras is loaded, else when it
loads), so a converted `.keras` file loads with plain `keras.saving.load_model(path)`. Importing
parity does not import TensorFlow itself; without Keras (inside the pycaffe environment that
runs `parity dump`), the readers and the dump still import.
"""
from __future__ import annotations

from ._tf import register_layers_when_keras_loads

__version__ = "0.1.0"

register_layers_when_keras_loads()
