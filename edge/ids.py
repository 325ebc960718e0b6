"""Event ids: UUID version 7 (RFC 9562), unique and ordered by creation time.

HQ deduplicates hits by ``event_id`` and sorts them by it, so ids made in one process
must sort in the order they were made, even within one millisecond (the 12-bit
``rand_a`` field holds a counter for that) and when the clock steps back (the last
timestamp is reused until the clock passes it).
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def new_event_id() -> str:
    """A new UUIDv7 as its canonical string."""
    global _last_ms, _counter
    with _lock:
        now_ms = time.time_ns() // 1_000_000
        if now_ms > _last_ms:
            _last_ms = now_ms
            _counter = int.from_bytes(os.urandom(2)) & 0x3FF  # leave room to count up
        else:
            _counter += 1
            if _counter > 0xFFF:  # 4096 ids in one millisecond: borrow the next one
                _last_ms += 1
                _counter = 0
        ms, counter = _last_ms, _counter
    rand_b = int.from_bytes(os.urandom(8)) & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand_b
    return str(uuid.UUID(int=value))


def event_time_ms(event_id: str) -> int:
    """The creation time (Unix milliseconds) in a UUIDv7 event id."""
    return uuid.UUID(event_id).int >> 80
