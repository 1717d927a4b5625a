"""Keep TensorFlow's native (C++) stderr chatter out of parity's output.

TF 2.21 prints oneDNN notes, CUDA probing and cuInit failures from C++ before its own log level
applies, and grappler logs a harmless "remapper failed" when a fused op's intermediate is also a
capture output. File descriptor 2 is pointed at /dev/null only around those calls; Python
exceptions still surface normally afterwards. Set PARITY_TF_LOGS=1 to see everything.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import os
import sys


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
        import keras  # noqa: F401
        import tensorflow as tf

        tf.config.list_physical_devices()  # the CUDA probe happens here, still silenced


def register_layers_when_keras_loads() -> None:
    """Make parity's Keras layers known to Keras, now if Keras is loaded, else the moment it is.

    Why not simply import Keras: that imports TensorFlow, 3 s before `parity --help` answers, before
    pytest-xdist's controller (which runs no model) starts its workers, and in the pycaffe
    environment. A `.keras` file still loads after `import parity` with no custom_objects.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "keras" in sys.modules:
        import_keras_quietly()
        importlib.import_module("parity.keras_layers")
    elif not any(isinstance(finder, _OnKerasImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _OnKerasImport())


class _OnKerasImport(importlib.abc.MetaPathFinder):
    """Finds tensorflow and keras as Python would; runs their first import with native stderr quiet,
    and registers parity's layers once Keras has loaded."""

    def find_spec(self, name, path=None, target=None):
        if name not in ("tensorflow", "keras"):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        if name == "keras":
            sys.meta_path.remove(self)  # one shot: Keras imports once
        run = spec.loader.exec_module

        def exec_module(module):
            with quiet_native_stderr():
                run(module)
                if name == "tensorflow":
                    module.config.list_physical_devices()  # the CUDA probe happens here, still silenced
            if name == "keras":
                import_keras_quietly()  # also silences TensorFlow's CUDA probe
                importlib.import_module("parity.keras_layers")

        spec.loader.exec_module = exec_module
        return spec
