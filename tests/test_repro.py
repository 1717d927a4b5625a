"""`parity repro`: one layer's divergence as a standalone bundle someone else can run.

The bundle's own test_repro.py is run the way its receiver would run it: a fresh `python -m pytest` in a
folder outside this repository, with nothing but parity installed. A bug is planted the way such a
receiver would try a fix: a plugin file (PARITY_REPRO_PLUGIN) that registers another converter over
parity's own (parity.convert.registry, replace=True). Nets: `tiny` and `layers/eltwise` (layer
granularity) and `ssd` (blob granularity: an in-place chain shares one reference entry).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import fails_with, plant

from parity.caffe.reading.caffemodel import read_caffemodel
from parity.caffe.reading.prototxt import read_prototxt
from parity.cli import main
from parity.convert import Blob
from parity.data.reference import load_npy
from parity.targets import from_fixture

FILES = ["net.prototxt", "weights.caffemodel", "top.npy", "test_repro.py", "README.txt", "manifest.json"]

# What a receiver's plugin looks like; here it plants a bug rather than fixing one.
PLANTED = '''"""Every Convolution's output scaled by 1.01: a converter bug, registered over parity's own."""
import keras

from parity.convert import Blob, register
from parity.convert.registry import converter_for

_original = converter_for("Convolution")


def scaled(layer, bottoms, ctx):
    return [Blob(keras.layers.Rescaling(1.01)(b.tensor), b.caffe_shape) for b in _original(layer, bottoms, ctx)]


scaled.shapes = _original.shapes
register("Convolution", replace=True)(scaled)
'''


def write_bundle(capsys, out: Path, *argv: str) -> list[str]:
    """Run `parity repro ARGV -o OUT`; its stdout lines (one per file written, then the verdict)."""
    assert main(["repro", *argv, "-o", str(out)]) == 0, capsys.readouterr().err
    return capsys.readouterr().out.splitlines()


def run_bundle(bundle: Path, cwd: Path, plugin: Path | None = None) -> subprocess.CompletedProcess:
    """The bundle's test as its receiver runs it: a fresh interpreter, a folder outside the repository."""
    env = {k: v for k, v in os.environ.items() if k != "PARITY_REPRO_PLUGIN"}
    if plugin is not None:
        env["PARITY_REPRO_PLUGIN"] = str(plugin)
    return subprocess.run([sys.executable, "-m", "pytest", str(bundle / "test_repro.py"), "-q",
                           "-p", "no:cacheprovider"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def outside_repo(tmp_path: Path) -> Path:
    work = tmp_path / "elsewhere"
    work.mkdir()
    assert Path(__file__).resolve().parents[1] not in work.resolve().parents
    return work


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- (1) a correct conversion: the bundle's test passes on its own ------------------------------------
def test_bundle_of_a_correct_conversion_passes_standalone(capsys, tmp_path):
    """Eltwise MAX over three bottoms: three Input layers, three Caffe arrays, no weights."""
    bundle = tmp_path / "max-repro"
    lines = write_bundle(capsys, bundle, "layers/eltwise", "max")
    written = [line.split(" ", 2)[1] for line in lines if line.startswith("wrote ")]
    assert sorted(Path(p).relative_to(bundle).as_posix() for p in written) == sorted(
        FILES + ["bottoms/a.npy", "bottoms/b.npy", "bottoms/c.npy"])
    assert lines[-1].startswith("PASS: max (Eltwise, top max) matches Caffe on Caffe's own bottoms")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["verdict"]["status"] == "pass" and manifest["verdict"]["ratio"] < 4
    run = run_bundle(bundle, outside_repo(tmp_path))
    assert run.returncode == 0 and "1 passed" in run.stdout, run.stdout + run.stderr


# -- (2) a planted bug: the bundle's test fails, and passes again without it ---------------------------
def test_a_planted_converter_bug_fails_the_bundle_and_its_removal_passes_it(capsys, tmp_path):
    bundle = tmp_path / "conv1-repro"
    write_bundle(capsys, bundle, "tiny", "conv1")
    plugin = tmp_path / "planted.py"
    plugin.write_text(PLANTED)
    work = outside_repo(tmp_path)
    buggy = run_bundle(bundle, work, plugin)
    assert buggy.returncode == 1 and "1 failed" in buggy.stdout, buggy.stdout + buggy.stderr
    assert "conv1 (Convolution, top conv1): max_abs" in buggy.stdout and "its float32 noise" in buggy.stdout
    fixed = run_bundle(bundle, work)
    assert fixed.returncode == 0 and "1 passed" in fixed.stdout, fixed.stdout + fixed.stderr


def test_the_verdict_when_written_is_the_conversions_at_that_time(capsys, tmp_path):
    """Written while the converter is buggy (planted in-process, as tests/test_planted_bugs does), the
    bundle records FAIL with the numbers, and says so last on stdout."""
    def scaled(original):
        import keras

        return lambda layer, bottoms, ctx: [Blob(keras.layers.Rescaling(1.01)(b.tensor), b.caffe_shape)
                                            for b in original(layer, bottoms, ctx)]

    with plant("Convolution", scaled):
        lines = write_bundle(capsys, tmp_path / "b", "tiny", "conv1")
        assert (lines[-1].startswith("FAIL: conv1 (Convolution, top conv1): max_abs")
                and "on Caffe's own bottoms" in lines[-1])
        verdict = json.loads((tmp_path / "b" / "manifest.json").read_text())["verdict"]
        assert verdict["status"] == "fail" and verdict["ratio"] > 1000
        assert verdict["max_abs"] == pytest.approx(verdict["ratio"] * verdict["noise"])
        assert verdict["line"] == lines[-1]


# -- (3) what the bundle holds ------------------------------------------------------------------------
def test_bundle_holds_the_layer_its_weights_and_caffes_arrays_only(capsys, tmp_path):
    bundle = tmp_path / "b"
    write_bundle(capsys, bundle, "tiny", "conv1")
    target = from_fixture("tiny")
    ref = target.references[0]
    manifest = json.loads((bundle / "manifest.json").read_text())

    net = read_prototxt(bundle / "net.prototxt")
    assert [(lay.name, lay.type) for lay in net.layer] == [("input", "Input"), ("conv1", "Convolution")]
    plain = type(net.layer[0])(name="input", type="Input", top=["data"])
    plain.input_param.shape.add(dim=[1, 3, 17, 23])
    assert net.layer[0] == plain  # nothing but a name, a top and the bottom's shape
    original = next(lay for lay in read_prototxt(target.prototxt).layer if lay.name == "conv1")
    assert net.layer[1] == original  # the parameters exactly as written

    weights = read_caffemodel(bundle / "weights.caffemodel")
    assert set(weights.blobs) == {"conv1"}
    for mine, theirs in zip(weights.get("conv1"), target.read_weights().get("conv1")):
        np.testing.assert_array_equal(mine, theirs)

    assert manifest["bottoms"] == {"data": {"file": "bottoms/data.npy", "shape": [1, 3, 17, 23],
                                            "entry": {"layer": "data", "top": "data", "file": "000_data.npy.gz"}}}
    np.testing.assert_array_equal(load_npy(bundle / "bottoms/data.npy", (1, 3, 17, 23)), ref.load(ref.entries[0]))
    top = load_npy(bundle / "top.npy", tuple(manifest["top"]["shape"]))
    np.testing.assert_array_equal(top, ref.load(next(e for e in ref.entries if e.layer == "conv1")))

    assert (manifest["format"], manifest["layer"], manifest["type"], manifest["sample"]) == (
        "parity-repro", "conv1", "Convolution", "chelsea")
    assert manifest["parity_version"] and manifest["rule"] == {"rule": "noise", "k": 12.0}
    assert {k: manifest["verdict"][k] is not None for k in ("max_abs", "noise", "ratio")} == dict.fromkeys(
        ("max_abs", "noise", "ratio"), True)
    assert {k: v["sha256"] for k, v in manifest["sources"].items()} == {
        k: ref.manifest["model"][k]["sha256"] for k in ("prototxt", "caffemodel")}
    assert set(manifest["files"]) == set(FILES + ["bottoms/data.npy"]) - {"manifest.json"}
    assert all(sha256(bundle / rel) == spec["sha256"] for rel, spec in manifest["files"].items())
    assert "pytest b/test_repro.py" in (bundle / "README.txt").read_text()


def test_at_blob_granularity_the_bundle_holds_the_in_place_chain_its_entry_covers(capsys, tmp_path):
    """ssd's relu1_1 entry reflects conv1_1 -> relu1_1 (one blob, overwritten in place): both layers go in,
    conv1_1's weights only, and the bundle says what it covers."""
    bundle = tmp_path / "b"
    lines = write_bundle(capsys, bundle, "ssd", "relu1_1")
    net = read_prototxt(bundle / "net.prototxt")
    assert [(lay.name, lay.type) for lay in net.layer] == [("input", "Input"), ("conv1_1", "Convolution"),
                                                      ("relu1_1", "ReLU")]
    assert set(read_caffemodel(bundle / "weights.caffemodel").blobs) == {"conv1_1"}
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["covers"] == ["conv1_1", "relu1_1"] and manifest["top_blob"] == "conv1_1"
    for spec in [*manifest["bottoms"].values(), manifest["top"]]:
        assert load_npy(bundle / spec["file"]).shape == tuple(spec["shape"])
    assert "conv1_1 -> relu1_1" in lines[0] and lines[-1].startswith("PASS")


def test_a_bundle_parity_wrote_is_replaced_whole(capsys, tmp_path):
    bundle = tmp_path / "b"
    write_bundle(capsys, bundle, "layers/eltwise", "max")
    write_bundle(capsys, bundle, "layers/eltwise", "sum")
    assert sorted(p.name for p in (bundle / "bottoms").iterdir()) == ["a.npy", "b.npy"]
    assert json.loads((bundle / "manifest.json").read_text())["layer"] == "sum"


# -- (4) bad input: one line, exit 2, nothing written -------------------------------------------------
def test_an_unknown_layer(capsys, tmp_path):
    fails_with(capsys, ["repro", "tiny", "conv9", "-o", tmp_path / "b"], "no layer 'conv9'", "conv1", "deploy.prototxt")
    assert not (tmp_path / "b").exists()


def test_a_layer_without_a_reference_entry_names_the_entry_that_covers_it(capsys, tmp_path):
    fails_with(capsys, ["repro", "ssd", "conv1_1", "-o", tmp_path / "b"], "'conv1_1' has no reference entry",
               "reproduce 'relu1_1'", "granularity layer", "manifest.json")
    fails_with(capsys, ["repro", "tiny", "data", "-o", tmp_path / "b"], "'data' is the net's Input")
    assert not (tmp_path / "b").exists()


def test_a_bottom_without_a_reference_entry(capsys, tmp_path):
    """A blob-granularity dump keeps a blob's value only after the last layer writing it in place: a layer
    reading the value before that has no Caffe bottom to hand over (simulated by dropping relu1's entry)."""
    target = from_fixture("tiny")
    refs = tmp_path / "refs"
    shutil.copytree(target.references[0].dir, refs)
    manifest = json.loads((refs / "manifest.json").read_text())
    manifest["entries"] = [e for e in manifest["entries"] if e["layer"] != "relu1"]
    manifest["granularity"] = "blob"
    (refs / "manifest.json").write_text(json.dumps(manifest))
    fails_with(capsys, ["repro", target.prototxt, target.caffemodel, "pool1", "--blobs", refs, "-o", tmp_path / "b"],
               "bottom 'conv1'", "written by 'relu1'", "has no reference entry", "granularity layer",
               str(refs / "manifest.json"))
    assert not (tmp_path / "b").exists()


def test_an_output_folder_parity_did_not_write_is_left_alone(capsys, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    fails_with(capsys, ["repro", "tiny", "conv1", "-o", mine], "not a repro bundle parity wrote", str(mine))
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep me"
    ref_dir = from_fixture("tiny").references[0].dir
    fails_with(capsys, ["repro", "tiny", "conv1", "-o", ref_dir / "bundle"], "reference folder")
    assert not (ref_dir / "bundle").exists()


@pytest.mark.parametrize("argv, expected", [
    (["tiny"], "give MODEL LAYER"),
    (["tiny", "conv1", "extra"], "give MODEL LAYER"),
    (["fixtures/tiny/deploy.prototxt", "conv1", "--blobs", "reference_blobs/tiny"], "with --blobs DIR give PROTOTXT"),
    (["tiny", "conv1", "--image", "nosuch"], "no reference sample 'nosuch'"),
    (["tiny", "conv1", "--top", "nosuch"], "no reference entry for top 'nosuch'"),
])
def test_bad_usage(capsys, tmp_path, argv, expected):
    fails_with(capsys, ["repro", *argv, "-o", tmp_path / "b"], expected)
    assert not (tmp_path / "b").exists()


def test_names_from_files_cannot_break_the_generated_files(capsys, tmp_path):
    """Layer and blob names come from the prototxt: quotes, backslashes and newlines in them must not end
    the test's docstring, form a Python escape or start a line of their own in README.txt."""
    from parity.diagnose.repro import generated_test, readme_text

    write_bundle(capsys, tmp_path / "b", "tiny", "conv1")
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    hostile = 'x"""\\N{oops}\n\x1b[2J'
    manifest.update(layer=hostile, type=hostile, top_blob=hostile, model=hostile, covers=[hostile, "y"])
    source = generated_test(manifest)
    compile(source, "test_repro.py", "exec")
    docstring = source.split('"""', 1)[1]
    assert "\x1b" not in source and "\\\\x1b[2J" in docstring
    text = readme_text(manifest, "b")
    assert "\x1b" not in text and "\\x1b[2J" in text and "\\n" in text
