"""`parity dump`: real Caffe's blobs for one or more inputs (run under tools/build_caffe.sh's pycaffe)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..errors import ParityError, require_file
from . import add_preprocessing, preprocessing

HELP = """Run real Caffe on images (or raw .npy inputs) and save every layer's output as reference blobs.
Run it with the pycaffe environment's parity: .cache/caffe/venv/bin/parity dump ...
Each input is written to OUT/<input name>/ (manifest.json + one float32 NCHW .npy per entry)."""


def add(sub) -> None:
    p = sub.add_parser("dump", help="save real Caffe's per-layer outputs as reference blobs", description=HELP)
    p.add_argument("prototxt", nargs="?", type=Path)
    p.add_argument("caffemodel", nargs="?", type=Path)
    p.add_argument("--fixture", help="take prototxt, weights, preprocessing and images from this fixture")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--image", action="append", type=Path, default=[], help="an image to preprocess (repeatable)")
    src.add_argument("--input", action="append", type=Path, default=[], dest="npy",
                     help="an NCHW float .npy fed to the input blob as it is (repeatable)")
    p.add_argument("--out", type=Path, help="output folder (default for a fixture: reference_blobs/<fixture>)")
    p.add_argument("--granularity", choices=("layer", "blob"),
                   help="layer: every layer's tops right after it ran (default); blob: final value of each blob")
    add_preprocessing(p, "net")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..dump import Sample, dump
    from ..fixtures import load_fixture
    from ..graph import Net
    from ..atomic import sha256_file
    from ..preprocess import Preprocessing, preprocess_image
    from ..reference import load_npy

    fixture = load_fixture(args.fixture) if args.fixture else None
    if fixture is None and (args.prototxt is None or args.caffemodel is None):
        raise ParityError("give PROTOTXT and CAFFEMODEL, or --fixture NAME")
    prototxt = require_file(args.prototxt or fixture.prototxt, "prototxt")
    caffemodel = require_file(args.caffemodel, "caffemodel") if args.caffemodel else fixture.weights_path()
    prep = fixture.preprocessing if fixture else Preprocessing()
    prep = preprocessing(args, prep)
    images = args.image or ([] if args.npy or fixture is None else [fixture.image_path(i) for i in fixture.images])
    if not images and not args.npy:
        raise ParityError("nothing to run: give --image IMG or --input FILE.npy")
    out = args.out or (fixture.references if fixture else None)
    if out is None:
        raise ParityError("give --out DIR")
    granularity = args.granularity or (fixture.granularity if fixture else "layer")

    net = Net.from_prototxt(prototxt)
    inputs = [layer for layer in net.layers if layer.type == "Input"]
    if not inputs:
        raise ParityError("the net has no Input layer or input fields", prototxt)
    blob = inputs[0].tops[0]
    shape = tuple(int(d) for d in inputs[0].param.input_param.shape[0].dim)
    samples = []
    for image in images:
        array = preprocess_image(image, prep, shape)
        samples.append(Sample(image.stem, {blob: array}, {"kind": "image", "file": image.name,
                                                          "sha256": sha256_file(image), "preprocessing": prep.to_dict()}))
    for npy in args.npy:
        array = load_npy(require_file(npy, "input array")).astype(np.float32)
        if array.ndim != len(shape) or array.shape[1:2] != shape[1:2]:
            # Caffe aborts the whole process on a rank or channel mismatch: refuse before it runs.
            raise ParityError(f"array of shape {array.shape} does not fit the net's input {blob!r} {shape}", npy)
        samples.append(Sample(npy.stem, {blob: array}, {"kind": "npy", "file": npy.name, "sha256": sha256_file(npy)}))
    dump(prototxt, caffemodel, samples, out, granularity, log=lambda m: print(m, file=sys.stderr, flush=True))
    return 0
