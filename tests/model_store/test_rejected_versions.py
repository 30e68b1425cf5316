"""Versions the publish-time gate rejected: kept in the store, never the newest, never opened to serve."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model_store.metadata import METADATA_FILE, MODEL_FILE, Gate, GateScores, ModelMetadata
from model_store.pins import serving_version, write_pin
from model_store.store import ModelStore, NoModelError, RejectedVersionError
from tests.conftest import make_metadata

REASON = "rejected against version 1: hold-out accuracy 40.00 % is below version 1's 90.00 %"


def gate(passed: bool) -> Gate:
    scores = GateScores(mnist_accuracy=0.99, int8_default=False)
    return Gate(
        passed=passed,
        reason=REASON if not passed else "passed",
        against=None,
        candidate=scores,
        holdout_examples=0,
    )


def publish(store: ModelStore, version: int, passed: bool | None) -> None:
    """A version folder laid by hand: its metadata, with a gate that `passed` (None: no gate, as
    versions published before it), and a model file (never read here)."""
    folder = store.version_path(version)
    folder.mkdir(parents=True)
    (folder / MODEL_FILE).write_bytes(b"not read by open()")
    metadata = make_metadata(store.name, version, gate=None if passed is None else gate(passed))
    (folder / METADATA_FILE).write_text(metadata.model_dump_json())


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path, "mnist")


def test_newest_skips_a_rejected_version_but_the_store_keeps_it(store: ModelStore) -> None:
    publish(store, 1, None)
    publish(store, 2, True)
    publish(store, 3, False)
    assert store.versions() == [1, 2, 3]
    assert store.servable_versions() == [1, 2]
    assert store.resolve() == 2
    assert store.open().version == 2
    assert store.read_metadata(3).rejection == REASON


def test_opening_a_rejected_version_by_number_is_refused_with_the_reason(store: ModelStore) -> None:
    publish(store, 1, True)
    publish(store, 2, False)
    with pytest.raises(
        RejectedVersionError, match=r"version 2 .* rejected at publish time .* never served: rejected"
    ):
        store.open(2)


def test_a_store_whose_every_version_was_rejected_serves_nothing(store: ModelStore) -> None:
    publish(store, 1, False)
    with pytest.raises(NoModelError, match=r"every published version .* was rejected"):
        store.resolve()


def test_serving_version_is_the_pin_else_the_newest_not_rejected(store: ModelStore) -> None:
    publish(store, 1, None)
    publish(store, 2, True)
    publish(store, 3, False)
    assert serving_version(store) == 2
    write_pin(store, 1, "test")
    assert serving_version(store) == 1


def test_metadata_written_before_the_gate_and_the_feedback_fields_still_loads(store: ModelStore) -> None:
    content = json.loads(make_metadata(store.name, 1).model_dump_json())
    del content["gate"]
    del content["training"]["feedback"]
    del content["training"]["fine_tuned_from"]
    metadata = ModelMetadata.model_validate(content)
    assert metadata.gate is None and metadata.rejection is None
    assert metadata.training.feedback is None and metadata.training.fine_tuned_from is None
