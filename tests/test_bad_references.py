"""Bad references, tolerances and baselines: one line naming the file and key, exit 2, no traceback.

Manifests, .npy files, [tool.parity], a fixture's `tolerances` and baseline files are all input: a
wrong type in any of them must be refused where it is read, and (where the file alone shows it) before
any model runs, not surface as a traceback, a NaN verdict or a gate silently turned off.
"""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from support import fails_with

import parity.check.pipeline
from parity.caffe.fixtures import REPO, load_fixture
from parity.check.compare import LayerResult, Tolerance, measure

TINY = load_fixture("tiny")
COMMITTED_BASELINE = REPO / "parity-baseline.json"


def copied_reference(tmp_path: Path) -> Path:
    """The tiny fixture's reference folder, copied so a test can damage it."""
    dst = tmp_path / "chelsea"
    shutil.copytree(TINY.references / "chelsea", dst)
    return dst


@pytest.fixture
def weights() -> Path:
    return TINY.weights_path()


@pytest.fixture
def no_model_runs(monkeypatch) -> None:
    """Bad input the file alone shows must be refused before any model runs (not after a whole check)."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model ran before the bad input was refused")

    monkeypatch.setattr(parity.check.pipeline, "run_target", refuse)


def damaged_manifest(tmp_path: Path, edit: Callable[[dict], None]) -> tuple[Path, Path]:
    """A copied tiny reference whose manifest.json `edit` changed: (the folder, its manifest)."""
    ref = copied_reference(tmp_path)
    path = ref / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
    return ref, path


def outside_input(tmp_path: Path) -> Callable[[dict], None]:
    """An input blob whose file is a real, fitting .npy just outside the reference folder."""
    np.save(tmp_path / "outside.npy", np.zeros((1, 3, 17, 23), np.float32), allow_pickle=False)
    return lambda m: m["input"]["blobs"]["data"].update(file="../outside.npy")


MANIFEST_DAMAGE = {  # name: (edit, texts the error must hold besides the manifest's path)
    "entry is a number": (lambda m: m["entries"].__setitem__(1, 5), ("entry 1",)),
    "order is text": (lambda m: m["entries"][1].update(order="x"), ("entry 1 (conv1)", "order")),
    "order is null": (lambda m: m["entries"][1].update(order=None), ("entry 1 (conv1)", "order")),
    "shape is text": (lambda m: m["entries"][1].update(shape="abc"), ("entry 1 (conv1)", "shape")),
    "shape is a number": (lambda m: m["entries"][1].update(shape=7), ("entry 1 (conv1)", "shape")),
    "input.blobs is a list": (lambda m: m["input"].update(blobs=[m["input"]["blobs"]["data"]]), ("input.blobs",)),
    "no entries": (lambda m: m.update(entries=[]), ("entries",)),
    "absolute file": (lambda m: m["entries"][1].update(file="/etc/passwd"), ("entry 1 (conv1)", "/etc/passwd")),
    "file above the folder": (lambda m: m["entries"][1].update(file="../../001_conv1.npy.gz"),
                              ("entry 1 (conv1)", "inside the reference folder")),
}


@pytest.mark.parametrize("damage", MANIFEST_DAMAGE)
def test_a_manifest_value_of_the_wrong_type_is_named(capsys, tmp_path, weights, no_model_runs, damage):
    """Each used to end in a traceback (or read a file outside the folder) instead of naming the key."""
    edit, expected = MANIFEST_DAMAGE[damage]
    ref, manifest = damaged_manifest(tmp_path, edit)
    fails_with(capsys, ["check", TINY.prototxt, weights, "--blobs", ref], manifest, *expected)


def test_an_input_file_outside_the_folder_is_refused(capsys, tmp_path, weights, no_model_runs):
    """A real, fitting .npy outside the folder was read without a word: a manifest must not reach out."""
    ref, manifest = damaged_manifest(tmp_path, outside_input(tmp_path))
    fails_with(capsys, ["check", TINY.prototxt, weights, "--blobs", ref], manifest, "input blob 'data'",
               "inside the reference folder")


def zip_archive(path: Path) -> None:
    np.savez(path.with_suffix(".npz"), x=np.zeros(3, np.float32))
    path.with_suffix(".npz").replace(path)


NOT_NPY = {  # name: how the entry's file is overwritten
    "zip signature": lambda p: p.write_bytes(b"PK\x03\x04" + bytes(60)),
    "real .npz": zip_archive,
    "random bytes": lambda p: p.write_bytes(np.random.default_rng(0).bytes(256)),
    "text": lambda p: p.write_text("root:x:0:0:root:/root:/bin/bash\n"),
}


@pytest.mark.parametrize("kind", NOT_NPY)
def test_a_file_that_is_not_npy_says_so(capsys, tmp_path, weights, kind):
    """np.load opened zips (a BadZipFile traceback) and called anything else 'would need pickle'."""
    ref = copied_reference(tmp_path)
    victim = ref / json.loads((ref / "manifest.json").read_text())["entries"][3]["file"]
    NOT_NPY[kind](victim)
    message = fails_with(capsys, ["check", TINY.prototxt, weights, "--blobs", ref], victim, "not a .npy file")
    assert "pickle" not in message


@pytest.mark.parametrize("option", ["--atol", "--rtol"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_tolerance_that_is_not_a_finite_number_is_refused(capsys, no_model_runs, option, value):
    """A NaN tolerance failed every layer (exit 1); an infinite one passed any."""
    fails_with(capsys, ["check", "--model", "tiny", option, value, "-q"], "command line", option[2:], value)


def test_a_nan_growth_factor_is_refused(capsys, no_model_runs):
    """`--growth nan` passed the `< 1` check and turned the baseline gate off without a word."""
    fails_with(capsys, ["check", "--model", "tiny", "--baseline", COMMITTED_BASELINE, "--growth", "nan", "-q"],
               "growth", "nan")


PYPROJECT_DAMAGE = {  # name: ([tool.parity] text, texts the error must hold besides the file's path)
    "atol nan": ("[tool.parity]\natol = nan\n", ("[tool.parity]", "atol", "nan")),
    "rtol inf": ("[tool.parity]\nrtol = inf\n", ("[tool.parity]", "rtol", "inf")),
    "growth text": ('[tool.parity]\ngrowth = "x"\n', ("[tool.parity]", "growth", "'x'")),
    "growth nan": ("[tool.parity]\ngrowth = nan\n", ("[tool.parity]", "growth", "nan")),
    "models a number": ("[tool.parity]\nmodels = 5\n", ("[tool.parity]", "models")),
    "layer pattern text": ('[tool.parity.models.tiny.layers]\n"fc*" = "big"\n',
                           ("[tool.parity.models.tiny]", "'fc*'", "'big'")),
    "other model's table": ("[tool.parity.models.other]\natol = nan\n", ("[tool.parity.models.other]", "atol")),
}


@pytest.mark.parametrize("damage", PYPROJECT_DAMAGE)
def test_a_bad_tool_parity_value_names_pyproject_and_key(capsys, tmp_path, monkeypatch, no_model_runs, damage):
    """These gave tracebacks, a misleading 'unknown tolerance key(s) b, g, i', or a silent NaN verdict."""
    text, expected = PYPROJECT_DAMAGE[damage]
    (tmp_path / "pyproject.toml").write_text(text)
    monkeypatch.chdir(tmp_path)
    fails_with(capsys, ["check", "--model", "tiny", "-q"], tmp_path / "pyproject.toml", *expected)


def test_a_baseline_setting_that_is_not_a_file_name_is_refused(capsys, tmp_path, monkeypatch, no_model_runs):
    """`baseline = 5` was a TypeError traceback in `baseline update`."""
    (tmp_path / "pyproject.toml").write_text("[tool.parity]\nbaseline = 5\n")
    monkeypatch.chdir(tmp_path)
    fails_with(capsys, ["baseline", "update", "--model", "tiny"], tmp_path / "pyproject.toml", "baseline", "5")


def test_a_bad_fixture_tolerance_names_fixture_json(capsys, tmp_path, monkeypatch, no_model_runs):
    """The fixture's `tolerances` are input too: the error names its fixture.json, not just 'fixture tiny'."""
    fixtures = tmp_path / "fixtures"
    shutil.copytree(TINY.dir, fixtures / "tiny")
    description = json.loads((fixtures / "tiny" / "fixture.json").read_text())
    description["tolerances"] = {"layers": {"fc*": "big"}}
    (fixtures / "tiny" / "fixture.json").write_text(json.dumps(description))
    monkeypatch.setenv("PARITY_FIXTURES", str(fixtures))
    fails_with(capsys, ["check", "--model", "tiny", "-q"], fixtures / "tiny" / "fixture.json", "'fc*'", "'big'")


BASELINE_DAMAGE = {  # name: (the file's models, texts the error must hold besides its path)
    "model is a number": ({"tiny": 5}, ("models['tiny']",)),
    "model is a list": ({"tiny": ["x"]}, ("models['tiny']",)),
    "layer is a number": ({"tiny": {"chelsea": {"conv1": 5}}}, ("models['tiny']['chelsea']['conv1']",)),
    "no max_abs": ({"tiny": {"chelsea": {"conv1": {"conv1": {"rel_l2": 1.0}}}}}, ("max_abs",)),
    "max_abs text": ({"tiny": {"chelsea": {"conv1": {"conv1": {"max_abs": "big"}}}}}, ("max_abs", "'big'")),
}


@pytest.mark.parametrize("damage", BASELINE_DAMAGE)
def test_a_baseline_of_the_wrong_shape_is_refused_before_any_model_runs(capsys, tmp_path, no_model_runs, damage):
    """These were tracebacks (AttributeError, KeyError, ValueError) after the whole run."""
    models, expected = BASELINE_DAMAGE[damage]
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps({"models": models}))
    fails_with(capsys, ["check", "--model", "tiny", "--baseline", path, "-q"], path, *expected)


def planted(value: float) -> np.ndarray:
    """A converted output (channels-last) of zeros with `value` at Caffe's (0, 1, 0, 0)."""
    got = np.zeros((1, 3, 4, 2), np.float32)
    got[0, 0, 0, 1] = value
    return got


QUIET_CASES = {  # name: (converted output, tolerance, the metrics they must keep)
    "atol 0 over exact zeros": (planted(0.0), Tolerance(0.0, 0.0),
                                {"status": "pass", "max_abs": 0.0, "max_rel": np.nan, "worst": (0, 0, 0, 0)}),
    "an infinite output": (planted(np.inf), Tolerance(1e-3, 1e-4),
                           {"status": "fail", "max_abs": np.inf, "cosine": 0.0, "worst": (0, 1, 0, 0)}),
}


@pytest.mark.parametrize("case", QUIET_CASES)
def test_comparing_warns_nothing_and_keeps_the_metrics(case):
    """Not bad input, but the same stderr: 0/0 (atol 0 where Caffe's output is 0) and 0 x inf printed numpy
    RuntimeWarnings; the metrics must keep their values (NaN wins in max_rel, as in max())."""
    got, tol, expected = QUIET_CASES[case]
    ref = np.zeros((1, 2, 3, 4), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = measure(LayerResult("x", "T", "x", 0, ref.shape), ref, got, tol)
    for name, value in expected.items():
        assert getattr(result, name) == value or (value is np.nan and np.isnan(getattr(result, name))), name


def test_input_blobs_without_the_nets_input_name_the_manifest(capsys, tmp_path, weights):
    """The arrays are there, under a name the net has no input for: say so at the manifest."""
    ref, manifest = damaged_manifest(tmp_path,
                                     lambda m: m["input"]["blobs"].update(image=m["input"]["blobs"].pop("data")))
    fails_with(capsys, ["check", TINY.prototxt, weights, "--blobs", ref], manifest,
               "input blob(s) data", "it has: image")


def test_an_edited_prototxt_is_a_provenance_mismatch_too(capsys, tmp_path, weights):
    """The manifest records the prototxt's sha256 as well as the caffemodel's: a reference made from another
    net definition is not this net's, even when the weights are the same file. A harmless edit (one comment
    line) must already be refused, naming the prototxt and its sha256; --allow-mismatch compares anyway and
    the report says so."""
    from parity.cli import main

    edited_net = tmp_path / "deploy.prototxt"
    edited_net.write_text("# an added comment\n" + TINY.prototxt.read_text())
    refs = TINY.references
    fails_with(capsys, ["check", edited_net, weights, "--blobs", refs, "-q"], "prototxt deploy.prototxt",
               "sha256", "--allow-mismatch", refs / "chelsea" / "manifest.json")
    out = tmp_path / "r.json"
    code = main([str(a) for a in ["check", edited_net, weights, "--blobs", refs, "--allow-mismatch", "--json", out]])
    text = capsys.readouterr().out
    assert code == 0, text  # the comment changes nothing Caffe computes
    notes = [line.strip() for line in text.splitlines() if line.strip().startswith("note:")]
    assert len(notes) == 1 and notes[0].startswith("note: ALLOWED MISMATCH: prototxt deploy.prototxt has sha256")
    report = json.loads(out.read_text())
    assert report["allow_mismatch"] is True and report["notes"] == [notes[0][len("note: "):]]


def gzipped_npy(path: Path, header_shape: tuple[int, ...], data: bytes) -> None:
    """A .npy.gz whose header says `header_shape` (float32) and whose data is `data`."""
    import gzip
    import io

    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<f4", "fortran_order": False, "shape": header_shape})
    with gzip.open(path, "wb") as fh:
        fh.write(np.lib.format.magic(1, 0) + head.getvalue()[len(np.lib.format.magic(1, 0)):] + data)


def test_a_compressed_array_round_trips_bit_for_bit(tmp_path):
    from parity.data.reference import load_npy, write_npy_gz

    array = np.random.default_rng(1).standard_normal((2, 3, 5, 7)).astype(np.float32)
    array[0, 1] = np.nan
    write_npy_gz(array, tmp_path / "a.npy.gz")
    write_npy_gz(array, tmp_path / "b.npy.gz")
    assert (tmp_path / "a.npy.gz").read_bytes() == (tmp_path / "b.npy.gz").read_bytes()  # no name, no time inside
    assert np.array_equal(load_npy(tmp_path / "a.npy.gz", array.shape), array, equal_nan=True)


def test_a_compressed_array_claiming_more_than_deflate_can_hold_is_refused_unread(tmp_path, monkeypatch):
    """A 100-byte .npy.gz claiming 4 TB: refused from its header, nothing allocated (a zip-bomb's shape)."""
    from parity.data.reference import load_npy
    from parity.errors import ParityError

    path = tmp_path / "bomb.npy.gz"
    gzipped_npy(path, (1 << 20, 1 << 20), b"")
    monkeypatch.setattr(np, "frombuffer", lambda *a, **k: pytest.fail("allocated"))
    with pytest.raises(ParityError, match="claims shape"):
        load_npy(path, (1 << 20, 1 << 20))


@pytest.mark.parametrize("data, says", [(bytes(4 * 5), "fewer"), (bytes(4 * 7), "more")])
def test_a_compressed_array_whose_data_disagrees_with_its_header_is_refused(tmp_path, data, says):
    from parity.data.reference import load_npy
    from parity.errors import ParityError

    path = tmp_path / "short.npy.gz"
    gzipped_npy(path, (6,), data)
    with pytest.raises(ParityError, match=says):
        load_npy(path, (6,))
