"""Prediction ids: 32 hex digits, a millisecond timestamp (12) then 80 bits (20), like a ULID.

Sortable by time: new rows land at the right edge of the primary key's B-tree (no page splits all
over it), pruning by row count is a range of the key, and an id tells its own age, so feedback on
an answer not yet flushed can wait for it rather than answer 404. Within a millisecond a process
counts up from a random start (ULID's monotonic rule), so its ids keep their order there too;
other processes start elsewhere in the 80 bits.
"""

from __future__ import annotations

import os
import random
import threading
import time
from datetime import UTC, datetime

_TIME_DIGITS = 12
_RANDOM_BITS = 80
_lock = threading.Lock()
_last = (0, 0)  # the last id's millisecond and counter
# Seeded from the OS once per process (and again in a forked child): ids need to be unique, not
# secret, and a system call per id would cost more than the rest of the id.
_random = random.Random(os.urandom(16))


def _forked() -> None:
    """A forked child starts its own sequence: it must not count on from its parent's."""
    global _last
    _random.seed(os.urandom(16))
    _last = (0, 0)


os.register_at_fork(after_in_child=_forked)


def new_ids(count: int) -> list[str]:
    """`count` fresh ids, increasing; one clock read however many images."""
    global _last
    with _lock:
        now = time.time_ns() // 1_000_000
        last_ms, last_counter = _last
        if now <= last_ms and last_counter + count < 1 << _RANDOM_BITS:
            now, start = last_ms, last_counter + 1
        else:
            # Half the space: room to count up within the millisecond.
            start = _random.getrandbits(_RANDOM_BITS - 1)
        _last = (now, start + count - 1)
    prefix = f"{now:012x}"
    return [f"{prefix}{counter:020x}" for counter in range(start, start + count)]


def issued_ms(prediction_id: str) -> int:
    """When the id was given out, in milliseconds since the epoch (any 12 hex digits: an id a
    client made up may claim any time)."""
    return int(prediction_id[:_TIME_DIGITS], 16)


def issued_at(prediction_id: str) -> datetime:
    """When an id this service gave out was issued (to the millisecond)."""
    return datetime.fromtimestamp(issued_ms(prediction_id) / 1000, UTC)
