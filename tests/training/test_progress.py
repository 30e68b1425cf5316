"""The one line per epoch `mnist-train` logs: scores, the epoch's time and what is left."""

from __future__ import annotations

from training.progress import epoch_line


def test_an_epoch_line_gives_scores_and_the_time_left_at_the_pace_so_far() -> None:
    line = epoch_line(3, 18, 50.0, 150.0, {"loss": 0.12345, "val_accuracy": 0.99123, "learning_rate": 0.002})
    assert line == "epoch 3/18: 50 s, loss 0.1235, val_accuracy 0.9912; about 12 min left"


def test_the_last_epoch_says_how_long_the_fit_took() -> None:
    assert (
        epoch_line(2, 2, 30.0, 200.0, {"accuracy": 0.5})
        == "epoch 2/2: 30 s, accuracy 0.5000; fit done in 3 min"
    )
