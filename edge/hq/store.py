"""`lpr-edge hq`: HQ's subscriber. Receives hits, vehicle status and audit records from
every vehicle, validates them, drops duplicates and keeps them in SQLite.

Delivery is at least once from end to end:

* the subscriber holds a persistent MQTT 5 session (a fixed client id, no clean start,
  a session expiry), so QoS 1 messages sent while HQ is away are queued by the broker
  and arrive when it returns;
* a message is acknowledged (PUBACK, sent by hand: paho's manual ack) only once it is
  committed to SQLite, or judged malformed and recorded as a reject. If the commit
  fails (a full disk), the message is left unacknowledged and the connection is
  dropped, so the broker sends it again on the next session resumption; a crash
  before the commit has the same effect;
* a message that arrives twice (a vehicle resending after a lost PUBACK, or the broker
  redelivering) is recognised by its ``event_id`` and stored once. Only an identical
  message from the same vehicle is such a duplicate: a hit that reuses an ``event_id``
  with other content (another vehicle's, or changed) is stored all the same, flagged
  as a conflict (``hits.conflict_of``), logged, counted and printed as a conflict,
  because dropping it could lose a real hit to whoever sent that id first.

A vehicle takes a hit back with an ``lpr.withdrawal/1`` message on its hit topic (the
hit's read was a misread, corrected in the car). It is validated against its schema,
stored in ``withdrawals`` and marks the hit (``hits.withdrawn_by``), whichever of the
two arrives first; one that names no hit of its vehicle is stored all the same and
flagged (``withdrawals.hit_missing``), since the hit may come later or have been lost.
A hit from a corrected read carries ``corrects_event_id`` and is stored as any hit.

Validation: a payload must be a UTF-8 JSON object; hits, withdrawals and status are
checked against the shipped JSON Schemas (``edge/data/*.schema.json``, Draft 2020-12),
audit records only for a string ``event_id`` (their schema is not fixed yet). The topic is the
trusted identity (the broker's ACL lets a vehicle publish under its own id only), so a
``vehicle_id`` in the payload that differs from the topic's is a reject. A reject is
counted by reason, logged at WARNING with its topic and a short reason (never the
payload), stored with a size-capped excerpt in ``rejects``, and acknowledged: sending
it again would not mend it. JSON's non-numbers (``NaN``, ``Infinity``, a number
beyond a double's range) are not JSON (RFC 8259) and are rejected as ``not-json``;
an image must be base64 of a JPEG (it starts with the SOI marker) of at most
:data:`MAX_IMAGE_BYTES`.

Every text a sender controls is shown escaped (control characters as ``\\x1b``,
``\\n``, ...) on the console and in the log (:func:`escape_control`): a camera name
holding a newline and terminal codes must neither forge a line nor reach the
operator's terminal. The schemas already refuse such text; escaping on output does
not rely on them.

The database is created owner-only whatever the umask; one that SQLite says is not a
database (or is malformed) is set aside under a new name, never deleted, and a fresh
one is started, so that HQ does not stop at every start.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import functools
import json
import logging
import math
import os
import re
import signal
import socket
import sqlite3
import ssl
import sys
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge.config import VEHICLE_ID, MqttConfig
from edge.delivery.messages import IMAGE_KEYS, WITHDRAWAL_SCHEMA, without_images
from edge.delivery.mqtt import Topics, broker_config, connect, new_client, reason_ok
from edge.errors import UsageError
from edge.files import ensure_private, set_aside
from edge.textrules import UNSHOWABLE, escape_char
from edge.timefmt import now_iso
from edge.waits import poll_until

log = logging.getLogger("edge.hq")

DEFAULT_CLIENT_ID = "lpr-edge-hq"
DEFAULT_PREFIX = "lpr/v1"
DEFAULT_DB = "hq-hits.sqlite"
PASSWORD_ENV = "LPR_EDGE_HQ_PASSWORD"
#: Message kinds subscribed to, each as ``{prefix}/+/{kind}``.
KINDS = ("hit", "status", "audit")
#: Larger payloads are rejected unread: the largest plate image a vehicle may send
#: (1,000,000 bytes, base64) and the rest of a hit fit well within it.
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
#: Bytes of a rejected payload kept in ``rejects`` (enough to see what it was).
REJECT_EXCERPT_BYTES = 512
#: Rows kept in ``rejects``: the oldest go first, so a misbehaving client cannot
#: fill HQ's disk.
MAX_REJECT_ROWS = 10_000
#: Characters of a validation error kept in logs and ``rejects``.
REASON_CHARS = 200
#: The largest image (decoded) a hit may carry: the most ``[mqtt]
#: plate_image_max_bytes`` allows. The schemas cap the base64 text to match.
MAX_IMAGE_BYTES = 1_000_000
#: Every JPEG starts with the SOI marker (FF D8) followed by the next marker's FF.
JPEG_START = b"\xff\xd8\xff"

#: The database layout's version (``PRAGMA user_version``): 0 is the first release's,
#: whose ``hits`` had ``event_id`` as its primary key; 1 keys hits by ``id`` and adds
#: ``conflict_of``; 2 adds ``hits.withdrawn_by`` and the ``withdrawals`` table.
SCHEMA_VERSION = 2

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

SCHEMA = (
    HITS_TABLE
    + """
CREATE INDEX IF NOT EXISTS hits_event ON hits (event_id);
CREATE INDEX IF NOT EXISTS hits_conflicts ON hits (conflict_of) WHERE conflict_of IS NOT NULL;
CREATE INDEX IF NOT EXISTS hits_plate ON hits (plate);
CREATE INDEX IF NOT EXISTS hits_observed ON hits (observed_at);
CREATE INDEX IF NOT EXISTS hits_vehicle ON hits (vehicle_id, observed_at);
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
CREATE TABLE IF NOT EXISTS rejects (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at   TEXT NOT NULL,
    topic         TEXT NOT NULL,
    reason        TEXT NOT NULL,
    payload_bytes INTEGER NOT NULL,
    payload       TEXT NOT NULL
);
"""
)


# --- storage ---------------------------------------------------------------------


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


class HitStore:
    """HQ's database of hits, the last status of each vehicle, audit records and
    rejected messages.

    SQLite in WAL mode with ``synchronous=FULL``: a row is on disk when the method
    that wrote it returns. The owner opens and closes it (or uses it as a context
    manager); every method is safe to call from any thread (paho's callback thread
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

    def add_hit(self, message: dict) -> StoredHit:
        """Store a validated hit message, unless it is a redelivery: the same message
        from the same vehicle as one stored with its ``event_id``. Any other message
        with a stored ``event_id`` is stored as a conflict of the first one."""
        event_id, vehicle_id = message["event_id"], message["vehicle_id"]
        with self._lock, self._db:
            # One transaction: the hits compared with are the ones still there.
            self._db.execute("BEGIN IMMEDIATE")
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
        if conflict_of is None:
            return StoredHit(StoreOutcome.NEW)
        return StoredHit(StoreOutcome.CONFLICT, json.loads(same_id[0][2]))

    @staticmethod
    def _hit_columns(message: dict) -> tuple:
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
            int(bool(wl["covert"])),
            json.dumps(message, ensure_ascii=False, separators=(",", ":")),
        )

    def add_withdrawal(self, message: dict) -> StoredWithdrawal:
        """Store a validated withdrawal and mark the hit it names (the first stored
        with that ``event_id`` by the same vehicle: a vehicle withdraws only its own).
        One naming no stored hit is stored flagged ``hit_missing``; the hit, should it
        come later, is marked then (:meth:`add_hit`)."""
        event_id, vehicle_id = message["event_id"], message["vehicle_id"]
        withdrawn = message["withdraws_event_id"]
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            same_id = self._db.execute(
                "SELECT vehicle_id, payload FROM withdrawals WHERE event_id = ?", (event_id,)
            ).fetchall()
            if any(v == vehicle_id and json.loads(p) == message for v, p in same_id):
                return StoredWithdrawal(StoreOutcome.DUPLICATE)
            hit = self._db.execute(
                "SELECT payload FROM hits WHERE event_id = ? AND vehicle_id = ? "
                "ORDER BY id LIMIT 1",
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
                    json.dumps(message, ensure_ascii=False, separators=(",", ":")),
                ),
            )
            self._db.execute(
                "UPDATE hits SET withdrawn_by = ? WHERE event_id = ? AND vehicle_id = ? "
                "AND withdrawn_by IS NULL",
                (event_id, withdrawn, vehicle_id),
            )
        outcome = StoreOutcome.CONFLICT if same_id else StoreOutcome.NEW
        return StoredWithdrawal(outcome, json.loads(hit[0]) if hit else None)

    def set_status(self, message: dict) -> str | None:
        """Keep a validated status message as its vehicle's last; returns the state it
        had before (None for a vehicle not seen until now)."""
        with self._lock, self._db:
            # One transaction: the previous state read is the one replaced.
            self._db.execute("BEGIN IMMEDIATE")
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
                    json.dumps(message, ensure_ascii=False, separators=(",", ":")),
                ),
            )
        return row[0] if row else None

    def add_audit(self, vehicle_id: str, record: dict) -> bool:
        """Store an audit record; False when its ``event_id`` is already stored."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO audit (event_id, vehicle_id, received_at, payload) "
                "VALUES (?, ?, ?, ?)",
                (
                    record["event_id"],
                    vehicle_id,
                    now_iso(),
                    json.dumps(record, ensure_ascii=False, separators=(",", ":")),
                ),
            )
            return cursor.rowcount == 1

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

    # ----------------------------------------------------------------- reads

    def counts(self) -> dict[str, int]:
        """Rows in each table, ``conflicts``: the hits among them flagged as such, and
        ``withdrawn``: the hits withdrawn by their vehicle."""
        with self._lock:
            counts = {
                table: self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                for table in ("hits", "vehicle_status", "audit", "rejects", "withdrawals")
            }
            counts["conflicts"] = self._db.execute(
                "SELECT COUNT(*) FROM hits WHERE conflict_of IS NOT NULL"
            ).fetchone()[0]
            counts["withdrawn"] = self._db.execute(
                "SELECT COUNT(*) FROM hits WHERE withdrawn_by IS NOT NULL"
            ).fetchone()[0]
        return counts

    def hits(
        self,
        *,
        vehicle_id: str | None = None,
        plate: str | None = None,
        limit: int | None = None,
    ) -> list[dict]:
        """Stored hit messages, conflicts included, oldest event first (event ids sort
        by creation time; hits sharing an id in the order they arrived)."""
        where, params = [], []
        if vehicle_id is not None:
            where.append("vehicle_id = ?")
            params.append(vehicle_id)
        if plate is not None:
            where.append("plate = ?")
            params.append(plate)
        sql = "SELECT payload FROM hits"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY event_id, id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [json.loads(r[0]) for r in rows]

    def hit_row(self, event_id: str) -> dict | None:
        """The row of the first hit stored with ``event_id``, columns by name (the
        payload parsed); see :meth:`conflicts` for any later ones."""
        rows = self._hit_rows("WHERE event_id = ? ORDER BY id LIMIT 1", (event_id,))
        return rows[0] if rows else None

    def conflicts(self) -> list[dict]:
        """The rows of hits flagged as conflicts, in the order they arrived: each
        reused the ``event_id`` of the hit whose ``id`` is its ``conflict_of``."""
        return self._hit_rows("WHERE conflict_of IS NOT NULL ORDER BY id", ())

    def _hit_rows(self, where: str, params: tuple) -> list[dict]:
        with self._lock:
            cursor = self._db.execute(f"SELECT * FROM hits {where}", params)
            rows = cursor.fetchall()
            names = [d[0] for d in cursor.description]
        out = [dict(zip(names, row, strict=True)) for row in rows]
        for row in out:
            row["payload"] = json.loads(row["payload"])
        return out

    def withdrawals(self) -> list[dict]:
        """Stored withdrawals, in the order they arrived: their columns by name (the
        payload parsed); ``hit_missing`` 1 while HQ holds no hit they name."""
        with self._lock:
            cursor = self._db.execute("SELECT * FROM withdrawals ORDER BY id")
            rows = cursor.fetchall()
            names = [d[0] for d in cursor.description]
        out = [dict(zip(names, row, strict=True)) for row in rows]
        for row in out:
            row["payload"] = json.loads(row["payload"])
        return out

    def statuses(self) -> dict[str, dict]:
        """The last status of each vehicle: vehicle_id -> state, at, received_at, message."""
        with self._lock:
            rows = self._db.execute(
                'SELECT vehicle_id, state, "at", received_at, payload FROM vehicle_status '
                "ORDER BY vehicle_id"
            ).fetchall()
        return {
            vid: {"state": state, "at": at, "received_at": received, "message": json.loads(p)}
            for vid, state, at, received, p in rows
        }

    def audit_records(self) -> list[dict]:
        with self._lock:
            rows = self._db.execute("SELECT payload FROM audit ORDER BY event_id").fetchall()
        return [json.loads(r[0]) for r in rows]

    def rejects(self) -> list[dict]:
        """Rejected messages, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT received_at, topic, reason, payload_bytes, payload FROM rejects ORDER BY id"
            ).fetchall()
        keys = ("received_at", "topic", "reason", "payload_bytes", "payload")
        return [dict(zip(keys, r, strict=True)) for r in rows]


# --- output ---------------------------------------------------------------------------

_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_one(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED_ESCAPES.get(char) or escape_char(char)


def escape_control(text: str) -> str:
    """``text`` safe for a terminal and a one-line log record: each character of
    :data:`UNSHOWABLE` written as a Python escape (``\\n``, ``\\x1b``, ``\\u202e``);
    everything else, Chinese included, as it is."""
    return UNSHOWABLE.sub(_escape_one, text)


def json_line(value: Any) -> str:
    """``value`` as one line of compact JSON for the console: like ``json.dumps``
    with ``ensure_ascii=False``, but with :data:`UNSHOWABLE` characters written as
    JSON ``\\uXXXX`` escapes (json escapes only C0 controls; DEL, C1 and the rest
    reach the terminal otherwise)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return UNSHOWABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


class _EscapeLogRecords(logging.Filter):
    """Escapes every record HQ logs (:func:`escape_control`), so that no topic, vehicle
    id, list name or validation message a sender chose can break a log line in two
    or send codes to a terminal that shows the log. On the logger, so it applies
    whatever handler the process configured."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        escaped = escape_control(message)
        if escaped != message:
            record.msg, record.args = escaped, None
        return True


log.addFilter(_EscapeLogRecords())


# --- validation --------------------------------------------------------------------


class Reject(Exception):
    """A message HQ will not store: ``kind`` is the counter's key, ``detail`` says
    why in a few words (never the payload)."""

    def __init__(self, kind: str, detail: str = ""):
        self.kind = kind
        self.detail = detail
        super().__init__(f"{kind}: {detail}" if detail else kind)


@functools.cache
def schema_validator(name: str) -> Draft202012Validator:
    """The validator for a shipped schema (``hit`` or ``status``), compiled once."""
    text = resources.files("edge").joinpath(f"data/{name}.schema.json").read_text("utf-8")
    schema = json.loads(text)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _schema_check(name: str, message: dict) -> None:
    error = best_match(schema_validator(name).iter_errors(message))
    if error is None:
        return
    where = "/".join(str(p) for p in error.absolute_path) or "(top)"
    # The validator's message quotes the offending value; keep it short (a plate
    # image is large, and logs are no place for whole payloads).
    raise Reject("schema", _short(f"{where}: {_short(error.message, REASON_CHARS)}", REASON_CHARS))


def _refuse_constant(name: str) -> float:
    # Python's json reads NaN, Infinity and -Infinity; JSON (RFC 8259) has no such
    # numbers, and a NaN confidence compares false with every threshold.
    raise Reject("not-json", f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 reads as infinity
        raise Reject("not-json", f"number {_short(text, 24)} is out of range")
    return value


def parse_object(payload: bytes) -> dict:
    """The payload as a JSON object with finite numbers only, or :class:`Reject`."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise Reject("too-large", f"{len(payload)} bytes")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Reject("not-utf8", f"byte {exc.start}") from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise Reject("not-json", f"line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except ValueError:
        # An integer of more digits than Python converts (4300).
        raise Reject("not-json", "a number too long") from None
    except RecursionError:
        raise Reject("not-json", "nested too deep") from None
    if not isinstance(value, dict):
        raise Reject("not-object", f"a JSON {type(value).__name__}")
    return value


def _same_vehicle(message: dict, vehicle_id: str) -> None:
    if message.get("vehicle_id") != vehicle_id:
        claimed = message.get("vehicle_id")
        raise Reject(
            "vehicle-mismatch",
            f"payload says {_short(repr(claimed), 40)}, topic says {vehicle_id!r}",
        )


def validate_hit(message: dict, vehicle_id: str) -> None:
    _schema_check("hit", message)
    _same_vehicle(message, vehicle_id)
    for key in IMAGE_KEYS:
        image = message.get(key)
        if image is not None:
            _check_jpeg(key, image)


def _check_jpeg(key: str, image: str) -> None:
    """An image field must be base64 of a JPEG of at most :data:`MAX_IMAGE_BYTES`:
    whatever else it is (an SVG with script, HTML) could run in a viewer that trusts
    the stored content type."""
    try:
        data = base64.b64decode(image, validate=True)
    except (binascii.Error, ValueError):
        raise Reject("bad-image", f"{key} is not base64") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise Reject("bad-image", f"{key} is {len(data)} bytes, over {MAX_IMAGE_BYTES}")
    if not data.startswith(JPEG_START):
        raise Reject("bad-image", f"{key} is not a JPEG (no SOI marker)")


def validate_withdrawal(message: dict, vehicle_id: str) -> None:
    _schema_check("withdrawal", message)
    _same_vehicle(message, vehicle_id)


def validate_status(message: dict, vehicle_id: str) -> None:
    _schema_check("status", message)
    _same_vehicle(message, vehicle_id)


def validate_audit(record: dict, vehicle_id: str) -> None:
    event_id = record.get("event_id")
    if not isinstance(event_id, str) or not event_id:
        raise Reject("audit-no-event-id", "no string event_id")
    if "vehicle_id" in record:
        _same_vehicle(record, vehicle_id)


def hit_summary_json(message: dict) -> dict:
    """A hit for printing: each image replaced by its length in bytes
    (``plate_image_bytes``, ``context_image_bytes``)."""
    return without_images(message)


def format_hit(message: dict) -> str:
    """One human line: ``2026-11-23T08:00:01.125Z car-7 front-left AB1234
    stolen-vehicle P1 exact (entry 17)``; a match on a different listed plate names it
    (``fuzzy (entry 17: AB1284)``) and a covert entry says so at the end."""
    wl = message["watchlist"]
    entry = wl.get("entry_id") or "-"
    if wl.get("entry_plate") and wl["entry_plate"] != message["plate"]:
        entry = f"{entry}: {wl['entry_plate']}"
    line = (
        f"{message['observed_at']} {message['vehicle_id']} {message['camera']} "
        f"{message['plate']} {wl['list'] or '-'} P{wl['priority']} {wl['match']} (entry {entry})"
    )
    # Every field is the sender's: escaped, so none can end the line or drive the
    # terminal (the template itself holds no control characters).
    return escape_control(line + " covert" if wl.get("covert") else line)


def format_withdrawal(message: dict, hit: dict | None) -> str:
    """One human line: ``WITHDRAWN <hit's event id> (plate AB1238 from vehicle car-7:
    corrected in the car)``; for a hit HQ does not hold, says so."""
    what = f"plate {hit['plate']}" if hit is not None else "a hit HQ does not hold"
    return escape_control(
        f"WITHDRAWN {message['withdraws_event_id']} ({what} from vehicle "
        f"{message['vehicle_id']}: {message['reason']} in the car)"
    )


def withdrawal_summary_json(message: dict, hit: dict | None) -> dict:
    """A withdrawal for printing as JSON: the message, and the plate of the hit it
    withdraws (null when HQ does not hold that hit)."""
    return {**message, "plate": hit["plate"] if hit is not None else None}


def format_conflict(message: dict, first: dict) -> str:
    """A hit stored as a conflict: its :func:`format_hit` line marked ``CONFLICT``,
    naming the vehicle that used its ``event_id`` first."""
    return escape_control(
        f"CONFLICT {format_hit(message)} "
        f"[event_id {message['event_id']} first used by {first['vehicle_id']}]"
    )


# --- the subscriber ----------------------------------------------------------------


@dataclass(slots=True)
class _Counters:
    received: int = 0
    hits: int = 0
    statuses: int = 0
    audit: int = 0
    duplicates: int = 0
    #: Hits stored that reused another message's event_id.
    conflicts: int = 0
    withdrawals: int = 0
    #: Withdrawals stored that named no hit HQ held.
    withdrawals_unknown: int = 0
    ignored: int = 0
    store_errors: int = 0
    connects: int = 0


HitCallback = Callable[[dict], None]
#: ``on_status(message, previous_state)``: a vehicle's status changed state (or was
#: seen for the first time, ``previous_state`` None).
StatusCallback = Callable[[dict, str | None], None]
#: ``on_conflict(message, first)``: a hit was stored as a conflict of ``first``, the
#: message stored earlier with the same ``event_id``.
ConflictCallback = Callable[[dict, dict], None]
#: ``on_withdrawal(message, hit)``: a withdrawal was stored; ``hit`` is the message of
#: the hit it withdraws, or None when HQ holds no such hit.
WithdrawalCallback = Callable[[dict, dict | None], None]


class HqSubscriber:
    """Receives every vehicle's hits, status and audit records into a
    :class:`HitStore` (owned by the caller, open while this runs).

    ``on_hit`` is called on paho's thread for each new hit (never a duplicate),
    after it is stored; ``on_conflict`` instead for a hit stored as a conflict;
    ``on_status`` when a vehicle's state changes; ``on_withdrawal`` for each new
    withdrawal. An exception in any of them is logged and changes nothing else.
    """

    def __init__(
        self,
        config: MqttConfig,
        store: HitStore,
        *,
        client_id: str = DEFAULT_CLIENT_ID,
        prefix: str | None = None,
        on_hit: HitCallback | None = None,
        on_status: StatusCallback | None = None,
        on_conflict: ConflictCallback | None = None,
        on_withdrawal: WithdrawalCallback | None = None,
    ):
        if not config.host:
            raise ValueError("no broker host")
        self.config = config
        self.store = store
        self.client_id = client_id
        self.prefix = prefix if prefix is not None else config.topic_prefix
        self.on_hit = on_hit
        self.on_status = on_status
        self.on_conflict = on_conflict
        self.on_withdrawal = on_withdrawal
        self._lock = threading.Lock()
        self._counters = _Counters()
        self._rejected: Counter[str] = Counter()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._subscribe_mid: int | None = None
        self._closing = False
        self._started = False
        #: Whether the broker still had our session at the last connect.
        self.session_present: bool | None = None
        self._client = new_client(config, client_id)
        self._client.manual_ack_set(True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> HqSubscriber:
        connect(self._client, self.config, persistent=True)
        self._client.loop_start()
        self._started = True
        log.info(
            "HQ: connecting to %s:%d as %r (persistent session)",
            self.config.host,
            self.config.port,
            self.client_id,
        )
        return self

    def close(self) -> None:
        """Disconnect (the broker keeps the session and queues for it) and stop the
        network thread; no callback runs after this returns."""
        self._closing = True
        if not self._started:
            return
        self._started = False
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()
        self._subscribed.clear()

    def __enter__(self) -> HqSubscriber:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_subscribed(self, timeout: float) -> bool:
        """Wait until connected and subscribed to every topic; False on timeout."""
        return self._subscribed.wait(timeout)

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Poll ``predicate`` until it is true; False on timeout."""
        return poll_until(predicate, timeout)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            c = self._counters
            return {
                "connected": self.connected,
                "connects": c.connects,
                "received": c.received,
                "stored": c.hits + c.conflicts + c.statuses + c.audit + c.withdrawals,
                "hits": c.hits,
                "conflicts": c.conflicts,
                "withdrawals": c.withdrawals,
                "withdrawals_unknown": c.withdrawals_unknown,
                "statuses": c.statuses,
                "audit": c.audit,
                "duplicates": c.duplicates,
                "ignored": c.ignored,
                "rejected": dict(sorted(self._rejected.items())),
                "store_errors": c.store_errors,
            }

    # ----------------------------------------------------------------- paho thread

    def _subscriptions(self) -> list[tuple[str, SubscribeOptions]]:
        # Retained messages (each vehicle's last status) only with a new subscription:
        # a resumed session gets what it missed from its queue instead.
        options = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
        return [(Topics.all_vehicles(self.prefix, kind), options) for kind in KINDS]

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_ok(reason_code):
            log.error("HQ: broker %s refused the connection: %s", self.config.host, reason_code)
            return
        self.session_present = bool(flags.session_present)
        with self._lock:
            self._counters.connects += 1
        self._connected.set()
        log.info(
            "HQ: connected to %s:%d (session %s)",
            self.config.host,
            self.config.port,
            "resumed" if self.session_present else "new",
        )
        # Always (re)subscribe: a broker restarted without persistence has forgotten
        # the session, and subscribing again to the same filters changes nothing.
        result, mid = client.subscribe(self._subscriptions())
        if result != paho.MQTT_ERR_SUCCESS:
            log.error("HQ: subscribe failed: %s", paho.error_string(result))
        self._subscribe_mid = mid

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if mid != self._subscribe_mid:
            return
        failed = [
            topic
            for (topic, _qos), code in zip(self._subscriptions(), reason_codes, strict=False)
            if not reason_ok(code)
        ]
        if failed:
            log.error("HQ: broker refused the subscription to %s", ", ".join(failed))
            return
        if any(getattr(code, "value", 1) < 1 for code in reason_codes):
            log.warning("HQ: broker granted QoS 0 only; messages may be lost")
        log.info("HQ: subscribed to %s", ", ".join(t for t, _ in self._subscriptions()))
        self._subscribed.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        self._subscribed.clear()
        if was and not self._closing:
            log.warning("HQ: lost the broker (%s); reconnecting", reason_code)

    def _on_message(self, client, userdata, message) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = repr(getattr(message, "_topic", b"?"))
        payload = bytes(message.payload)
        try:
            stored = self.handle(topic, payload)
        except Exception as exc:
            # A fault of ours, not of the storage: sending the message again would
            # fail again and stall everything behind it, so it is kept as a reject.
            log.exception("HQ: handling a message on %s failed", topic)
            self._reject(topic, Reject("internal-error", type(exc).__name__), payload)
            stored = True
        if stored:
            client.ack(message.mid, message.qos)
            return
        # Not acknowledged: the broker sends it again when the session resumes. Drop
        # the connection to resume it now (paho reconnects with its back-off).
        with self._lock:
            self._counters.store_errors += 1
        sock = client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    # ----------------------------------------------------------------- processing

    def handle(self, topic: str, payload: bytes) -> bool:
        """Validate and store one message. True when it is dealt with (stored, a
        duplicate, ignored or rejected) and may be acknowledged; False when storing
        it failed and the broker should send it again."""
        with self._lock:
            self._counters.received += 1
        try:
            vehicle_id, kind = self._parse_topic(topic)
            if kind == "status" and not payload:
                # An empty retained message clears a vehicle's status topic (an
                # administrator retiring a car): nothing to store.
                log.info("HQ: status of %s cleared on the broker", vehicle_id)
                with self._lock:
                    self._counters.ignored += 1
                return True
            message = parse_object(payload)
            if kind == "hit" and message.get("schema") == WITHDRAWAL_SCHEMA:
                # Beside the hits on their topic: a hit taken back.
                kind = "withdrawal"
                validate_withdrawal(message, vehicle_id)
            elif kind == "hit":
                validate_hit(message, vehicle_id)
            elif kind == "status":
                validate_status(message, vehicle_id)
            else:
                validate_audit(message, vehicle_id)
        except Reject as reject:
            self._reject(topic, reject, payload)
            return True
        try:
            if kind == "hit":
                self._store_hit(message)
            elif kind == "withdrawal":
                self._store_withdrawal(message)
            elif kind == "status":
                self._store_status(message)
            else:
                self._store_audit(vehicle_id, message)
        except (sqlite3.Error, OSError) as exc:
            log.error("HQ: storing a %s from %s failed (%s); left for redelivery", kind, topic, exc)
            return False
        return True

    def _parse_topic(self, topic: str) -> tuple[str, str]:
        head = self.prefix + "/"
        parts = topic[len(head) :].split("/") if topic.startswith(head) else []
        # A vehicle id is what the configuration allows (and the broker's ACL keys
        # on): nothing else is a vehicle's topic.
        if len(parts) != 2 or not VEHICLE_ID.fullmatch(parts[0]) or parts[1] not in KINDS:
            raise Reject("bad-topic", _short(topic, 120))
        return parts[0], parts[1]

    def _reject(self, topic: str, reject: Reject, payload: bytes) -> None:
        with self._lock:
            self._rejected[reject.kind] += 1
        log.warning("HQ: rejected a message on %s: %s", _short(topic, 120), reject)
        try:
            self.store.add_reject(topic, str(reject), payload)
        except (sqlite3.Error, OSError) as exc:
            log.error("HQ: recording a rejected message failed: %s", exc)

    def _store_hit(self, message: dict) -> None:
        stored = self.store.add_hit(message)
        if stored.outcome is StoreOutcome.DUPLICATE:
            with self._lock:
                self._counters.duplicates += 1
            log.debug("HQ: duplicate hit %s", message["event_id"])
            return
        if stored.outcome is StoreOutcome.CONFLICT:
            self._conflicting_hit(message, stored.first or {})
            return
        with self._lock:
            self._counters.hits += 1
        log.info(
            "HQ: hit %s from %s (%s)",
            message["event_id"],
            message["vehicle_id"],
            message["watchlist"]["list"],
        )
        if self.on_hit:
            try:
                self.on_hit(message)
            except Exception:
                log.exception("HQ: the hit callback failed for %s", message["event_id"])

    def _conflicting_hit(self, message: dict, first: dict) -> None:
        with self._lock:
            self._counters.conflicts += 1
        log.warning(
            "HQ: conflicting hit %s from %s: its event_id was first used by %s with other "
            "content; stored and flagged as a conflict",
            message["event_id"],
            message["vehicle_id"],
            first.get("vehicle_id"),
        )
        if self.on_conflict:
            try:
                self.on_conflict(message, first)
            except Exception:
                log.exception("HQ: the conflict callback failed for %s", message["event_id"])

    def _store_withdrawal(self, message: dict) -> None:
        stored = self.store.add_withdrawal(message)
        if stored.outcome is StoreOutcome.DUPLICATE:
            with self._lock:
                self._counters.duplicates += 1
            log.debug("HQ: duplicate withdrawal %s", message["event_id"])
            return
        with self._lock:
            self._counters.withdrawals += 1
            if stored.hit is None:
                self._counters.withdrawals_unknown += 1
        if stored.outcome is StoreOutcome.CONFLICT:
            log.warning(
                "HQ: withdrawal %s from %s reuses the event_id of another withdrawal; stored",
                message["event_id"],
                message["vehicle_id"],
            )
        if stored.hit is None:
            log.warning(
                "HQ: withdrawal %s from %s names hit %s, which HQ does not hold: stored "
                "and flagged (hit_missing)",
                message["event_id"],
                message["vehicle_id"],
                message["withdraws_event_id"],
            )
        else:
            log.info(
                "HQ: hit %s withdrawn by %s (%s)",
                message["withdraws_event_id"],
                message["vehicle_id"],
                message["reason"],
            )
        if self.on_withdrawal:
            try:
                self.on_withdrawal(message, stored.hit)
            except Exception:
                log.exception("HQ: the withdrawal callback failed for %s", message["event_id"])

    def _store_status(self, message: dict) -> None:
        previous = self.store.set_status(message)
        with self._lock:
            self._counters.statuses += 1
        if previous != message["state"]:
            log.info("HQ: %s is %s", message["vehicle_id"], message["state"])
            if self.on_status:
                try:
                    self.on_status(message, previous)
                except Exception:
                    log.exception("HQ: the status callback failed")

    def _store_audit(self, vehicle_id: str, record: dict) -> None:
        if self.store.add_audit(vehicle_id, record):
            with self._lock:
                self._counters.audit += 1
        else:
            with self._lock:
                self._counters.duplicates += 1


# --- command line -------------------------------------------------------------------


def _mqtt_config(args: argparse.Namespace) -> MqttConfig:
    try:
        return broker_config(args, client_id=DEFAULT_CLIENT_ID, password_env=PASSWORD_ENV)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def cmd_hq(args: argparse.Namespace) -> int:
    config = _mqtt_config(args)
    duration = getattr(args, "duration", None)
    if duration is not None and duration <= 0:
        raise UsageError(f"--duration {duration}: expected a positive number of seconds")
    as_json = bool(getattr(args, "json", False))
    db = Path(getattr(args, "db", None) or DEFAULT_DB)
    stop = threading.Event()

    def write(line: str, stream) -> None:
        try:
            # Escaped here too: whatever a line is made of, nothing a vehicle sent
            # reaches the terminal as a control character.
            print(escape_control(line), file=stream, flush=True)
        except BrokenPipeError:
            # The reader went away: stop (the hits are stored all the same).
            # Later writes (and the interpreter's final flush) go nowhere.
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, stream.fileno())
                os.close(devnull)
            stop.set()

    def on_hit(message: dict) -> None:
        write(json_line(hit_summary_json(message)) if as_json else format_hit(message), sys.stdout)

    def on_conflict(message: dict, first: dict) -> None:
        if as_json:
            summary = hit_summary_json(message)
            summary["conflict_with"] = {
                key: first.get(key) for key in ("vehicle_id", "camera", "plate", "observed_at")
            }
            write(json_line(summary), sys.stdout)
        else:
            write(format_conflict(message, first), sys.stdout)

    def on_withdrawal(message: dict, hit: dict | None) -> None:
        if as_json:
            write(json_line(withdrawal_summary_json(message, hit)), sys.stdout)
        else:
            write(format_withdrawal(message, hit), sys.stdout)

    def on_status(message: dict, previous: str | None) -> None:
        if not as_json:
            at = message.get("at") or now_iso()
            write(f"{at} {message['vehicle_id']} {message['state']}", sys.stderr)

    try:
        store = HitStore(db)
    except (sqlite3.Error, OSError, DatabaseVersionError) as exc:
        raise UsageError(f"--db {db}: cannot open: {exc}") from None
    with store:
        try:
            subscriber = HqSubscriber(
                config,
                store,
                client_id=config.client_id,
                prefix=config.topic_prefix,
                on_hit=on_hit,
                on_status=on_status,
                on_conflict=on_conflict,
                on_withdrawal=on_withdrawal,
            )
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise UsageError(f"TLS set-up failed: {exc}") from None

        def on_signal(signum, _frame):
            # The first signal stops cleanly; a second one acts as if we had not
            # caught it (an operator's repeated Ctrl-C must always work).
            signal.signal(signum, previous[signum])
            stop.set()

        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
            for sig in previous:
                signal.signal(sig, on_signal)
        try:
            with subscriber:
                stop.wait(duration)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        stats = subscriber.stats()
    stats["db"] = str(db)
    print(json.dumps(stats), file=sys.stderr, flush=True)
    return 0
