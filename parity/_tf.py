"""Import TensorFlow/Keras without their C++ start-up chatter on stderr.

TF 2.21 prints oneDNN notes, CUDA probing and cuInit failures from C++ before its own log level
applies, burying parity's one-line errors and tables. File descriptor 2 is pointed at /dev/null
for the import and the device probe only; Python exceptions still surface normally afterwards.
Set PARITY_TF_LOGS=1 to see everything.
"""
from __future__ import annotations

import os


def import_keras_quietly() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.environ.get("PARITY_TF_LOGS") == "1":
        import keras  # noqa: F401
        return
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf

        import keras  # noqa: F401

        tf.config.list_physical_devices()  # the CUDA probe happens here, still silenced
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
