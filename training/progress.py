"""One log line per epoch while a model trains: the epoch's scores and time, and an ETA for the rest."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras

log = logging.getLogger("training")


def minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def epoch_line(epoch: int, epochs: int, seconds: float, elapsed: float, logs: dict[str, float]) -> str:
    """`epoch 3/18: 52 s, loss 0.1234, val_accuracy 0.9912; about 13 min left`."""
    scores = ", ".join(
        f"{name} {value:.4f}" for name, value in logs.items() if "loss" in name or "acc" in name
    )
    left = elapsed / epoch * (epochs - epoch)
    end = f"about {minutes(left)} left" if epoch < epochs else f"fit done in {minutes(elapsed)}"
    return f"epoch {epoch}/{epochs}: {minutes(seconds)}, {scores}; {end}"


def epoch_logger(epochs: int) -> keras.callbacks.Callback:
    """A Keras callback writing `epoch_line` after every epoch."""
    import keras

    class EpochLogger(keras.callbacks.Callback):
        def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
            self.started = self.epoch_started = time.perf_counter()

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self.epoch_started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            now = time.perf_counter()
            scores = {name: float(value) for name, value in (logs or {}).items()}
            log.info(epoch_line(epoch + 1, epochs, now - self.epoch_started, now - self.started, scores))

    return EpochLogger()
