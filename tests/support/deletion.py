"""Deletion curves: how fast blacking out the pixels an explanation ranks highest destroys the
answer, against blacking out random ink (the faithfulness measure in docs/trust.md)."""

from __future__ import annotations

import numpy as np

from app.serving.explain import Attribution
from app.serving.model import ServingModel


def deletion_curve(
    serving: ServingModel, images: np.ndarray, digits: np.ndarray, orders: np.ndarray, steps: int = 20
) -> np.ndarray:
    """Mean probability of each image's digit as its pixels are blacked out in `orders`, 5 % a step."""
    curve = []
    for step in range(steps + 1):
        cut = images.reshape(len(images), -1).copy()
        count = round(784 * step / steps / 4)  # up to a quarter of the pixels: about all the ink
        np.put_along_axis(cut, orders[:, :count], 0, axis=1)
        probabilities = serving.forward(cut.reshape(images.shape))
        curve.append(probabilities[np.arange(len(images)), digits].mean())
    return np.array(curve)


def ink_first_at_random(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    flat = image.reshape(-1)
    return np.concatenate([rng.permutation(np.flatnonzero(flat > 0)), np.flatnonzero(flat == 0)])


def deletion_curves(
    serving: ServingModel, maps: list[Attribution], images: np.ndarray, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(by the maps' ranking, by random ink) deletion curves of `images` (uint8, N x 28 x 28)."""
    digits = np.array([found.digit for found in maps])
    ranked = np.argsort(-np.stack([found.attributions for found in maps]).reshape(len(images), -1), axis=1)
    rng = np.random.default_rng(seed)
    # The fair random baseline deletes ink only: blacking out background pixels changes nothing.
    random_orders = np.stack([ink_first_at_random(image, rng) for image in images])
    return deletion_curve(serving, images, digits, ranked), deletion_curve(
        serving, images, digits, random_orders
    )
