"""Keep TensorFlow's native (C++) stderr chatter out of parity's output.

TF 2.21 prints oneDNN notes, CUDA probing and cuInit failures from C++ before its own log level
applies, and grappler logs a harmless "remapper failed" when a fused op's intermediate is also a
capture output. File descriptor 2 is pointed at /dev/null only around those calls; Python
exceptions still surface normally afterwards. Set PARITY_TF_LOGS=1 to see everything.
"""
from __future__ import annotations

import contextlib
import os


@contextlib.contextmanager
def quiet_native_stderr():
    if os.environ.get("PARITY_TF_LOGS") == "1":
        yield
        return
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_keras_quietly() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with quiet_native_stderr():
        import tensorflow as tf

        import keras  # noqa: F401

        tf.config.list_physical_devices()  # the CUDA probe happens here, still silenced
