"""Text from files that fights back (issue 12): names and types that would forge lines or drive the
terminal, files nested past Python's recursion limit or not UTF-8, files that are not regular files,
two baseline updates at once, and inputs whose real problem the old messages hid. No Caffe needed."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import warnings
from argparse import Namespace
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
from support import fails_with

from parity.caffe.fixtures import REPO, load_fixture
from parity.cli import main
from parity.errors import ParityError

TINY = load_fixture("tiny")
ESC, BIDI = "\x1b", "\u202e"
# a layer name and a sample name that, printed raw, clear the screen, reorder text and forge a line
LAYER = f"pool{ESC}[2J2{BIDI}\nparity: error: forged by a layer name"
SAMPLE = f"chel{ESC}[31msea\nparity: error: forged by a sample name"
TYPE = "Fancy\nparity: error: none, all good"


@pytest.fixture
def weights():
    return TINY.weights_path()


def proto_text(text: str) -> str:
    """`text` as a quoted prototxt string: its control characters as the text format's escapes."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace(ESC, "\\033")


def assert_clean(*outputs: str, errors: int) -> None:
    """No ESC or bidi override anywhere, and exactly `errors` lines that start as parity's error line."""
    text = "".join(outputs)
    assert ESC not in text and BIDI not in text, text[-3000:]
    forged = [line for line in text.splitlines() if line.startswith("parity: error:")]
    assert len(forged) == errors, forged


# -- 3. names and types reach the terminal escaped ------------------------------------------------------
def test_printable_escapes_what_a_terminal_would_act_on():
    from parity.errors import printable

    assert printable(f"a\nb\r\t{ESC}[2J\x7f\x85{BIDI}\u2066\u2028ok") == \
        "a\\nb\\r\\t\\x1b[2J\\x7f\\x85\\u202e\\u2066\\u2028ok"
    assert printable("two\nlines", keep="\n") == "two\nlines"
    assert printable("Ünïcödé names stay") == "Ünïcödé names stay"


def test_the_cli_streams_escape_whatever_a_command_prints():
    """Progress, dump's log and other messages print names raw in their own modules; the CLI's streams
    escape them: stderr's messages are one line each, stdout keeps the report's own newlines."""
    import io

    from parity.cli import EscapingStream

    err, out = io.StringIO(), io.StringIO()
    print(f"parity dump: {SAMPLE}: running Caffe ...", file=EscapingStream(err, multiline=False))
    print(f"table\nFAIL: at {LAYER.replace(chr(10), ' ')}", file=EscapingStream(out, multiline=True))
    assert_clean(err.getvalue(), out.getvalue(), errors=0)
    assert err.getvalue().count("\n") == 1 and out.getvalue().count("\n") == 2


def test_a_layer_type_cannot_forge_an_error_line(capsys, tmp_path, weights):
    bad = tmp_path / "forged.prototxt"
    bad.write_text(TINY.prototxt.read_text()
                   + f'layer {{ name: "{proto_text(LAYER)}" type: "{proto_text(TYPE)}" bottom: "pool1" top: "x" }}\n')
    assert main(["convert", str(bad), str(weights), "-o", str(tmp_path / "m.keras")]) == 2
    out, err = capsys.readouterr()
    assert_clean(out, err, errors=1)
    (message,) = [line for line in err.splitlines() if line.startswith("parity: error:")]
    assert f"{bad}:" in message and "Fancy\\nparity: error: none, all good (pool\\x1b[2J2\\u202e\\nparity: error: " \
        "forged by a layer name)" in message, message


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """Fixture 'hostile': tiny with pool2 renamed LAYER and its sample named SAMPLE, pool2's reference
    off by 0.5 (so the verdict names LAYER), the manifest's sha256s those of these files.
    Returns the PARITY_* environment that finds it."""
    root = tmp_path_factory.mktemp("hostile")
    env = {"PARITY_FIXTURES": str(root / "fixtures"), "PARITY_REFERENCES": str(root / "refs"),
           "PARITY_CACHE": str(root / "cache")}
    fixture = root / "fixtures" / "hostile"
    fixture.mkdir(parents=True)
    (fixture / "deploy.prototxt").write_text(
        TINY.prototxt.read_text().replace('name: "pool2"', f'name: "{proto_text(LAYER)}"'))
    (fixture / "fixture.json").write_text((TINY.dir / "fixture.json").read_text())
    refs = root / "refs" / "hostile" / "chelsea"
    shutil.copytree(TINY.references / "chelsea", refs)
    manifest = json.loads((refs / "manifest.json").read_text())
    manifest["input"]["name"] = SAMPLE
    entry = next(e for e in manifest["entries"] if e["layer"] == "pool2")
    entry["layer"] = LAYER
    from parity.data.reference import load_npy, write_npy_gz

    write_npy_gz(load_npy(refs / entry["file"]) + np.float32(0.5), refs / entry["file"])
    from parity.atomic import sha256_file

    with mock.patch.dict(os.environ, env):
        built = load_fixture("hostile")
        manifest["model"]["prototxt"]["sha256"] = sha256_file(built.prototxt)
        manifest["model"]["caffemodel"]["sha256"] = sha256_file(built.weights_path(quiet=True))
    (refs / "manifest.json").write_text(json.dumps(manifest))
    return env


def test_the_terminal_report_escapes_names_line_by_line(capsys, monkeypatch, hostile):
    for key, value in hostile.items():
        monkeypatch.setenv(key, value)
    assert main(["check", "--model", "hostile"]) == 1
    out, err = capsys.readouterr()
    assert_clean(out, err, errors=0)
    lines = out.splitlines()
    assert lines[0].startswith("parity: hostile / chel\\x1b[31msea\\nparity: error: forged"), lines[0]
    (verdict,) = [line for line in lines if line.startswith("FAIL:")]
    assert verdict.startswith("FAIL: first divergence at pool\\x1b[2J2\\u202e\\nparity: error: forged"), verdict
    assert "running hostile on chel\\x1b[31msea\\nparity: error" in err  # the progress line, escaped too
    rows = [line for line in lines if " Pooling " in line]
    assert len({line.index(" Pooling ") for line in rows}) == 1, rows  # escaped before cut: columns stay aligned
    assert main(["check", "--model", "hostile", "-q"]) == 1
    quiet = capsys.readouterr().out.splitlines()
    assert len(quiet) == 1 and quiet[0].startswith("hostile/chel\\x1b[31msea\\nparity: error: forged")
    model_and_sample, verdict_line = quiet[0].split(": FAIL: ", 1)
    assert f"FAIL: {verdict_line}" == verdict  # the verdict, escaped, after the model and sample


def test_baseline_update_lists_failing_models_escaped(capsys, monkeypatch, tmp_path, hostile):
    for key, value in hostile.items():
        monkeypatch.setenv(key, value)
    assert main(["baseline", "update", "--model", "hostile", "--baseline", str(tmp_path / "b.json")]) == 1
    out, err = capsys.readouterr()
    assert_clean(out, err, errors=0)
    assert "(first divergence at pool\\x1b[2J2\\u202e\\nparity: error: forged by a layer name)" in err


def test_the_pytest_plugin_escapes_its_messages_and_summary(hostile):
    proc = subprocess.run([sys.executable, "-m", "pytest", "parity/", "-p", "no:cacheprovider", "-rA",
                           "--model=hostile"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **hostile}, timeout=600)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert_clean(proc.stdout, proc.stderr, errors=0)
    assert "hostile/chel\\x1b[31msea\\nparity: error: forged by a sample name: FAIL: first divergence at " \
           "pool\\x1b[2J2\\u202e\\nparity: error: forged by a layer name" in proc.stdout


def test_a_parity_error_in_the_plugin_is_escaped(tmp_path):
    fixture = tmp_path / "fixtures" / "forged"
    fixture.mkdir(parents=True)
    (fixture / "deploy.prototxt").write_text(
        TINY.prototxt.read_text() + f'layer {{ name: "x" type: "{proto_text(TYPE)}" bottom: "pool1" top: "x" }}\n')
    (fixture / "fixture.json").write_text((TINY.dir / "fixture.json").read_text())
    shutil.copytree(TINY.references, tmp_path / "refs" / "forged")
    env = {"PARITY_FIXTURES": str(tmp_path / "fixtures"), "PARITY_REFERENCES": str(tmp_path / "refs"),
           "PARITY_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "parity/", "-p", "no:cacheprovider", "-rA",
                           "--model=forged"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=600)
    assert proc.returncode != 0 and "Fancy\\nparity: error: none, all good" in proc.stdout + proc.stderr, \
        proc.stdout[-3000:] + proc.stderr[-3000:]
    assert_clean(proc.stdout, proc.stderr, errors=0)


# -- 12. files nested too deeply, or not UTF-8 ----------------------------------------------------------
DEEP = "[" * 100_000 + "]" * 100_000


def copied_reference(tmp_path) -> Path:
    refs = tmp_path / "refs"
    shutil.copytree(TINY.references / "chelsea", refs)
    return refs


def bad_fixture(tmp_path, monkeypatch, content: bytes) -> None:
    """A fixture 'bad' whose fixture.json holds `content`, the only fixture PARITY_FIXTURES shows."""
    (tmp_path / "fixtures" / "bad").mkdir(parents=True)
    (tmp_path / "fixtures" / "bad" / "fixture.json").write_bytes(content)
    monkeypatch.setenv("PARITY_FIXTURES", str(tmp_path / "fixtures"))


@pytest.mark.parametrize("content, expected", [
    (DEEP.encode(), "nests too deeply"),
    (b'{"description": "caf\xe9", "prototxt": "deploy.prototxt"}', "not UTF-8 text (byte 0xe9"),
    (b'{"images": ' + DEEP.encode() + b"}", "nests too deeply")], ids=["deep", "latin-1", "deep-value"])
def test_a_fixture_json_that_cannot_be_read(capsys, tmp_path, monkeypatch, content, expected):
    bad_fixture(tmp_path, monkeypatch, content)
    fails_with(capsys, ["check", "--model", "bad"], tmp_path / "fixtures" / "bad" / "fixture.json", expected)


def test_a_manifest_nested_too_deeply(capsys, tmp_path, weights):
    refs = copied_reference(tmp_path)
    (refs / "manifest.json").write_text(DEEP)
    fails_with(capsys, ["check", TINY.prototxt, weights, "--blobs", refs], refs / "manifest.json", "nests too deeply")


def test_a_baseline_nested_too_deeply(capsys, tmp_path):
    baseline = tmp_path / "baseline.json"
    baseline.write_text('{"models": ' + DEEP + "}")
    fails_with(capsys, ["baseline", "update", "--model", "tiny", "--baseline", baseline], baseline, "nests too deeply")


@pytest.mark.parametrize("content, expected, line", [
    (b"[tool.parity]\natol = 0.1\nrtol = " + DEEP.encode() + b"\n", "nests too deeply", None),
    (b"[tool.parity]\n# caf\xe9\natol = 0.1\n", "not UTF-8 text (byte 0xe9", 2)], ids=["deep", "latin-1"])
def test_a_pyproject_that_cannot_be_read(capsys, tmp_path, monkeypatch, content, expected, line):
    (tmp_path / "pyproject.toml").write_bytes(content)
    monkeypatch.chdir(tmp_path)
    where = f"{tmp_path / 'pyproject.toml'}:{line}" if line else tmp_path / "pyproject.toml"
    fails_with(capsys, ["baseline", "update", "--model", "tiny"], where, expected)


@pytest.mark.parametrize("content, expected", [(DEEP.encode(), "nests too deeply"),
                                               (b'{"conv1": "caf\xe9"}', "not UTF-8 text")],
                         ids=["deep", "latin-1"])
def test_a_mapping_that_cannot_be_read(tmp_path, content, expected):
    from parity.targets.handwritten import read_mapping

    mapping = tmp_path / "mapping.json"
    mapping.write_bytes(content)
    with pytest.raises(ParityError) as caught:
        read_mapping(mapping)
    assert str(mapping) in str(caught.value) and expected in str(caught.value)
    assert "\n" not in str(caught.value)


# -- 13. two baseline updates at once -------------------------------------------------------------------
def test_two_baseline_updates_at_once_keep_both_models(tmp_path, monkeypatch):
    """Each run reads the baseline, checks (here: a stand-in that waits until both runs got there), and
    writes: without merging under a lock, the run that wrote last dropped the other's model."""
    from parity.commands import baseline as command

    path = tmp_path / "baseline.json"
    path.write_text(json.dumps({"models": {"older": {"s": {"l": {"t": {"max_abs": 0.0, "rel_l2": 0.0}}}}}}))
    both_checked = threading.Barrier(2, timeout=60)

    def check(model, policy):
        both_checked.wait()
        layer = SimpleNamespace(layer="conv1", top="conv1", max_abs=1e-6, rel_l2=1e-7, ratio=0.5)
        return [SimpleNamespace(status="pass", model=model, image="chelsea", first_divergence=None, layers=[layer])]

    monkeypatch.setattr("parity.targets.from_fixture", lambda model: model)
    monkeypatch.setattr("parity.check.pipeline.gate_settings", lambda *args: (None, None))
    monkeypatch.setattr("parity.check.pipeline.check_target", check)
    codes = []
    runs = [threading.Thread(target=lambda m=m: codes.append(command.run(Namespace(model=[m], baseline=path))))
            for m in ("first", "second")]
    for run in runs:
        run.start()
    for run in runs:
        run.join(120)
    assert codes == [0, 0]
    assert sorted(json.loads(path.read_text())["models"]) == ["first", "older", "second"]
    assert not path.with_name("baseline.json.lock").exists()  # the lock leaves nothing behind


# -- 17. messages that named the wrong problem ----------------------------------------------------------
def test_an_empty_batch_is_named_as_such(capsys, tmp_path, weights):
    refs = copied_reference(tmp_path)
    manifest = json.loads((refs / "manifest.json").read_text())
    spec = manifest["input"]["blobs"]["data"]
    spec["shape"][0] = 0
    np.save(refs / spec["file"], np.zeros(spec["shape"], np.float32), allow_pickle=False)
    (refs / "manifest.json").write_text(json.dumps(manifest))
    fails_with(capsys, ["check", TINY.prototxt, weights, "--blobs", refs, "--allow-mismatch"],
               refs / "manifest.json", "a batch of 0 samples")


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def parity_cli(*args, cwd=REPO, env=None) -> subprocess.CompletedProcess:
    """The CLI in a process of its own: reading a FIFO waits for a writer forever, so each run has a timeout."""
    return subprocess.run([sys.executable, "-m", "parity", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("case", ["manifest", "blobs", "baseline", "mapping", "fixture"])
def test_a_fifo_is_not_a_regular_file(tmp_path, case):
    weights = TINY.weights_path()
    env = None
    if case == "manifest":
        refs = tmp_path / "refs"
        refs.mkdir()
        where = fifo(refs / "manifest.json")
        args = ["check", TINY.prototxt, weights, "--blobs", refs]
    elif case == "blobs":
        where = fifo(tmp_path / "refs")
        args = ["check", TINY.prototxt, weights, "--blobs", where]
    elif case == "baseline":
        where = fifo(tmp_path / "baseline.json")
        args = ["baseline", "update", "--model", "tiny", "--baseline", where]
    elif case == "mapping":
        (tmp_path / "model.py").write_text("def build():\n    raise RuntimeError('never built')\n")
        where = fifo(tmp_path / "mapping.json")
        args = ["check", "--model", "tiny", "--keras-model", f"{tmp_path / 'model.py'}:build", "--mapping", where]
    else:
        (tmp_path / "fixtures" / "piped").mkdir(parents=True)
        where = fifo(tmp_path / "fixtures" / "piped" / "fixture.json")
        args, env = ["check", "--model", "piped"], {"PARITY_FIXTURES": str(tmp_path / "fixtures")}
    try:
        proc = parity_cli(*args, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"parity waited forever reading the FIFO {where}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"parity: error: {where}") and "FIFO" in line and "not found" not in line, line


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_nan_and_inf_in_a_reference_warn_nothing_and_say_so(bad):
    from parity.check.compare import LayerResult, Tolerance, measure
    from parity.diagnose.report import describe

    ref = np.full((1, 2, 3, 3), bad, np.float32)
    got = np.ones((1, 3, 3, 2), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = measure(LayerResult("conv", "Convolution", "conv", 1, (1, 2, 3, 3)), ref, got, Tolerance(1e-4, 0.0))
        text = describe(result, 1e-4, 0.0)
    assert result.status == "fail"
    assert "Caffe's reference itself holds NaN or Inf" in text, text


def test_a_bare_prototxt_name_still_names_the_model(monkeypatch, weights):
    from parity.targets import from_files

    monkeypatch.chdir(TINY.prototxt.parent)
    assert from_files("deploy.prototxt", weights, TINY.references / "chelsea").name == "parity_tiny"
    assert from_files(Path("deploy.prototxt"), weights, TINY.references / "chelsea",
                             name="given").name == "given"


def test_a_model_is_named_by_its_prototxt_never_its_folder(tmp_path, weights):
    """One package's folder holds several nets ("models/age.prototxt", "models/gender.prototxt"): the
    folder's name would call both "models". The prototxt's `name:` names it, else the file's stem."""
    from parity.targets import from_files

    folder = tmp_path / "models"
    folder.mkdir()
    text = TINY.prototxt.read_text()
    (folder / "age.prototxt").write_text(text)
    (folder / "gender.prototxt").write_text(text.replace('name: "parity_tiny"', ""))
    assert from_files(folder / "age.prototxt", weights, TINY.references / "chelsea").name == "parity_tiny"
    assert from_files(folder / "gender.prototxt", weights, TINY.references / "chelsea").name == "gender"
