"""Hostile files (issue 12): a graph, an input name, a fixture name or an output path chosen to make parity
run, write or delete something it was never asked to. Each is refused in one line, and nothing is written.

Also the ways a dump could leave debris or lose data without anyone meaning harm: a SIGTERM mid-write,
Caffe aborting mid-run, two dumps of one folder at once, a symlink where the sample folder goes.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from support import caffe_python_or_skip, fails_with

from parity.caffe.fixtures import REPO, load_fixture
from parity.caffe.reading.caffemodel_writer import write_caffemodel
from parity.caffe.reading.prototxt import read_prototxt
from parity.cli import main
from parity.errors import ParityError

TINY = load_fixture("tiny")
IMAGE = TINY.image_path("chelsea")
TINY_ARGS = [TINY.prototxt, TINY.weights_path(quiet=True)]


def _tree(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def _run(python: str, argv: list) -> subprocess.CompletedProcess:
    """`python -m parity ARGV` in its own process (a Caffe abort must not take pytest with it)."""
    return subprocess.run([python, "-m", "parity", *map(str, argv)], capture_output=True, text=True, timeout=300,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


def _pycaffe() -> str:
    return caffe_python_or_skip()


# -- 1. a frozen graph is data: ops that touch files are refused before anything runs ----------------

def _graph_that_writes(path: Path, victim: Path, name: str = "innocent/save") -> Path:
    """A graph whose output has a control dependency on a WriteFile op: running it writes `victim`."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, (None, 3, 8, 8), name="input")
        write = tf.io.write_file(str(victim), "written by the graph", name=name)
        with tf.control_dependencies([write]):
            tf.nn.relu(x, name="out")
    path.write_bytes(graph.as_graph_def().SerializeToString())
    return path


def test_dump_tf_refuses_a_graph_that_writes_a_file(tmp_path, capsys):
    victim = tmp_path / "elsewhere" / "pwned.txt"
    victim.parent.mkdir()
    graph = _graph_that_writes(tmp_path / "graph.pb", victim)
    line = fails_with(capsys, ["dump-tf", graph, "--image", IMAGE, "--resize", "8,8", "--out", tmp_path / "out"],
                      graph, "WriteFile", "'innocent/save'")
    assert "side effect" in line
    assert not victim.exists() and not (tmp_path / "out").exists()


def test_refused_op_names_are_escaped_into_one_line(tmp_path, capsys):
    """A name holding a newline and a terminal escape cannot forge a second line or recolour the terminal."""
    from tensorflow.core.framework import graph_pb2

    graph_def = graph_pb2.GraphDef()
    for name, op in (("input", "Placeholder"), ("evil\nparity: all good\x1b[32m", "WriteFile"),
                     ("leak", "ReadFile"), ("print", "PrintV2")):
        node = graph_def.node.add(name=name, op=op)
        if op == "Placeholder":
            node.attr["dtype"].type = 1  # DT_FLOAT
            for size in (1, 3, 8, 8):
                node.attr["shape"].shape.dim.add(size=size)
    graph = tmp_path / "graph.pb"
    graph.write_bytes(graph_def.SerializeToString())
    line = fails_with(capsys, ["dump-tf", graph, "--image", IMAGE, "--resize", "8,8", "--out", tmp_path / "out"],
                      "WriteFile", "ReadFile", "PrintV2", r"'evil\nparity: all good\x1b[32m'", "'leak'", "'print'")
    assert "\x1b" not in line
    assert not (tmp_path / "out").exists()


def test_tf_import_and_check_only_read_a_graph_s_constants(tmp_path, capsys):
    """tf-import and check --graph take the Consts' values and never run the graph: its WriteFile stays inert."""
    fixture = load_fixture("tf_saliency")
    victim = tmp_path / "pwned.txt"
    graph = _graph_that_writes(tmp_path / "graph.pb", victim)
    main(["tf-import", str(graph), "--keras-model", fixture.keras_model, "-o", str(tmp_path / "m.keras")])
    main(["check", "--keras-model", fixture.keras_model, "--graph", str(graph), "--blobs",
          str(fixture.references), "-q"])
    capsys.readouterr()
    assert not victim.exists() and not (tmp_path / "m.keras").exists()


# -- 2. sample names and the folders a dump replaces ----------------------------------------------------

@pytest.mark.parametrize("name", ["..npy", "..png", "...npy", ".hidden.npy"])
def test_an_input_whose_name_is_no_folder_name_is_refused(tmp_path, capsys, name):
    """`..npy` has the stem '.', and OUT/. is OUT: the dump's replace swapped out the whole --out folder."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "kept.txt").write_text("a user's file")
    sample = tmp_path / name
    if name.endswith(".npy"):
        np.save(sample, np.zeros((1, 3, 17, 23), np.float32))
    else:
        shutil.copy(IMAGE, sample)
    option = "--input" if name.endswith(".npy") else "--image"
    fails_with(capsys, ["dump", *TINY_ARGS, option, sample, "--resize", "17,23", "--out", out], sample,
               "cannot name a sample folder")
    assert _tree(out) == ["kept.txt"]


def test_a_folder_parity_did_not_write_is_not_replaced(tmp_path, capsys):
    """OUT/chelsea/ without a parity manifest was deleted, with whatever the user kept in it."""
    kept = tmp_path / "out" / "chelsea" / "notes.txt"
    kept.parent.mkdir(parents=True)
    kept.write_text("a user's notes")
    fails_with(capsys, ["dump", *TINY_ARGS, "--image", IMAGE, "--resize", "17,23", "--out", tmp_path / "out"],
               kept.parent, "not a reference folder parity wrote")
    assert kept.read_text() == "a user's notes"


@pytest.mark.caffe
def test_a_real_dump_replaces_only_its_own_folders(tmp_path):
    python = _pycaffe()
    out = tmp_path / "out"
    args = ["dump", *TINY_ARGS, "--image", IMAGE, "--resize", "17,23", "--out", out]
    assert _run(python, args).returncode == 0
    assert _run(python, args).returncode == 0, "a folder parity wrote is replaced"
    assert _tree(out)[0] == "chelsea" and not [p for p in _tree(out) if p.startswith(".")]
    (out / "chelsea" / "manifest.json").unlink()
    (out / "chelsea" / "notes.txt").write_text("a user's notes")
    proc = _run(python, args)
    assert proc.returncode == 2 and "not a reference folder parity wrote" in proc.stderr, proc.stderr[-2000:]
    assert (out / "chelsea" / "notes.txt").exists()
    dots = tmp_path / "..npy"
    np.save(dots, np.zeros((1, 3, 17, 23), np.float32))
    proc = _run(python, ["dump", *TINY_ARGS, "--input", dots, "--out", out])
    assert proc.returncode == 2 and "cannot name a sample folder" in proc.stderr, proc.stderr[-2000:]
    assert (out / "chelsea" / "notes.txt").exists()


# -- 4. fixture names stay below fixtures/; reports never land on a reference ----------------------------

@pytest.fixture
def climbing_fixture(tmp_path, monkeypatch) -> Path:
    """A real fixture at tmp/x, reachable from fixtures/ (tmp/a/fixtures) as '../../x'; the cache at tmp/a/cache."""
    monkeypatch.setenv("PARITY_FIXTURES", str(tmp_path / "a" / "fixtures"))
    monkeypatch.setenv("PARITY_CACHE", str(tmp_path / "a" / "cache"))
    monkeypatch.setenv("PARITY_REFERENCES", str(tmp_path / "a" / "refs"))
    (tmp_path / "a" / "fixtures").mkdir(parents=True)
    shutil.copytree(TINY.dir, tmp_path / "x")
    return tmp_path


@pytest.mark.parametrize("argv", [["dump", "--fixture", "../../x", "--out", "OUT"],
                                  ["check", "--model", "../../x", "-q"],
                                  ["dump", "--fixture", "/abs/x", "--out", "OUT"]])
def test_a_fixture_name_that_leaves_fixtures_is_refused(climbing_fixture, capsys, argv):
    tmp = climbing_fixture
    argv = [str(tmp / "o") if a == "OUT" else a for a in argv]
    code = main(argv)
    err = capsys.readouterr().err
    assert not list(tmp.rglob("*.caffemodel")), _tree(tmp)  # the fixture's weights were built into tmp/a/
    assert not (tmp / "o").exists()
    assert code == 2 and f"fixture name {argv[2]!r}" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("option, victim", [("--json", "manifest.json"), ("--json", "001_conv1.npy.gz"),
                                            ("--html", "report.html")])
def test_a_report_is_never_written_into_the_reference(tmp_path, capsys, option, victim):
    """--json at the reference's own manifest.json overwrote it with the report."""
    refs = tmp_path / "refs"
    shutil.copytree(TINY.references / "chelsea", refs / "chelsea")
    target = refs / "chelsea" / victim
    before = target.read_bytes() if target.exists() else None
    fails_with(capsys, ["check", *TINY_ARGS, "--blobs", refs, option, target, "-q"], target, "reference folder")
    assert (target.read_bytes() if target.exists() else None) == before


# -- 6, 7. the dump's cheap checks come first; blobs Caffe cannot hold are refused -----------------------

def _net(tmp_path: Path, layers: str, input_shape=(1, 3, 1, 1)) -> list[Path]:
    """A prototxt and its (weightless) caffemodel: an Input of `input_shape`, then `layers`."""
    dims = " ".join(f"dim: {d}" for d in input_shape)
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(f'name: "big"\nlayer {{ name: "data" type: "Input" top: "data" '
                        f'input_param {{ shape {{ {dims} }} }} }}\n{layers}\n')
    return [prototxt, write_caffemodel(tmp_path / "net.caffemodel", read_prototxt(prototxt), {})]


TILE = 'layer {{ name: "tile" type: "Tile" bottom: "data" top: "tiled" tile_param {{ axis: 2 tiles: {} }} }}'


def test_dump_checks_the_net_before_decoding_an_image(tmp_path, capsys, monkeypatch):
    """A net parity refuses used to be found out only after every image was decoded and resized."""
    import parity.data.preprocess

    decoded = []
    monkeypatch.setattr(parity.data.preprocess, "preprocess_image", lambda *a: decoded.append(a))
    net = _net(tmp_path, TILE.format(1 << 30))  # a blob over Caffe's INT_MAX
    fails_with(capsys, ["dump", *net, "--image", IMAGE, "--resize", "1,1", "--out", tmp_path / "o"], "2**31 - 1")
    assert decoded == []


def test_a_blob_over_caffe_s_int_max_is_refused(tmp_path, capsys):
    """Caffe CHECK-fails (SIGABRT, a glog stack) on a blob of more than 2**31 - 1 elements."""
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 1, 1), np.float32))
    net = _net(tmp_path, TILE.format(1 << 30))
    fails_with(capsys, ["dump", *net, "--input", tmp_path / "x.npy", "--out", tmp_path / "o"],
               "'tile'", "(1, 3, 1073741824, 1)", "2**31 - 1")
    assert not (tmp_path / "o").exists()


def test_a_dump_that_cannot_fit_in_memory_is_refused(tmp_path, capsys, monkeypatch):
    import parity.caffe.dump

    monkeypatch.setattr(parity.caffe.dump, "available_memory", lambda: 1 << 20)
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 1, 1), np.float32))
    net = _net(tmp_path, TILE.format(1 << 20))
    fails_with(capsys, ["dump", *net, "--input", tmp_path / "x.npy", "--out", tmp_path / "o"],
               "memory", "'tile'", "(1, 3, 1048576, 1)")


@pytest.mark.caffe
def test_a_batch_caffe_cannot_hold_is_refused_before_caffe_runs(tmp_path):
    """The net fits at batch 1; an input of batch 2048 makes the Tile's top 2**31 elements: Caffe aborted
    in the middle of the run and left its stage folder behind."""
    np.save(tmp_path / "x.npy", np.zeros((2048, 1, 1, 1), np.float32))
    net = _net(tmp_path, TILE.format(1 << 20), (1, 1, 1, 1))
    proc = _run(_pycaffe(), ["dump", *net, "--input", tmp_path / "x.npy", "--out", tmp_path / "o"])
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Check failed" not in proc.stderr and "'tile'" in proc.stderr and "(2048, 1, 1048576, 1)" in proc.stderr
    assert not (tmp_path / "o").exists() or _tree(tmp_path / "o") == []


@pytest.mark.caffe
def test_caffe_aborting_mid_run_is_one_line_and_leaves_no_stage_folder(tmp_path):
    """What Python cannot check, Caffe may still abort on: it runs in a child process, so the abort is one
    line naming the layer it was running, and the stage exists only once Caffe has finished."""
    script = ("import os, sys\n"
              "import parity.caffe.dump\n"
              "real = parity.caffe.dump.import_caffe\n"
              "def aborting(*args, **kwargs):\n"
              "    caffe, blas = real(*args, **kwargs)\n"
              "    caffe.Net._forward = lambda *args: os.abort()\n"
              "    return caffe, blas\n"
              "parity.caffe.dump.import_caffe = aborting\n"
              "from parity.cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
    out = tmp_path / "out"
    proc = subprocess.run([_pycaffe(), "-c", script, "dump", *map(str, TINY_ARGS), "--image", str(IMAGE),
                           "--resize", "17,23", "--out", str(out)], capture_output=True, text=True, timeout=300,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "parity: error:" in proc.stderr and "Caffe stopped running layer 'data' (Input)" in proc.stderr
    assert "SIGABRT" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists() or _tree(out) == [], _tree(out)


# -- 14. SIGTERM cleans up like Ctrl-C ---------------------------------------------------------------

SLOW_WRITE = """
import sys, time
import parity.caffe.reading.caffemodel_writer as writer

def slow(out, net, blobs):
    out.write(b"half a caffemodel")
    out.flush()
    print("writing", flush=True)
    time.sleep(120)

writer._write_net = slow
sys.argv = ["parity", *sys.argv[1:]]
import runpy
runpy.run_module("parity", run_name="__main__")
"""


def test_sigterm_mid_write_leaves_no_temporary_file(tmp_path):
    """CI runners stop a job with SIGTERM: the half-written temporary file must go, as on Ctrl-C."""
    cache = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITE, "dump", "--fixture", "tiny", "--out",
                             str(tmp_path / "out")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "PARITY_CACHE": str(cache)})
    try:
        assert proc.stdout.readline().strip() == "writing", proc.stderr.read()[-2000:]
        assert [p.name for p in (cache / "weights").iterdir() if p.name.startswith(".")], "a temporary file exists"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr.read()[-2000:]
    assert [p.name for p in (cache / "weights").iterdir() if not p.name.endswith(".lock")] == []


# -- 15. replacing a sample folder: concurrent writers, a symlink in the way ------------------------------

def _write_reference(stage: Path, text: str) -> None:
    (stage / "manifest.json").write_text(json.dumps({"format": "parity-reference", "text": text}))


@pytest.mark.parametrize("dumps", [False, True], ids=["any-folder", "dump-folders-only"])
def test_concurrent_writers_of_one_folder_all_succeed(tmp_path, dumps):
    """Once in 600 concurrent dumps the replace raced (ENOTEMPTY) and left its stage behind."""
    from parity.atomic import atomic_directory

    target, errors = tmp_path / "out" / "chelsea", []
    if dumps:
        from parity.caffe.dump import written_by_parity

        options = {"replaceable": written_by_parity}
    else:
        options = {}

    def writer(n: int) -> None:
        for i in range(40):
            try:
                with atomic_directory(target, **options) as stage:
                    _write_reference(stage, f"{n}-{i}")
            except Exception as exc:  # noqa: BLE001 - collected for the assertion below
                errors.append(repr(exc))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert _tree(tmp_path / "out") == ["chelsea", "chelsea/manifest.json"]


def test_a_symlink_at_the_sample_folder_is_refused_and_what_it_points_to_kept(tmp_path):
    from parity.atomic import atomic_directory

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _write_reference(elsewhere, "not to be touched")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "chelsea").symlink_to(elsewhere, target_is_directory=True)
    for _ in range(2):
        with pytest.raises(ParityError, match="symbolic link"):
            with atomic_directory(tmp_path / "out" / "chelsea") as stage:
                _write_reference(stage, "new")
    assert _tree(tmp_path / "out") == ["chelsea"] and (tmp_path / "out" / "chelsea").is_symlink()
    assert "not to be touched" in (elsewhere / "manifest.json").read_text()
