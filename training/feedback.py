"""Users' corrections as training data: read from the prediction log or its export, the hold-out
split, and the mix with MNIST.

They come straight from the service's database (`read_database_corrections`, the query of
`model_store.feedback_records`) or from its export (`load_corrections`, the `.npz` file
`model_store.feedback_file` describes): the same arrays either way, `images` (N, 28, 28) uint8 as
the model saw them, `labels` (0-9, or 10 for "not a digit"), `prediction_ids`, `versions` (the
version that answered) and `times` (when the label was given).

Split: a correction is held out when the SHA-256 of its prediction id falls in the first
HOLDOUT_SHARE of the hash space, so one prediction lands on the same side in every export and
every run, whatever else the file holds, and a held-out correction is never trained on.

Mix: the training part is repeated so that corrections make up SHARE_OF_EPOCH of each epoch's
digits (MNIST the rest, so MNIST does not regress), each at most MAX_REPEATS times an epoch, so
that a handful of corrections is not learned by heart. Corrections labelled "not a digit" join the
`cnn`'s outlier pool (trained towards the uniform answer, as its non-digits are), repeated to the
same share of that pool; a preset without outliers leaves them out and says how many.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from model_store.feedback_file import (
    FeedbackExamples,
    FeedbackFileError,
    read_feedback_file,
    write_feedback_file,
)
from model_store.feedback_records import (
    FeedbackRecordsError,
    describe,
    open_records,
    read_labelled_examples,
)
from model_store.metadata import FeedbackUsed
from model_store.mnist_data import MnistSplit
from model_store.preprocessing import NUM_CLASSES

log = logging.getLogger("training")

NOT_A_DIGIT = NUM_CLASSES  # label 10
HOLDOUT_SHARE = 0.2
SHARE_OF_EPOCH = 0.2
MAX_REPEATS = 20


class CorrectionsError(ValueError):
    """The corrections file cannot be used; the message says which file and why."""


@dataclass(frozen=True)
class Corrections:
    images: np.ndarray  # uint8 (N, 28, 28)
    labels: np.ndarray  # int64 (N,), 0-9 or NOT_A_DIGIT
    prediction_ids: np.ndarray  # str (N,)
    versions: np.ndarray  # int64 (N,)
    times: np.ndarray  # float64 (N,), epoch seconds
    sha256: str  # of the file they were read from, or of the examples read from the database
    source: str  # the file, or the database's URL without its password

    def take(self, index: np.ndarray) -> Corrections:
        return Corrections(
            self.images[index],
            self.labels[index],
            self.prediction_ids[index],
            self.versions[index],
            self.times[index],
            self.sha256,
            self.source,
        )

    def digits(self) -> MnistSplit:
        """The corrections labelled with a digit."""
        keep = self.labels != NOT_A_DIGIT
        return MnistSplit(self.images[keep], self.labels[keep])

    def non_digits(self) -> np.ndarray:
        return self.images[self.labels == NOT_A_DIGIT]


def load_corrections(path: Path) -> Corrections:
    """The corrections in the export `path`, checked: CorrectionsError says what is wrong."""
    try:
        content = path.read_bytes()
        examples = read_feedback_file(path)
    except OSError as exc:
        raise CorrectionsError(f"{path}: cannot read it: {exc.strerror or exc}") from exc
    except FeedbackFileError as exc:
        message = str(exc)
        raise CorrectionsError(message if message.startswith(str(path)) else f"{path}: {message}") from exc
    return corrections_from(examples, hashlib.sha256(content).hexdigest(), str(path))


def read_database_corrections(url: str, model_name: str) -> Corrections:
    """Every labelled answer of `model_name` in the prediction log at `url`; CorrectionsError when the
    database cannot be read or holds none."""
    try:
        engine = open_records(url)
        try:
            examples = read_labelled_examples(engine, model_name=model_name)
        finally:
            engine.dispose()
    except FeedbackRecordsError as exc:
        raise CorrectionsError(str(exc)) from exc
    if not len(examples):
        raise CorrectionsError(
            f"{describe(url)} holds no labelled answers of model {model_name!r} yet: users label answers "
            "with POST /feedback"
        )
    # What a file's SHA-256 is for an export: one digest naming exactly these examples.
    digest = hashlib.sha256()
    for part in (examples.prediction_ids, examples.labels, examples.images, examples.times):
        digest.update(np.ascontiguousarray(part).tobytes())
    return corrections_from(examples, digest.hexdigest(), describe(url))


def corrections_from(examples: FeedbackExamples, sha256: str, source: str) -> Corrections:
    """The training view of `examples`, read from `source`: labels as int64, times as epoch seconds."""
    labels = examples.labels
    if not np.issubdtype(labels.dtype, np.integer):
        raise CorrectionsError(f"{source}: labels must be whole numbers 0-9, or {NOT_A_DIGIT}: not a digit")
    ids = examples.prediction_ids.astype(str)
    if len(set(ids.tolist())) != len(ids):
        raise CorrectionsError(f"{source}: a prediction id appears twice")
    milliseconds = examples.times.astype("datetime64[ms]").astype(np.int64)
    return Corrections(
        examples.images,
        labels.astype(np.int64),
        ids,
        examples.versions.astype(np.int64),
        milliseconds / 1000.0,
        sha256,
        source,
    )


def save_corrections(
    path: Path, images: np.ndarray, labels: np.ndarray, ids: list[str], version: int
) -> None:
    """Write corrections as the export does (all answered by `version`, now): for measuring the
    loop offline and for tests, where no service has answered them."""
    now = np.datetime64(datetime.now(UTC).replace(tzinfo=None), "ms")
    examples = FeedbackExamples(
        images=images.astype(np.uint8),
        labels=labels.astype(np.uint8),
        prediction_ids=np.asarray(ids, dtype=str),
        versions=np.full(len(labels), version, np.int32),
        times=np.full(len(labels), now),
    )
    write_feedback_file(path, examples)


def held_out(prediction_ids: np.ndarray, share: float = HOLDOUT_SHARE) -> np.ndarray:
    """Which predictions are held out: the first 8 bytes of each id's SHA-256, as a fraction of
    2**64, below `share`."""
    buckets = [int.from_bytes(hashlib.sha256(str(i).encode()).digest()[:8], "big") for i in prediction_ids]
    return np.asarray([bucket < share * 2**64 for bucket in buckets], dtype=bool)


def split(corrections: Corrections) -> tuple[Corrections, Corrections]:
    """(trained on, held out), by `held_out`."""
    hold = held_out(corrections.prediction_ids)
    return corrections.take(np.flatnonzero(~hold)), corrections.take(np.flatnonzero(hold))


def repeats_for(corrections: int, mnist: int, share: float = SHARE_OF_EPOCH) -> int:
    """How often each of `corrections` examples is repeated so that they are `share` of an epoch
    beside `mnist` images, at most MAX_REPEATS (and at least once)."""
    if corrections == 0:
        return 0
    wanted = share * mnist / ((1 - share) * corrections)
    return int(np.clip(round(wanted), 1, MAX_REPEATS))


def mixed(mnist: MnistSplit, trained: Corrections) -> tuple[MnistSplit, int]:
    """MNIST with the training corrections' digits appended, repeated; and the repeat count."""
    digits = trained.digits()
    repeats = repeats_for(len(digits.labels), len(mnist.labels))
    images = np.concatenate([mnist.images, np.tile(digits.images, (repeats, 1, 1))])
    labels = np.concatenate([mnist.labels, np.tile(digits.labels, repeats)])
    return MnistSplit(images, labels), repeats


def outlier_pool(pool: np.ndarray, trained: Corrections) -> np.ndarray:
    """The outlier pool with the "not a digit" corrections appended, repeated to SHARE_OF_EPOCH of it."""
    extra = trained.non_digits()
    repeats = repeats_for(len(extra), len(pool))
    return np.concatenate([pool, np.tile(extra, (repeats, 1, 1))]) if repeats else pool


@dataclass(frozen=True)
class FeedbackMix:
    """The corrections' two parts, MNIST with the training part mixed in, and the metadata's record."""

    trained: Corrections
    held_out: Corrections
    mixed: MnistSplit
    record: FeedbackUsed


def mix_in(corrections: Corrections, mnist: MnistSplit, outliers: bool) -> FeedbackMix:
    """Split the corrections and mix the training part into `mnist`; `outliers` says whether the
    preset trains outliers, which the "not a digit" corrections then join (`outlier_pool`)."""
    trained, hold = split(corrections)
    together, repeats = mixed(mnist, trained)
    used = record(corrections, trained, hold, together, repeats, outliers)
    log.info(
        "corrections: %d trained on (each %d times an epoch, %.1f %% of its digits), %d held out; %s",
        used.trained_on,
        repeats,
        100 * used.share_of_epoch,
        used.held_out,
        used.not_a_digit,
    )
    return FeedbackMix(trained, hold, together, used)


def record(
    corrections: Corrections,
    trained: Corrections,
    hold: Corrections,
    mixed_in: MnistSplit,
    repeats: int,
    outliers: bool,
) -> FeedbackUsed:
    """What the metadata says about the corrections a version was trained with."""
    labels = [str(label) if label < NOT_A_DIGIT else "not_a_digit" for label in range(NOT_A_DIGIT + 1)]
    counts = np.bincount(corrections.labels, minlength=NOT_A_DIGIT + 1)
    non_digits = int(counts[NOT_A_DIGIT])
    treated = (
        f"{non_digits} trained as outliers (uniform target)"
        if outliers
        else f"{non_digits} left out: this preset trains no outliers"
    )
    times = (
        [datetime.fromtimestamp(float(t), UTC) for t in (corrections.times.min(), corrections.times.max())]
        if len(corrections.times)
        else [None, None]
    )
    corrected = repeats * len(trained.digits().labels)
    return FeedbackUsed(
        file_sha256=corrections.sha256,
        source=corrections.source,
        examples=len(corrections.labels),
        trained_on=len(trained.labels),
        held_out=len(hold.labels),
        held_out_share=HOLDOUT_SHARE,
        per_label={label: int(count) for label, count in zip(labels, counts, strict=True)},
        first_time=times[0],
        last_time=times[1],
        share_of_epoch=corrected / max(1, len(mixed_in.labels)),
        repeats=repeats,
        not_a_digit=treated,
    )
