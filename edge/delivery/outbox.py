"""The outbox: messages for HQ (hits, audit records) kept on disk until the broker
has acknowledged them.

A message is committed here before anything else happens to it, so it survives the
broker being away for hours, ``kill -9`` and power loss; it is marked delivered only
on the broker's PUBACK. The cost is that a message whose acknowledgement was lost is
sent again: delivery is at least once, and HQ deduplicates by ``event_id``.

SQLite in WAL mode with ``synchronous=FULL``: a commit is on disk when :meth:`add`
returns (hits are a few a minute at most, so the fsync is cheap). The file's owner
is this object; every method is safe to call from any thread.

When the disk refuses (full, failing, or the file cannot even be opened) a message
is not lost and not refused: it is held in memory, sent to HQ from there like any
other, and written to the file as soon as the disk takes it again (every call tries,
oldest first, so the file keeps the order). :attr:`OutboxStats.unsaved` and the
alarm say so meanwhile. Only a process that dies while the disk is still full loses
what it held.

A damaged file is set aside and what can be read from it is recovered
(:mod:`edge.sqlitedb`); :attr:`Outbox.recovery` says what happened.

The outbox is never trimmed to make room: past ``alarm_pending`` messages or
``alarm_age`` it raises an alarm (in status) and keeps everything.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from edge.sqlitedb import CLOCK_TOLERANCE_S, Recovery, is_disk_error, open_state_db

log = logging.getLogger("edge.outbox")

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
    #: Position in the queue; negative for a message held in memory (not yet on disk).
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
    #: Why the outbox needs attention (too many or too old undelivered, or messages
    #: the disk refused), or None.
    alarm: str | None
    #: Messages held in memory because the disk refused them.
    unsaved: int = 0

    def to_json(self) -> dict:
        age = self.oldest_pending_age_s
        return {
            "pending": self.pending,
            "oldest_pending_age_s": None if age is None else round(age, 1),
            "alarm": self.alarm,
            "unsaved": self.unsaved,
        }


@dataclass(slots=True)
class _Unsaved:
    """A message the disk refused, waiting in memory to be written (its ``seq`` is
    negative)."""

    message: OutboxMessage
    delivered_at: float | None = None


@dataclass(slots=True)
class _DiskTrouble:
    """The disk's last refusal, for the alarm and for logging once per episode."""

    error: str | None = None
    since: float | None = None
    held_total: int = field(default=0)


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
        self.alarm_pending = alarm_pending
        self.alarm_age_s = alarm_age_s
        #: Set when the file was damaged at open: what was set aside and recovered.
        self.recovery: Recovery | None = None
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._unsaved: dict[str, _Unsaved] = {}
        self._next_memory_seq = -1
        self._trouble = _DiskTrouble()
        self._last_counts = (0, None, 0)  # pending, oldest created_at, delivered
        with self._lock:
            try:
                self._connect()
            except sqlite3.Error as exc:
                if not is_disk_error(exc):
                    raise
                self._refused(exc)

    def _connect(self) -> sqlite3.Connection:
        """The connection, opened now if the disk refused it until now."""
        if self._db is None:
            self._db, recovery = open_state_db(self.path, SCHEMA, ("outbox",), synchronous="FULL")
            if recovery is not None:
                self.recovery = recovery
        return self._db

    def close(self) -> None:
        with self._lock:
            self._save_unsaved()
            if self._unsaved:
                log.critical(
                    "outbox: %d message(s) could not be written to %s (%s) and are lost "
                    "with this process: %s",
                    len(self._unsaved),
                    self.path,
                    self._trouble.error,
                    ", ".join(self._unsaved),
                )
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ----------------------------------------------------------------- the disk

    def _refused(self, exc: BaseException) -> None:
        """The disk refused a write (the lock is held)."""
        first = self._trouble.error is None
        self._trouble.error = str(exc)
        if first:
            self._trouble.since = time.time()
            log.error(
                "outbox: cannot write %s (%s): messages are held in memory, still sent to "
                "HQ, and written as soon as the disk takes them",
                self.path,
                exc,
            )

    def _save_unsaved(self) -> bool:
        """Write the messages held in memory, oldest first; True when none is left
        (the lock is held)."""
        if not self._unsaved and self._trouble.error is None:
            return True
        try:
            db = self._connect()
            while self._unsaved:
                event_id, held = next(iter(self._unsaved.items()))
                m = held.message
                db.execute(
                    "INSERT OR IGNORE INTO outbox (event_id, kind, topic, payload, "
                    "created_at, attempts, delivered_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        m.event_id,
                        m.kind,
                        m.topic,
                        m.payload,
                        m.created_at,
                        m.attempts,
                        held.delivered_at,
                    ),
                )
                del self._unsaved[event_id]
        except sqlite3.Error as exc:
            if not is_disk_error(exc):
                raise
            self._refused(exc)
            return False
        if self._trouble.error is not None:
            log.warning(
                "outbox: %s is written again; %d message(s) held in memory meanwhile are "
                "now on disk",
                self.path,
                self._trouble.held_total,
            )
            self._trouble = _DiskTrouble()
        return True

    def save_unsaved(self) -> int:
        """Try again to write what the disk refused; returns how many are still held."""
        with self._lock:
            self._save_unsaved()
            return len(self._unsaved)

    @property
    def unsaved(self) -> int:
        """Messages held in memory because the disk refused them."""
        with self._lock:
            return len(self._unsaved)

    # ----------------------------------------------------------------- queue

    def add(
        self, kind: str, event_id: str, topic: str, payload: bytes, *, now: float | None = None
    ) -> bool:
        """Commit a message; False (and nothing changes) if ``event_id`` is already in.
        When the disk refuses, the message is held in memory instead (see the module)."""
        created_at = time.time() if now is None else now
        with self._lock:
            if event_id in self._unsaved:
                return False
            if self._save_unsaved():
                try:
                    cursor = self._db.execute(
                        "INSERT OR IGNORE INTO outbox (event_id, kind, topic, payload, "
                        "created_at) VALUES (?, ?, ?, ?, ?)",
                        (event_id, kind, topic, payload, created_at),
                    )
                    return cursor.rowcount == 1
                except sqlite3.Error as exc:
                    if not is_disk_error(exc):
                        raise
                    self._refused(exc)
            elif self._db is not None and self._known(event_id):
                return False
            self._unsaved[event_id] = _Unsaved(
                OutboxMessage(self._next_memory_seq, event_id, kind, topic, payload, created_at, 0)
            )
            self._next_memory_seq -= 1
            self._trouble.held_total += 1
            return True

    def _known(self, event_id: str) -> bool:
        try:
            return (
                self._db.execute("SELECT 1 FROM outbox WHERE event_id = ?", (event_id,)).fetchone()
                is not None
            )
        except sqlite3.Error:
            return False

    def pending(self, limit: int = 100, *, exclude: set[int] | frozenset = frozenset()):
        """Undelivered messages, oldest first, skipping the ``seq`` numbers in
        ``exclude`` (those already handed to the MQTT client). Messages held in memory
        come after those on disk (they are newer)."""
        rows: list[OutboxMessage] = []
        after = 0
        with self._lock:
            self._save_unsaved()
            if self._db is not None:
                while len(rows) < limit:
                    batch = self._db.execute(
                        "SELECT seq, event_id, kind, topic, payload, created_at, attempts "
                        "FROM outbox WHERE delivered_at IS NULL AND seq > ? "
                        "ORDER BY seq LIMIT ?",
                        (after, limit),
                    ).fetchall()
                    if not batch:
                        break
                    after = batch[-1][0]
                    rows.extend(OutboxMessage(*r) for r in batch if r[0] not in exclude)
            rows.extend(
                held.message
                for held in self._unsaved.values()
                if held.delivered_at is None and held.message.seq not in exclude
            )
        return rows[:limit]

    def _held(self, seq: int) -> _Unsaved | None:
        return next((h for h in self._unsaved.values() if h.message.seq == seq), None)

    def mark_sent(self, seq: int) -> None:
        """Count an attempt (for status and logs; it changes no order)."""
        with self._lock:
            if seq < 0:
                if held := self._held(seq):
                    held.message = replace(held.message, attempts=held.message.attempts + 1)
                return
            self._write("UPDATE outbox SET attempts = attempts + 1 WHERE seq = ?", (seq,))

    def mark_delivered(self, seq: int, *, now: float | None = None) -> None:
        delivered_at = time.time() if now is None else now
        with self._lock:
            if seq < 0:
                if held := self._held(seq):
                    held.delivered_at = held.delivered_at or delivered_at
                self._save_unsaved()
                return
            self._write(
                "UPDATE outbox SET delivered_at = ? WHERE seq = ? AND delivered_at IS NULL",
                (delivered_at, seq),
            )

    def _write(self, sql: str, params: tuple) -> None:
        """An update of a row on disk; a refusal raises (the caller retries: an
        acknowledgement not recorded only means the message is sent again)."""
        try:
            self._connect().execute(sql, params)
        except sqlite3.Error as exc:
            if is_disk_error(exc):
                self._refused(exc)
            raise

    def get(self, event_id: str) -> OutboxMessage | None:
        with self._lock:
            if held := self._unsaved.get(event_id):
                return held.message
            row = (
                self._connect()
                .execute(
                    "SELECT seq, event_id, kind, topic, payload, created_at, attempts "
                    "FROM outbox WHERE event_id = ?",
                    (event_id,),
                )
                .fetchone()
            )
        return OutboxMessage(*row) if row else None

    def on_topic(self, topic: str, limit: int | None = None) -> list[OutboxMessage]:
        """Messages kept on ``topic``, delivered or not, newest first (at most
        ``limit``): the in-car console's hits and decisions. Those held in memory come
        first (they are the newest)."""
        with self._lock:
            held = [h.message for h in reversed(self._unsaved.values()) if h.message.topic == topic]
            rows: list[OutboxMessage] = []
            if self._db is not None:
                sql = (
                    "SELECT seq, event_id, kind, topic, payload, created_at, attempts "
                    "FROM outbox WHERE topic = ? ORDER BY seq DESC"
                )
                params: tuple = (topic,)
                if limit is not None:
                    sql += " LIMIT ?"
                    params = (topic, limit)
                try:
                    rows = [OutboxMessage(*r) for r in self._db.execute(sql, params)]
                except sqlite3.Error as exc:
                    if not is_disk_error(exc):
                        raise
        out = held + rows
        return out if limit is None else out[:limit]

    def is_delivered(self, event_id: str) -> bool:
        with self._lock:
            if held := self._unsaved.get(event_id):
                return held.delivered_at is not None
            row = (
                self._connect()
                .execute("SELECT delivered_at FROM outbox WHERE event_id = ?", (event_id,))
                .fetchone()
            )
        return bool(row and row[0] is not None)

    # ----------------------------------------------------------------- retention

    def purge_delivered(self, older_than: float, *, kinds: Sequence[str] | None = None) -> int:
        """Delete messages (of ``kinds``, or all) delivered before ``older_than`` (Unix
        time); never an undelivered one. Returns how many went."""
        sql = "DELETE FROM outbox WHERE delivered_at IS NOT NULL AND delivered_at < ?"
        params: list = [older_than]
        if kinds is not None:
            sql += f" AND kind IN ({','.join('?' * len(kinds))})"
            params += list(kinds)
        with self._lock:
            return self._connect().execute(sql, params).rowcount

    def purge_kind(self, kind: str) -> int:
        """Delete every message of ``kind``, delivered or not: for a kind that must no
        longer leave the car (non-hit reads queued by an older version)."""
        with self._lock:
            for event_id in [e for e, held in self._unsaved.items() if held.message.kind == kind]:
                del self._unsaved[event_id]
            return self._connect().execute("DELETE FROM outbox WHERE kind = ?", (kind,)).rowcount

    def restamp_future(self, now: float | None = None) -> int:
        """Stamps later than ``now`` (beyond :data:`CLOCK_TOLERANCE_S`) were written
        while the clock ran ahead; left alone, retention would keep those hits until
        the clock caught up with them (400 days after a 400-day jump). They are
        re-stamped ``now``, so retention counts from the moment the clock is right
        again. Returns how many rows were re-stamped."""
        now = time.time() if now is None else now
        limit = now + CLOCK_TOLERANCE_S
        with self._lock:
            db = self._connect()
            delivered = db.execute(
                "UPDATE outbox SET delivered_at = ? WHERE delivered_at > ?", (now, limit)
            ).rowcount
            created = db.execute(
                "UPDATE outbox SET created_at = ? WHERE created_at > ?", (now, limit)
            ).rowcount
        if delivered or created:
            log.warning(
                "clock: %d outbox stamp(s) lay in the future (the clock ran ahead); "
                "re-stamped to now so retention still applies",
                delivered + created,
            )
        return max(delivered, created)

    def compact(self, *, vacuum: bool = False) -> None:
        """Make deletions final on disk: fold the write-ahead log into the database and
        truncate it (deleted rows' old copies live on in the WAL until then), and with
        ``vacuum`` rebuild the file so it also shrinks."""
        with self._lock:
            db = self._connect()
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            if vacuum:
                db.execute("VACUUM")
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def stats(self, now: float | None = None) -> OutboxStats:
        """Counts for status; when the file cannot be read, the last counts read
        (plus what is held in memory) and the alarm says why."""
        now = time.time() if now is None else now
        with self._lock:
            self._save_unsaved()
            try:
                db = self._connect()
                pending, oldest = db.execute(
                    "SELECT COUNT(*), MIN(created_at) FROM outbox WHERE delivered_at IS NULL"
                ).fetchone()
                (delivered,) = db.execute(
                    "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NOT NULL"
                ).fetchone()
                self._last_counts = (pending, oldest, delivered)
            except sqlite3.Error as exc:
                if not is_disk_error(exc):
                    raise
                self._refused(exc)
                pending, oldest, delivered = self._last_counts
            held = [h for h in self._unsaved.values() if h.delivered_at is None]
            unsaved, error = len(self._unsaved), self._trouble.error
        pending += len(held)
        if held:
            first = min(h.message.created_at for h in held)
            oldest = first if oldest is None else min(oldest, first)
        age = None if oldest is None else max(0.0, now - oldest)
        alarm = None
        if error is not None:
            alarm = (
                f"cannot write the outbox ({error}): {unsaved} message(s) held in memory "
                "until the disk takes them"
            )
        elif pending >= self.alarm_pending:
            alarm = f"{pending} messages undelivered (alarm at {self.alarm_pending})"
        elif age is not None and age >= self.alarm_age_s:
            alarm = f"oldest undelivered message is {age / 3600:.1f} h old"
        return OutboxStats(pending, age, delivered, alarm, unsaved)
