"""Waiting for a condition another thread brings about (a broker's acknowledgement,
a subscription): one polling loop for every owner that offers a ``wait_*`` method."""

from __future__ import annotations

import time
from collections.abc import Callable


def poll_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Call ``predicate`` every ``interval`` seconds until it is true (True) or
    ``timeout`` seconds have passed (False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True
