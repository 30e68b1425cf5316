"""How the training images are split and labelled: the held-out set and one-hot targets.

A leaf module, so that the entry point `training/train.py` and the steps it runs (`batches.py`,
`calibrate_trust.py`) all import it and none of them has to import the entry point.
"""

from __future__ import annotations

import numpy as np

from model_store.mnist_data import MnistSplit
from model_store.preprocessing import NUM_CLASSES


def held_out_split(
    train: MnistSplit, holdout: int, seed: int, limit: int | None
) -> tuple[MnistSplit, MnistSplit]:
    """(held out, trained on): the held-out images come first in a seeded shuffle of all 60,000,
    so --limit never reaches them and they are never trained on."""
    order = np.random.default_rng(seed).permutation(len(train.labels))
    held, used = order[:holdout], order[holdout:][:limit]
    return MnistSplit(train.images[held], train.labels[held]), MnistSplit(
        train.images[used], train.labels[used]
    )


def one_hot(labels: np.ndarray) -> np.ndarray:
    return np.eye(NUM_CLASSES, dtype=np.float32)[labels]
