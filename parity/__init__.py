"""parity: check a Caffe -> Keras 3 conversion layer by layer against real Caffe's blobs.

Importing parity registers its Keras layers (when Keras is installed), so a converted `.keras`
file loads with plain `keras.saving.load_model(path)`. Without Keras (inside the pycaffe
environment that runs `parity dump`), the readers and the dump still import.
"""
from __future__ import annotations

import importlib.util

__version__ = "0.1.0"

if importlib.util.find_spec("keras") is not None:
    from ._tf import import_keras_quietly

    import_keras_quietly()
    from . import keras_layers  # noqa: F401  (registers the custom layers)
