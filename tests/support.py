"""Helpers the harness's tests share: the CLI's bad-input contract, real Caffe's Python, layer edits.

A plain module beside the tests (pytest puts tests/ on sys.path), not a conftest, so each test file
says what it uses.
"""
from __future__ import annotations

import functools
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from parity.cli import main
from parity.fixtures import REPO
from parity.schema import caffe_pb2


def fails_with(capsys, argv, *expected) -> str:
    """Run the CLI; assert exit 2 and a single stderr line holding every `expected` text."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    message = [line for line in err if line.startswith("parity: error:")]
    assert len(message) == 1, err
    assert "Traceback" not in "\n".join(err)
    for text in expected:
        assert str(text) in message[0], message[0]
    return message[0]


@functools.cache
def caffe_python() -> str | None:
    """A Python where pycaffe imports: this one, or the one tools/build_caffe.sh made."""
    candidates = [sys.executable, str(Path(os.environ.get("PARITY_CAFFE_DIR", REPO / ".cache" / "caffe"))
                                      / "venv" / "bin" / "python")]
    for python in candidates:
        if Path(python).exists() and subprocess.run([python, "-c", "import caffe"], capture_output=True,
                                                    env={**os.environ, "GLOG_minloglevel": "2"}).returncode == 0:
            return python
    return None


def edited(layer, edit):
    """`layer` with a modified copy of its LayerParameter (the original stays untouched)."""
    param = caffe_pb2.LayerParameter()
    param.CopyFrom(layer.param)
    edit(param)
    return replace(layer, param=param)
