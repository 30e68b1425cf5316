"""Training batches drawn afresh every epoch: corrupted digits, plus outliers with a uniform target."""

from __future__ import annotations

import keras
import numpy as np

from model_store.preprocessing import INPUT_SHAPE, NUM_CLASSES, to_model_input
from training.augment import corrupt, shift
from training.splits import one_hot


class CorruptedBatches(keras.utils.PyDataset):
    """Batch `i` of epoch `e` draws from the stream [seed, e, i], so a run repeats exactly whatever
    order the loader's threads fetch batches in. `outliers_per_batch` outliers are appended with the
    target 1/10 for every digit; then a share `corrupted` of the images goes through
    `training.augment.corrupt`, and the others are only shifted."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        seed: int,
        corrupted: float,
        outliers: np.ndarray,
        outliers_per_batch: int,
        **kwargs: int,
    ) -> None:
        super().__init__(**kwargs)
        self.images, self.targets = images, one_hot(labels)
        self.batch_size, self.seed, self.corrupted = batch_size, seed, corrupted
        self.outliers, self.outliers_per_batch = outliers, outliers_per_batch if len(outliers) else 0
        self.epoch = 0
        self.order = self.shuffled()

    def shuffled(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.images))

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        chosen = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        images, targets = self.images[chosen], self.targets[chosen]
        if self.outliers_per_batch:
            extra = self.outliers[rng.integers(len(self.outliers), size=self.outliers_per_batch)]
            images = np.concatenate([images, extra])
            uniform = np.full((len(extra), NUM_CLASSES), 1 / NUM_CLASSES, np.float32)
            targets = np.concatenate([targets, uniform])
        x = to_model_input(images)[..., 0]
        picked = rng.random(len(x)) < self.corrupted
        if picked.any():
            x[picked] = corrupt(x[picked], rng)
        if not picked.all():
            x[~picked] = shift(x[~picked], rng)
        return x.reshape((-1, *INPUT_SHAPE)), targets

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = self.shuffled()
