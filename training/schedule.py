"""Whether enough new corrections arrived to be worth a training run: the check behind
`mnist-train --feedback --min-new-corrections 200`, which a schedule runs (docs/loop.md, Scheduling).

New means labelled after the latest correction the serving version was trained on (its metadata's
`training.feedback.last_time`), or after a newer version's, rejected ones included: a candidate the
gate refused was trained on those corrections already, and training on them again at every tick
would only spend the cores. A serving version trained on no corrections counts them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from model_store.feedback_records import FeedbackRecordsError, count_labelled, open_records
from model_store.pins import serving_version
from model_store.store import ModelStore, NoModelError
from training.feedback import CorrectionsError

# A version's record keeps times to the millisecond, the log to the microsecond: a correction
# labelled within the recorded millisecond is one the version was trained on.
RECORDED_PRECISION = timedelta(milliseconds=1)


@dataclass(frozen=True)
class RetrainCheck:
    new: int  # corrections labelled after `trained_until`
    needed: int
    serving: int | None  # the version served now; None when the store serves none yet
    baseline: int | None  # the version whose corrections `new` counts from; None: counted from the start

    @property
    def due(self) -> bool:
        return self.new >= self.needed

    def summary(self) -> str:
        if self.baseline is not None:
            unserved = "" if self.baseline == self.serving else " (not served)"
            since = f" since version {self.baseline}{unserved} was trained"
        elif self.serving is not None:
            since = f" (version {self.serving} was trained on none)"
        else:
            since = " (the store serves no version yet)"
        outcome = "training" if self.due else "nothing to do"
        return f"{self.new} new corrections{since}, {self.needed} needed: {outcome}"


def trained_until(store: ModelStore, serving: int) -> tuple[int, datetime] | None:
    """The version from `serving` on whose corrections are the latest, and that latest time."""
    latest: tuple[int, datetime] | None = None
    for version in store.versions():
        if version < serving:
            continue
        feedback = store.read_metadata(version).training.feedback
        if feedback is None or feedback.last_time is None:
            continue
        if latest is None or feedback.last_time >= latest[1]:
            latest = (version, feedback.last_time)
    return latest


def check_new_corrections(store: ModelStore, database_url: str, model_name: str, needed: int) -> RetrainCheck:
    """Count the corrections of `model_name` in the log at `database_url` that no version from the
    serving one on was trained on; CorrectionsError when the database cannot be read."""
    try:
        serving: int | None = serving_version(store)
    except NoModelError:
        serving = None
    baseline = None if serving is None else trained_until(store, serving)
    since = None if baseline is None else baseline[1] + RECORDED_PRECISION
    try:
        engine = open_records(database_url)
        try:
            new = count_labelled(engine, since, model_name)
        finally:
            engine.dispose()
    except FeedbackRecordsError as exc:
        raise CorrectionsError(str(exc)) from exc
    return RetrainCheck(new, needed, serving, None if baseline is None else baseline[0])
