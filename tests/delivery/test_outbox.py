"""The outbox: durable, ordered, delivered only on acknowledgement, never trimmed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from edge.delivery.outbox import Outbox


def fill(outbox: Outbox, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        assert outbox.add("hit", f"event-{i}", "lpr/v1/car/hit", f"payload {i}".encode())


def test_messages_come_out_oldest_first_and_leave_only_when_delivered(tmp_path: Path):
    with Outbox(tmp_path / "o.sqlite") as outbox:
        fill(outbox, 5)
        pending = outbox.pending(10)
        assert [m.event_id for m in pending] == [f"event-{i}" for i in range(5)]
        outbox.mark_sent(pending[0].seq)
        outbox.mark_delivered(pending[0].seq)
        outbox.mark_delivered(pending[2].seq)
        assert [m.event_id for m in outbox.pending(10)] == ["event-1", "event-3", "event-4"]
        assert outbox.is_delivered("event-0") and not outbox.is_delivered("event-1")
        assert outbox.get("event-0").attempts == 1
        stats = outbox.stats()
        assert (stats.pending, stats.delivered, stats.alarm) == (3, 2, None)


def test_a_duplicate_event_id_is_not_added_twice(tmp_path: Path):
    with Outbox(tmp_path / "o.sqlite") as outbox:
        assert outbox.add("hit", "e", "t", b"first")
        assert not outbox.add("hit", "e", "t", b"second")
        assert [m.payload for m in outbox.pending()] == [b"first"]


def test_pending_skips_messages_already_in_flight(tmp_path: Path):
    with Outbox(tmp_path / "o.sqlite") as outbox:
        fill(outbox, 6)
        first = outbox.pending(3)
        busy = {m.seq for m in first}
        rest = outbox.pending(3, exclude=busy)
        assert [m.event_id for m in rest] == ["event-3", "event-4", "event-5"]


def test_alarm_when_too_many_or_too_old_but_nothing_is_dropped(tmp_path: Path):
    with Outbox(tmp_path / "o.sqlite", alarm_pending=3, alarm_age_s=60) as outbox:
        fill(outbox, 2)
        assert outbox.stats().alarm is None
        assert "h old" in outbox.stats(now=time.time() + 120).alarm
        fill(outbox, 5, start=2)
        stats = outbox.stats()
        assert stats.pending == 7 and "7 messages undelivered" in stats.alarm


def test_purge_deletes_only_delivered_messages(tmp_path: Path):
    path = tmp_path / "o.sqlite"
    with Outbox(path) as outbox:
        outbox.add("hit", "gone", "t", b"PLATE-GONE-1")
        outbox.add("hit", "kept", "t", b"PLATE-KEPT-2")
        outbox.mark_delivered(outbox.get("gone").seq)
        assert outbox.purge_delivered(older_than=time.time() + 1) == 1
        assert outbox.get("gone") is None and outbox.get("kept") is not None
        assert outbox.purge_delivered(older_than=time.time() + 1) == 0


def test_a_hit_committed_survives_kill_9(tmp_path: Path):
    """The writer process is killed right after add() returned: the row is there."""
    path = tmp_path / "o.sqlite"
    script = (
        "import sys, time\n"
        "from edge.delivery.outbox import Outbox\n"
        f"o = Outbox({str(path)!r})\n"
        "for i in range(20):\n"
        "    o.add('hit', f'e{i}', 't', b'x' * 1000)\n"
        "print('committed', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "committed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
    with Outbox(path) as outbox:
        assert [m.event_id for m in outbox.pending(100)] == [f"e{i}" for i in range(20)]
