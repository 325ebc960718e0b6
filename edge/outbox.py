"""The outbox: messages for HQ (hits, audit records) kept on disk until the broker
has acknowledged them.

A message is committed here before anything else happens to it, so it survives the
broker being away for hours, ``kill -9`` and power loss; it is marked delivered only
on the broker's PUBACK. The cost is that a message whose acknowledgement was lost is
sent again: delivery is at least once, and HQ deduplicates by ``event_id``.

SQLite in WAL mode with ``synchronous=FULL``: a commit is on disk when :meth:`add`
returns (hits are a few a minute at most, so the fsync is cheap). The file's owner
is this object; every method is safe to call from any thread.

The outbox is never trimmed to make room: past ``alarm_pending`` messages or
``alarm_age`` it raises an alarm (in status) and keeps everything.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     TEXT NOT NULL UNIQUE,
    kind         TEXT NOT NULL,
    topic        TEXT NOT NULL,
    payload      BLOB NOT NULL,
    created_at   REAL NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    delivered_at REAL
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (seq) WHERE delivered_at IS NULL;
CREATE INDEX IF NOT EXISTS outbox_delivered ON outbox (delivered_at)
    WHERE delivered_at IS NOT NULL;
"""


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    seq: int
    event_id: str
    kind: str
    topic: str
    payload: bytes
    created_at: float
    attempts: int


@dataclass(frozen=True, slots=True)
class OutboxStats:
    pending: int
    oldest_pending_age_s: float | None
    delivered: int
    #: Why the outbox needs attention (too many or too old undelivered), or None.
    alarm: str | None

    def to_json(self) -> dict:
        age = self.oldest_pending_age_s
        return {
            "pending": self.pending,
            "oldest_pending_age_s": None if age is None else round(age, 1),
            "alarm": self.alarm,
        }


class Outbox:
    """Durable queue of messages for the broker, oldest first."""

    def __init__(
        self,
        path: Path | str,
        *,
        alarm_pending: int = 10000,
        alarm_age_s: float = 24 * 3600.0,
    ):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.alarm_pending = alarm_pending
        self.alarm_age_s = alarm_age_s
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=10.0
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        # Deleted rows are overwritten, not left readable in free pages (privacy).
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def add(self, kind: str, event_id: str, topic: str, payload: bytes) -> bool:
        """Commit a message; False (and nothing changes) if ``event_id`` is already in."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO outbox (event_id, kind, topic, payload, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (event_id, kind, topic, payload, time.time()),
            )
            return cursor.rowcount == 1

    def pending(self, limit: int = 100, *, exclude: set[int] | frozenset = frozenset()):
        """Undelivered messages, oldest first, skipping the ``seq`` numbers in
        ``exclude`` (those already handed to the MQTT client)."""
        rows: list[OutboxMessage] = []
        after = 0
        with self._lock:
            while len(rows) < limit:
                batch = self._db.execute(
                    "SELECT seq, event_id, kind, topic, payload, created_at, attempts "
                    "FROM outbox WHERE delivered_at IS NULL AND seq > ? ORDER BY seq LIMIT ?",
                    (after, limit),
                ).fetchall()
                if not batch:
                    break
                after = batch[-1][0]
                rows.extend(OutboxMessage(*r) for r in batch if r[0] not in exclude)
        return rows[:limit]

    def mark_sent(self, seq: int) -> None:
        """Count an attempt (for status and logs; it changes no order)."""
        with self._lock:
            self._db.execute("UPDATE outbox SET attempts = attempts + 1 WHERE seq = ?", (seq,))

    def mark_delivered(self, seq: int) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET delivered_at = ? WHERE seq = ? AND delivered_at IS NULL",
                (time.time(), seq),
            )

    def get(self, event_id: str) -> OutboxMessage | None:
        with self._lock:
            row = self._db.execute(
                "SELECT seq, event_id, kind, topic, payload, created_at, attempts "
                "FROM outbox WHERE event_id = ?",
                (event_id,),
            ).fetchone()
        return OutboxMessage(*row) if row else None

    def is_delivered(self, event_id: str) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT delivered_at FROM outbox WHERE event_id = ?", (event_id,)
            ).fetchone()
        return bool(row and row[0] is not None)

    def purge_delivered(self, older_than: float, *, kinds: Sequence[str] | None = None) -> int:
        """Delete messages (of ``kinds``, or all) delivered before ``older_than`` (Unix
        time); never an undelivered one. Returns how many went."""
        sql = "DELETE FROM outbox WHERE delivered_at IS NOT NULL AND delivered_at < ?"
        params: list = [older_than]
        if kinds is not None:
            sql += f" AND kind IN ({','.join('?' * len(kinds))})"
            params += list(kinds)
        with self._lock:
            return self._db.execute(sql, params).rowcount

    def compact(self, *, vacuum: bool = False) -> None:
        """Make deletions final on disk: fold the write-ahead log into the database and
        truncate it (deleted rows' old copies live on in the WAL until then), and with
        ``vacuum`` rebuild the file so it also shrinks."""
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            if vacuum:
                self._db.execute("VACUUM")
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def stats(self, now: float | None = None) -> OutboxStats:
        now = time.time() if now is None else now
        with self._lock:
            pending, oldest = self._db.execute(
                "SELECT COUNT(*), MIN(created_at) FROM outbox WHERE delivered_at IS NULL"
            ).fetchone()
            (delivered,) = self._db.execute(
                "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NOT NULL"
            ).fetchone()
        age = None if oldest is None else max(0.0, now - oldest)
        alarm = None
        if pending >= self.alarm_pending:
            alarm = f"{pending} messages undelivered (alarm at {self.alarm_pending})"
        elif age is not None and age >= self.alarm_age_s:
            alarm = f"oldest undelivered message is {age / 3600:.1f} h old"
        return OutboxStats(pending, age, delivered, alarm)
