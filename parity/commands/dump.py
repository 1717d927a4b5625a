"""`parity dump`: real Caffe's blobs for one or more inputs (run under tools/build_caffe.sh's pycaffe)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..data.preprocess import Preprocessing
from ..errors import ParityError, require_file, require_writable
from . import add_preprocessing, preprocessing

HELP = """Run real Caffe on images (or raw .npy inputs) and save every layer's output as reference blobs.
Run it with the pycaffe environment's parity: .cache/caffe/venv/bin/parity dump ...
Each input is written to OUT/<input name>/ (manifest.json + one float32 NCHW .npy per entry).
OpenBLAS runs one kernel on one thread (--blas-core; Haswell by default), recorded in the manifest."""


def add(sub) -> None:
    p = sub.add_parser("dump", help="save real Caffe's per-layer outputs as reference blobs", description=HELP)
    p.add_argument("prototxt", nargs="?", type=Path)
    p.add_argument("caffemodel", nargs="?", type=Path)
    p.add_argument("--fixture", help="take prototxt, weights, preprocessing and images from this fixture")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--image", action="append", type=Path, default=[], help="an image to preprocess (repeatable)")
    src.add_argument("--input", action="append", type=Path, default=[], dest="npy",
                     help="an NCHW float .npy fed to the input blob as it is (repeatable)")
    p.add_argument("--until", metavar="LAYER", help="run the net only up to this layer (inclusive), e.g. before a "
                   "layer Caffe cannot run on your input; the manifest records it")
    p.add_argument("--out", type=Path, help="output folder (default for a fixture: reference_blobs/<fixture>)")
    p.add_argument("--granularity", choices=("layer", "blob"),
                   help="layer: every layer's tops right after it ran (default); blob: final value of each blob")
    p.add_argument("--blas-core", metavar="NAME",
                   help="OpenBLAS kernel to run Caffe with, on one thread: Prescott, Core2, Penryn, Nehalem, "
                        "Sandybridge, Haswell, Zen, SkylakeX, Cooperlake, or auto (OpenBLAS picks by CPU). "
                        "Default: $OPENBLAS_CORETYPE if set, else Haswell (the committed references' kernel)")
    add_preprocessing(p, "net")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..caffe.blas import choose_core
    from ..caffe.dump import check_sample_names, dump, preflight

    core = choose_core(args.blas_core)  # before anything is read or built: a CPU that cannot run it stops here
    fixture = _fixture(args)
    prototxt = require_file(args.prototxt or fixture.prototxt, "prototxt")
    caffemodel = require_file(args.caffemodel, "caffemodel") if args.caffemodel else fixture.weights_path()
    prep = preprocessing(args, fixture.preprocessing if fixture else Preprocessing())
    images = args.image or ([] if args.npy or fixture is None else [fixture.image_path(i) for i in fixture.images])
    if not images and not args.npy:
        raise ParityError("nothing to run: give --image IMG or --input FILE.npy")
    out = args.out or (fixture.references if fixture else None)
    if out is None:
        raise ParityError("give --out DIR")
    require_writable(out, "output folder", folder=True)
    granularity = args.granularity or (fixture.granularity if fixture else "layer")
    check_sample_names(images + args.npy, out)  # the cheap checks first: names, the net, the weights
    net = preflight(prototxt, caffemodel, args.until)
    samples = _samples(net, images, args.npy, prep)
    dump(prototxt, caffemodel, samples, out, granularity, log=lambda m: print(m, file=sys.stderr, flush=True),
         blas_core=core, net=net, until=args.until)
    return 0


def _fixture(args):
    """The fixture named by --fixture, or None; the net's files come from it or from the command line."""
    from ..caffe.fixtures import load_fixture

    if args.fixture and (args.prototxt or args.caffemodel):
        raise ParityError("give PROTOTXT and CAFFEMODEL, or --fixture NAME, not both")
    fixture = load_fixture(args.fixture) if args.fixture else None
    if fixture is None and (args.prototxt is None or args.caffemodel is None):
        raise ParityError("give PROTOTXT and CAFFEMODEL, or --fixture NAME")
    return fixture


def _samples(net, images: list[Path], npys: list[Path], prep: Preprocessing) -> list:
    """One Sample per image or array, each checked against the net's input before Caffe could abort on it.
    Called once the net passed its preflight: decoding and resizing images is the costly part."""
    from ..atomic import sha256_file
    from ..caffe.dump import Sample, check_fits, input_shapes
    from ..data.preprocess import preprocess_image
    from ..data.reference import load_npy

    blob, shape = next(iter(input_shapes(net).items()))
    if images and len(shape) != 4:
        raise ParityError(f"the net's input {blob!r} is {tuple(shape)}, images make (1, C, H, W) blobs: "
                          "use --input FILE.npy", net.path)
    if images:
        prep.check_input(shape, net.path)
    samples = []
    for image in images:
        array = preprocess_image(image, prep, shape)
        samples.append(Sample(image.stem, {blob: array}, {"kind": "image", "file": image.name,
                                                          "sha256": sha256_file(image),
                                                          "preprocessing": prep.to_dict()}))
    for npy in npys:
        array = load_npy(require_file(npy, "input array")).astype(np.float32)
        check_fits(array, blob, shape, npy)
        samples.append(Sample(npy.stem, {blob: array}, {"kind": "npy", "file": npy.name, "sha256": sha256_file(npy)}))
    return samples
