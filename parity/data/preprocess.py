"""Image -> Caffe input blob (NCHW float32), the way Caffe Model Zoo nets expect it.

The order follows caffe.io.Transformer: resize, HWC -> CHW, channel order, raw scale, mean
subtraction, input scale. `parity dump` runs this once and saves the resulting blob next to the
reference, so the Keras side is fed bit-identical input and never re-implements it.
"""
from __future__ import annotations

import contextlib
import math
import struct
import warnings
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ParityError, is_number, require_file

CHANNEL_ORDERS = ("BGR", "RGB", "GRAY")


@dataclass(frozen=True)
class Preprocessing:
    channel_order: str = "BGR"  # the net's input channels: BGR (Caffe Zoo nets), RGB, or GRAY (one luma channel)
    raw_scale: float = 255.0  # pixels are scaled to [0, raw_scale] before the mean is subtracted
    mean: tuple[float, ...] = ()  # per channel, in the net's channel order; empty = none
    scale: float = 1.0  # multiplied after mean subtraction (MobileNet: 0.017)
    resize: tuple[int, int] | None = None  # (height, width) to resize to; None = image must fit already

    def __post_init__(self):
        """Refuse values that would run but feed the net garbage (NaN, a negative raw scale) or crash PIL."""
        if self.channel_order not in CHANNEL_ORDERS:
            raise ParityError(f"channel_order must be BGR, RGB or GRAY, got {self.channel_order!r}")
        if not (math.isfinite(self.raw_scale) and self.raw_scale > 0):
            raise ParityError(f"raw_scale must be a finite number above 0, got {self.raw_scale!r}")
        if not math.isfinite(self.scale):
            raise ParityError(f"scale must be a finite number, got {self.scale!r}")
        if not all(math.isfinite(m) for m in self.mean):
            raise ParityError(f"mean must hold finite numbers, got {list(self.mean)!r}")
        if self.resize is not None and (len(self.resize) != 2 or min(self.resize) < 1):
            raise ParityError(f"resize must be [height, width], two positive integers, got {list(self.resize)!r}")

    @classmethod
    def from_dict(cls, d: dict, where: str | Path | None = None) -> "Preprocessing":
        """From JSON (a fixture's "preprocessing"): every error names `where` and the key."""
        if not isinstance(d, dict):
            raise ParityError(f"preprocessing must be an object {{...}}, got {d!r}", where)
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ParityError(f"unknown preprocessing keys: {', '.join(sorted(unknown))}", where)
        try:
            return cls(**{key: _from_json(key, value) for key, value in d.items()})
        except ParityError as exc:
            raise ParityError(f"preprocessing.{exc.message}", where) from None

    def check_input(self, shape: Sequence[int], where: str | Path | None = None) -> None:
        """Whether images can feed a net input of `shape` (N, C, H, W): the channels this channel order makes,
        and a resize to anything but the net's size, which can only fail, so it is refused before any image
        is decoded (a huge --resize would otherwise allocate the image first). `where`: the file that
        declares the input (prototxt or graph), which is what a mismatch is said of."""
        _, channels, height, width = shape
        wanted = 1 if self.channel_order == "GRAY" else 3
        if channels != wanted:
            raise ParityError(f"the net's input has {channels} channels; channel_order {self.channel_order} gives "
                              f"{wanted} (use --input FILE.npy)", where)
        if self.resize is not None and tuple(self.resize) != (height, width):
            raise ParityError(f"resize {self.resize[0]},{self.resize[1]} does not match the net's input "
                              f"{height}x{width}; pass --resize {height},{width}", where)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"] = list(self.mean)
        d["resize"] = list(self.resize) if self.resize else None
        return d



def _from_json(key: str, value):
    """One preprocessing value from JSON, type-checked (a string mean is not a list of characters);
    the values themselves are checked by Preprocessing.__post_init__."""
    if key in ("raw_scale", "scale") and not is_number(value):
        raise ParityError(f"{key} must be a number, got {value!r}")
    if key == "mean" and not (isinstance(value, list) and all(is_number(m) for m in value)):
        raise ParityError(f"mean must be a list of numbers, got {value!r}")
    if key == "resize" and value is not None and not (
            isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise ParityError(f"resize must be [height, width], two positive integers, got {value!r}")
    if key in ("mean", "resize") and value is not None:
        return tuple(float(v) for v in value) if key == "mean" else tuple(value)
    return float(value) if key in ("raw_scale", "scale") else value


# PIL modes that convert("RGB") turns into the image's true 8-bit colours. 16-bit ("I;16"), 32-bit ("I")
# and float ("F") images would be clipped to 255 instead, giving a reference of a different picture.
EIGHT_BIT_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"})
# The most pixels parity decodes: 64 Mi (a 48-megapixel photo fits), at most 256 MB in these modes.
# Below PIL's own bomb threshold (89 M pixels), whose warning would be a second stderr line.
MAX_IMAGE_PIXELS = 1 << 26


def load_image(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """An image file as an RGB uint8 (H, W, 3) array; unreadable files, images that are not 8 bits per
    channel, larger than MAX_IMAGE_PIXELS or (given `size`, (height, width)) of another size are a
    ParityError, each found from the header before a pixel is decoded."""
    p = require_file(path, "image")
    with _opened(p) as im:
        _check_header(im, p)
        if size is not None and (im.height, im.width) != tuple(size):
            raise ParityError(f"image is {im.height}x{im.width}, the net's input is {size[0]}x{size[1]}; "
                              f"pass --resize {size[0]},{size[1]}", p)
        return np.asarray(im.convert("RGB"))


@contextlib.contextmanager
def _opened(p: Path):
    """The image opened lazily (PIL reads the header only), with every failure to open or decode it,
    PIL's decompression-bomb error and warning included, as one ParityError naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with open(p, "rb") as fh, Image.open(fh) as im:  # our handle: closed even when PIL refuses
                yield im
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ParityError(f"image has more pixels than parity decodes ({MAX_IMAGE_PIXELS:,}): {exc}", p) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error,
            MemoryError) as exc:
        raise ParityError(f"cannot read image ({str(exc) or type(exc).__name__})", p) from None


def _check_header(im, p: Path) -> None:
    """Mode and size, known before decoding: refuse what would be clipped or too large to decode."""
    if im.mode not in EIGHT_BIT_MODES:
        raise ParityError(f"image mode {im.mode} is not 8 bits per channel: its values would be clipped "
                          "to 0..255; convert it to 8-bit RGB or grayscale first", p)
    if im.width * im.height > MAX_IMAGE_PIXELS:
        raise ParityError(f"image is {im.height}x{im.width}, {im.width * im.height:,} pixels: more pixels than "
                          f"parity decodes ({MAX_IMAGE_PIXELS:,}); shrink it first", p)


def preprocess_image(path: str | Path, prep: Preprocessing, input_shape: Sequence[int]) -> np.ndarray:
    """Load and preprocess one image into a (1, C, H, W) float32 blob for an input of `input_shape`."""
    _, channels, height, width = input_shape
    prep.check_input(input_shape, path)
    rgb = load_image(path, None if prep.resize else (height, width))
    if prep.resize and rgb.shape[:2] != tuple(prep.resize):
        from PIL import Image

        rgb = np.asarray(Image.fromarray(rgb).resize((prep.resize[1], prep.resize[0]), Image.BILINEAR))
    chw = rgb.transpose(2, 0, 1).astype(np.float32)
    if prep.channel_order == "GRAY":  # ITU-R 601 luma, as OpenCV's BGR2GRAY, kept unrounded
        chw = (chw[0] * np.float32(0.299) + chw[1] * np.float32(0.587) + chw[2] * np.float32(0.114))[None]
    elif prep.channel_order == "BGR":
        chw = chw[::-1]
    chw = chw * np.float32(prep.raw_scale / 255.0)
    if prep.mean:
        if len(prep.mean) != channels:
            raise ParityError(f"mean has {len(prep.mean)} values for {channels} channels", path)
        chw = chw - np.asarray(prep.mean, np.float32)[:, None, None]
    chw = chw * np.float32(prep.scale)
    return np.ascontiguousarray(chw[None], dtype=np.float32)
