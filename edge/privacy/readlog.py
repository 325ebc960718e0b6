"""The local log of non-hit reads, kept only when ``[privacy] keep_reads_seconds`` > 0.

By default a read that matches nothing is forgotten as soon as it is checked. An
operator may choose to keep reads in the car for a stated time (for example to
answer "was this plate seen today?" when a list is updated); they are then stored
here, in the state directory, and deleted by retention (:mod:`edge.privacy.retention`) once
older than that. Deleted rows are overwritten (``secure_delete``) and the write-ahead
log is truncated after each purge, so the plate text is gone from the files too.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from edge.sqlitedb import CLOCK_TOLERANCE_S, Recovery, open_state_db
from edge.timefmt import iso_utc
from edge.types import PlateRead

log = logging.getLogger("edge.readlog")

READLOG_FILE = "reads.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS reads (
    event_id   TEXT PRIMARY KEY,
    camera     TEXT NOT NULL,
    plate      TEXT NOT NULL,
    confidence REAL NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen  TEXT NOT NULL,
    stored_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS reads_stored ON reads (stored_at);
CREATE INDEX IF NOT EXISTS reads_plate ON reads (plate);
"""


class ReadLog:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._lock = threading.Lock()
        # A damaged log is set aside and its readable rows kept (the reads in it are
        # still purged on time); see edge.sqlitedb.
        db, recovery = open_state_db(self.path, SCHEMA, ("reads",), synchronous="FULL")
        self._db = db
        self.recovery: Recovery | None = recovery

    def add(self, read: PlateRead, *, now: float | None = None) -> None:
        stored_at = time.time() if now is None else now
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO reads VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    read.event_id,
                    read.camera,
                    read.plate,
                    read.confidence,
                    iso_utc(read.first_seen),
                    iso_utc(read.last_seen),
                    stored_at,
                ),
            )

    def find(self, plate: str) -> list[dict]:
        with self._lock:
            rows = self._db.execute(
                "SELECT event_id, camera, plate, confidence, first_seen, last_seen FROM reads "
                "WHERE plate = ? ORDER BY first_seen",
                (plate,),
            ).fetchall()
        keys = ("event_id", "camera", "plate", "confidence", "first_seen", "last_seen")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM reads").fetchone()[0]

    def purge(self, older_than: float) -> int:
        """Delete reads stored before ``older_than`` (Unix time), for good."""
        with self._lock:
            removed = self._db.execute(
                "DELETE FROM reads WHERE stored_at < ?", (older_than,)
            ).rowcount
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return removed

    def restamp_future(self, now: float | None = None) -> int:
        """Reads stored while the clock ran ahead are re-stamped ``now``, so the clock
        coming back does not keep them past ``keep_reads_seconds`` (see
        :meth:`edge.delivery.outbox.Outbox.restamp_future`)."""
        now = time.time() if now is None else now
        with self._lock:
            moved = self._db.execute(
                "UPDATE reads SET stored_at = ? WHERE stored_at > ?", (now, now + CLOCK_TOLERANCE_S)
            ).rowcount
        if moved:
            log.warning("clock: %d logged read(s) were stamped in the future; re-stamped", moved)
        return moved

    def vacuum(self) -> None:
        with self._lock:
            self._db.execute("VACUUM")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ReadLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
