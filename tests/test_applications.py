"""keras.applications models, unchanged, checked against Caffe twins: pairing without a mapping, fused
activations, BatchNorm + Scale folded, mappings saved and given back, and the messages when pairing fails."""
from __future__ import annotations

import json
import textwrap

import pytest

from parity.cli import main

BUILDERS = textwrap.dedent("""
    import keras
    from sibling import INPUT  # a sibling module: a file's own folder is on the import path

    def vgg19():
        return keras.applications.VGG19(weights=None)

    def vgg16():
        return keras.applications.VGG16(weights=None, input_shape=(32, 32, 3))

    def resnet50():
        return keras.applications.ResNet50(weights=None, input_shape=INPUT)

    def vgg19_with_a_stranger():
        base = keras.applications.VGG19(weights=None, include_top=False, input_shape=(224, 224, 3))
        x = keras.layers.Flatten(name="flatten")(base.output)
        x = keras.layers.Dense(2048, activation="relu", name="mystery_dense")(x)  # Caffe's fc6 has 4096
        x = keras.layers.Dense(4096, activation="relu", name="fc2")(x)
        x = keras.layers.Dense(1000, activation="softmax", name="predictions")(x)
        return keras.Model(base.input, x)
""")


@pytest.fixture
def apps(tmp_path):
    (tmp_path / "sibling.py").write_text("INPUT = (64, 64, 3)\n")
    (tmp_path / "apps.py").write_text(BUILDERS)
    return tmp_path / "apps.py"


def check(capsys, tmp_path, model: str, builder: str, *extra):
    report = tmp_path / "report.json"
    code = main(["check", "--model", model, "--keras-model", builder, "--json", str(report), "-q", *extra])
    return code, json.loads(report.read_text()) if report.exists() else None, capsys.readouterr()


def test_keras_applications_vgg19_unchanged_passes_without_a_mapping(capsys, tmp_path, apps):
    saved = tmp_path / "pairs.json"
    code, report, out = check(capsys, tmp_path, "vgg19", f"{apps}:vgg19", "--save-mapping", str(saved))
    assert code == 0 and report["status"] == "pass", out.out + out.err
    compared = {lay["layer"] for lay in report["layers"]}
    # fused ReLUs compared where Caffe's in-place chain ends; fc1/fc2's relu + dropout likewise; softmax fused
    assert {"relu1_1", "relu5_4", "pool5", "drop6", "drop7", "prob"} <= compared and "fc8" not in compared
    assert any("fc8" in n and "inside Keras layer 'predictions'" in n for n in report["notes"])
    assert report["checked"]["model"] == f"{apps}:vgg19" and report["checked"]["mapping"] is None
    pairs = json.loads(saved.read_text())
    assert pairs["block1_conv1"] == "conv1_1" and pairs["fc1"] == "fc6" and pairs["predictions"] == "fc8"


def test_a_saved_pairing_given_back_as_the_mapping_passes_the_same(capsys, tmp_path, apps):
    saved = tmp_path / "pairs.json"
    check(capsys, tmp_path, "vgg19", f"{apps}:vgg19", "--save-mapping", str(saved))
    code, report, _ = check(capsys, tmp_path, "vgg19", f"{apps}:vgg19", "--mapping", str(saved))
    assert code == 0 and report["checked"]["mapping"] == str(saved)
    assert "by mapping" in report["checked"]["pairing"]


def test_a_mapping_entry_names_weights_and_output_apart(capsys, tmp_path, apps):
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"block1_conv1": {"weights": "conv1_1", "output": "relu1_1"}}))
    code, report, _ = check(capsys, tmp_path, "vgg19", f"{apps}:vgg19", "--mapping", str(mapping))
    assert code == 0, report
    # the output named apart is the one compared: the softmax's output against Caffe's logits must fail there
    mapping.write_text(json.dumps({"predictions": {"weights": "fc8", "output": "fc8"}}))
    code, report, _ = check(capsys, tmp_path, "vgg19", f"{apps}:vgg19", "--mapping", str(mapping))
    assert code == 1 and report["first_divergence"] == "fc8"


def test_keras_applications_resnet50_pairs_batchnorm_and_scale_into_one_layer(capsys, tmp_path, apps):
    """Every Keras layer of ResNet50 finds its Caffe twin (BatchNormalization <- BatchNorm + Scale, the
    conv biases Caffe lacks as zeros). It does not pass, and must not: Keras pads pool1 by one on each
    side and rounds down, Caffe's pool1 has no padding and rounds up, so the windows sit one pixel apart.
    Everything before pool1 passes, and pool1 is named."""
    code, report, out = check(capsys, tmp_path, "resnet50", f"{apps}:resnet50")
    assert code == 1 and report["first_divergence"] == "pool1", out.err
    # -q: one line, model and sample, then the verdict (hints never replace it)
    assert out.out.splitlines() == [out.out.splitlines()[0]]
    assert out.out.startswith("resnet50/chelsea: FAIL: first divergence at pool1 (Pooling")
    status = {lay["layer"]: lay["status"] for lay in report["layers"]}
    assert status["conv1_relu"] == "pass" and status["data"] == "pass"
    assert "by position" in report["checked"]["pairing"]
    assert ({lay["layer"] for lay in report["layers"] if lay["status"] == "downstream"}
            >= {"res2a_relu", "pool5", "prob"})


def test_an_unpairable_layer_is_named_with_the_closest_caffe_names_and_the_mapping_hint(capsys, tmp_path, apps):
    code, report, out = check(capsys, tmp_path, "vgg19", f"{apps}:vgg19_with_a_stranger")
    assert code == 2 and report is None
    assert "'mystery_dense'" in out.err and "fc6" in out.err and "--mapping" in out.err
    assert "Caffe's readers there: fc6 (InnerProduct)" in out.err
    assert "prototxt" not in out.err and len(out.err.splitlines()) == 1
    # a mapping naming the pair anyway: the shapes are the error, said as such
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"mystery_dense": "fc6"}))
    code, report, out = check(capsys, tmp_path, "vgg19", f"{apps}:vgg19_with_a_stranger", "--mapping", str(mapping))
    assert code == 2 and "mystery_dense.kernel: shape (25088, 2048), Caffe's fc6 gives (25088, 4096)" in out.err


def test_a_module_builder_imports_from_the_working_folder(capsys, tmp_path, apps, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, report, out = check(capsys, tmp_path, "vgg19", "apps:vgg19", "--image", "chelsea")
    assert code == 0, out.err


def test_keras_applications_vgg16_unchanged_passes_without_a_mapping(capsys, tmp_path, apps):
    """The Caffe twin runs at 32x32 (the reference budget): pool5 is 1x1x512, so fc1 reads 512 values."""
    code, report, out = check(capsys, tmp_path, "vgg16", f"{apps}:vgg16")
    assert code == 0 and report["status"] == "pass", out.out + out.err
    compared = {lay["layer"] for lay in report["layers"]}
    assert {"relu1_1", "pool5", "drop6", "prob"} <= compared
