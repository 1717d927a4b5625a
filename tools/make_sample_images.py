"""Make fixtures/images/*.png: scikit-image's sample photos (CC0 or public domain), centre-cropped square, 224x224.

Run once with a Python that has scikit-image and qrcode (the pycaffe venv has scikit-image;
`pip install qrcode` there):
    .cache/caffe/venv/bin/python tools/make_sample_images.py
The PNGs are committed; this script records how they were made.
"""
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

OUT = Path(__file__).resolve().parents[1] / "fixtures" / "images"
SIZE = 224


def centre_square(rgb: np.ndarray) -> Image.Image:
    h, w = rgb.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return Image.fromarray(rgb[top:top + side, left:left + side])


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name in ("chelsea", "coffee", "astronaut"):
        image = centre_square(getattr(data, name)()).resize((SIZE, SIZE), Image.LANCZOS)
        image.save(OUT / f"{name}.png", optimize=True)
        print(f"wrote {OUT / name}.png")
    qr_on_coffee().save(OUT / "qrcode.png", optimize=True)
    print(f"wrote {OUT / 'qrcode'}.png")


def qr_on_coffee() -> Image.Image:
    """A QR code (made by the `qrcode` package, tilted 12 degrees) on the coffee photo: what the QR detector
    fixture looks for, in a scene rather than on a blank page."""
    import qrcode

    code = qrcode.make("https://pypi.org/project/brocolli-caffe/9.0.2/", border=2).convert("RGB")
    code = code.resize((96, 96), Image.NEAREST).rotate(12, expand=True, fillcolor=(255, 255, 255))
    scene = centre_square(data.coffee()).resize((SIZE, SIZE), Image.LANCZOS)
    scene.paste(code, (100, 24))
    return scene


if __name__ == "__main__":
    main()
