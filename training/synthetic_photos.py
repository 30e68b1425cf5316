"""Test digits rendered as people upload them, then read back through the service's normalisation.

A rendering is dark ink on light paper, 64-400 px, lit by a gradient and crossed by a soft shadow,
sometimes on ruled paper, sometimes drawn small (8-16 px) and blown up, the stroke thinned or
thickened, tilted up to 15 degrees, placed off-centre with 5-20 px margins, and saved as a JPEG of
quality 30-90. The bytes go through `app.inputs.normalisation`, the code `/predict` runs.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter

from app.inputs.normalisation import Normalised, normalise_decoded

Normaliser = Callable[[Image.Image], Normalised]

WORK_SCALE = 4  # strokes are thinned, thickened and rotated at 4x MNIST's resolution
STROKE_FILTER = 5  # +-2 px at 4x: half an MNIST pixel on each side of a stroke
LOW_RES_CHANCE = 0.3
RULED_CHANCE = 0.5
LIGHT_STEP = 4


def crop_to_ink(digit: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(digit)
    if len(rows) == 0:
        return digit
    return digit[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def fit(image: Image.Image, longest: int, resample: Image.Resampling) -> Image.Image:
    """`image` resized so that its longer side is `longest` px, keeping its aspect ratio."""
    factor = longest / max(image.size)
    return image.resize((max(1, round(image.width * factor)), max(1, round(image.height * factor))), resample)


def ink_shape(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """The digit's ink as an 'L' image at 4x: maybe drawn small first, stroke changed, tilted."""
    ink = Image.fromarray(crop_to_ink(digit))
    if rng.random() < LOW_RES_CHANCE:
        ink = fit(ink, int(rng.integers(8, 17)), Image.Resampling.BOX)
    ink = fit(ink, 28 * WORK_SCALE, Image.Resampling.BICUBIC)
    stroke = rng.integers(3)
    if stroke == 1:
        ink = ink.filter(ImageFilter.MinFilter(STROKE_FILTER))
    elif stroke == 2:
        ink = ink.filter(ImageFilter.MaxFilter(STROKE_FILTER))
    return ink.rotate(float(rng.uniform(-15, 15)), Image.Resampling.BICUBIC, expand=True)


def place(ink: Image.Image, rng: np.random.Generator) -> np.ndarray:
    """The ink fitted into a 64-400 px page with 5-20 px margins, at a random spot: alpha in [0, 1]."""
    width = int(rng.integers(64, 401))
    height = int(np.clip(width * rng.uniform(0.8, 1.25), 64, 400))
    left, right, top, bottom = rng.integers(5, 21, size=4)
    room_w, room_h = width - left - right, height - top - bottom
    factor = min(room_w / ink.width, room_h / ink.height)
    size = (max(1, round(ink.width * factor)), max(1, round(ink.height * factor)))
    x = left + int(rng.integers(0, room_w - size[0] + 1))
    y = top + int(rng.integers(0, room_h - size[1] + 1))
    alpha = np.zeros((height, width), dtype=np.float32)
    alpha[y : y + size[1], x : x + size[0]] = np.asarray(ink.resize(size, Image.Resampling.BICUBIC)) / 255
    return np.clip(alpha, 0, 1)


def paper(height: int, rng: np.random.Generator) -> np.ndarray:
    """Paper reflectance per row, RGB in [0, 1], (height, 1, 3): warm-tinted, ruled half the time."""
    tint = np.array([1.0, rng.uniform(0.94, 1.0), rng.uniform(0.82, 1.0)], dtype=np.float32)
    sheet = np.full((height, 1, 3), rng.uniform(0.8, 0.97), dtype=np.float32) * tint
    if rng.random() < RULED_CHANCE:
        spacing = max(8, int(height / rng.uniform(3, 6)))
        thickness = max(1, height // 150)
        rows = (np.arange(height) - int(rng.integers(spacing))) % spacing < thickness
        sheet[rows] *= np.array([0.65, 0.75, 0.95], dtype=np.float32) * np.float32(rng.uniform(0.85, 1.0))
    return sheet


def lighting(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Illumination in (0, 1]: a linear gradient times a soft-edged shadow across part of the page.

    Computed on a grid 4 times coarser and enlarged: light varies slowly, and this is the costly part.
    """
    coarse_shape = (-(-height // LIGHT_STEP), -(-width // LIGHT_STEP))
    rows, cols = np.indices(coarse_shape, dtype=np.float32) * LIGHT_STEP
    angle = rng.uniform(0, 2 * np.pi)
    along = (np.cos(angle) * cols + np.sin(angle) * rows) / max(height, width)
    gradient = 1 - rng.uniform(0, 0.35) * (along - along.min()) / max(float(np.ptp(along)), 1e-6)
    angle = rng.uniform(0, 2 * np.pi)
    across = np.cos(angle) * (cols - width * rng.uniform(0.2, 0.8))
    across += np.sin(angle) * (rows - height * rng.uniform(0.2, 0.8))
    softness = max(height, width) * rng.uniform(0.03, 0.2)
    shadow = 1 - rng.uniform(0.1, 0.4) / (1 + np.exp(across / softness))
    coarse = Image.fromarray((gradient * shadow).astype(np.float32), mode="F")
    return np.asarray(coarse.resize((width, height), Image.Resampling.BILINEAR))


def render_upload(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """One MNIST digit (28x28, light on dark) as a person's photographed upload, JPEG bytes."""
    alpha = place(ink_shape(digit, rng), rng)[..., None]
    height, width = alpha.shape[:2]
    ink = np.array([1.0, 1.0, rng.uniform(1.0, 2.5)], dtype=np.float32) * rng.uniform(0.04, 0.3)
    sheet = paper(height, rng)
    reflectance = sheet + (np.clip(ink, 0, 1) - sheet) * alpha
    photo = reflectance * lighting(height, width, rng)[..., None]
    buffer = io.BytesIO()
    image = Image.fromarray((photo * 255 + 0.5).astype(np.uint8), mode="RGB")  # photo is within [0, 1]
    image.save(buffer, format="JPEG", quality=int(rng.integers(30, 91)))
    return buffer.getvalue()


def clean_upload(digit: np.ndarray, side: int = 112) -> bytes:
    """A digit as a plain dark-on-light PNG, `side` px square, with no corruption at all."""
    buffer = io.BytesIO()
    Image.fromarray(255 - digit).resize((side, side), Image.Resampling.BICUBIC).save(buffer, format="PNG")
    return buffer.getvalue()


def read_back(data: bytes, normaliser: Normaliser = normalise_decoded) -> np.ndarray:
    """Upload bytes through the service's normalisation: the 28x28 digit the model would see."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return normaliser(image).pixels


def upload(
    images: np.ndarray, rng: np.random.Generator, normaliser: Normaliser = normalise_decoded
) -> np.ndarray:
    """The upload family: every digit rendered with its own seeded style and normalised back."""
    seeds = rng.integers(0, 2**63, size=len(images))
    return np.stack(
        [
            read_back(render_upload(d, np.random.default_rng(s)), normaliser)
            for d, s in zip(images, seeds, strict=True)
        ]
    )
