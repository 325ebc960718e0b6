"""Opening the car's SQLite state files so that damage never stops the service.

A power cut in the middle of a write, a failing SD card or a stray copy can leave a
database that SQLite refuses ("file is not a database", "database disk image is
malformed"). Raising there would stop `run` at every start, and under systemd the
car would restart every few seconds and never read a plate again. Instead
:func:`open_state_db` sets the damaged file aside (renamed, never deleted: it may
hold undelivered hits and is evidence), copies every row it can still read into a
fresh file, and reports what it did in a :class:`Recovery` for the owner to raise in
status and the audit trail.

A disk that is full or failing is another matter: SQLite says so with
:class:`sqlite3.OperationalError` ("database or disk is full", "disk I/O error"),
which is passed on untouched, because nothing is wrong with the file and setting it
aside would only hide the hits in it.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edge.files import ensure_private, set_aside

log = logging.getLogger(__name__)

#: A stamp this far past the clock's "now" was written while the clock ran ahead
#: (see the state files' ``restamp_future``).
CLOCK_TOLERANCE_S = 300.0
#: Rows copied per statement while salvaging; a damaged page loses at most this many.
SALVAGE_BATCH = 64


@dataclass(frozen=True, slots=True)
class Recovery:
    """What happened to a damaged state file."""

    #: The damaged file's new name (kept beside the fresh one).
    set_aside_as: Path
    #: SQLite's complaint about the damaged file.
    error: str
    #: Rows copied into the fresh file, per table.
    rows_recovered: dict[str, int]
    #: True when some rows could not be read back.
    incomplete: bool

    def to_json(self) -> dict:
        return {
            "set_aside_as": str(self.set_aside_as),
            "error": self.error,
            "rows_recovered": dict(self.rows_recovered),
            "incomplete": self.incomplete,
        }


def is_disk_error(exc: BaseException) -> bool:
    """True for SQLite's "no room or no disk" errors, as opposed to a damaged file.
    (:class:`sqlite3.OperationalError` is also raised for a locked database or a
    missing table, which are neither; those are programming or concurrency errors.)"""
    if isinstance(exc, OSError):
        return True
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    text = str(exc).lower()
    return any(
        phrase in text
        for phrase in ("disk is full", "disk i/o error", "unable to open", "readonly database")
    )


@contextmanager
def unless_disk_refuses(what: str, *, logger: logging.Logger = log) -> Iterator[list]:
    """Run the block; a full or failing disk (:func:`is_disk_error`) is logged as
    "``what``: cannot ... now" and swallowed, anything else raised. The yielded list
    gets the swallowed exception, for callers that count or fall back."""
    refused: list[BaseException] = []
    try:
        yield refused
    except (sqlite3.Error, OSError) as exc:
        if not is_disk_error(exc):
            raise
        refused.append(exc)
        logger.error("%s now (%s); tried again later", what, exc)


def connect(path: Path, schema: str, *, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """A connection to ``path`` (made 0600 first) in WAL mode with secure delete, the
    schema applied, and the file checked: :class:`sqlite3.DatabaseError` (not its
    OperationalError subclass) when the file is damaged."""
    ensure_private(path)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        # Deleted rows are overwritten, not left readable in free pages (privacy).
        db.execute("PRAGMA secure_delete=ON")
        # quick_check reads every page once (milliseconds for the car's small files):
        # damage found now is recovered now, not met later in the middle of a hit.
        (verdict,) = db.execute("PRAGMA quick_check(1)").fetchone()
        if verdict != "ok":
            raise sqlite3.DatabaseError(f"integrity check: {verdict}")
        db.executescript(schema)
    except BaseException:
        db.close()
        raise
    return db


def open_state_db(
    path: Path | str,
    schema: str,
    tables: tuple[str, ...],
    *,
    synchronous: str = "NORMAL",
) -> tuple[sqlite3.Connection, Recovery | None]:
    """Open (or create) a state database; a damaged one is set aside and the rows of
    ``tables`` that can still be read are copied into a fresh file (same column
    names). Returns the connection and the :class:`Recovery`, or None when the file
    was sound. Disk errors propagate (see :func:`is_disk_error`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return connect(path, schema, synchronous=synchronous), None
    except sqlite3.DatabaseError as exc:
        if is_disk_error(exc):
            raise
        error = str(exc)
    damaged = set_aside(path)
    log.error(
        "%s is damaged (%s): set aside as %s; a fresh one is started and what can be "
        "read is copied into it",
        path,
        error,
        damaged.name,
    )
    db = connect(path, schema, synchronous=synchronous)
    rows, incomplete = _salvage(damaged, db, tables)
    recovery = Recovery(damaged, error, rows, incomplete)
    log.error(
        "%s: recovered %s from the damaged file%s",
        path,
        ", ".join(f"{n} {table} row(s)" for table, n in rows.items()) or "nothing",
        " (some rows were unreadable)" if incomplete else "",
    )
    return db, recovery


def _salvage(
    damaged: Path, db: sqlite3.Connection, tables: tuple[str, ...]
) -> tuple[dict[str, int], bool]:
    """Copy the readable rows of ``tables`` from ``damaged`` into ``db``, in rowid
    batches so that one bad page costs its batch, not the table."""
    rows = dict.fromkeys(tables, 0)
    incomplete = False
    try:
        # Read-only and immutable: never touch (or "repair") the kept evidence.
        source = sqlite3.connect(f"file:{damaged}?mode=ro&immutable=1", uri=True)
    except sqlite3.Error:
        return rows, True
    try:
        for table in tables:
            try:
                columns = [r[1] for r in source.execute(f"PRAGMA table_info({table})")]
                (top,) = source.execute(f"SELECT MAX(rowid) FROM {table}").fetchone()
            except sqlite3.Error:
                incomplete = True
                continue
            wanted = [c for c in columns if c in _columns(db, table)]
            if not wanted or top is None:
                continue
            names = ", ".join(wanted)
            marks = ", ".join("?" * len(wanted))
            for start in range(0, top + 1, SALVAGE_BATCH):
                try:
                    batch = source.execute(
                        f"SELECT {names} FROM {table} WHERE rowid >= ? AND rowid < ?",
                        (start, start + SALVAGE_BATCH),
                    ).fetchall()
                except sqlite3.Error:
                    incomplete = True
                    continue
                for row in batch:
                    cursor = db.execute(
                        f"INSERT OR IGNORE INTO {table} ({names}) VALUES ({marks})", row
                    )
                    rows[table] += cursor.rowcount
    except sqlite3.Error:
        incomplete = True
    finally:
        source.close()
    return rows, incomplete


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
