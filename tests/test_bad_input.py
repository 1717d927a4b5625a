"""Bad input: one clear line naming the file (and line), exit code 2, no traceback, nothing half-written."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import fails_with

from parity.caffe.fixtures import load_fixture
from parity.caffe.reading.caffemodel import read_caffemodel
from parity.caffe.reading.caffemodel_writer import write_caffemodel
from parity.caffe.reading.prototxt import read_prototxt
from parity.cli import main

TINY = load_fixture("tiny")


@pytest.fixture
def weights():
    return TINY.weights_path()


def rewrite(tmp_path, weights, edit) -> Path:
    """A copy of the tiny caffemodel with its blobs edited."""
    blobs = {k: [np.array(a) for a in v] for k, v in read_caffemodel(weights).blobs.items()}
    edit(blobs)
    return write_caffemodel(tmp_path / "edited.caffemodel", read_prototxt(TINY.prototxt), blobs)


def test_missing_files(capsys, tmp_path, weights):
    fails_with(capsys, ["check", tmp_path / "nope.prototxt", weights, "--blobs", tmp_path],
               "nope.prototxt", "not found")
    fails_with(capsys, ["convert", TINY.prototxt, tmp_path / "nope.caffemodel", "-o", tmp_path / "m.keras"],
               "nope.caffemodel")


def test_malformed_prototxt_names_file_and_line(capsys, tmp_path, weights):
    lines = TINY.prototxt.read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if "convolution_param {" in line)
    lines[index] = lines[index].replace("convolution_param {", "convolution_param { num_outptu: 3")
    bad = tmp_path / "bad.prototxt"
    bad.write_text("\n".join(lines) + "\n")
    fails_with(capsys, ["convert", bad, weights, "-o", tmp_path / "m.keras"], f"{bad}:{index + 1}", "num_outptu")
    assert not (tmp_path / "m.keras").exists()


@pytest.mark.parametrize("cut", [0.5, 0.999])
def test_truncated_caffemodel(capsys, tmp_path, weights, cut):
    data = weights.read_bytes()
    bad = tmp_path / "truncated.caffemodel"
    bad.write_bytes(data[: int(len(data) * cut)])
    fails_with(capsys, ["convert", TINY.prototxt, bad, "-o", tmp_path / "m.keras"], bad, "truncated or corrupted")
    assert not (tmp_path / "m.keras").exists()


def test_corrupted_caffemodel(capsys, tmp_path, weights):
    data = bytearray(weights.read_bytes())
    data[0:4] = b"\xff\xff\xff\xff"  # an over-long varint where the first tag should be
    bad = tmp_path / "corrupt.caffemodel"
    bad.write_bytes(bytes(data))
    fails_with(capsys, ["convert", TINY.prototxt, bad, "-o", tmp_path / "m.keras"], bad)


def test_layer_without_weights(capsys, tmp_path, weights):
    bad = rewrite(tmp_path, weights, lambda b: b.pop("conv2"))
    fails_with(capsys, ["convert", TINY.prototxt, bad, "-o", tmp_path / "m.keras"], bad, "no weights for layer 'conv2'")


def test_weights_of_the_wrong_shape(capsys, tmp_path, weights):
    bad = rewrite(tmp_path, weights, lambda b: b.__setitem__("conv1", [b["conv1"][0][:, :2], b["conv1"][1]]))
    fails_with(capsys, ["convert", TINY.prototxt, bad, "-o", tmp_path / "m.keras"], bad, "conv1", "(8, 2, 3, 3)",
               "(8, 3, 3, 3)")


def test_unsupported_layer_types_are_named_together(capsys, tmp_path, weights):
    text = TINY.prototxt.read_text() + (
        'layer { name: "norm" type: "FancyNorm" bottom: "pool1" top: "norm" }\n'  # custom types of some fork
        'layer { name: "warp" type: "Warp" bottom: "norm" bottom: "pool1" top: "warp" }\n')
    bad = tmp_path / "unsupported.prototxt"
    bad.write_text(text)
    line = text.splitlines().index(next(lay for lay in text.splitlines() if '"norm"' in lay)) + 1
    fails_with(capsys, ["convert", bad, weights, "-o", tmp_path / "m.keras"], f"{bad}:{line}", "FancyNorm (norm)",
               "Warp (warp)")


def test_unsupported_parameter_is_an_error_not_ignored(capsys, tmp_path, weights):
    bad = tmp_path / "axis.prototxt"
    bad.write_text(TINY.prototxt.read_text().replace("num_output: 6 kernel_h", "num_output: 6 axis: 2 kernel_h"))
    fails_with(capsys, ["convert", bad, weights, "-o", tmp_path / "m.keras"], "conv2", "convolution_param.axis 2")


def test_blob_folder_without_manifest(capsys, tmp_path, weights):
    fails_with(capsys, ["check", TINY.prototxt, weights, "--blobs", tmp_path], tmp_path, "manifest.json")


def copied_reference(tmp_path) -> Path:
    src = TINY.references / "chelsea"
    dst = tmp_path / "chelsea"
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("opener", ["plain", "gzip"])
def test_npy_that_needs_pickle_is_refused(capsys, tmp_path, weights, opener):
    import gzip

    ref = copied_reference(tmp_path)
    victim = ref / json.loads((ref / "manifest.json").read_text())["entries"][3]["file"]
    with (open if opener == "plain" else gzip.open)(victim, "wb") as fh:  # a handle: np.save adds no suffix
        np.save(fh, np.array([{"not": "an array"}], dtype=object), **{"allow_pickle": True})  # writing only
    fails_with(capsys, ["check", TINY.prototxt, weights, "--blobs", ref], victim, "pickle")


def test_weights_that_are_not_the_ones_caffe_saw(capsys, tmp_path, weights):
    other = rewrite(tmp_path, weights, lambda b: b["fc1"][1].__iadd__(1.0))
    ref = TINY.references / "chelsea"
    out = tmp_path / "report.json"
    fails_with(capsys, ["check", TINY.prototxt, other, "--blobs", ref, "--json", out], "caffemodel", "sha256",
               "--allow-mismatch")
    assert not out.exists()
    code = main(["check", str(TINY.prototxt), str(other), "--blobs", str(ref), "--json", str(out), "--allow-mismatch"])
    printed = capsys.readouterr().out
    assert code == 1  # the edited bias really changes fc1
    assert "ALLOWED MISMATCH" in printed
    report = json.loads(out.read_text())
    assert report["allow_mismatch"] is True and report["first_divergence"] == "fc1"


def test_bad_usage_exits_2(capsys):
    fails_with(capsys, ["check"], "give PROTOTXT CAFFEMODEL --blobs DIR, or --model NAME")
    fails_with(capsys, ["convert", TINY.prototxt, "w.caffemodel", "-o", "model.h5"], "must end in .keras")


def test_console_script_prints_one_line_and_no_traceback(tmp_path):
    """The real entry point, in its own process: exit status 2 and a single stderr line."""
    proc = subprocess.run([sys.executable, "-m", "parity", "check", "--model", "no_such_model"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no_such_model" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_dump_refuses_an_input_array_that_does_not_fit(capsys, tmp_path, weights):
    bad = tmp_path / "flat.npy"
    np.save(bad, np.zeros((1, 3 * 17 * 23), np.float32), allow_pickle=False)
    fails_with(capsys, ["dump", TINY.prototxt, weights, "--input", bad, "--out", tmp_path / "out"], bad, "does not fit")
    assert not (tmp_path / "out").exists()


def test_dump_without_pycaffe_says_how_to_get_it(capsys, tmp_path, weights):
    pytest.importorskip("tensorflow")  # i.e. this is the main environment, where caffe is absent
    if __import__("importlib").util.find_spec("caffe") is not None:
        pytest.skip("pycaffe imports here")
    fails_with(capsys, ["dump", TINY.prototxt, weights, "--image", TINY.image_path("chelsea"), "--resize", "17,23",
                        "--out", tmp_path / "out"], "pycaffe", "tools/build_caffe.sh")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage", ["drop caffemodel sha256", "drop input blobs", "not json", "wrong format"])
def test_damaged_manifest_is_one_clear_error(capsys, tmp_path, weights, damage):
    ref = copied_reference(tmp_path)
    path = ref / "manifest.json"
    manifest = json.loads(path.read_text())
    if damage == "drop caffemodel sha256":
        del manifest["model"]["caffemodel"]["sha256"]
    elif damage == "drop input blobs":
        del manifest["input"]["blobs"]
    elif damage == "wrong format":
        manifest["format"] = "something-else"
    path.write_text("{ not json" if damage == "not json" else json.dumps(manifest))
    fails_with(capsys, ["check", TINY.prototxt, weights, "--blobs", ref], path)


def test_wrong_weights_that_also_fail_to_convert_are_named_as_wrong_weights(capsys, tmp_path):
    """The sha256 check runs beside the conversion; when both fail, the provenance error is the one said."""
    other = load_fixture("tiny_v1").weights_path()  # another net's weights: they neither match nor fit
    fails_with(capsys, ["check", TINY.prototxt, other, "--blobs", TINY.references / "chelsea"], "caffemodel", "sha256")


@pytest.mark.parametrize("edit, expected", [
    # Caffe's Pooling CHECKs these pairs: one alone would leave the other 0 (a stride of 0 divides by zero)
    (lambda p: p.replace('top: "pool_global" pooling_param { pool: MAX global_pooling: true }',
                         'top: "pool_global" pooling_param { pool: MAX kernel_size: 2 stride_h: 2 }'),
     ("pool_global", "stride_h and stride_w go together")),
    (lambda p: p.replace('top: "pool_global" pooling_param { pool: MAX global_pooling: true }',
                         'top: "pool_global" pooling_param { pool: MAX kernel_size: 2 pad_w: 1 }'),
     ("pool_global", "pad_h and pad_w go together")),
    # only MAX pooling has the optional second (argmax mask) top; Caffe refuses it for AVE
    (lambda p: p.replace('top: "pool_global" pooling_param { pool: MAX',
                         'top: "pool_global" top: "pool_mask" pooling_param { pool: AVE'),
     ("pool_global", "has 2 tops", "only MAX pooling", "not supported")),
], ids=["stride_h alone", "pad_w alone", "AVE pooling mask top"])
def test_pooling_parameters_caffe_refuses_or_parity_cannot_convert(capsys, tmp_path, weights, edit, expected):
    bad = tmp_path / "pool.prototxt"
    bad.write_text(edit(TINY.prototxt.read_text()))
    assert bad.read_text() != TINY.prototxt.read_text()
    line = next(i for i, lay in enumerate(bad.read_text().splitlines(), 1) if '"pool_global"' in lay)
    fails_with(capsys, ["convert", bad, weights, "-o", tmp_path / "m.keras"], f"{bad}:{line}", *expected)
    assert not (tmp_path / "m.keras").exists()


# -- outputs that cannot be written: refused before the work, nothing left behind ----------------
def test_unwritable_outputs_are_refused_before_converting(capsys, tmp_path, weights):
    a_file = tmp_path / "plain.txt"
    a_file.write_text("x")
    folder = tmp_path / "taken.keras"
    folder.mkdir()
    fails_with(capsys, ["convert", TINY.prototxt, weights, "-o", a_file / "m.keras"], "plain.txt is not a folder")
    fails_with(capsys, ["convert", TINY.prototxt, weights, "-o", folder], "taken.keras", "is a folder")
    good = tmp_path / "good.keras"
    fails_with(capsys, ["convert", TINY.prototxt, weights, "-o", good, "--weights-npz", a_file / "w.npz"], "plain.txt")
    assert not good.exists()  # one bad output path: no output at all
    fails_with(capsys, ["check", "--model", "tiny", "--json", tmp_path / "r.json", "--html", a_file / "r.html"],
               "HTML report", "plain.txt")
    assert not (tmp_path / "r.json").exists()
    fails_with(capsys, ["export-weights", TINY.prototxt, weights, "-o", a_file / "w.h5"], "plain.txt")
    fails_with(capsys, ["baseline", "update", "--model", "tiny", "--baseline", a_file / "b.json"], "plain.txt")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc, where no file can be created")
def test_output_where_the_file_system_refuses_a_file(capsys, weights):
    fails_with(capsys, ["convert", TINY.prototxt, weights, "-o", "/proc/m.keras"], "/proc", "cannot write")


def test_every_output_written_together(capsys, tmp_path, weights):
    model, arrays = tmp_path / "m.keras", tmp_path / "w.npz"
    assert main(["convert", str(TINY.prototxt), str(weights), "-o", str(model), "--weights-npz", str(arrays)]) == 0
    err = capsys.readouterr().err
    assert model.is_file() and arrays.is_file() and "converting" in err  # progress on stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras", "w.npz"]  # no temporary debris


# -- the user's own code: its failure is one line in the user's file ----------------------------
USER_MODULE = """import keras

def returns_none():
    return None

def raises():
    raise RuntimeError("my model is broken")
"""


@pytest.mark.parametrize("function, expected", [("returns_none", ("returned NoneType, not a keras.Model", ":3")),
                                                ("raises", ("raised RuntimeError: my model is broken", ":7"))])
def test_a_failing_keras_model_builder(capsys, tmp_path, function, expected):
    user = tmp_path / "mine.py"
    user.write_text(USER_MODULE)
    fails_with(capsys, ["check", "--model", "tiny", "--keras-model", f"{user}:{function}", "-q"], str(user), *expected)


def test_a_module_failing_at_import(capsys, tmp_path):
    user = tmp_path / "fails.py"
    user.write_text("x = 1\nraise ValueError('bad at import')\n")
    fails_with(capsys, ["--plugin", user, "check", "--model", "tiny"], f"{user}:2", "raised ValueError: bad at import")


# -- nets Caffe itself refuses to build ----------------------------------------------------------
@pytest.mark.parametrize("old, new, expected", [
    ('top: "pool_global" pooling_param', 'top: "pool1" pooling_param',
     ("pool_global", "already produced by layer 'pool1'")),
    ('name: "pool_global" type: "Pooling"', 'name: "pool_global" type: ""', ("pool_global", "has no type")),
    ("dim: 17", "dim: -17", ("data", "below 1")),
], ids=["second producer", "no type", "negative input size"])
def test_nets_caffe_refuses(capsys, tmp_path, weights, old, new, expected):
    bad = tmp_path / "net.prototxt"
    assert old in TINY.prototxt.read_text()
    bad.write_text(TINY.prototxt.read_text().replace(old, new, 1))
    fails_with(capsys, ["convert", bad, weights, "-o", tmp_path / "m.keras"], str(bad), *expected)
    assert not (tmp_path / "m.keras").exists()


# -- options that mean nothing alone are refused, not ignored ------------------------------------
@pytest.mark.parametrize("argv, expected", [
    (["--image", "chelsea"], "--image goes with --model"),
    (["--mapping", "m.json"], "--mapping goes with --keras-model"),
    (["--growth", "2"], "--growth goes with --baseline"),
    (["--until", " "], "--until needs a layer name"),
], ids=["image", "mapping", "growth", "until"])
def test_options_that_need_another(capsys, weights, argv, expected):
    fails_with(capsys, ["check", TINY.prototxt, weights, "--blobs", TINY.references / "chelsea", *argv], expected)


def test_baseline_update_names_an_unknown_model_before_checking_any(capsys, tmp_path):
    code = main(["baseline", "update", "--model", "tiny", "--model", "nosuch", "--baseline", str(tmp_path / "b.json")])
    err = capsys.readouterr().err
    assert code == 2 and "nosuch" in err and "checking tiny" not in err and "Traceback" not in err
