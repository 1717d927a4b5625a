"""`parity convert`: deploy.prototxt + caffemodel -> .keras model and/or Keras-layout weights."""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..errors import ParityError, require_file, require_writable
from ..targets.handwritten import keras_arrays

HELP = """Convert a Caffe net to a Keras 3 model (channels-last, layers named like Caffe's).
The .keras file loads with keras.saving.load_model(path) after `import parity`."""


def add(sub) -> None:
    p = sub.add_parser("convert", help="convert a Caffe net to a .keras model", description=HELP)
    p.add_argument("prototxt", type=Path)
    p.add_argument("caffemodel", type=Path)
    p.add_argument("-o", "--output", type=Path, help="write the model here (.keras)")
    p.add_argument("--weights-h5", type=Path, help="write weights for model.load_weights (.weights.h5)")
    p.add_argument("--weights-npz", type=Path, help="write Keras-layout arrays, keys '<layer>/<param>' (.npz)")
    p.add_argument("--until", metavar="LAYER", help="convert only up to this layer (inclusive)")
    p.set_defaults(run=run)


def run(args) -> int:
    if not (args.output or args.weights_h5 or args.weights_npz):
        raise ParityError("nothing to write: give -o MODEL.keras, --weights-h5 PATH or --weights-npz PATH")
    _check_suffix(args.output, ".keras")
    _check_suffix(args.weights_h5, ".weights.h5")
    _check_suffix(args.weights_npz, ".npz")
    model = _converted(args).model
    write_together({args.output: model.save, args.weights_h5: model.save_weights,
                    args.weights_npz: lambda p: save_npz(keras_arrays(model), p)})
    return 0


def _converted(args):
    """Read and convert, saying so on stderr: VGG-19's conversion takes seconds."""
    from ..caffe.graph import Net
    from ..caffe.reading.caffemodel import read_caffemodel
    from ..convert import convert_net

    net = Net.from_prototxt(require_file(args.prototxt, "prototxt"))
    if args.until:
        net = net.until(args.until)
    weights = read_caffemodel(args.caffemodel)
    print(f"parity: converting {len(net.layers)} layers of {args.prototxt.name} ...", file=sys.stderr, flush=True)
    return convert_net(net, weights)


def write_together(writers: dict) -> None:
    """Write every file (path -> write(path); None paths skipped) or none: each goes to a temporary
    sibling, and only when all are written are they renamed into place."""
    writers = {path: write for path, write in writers.items() if path}
    with contextlib.ExitStack() as stack:
        for path, write in writers.items():
            _write_staged(stack, path, write)
    for path in writers:
        print(f"parity: wrote {path}", file=sys.stderr)


def save_npz(arrays: dict[str, np.ndarray], path) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def _check_suffix(path: Path | None, suffix: str) -> None:
    """Also checks, before any work, that the file can be written at all."""
    if path is not None and not path.name.endswith(suffix):
        raise ParityError(f"file name must end in {suffix}", path)
    if path is not None:
        require_writable(path)


def _write_staged(stack: contextlib.ExitStack, path: Path, write) -> None:
    """Keras picks the format from the suffix, so the temporary file keeps it."""
    suffix = ".weights.h5" if path.name.endswith(".weights.h5") else path.suffix
    tmp = stack.enter_context(atomic_path(path, suffix))
    tmp.unlink()  # Keras refuses to overwrite some files; let it create this one
    write(str(tmp))


def save_h5(arrays: dict[str, np.ndarray], path) -> None:
    """The same arrays as an HDF5 file, one group per layer, one dataset per variable."""
    import h5py

    with h5py.File(path, "w") as fh:
        for key, value in arrays.items():
            fh.create_dataset(key, data=value)


def add_export(sub) -> None:
    p = sub.add_parser("export-weights", help="Caffe weights in Keras layout by layer name, for hand-written models",
                       description="Write Caffe's weights in Keras layout under '<layer>/<variable>' keys: kernels "
                                   "transposed, InnerProduct rows reordered, BatchNorm's scale_factor folded.")
    p.add_argument("prototxt", type=Path)
    p.add_argument("caffemodel", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True, help="OUT.h5 or OUT.npz")
    p.add_argument("--until", metavar="LAYER", help="only the layers up to this one")
    p.set_defaults(run=run_export)


def run_export(args) -> int:
    if args.output.suffix not in (".h5", ".npz"):
        raise ParityError("file name must end in .h5 or .npz", args.output)
    require_writable(args.output)
    arrays = keras_arrays(_converted(args).model)
    write = (lambda p: save_h5(arrays, p)) if args.output.suffix == ".h5" else (lambda p: save_npz(arrays, p))
    write_together({args.output: write})
    print(f"parity: {len(arrays)} arrays in {args.output}", file=sys.stderr)
    return 0
