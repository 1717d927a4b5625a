"""Helpers the harness's tests share: the CLI's bad-input contract, real Caffe's Python, layer edits.

A plain module beside the tests (pytest puts tests/ on sys.path), not a conftest, so each test file
says what it uses.
"""
from __future__ import annotations

import functools
import json
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


PINNED_CAFFE = ("brocolli-caffe", "9.0.2")  # tools/build_caffe.sh's SDIST_VERSION: what the references came from

_PROBE = """
import json, pathlib, caffe
record = pathlib.Path(caffe.__file__).resolve().parents[2] / "parity-build.json"
info = json.loads(record.read_text()) if record.is_file() else {}
print(json.dumps([info.get("distribution", "unknown"), info.get("version", "unknown")]))
"""


@functools.cache
def caffe_search() -> tuple[str | None, str]:
    """(a Python where the pinned pycaffe imports, or None; why not). The tests that need pycaffe compare
    its output with references made by the pinned build (bit for bit, sometimes), so another pycaffe, one
    not built by tools/build_caffe.sh, would fail them for the wrong reason: they skip, saying so."""
    candidates = [sys.executable, str(Path(os.environ.get("PARITY_CAFFE_DIR", REPO / ".cache" / "caffe"))
                                      / "venv" / "bin" / "python")]
    why = "pycaffe does not import here (build it with tools/build_caffe.sh)"
    for python in dict.fromkeys(candidates):
        if not Path(python).exists():
            continue
        probe = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True,
                               env={**os.environ, "GLOG_minloglevel": "2"})
        if probe.returncode != 0:
            continue
        found = tuple(json.loads(probe.stdout.strip().splitlines()[-1]))
        if found == PINNED_CAFFE:
            return python, ""
        what = "has no parity-build.json" if found == ("unknown", "unknown") else f"is {' '.join(found)}"
        why = (f"the pycaffe {python} imports {what}: not the pinned {' '.join(PINNED_CAFFE)} built by "
               "tools/build_caffe.sh, which made the references")
    return None, why


def caffe_python() -> str | None:
    """A Python where the pinned pycaffe imports: this one, or the one tools/build_caffe.sh made."""
    return caffe_search()[0]


def caffe_python_or_skip() -> str:
    import pytest

    python, why = caffe_search()
    return python or pytest.skip(why)


def edited(layer, edit):
    """`layer` with a modified copy of its LayerParameter (the original stays untouched)."""
    param = caffe_pb2.LayerParameter()
    param.CopyFrom(layer.param)
    edit(param)
    return replace(layer, param=param)
