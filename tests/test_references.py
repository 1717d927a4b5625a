"""The committed references: where they came from, what they belong to, and that Caffe reproduces them."""
from __future__ import annotations

import filecmp
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from support import caffe_python_or_skip

from parity.atomic import sha256_file
from parity.caffe.fixtures import REPO, list_fixtures, load_fixture
from parity.data.reference import find_references, load_npy

BUDGET_BYTES = 150 * 1000 * 1000  # 150 MB; decimal, the stricter reading
SDIST_SHA256 = re.search(r"SDIST_SHA256=(\w+)", (REPO / "tools" / "build_caffe.sh").read_text()).group(1)
FIXTURES = [f for f in list_fixtures() if load_fixture(f).kind == "caffe"]  # tf_saliency: tests/test_tfgraph.py


def references(name):
    return find_references(load_fixture(name).references)


def test_every_fixture_has_references():
    assert FIXTURES and all(references(name) for name in FIXTURES)


@pytest.mark.parametrize("name", FIXTURES)
def test_manifests_name_the_real_caffe_build(name):
    for ref in references(name):
        m = ref.manifest
        assert m["source"] == "caffe"
        assert m["caffe"]["distribution"] == "brocolli-caffe" and m["caffe"]["version"] == "9.0.2"
        assert m["caffe"]["sdist_sha256"] == SDIST_SHA256
        assert m["caffe"]["built_by"] == "tools/build_caffe.sh"


@pytest.mark.parametrize("name", FIXTURES)
def test_manifests_match_the_fixture_files(name):
    """The recipe rebuilds, on this machine, exactly the caffemodel Caffe was run on."""
    fixture = load_fixture(name)
    weights = sha256_file(fixture.weights_path(quiet=True))
    for ref in references(name):
        assert ref.manifest["model"]["prototxt"]["sha256"] == sha256_file(fixture.prototxt)
        assert ref.manifest["model"]["caffemodel"]["sha256"] == weights
        assert ref.manifest["input"]["sha256"] == sha256_file(fixture.image_path(ref.name))
        for entry in ref.entries:
            assert (ref.dir / entry.file).is_file()


def test_reference_tree_stays_within_budget():
    total = sum(p.stat().st_size for p in (REPO / "reference_blobs").rglob("*") if p.is_file())
    assert total < BUDGET_BYTES, f"reference_blobs/ is {total / 1e6:.1f} MB"


# Caffe layers whose CPU forward sums with OpenBLAS's sasum (normalize_layer.cpp, reduction_layer.cpp):
# that sum can round differently from run to run (seen here: 3 ulps on one run in three), so real
# Caffe is not bit-reproducible for them. Everything else must match bit for bit.
ASUM_LAYERS = {"Normalize", "Reduction"}
ASUM_ULPS = 8


def same_up_to_caffes_own_noise(ref_file: Path, fresh_file: Path, layer_type: str) -> bool:
    if filecmp.cmp(ref_file, fresh_file, shallow=False):
        return True
    if layer_type not in ASUM_LAYERS:
        return False
    a, b = load_npy(ref_file), load_npy(fresh_file)
    ulps = np.abs(a.astype(np.float64) - b) / np.spacing(np.maximum(np.abs(a), np.finfo(np.float32).tiny))
    return a.shape == b.shape and float(ulps.max()) <= ASUM_ULPS


@pytest.mark.caffe
@pytest.mark.parametrize("name", FIXTURES)
def test_dump_reproduces_committed_blobs_bit_for_bit(name, tmp_path):
    python = caffe_python_or_skip()
    core = references(name)[0].manifest["caffe"]["blas"]["core"]  # the kernel the references name, whatever
    proc = subprocess.run([python, "-m", "parity", "dump", "--fixture", name, "--blas-core", core,  # the env says
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for ref in references(name):
        fresh = tmp_path / ref.dir.name
        files = ([(e.file, e.type) for e in ref.entries]
                 + [(b["file"], "Input") for b in ref.manifest["input"]["blobs"].values()])
        differ = [f for f, kind in files if not (fresh / f).is_file()
                  or not same_up_to_caffes_own_noise(ref.dir / f, fresh / f, kind)]
        assert not differ, differ


@pytest.mark.caffe
def test_dump_of_a_raw_input_array_reproduces_the_references(tmp_path):
    """--input feeds an NCHW array as it is: Caffe's saved input gives back Caffe's saved blobs."""
    python = caffe_python_or_skip()
    fixture = load_fixture("tiny")
    (ref,) = references("tiny")
    array = tmp_path / "chelsea.npy"
    array.write_bytes((ref.dir / ref.manifest["input"]["blobs"]["data"]["file"]).read_bytes())
    proc = subprocess.run([python, "-m", "parity", "dump", str(fixture.prototxt), str(fixture.weights_path(quiet=True)),
                           "--input", str(array), "--blas-core", ref.manifest["caffe"]["blas"]["core"],
                           "--out", str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    files = [e.file for e in ref.entries]
    match, mismatch, errors = filecmp.cmpfiles(ref.dir, tmp_path / "out" / "chelsea", files, shallow=False)
    assert len(match) == len(files), (mismatch, errors)


SAVE_WITH_CAFFE = """
import sys, caffe
caffe.set_mode_cpu()
caffe.Net(sys.argv[1], sys.argv[2], caffe.TEST).save(sys.argv[3])
"""


@pytest.mark.caffe
@pytest.mark.parametrize("name", [f for f in FIXTURES if f.startswith("layers/")] + ["tiny"])
def test_a_caffemodel_caffe_saved_reads_like_the_one_it_loaded(name, tmp_path):
    """Caffe's own writer, not parity's: e.g. it saves a scalar (PReLU channel_shared, Scale num_axes 0)
    with no BlobShape at all, which Caffe reads back as 0-D."""
    from parity.caffe.reading.caffemodel import read_caffemodel

    python = caffe_python_or_skip()
    fixture = load_fixture(name)
    ours, saved = fixture.weights_path(quiet=True), tmp_path / "saved.caffemodel"
    proc = subprocess.run([python, "-c", SAVE_WITH_CAFFE, str(fixture.prototxt), str(ours), str(saved)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "GLOG_minloglevel": "2"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    want, got = read_caffemodel(ours).blobs, read_caffemodel(saved).blobs
    assert set(got) == set(want)
    for layer, arrays in want.items():
        assert [a.shape for a in got[layer]] == [a.shape for a in arrays], layer
        for a, b in zip(arrays, got[layer]):
            np.testing.assert_array_equal(a, b)


def test_a_pycaffe_that_is_not_the_pinned_build_makes_the_caffe_tests_skip_saying_why(tmp_path, monkeypatch):
    """A user's own pycaffe imports fine, but the references came from the pinned build: comparing would
    fail for the wrong reason, so the pycaffe tests skip, naming what was found and what is pinned."""
    import support

    fake = tmp_path / "site" / "python" / "caffe"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("__version__ = '1.0.0'\n")
    monkeypatch.setenv("PYTHONPATH", str(fake.parent))
    monkeypatch.setenv("PARITY_CAFFE_DIR", str(tmp_path / "none"))
    python, why = support.caffe_search.__wrapped__()
    assert python is None
    assert "has no parity-build.json: not the pinned brocolli-caffe 9.0.2" in why and "tools/build_caffe.sh" in why
    (fake.parents[1] / "parity-build.json").write_text('{"distribution": "brocolli-caffe", "version": "9.0.2"}')
    assert support.caffe_search.__wrapped__()[0] is not None  # the pinned build's record: accepted
