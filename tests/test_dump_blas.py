"""`parity dump` pins OpenBLAS's kernel and thread count, checks them, and records them in the manifest.

OpenBLAS picks its kernels by CPU when it loads, so the same Caffe build sums differently on different
CPUs. The unit tests here need no Caffe (a fake /proc/cpuinfo stands in for other CPUs); the `caffe`
ones run the real dump in the pycaffe environment.
"""
from __future__ import annotations

import filecmp
import json
import os
import subprocess
from pathlib import Path

import pytest
from support import caffe_python_or_skip, fails_with

from parity.caffe import blas
from parity.caffe.blas import AUTO, KERNELS, Pin, choose_core, cpu_flags, describe, pin, verify
from parity.caffe.fixtures import REPO, load_fixture
from parity.errors import ParityError

HASWELL_CPU = "processor\t: 0\nflags\t\t: fpu sse sse2 pni ssse3 sse4_1 sse4_2 avx avx2 fma\n"


@pytest.fixture
def haswell_cpu(tmp_path, monkeypatch) -> Path:
    """A /proc/cpuinfo of an AVX2 CPU without AVX-512, used by every check that reads the flags."""
    path = tmp_path / "cpuinfo"
    path.write_text(HASWELL_CPU)
    monkeypatch.setattr(blas, "CPUINFO", path)
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    return path


# -- choosing the kernel (no Caffe) ----------------------------------------------------------------

@pytest.mark.parametrize("option, env, expected", [
    (None, None, Pin("Haswell", "default")),
    (None, "", Pin("Haswell", "default")),  # an empty setting is no setting (OpenBLAS would force a kernel)
    (None, "sandybridge", Pin("Sandybridge", "OPENBLAS_CORETYPE")),
    ("ZEN", "Sandybridge", Pin("Zen", "--blas-core")),  # the option wins over the environment
    ("auto", "Haswell", Pin(AUTO, "--blas-core")),
])
def test_the_option_wins_then_the_environment_then_haswell(haswell_cpu, option, env, expected):
    assert choose_core(option, {} if env is None else {"OPENBLAS_CORETYPE": env}) == expected


def test_cpu_flags_are_read_from_the_first_processor(haswell_cpu):
    flags = cpu_flags()
    assert {"avx2", "fma", "pni"} <= flags and "avx512f" not in flags


def test_the_kernel_table_uses_cpuinfo_spellings():
    """The flags are /proc/cpuinfo's words: the default kernel needs only avx2 and fma, SkylakeX AVX-512."""
    assert KERNELS["Haswell"] == ("avx2", "fma") and "avx512f" in KERNELS["SkylakeX"]
    assert all(flag == flag.lower() and " " not in flag for flags in KERNELS.values() for flag in flags)


@pytest.mark.parametrize("argv, expected", [
    (["--blas-core", "SkylakeX"], ("SkylakeX", "avx512f", "it runs", "Haswell")),
    (["--blas-core", "Pentium"], ("'Pentium'", "is not a BLAS kernel", "Sandybridge", "auto")),
], ids=["kernel this CPU lacks", "unknown kernel"])
def test_dump_refuses_a_kernel_before_anything_runs(capsys, tmp_path, haswell_cpu, argv, expected):
    """SkylakeX on a CPU without AVX-512 would die of SIGILL inside Caffe; a typo would be ignored by
    OpenBLAS, which then picks by CPU. Both are one line, exit 2, before the fixture is even read."""
    out = tmp_path / "out"
    line = fails_with(capsys, ["dump", "--fixture", "tiny", *argv, "--out", out], *expected)
    assert (str(haswell_cpu) in line) == (argv[1] == "SkylakeX")  # the flags' file, where they decided
    assert not out.exists()


def test_dump_refuses_a_bad_kernel_in_the_environment_and_names_it(capsys, tmp_path, haswell_cpu, monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Skylake")
    fails_with(capsys, ["dump", "--fixture", "tiny", "--out", tmp_path / "out"], "OPENBLAS_CORETYPE='Skylake'",
               "environment")


def test_a_cpu_without_x86_flags_is_told_to_use_auto(tmp_path, monkeypatch):
    """An ARM machine lists 'Features', not 'flags': no x86 kernel can be checked there, 'auto' can."""
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\nFeatures\t: fp asimd\n")
    monkeypatch.setattr(blas, "CPUINFO", path)
    with pytest.raises(ParityError, match="--blas-core auto") as info:
        choose_core(None, {})
    assert info.value.path == str(path)
    assert choose_core("auto", {}) == Pin(AUTO, "--blas-core")


def test_pin_sets_the_kernel_and_one_thread():
    env = {"OPENBLAS_NUM_THREADS": "8", "OPENBLAS_CORETYPE": "Zen"}
    pin(Pin("Haswell", "default"), env)
    assert env == {"OPENBLAS_NUM_THREADS": "1", "OPENBLAS_CORETYPE": "Haswell"}
    pin(Pin(AUTO, "--blas-core"), env)
    assert env == {"OPENBLAS_NUM_THREADS": "1"}


# -- checking what OpenBLAS runs (no Caffe: records as describe() makes them) -------------------------

def openblas(core="Haswell", threads=1) -> dict:
    return {"library": "OpenBLAS", "file": "/lib/libopenblas.so.0", "version": "0.3.21", "config": "",
            "core": core, "threads": threads}


@pytest.mark.parametrize("record, expected", [
    (openblas("SkylakeX"), ("runs the SkylakeX kernels, not the Haswell ones", "/lib/libopenblas.so.0")),
    (openblas(threads=2), ("runs 2 threads, not 1",)),
])
def test_a_pin_that_did_not_take_is_refused(record, expected):
    with pytest.raises(ParityError) as info:
        verify(record, Pin("Haswell", "default"))
    for text in expected:
        assert text in str(info.value)


def test_kernel_names_compare_in_any_case_and_auto_takes_any():
    verify(openblas("haswell"), Pin("Haswell", "default"))
    verify(openblas("Cooperlake"), Pin(AUTO, "--blas-core"))


def test_another_blas_is_recorded_as_such_and_only_an_explicit_kernel_is_refused(tmp_path):
    other = describe(None)
    assert other["library"] == "unknown" and "not found" in other["note"]
    notes = []
    verify(other, Pin("Haswell", "default"), log=notes.append)
    assert len(notes) == 1 and "not pinned" in notes[0]
    with pytest.raises(ParityError, match="not OpenBLAS"):
        verify(other, Pin("Sandybridge", "--blas-core"))


# -- the real dump (pycaffe) -------------------------------------------------------------------------

def dump_tiny(out: Path, *options: str, coretype: str | None = None) -> dict:
    """`parity dump --fixture tiny` in the pycaffe environment, with OPENBLAS_CORETYPE as given (unset if
    None) and 4 threads asked for, which the dump must override; the manifest's caffe.blas record."""
    python = caffe_python_or_skip()
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    env.update({"OPENBLAS_NUM_THREADS": "4", "PYTHONPATH": str(REPO),
                **({"OPENBLAS_CORETYPE": coretype} if coretype else {})})
    proc = subprocess.run([python, "-m", "parity", "dump", "--fixture", "tiny", *options, "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "chelsea" / "manifest.json").read_text())["caffe"]["blas"]


def needs(core: str) -> None:
    flags = cpu_flags() or set()
    if not all(flag in flags for flag in KERNELS[core]):
        pytest.skip(f"this CPU cannot run OpenBLAS's {core} kernels")


@pytest.mark.caffe
def test_dump_pins_haswell_on_one_thread_and_reproduces_the_committed_tiny_references(tmp_path):
    needs("Haswell")
    record = dump_tiny(tmp_path)
    assert record["library"] == "OpenBLAS" and record["core"] == "Haswell" and record["threads"] == 1
    assert record["OPENBLAS_CORETYPE"] == "Haswell" and record["version"] in record["config"]
    committed = load_fixture("tiny").references / "chelsea"
    files = [e["file"] for e in json.loads((committed / "manifest.json").read_text())["entries"]]
    match, mismatch, errors = filecmp.cmpfiles(committed, tmp_path / "chelsea", files, shallow=False)
    assert len(match) == len(files), (mismatch, errors)
    committed_blas = json.loads((committed / "manifest.json").read_text())["caffe"]["blas"]
    assert committed_blas["core"] == "Haswell" and committed_blas["threads"] == 1


@pytest.mark.caffe
@pytest.mark.parametrize("options, coretype", [(["--blas-core", "sandybridge"], "Haswell"), ([], "Sandybridge")],
                         ids=["option over environment", "environment"])
def test_dump_runs_and_records_the_kernel_asked_for(tmp_path, options, coretype):
    """Sandybridge (AVX, no FMA) sums differently from Haswell: the pin took effect, not just the record."""
    needs("Sandybridge")
    record = dump_tiny(tmp_path, *options, coretype=coretype)
    assert record["core"] == "Sandybridge" and record["OPENBLAS_CORETYPE"] == "Sandybridge" and record["threads"] == 1
    committed = load_fixture("tiny").references / "chelsea"
    files = [e["file"] for e in json.loads((committed / "manifest.json").read_text())["entries"]]
    _, mismatch, _ = filecmp.cmpfiles(committed, tmp_path / "chelsea", files, shallow=False)
    assert mismatch, "Sandybridge's sums came out identical to Haswell's"


CHANGE_KERNEL_AFTER_LOAD = """
from parity.caffe.blas import choose_core
from parity.caffe.dump import import_caffe
from parity.errors import ParityError
import_caffe(choose_core("Sandybridge"))
try:
    import_caffe(choose_core("Haswell"))
except ParityError as exc:
    print(exc)
"""


@pytest.mark.caffe
def test_a_kernel_asked_for_after_openblas_loaded_is_refused(tmp_path):
    """OpenBLAS reads OPENBLAS_CORETYPE once: a later request cannot take effect and must not be recorded."""
    needs("Haswell")
    python = caffe_python_or_skip()
    proc = subprocess.run([python, "-c", CHANGE_KERNEL_AFTER_LOAD], capture_output=True, text=True, timeout=300,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "GLOG_minloglevel": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "runs the Sandybridge kernels, not the Haswell ones" in proc.stdout, proc.stdout
