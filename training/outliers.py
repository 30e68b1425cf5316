"""Images that are not digits, for outlier exposure: trained on with a uniform target over the ten
digits (Hendrycks et al., 2019), so that the model's confidence falls away from digits.

They are made to differ from the negatives that set and measure the verdicts (`training/negatives.py`):
other fonts (STIX and Computer Modern, not DejaVu) and other characters (symbols and Greek too), other
sample photos, other generators for strokes, figures and textures, other seeds; no blank images
(the ink check handles those) and no cut digits. `training.batches` then corrupts them like the
digits.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from model_store.preprocessing import IMAGE_SIDE
from training.negatives import CANVAS, FONT_DIR, centred, photo_crops, random_points

Outliers = Callable[[np.random.Generator, int], np.ndarray]

FONTS = (
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
    "cmr10.ttf",
    "cmss10.ttf",
    "cmtt10.ttf",
    "cmb10.ttf",
)
# Left out: O, o, I, l, |, /, ( and the like, which any reader takes for a 0 or a 1.
LATIN = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz&%@#?!$<>[]{}=+*"
GREEK = "αβγδεζηθκλμξπρσφψωΓΔΘΛΞΠΣΦΨΩ"  # only the STIX faces have these
PHOTOS = (
    "clock",
    "horse",
    "hubble_deep_field",
    "immunohistochemistry",
    "microaneurysms",
    "retina",
    "colorwheel",
    "shepp_logan_phantom",
    "checkerboard",
)
SEED = 1001  # the verdicts' negatives use seeds 1 and 2


def glyphs(rng: np.random.Generator, n: int) -> np.ndarray:
    fonts = [ImageFont.truetype(str(FONT_DIR / name), size) for name in FONTS for size in (40, 56, 72)]
    out = []
    for _ in range(n):
        index = int(rng.integers(len(fonts)))
        characters = LATIN + GREEK if FONTS[index // 3].startswith("STIX") else LATIN
        canvas = Image.new("L", (CANVAS, CANVAS))
        ImageDraw.Draw(canvas).text(
            (CANVAS / 2, CANVAS / 2), str(rng.choice(list(characters))), 255, fonts[index], "mm"
        )
        out.append(centred(canvas.rotate(float(rng.uniform(-30, 30)), Image.Resampling.BILINEAR)))
    return np.stack(out)


def tangles(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random walks of 6-20 short steps, with a pen 2-12 px wide."""
    out = []
    for _ in range(n):
        canvas = Image.new("L", (CANVAS, CANVAS))
        steps = rng.normal(0, 14, size=(int(rng.integers(6, 21)), 2)).cumsum(axis=0) + CANVAS / 2
        walk = [(float(x), float(y)) for x, y in np.clip(steps, 4, CANVAS - 4)]
        ImageDraw.Draw(canvas).line(walk, 255, int(rng.integers(2, 13)), "curve")
        out.append(centred(canvas))
    return np.stack(out)


def figures(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random polygons, grids and crosses, ellipses, filled or drawn."""
    out = []
    for _ in range(n):
        canvas = Image.new("L", (CANVAS, CANVAS))
        draw = ImageDraw.Draw(canvas)
        kind, width = int(rng.integers(4)), int(rng.integers(3, 10))
        if kind == 0:
            draw.polygon(
                random_points(rng, int(rng.integers(4, 9))), 255 if rng.random() < 0.5 else None, 255, width
            )
        elif kind == 1:
            for at in rng.uniform(15, 81, size=(int(rng.integers(2, 5)), 1)):
                draw.line((float(at[0]), 8, float(at[0]), 88), 255, width)
                draw.line((8, float(at[0]), 88, float(at[0])), 255, width)
        elif kind == 2:
            a, b = random_points(rng, 2)
            draw.line((a, b), 255, width)
            draw.line(((a[0], b[1]), (b[0], a[1])), 255, width)
        else:
            x0, y0 = rng.uniform(5, 35, 2)
            x1, y1 = rng.uniform(60, 91, 2)
            draw.ellipse((x0, y0, x1, y1), 255)
        out.append(centred(canvas))
    return np.stack(out)


def textures(rng: np.random.Generator, n: int) -> np.ndarray:
    """Smooth fields, Gaussian grain, sparse dots and stripes, as 28x28 pictures."""
    from training.augment import smooth_field

    shape = (n, IMAGE_SIDE, IMAGE_SIDE)
    field = smooth_field(n, rng)
    grain = np.clip(rng.normal(rng.uniform(0.2, 0.6, (n, 1, 1)), 0.25, shape), 0, 1)
    dots = (rng.random(shape) < rng.uniform(0.02, 0.15, (n, 1, 1))).astype(np.float32)
    rows = np.arange(IMAGE_SIDE)[None, :, None]
    stripes = np.broadcast_to((rows % rng.integers(3, 8, (n, 1, 1))) < 2, shape).astype(np.float32)
    stripes = np.where(rng.random((n, 1, 1)) < 0.5, stripes, np.swapaxes(stripes, 1, 2))
    kind = rng.integers(4, size=(n, 1, 1))
    pictures = np.select([kind == 0, kind == 1, kind == 2], [field, grain, dots], stripes)
    return np.rint(pictures * 255).astype(np.uint8)


def pictures(rng: np.random.Generator, n: int) -> np.ndarray:
    """Crops of scikit-image's sample pictures that the verdicts' negatives do not use, either way round."""
    return np.stack([255 - crop if rng.random() < 0.5 else crop for crop in photo_crops(rng, n, PHOTOS, 20)])


FAMILIES: dict[str, Outliers] = {
    "glyphs": glyphs,
    "tangles": tangles,
    "figures": figures,
    "textures": textures,
    "pictures": pictures,
}


def pool(count: int, seed: int = SEED) -> np.ndarray:
    """`count` outliers (uint8, (count, 28, 28)), the families in equal shares, shuffled."""
    rng = np.random.default_rng(seed)
    share = -(-count // len(FAMILIES))
    images = np.concatenate([family(rng, share) for family in FAMILIES.values()])
    return images[rng.permutation(len(images))[:count]]
