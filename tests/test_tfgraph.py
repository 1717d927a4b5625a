"""The TensorFlow-graph source: dump-tf, tf-import and the check of a hand-written Keras model (tf_saliency)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from parity.caffe.fixtures import load_fixture
from parity.check.compare import NoiseRule
from parity.check.pipeline import run_target
from parity.cli import main
from parity.data.reference import find_references
from parity.targets import from_fixture
from parity.tfgraph.fixture import fixture_graph

FIXTURE = load_fixture("tf_saliency")
MODEL = FIXTURE.dir / "model.py"
TOL = NoiseRule()  # parity's default rule


def _check(keras_model: str):
    from dataclasses import replace

    target = replace(from_fixture("tf_saliency"), keras_model=keras_model)
    (report,) = run_target(target, TOL)
    return report


def _planted(tmp_path: Path, old: str, new: str) -> str:
    """The fixture's hand-written model with one line changed, as a 'file.py:build' spec."""
    text = MODEL.read_text()
    assert old in text
    path = tmp_path / "model_with_bug.py"
    path.write_text(text.replace(old, new))
    return f"{path}:build"


def test_the_hand_written_model_matches_the_graph_layer_by_layer():
    report = _check(FIXTURE.keras_model)
    assert report.status == "pass" and report.first_divergence is None
    compared = [r.layer for r in report.layers]
    assert compared[0] == "conv1/conv1_1/Relu" and compared[-1] == "saliency"  # last op of a scope, or the op itself
    assert "aspp/pool_up/to_nchw" in compared and "aspp/concat" in compared


@pytest.mark.parametrize("old, new, layer", [
    # a wrong data_format: the resize reads the channels-last tensor as channels-first
    ('layers.Resizing(SIZE, SIZE, interpolation="bilinear", name="head_up")',
     'layers.Resizing(SIZE, SIZE, interpolation="bilinear", data_format="channels_first", name="head_up")',
     "head/up/to_nchw"),
    # a missing resize: the head's upsampling forgotten; the sigmoid after it is the first op compared
    ('    x = layers.Resizing(SIZE, SIZE, interpolation="bilinear", name="head_up")(x)\n', "", "saliency"),
])
def test_planted_model_bugs_fail_at_the_right_layer(tmp_path, old, new, layer):
    report = _check(_planted(tmp_path, old, new))
    assert report.status == "fail" and report.first_divergence == layer


def test_a_kernel_moved_without_its_transpose_fails_at_its_layer(monkeypatch):
    """Square kernels (32 in, 32 out) fit either way round: only the numbers can tell."""
    import parity.tfgraph.weights as weights

    original = weights.load_graph_weights

    def swapped(model, consts, mapping, where=None):
        consts = dict(consts)
        consts["conv2/conv2_2/kernel"] = np.ascontiguousarray(consts["conv2/conv2_2/kernel"].transpose(0, 1, 3, 2))
        return original(model, consts, mapping, where)

    monkeypatch.setattr(weights, "load_graph_weights", swapped)
    report = _check(FIXTURE.keras_model)
    assert report.first_divergence == "conv2/conv2_2/Relu"


def dump_tf(*args: str) -> None:
    """`parity dump-tf` in a child with oneDNN on: the graph's NCHW ops run only on oneDNN's CPU kernels, which
    TensorFlow turns on by itself only on CPUs with AVX512-VNNI/BF16 or AMX (an AVX2 machine needs it asked)."""
    proc = subprocess.run([sys.executable, "-m", "parity", "dump-tf", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_fresh_dump_reproduces_the_committed_references(tmp_path):
    dump_tf("--fixture", "tf_saliency", "--out", str(tmp_path))
    (fresh,) = find_references(tmp_path)
    (committed,) = find_references(FIXTURE.references)
    assert fresh.manifest["source"] == "tensorflow-graph"
    # the same graph, by sha256 (the cached file's name changes with the builder's source, not with the graph)
    assert fresh.manifest["model"]["graph"]["sha256"] == committed.manifest["model"]["graph"]["sha256"]
    assert [(e.layer, e.layout) for e in fresh.entries] == [(e.layer, e.layout) for e in committed.entries]
    layouts = {e.layer: e.layout for e in fresh.entries}
    assert layouts["aspp/pool_up/resize/ResizeBilinear"] == "NHWC" and layouts["aspp/concat"] == "NCHW"
    for a, b in zip(fresh.entries, committed.entries):
        np.testing.assert_allclose(fresh.load(a), committed.load(b), rtol=1e-5, atol=1e-6)


def test_tf_import_writes_a_model_the_cli_check_passes_and_a_fresh_process_loads(tmp_path):
    graph = fixture_graph(FIXTURE)
    out = tmp_path / "saliency.keras"
    assert main(["tf-import", str(graph), "--keras-model", FIXTURE.keras_model, "-o", str(out)]) == 0
    assert main(["check", "--keras-model", FIXTURE.keras_model, "--weights", str(out), "--blobs",
                 str(FIXTURE.references), "--graph", str(graph), "-q"]) == 0
    script = f"import keras\nm = keras.saving.load_model({str(out)!r})\nprint(len(m.layers))\n"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]  # plain Keras layers: no custom_objects, not even parity


def test_tf_import_refuses_to_write_when_a_variable_is_unmatched(tmp_path, capsys):
    spec = _planted(tmp_path, '"aspp_project", 16, 1)', '"aspp_projection", 16, 1)')
    out = tmp_path / "saliency.keras"
    assert main(["tf-import", str(fixture_graph(FIXTURE)), "--keras-model", spec, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Keras aspp_projection/kernel (1, 1, 48, 16): no graph Const" in err
    assert "graph Const aspp/project/kernel (1, 1, 48, 16): no Keras variable takes it" in err
    assert not out.exists() and not list(tmp_path.glob("*.keras*"))


def test_a_mapping_file_pairs_renamed_layers(tmp_path):
    spec = _planted(tmp_path, '"aspp_project", 16, 1)', '"aspp_projection", 16, 1)')
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps({"aspp_projection": "aspp/project"}))
    out = tmp_path / "saliency.keras"
    assert main(["tf-import", str(fixture_graph(FIXTURE)), "--keras-model", spec, "--mapping", str(mapping),
                 "-o", str(out)]) == 0
    assert main(["check", "--keras-model", spec, "--mapping", str(mapping), "--weights", str(out), "--blobs",
                 str(FIXTURE.references), "-q"]) == 0


@pytest.mark.parametrize("content", [b"", b"\x00\x01 not a graph", b"\x0a\xff\xff\xff"])
def test_a_bad_graph_file_is_one_clear_line(tmp_path, capsys, content):
    bad = tmp_path / "graph.pb"
    bad.write_bytes(content)
    assert main(["dump-tf", str(bad), "--image", str(FIXTURE.image_path("chelsea")), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("parity: error:") and str(bad) in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_a_graph_tensorflow_cannot_run_is_one_line_naming_the_op(tmp_path):
    """Without oneDNN, TensorFlow's CPU kernels refuse NCHW pooling: say that, and where, in one line."""
    proc = subprocess.run([sys.executable, "-m", "parity", "dump-tf", "--fixture", "tf_saliency", "--out",
                           str(tmp_path / "o")], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0"})
    assert proc.returncode == 2
    (line,) = [lay for lay in proc.stderr.splitlines() if lay.startswith("parity: error:")]
    assert "only supports NHWC" in line and line.endswith("(at op pool1)") and "TF_ENABLE_ONEDNN_OPTS=1" in line
    assert "Traceback" not in proc.stderr and not (tmp_path / "o").exists()


def test_local_mode_is_refused_for_a_graph_reference(capsys):
    assert main(["check", "--model", "tf_saliency", "--local", "-q"]) == 2
    assert "not available" in capsys.readouterr().err


def _damage(data: bytes, kind: str, at: int, run: bytes) -> bytes:
    """A truncation, bit flip or overwritten run of `data` at `at`."""
    at %= len(data)
    if kind == "truncate":
        return data[:at]
    if kind == "flip":
        return data[:at] + bytes([data[at] ^ (1 << (run[0] % 8))]) + data[at + 1:]
    return data[:at] + run + data[at + len(run):]


def test_damaged_graphs_give_a_result_or_one_clear_line(tmp_path_factory):
    """dump-tf and tf-import on a damaged .pb: exit 0 or 2 with one `parity: error:` line naming the file."""
    import contextlib
    import io

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    image = str(FIXTURE.image_path("chelsea"))
    data = fixture_graph(FIXTURE).read_bytes()

    @settings(derandomize=True, deadline=None, database=None, max_examples=40,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(st.sampled_from(["truncate", "flip", "overwrite"]), st.integers(0, len(data) - 1),
           st.binary(min_size=1, max_size=16))
    def check(kind, at, run):
        folder = tmp_path_factory.mktemp("g")
        graph = folder / "graph.pb"
        graph.write_bytes(_damage(data, kind, at, run))
        for argv in (["dump-tf", str(graph), "--input", "input", "--image", image, "--resize", "64,64",
                      "--out", str(folder / "out")],
                     ["tf-import", str(graph), "--keras-model", FIXTURE.keras_model, "-o", str(folder / "m.keras")]):
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                rc = main(argv)
            lines = [lay for lay in err.getvalue().splitlines() if lay.startswith("parity: error:")]
            assert rc in (0, 2), (argv[0], err.getvalue()[-500:])
            if rc == 2:
                assert len(lines) == 1 and str(graph) in lines[0], err.getvalue()[-500:]
                assert not (folder / "out").exists() and not (folder / "m.keras").exists()

    check()


def test_a_chosen_set_of_ops_is_dumped_with_its_ancestry_and_checks(tmp_path, capsys):
    dump_tf("--fixture", "tf_saliency", "--op", "aspp/*", "--op", "saliency", "--out", str(tmp_path))
    (ref,) = find_references(tmp_path)
    dumped = {e.top for e in ref.entries}
    assert {e.layer.split("/")[0] for e in ref.entries} == {"aspp", "saliency"}
    for raw in ref.manifest["entries"]:  # each names the nearest dumped tensors (or the input) it is computed from
        assert raw["bottoms"] and set(raw["bottoms"]) <= dumped | {"input:0"}
    saliency = next(r for r in ref.manifest["entries"] if r["layer"] == "saliency")
    assert saliency["bottoms"] == ["aspp/project/Relu:0"]  # through head/*, which was not dumped
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps({"saliency": "saliency:0"}))  # a tensor name works as well as an op name
    capsys.readouterr()
    assert main(["check", "--keras-model", FIXTURE.keras_model, "--graph", str(fixture_graph(FIXTURE)),
                 "--mapping", str(mapping), "--blobs", str(tmp_path), "-q"]) == 0
    assert "PASS: all 8 outputs" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["model.keras", "model.weights.h5"])
def test_damaged_weights_file_is_one_clear_line(tmp_path, capsys, name):
    damaged = tmp_path / name
    damaged.write_bytes(b"PK\x03\x04 not really a zip or an HDF5 file")
    code = main(["check", "--keras-model", FIXTURE.keras_model, "--weights", str(damaged), "--blobs",
                 str(FIXTURE.references / "chelsea"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and f"{damaged}: cannot load these weights" in err


def test_keras_model_given_for_a_graph_fixture_is_the_model_checked(capsys):
    """--keras-model replaces the fixture's own model (it used to be ignored without a word)."""
    assert main(["check", "--model", "tf_saliency", "--keras-model", "no_such_module_here:build", "-q"]) == 2
    assert "no_such_module_here" in capsys.readouterr().err


def test_save_mapping_is_refused_for_a_graph_reference(capsys, tmp_path):
    """A graph's pairing is by op and scope name; --save-mapping writes Caffe pairings, so it is refused."""
    out = tmp_path / "mapping.json"
    assert main(["check", "--model", "tf_saliency", "--keras-model", FIXTURE.keras_model, "--save-mapping",
                 str(out), "-q"]) == 2
    assert "--save-mapping" in capsys.readouterr().err and not out.exists()
