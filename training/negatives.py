"""Images that are not digits, drawn reproducibly from a seed, to set and measure the verdicts.

Every family yields uint8 (N, 28, 28) images in MNIST polarity, made the way the service would see
them: drawings are cropped, scaled into 20x20 and centred by mass (`fit_and_centre`); photos and
noise arrive as 28x28 pictures, used as they are. A validation draw (one seed, held-out digits)
sets thresholds; an evaluation draw (another seed, test digits) measures them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from app.inputs.normalisation import border_level, fit_and_centre
from model_store.preprocessing import IMAGE_SIDE

# The DejaVu fonts that matplotlib (a dependency) ships, so the draw is the same on every machine
# and in the container, with no system fonts needed: the six faces of Debian's fonts-dejavu-core.
FONT_DIR = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
FONTS = tuple(
    f"DejaVu{family}{weight}.ttf" for family in ("Sans", "SansMono", "Serif") for weight in ("", "-Bold")
)
# O, o, I and l are left out: in these fonts they are drawn like 0 and 1.
LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz"
CANVAS = 96
PHOTOS = ("astronaut", "brick", "camera", "cat", "coffee", "coins", "grass", "gravel", "moon", "rocket")
VALIDATION_SEED = 1
EVALUATION_SEED = 2

Family = Callable[[np.random.Generator, int, np.ndarray], np.ndarray]


def centred(canvas: Image.Image | np.ndarray) -> np.ndarray:
    pixels = fit_and_centre(np.asarray(canvas, dtype=np.float32), [])
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def random_points(rng: np.random.Generator, count: int) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in rng.uniform(8, CANVAS - 8, size=(count, 2))]


def letters(rng: np.random.Generator, n: int, digits: np.ndarray) -> np.ndarray:
    fonts = [FONT_DIR / name for name in FONTS]
    out = []
    for _ in range(n):
        font = ImageFont.truetype(str(fonts[rng.integers(len(fonts))]), int(rng.integers(48, 72)))
        canvas = Image.new("L", (CANVAS, CANVAS))
        ImageDraw.Draw(canvas).text((CANVAS / 2, CANVAS / 2), str(rng.choice(list(LETTERS))), 255, font, "mm")
        out.append(centred(canvas.rotate(float(rng.uniform(-12, 12)), Image.Resampling.BILINEAR)))
    return np.stack(out)


def scribbles(rng: np.random.Generator, n: int, digits: np.ndarray) -> np.ndarray:
    out = []
    for _ in range(n):
        canvas = Image.new("L", (CANVAS, CANVAS))
        draw = ImageDraw.Draw(canvas)
        for _ in range(int(rng.integers(1, 4))):
            draw.line(random_points(rng, int(rng.integers(3, 9))), 255, int(rng.integers(4, 10)), "curve")
        out.append(centred(canvas))
    return np.stack(out)


def shapes(rng: np.random.Generator, n: int, digits: np.ndarray) -> np.ndarray:
    # No rings and no single bars: those are a 0 and a 1 to any reader.
    out = []
    for _ in range(n):
        canvas = Image.new("L", (CANVAS, CANVAS))
        draw = ImageDraw.Draw(canvas)
        kind, fill, width = int(rng.integers(4)), bool(rng.integers(2)), int(rng.integers(4, 9))
        if kind == 0:
            x0, y0 = rng.uniform(5, 40, 2)
            x1, y1 = rng.uniform(56, 91, 2)
            draw.rectangle((x0, y0, x1, y1), 255 if fill else None, 255, width)
        elif kind == 1:
            draw.polygon(random_points(rng, 3), 255 if fill else None, 255, width)
        elif kind == 2:
            sides = int(rng.integers(5, 9))
            radius = np.where(np.arange(2 * sides) % 2, 18, 44)
            angles = np.pi * np.arange(2 * sides) / sides + rng.uniform(0, np.pi)
            star = [(48 + r * np.cos(a), 48 + r * np.sin(a)) for r, a in zip(radius, angles, strict=True)]
            draw.polygon(star, 255 if fill else None, 255, width)
        else:
            draw.ellipse((20, 20, 76, 76), 255)  # a filled disc
        out.append(centred(canvas))
    return np.stack(out)


def noise(rng: np.random.Generator, n: int, digits: np.ndarray) -> np.ndarray:
    size = (n, IMAGE_SIDE, IMAGE_SIDE)
    uniform = rng.integers(0, 256, size)
    salt = np.where(rng.random(size) < rng.uniform(0.05, 0.4, (n, 1, 1)), 255, 0)
    # Smooth blobs: coarse noise scaled up.
    coarse = rng.integers(0, 256, (n, 7, 7)).astype(np.uint8)
    blobs = np.stack(
        [np.asarray(Image.fromarray(c).resize((28, 28), Image.Resampling.BICUBIC)) for c in coarse]
    )
    kind = rng.integers(3, size=(n, 1, 1))
    return np.where(kind == 0, uniform, np.where(kind == 1, salt, blobs)).astype(np.uint8)


def blank(rng: np.random.Generator, n: int, digits: np.ndarray) -> np.ndarray:
    """Empty, faintly grey, or a few specks."""
    images = np.zeros((n, IMAGE_SIDE, IMAGE_SIDE), dtype=np.uint8)
    for image in images:
        kind = rng.integers(3)
        if kind == 1:
            image[:] = rng.integers(0, 40, image.shape)
        elif kind == 2:
            count = int(rng.integers(1, 6))
            image[rng.integers(0, 28, count), rng.integers(0, 28, count)] = 255
    return images


def photo_crops(
    rng: np.random.Generator, n: int, names: tuple[str, ...], min_side: int
) -> Iterator[np.ndarray]:
    """`n` random square crops (at least `min_side` px) of scikit-image's sample pictures `names`,
    grey, resized to 28x28; yielded one at a time, so a caller's own draws interleave with them."""
    from skimage import color, data

    pictures = [getattr(data, name)() for name in names]
    grey = [(color.rgb2gray(p[..., :3]) * 255 if p.ndim == 3 else p).astype(np.uint8) for p in pictures]
    for _ in range(n):
        picture = grey[rng.integers(len(grey))]
        side = int(rng.integers(min_side, min(picture.shape) // 2))
        top, left = (int(rng.integers(0, d - side)) for d in picture.shape)
        yield np.asarray(
            Image.fromarray(picture[top : top + side, left : left + side]).resize((IMAGE_SIDE, IMAGE_SIDE))
        )


def photos(rng: np.random.Generator, n: int, digits: np.ndarray) -> np.ndarray:
    """Square crops of the sample photos that ship inside scikit-image, as 28x28 pictures."""
    out = []
    for crop in photo_crops(rng, n, PHOTOS, IMAGE_SIDE):
        # As the service does for a 28x28 picture: light paper is turned around.
        out.append(255 - crop if border_level(crop) > 127.5 else crop)
    return np.stack(out)


def half_digits(rng: np.random.Generator, n: int, digits: np.ndarray) -> np.ndarray:
    """Real digits with the top, bottom, left or right half wiped, then centred again."""
    out = []
    for index, side in zip(rng.integers(0, len(digits), n), rng.integers(4, size=n), strict=True):
        image = digits[index].astype(np.float32)
        mid = IMAGE_SIDE // 2
        keep = [np.s_[:mid, :], np.s_[mid:, :], np.s_[:, :mid], np.s_[:, mid:]][side]
        cut = np.zeros_like(image)
        cut[keep] = image[keep]
        out.append(centred(cut))
    return np.stack(out)


FAMILIES: dict[str, Family] = {
    "letters": letters,
    "scribbles": scribbles,
    "shapes": shapes,
    "noise": noise,
    "blank": blank,
    "photos": photos,
    "half_digits": half_digits,
}


def draw(seed: int, per_family: int, digits: np.ndarray) -> dict[str, np.ndarray]:
    """`per_family` images of each family; the same seed always gives the same images."""
    rng = np.random.default_rng(seed)
    return {name: family(rng, per_family, digits) for name, family in FAMILIES.items()}
