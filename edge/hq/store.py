"""HQ's database of hits (SQLite): hits, withdrawals, vehicle status, audit records
and rejects.

A message that arrives twice is recognised by its ``event_id`` and stored once. Only
an identical message from the same vehicle is such a duplicate: a hit that reuses an
``event_id`` with other content (another vehicle's, or changed) is stored all the
same, flagged as a conflict (``hits.conflict_of``), logged, counted and printed as a
conflict, because dropping it could lose a real hit to whoever sent that id first.

A vehicle takes a hit back with an ``lpr.withdrawal/1`` message on its hit topic (the
hit's read was a misread, corrected in the car). It is stored in ``withdrawals`` and
marks the hit (``hits.withdrawn_by``), whichever of the two arrives first; one that
names no hit of its vehicle is stored all the same and flagged
(``withdrawals.hit_missing``), since the hit may come later or have been lost. A hit
from a corrected read carries ``corrects_event_id`` and is stored as any hit.

The database is created owner-only whatever the umask; one that SQLite says is not a
database (or is malformed) is set aside under a new name, never deleted, and a fresh
one is started, so that HQ does not stop at every start.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from edge.files import ensure_private, set_aside
from edge.hq.console import log
from edge.hq.validate import REASON_CHARS
from edge.platetext import distance, neighbourhood, normalize
from edge.timefmt import now_iso

#: Bytes of a rejected payload kept in ``rejects`` (enough to see what it was).
REJECT_EXCERPT_BYTES = 512
#: Rows kept in ``rejects``: the oldest go first, so a misbehaving client cannot
#: fill HQ's disk.
MAX_REJECT_ROWS = 10_000

#: The database layout's version (``PRAGMA user_version``): 0 is the first release's,
#: whose ``hits`` had ``event_id`` as its primary key; 1 keys hits by ``id`` and adds
#: ``conflict_of``; 2 adds ``hits.withdrawn_by`` and the ``withdrawals`` table (the
#: ``hq_audit`` table of investigators' searches came later in version 2's life, added
#: at open when missing); 3 adds ``case_holds`` (hits kept for a case past their
#: retention), the ``received_at`` indexes retention deletes by, and gives ``hits`` the
#: plate and list indexes PostgreSQL has (``plate, observed_at`` and ``list,
#: observed_at``); 4 adds ``decisions`` (officers' verdicts on hits, ``lpr.decision/1``).
#: Each version matches :data:`edge.hq.pgstore.MIGRATIONS` of the same number; the next
#: is 6 (PostgreSQL's 5 adds only functions, its one-round-trip hit write: nothing to
#: match here).
SCHEMA_VERSION = 4

#: Hits, one row per distinct message. ``conflict_of`` is NULL for the first hit
#: stored with its ``event_id`` and that hit's ``id`` for any later one with other
#: content (or from another vehicle).
HITS_TABLE = """
CREATE TABLE IF NOT EXISTS hits (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    TEXT NOT NULL,
    vehicle_id  TEXT NOT NULL,
    camera      TEXT NOT NULL,
    plate       TEXT NOT NULL,
    observed_at TEXT NOT NULL,
    received_at TEXT NOT NULL,
    "list"      TEXT NOT NULL,
    priority    INTEGER NOT NULL,
    "match"     TEXT NOT NULL,
    covert      INTEGER NOT NULL,
    payload     TEXT NOT NULL,
    conflict_of INTEGER REFERENCES hits (id),
    withdrawn_by TEXT
);
"""

#: Version 1 to 2: hits can be withdrawn (``withdrawn_by``: the withdrawal's event id).
MIGRATE_HITS_1_TO_2 = """
ALTER TABLE hits ADD COLUMN withdrawn_by TEXT;
"""

#: Version 0 to 1: ``hits`` rebuilt with the same rows (SQLite cannot change a primary
#: key in place); its indexes are dropped here and made again on the new table.
MIGRATE_HITS_0_TO_1 = (
    """
ALTER TABLE hits RENAME TO hits_version_0;
DROP INDEX IF EXISTS hits_plate;
DROP INDEX IF EXISTS hits_observed;
DROP INDEX IF EXISTS hits_vehicle;
"""
    + HITS_TABLE
    + """
INSERT INTO hits (event_id, vehicle_id, camera, plate, observed_at, received_at, "list",
                  priority, "match", covert, payload)
    SELECT event_id, vehicle_id, camera, plate, observed_at, received_at, "list",
           priority, "match", covert, payload
    FROM hits_version_0 ORDER BY event_id;
DROP TABLE hits_version_0;
"""
)

#: Case holds: an investigator keeps the hits of one ``event_id`` (every row stored
#: with it, a conflict's too: which of them is the evidence is the case's to decide)
#: past their retention, for a case. A release is recorded on its row, never deleted,
#: so that who kept what for which case, and until when, stays answerable; a hit is
#: held while any of its holds is open (several cases may hold one hit). At most one
#: open hold per hit and case.
CASE_HOLDS_TABLE = """
CREATE TABLE IF NOT EXISTS case_holds (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    TEXT NOT NULL,
    case_ref    TEXT NOT NULL,
    reason      TEXT NOT NULL,
    held_by     TEXT NOT NULL,
    held_at     TEXT NOT NULL,
    released_by TEXT,
    released_at TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS case_holds_open ON case_holds (event_id, case_ref)
    WHERE released_at IS NULL;
"""

#: Officers' decisions on hits (``lpr.decision/1``), one row per distinct message, as
#: hits: ``conflict_of`` is NULL for the first decision stored with its ``event_id`` and
#: that row's ``id`` for a later one with other content. A decision names its own
#: vehicle's hit (``hit_event_id``, ``vehicle_id``); ``hit_missing`` is 1 while HQ holds
#: no such hit (it may come later: the decision is not lost for arriving first).
DECISIONS_TABLE = """
CREATE TABLE IF NOT EXISTS decisions (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id     TEXT NOT NULL,
    vehicle_id   TEXT NOT NULL,
    hit_event_id TEXT NOT NULL,
    decision     TEXT NOT NULL,
    reason       TEXT,
    officer      TEXT,
    decided_at   TEXT NOT NULL,
    supersedes   TEXT,
    received_at  TEXT NOT NULL,
    hit_missing  INTEGER NOT NULL,
    conflict_of  INTEGER,
    payload      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_event ON decisions (event_id);
CREATE INDEX IF NOT EXISTS decisions_of ON decisions (hit_event_id, vehicle_id);
CREATE INDEX IF NOT EXISTS decisions_received ON decisions (received_at);
"""

SCHEMA = (
    HITS_TABLE
    + """
CREATE INDEX IF NOT EXISTS hits_event ON hits (event_id);
CREATE INDEX IF NOT EXISTS hits_conflicts ON hits (conflict_of) WHERE conflict_of IS NOT NULL;
CREATE INDEX IF NOT EXISTS hits_plate ON hits (plate, observed_at);
CREATE INDEX IF NOT EXISTS hits_observed ON hits (observed_at);
CREATE INDEX IF NOT EXISTS hits_received ON hits (received_at);
CREATE INDEX IF NOT EXISTS hits_vehicle ON hits (vehicle_id, observed_at);
CREATE INDEX IF NOT EXISTS hits_list ON hits ("list", observed_at);
CREATE TABLE IF NOT EXISTS vehicle_status (
    vehicle_id  TEXT PRIMARY KEY,
    state       TEXT NOT NULL,
    "at"        TEXT,
    received_at TEXT NOT NULL,
    payload     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    event_id    TEXT PRIMARY KEY,
    vehicle_id  TEXT NOT NULL,
    received_at TEXT NOT NULL,
    payload     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_received ON audit (received_at);
CREATE TABLE IF NOT EXISTS withdrawals (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id           TEXT NOT NULL,
    vehicle_id         TEXT NOT NULL,
    withdraws_event_id TEXT NOT NULL,
    reason             TEXT NOT NULL,
    "at"               TEXT NOT NULL,
    received_at        TEXT NOT NULL,
    hit_missing        INTEGER NOT NULL,
    payload            TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS withdrawals_event ON withdrawals (event_id);
CREATE INDEX IF NOT EXISTS withdrawals_of ON withdrawals (withdraws_event_id, vehicle_id);
CREATE INDEX IF NOT EXISTS withdrawals_received ON withdrawals (received_at);
CREATE TABLE IF NOT EXISTS hq_audit (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    "at"         TEXT NOT NULL,
    "user"       TEXT NOT NULL,
    action       TEXT NOT NULL,
    query        TEXT NOT NULL,
    result_count INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS hq_audit_at ON hq_audit ("at");
CREATE TABLE IF NOT EXISTS rejects (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at   TEXT NOT NULL,
    topic         TEXT NOT NULL,
    reason        TEXT NOT NULL,
    payload_bytes INTEGER NOT NULL,
    payload       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS rejects_received ON rejects (received_at);
"""
    + CASE_HOLDS_TABLE
    + DECISIONS_TABLE
)


#: How far (:func:`edge.platetext.distance`) a stored plate may be from the one
#: searched for: one plain edit, or two look-alike swaps (8/B, 0/O, 1/I, 5/S ...).
SEARCH_DISTANCE = 1.0
#: Results a search gives at most unless told otherwise.
SEARCH_LIMIT = 100


class DatabaseVersionError(Exception):
    """The database was made by a newer HQ: this one does not know its layout."""


class StoreOutcome(Enum):
    """What :meth:`HitStore.add_hit` did with a hit."""

    #: The first hit stored with its ``event_id``.
    NEW = "new"
    #: The same message from the same vehicle again (a redelivery): nothing stored.
    DUPLICATE = "duplicate"
    #: Stored, flagged: its ``event_id`` was first used by another message.
    CONFLICT = "conflict"


@dataclass(frozen=True, slots=True)
class StoredHit:
    outcome: StoreOutcome
    #: For a conflict: the message first stored with the same ``event_id``.
    first: dict | None = None


@dataclass(frozen=True, slots=True)
class StoredWithdrawal:
    """What :meth:`HitStore.add_withdrawal` did: ``NEW``, ``DUPLICATE`` (nothing
    stored) or ``CONFLICT`` (its ``event_id`` was first used by another message:
    stored all the same)."""

    outcome: StoreOutcome
    #: The hit withdrawn (its message), or None when HQ holds no such hit of the
    #: withdrawal's vehicle (the withdrawal is then flagged ``hit_missing``).
    hit: dict | None = None


@dataclass(frozen=True, slots=True)
class StoredDecision:
    """What :meth:`HitStore.add_decision` did: ``NEW``, ``DUPLICATE`` (nothing
    stored) or ``CONFLICT`` (its ``event_id`` was first used by another message:
    stored all the same, flagged with ``conflict_of``)."""

    outcome: StoreOutcome
    #: The hit decided on (its message), or None when HQ holds no such hit of the
    #: decision's vehicle (the decision is then flagged ``hit_missing``).
    hit: dict | None = None
    #: For a conflict: the message first stored with the same ``event_id``.
    first: dict | None = None


def decision_columns(message: dict, received_at: str, hit_missing: bool) -> tuple:
    """The values of a ``decisions`` row after ``id``, less ``conflict_of``."""
    return (
        message["event_id"],
        message["vehicle_id"],
        message["hit_event_id"],
        message["decision"],
        message.get("reason"),
        message.get("officer"),
        message["decided_at"],
        message.get("supersedes"),
        received_at,
        int(hit_missing),
        dump_message(message),
    )


#: Inserts a decision (``?`` placeholders; PostgreSQL swaps them for ``%s``).
#: Clears ``hit_missing`` on a vehicle's decisions once their hit is stored.
DECISIONS_FOUND = (
    "UPDATE decisions SET hit_missing = 0 WHERE hit_event_id = ? AND vehicle_id = ? "
    "AND hit_missing = 1"
)

DECISION_INSERT = (
    "INSERT INTO decisions (event_id, vehicle_id, hit_event_id, decision, reason, officer, "
    "decided_at, supersedes, received_at, hit_missing, payload, conflict_of) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


#: One write of :meth:`HitStore.add_batch`: ``(kind, message)``, kind ``hit``,
#: ``withdrawal``, ``decision`` or ``status``; or ``("audit", record, vehicle_id)``.
WriteOp = tuple

#: What each kind of write gives back (the result of the ``add_*`` method of its name).
WriteResult = StoredHit | StoredWithdrawal | StoredDecision | str | bool | None


def _is_damaged(exc: sqlite3.DatabaseError) -> bool:
    """Whether SQLite says the file itself is unusable (not a full or failing disk,
    a lock or a permission, which setting it aside would not mend)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT)


def _prepare(db: sqlite3.Connection) -> None:
    """Set the journal mode and bring the tables to :data:`SCHEMA_VERSION`."""
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise DatabaseVersionError(
            f"made by a newer HQ (layout version {version}; this one knows {SCHEMA_VERSION})"
        )
    if version == SCHEMA_VERSION:
        db.executescript(SCHEMA)  # (only adds what is missing)
        return
    hits_columns = {row[1] for row in db.execute("PRAGMA table_info(hits)")}
    migration = ""
    if hits_columns and "conflict_of" not in hits_columns:
        migration = MIGRATE_HITS_0_TO_1  # (the table it makes has every later column)
    elif hits_columns and "withdrawn_by" not in hits_columns:
        migration = MIGRATE_HITS_1_TO_2
    if version < 3:
        # Version 3's plate index has a second column: the old one (same name) goes
        # first. (Not from 3 on: rebuilding it would read every hit for nothing.)
        migration += "DROP INDEX IF EXISTS hits_plate;\n"
    # 3 to 4 is the decisions table alone (DECISIONS_TABLE, in SCHEMA below).
    # One transaction: a crash in the middle leaves the previous layout.
    script = (
        f"BEGIN IMMEDIATE;\n{migration}{SCHEMA}PRAGMA user_version = {SCHEMA_VERSION};\nCOMMIT;"
    )
    try:
        db.executescript(script)
    except sqlite3.Error:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def dump_message(message: dict) -> str:
    """A message as stored: compact JSON, any script kept as it is."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


class StoreReads:
    """What HQ reads back from its store, the same for SQLite and PostgreSQL: the
    queries are written once, each store gives its dialect (:attr:`MARK`,
    :attr:`BYTE_ORDER`) and runs them (:meth:`_fetch`)."""

    #: The driver's parameter placeholder.
    MARK = "?"
    #: Appended to ORDER BY on text keys so that they sort by their bytes, as SQLite
    #: does by default (event ids then sort by creation time).
    BYTE_ORDER = ""
    #: Held around every use of the connection, writes included.
    _lock: threading.Lock

    def _fetch(self, sql: str, params: Sequence = ()) -> tuple[list[str], list[tuple]]:
        """The column names and rows of a query; the caller holds :attr:`_lock`."""
        raise NotImplementedError

    def _read(self, sql: str, params: Sequence = ()) -> tuple[list[str], list[tuple]]:
        with self._lock:
            return self._fetch(sql, params)

    def counts(self) -> dict[str, int]:
        queries = {
            table: f"SELECT COUNT(*) FROM {table}"
            for table in ("hits", "vehicle_status", "audit", "rejects", "withdrawals", "decisions")
        }
        queries["conflicts"] = "SELECT COUNT(*) FROM hits WHERE conflict_of IS NOT NULL"
        queries["withdrawn"] = "SELECT COUNT(*) FROM hits WHERE withdrawn_by IS NOT NULL"
        queries["decision_conflicts"] = (
            "SELECT COUNT(*) FROM decisions WHERE conflict_of IS NOT NULL"
        )
        # One lock over all of them: counts of one moment.
        with self._lock:
            return {name: self._fetch(sql)[1][0][0] for name, sql in queries.items()}

    def hits(
        self,
        *,
        vehicle_id: str | None = None,
        plate: str | None = None,
        limit: int | None = None,
    ) -> list[dict]:
        """Stored hit messages, conflicts included, oldest event first (event ids sort
        by creation time; hits sharing an id in the order they arrived)."""
        where, params = self._where(("vehicle_id = ?", vehicle_id), ("plate = ?", plate))
        sql = f"SELECT payload FROM hits{where} ORDER BY event_id{self.BYTE_ORDER}, id"
        if limit is not None:
            sql += f" LIMIT {self.MARK}"
            params.append(limit)
        return [json.loads(r[0]) for r in self._read(sql, params)[1]]

    def hit_row(self, event_id: str) -> dict | None:
        """The row of the first hit stored with ``event_id``, columns by name (the
        payload parsed); see :meth:`conflicts` for any later ones."""
        rows = self._rows(
            f"SELECT * FROM hits WHERE event_id = {self.MARK} ORDER BY id LIMIT 1", (event_id,)
        )
        return rows[0] if rows else None

    def conflicts(self) -> list[dict]:
        """The rows of hits flagged as conflicts, in the order they arrived: each
        reused the ``event_id`` of the hit whose ``id`` is its ``conflict_of``."""
        return self._rows("SELECT * FROM hits WHERE conflict_of IS NOT NULL ORDER BY id")

    def withdrawals(self) -> list[dict]:
        """Stored withdrawals, in the order they arrived: their columns by name (the
        payload parsed); ``hit_missing`` 1 while HQ holds no hit they name."""
        return self._rows("SELECT * FROM withdrawals ORDER BY id")

    def recent_hits(
        self, *, limit: int = 100, list_name: str | None = None, priority: int | None = None
    ) -> list[dict]:
        """The rows of the hits that arrived last (conflicts included), newest first,
        on ``list_name`` and of ``priority`` when given; the payload parsed."""
        where, params = self._where(('"list" = ?', list_name), ("priority = ?", priority))
        return self._rows(
            f"SELECT * FROM hits{where} ORDER BY id DESC LIMIT {self.MARK}", [*params, limit]
        )

    def hit_rows(self, event_id: str) -> list[dict]:
        """Every row stored with ``event_id`` (the first, then any conflicts)."""
        return self._rows(
            f"SELECT * FROM hits WHERE event_id = {self.MARK} ORDER BY id", (event_id,)
        )

    def withdrawals_of(self, event_id: str) -> list[dict]:
        """The withdrawals naming hit ``event_id`` (of whichever vehicle), as they arrived."""
        return self._rows(
            f"SELECT * FROM withdrawals WHERE withdraws_event_id = {self.MARK} ORDER BY id",
            (event_id,),
        )

    def lists(self) -> list[str]:
        """The watchlist names hits were stored under."""
        _, rows = self._read('SELECT DISTINCT "list" FROM hits')
        # Code point order, which is UTF-8's byte order: the same on both stores.
        return sorted(r[0] for r in rows)

    def decisions(
        self, hit_event_ids: Sequence[str] | None = None, *, vehicle_id: str | None = None
    ) -> list[dict]:
        """Stored decisions, in the order they arrived: their columns by name (the
        payload parsed); only those on ``hit_event_ids`` (of ``vehicle_id``) when
        given. ``hit_missing`` is 1 while HQ holds no hit they name, ``conflict_of``
        set for one that reused another decision's ``event_id``."""
        if hit_event_ids is not None and not hit_event_ids:
            return []
        ids = None if hit_event_ids is None else list(hit_event_ids)
        where, params = self._where(
            (f"hit_event_id IN ({', '.join('?' * len(ids or ()))})", ids),
            ("vehicle_id = ?", vehicle_id),
        )
        return self._rows(f"SELECT * FROM decisions{where} ORDER BY id", params)

    def _where(self, *tests: tuple[str, object]) -> tuple[str, list]:
        """`` WHERE`` and the tests (SQL with ``?`` for each value, whatever the
        driver's placeholder) whose value is not None, joined by AND, and their
        parameters; a list value fills as many ``?``. Empty when none applies."""
        clauses, params = [], []
        for test, value in tests:
            if value is None:
                continue
            clauses.append(test.replace("?", self.MARK))
            params.extend(value if isinstance(value, list) else [value])
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    def _rows(self, sql: str, params: Sequence = ()) -> list[dict]:
        names, rows = self._read(sql, params)
        out = [dict(zip(names, row, strict=True)) for row in rows]
        for row in out:
            row["payload"] = json.loads(row["payload"])
        return out

    def statuses(self) -> dict[str, dict]:
        """The last status of each vehicle: vehicle_id -> state, at, received_at, message."""
        _, rows = self._read(
            'SELECT vehicle_id, state, "at", received_at, payload FROM vehicle_status '
            f"ORDER BY vehicle_id{self.BYTE_ORDER}"
        )
        return {
            vid: {"state": state, "at": at, "received_at": received, "message": json.loads(p)}
            for vid, state, at, received, p in rows
        }

    def audit_records(self) -> list[dict]:
        _, rows = self._read(f"SELECT payload FROM audit ORDER BY event_id{self.BYTE_ORDER}")
        return [json.loads(r[0]) for r in rows]

    def rejects(self) -> list[dict]:
        """Rejected messages, oldest first."""
        keys = ("received_at", "topic", "reason", "payload_bytes", "payload")
        _, rows = self._read(f"SELECT {', '.join(keys)} FROM rejects ORDER BY id")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def search(
        self,
        plate: str,
        *,
        since: str | None = None,
        until: str | None = None,
        vehicle_id: str | None = None,
        list_name: str | None = None,
        limit: int | None = SEARCH_LIMIT,
        max_distance: float = SEARCH_DISTANCE,
    ) -> list[dict]:
        """Stored hits whose plate is ``plate`` or near it by the watchlist's rules
        (look-alikes at half cost), nearest first, then newest first. Indexed: the
        plates within ``max_distance`` (:func:`edge.platetext.neighbourhood`) are
        looked up on ``hits.plate``, never a scan of every hit. ``since``/``until``
        are ISO-8601 UTC as stored (``observed_at``), both inclusive."""
        wanted = normalize(plate)
        if not wanted:
            return []
        candidates = sorted(neighbourhood(wanted, max_distance))
        where, params = self._where(
            (f"plate IN ({', '.join('?' * len(candidates))})", candidates),
            ("observed_at >= ?", since),
            ("observed_at <= ?", until),
            ("vehicle_id = ?", vehicle_id),
            ('"list" = ?', list_name),
        )
        _, rows = self._read(
            'SELECT id, event_id, vehicle_id, camera, plate, observed_at, "list", priority, '
            f"payload, conflict_of, withdrawn_by FROM hits{where}",
            params,
        )
        results = []
        for row_id, event_id, vehicle, camera, found, at, lst, prio, payload, conflict, wd in rows:
            gap = distance(wanted, found)
            if gap > max_distance:
                continue
            watchlist = json.loads(payload).get("watchlist", {})
            results.append(
                {
                    "event_id": event_id,
                    "plate": found,
                    "distance": gap,
                    "vehicle_id": vehicle,
                    "camera": camera,
                    "observed_at": at,
                    "list": lst,
                    "entry_id": watchlist.get("entry_id"),
                    "entry_plate": watchlist.get("entry_plate"),
                    "priority": prio,
                    "conflict": conflict is not None,
                    "withdrawn": wd is not None,
                    "withdrawn_by": wd,
                    "_id": row_id,
                }
            )
        # Newest first (arrival order between equal times), then nearest first.
        results.sort(key=lambda r: (r["observed_at"], r["_id"]), reverse=True)
        results.sort(key=lambda r: r["distance"])
        for r in results:
            del r["_id"]
        return results if limit is None else results[:limit]

    def hq_audit(self) -> list[dict]:
        """HQ's own audit (investigators' searches), oldest first: id, at, user,
        action, query (parsed), result_count."""
        rows = self._read_dicts(
            'SELECT id, "at", "user", action, query, result_count FROM hq_audit ORDER BY id'
        )
        for row in rows:
            row["query"] = json.loads(row["query"])
        return rows

    def _read_dicts(self, sql: str, params: Sequence = ()) -> list[dict]:
        names, rows = self._read(sql, params)
        return [dict(zip(names, row, strict=True)) for row in rows]

    def _audit_row(self, user: str, action: str, query: dict, result_count: int) -> tuple:
        return (
            now_iso(),
            user,
            action,
            json.dumps(query, ensure_ascii=False, sort_keys=True, separators=(",", ":")),
            result_count,
        )

    #: Inserts one row of HQ's audit (values from :meth:`_audit_row`).
    @property
    def _audit_insert(self) -> str:
        marks = ", ".join([self.MARK] * 5)
        return f'INSERT INTO hq_audit ("at", "user", action, query, result_count) VALUES ({marks})'


class HoldError(Exception):
    """A case hold or release that cannot be done (no such hit, already held, no open
    hold to release); the message says which."""


#: Rows deleted per transaction by a purge: small enough that a purge of millions of
#: rows never holds the database against arriving hits for more than a moment.
PURGE_BATCH = 1000

#: Tables a purge deletes from, in the order it reports them.
PURGED_TABLES = ("hits", "withdrawals", "decisions", "vehicle_status", "rejects", "audit")

#: A hit is held while a case hold on its event id is open.
_HELD = (
    "EXISTS (SELECT 1 FROM case_holds c WHERE c.event_id = hits.event_id AND c.released_at IS NULL)"
)
#: A withdrawal whose vehicle has no hit of that event id stored (its hit was purged,
#: or never came).
_WITHOUT_HIT = (
    "NOT EXISTS (SELECT 1 FROM hits h WHERE h.event_id = withdrawals.withdraws_event_id "
    "AND h.vehicle_id = withdrawals.vehicle_id)"
)
#: The same of a decision: its hit was purged, or never came.
_DECISION_WITHOUT_HIT = (
    "NOT EXISTS (SELECT 1 FROM hits h WHERE h.event_id = decisions.hit_event_id "
    "AND h.vehicle_id = decisions.vehicle_id)"
)


class StoreRetention(StoreReads):
    """Retention and case holds, the same for SQLite and PostgreSQL: written once over
    two hooks each store gives, :meth:`_batch` (one short write transaction, serialised
    with holds) and :meth:`_purge_turn` (one purge at a time across HQ workers).

    A hit goes once it is older than the hits' period by ``observed_at`` (when the car
    recorded it: the programme promises footage is kept at most that long from then)
    or by ``received_at`` (HQ's own clock: the recording was never later than its
    arrival, so a car whose clock ran fast cannot keep a hit longer), unless a case
    holds it. Its withdrawals and officers' decisions go with it; a withdrawal or
    decision whose hit never came goes a hits' period after it arrived (its hit, were
    it to come, would be as old). Vehicle
    statuses, rejects and the vehicles' audit records go by ``received_at``. Every
    delete is a batch of :attr:`purge_batch` rows found through an index, one
    transaction each. Every purge, hold and release is written to ``hq_audit`` in the
    same store (a hold or release in the same transaction as the change)."""

    purge_batch: int = PURGE_BATCH

    def _batch(self) -> AbstractContextManager[Callable[..., Any]]:
        """A write transaction under :attr:`_lock`; yields ``run(sql, params)`` giving
        a cursor (``rowcount``, ``fetchall``). Rolled back if the block raises."""
        raise NotImplementedError

    def _purge_turn(self, wait: bool) -> AbstractContextManager[bool]:
        """Yields whether this store may purge now (False: another worker is purging
        and ``wait`` is False)."""
        raise NotImplementedError

    def _marks(self, count: int) -> str:
        return ", ".join([self.MARK] * count)

    # ----------------------------------------------------------------- holds

    def hold(self, event_id: str, case: str, *, user: str, reason: str = "") -> int:
        """Keep the hits of ``event_id`` for ``case`` until released; returns how many
        hit rows that is. HoldError when HQ holds no such hit or this case already
        holds it."""
        m = self.MARK
        with self._batch() as run:
            found = run(f"SELECT COUNT(*) FROM hits WHERE event_id = {m}", (event_id,))
            count = found.fetchall()[0][0]
            if count == 0:
                raise HoldError(
                    f"no hit with event id {event_id} is stored (purged, or never came)"
                )
            already = run(
                f"SELECT held_by, held_at FROM case_holds WHERE event_id = {m} "
                f"AND case_ref = {m} AND released_at IS NULL",
                (event_id, case),
            ).fetchall()
            if already:
                by, at = already[0]
                raise HoldError(f"hit {event_id} is already held for case {case} (by {by} at {at})")
            run(
                "INSERT INTO case_holds (event_id, case_ref, reason, held_by, held_at) "
                f"VALUES ({self._marks(5)})",
                (event_id, case, reason, user, now_iso()),
            )
            query = {"event_id": event_id, "case": case, "reason": reason}
            run(self._audit_insert, self._audit_row(user, "hold", query, count))
        return count

    def release(self, event_id: str, case: str, *, user: str) -> None:
        """End ``case``'s hold on the hits of ``event_id`` (recorded, never deleted):
        they go at the next purge if past retention and no other case holds them.
        HoldError when that case holds no such hit."""
        m = self.MARK
        with self._batch() as run:
            released = run(
                f"UPDATE case_holds SET released_by = {m}, released_at = {m} "
                f"WHERE event_id = {m} AND case_ref = {m} AND released_at IS NULL",
                (user, now_iso(), event_id, case),
            )
            if released.rowcount == 0:
                raise HoldError(f"case {case} holds no hit with event id {event_id}")
            query = {"event_id": event_id, "case": case}
            run(self._audit_insert, self._audit_row(user, "release", query, released.rowcount))

    def holds(self, *, released: bool = False) -> list[dict]:
        """Case holds, oldest first: the open ones, or every one with ``released``."""
        where = "" if released else " WHERE released_at IS NULL"
        return self._read_dicts(
            "SELECT id, event_id, case_ref, reason, held_by, held_at, released_by, "
            f"released_at FROM case_holds{where} ORDER BY id"
        )

    # ----------------------------------------------------------------- purge

    def purge(
        self,
        before: dict[str, str],
        *,
        user: str,
        policy: dict,
        dry_run: bool = False,
        wait: bool = True,
        stopping: Callable[[], bool] = lambda: False,
    ) -> dict[str, int] | None:
        """Delete what retention no longer allows: ``before`` maps ``hits``,
        ``statuses``, ``rejects`` and ``audit`` to the ISO-8601 UTC moment before which
        they go. Returns the rows deleted per table (:data:`PURGED_TABLES`), or with
        ``dry_run`` those that would be, deleting nothing; None when another worker is
        purging and ``wait`` is False. ``stopping`` is asked between batches: once it
        says True the purge ends there (``stopped`` in the audit; the next one goes on
        where it left). Recorded in ``hq_audit`` (action ``purge``, with ``policy``,
        the moments and the counts), a dry run too."""
        with self._purge_turn(wait) as turn:
            if not turn:
                return None
            if dry_run:
                counts = self._count_expired(before)
            else:
                counts = self._delete_expired(before, stopping)
            query = {"policy": policy, "before": before, "dry_run": dry_run, "deleted": counts}
            if stopping():
                query["stopped"] = True
            with self._batch() as run:
                run(self._audit_insert, self._audit_row(user, "purge", query, sum(counts.values())))
        return counts

    def _count_expired(self, before: dict[str, str]) -> dict[str, int]:
        m, cut = self.MARK, before["hits"]
        held = _HELD.replace("hits.", "h.")
        expired = f"(h.observed_at < {m} OR h.received_at < {m}) AND NOT {held}"
        kept = f"NOT ({expired})"
        pair = "h.event_id = w.withdraws_event_id AND h.vehicle_id = w.vehicle_id"
        decided = "h.event_id = d.hit_event_id AND h.vehicle_id = d.vehicle_id"
        queries = {
            "hits": (f"SELECT COUNT(*) FROM hits h WHERE {expired}", (cut, cut)),
            "withdrawals": (
                f"SELECT COUNT(*) FROM withdrawals w WHERE NOT EXISTS "
                f"(SELECT 1 FROM hits h WHERE {pair} AND {kept}) AND (w.received_at < {m} "
                f"OR EXISTS (SELECT 1 FROM hits h WHERE {pair}))",
                (cut, cut, cut),
            ),
            "decisions": (
                f"SELECT COUNT(*) FROM decisions d WHERE NOT EXISTS "
                f"(SELECT 1 FROM hits h WHERE {decided} AND {kept}) AND (d.received_at < {m} "
                f"OR EXISTS (SELECT 1 FROM hits h WHERE {decided}))",
                (cut, cut, cut),
            ),
            "vehicle_status": (
                f"SELECT COUNT(*) FROM vehicle_status WHERE received_at < {m}",
                (before["statuses"],),
            ),
            "rejects": (
                f"SELECT COUNT(*) FROM rejects WHERE received_at < {m}",
                (before["rejects"],),
            ),
            "audit": (f"SELECT COUNT(*) FROM audit WHERE received_at < {m}", (before["audit"],)),
        }
        with self._lock:
            return {
                name: self._fetch(sql, params)[1][0][0] for name, (sql, params) in queries.items()
            }

    def _delete_expired(
        self, before: dict[str, str], stopping: Callable[[], bool]
    ) -> dict[str, int]:
        counts = dict.fromkeys(PURGED_TABLES, 0)
        for clock in ("observed_at", "received_at"):
            for table, count in self._purge_hits(clock, before["hits"], stopping).items():
                counts[table] += count
        counts["withdrawals"] += self._purge_rows(
            "withdrawals", "id", before["hits"], stopping, also=f" AND {_WITHOUT_HIT}"
        )
        counts["decisions"] += self._purge_rows(
            "decisions", "id", before["hits"], stopping, also=f" AND {_DECISION_WITHOUT_HIT}"
        )
        for table, key, kind in (
            ("vehicle_status", "vehicle_id", "statuses"),
            ("rejects", "id", "rejects"),
            ("audit", "event_id", "audit"),
        ):
            counts[table] = self._purge_rows(table, key, before[kind], stopping)
        return counts

    def _purge_hits(self, clock: str, cut: str, stopping: Callable[[], bool]) -> dict[str, int]:
        """Delete the unheld hits whose ``clock`` is before ``cut``, and the
        withdrawals and decisions left without a hit; returns the counts of the
        three. Walks the clock's index
        in order from where the last batch ended, so held hits are passed once, not
        read again by every batch."""
        m = self.MARK
        counts = {"hits": 0, "withdrawals": 0, "decisions": 0}
        last: tuple[str, int] = ("", 0)
        while not stopping():
            with self._batch() as run:
                # One index range, read in the index's own order (no OR: SQLite would
                # gather and sort the whole range for every batch).
                rows = run(
                    f"SELECT id, event_id, {clock}, vehicle_id FROM hits WHERE {clock} >= {m} "
                    f"AND {clock} < {m} AND NOT ({clock} = {m} AND id <= {m}) "
                    f"ORDER BY {clock}, id LIMIT {m}",
                    (last[0], cut, last[0], last[1], self.purge_batch),
                ).fetchall()
                if not rows:
                    return counts
                ids = [row[0] for row in rows]
                counts["hits"] += run(
                    f"DELETE FROM hits WHERE id IN ({self._marks(len(ids))}) AND NOT {_HELD}", ids
                ).rowcount
                # The withdrawals of the hits gone (a withdrawal names its own
                # vehicle's hit), unless a hit of that vehicle and event id stays.
                # (The event ids alone first: that is what the index can look up.)
                events = sorted({row[1] for row in rows})
                pairs = sorted({(row[1], row[3]) for row in rows})
                values = [*events, *(value for pair in pairs for value in pair)]
                pairs_sql = f"(VALUES {', '.join([f'({m}, {m})'] * len(pairs))})"
                counts["withdrawals"] += run(
                    f"DELETE FROM withdrawals WHERE withdraws_event_id IN "
                    f"({self._marks(len(events))}) AND (withdraws_event_id, vehicle_id) IN "
                    f"{pairs_sql} AND {_WITHOUT_HIT}",
                    values,
                ).rowcount
                # Decisions likewise: they are about the hit, and go with it.
                counts["decisions"] += run(
                    f"DELETE FROM decisions WHERE hit_event_id IN "
                    f"({self._marks(len(events))}) AND (hit_event_id, vehicle_id) IN "
                    f"{pairs_sql} AND {_DECISION_WITHOUT_HIT}",
                    values,
                ).rowcount
                last = (rows[-1][2], rows[-1][0])
        return counts

    def _purge_rows(
        self, table: str, key: str, cut: str, stopping: Callable[[], bool], *, also: str = ""
    ) -> int:
        """Delete the rows of ``table`` received before ``cut`` (and matching
        ``also``), a batch at a time, oldest first; returns how many."""
        m = self.MARK
        deleted = 0
        while not stopping():
            with self._batch() as run:
                keys = [
                    row[0]
                    for row in run(
                        f"SELECT {key} FROM {table} WHERE received_at < {m}{also} "
                        f"ORDER BY received_at LIMIT {m}",
                        (cut, self.purge_batch),
                    ).fetchall()
                ]
                if not keys:
                    return deleted
                gone = run(
                    f"DELETE FROM {table} WHERE {key} IN ({self._marks(len(keys))}){also}", keys
                ).rowcount
            deleted += gone
            if gone == 0:
                # Taken by another purge in between: what is left is its to delete.
                break
        return deleted


class StoreWrites:
    """Each kind of message stored on its own: a batch of one (:meth:`add_batch`,
    which each store implements), so that one message and a batch of them are written
    by the same code on both stores."""

    def add_batch(self, ops: Sequence[WriteOp]) -> list[WriteResult]:
        raise NotImplementedError

    def add_hit(self, message: dict) -> StoredHit:
        """Store a validated hit message, unless it is a redelivery: the same message
        from the same vehicle as one stored with its ``event_id``. Any other message
        with a stored ``event_id`` is stored as a conflict of the first one."""
        return self.add_batch([("hit", message)])[0]

    def add_withdrawal(self, message: dict) -> StoredWithdrawal:
        """Store a validated withdrawal and mark the hit it names (the first stored
        with that ``event_id`` by the same vehicle: a vehicle withdraws only its own).
        One naming no stored hit is stored flagged ``hit_missing``; the hit, should it
        come later, is marked then (:meth:`add_hit`)."""
        return self.add_batch([("withdrawal", message)])[0]

    def add_decision(self, message: dict) -> StoredDecision:
        """Store a validated decision, unless it is a redelivery (the same message from
        the same vehicle as one stored with its ``event_id``); any other message with
        a stored ``event_id`` is stored as a conflict of the first. One naming no hit
        of its vehicle HQ holds is stored flagged ``hit_missing`` (cleared when the hit
        comes, :meth:`add_hit`)."""
        return self.add_batch([("decision", message)])[0]

    def set_status(self, message: dict) -> str | None:
        """Keep a validated status message as its vehicle's last; returns the state it
        had before (None for a vehicle not seen until now)."""
        return self.add_batch([("status", message)])[0]

    def add_audit(self, vehicle_id: str, record: dict) -> bool:
        """Store an audit record; False when its ``event_id`` is already stored."""
        return self.add_batch([("audit", record, vehicle_id)])[0]

    @staticmethod
    def _hit_columns(message: dict) -> tuple:
        """A hit's column values, ``received_at`` now, in the order the stores insert them."""
        wl = message["watchlist"]
        return (
            message["event_id"],
            message["vehicle_id"],
            message["camera"],
            message["plate"],
            message["observed_at"],
            now_iso(),
            wl["list"],
            wl["priority"],
            wl["match"],
            bool(wl["covert"]),
            dump_message(message),
        )


class HitStore(StoreRetention, StoreWrites):
    """HQ's database of hits, the last status of each vehicle, audit records and
    rejected messages.

    SQLite in WAL mode with ``synchronous=FULL``: a row is on disk when the method
    that wrote it returns. The owner opens and closes it (or uses it as a context
    manager); every method is safe to call from any thread (the subscriber's storing thread
    writes, the owner reads).

    A database made by an earlier HQ is migrated when opened. A file that SQLite says
    is not a database, or is malformed, is set aside (renamed beside it, never
    deleted) and a fresh database started, logged at ERROR with the new name: HQ must
    keep receiving hits rather than stop at every start.
    """

    def __init__(self, path: Path | str, *, max_rejects: int = MAX_REJECT_ROWS):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_rejects = max_rejects
        self._lock = threading.Lock()
        #: Where a damaged database found at open was put, or None.
        self.set_aside_as: Path | None = None
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:
            if not _is_damaged(exc):
                raise
            self.set_aside_as = set_aside(self.path)
            log.error(
                "HQ: %s is not a usable database (%s): set aside as %s; starting a fresh one",
                self.path,
                exc,
                self.set_aside_as,
            )
            self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        # Owner-only before SQLite creates it with the umask's mode (hits are personal
        # data); the WAL and shared-memory files take the database's mode.
        ensure_private(self.path)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10.0)
        try:
            _prepare(db)
        except BaseException:
            db.close()
            raise
        return db

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> HitStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ----------------------------------------------------------------- writes

    def add_batch(self, ops: Sequence[WriteOp]) -> list[WriteResult]:
        """Store several validated messages in one transaction (one commit, one sync
        of the disk for all of them); returns each one's result as its own ``add_*``
        method would, in order. Each sees the ones before it (a duplicate within the
        batch is a duplicate). Nothing is stored if it raises."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            return [self._write(op) for op in ops]

    def _write(self, op: WriteOp) -> WriteResult:
        kind = op[0]
        if kind == "hit":
            return self._add_hit_tx(op[1])
        if kind == "withdrawal":
            return self._add_withdrawal_tx(op[1])
        if kind == "decision":
            return self._add_decision_tx(op[1])
        if kind == "status":
            return self._set_status_tx(op[1])
        if kind == "audit":
            return self._add_audit_tx(op[1], op[2])
        raise ValueError(f"unknown write {kind!r}")

    def _add_hit_tx(self, message: dict) -> StoredHit:
        # In the caller's transaction: the hits compared with are the ones still there.
        event_id, vehicle_id = message["event_id"], message["vehicle_id"]
        same_id = self._db.execute(
            "SELECT id, vehicle_id, payload FROM hits WHERE event_id = ? ORDER BY id",
            (event_id,),
        ).fetchall()
        for _row_id, stored_vehicle, payload in same_id:
            # Compared parsed: key order and number spelling are not content.
            if stored_vehicle == vehicle_id and json.loads(payload) == message:
                return StoredHit(StoreOutcome.DUPLICATE)
        conflict_of = same_id[0][0] if same_id else None
        # Its withdrawal may have come first (a redelivery overtaking it).
        withdrawal = self._db.execute(
            "SELECT event_id FROM withdrawals WHERE withdraws_event_id = ? "
            "AND vehicle_id = ? ORDER BY id LIMIT 1",
            (event_id, vehicle_id),
        ).fetchone()
        withdrawn_by = withdrawal[0] if withdrawal else None
        self._db.execute(
            "INSERT INTO hits (event_id, vehicle_id, camera, plate, observed_at, "
            'received_at, "list", priority, "match", covert, payload, conflict_of, '
            "withdrawn_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*self._hit_columns(message), conflict_of, withdrawn_by),
        )
        if withdrawn_by is not None:
            self._db.execute(
                "UPDATE withdrawals SET hit_missing = 0 WHERE withdraws_event_id = ? "
                "AND vehicle_id = ?",
                (event_id, vehicle_id),
            )
        # Its decisions may have come first (the hit lost, then sent again).
        self._db.execute(DECISIONS_FOUND, (event_id, vehicle_id))
        if conflict_of is None:
            return StoredHit(StoreOutcome.NEW)
        return StoredHit(StoreOutcome.CONFLICT, json.loads(same_id[0][2]))

    def _add_withdrawal_tx(self, message: dict) -> StoredWithdrawal:
        event_id, vehicle_id = message["event_id"], message["vehicle_id"]
        withdrawn = message["withdraws_event_id"]
        same_id = self._db.execute(
            "SELECT vehicle_id, payload FROM withdrawals WHERE event_id = ?", (event_id,)
        ).fetchall()
        if any(v == vehicle_id and json.loads(p) == message for v, p in same_id):
            return StoredWithdrawal(StoreOutcome.DUPLICATE)
        hit = self._db.execute(
            "SELECT payload FROM hits WHERE event_id = ? AND vehicle_id = ? ORDER BY id LIMIT 1",
            (withdrawn, vehicle_id),
        ).fetchone()
        self._db.execute(
            "INSERT INTO withdrawals (event_id, vehicle_id, withdraws_event_id, reason, "
            '"at", received_at, hit_missing, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
            (
                event_id,
                vehicle_id,
                withdrawn,
                message["reason"],
                message["at"],
                now_iso(),
                int(hit is None),
                dump_message(message),
            ),
        )
        self._db.execute(
            "UPDATE hits SET withdrawn_by = ? WHERE event_id = ? AND vehicle_id = ? "
            "AND withdrawn_by IS NULL",
            (event_id, withdrawn, vehicle_id),
        )
        outcome = StoreOutcome.CONFLICT if same_id else StoreOutcome.NEW
        return StoredWithdrawal(outcome, json.loads(hit[0]) if hit else None)

    def _add_decision_tx(self, message: dict) -> StoredDecision:
        vehicle_id, hit_event_id = message["vehicle_id"], message["hit_event_id"]
        same_id = self._db.execute(
            "SELECT id, vehicle_id, payload FROM decisions WHERE event_id = ? ORDER BY id",
            (message["event_id"],),
        ).fetchall()
        if any(v == vehicle_id and json.loads(p) == message for _i, v, p in same_id):
            return StoredDecision(StoreOutcome.DUPLICATE)
        hit = self._db.execute(
            "SELECT payload FROM hits WHERE event_id = ? AND vehicle_id = ? ORDER BY id LIMIT 1",
            (hit_event_id, vehicle_id),
        ).fetchone()
        conflict_of = same_id[0][0] if same_id else None
        self._db.execute(
            DECISION_INSERT,
            (*decision_columns(message, now_iso(), hit is None), conflict_of),
        )
        hit_message = json.loads(hit[0]) if hit else None
        if conflict_of is None:
            return StoredDecision(StoreOutcome.NEW, hit_message)
        return StoredDecision(StoreOutcome.CONFLICT, hit_message, json.loads(same_id[0][2]))

    def _set_status_tx(self, message: dict) -> str | None:
        # In the caller's transaction: the previous state read is the one replaced.
        row = self._db.execute(
            "SELECT state FROM vehicle_status WHERE vehicle_id = ?", (message["vehicle_id"],)
        ).fetchone()
        self._db.execute(
            'INSERT INTO vehicle_status (vehicle_id, state, "at", received_at, payload) '
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (vehicle_id) DO UPDATE SET "
            'state = excluded.state, "at" = excluded."at", '
            "received_at = excluded.received_at, payload = excluded.payload",
            (
                message["vehicle_id"],
                message["state"],
                message.get("at"),
                now_iso(),
                dump_message(message),
            ),
        )
        return row[0] if row else None

    def _add_audit_tx(self, record: dict, vehicle_id: str) -> bool:
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO audit (event_id, vehicle_id, received_at, payload) "
            "VALUES (?, ?, ?, ?)",
            (
                record["event_id"],
                vehicle_id,
                now_iso(),
                dump_message(record),
            ),
        )
        return cursor.rowcount == 1

    def add_hq_audit(self, user: str, action: str, query: dict, result_count: int) -> None:
        """Record in HQ's own audit who did what (``action``, e.g. ``search``, with
        its ``query``) and how many results it gave."""
        with self._lock:
            self._db.execute(self._audit_insert, self._audit_row(user, action, query, result_count))

    def add_reject(self, topic: str, reason: str, payload: bytes) -> None:
        """Record a rejected message: its reason and the first bytes of its payload."""
        excerpt = payload[:REJECT_EXCERPT_BYTES].decode("utf-8", errors="replace")
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO rejects (received_at, topic, reason, payload_bytes, payload) "
                "VALUES (?, ?, ?, ?, ?)",
                (now_iso(), topic, reason[:REASON_CHARS], len(payload), excerpt),
            )
            # Trim now and then rather than on every insert.
            if cursor.lastrowid and cursor.lastrowid % 100 == 0:
                self._db.execute(
                    "DELETE FROM rejects WHERE id <= ?", (cursor.lastrowid - self.max_rejects,)
                )

    @contextmanager
    def _batch(self) -> Iterator[Callable[..., Any]]:
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            yield self._db.execute

    @contextmanager
    def _purge_turn(self, wait: bool) -> Iterator[bool]:
        # Every batch is its own BEGIN IMMEDIATE transaction, which already serialises
        # two purges of one file: each row is deleted, and counted, once.
        yield True

    # ----------------------------------------------------------------- reads

    def _fetch(self, sql: str, params: Sequence = ()) -> tuple[list[str], list[tuple]]:
        cursor = self._db.execute(sql, params)
        return [d[0] for d in cursor.description], cursor.fetchall()
