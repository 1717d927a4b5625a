"""`parity dump` (and `dump-tf`) on bad input: one line naming the file, exit 2, no traceback, no output.

Caffe answers bad input by aborting the whole process (SIGABRT, a glog stack, a half-written hidden
folder left behind), or worse, by running a layer the caffemodel lacks with random filler weights.
These tests run the real command in the pycaffe environment, so each one proves the input is refused
before Caffe sees it. fixture.json checks need no Caffe and run in this environment.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from support import caffe_python_or_skip

from parity.caffe.fixtures import REPO, load_fixture
from parity.caffe.reading.caffemodel import read_caffemodel
from parity.caffe.reading.caffemodel_writer import write_caffemodel
from parity.caffe.reading.prototxt import read_prototxt
from parity.cli import main

TINY = load_fixture("tiny")
IMAGE = TINY.image_path("chelsea")


def run_parity(python: str, argv: list, memory_limit: int | None = None) -> subprocess.CompletedProcess:
    """`python -m parity ARGV` in its own process (a Caffe abort must not take pytest with it)."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))

    return subprocess.run([python, "-m", "parity", *map(str, argv)], capture_output=True, text=True, timeout=300,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          preexec_fn=limit if memory_limit else None)


def one_error_line(stderr: str, *expected) -> str:
    """The single 'parity: error:' line of `stderr` (argparse may add its usage), holding every `expected`."""
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr and "Check failure stack trace" not in stderr, stderr[-3000:]
    errors = [line for line in lines if line.startswith("parity: error:")]
    assert len(errors) == 1, lines
    for text in expected:
        assert str(text) in errors[0], errors[0]
    return errors[0]


def dump_fails_with(tmp_path: Path, argv: list, *expected, memory_limit: int | None = None) -> str:
    """Run `parity dump ARGV --out OUT` with pycaffe: exit 2, one error line, and no OUT at all."""
    python = caffe_python_or_skip()
    out = tmp_path / "out"
    proc = run_parity(python, ["dump", *argv, "--out", out], memory_limit)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))
    return one_error_line(proc.stderr, *expected)


def with_image(prototxt: Path, weights: Path, *options) -> list:
    """The usual tiny command line: the fixture's image resized to the net's 17x23 input."""
    return [prototxt, weights, "--image", IMAGE, "--resize", "17,23", *options]


def edited_prototxt(tmp_path: Path, old: str, new: str) -> Path:
    text = TINY.prototxt.read_text()
    assert old in text
    path = tmp_path / "edited.prototxt"
    path.write_text(text.replace(old, new))
    return path


def layer_line(path: Path, layer: str) -> int:
    """The prototxt line where `layer` is defined (the line parity's errors point at)."""
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if f'name: "{layer}"' in line)


def edited_caffemodel(tmp_path: Path, edit: Callable[[dict], None], proto=None) -> Path:
    """A copy of the tiny caffemodel with its blobs (layer name -> arrays) edited."""
    blobs = {k: [np.array(a) for a in v] for k, v in read_caffemodel(TINY.weights_path(quiet=True)).blobs.items()}
    edit(blobs)
    return write_caffemodel(tmp_path / "edited.caffemodel", proto or read_prototxt(TINY.prototxt), blobs)


@pytest.fixture
def weights() -> Path:
    return TINY.weights_path(quiet=True)


# -- 1. nets and caffemodels Caffe aborts on -------------------------------------------------------

@pytest.mark.caffe
@pytest.mark.parametrize("old, new, layer, expected", [
    ('type: "Softmax"', 'type: "FancySoftmax"', "prob",
     ("Caffe stopped setting up layer 'prob' (FancySoftmax)", "Unknown layer type: FancySoftmax")),
    ("kernel_size: 3 pad: 1 stride: 2 }", "kernel_size: 40 stride: 2 }", "conv1", ("output would be empty",)),
    ("pool: AVE", "pool: STOCHASTIC", "pool2", ("STOCHASTIC is not supported",)),
], ids=["unknown type", "kernel larger than input", "stochastic pooling"])
def test_a_net_caffe_aborts_on_is_refused_at_its_line(tmp_path, weights, old, new, layer, expected):
    """Caffe CHECK-fails (SIGABRT) on these. It runs in a child process (parity.caffe.child): its own
    message, what parity's rules say of the layer, and the layer's line make one error line."""
    bad = edited_prototxt(tmp_path, old, new)
    dump_fails_with(tmp_path, with_image(bad, weights), f"{bad}:{layer_line(bad, layer)}", *expected)


@pytest.mark.caffe
@pytest.mark.parametrize("damage", ["truncated", "random bytes", "text"])
def test_a_damaged_caffemodel_is_refused(tmp_path, weights, damage):
    """Caffe's ReadProtoFromBinaryFile fails and aborts; parity's reader names the file."""
    data = weights.read_bytes()
    bad = tmp_path / "damaged.caffemodel"
    bad.write_bytes({"truncated": data[: len(data) // 2], "random bytes": np.random.default_rng(0).bytes(5000),
                     "text": TINY.prototxt.read_bytes()}[damage])
    dump_fails_with(tmp_path, with_image(TINY.prototxt, bad), bad, "truncated or corrupted")


@pytest.mark.caffe
@pytest.mark.parametrize("edit, expected", [
    (lambda b: b.__setitem__("fc1", []), ("no weights for layer 'fc1'",)),
    (lambda b: b.__setitem__("conv1", b["conv1"][:1]), ("'conv1' has 1 weight blobs", "implies 2")),
    (lambda b: b.__setitem__("fc1", [b["fc1"][0][:, :95], b["fc1"][1]]), ("'fc1'", "(10, 95)", "(10, 96)")),
], ids=["layer without blobs", "blob count", "blob shape"])
def test_weights_caffe_cannot_load_are_refused(tmp_path, edit, expected):
    """Caffe's CopyTrainedLayersFrom CHECK-fails on these; the converter's Context.blobs rule names them."""
    bad = edited_caffemodel(tmp_path, edit)
    dump_fails_with(tmp_path, with_image(TINY.prototxt, bad), bad, *expected)


# -- 2. caffemodels Caffe would silently replace with filler weights -------------------------------

@pytest.mark.caffe
def test_an_empty_caffemodel_is_refused(tmp_path):
    """Caffe reads 0 bytes as a net with no layers and runs on random fillers, exit 0."""
    empty = tmp_path / "empty.caffemodel"
    empty.write_bytes(b"")
    dump_fails_with(tmp_path, with_image(TINY.prototxt, empty), empty, "empty")


@pytest.mark.caffe
def test_another_nets_caffemodel_is_refused(tmp_path):
    """No layer name matches, so Caffe would fill every layer with fillers; the first one is named."""
    proto = read_prototxt(TINY.prototxt)
    for layer in proto.layer:
        layer.name = f"other_{layer.name}"

    def rename(blobs: dict) -> None:
        for name in list(blobs):
            blobs[f"other_{name}"] = blobs.pop(name)

    bad = edited_caffemodel(tmp_path, rename, proto)
    dump_fails_with(tmp_path, with_image(TINY.prototxt, bad), bad, "no weights for layer 'conv1'")


@pytest.mark.caffe
def test_a_layer_only_the_caffemodel_has_is_ignored_as_caffe_does(tmp_path):
    """The preflight must not refuse what Caffe accepts: a trained net's extra layers (a loss, say)."""
    proto = read_prototxt(TINY.prototxt)
    extra = proto.layer.add()
    extra.CopyFrom(proto.layer[-1])
    extra.name = "extra"
    rich = edited_caffemodel(tmp_path, lambda b: b.__setitem__("extra", [np.ones(3, np.float32)]), proto)
    proc = run_parity(caffe_python_or_skip(),
                      ["dump", *with_image(TINY.prototxt, rich), "--out", tmp_path / "out"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "out" / "chelsea" / "manifest.json").is_file()


# -- 3. an input array of another size ------------------------------------------------------------

@pytest.mark.caffe
def test_an_input_array_of_another_size_is_refused_before_caffe(tmp_path, weights):
    """Caffe reshaped the net to 30x30, aborted at fc1 and left a hidden OUT/.in.XXXX/ behind."""
    array = tmp_path / "in.npy"
    np.save(array, np.zeros((1, 3, 30, 30), np.float32), allow_pickle=False)
    dump_fails_with(tmp_path, [TINY.prototxt, weights, "--input", array], array, "(1, 3, 30, 30)", "does not fit")


# -- 4. images ------------------------------------------------------------------------------------

@pytest.mark.caffe
@pytest.mark.parametrize("name, array", [
    ("gray16.png", (np.arange(17 * 23, dtype=np.uint16).reshape(17, 23) * 150)),
    ("float.tiff", np.linspace(0, 1, 17 * 23, dtype=np.float32).reshape(17, 23)),
], ids=["16-bit png", "float tiff"])
def test_an_image_that_is_not_8_bit_is_refused(tmp_path, weights, name, array):
    """convert("RGB") clips 16-bit and float pixels to 255: the reference would be of another picture."""
    from PIL import Image

    image = tmp_path / name
    Image.fromarray(array).save(image)
    assert Image.open(image).mode in ("I;16", "F")
    dump_fails_with(tmp_path, [TINY.prototxt, weights, "--image", image], image, "image mode")


@pytest.mark.caffe
def test_two_images_of_one_name_are_refused(tmp_path, weights):
    """Both would be written to OUT/chelsea/, the second silently replacing the first."""
    other = tmp_path / "elsewhere" / "chelsea.jpg"
    other.parent.mkdir()
    other.write_bytes(IMAGE.read_bytes())
    dump_fails_with(tmp_path, with_image(TINY.prototxt, weights, "--image", other), other, "OUT/chelsea/")


# -- 5. options -----------------------------------------------------------------------------------

@pytest.mark.caffe
@pytest.mark.parametrize("resize", ["0,0", "17", "17,23,3"])
def test_resize_must_be_two_positive_integers(tmp_path, weights, resize):
    """0,0 was a ValueError and 17 an IndexError traceback; 17,23,3 was taken as 17,23."""
    argv = [TINY.prototxt, weights, "--image", IMAGE, "--resize", resize]
    dump_fails_with(tmp_path, argv, "--resize", "two positive integers")


@pytest.mark.caffe
def test_resize_is_compared_with_the_net_before_any_resizing(tmp_path, weights):
    """100000x100000 was allocated (30 GB) before the size check; under an 8 GB limit that is a MemoryError."""
    argv = [TINY.prototxt, weights, "--image", IMAGE, "--resize", "100000,100000"]
    dump_fails_with(tmp_path, argv, TINY.prototxt, "does not match the net's input 17x23", memory_limit=8 << 30)


@pytest.mark.caffe
@pytest.mark.parametrize("option, value", [("--scale", "nan"), ("--raw-scale", "-1"), ("--mean", "1,inf,2")])
def test_scales_and_mean_must_be_finite(tmp_path, weights, option, value):
    """A NaN scale or a negative raw scale ran and wrote a reference of garbage."""
    dump_fails_with(tmp_path, with_image(TINY.prototxt, weights, option, value), option)


@pytest.mark.caffe
def test_a_fixture_and_net_files_together_are_refused(tmp_path, weights):
    """Which net would be dumped was silently decided; now the user decides."""
    dump_fails_with(tmp_path, [TINY.prototxt, weights, "--fixture", "tiny"], "--fixture", "not both")


@pytest.mark.parametrize("option, value", [("--resize", "17"), ("--scale", "nan"), ("--raw-scale", "0")])
def test_dump_tf_checks_the_shared_options_too(capsys, tmp_path, option, value):
    """dump-tf shares dump's preprocessing options, so it refuses the same values (before TensorFlow loads)."""
    code = main(["dump-tf", str(tmp_path / "graph.pb"), "--image", str(IMAGE), option, value,
                 "--out", str(tmp_path / "out")])
    assert code == 2
    one_error_line(capsys.readouterr().err, option)
    assert not (tmp_path / "out").exists()


# -- 6. dump-tf in the pycaffe environment --------------------------------------------------------

@pytest.mark.caffe
def test_dump_tf_without_tensorflow_says_where_to_run_it(tmp_path):
    """The pycaffe venv has no TensorFlow: a ModuleNotFoundError traceback became one line."""
    python = caffe_python_or_skip()
    if python == sys.executable:
        pytest.skip("needs the pycaffe environment, which has no TensorFlow")
    graph = tmp_path / "graph.pb"
    graph.write_bytes(b"")
    proc = run_parity(python, ["dump-tf", graph, "--image", IMAGE, "--out", tmp_path / "out"])
    assert proc.returncode == 2, proc.stderr[-3000:]
    one_error_line(proc.stderr, "TensorFlow", "main environment")
    assert not (tmp_path / "out").exists()


# -- 7. fixture.json ------------------------------------------------------------------------------

def _set(*keys_and_value):
    """An edit of fixture.json's dict that sets the value at the path of keys."""
    *keys, value = keys_and_value

    def edit(d: dict) -> None:
        for key in keys[:-1]:
            d = d[key]
        d[keys[-1]] = value
    return edit


@pytest.mark.parametrize("edit, expected", [
    (lambda d: [1, 2], ("JSON object",)),
    (_set("weights", "abc"), ("'weights'",)),
    (_set("weights", "seed", "x"), ("'weights.seed'", "integer")),
    (_set("preprocessing", "mean", "abc"), ("preprocessing.mean",)),
    (_set("preprocessing", "resize", [17]), ("preprocessing.resize",)),
    (_set("preprocessing", "channel_order", "XYZ"), ("preprocessing.channel_order", "XYZ")),
    (_set("granularity", "pixel"), ("'granularity'", "pixel")),
    (_set("images", "chelsea"), ("'images'", "list")),
], ids=["list", "weights string", "seed string", "mean string", "resize one value", "channel order",
        "granularity", "images string"])
def test_a_bad_fixture_json_is_one_line_naming_it_and_the_key(capsys, tmp_path, monkeypatch, edit, expected):
    """Each was a traceback, an error without the file, a string read as a list of image names, or a
    granularity Caffe then ran as 'blob' without a word."""
    root = tmp_path / "fixtures"
    shutil.copytree(TINY.dir, root / "bad")
    path = root / "bad" / "fixture.json"
    description = json.loads(path.read_text())
    path.write_text(json.dumps(edit(description) or description))
    monkeypatch.setenv("PARITY_FIXTURES", str(root))
    monkeypatch.setenv("PARITY_CACHE", str(tmp_path / "cache"))
    code = main(["dump", "--fixture", "bad", "--out", str(tmp_path / "out")])
    assert code == 2
    one_error_line(capsys.readouterr().err, path, *expected)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("order", ["BGR", "RGB"])
def test_preprocessing_scales_raw_then_subtracts_the_mean_then_scales_as_caffe_io_transformer_does(tmp_path, order):
    """caffe.io.Transformer.preprocess: load_image gives pixel/255, then channel swap, then *raw_scale, then
    -mean, then *input_scale. The order only shows when raw_scale is not 255 (at 255, (p - m) and p - m agree
    either way), so raw_scale 1 here: the mean is in raw_scale's units ([0, 1]), and subtracting it from the
    0..255 pixels before scaling would give a very different blob."""
    from PIL import Image

    from parity.data.preprocess import Preprocessing, preprocess_image

    rgb = np.random.default_rng(4).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    path = tmp_path / "img.png"
    Image.fromarray(rgb, "RGB").save(path)
    mean = (0.1, 0.25, 0.4)  # in the net's channel order
    blob = preprocess_image(path, Preprocessing(channel_order=order, raw_scale=1.0, mean=mean, scale=2.0), (1, 3, 4, 5))
    chw = rgb.transpose(2, 0, 1).astype(np.float64) / 255.0
    if order == "BGR":
        chw = chw[::-1]
    expected = (chw * 1.0 - np.asarray(mean)[:, None, None]) * 2.0
    assert blob.shape == (1, 3, 4, 5) and blob.dtype == np.float32
    np.testing.assert_allclose(blob[0], expected, rtol=1e-6, atol=1e-6)


def test_gray_feeds_one_channel_of_opencvs_luma_and_refuses_a_colour_net():
    """A one-channel net (the QR detector) gets 0.299 R + 0.587 G + 0.114 B; a 3-channel net asked for GRAY
    (or a 1-channel one fed colour) is one clear error, not a broadcast."""
    from PIL import Image

    from parity.data.preprocess import Preprocessing, preprocess_image
    from parity.errors import ParityError

    rgb = np.asarray(Image.open(IMAGE).convert("RGB"), np.float32)
    gray = preprocess_image(IMAGE, Preprocessing(channel_order="GRAY", raw_scale=1.0), (1, 1, 224, 224))
    expected = (rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114) / 255.0
    np.testing.assert_allclose(gray[0, 0], expected, rtol=1e-6)
    with pytest.raises(ParityError, match="channel_order GRAY gives 1"):
        preprocess_image(IMAGE, Preprocessing(channel_order="GRAY"), (1, 3, 224, 224))
    with pytest.raises(ParityError, match="channel_order BGR gives 3"):
        preprocess_image(IMAGE, Preprocessing(), (1, 1, 224, 224))
