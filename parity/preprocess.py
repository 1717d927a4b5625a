"""Image -> Caffe input blob (NCHW float32), the way Caffe Model Zoo nets expect it.

The order follows caffe.io.Transformer: resize, HWC -> CHW, channel order, raw scale, mean
subtraction, input scale. `parity dump` runs this once and saves the resulting blob next to the
reference, so the Keras side is fed bit-identical input and never re-implements it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import ParityError, require_file


@dataclass(frozen=True)
class Preprocessing:
    channel_order: str = "BGR"  # order of the net's input channels (Caffe Zoo nets: BGR)
    raw_scale: float = 255.0  # pixels are scaled to [0, raw_scale] before the mean is subtracted
    mean: tuple[float, ...] = ()  # per channel, in the net's channel order; empty = none
    scale: float = 1.0  # multiplied after mean subtraction (MobileNet: 0.017)
    resize: tuple[int, int] | None = None  # (height, width) to resize to; None = image must fit already

    def __post_init__(self):
        if self.channel_order not in ("BGR", "RGB"):
            raise ParityError(f"channel order must be BGR or RGB, got {self.channel_order!r}")

    @classmethod
    def from_dict(cls, d: dict, where: str | Path | None = None) -> "Preprocessing":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ParityError(f"unknown preprocessing keys: {', '.join(sorted(unknown))}", where)
        values = dict(d)
        if "mean" in values:
            values["mean"] = tuple(float(m) for m in values["mean"])
        if values.get("resize") is not None:
            values["resize"] = tuple(int(v) for v in values["resize"])
        return cls(**values)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"] = list(self.mean)
        d["resize"] = list(self.resize) if self.resize else None
        return d


def load_image(path: str | Path) -> np.ndarray:
    """An image file as an RGB uint8 (H, W, 3) array; unreadable files are a ParityError."""
    from PIL import Image, UnidentifiedImageError

    p = require_file(path, "image")
    try:
        with Image.open(p) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise ParityError(f"cannot read image ({exc})", p) from None


def preprocess_image(path: str | Path, prep: Preprocessing, input_shape: Sequence[int]) -> np.ndarray:
    """Load and preprocess one image into a (1, C, H, W) float32 blob for an input of `input_shape`."""
    _, channels, height, width = input_shape
    rgb = load_image(path)
    if prep.resize and rgb.shape[:2] != tuple(prep.resize):
        from PIL import Image

        rgb = np.asarray(Image.fromarray(rgb).resize((prep.resize[1], prep.resize[0]), Image.BILINEAR))
    if rgb.shape[:2] != (height, width):
        raise ParityError(f"image is {rgb.shape[0]}x{rgb.shape[1]}, the net's input is {height}x{width}; "
                          f"pass --resize {height},{width}", path)
    if channels != 3:
        raise ParityError(f"the net's input has {channels} channels; images give 3 (use --input FILE.npy)", path)
    chw = rgb.transpose(2, 0, 1).astype(np.float32)
    if prep.channel_order == "BGR":
        chw = chw[::-1]
    chw = chw * np.float32(prep.raw_scale / 255.0)
    if prep.mean:
        if len(prep.mean) != channels:
            raise ParityError(f"mean has {len(prep.mean)} values for {channels} channels", path)
        chw = chw - np.asarray(prep.mean, np.float32)[:, None, None]
    chw = chw * np.float32(prep.scale)
    return np.ascontiguousarray(chw[None], dtype=np.float32)
