from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.records.ids import issued_at, new_ids


def test_ids_are_32_hex_digits_unique_and_increasing() -> None:
    ids = [prediction_id for _ in range(200) for prediction_id in new_ids(50)]
    assert all(len(prediction_id) == 32 and int(prediction_id, 16) >= 0 for prediction_id in ids)
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)


def test_an_id_tells_when_it_was_issued() -> None:
    before = datetime.now(UTC)
    issued = issued_at(new_ids(1)[0])
    assert before - timedelta(milliseconds=1) <= issued <= datetime.now(UTC)
