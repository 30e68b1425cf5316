"""A population of digits the `cnn` was not trained for: typeset digits, for measuring the loop.

MNIST is handwriting; people also photograph receipts, forms and screens, where digits are
typeset: serifs, a flat-footed 1, an open 4, a 7 without a bar, old-style figures whose 3, 4, 5, 7
and 9 hang below the line. No training step of the `cnn` draws a typeset digit (its outliers and
its non-digit draw use typeset *letters* only, never digits), so its error here is what a shift in
the users' writing would look like.

The fonts are the ones matplotlib (a dependency) ships, so the population is the same on every
machine. Each image is one digit drawn at a random size, stroke weight and tilt, then cropped,
fitted into 20x20 and centred by mass as MNIST's digits were (`training.negatives.centred`).

`draw(part, n)` gives the "corrected" part (users' corrections, fed back through a corrections
file), the "live" part (what users send while a new version is tried, never trained on) or the
"unseen" part (the same fonts, other draws, never sent at all), from different seeds, so no unseen
image is ever trained on.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from model_store.mnist_data import MnistSplit
from training.negatives import CANVAS, FONT_DIR, centred

Part = Literal["corrected", "unseen", "live"]
SEEDS: dict[Part, int] = {"corrected": 101, "unseen": 202, "live": 303}
FONTS = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
    "cmr10.ttf",
    "cmb10.ttf",
    "cmss10.ttf",
    "cmtt10.ttf",
    "cmti10.ttf",
    # Computer Modern's math italic draws old-style figures.
    "cmmi10.ttf",
)
TILT = 8.0  # degrees either way
BOLDER_CHANCE = 0.3  # share drawn bolder than the font (thinned, the light faces break apart)


def render(digit: int, font_file: str, size: int, tilt: float, bolder: bool) -> np.ndarray:
    """One digit, white on black, cropped, fitted into 20x20 and centred by mass: uint8 (28, 28)."""
    font = ImageFont.truetype(str(FONT_DIR / font_file), size)
    canvas = Image.new("L", (CANVAS, CANVAS))
    ImageDraw.Draw(canvas).text((CANVAS / 2, CANVAS / 2), str(digit), 255, font, "mm")
    if bolder:
        canvas = canvas.filter(ImageFilter.MaxFilter(3))
    return centred(canvas.rotate(tilt, Image.Resampling.BILINEAR))


def draw(part: Part, n: int) -> MnistSplit:
    """`n` typeset digits of one part, labels balanced over 0-9; the same call gives the same images."""
    rng = np.random.default_rng(SEEDS[part])
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    images = []
    for label in labels:
        bolder = bool(rng.random() < BOLDER_CHANCE)
        font_file = FONTS[rng.integers(len(FONTS))]
        size, tilt = int(rng.integers(44, 76)), float(rng.uniform(-TILT, TILT))
        images.append(render(int(label), font_file, size, tilt, bolder))
    return MnistSplit(np.stack(images), labels.astype(np.int64))
