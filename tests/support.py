"""Helpers the harness's tests share: the CLI's bad-input contract, real Caffe's Python, layer edits,
a bug planted in a converter.

A plain module beside the tests (pytest puts tests/ on sys.path), not a conftest, so each test file
says what it uses.
"""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from parity.caffe.fixtures import REPO
from parity.caffe.schema import caffe_pb2
from parity.cli import main


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


Converter = Callable  # (layer, bottoms, ctx) -> [Blob]: a registered converter, as parity.convert calls it


@contextmanager
def plant(type_name: str, bug: Callable[[Converter], Converter], *, layer: str | None = None) -> Iterator[None]:
    """Within the `with` block, `type_name` converts through bug(real converter): every layer of that
    type, or only the one named `layer` (the others as before). Afterwards the real converter is back.

    Why one helper: every planted-bug test needs the same two details right. The planted converter
    keeps the real one's `shapes`, so the weight recipe still sizes blobs by the real rules; and
    registry.override scopes it, so a failing test cannot leave the bug behind for the next one.
    """
    from parity.convert import registry

    original = registry.converter_for(type_name)
    planted = bug(original)

    def converter(this, bottoms, ctx):
        return (planted if layer is None or this.name == layer else original)(this, bottoms, ctx)

    converter.shapes = original.shapes
    with registry.override(type_name, converter):
        yield


def with_param(edit: Callable) -> Callable[[Converter], Converter]:
    """A bug for `plant`: the layer converted as if its LayerParameter read edit(param) (a field the
    converter ignores, or reads wrongly), the net itself left as it is."""
    return lambda original: lambda layer, bottoms, ctx: original(edited(layer, edit), bottoms, ctx)
