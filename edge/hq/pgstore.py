"""HQ's database of hits on PostgreSQL (psycopg 3): the same records and the same
outcomes as :class:`edge.hq.store.HitStore` (SQLite), for an HQ that runs several
workers or on the database servers police IT already operates.

``lpr-edge hq --db postgresql://user@host:port/dbname`` selects it. The password is
never in the URL (a command line is visible to every user of the machine): libpq
reads it from ``PGPASSWORD`` (or ``~/.pgpass``). A URL holding one is refused, and
every URL shown is shown with its password masked (:func:`mask_url`).

Several HQ workers may write the same database at once. Each message is one
transaction, serialised with any other touching the same ``event_id`` by a
transaction-scoped advisory lock, so a hit redelivered to another worker is still
recognised as a duplicate, a same-id message with other content is still stored and
flagged as a conflict, and a withdrawal racing its hit still marks it.

The layout is versioned in ``schema_version`` (one row per migration applied) and
brought up to date when the store opens, under an advisory lock so that workers
starting together migrate once: :data:`MIGRATIONS` maps each version to the SQL that
reaches it from the one before (1 creates everything). A database at a version this
HQ does not know is refused (:class:`edge.hq.store.DatabaseVersionError`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from edge.hq.console import log
from edge.hq.store import (
    DECISION_INSERT,
    MAX_REJECT_ROWS,
    REJECT_EXCERPT_BYTES,
    DatabaseVersionError,
    StoredDecision,
    StoredHit,
    StoredWithdrawal,
    StoreOutcome,
    StoreRetention,
    StoreWrites,
    WriteOp,
    WriteResult,
    decision_columns,
    dump_message,
)
from edge.hq.validate import REASON_CHARS
from edge.timefmt import now_iso

#: URL schemes that select this store.
SCHEMES = ("postgresql", "postgres")

#: Advisory lock keys (first of two int4 keys): the migration, then one per kind of
#: record keyed by ``hashtext`` of its id.
_LOCK_MIGRATE, _LOCK_HIT, _LOCK_WITHDRAWAL, _LOCK_STATUS = 72_2201, 72_2202, 72_2203, 72_2204
#: Held by the worker purging (for the whole purge), and by each purge batch, hold and
#: release (for its transaction): one purge at a time across workers, and a hold never
#: lands between a batch's check of the holds and its delete.
_LOCK_PURGE, _LOCK_HOLDS = 72_2205, 72_2206
_LOCK_DECISION = 72_2207
#: An audit record's id: two batches inserting the same two audit ids in opposite
#: orders would otherwise wait on each other's unique-index entry (a deadlock).
_LOCK_AUDIT = 72_2208

#: Takes a batch's advisory locks, each once, in one order every worker shares
#: (lock class, then hash): two batches needing some of the same locks cannot each
#: hold one the other waits for. (OFFSET 0 keeps the sorted subquery as it is, so
#: the locks are taken in its order.)
_LOCK_SORTED = (
    "SELECT count(pg_advisory_xact_lock(k, h)) FROM (SELECT DISTINCT k, hashtext(t) AS h "
    "FROM unnest(%s::int[], %s::text[]) AS u (k, t) ORDER BY k, h OFFSET 0) AS s"
)

#: Version -> SQL bringing the database from the version before to it. Add a
#: version by appending (never edit a released one).
MIGRATIONS: dict[int, str] = {
    1: """
CREATE TABLE hits (
    id           BIGSERIAL PRIMARY KEY,
    event_id     TEXT NOT NULL,
    vehicle_id   TEXT NOT NULL,
    camera       TEXT NOT NULL,
    plate        TEXT NOT NULL,
    observed_at  TEXT NOT NULL,
    received_at  TEXT NOT NULL,
    "list"       TEXT NOT NULL,
    priority     INTEGER NOT NULL,
    "match"      TEXT NOT NULL,
    covert       BOOLEAN NOT NULL,
    payload      TEXT NOT NULL,
    conflict_of  BIGINT REFERENCES hits (id),
    withdrawn_by TEXT
);
CREATE INDEX hits_event ON hits (event_id);
CREATE INDEX hits_conflicts ON hits (conflict_of) WHERE conflict_of IS NOT NULL;
CREATE INDEX hits_plate ON hits (plate, observed_at);
CREATE INDEX hits_observed ON hits (observed_at);
CREATE INDEX hits_vehicle ON hits (vehicle_id, observed_at);
CREATE INDEX hits_list ON hits ("list", observed_at);
CREATE TABLE vehicle_status (
    vehicle_id  TEXT PRIMARY KEY,
    state       TEXT NOT NULL,
    "at"        TEXT,
    received_at TEXT NOT NULL,
    payload     TEXT NOT NULL
);
CREATE TABLE audit (
    event_id    TEXT PRIMARY KEY,
    vehicle_id  TEXT NOT NULL,
    received_at TEXT NOT NULL,
    payload     TEXT NOT NULL
);
CREATE TABLE withdrawals (
    id                 BIGSERIAL PRIMARY KEY,
    event_id           TEXT NOT NULL,
    vehicle_id         TEXT NOT NULL,
    withdraws_event_id TEXT NOT NULL,
    reason             TEXT NOT NULL,
    "at"               TEXT NOT NULL,
    received_at        TEXT NOT NULL,
    hit_missing        INTEGER NOT NULL,
    payload            TEXT NOT NULL
);
CREATE INDEX withdrawals_event ON withdrawals (event_id);
CREATE INDEX withdrawals_of ON withdrawals (withdraws_event_id, vehicle_id);
CREATE TABLE rejects (
    id            BIGSERIAL PRIMARY KEY,
    received_at   TEXT NOT NULL,
    topic         TEXT NOT NULL,
    reason        TEXT NOT NULL,
    payload_bytes INTEGER NOT NULL,
    payload       TEXT NOT NULL
);
""",
    # HQ's own audit: who searched (or later purged, held) what, when, with how many results.
    2: """
CREATE TABLE hq_audit (
    id           BIGSERIAL PRIMARY KEY,
    "at"         TEXT NOT NULL,
    "user"       TEXT NOT NULL,
    action       TEXT NOT NULL,
    query        TEXT NOT NULL,
    result_count INTEGER NOT NULL
);
CREATE INDEX hq_audit_at ON hq_audit ("at");
""",
    # Retention and case holds (see edge.hq.store.StoreRetention): the holds, the
    # received_at indexes purges delete by, and conflict_of loses its foreign key: a
    # conflict is purged by its own age, and may outlive the first hit it names (the
    # flag stays, the row it named may be gone).
    3: """
CREATE TABLE case_holds (
    id          BIGSERIAL PRIMARY KEY,
    event_id    TEXT NOT NULL,
    case_ref    TEXT NOT NULL,
    reason      TEXT NOT NULL,
    held_by     TEXT NOT NULL,
    held_at     TEXT NOT NULL,
    released_by TEXT,
    released_at TEXT
);
CREATE UNIQUE INDEX case_holds_open ON case_holds (event_id, case_ref) WHERE released_at IS NULL;
CREATE INDEX hits_received ON hits (received_at);
CREATE INDEX withdrawals_received ON withdrawals (received_at);
CREATE INDEX audit_received ON audit (received_at);
CREATE INDEX rejects_received ON rejects (received_at);
ALTER TABLE hits DROP CONSTRAINT IF EXISTS hits_conflict_of_fkey;
""",
    # Officers' decisions on hits (lpr.decision/1): see edge.hq.store.DECISIONS_TABLE.
    4: """
CREATE TABLE decisions (
    id           BIGSERIAL PRIMARY KEY,
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
    conflict_of  BIGINT,
    payload      TEXT NOT NULL
);
CREATE INDEX decisions_event ON decisions (event_id);
CREATE INDEX decisions_of ON decisions (hit_event_id, vehicle_id);
CREATE INDEX decisions_received ON decisions (received_at);
""",
    # A hit's write in one round trip (see PostgresStore._add_hit): hq_insert_hit stores
    # a hit row and marks what came before it (its withdrawal, its decisions);
    # hq_store_hit does that when no row has the event_id yet, and otherwise stores
    # nothing and returns the rows that have it, for the caller to tell a redelivery
    # from a conflict (compared in Python, as SQLite's store does, so that both
    # stores judge "the same message" alike).
    5: """
CREATE FUNCTION hq_insert_hit(
    p_event_id TEXT, p_vehicle_id TEXT, p_camera TEXT, p_plate TEXT, p_observed_at TEXT,
    p_received_at TEXT, p_list TEXT, p_priority INTEGER, p_match TEXT, p_covert BOOLEAN,
    p_payload TEXT, p_conflict_of BIGINT
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_withdrawn_by TEXT;
BEGIN
    SELECT w.event_id INTO v_withdrawn_by FROM withdrawals w
        WHERE w.withdraws_event_id = p_event_id AND w.vehicle_id = p_vehicle_id
        ORDER BY w.id LIMIT 1;
    INSERT INTO hits (event_id, vehicle_id, camera, plate, observed_at, received_at, "list",
                      priority, "match", covert, payload, conflict_of, withdrawn_by)
        VALUES (p_event_id, p_vehicle_id, p_camera, p_plate, p_observed_at, p_received_at,
                p_list, p_priority, p_match, p_covert, p_payload, p_conflict_of,
                v_withdrawn_by);
    IF v_withdrawn_by IS NOT NULL THEN
        UPDATE withdrawals SET hit_missing = 0
            WHERE withdraws_event_id = p_event_id AND vehicle_id = p_vehicle_id;
    END IF;
    UPDATE decisions SET hit_missing = 0
        WHERE hit_event_id = p_event_id AND vehicle_id = p_vehicle_id AND hit_missing = 1;
END
$$;
CREATE FUNCTION hq_store_hit(
    p_event_id TEXT, p_vehicle_id TEXT, p_camera TEXT, p_plate TEXT, p_observed_at TEXT,
    p_received_at TEXT, p_list TEXT, p_priority INTEGER, p_match TEXT, p_covert BOOLEAN,
    p_payload TEXT
) RETURNS TABLE (o_id BIGINT, o_vehicle_id TEXT, o_payload TEXT) LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY SELECT h.id, h.vehicle_id, h.payload FROM hits h
        WHERE h.event_id = p_event_id ORDER BY h.id;
    IF FOUND THEN
        RETURN;
    END IF;
    PERFORM hq_insert_hit(p_event_id, p_vehicle_id, p_camera, p_plate, p_observed_at,
                          p_received_at, p_list, p_priority, p_match, p_covert, p_payload,
                          NULL);
END
$$;
""",
}

#: The layout this HQ writes: the last migration's version.
SCHEMA_VERSION = max(MIGRATIONS)


def is_postgres_url(db: str) -> bool:
    return urlsplit(db).scheme in SCHEMES


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs and errors)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def url_password(url: str) -> bool:
    """Whether ``url`` holds a password."""
    try:
        return urlsplit(url).password is not None
    except ValueError:
        return False


def _lock_keys(op: WriteOp) -> list[tuple[int, str]]:
    """The advisory locks (class, id) a write needs: the hit's for anything about
    a hit (a hit, its withdrawal, a decision on it), and its own record's."""
    kind, message = op[0], op[1]
    if kind == "hit":
        return [(_LOCK_HIT, message["event_id"])]
    if kind == "withdrawal":
        return [(_LOCK_HIT, message["withdraws_event_id"]), (_LOCK_WITHDRAWAL, message["event_id"])]
    if kind == "decision":
        return [(_LOCK_HIT, message["hit_event_id"]), (_LOCK_DECISION, message["event_id"])]
    if kind == "status":
        return [(_LOCK_STATUS, message["vehicle_id"])]
    return [(_LOCK_AUDIT, message["event_id"])]


def _migrate(db: psycopg.Connection) -> int:
    """Bring the database to :data:`SCHEMA_VERSION`; returns the version found."""
    with db.transaction():
        # Workers starting together: one migrates, the others wait, then see it done.
        db.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_MIGRATE,))
        db.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            "version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        found = db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
        if found > SCHEMA_VERSION:
            raise DatabaseVersionError(
                f"made by a newer HQ (layout version {found}; this one knows {SCHEMA_VERSION})"
            )
        for version in range(found + 1, SCHEMA_VERSION + 1):
            # One transaction: a failure leaves the previous layout.
            db.execute(MIGRATIONS[version])
            db.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
    if found < SCHEMA_VERSION:
        log.info("HQ: database layout brought from version %d to %d", found, SCHEMA_VERSION)
    return found


class PostgresStore(StoreRetention, StoreWrites):
    """HQ's database on PostgreSQL, with the methods and outcomes of
    :class:`edge.hq.store.HitStore` (see there). A row is committed when the method
    that wrote it returns.

    One connection, used under a lock (the subscriber's storing thread writes, the owner reads). A
    connection lost between messages is opened again at the next call; an error while
    writing raises one of :attr:`transient_errors`, which the subscriber treats as a
    failed commit (the message is not acknowledged and comes again).
    """

    MARK = "%s"
    # SQLite compares text by its bytes; PostgreSQL by the database's locale unless
    # told otherwise.
    BYTE_ORDER = ' COLLATE "C"'

    #: Errors that say the database could not be reached or could not commit now
    #: (connection lost, server shut down, disk full): worth trying again later.
    transient_errors: tuple[type[Exception], ...] = (
        psycopg.OperationalError,
        psycopg.InterfaceError,
    )

    def __init__(
        self, url: str, *, max_rejects: int = MAX_REJECT_ROWS, connect_timeout: float = 10.0
    ):
        if url_password(url):
            raise ValueError(
                "a password in the URL is refused (a command line is visible to other "
                "users): set PGPASSWORD instead"
            )
        self.url = url
        self.display_url = mask_url(url)
        self.max_rejects = max_rejects
        self.connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._db = self._connect()
        try:
            self.found_version = _migrate(self._db)
        except BaseException:
            self._db.close()
            raise

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(
            self.url,
            autocommit=True,
            connect_timeout=max(1, int(self.connect_timeout)),
            application_name="lpr-edge-hq",
        )

    def _conn(self) -> psycopg.Connection:
        """The connection, opened again if the last one was lost (under the lock)."""
        if self._db.closed or self._db.broken:
            log.warning("HQ: reconnecting to the database %s", self.display_url)
            self._db = self._connect()
        return self._db

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def schema_version(self) -> int:
        with self._lock:
            return self._conn().execute("SELECT MAX(version) FROM schema_version").fetchone()[0]

    # ----------------------------------------------------------------- writes

    def add_batch(self, ops: Sequence[WriteOp]) -> list[WriteResult]:
        """See :meth:`edge.hq.store.HitStore.add_batch`: one transaction, one commit.
        Every advisory lock the batch needs is taken first, in the shared order
        (:data:`_LOCK_SORTED`), and held to the commit."""
        with self._lock:
            db = self._conn()
            with db.transaction():
                keys = [key for op in ops for key in _lock_keys(op)]
                if keys:
                    db.execute(_LOCK_SORTED, ([k for k, _ in keys], [t for _, t in keys]))
                return [self._write(db, op) for op in ops]

    def _write(self, db: psycopg.Connection, op: WriteOp) -> WriteResult:
        kind = op[0]
        if kind == "hit":
            return self._add_hit(db, op[1])
        if kind == "withdrawal":
            return self._add_withdrawal(db, op[1])
        if kind == "decision":
            return self._add_decision(db, op[1])
        if kind == "status":
            return self._set_status(db, op[1])
        if kind == "audit":
            return self._add_audit(db, op[1], op[2])
        raise ValueError(f"unknown write {kind!r}")

    def _add_hit(self, db: psycopg.Connection, message: dict) -> StoredHit:
        # Under the hit's lock (add_batch). The usual case, an event id not seen
        # before, is one round trip: hq_store_hit stores it and returns nothing.
        vehicle_id = message["vehicle_id"]
        values = self._hit_columns(message)
        same_id = db.execute(
            "SELECT o_id, o_vehicle_id, o_payload FROM "
            "hq_store_hit(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            values,
        ).fetchall()
        if not same_id:
            return StoredHit(StoreOutcome.NEW)
        for _row_id, stored_vehicle, payload in same_id:
            if stored_vehicle == vehicle_id and json.loads(payload) == message:
                return StoredHit(StoreOutcome.DUPLICATE)
        db.execute(
            "SELECT hq_insert_hit(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (*values, same_id[0][0]),
        )
        return StoredHit(StoreOutcome.CONFLICT, json.loads(same_id[0][2]))

    def _add_withdrawal(self, db: psycopg.Connection, message: dict) -> StoredWithdrawal:
        event_id, vehicle_id = message["event_id"], message["vehicle_id"]
        withdrawn = message["withdraws_event_id"]
        same_id = db.execute(
            "SELECT vehicle_id, payload FROM withdrawals WHERE event_id = %s",
            (event_id,),
        ).fetchall()
        if any(v == vehicle_id and json.loads(p) == message for v, p in same_id):
            return StoredWithdrawal(StoreOutcome.DUPLICATE)
        hit = db.execute(
            "SELECT payload FROM hits WHERE event_id = %s AND vehicle_id = %s ORDER BY id LIMIT 1",
            (withdrawn, vehicle_id),
        ).fetchone()
        db.execute(
            "INSERT INTO withdrawals (event_id, vehicle_id, withdraws_event_id, "
            'reason, "at", received_at, hit_missing, payload) '
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
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
        db.execute(
            "UPDATE hits SET withdrawn_by = %s WHERE event_id = %s AND vehicle_id = %s "
            "AND withdrawn_by IS NULL",
            (event_id, withdrawn, vehicle_id),
        )
        outcome = StoreOutcome.CONFLICT if same_id else StoreOutcome.NEW
        return StoredWithdrawal(outcome, json.loads(hit[0]) if hit else None)

    def _set_status(self, db: psycopg.Connection, message: dict) -> str | None:
        vehicle_id = message["vehicle_id"]
        row = db.execute(
            "SELECT state FROM vehicle_status WHERE vehicle_id = %s", (vehicle_id,)
        ).fetchone()
        db.execute(
            'INSERT INTO vehicle_status (vehicle_id, state, "at", received_at, payload) '
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (vehicle_id) DO UPDATE SET "
            'state = excluded.state, "at" = excluded."at", '
            "received_at = excluded.received_at, payload = excluded.payload",
            (vehicle_id, message["state"], message.get("at"), now_iso(), dump_message(message)),
        )
        return row[0] if row else None

    def _add_decision(self, db: psycopg.Connection, message: dict) -> StoredDecision:
        vehicle_id, hit_event_id = message["vehicle_id"], message["hit_event_id"]
        same_id = db.execute(
            "SELECT id, vehicle_id, payload FROM decisions WHERE event_id = %s ORDER BY id",
            (message["event_id"],),
        ).fetchall()
        if any(v == vehicle_id and json.loads(p) == message for _i, v, p in same_id):
            return StoredDecision(StoreOutcome.DUPLICATE)
        hit = db.execute(
            "SELECT payload FROM hits WHERE event_id = %s AND vehicle_id = %s ORDER BY id LIMIT 1",
            (hit_event_id, vehicle_id),
        ).fetchone()
        conflict_of = same_id[0][0] if same_id else None
        db.execute(
            DECISION_INSERT.replace("?", "%s"),
            (*decision_columns(message, now_iso(), hit is None), conflict_of),
        )
        hit_message = json.loads(hit[0]) if hit else None
        if conflict_of is None:
            return StoredDecision(StoreOutcome.NEW, hit_message)
        return StoredDecision(StoreOutcome.CONFLICT, hit_message, json.loads(same_id[0][2]))

    def _add_audit(self, db: psycopg.Connection, record: dict, vehicle_id: str) -> bool:
        cursor = db.execute(
            "INSERT INTO audit (event_id, vehicle_id, received_at, payload) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (event_id) DO NOTHING",
            (record["event_id"], vehicle_id, now_iso(), dump_message(record)),
        )
        return cursor.rowcount == 1

    def add_hq_audit(self, user: str, action: str, query: dict, result_count: int) -> None:
        """See :meth:`edge.hq.store.HitStore.add_hq_audit`."""
        with self._lock:
            self._conn().execute(
                self._audit_insert, self._audit_row(user, action, query, result_count)
            )

    def add_reject(self, topic: str, reason: str, payload: bytes) -> None:
        # PostgreSQL text holds no NUL character: shown as U+FFFD like undecodable bytes.
        excerpt = (
            payload[:REJECT_EXCERPT_BYTES]
            .decode("utf-8", errors="replace")
            .replace("\x00", "\ufffd")
        )
        with self._lock:
            db = self._conn()
            row_id = db.execute(
                "INSERT INTO rejects (received_at, topic, reason, payload_bytes, payload) "
                "VALUES (%s, %s, %s, %s, %s) RETURNING id",
                (
                    now_iso(),
                    topic.replace("\x00", "\ufffd"),
                    reason[:REASON_CHARS].replace("\x00", "\ufffd"),
                    len(payload),
                    excerpt,
                ),
            ).fetchone()[0]
            if row_id % 100 == 0:
                db.execute("DELETE FROM rejects WHERE id <= %s", (row_id - self.max_rejects,))

    @contextmanager
    def _batch(self) -> Iterator[Callable[..., Any]]:
        with self._lock:
            db = self._conn()
            with db.transaction():
                db.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_HOLDS,))
                yield db.execute

    @contextmanager
    def _purge_turn(self, wait: bool) -> Iterator[bool]:
        # A session lock, held across the purge's many transactions; released at the
        # end, or by the server should this connection be lost.
        with self._lock:
            db = self._conn()
            if wait:
                db.execute("SELECT pg_advisory_lock(%s)", (_LOCK_PURGE,))
                turn = True
            else:
                turn = db.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_PURGE,)).fetchone()[0]
        try:
            yield turn
        finally:
            if turn:
                with self._lock:
                    if not (self._db.closed or self._db.broken):
                        self._db.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_PURGE,))

    # ----------------------------------------------------------------- reads

    def _fetch(self, sql: str, params: Sequence = ()) -> tuple[list[str], list[tuple]]:
        cursor = self._conn().execute(sql, params)
        return [d.name for d in cursor.description or ()], cursor.fetchall()
