"""The numeric environment a check ran in, and the settings parity imposes on it.

The same conversion gives different last bits under oneDNN or not, on a GPU with TF32 (10-bit
mantissa matmuls, 1e-3 relative error: enough to fail a tolerance) or not, with other thread counts.
A report that does not record these cannot be compared with another. parity therefore disables TF32
unless asked (`--allow-tf32`), can turn on TF's op determinism (`--deterministic`), and writes all of
it into every report's header.
"""
from __future__ import annotations

import os
import platform

import numpy as np

_STATE = {"deterministic": False}


def configure(deterministic: bool = False, allow_tf32: bool = False) -> None:
    """Apply parity's numeric settings to TensorFlow (process-wide, as TF's own switches are)."""
    import tensorflow as tf

    tf.config.experimental.enable_tensor_float_32_execution(allow_tf32)
    if deterministic and not _STATE["deterministic"]:
        tf.config.experimental.enable_op_determinism()
        _STATE["deterministic"] = True


def environment() -> dict:
    """Everything that changes the last bits of a forward pass, for the report header."""
    import keras
    import tensorflow as tf

    return {"tensorflow": tf.__version__, "keras": keras.__version__, "keras_backend": keras.backend.backend(),
            "numpy": np.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "devices": _devices(tf), "onednn": onednn(),
            "tf32_allowed": tf.config.experimental.tensor_float_32_execution_enabled(),
            "deterministic_ops": _STATE["deterministic"] or os.environ.get("TF_DETERMINISTIC_OPS", "") in ("1", "true"),
            "threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads() or "default (all cores)",
                        "inter_op": tf.config.threading.get_inter_op_parallelism_threads() or "default",
                        "cpu_count": os.cpu_count(),
                        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset")}}


def _devices(tf) -> list[str]:
    """'CPU:0', 'GPU:0 (NVIDIA H100 80GB HBM3, compute 9.0)', ... as TF sees them."""
    names = []
    for device in tf.config.list_physical_devices():
        name = device.name.replace("/physical_device:", "")
        if device.device_type == "GPU":
            details = tf.config.experimental.get_device_details(device)
            name += f" ({details.get('device_name', '?')}, compute {details.get('compute_capability', '?')})"
        names.append(name)
    return names


def onednn() -> dict:
    """Whether TensorFlow runs its oneDNN kernels. TF answers only that (IsMklEnabled: the build,
    TF_ENABLE_ONEDNN_OPTS and the CPU together; left unset, TF turns oneDNN on only for CPUs with
    AVX512-VNNI/BF16 or AMX, so an AVX2-only machine runs without it), so `built` is True where it runs
    and None (unknown) where it does not."""
    try:
        from tensorflow.python.util import _pywrap_util_port as port

        enabled = bool(port.IsMklEnabled())
    except (ImportError, AttributeError):
        enabled = False
    built = True if enabled else None
    setting = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    return {"built": built, "enabled": enabled, "TF_ENABLE_ONEDNN_OPTS": setting or "unset"}
