"""The audit log: an append-only, hash-chained record of what was done on a vehicle.

Kept as JSON lines in the state directory (``audit.jsonl``, mode 0600) and also sent
to HQ on ``{prefix}/{vehicle_id}/audit`` through the outbox (the owner passes a
``sink`` that adds each record to it). It records service start and stop (with the
:func:`config_hash`), every watchlist version applied or rejected (with the key that
signed it), every manual ``watchlist check`` query, every purge with its counts and
every configuration change. ``lpr-edge audit verify`` checks the chain.

Record format (``lpr.audit/1``, a public contract: change it only by adding keys)
-------------------------------------------------------------------------------

One JSON object per line::

    {"action": "watchlist.query", "at": "2026-11-23T08:00:00.125Z",
     "details": {"plate": "AB1234", ...}, "event_id": "<UUIDv7>",
     "hash": "<64 hex>", "prev": "<64 hex>", "schema": "lpr.audit/1", "seq": 7,
     "vehicle_id": "car-7"}

* ``schema``: ``"lpr.audit/1"``.
* ``seq``: 1 for the first record of the file, then 2, 3, ... without gaps.
* ``event_id``: a UUIDv7 (HQ deduplicates by it, as for hits).
* ``vehicle_id``: ``[vehicle] id``.
* ``at``: when it was recorded, UTC ISO-8601 with milliseconds and ``Z``.
* ``action``: what happened, dotted lower case: ``service.start``, ``service.stop``,
  ``watchlist.applied``, ``watchlist.rejected``, ``watchlist.query``, ``purge``,
  ``config.changed``, ``audit.repaired`` (written by this module), ``hit.decision``
  (the officer's accept or reject on the in-car console), ...
* ``details``: an object, specific to the action.
* ``prev``: the ``hash`` of the previous record; 64 zeros (:data:`GENESIS`) for the
  first.
* ``hash``: SHA-256 (lower-case hex) of the record's canonical JSON without the
  ``hash`` key.

**Canonical JSON** (:func:`canonical`): ``json.dumps(obj, sort_keys=True,
separators=(",", ":"), ensure_ascii=False, allow_nan=False)`` encoded as UTF-8, i.e.
keys sorted at every level, no whitespace, non-ASCII characters as themselves.

So ``hash`` covers every other key, ``prev`` included, and each record commits to the
whole chain before it. Each line of the file is exactly the canonical JSON of the
whole record (``hash`` included) followed by ``\\n``; :func:`verify_chain` checks that
too, so not even a space can be changed unnoticed. The MQTT payload sent to HQ is the
same bytes without the ``\\n``.

What the chain detects: an edited record (its ``hash`` no longer matches; if the
editor recomputed it, the next record's ``prev`` no longer does), a deleted, inserted
or moved record (``prev`` and ``seq``), a forged record appended without the right
``prev``. It does not stop someone who can write the file from rewriting the whole
chain after the point they change: HQ's copy, received as the records are written,
is what makes that detectable (verify a vehicle's records with :func:`verify_records`).

Privacy
-------

Details must never hold the plate text of a read that was not a hit (the PD(P)O: a
non-hit read is not kept); callers are responsible for that. A manual watchlist query
does record the queried plate, and should record who asked: auditing queries is the
point. The file is mode 0600 for that reason.

Durability and concurrency
--------------------------

Each record is one ``write`` to a file opened with ``O_APPEND``, followed by
``fsync``, under a thread lock and an exclusive ``flock`` on the file: the service and
a ``lpr-edge watchlist check`` run by hand can append to the same log, each process
picking the chain up from the file's last line when another one wrote since. On open
only the tail of the file is read (backwards from the end to the last complete line).
A torn last line (power lost in the middle of a write) is moved to a side file
``<stem>.torn-<UTC time>`` next to the log, the log is truncated to its last complete
line and an ``audit.repaired`` record says so; complete lines that are not records are
left in place (they are evidence) and reported the same way, the chain continuing
from the last record before them.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.config import Config, load_config, to_dict
from edge.files import sync_folder
from edge.ids import new_event_id
from edge.timefmt import now_iso

log = logging.getLogger("edge.audit")

SCHEMA = "lpr.audit/1"
#: ``prev`` of the first record.
GENESIS = "0" * 64
#: The log's file name in the state directory.
AUDIT_FILE = "audit.jsonl"

SERVICE_START = "service.start"
SERVICE_STOP = "service.stop"
WATCHLIST_APPLIED = "watchlist.applied"
WATCHLIST_REJECTED = "watchlist.rejected"
WATCHLIST_QUERY = "watchlist.query"
PURGE = "purge"
CONFIG_CHANGED = "config.changed"
AUDIT_REPAIRED = "audit.repaired"
#: A damaged state database was set aside and its readable rows recovered.
STATE_RECOVERED = "state.recovered"
#: The officer accepted or rejected a hit on the in-car console (details: the hit's
#: and the decision's event ids, decision, reason, officer, supersedes; the plate of
#: the hit, which is a hit's and may be kept).
HIT_DECISION = "hit.decision"

#: ``sink(record, payload)``: called with each record as a dict and its canonical JSON
#: bytes (the line without its newline: the MQTT payload), in ``seq`` order.
Sink = Callable[[dict, bytes], None]

_ACTION = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)*")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 64 * 1024


def canonical(obj: Any) -> bytes:
    """The canonical JSON form that is hashed (and written): sorted keys, compact,
    UTF-8, no NaN or infinity."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def record_hash(record: dict) -> str:
    """SHA-256 hex of ``record``'s canonical JSON without its ``hash`` key."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonical(body)).hexdigest()


def config_hash(config: Config) -> str:
    """SHA-256 hex of the effective configuration (environment overrides applied) as
    canonical JSON, with secrets masked as ``lpr-edge config check`` prints them: it
    changes with any setting, and with whether a password is set, but never reveals
    or depends on the password itself. The file's location is not part of it."""
    return hashlib.sha256(canonical(to_dict(config, mask_secrets=True))).hexdigest()


def audit_path(config: Config) -> Path:
    """Where the vehicle's audit log is: ``[storage] state_dir``/audit.jsonl."""
    return config.resolve_path(config.storage.state_dir) / AUDIT_FILE


# --- writing -----------------------------------------------------------------------


class AuditLog:
    """The vehicle's audit log file, appended to by :meth:`record`.

    The owner calls :meth:`open` (or uses ``with``) and :meth:`close`. Every method is
    safe to call from any thread. ``sink`` is called with each record written
    (``audit.repaired`` included, so it must be ready before :meth:`open`), while the
    log is locked, so records reach it in ``seq`` order; an exception from it is logged
    and counted in :attr:`sink_errors`, not raised: the record is already on disk.
    """

    def __init__(self, path: Path | str, vehicle_id: str, *, sink: Sink | None = None):
        self.path = Path(path)
        self.vehicle_id = vehicle_id
        self.sink = sink
        self.sink_errors = 0
        #: The ``audit.repaired`` record written by the last repair, if any.
        self.repaired: dict | None = None
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._seq = 0
        self._prev = GENESIS
        #: File size after our last read or write; another size means someone else
        #: wrote (or tore a line) and the tail is read again.
        self._size = -1

    # ----------------------------------------------------------------- lifecycle

    def open(self) -> AuditLog:
        """Open (creating it, mode 0600) and pick the chain up from the file's end,
        repairing a torn last line."""
        with self._lock:
            if self._fd is not None:
                return self
            self.path.parent.mkdir(parents=True, exist_ok=True)
            created = not self.path.exists()
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.fchmod(fd, 0o600)
                if created:
                    sync_folder(self.path.parent)
                self._fd = fd
                self._size = -1
                with _flocked(fd):
                    self._sync()
            except BaseException:
                self._fd = None
                os.close(fd)
                raise
        return self

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> AuditLog:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def seq(self) -> int:
        """``seq`` of the last record written or read (0: none yet)."""
        return self._seq

    @property
    def last_hash(self) -> str:
        """``hash`` of the last record (:data:`GENESIS` when there is none)."""
        return self._prev

    # ----------------------------------------------------------------- writing

    def record(self, action: str, /, **details: Any) -> dict:
        """Append one record and return it (as read back from its JSON). ``details``
        must be JSON data (no NaN); the record is on disk when this returns. Raises
        ``TypeError``/``ValueError`` for bad details and ``OSError`` when the write
        fails (nothing is then left in the file)."""
        if not isinstance(action, str) or not _ACTION.fullmatch(action):
            raise ValueError(f"audit action must be dotted lower case, got {action!r}")
        with self._lock:
            if self._fd is None:
                raise ValueError(f"audit log {self.path} is not open")
            with _flocked(self._fd):
                self._sync()
                return self._append(action, details)

    # ----------------------------------------------------------------- internals

    def _append(self, action: str, details: dict) -> dict:
        """Write one record; the thread lock and the flock are held."""
        assert self._fd is not None
        body = {
            "schema": SCHEMA,
            "seq": self._seq + 1,
            "event_id": new_event_id(),
            "vehicle_id": self.vehicle_id,
            "at": now_iso(),
            "action": action,
            "details": details,
            "prev": self._prev,
        }
        try:
            payload = canonical({**body, "hash": record_hash(body)})
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"audit {action}: details are not JSON data: {exc}") from None
        record = json.loads(payload)
        size = self._size
        data = payload + b"\n"
        try:
            written = 0
            while written < len(data):
                written += os.write(self._fd, data[written:])
            os.fsync(self._fd)
        except OSError:
            # A disk full part-way: take the partial line back out, so the file holds
            # whole records only.
            try:
                os.ftruncate(self._fd, size)
                os.fsync(self._fd)
            except OSError:
                self._size = -1  # the next call reads the tail again and repairs it
            raise
        self._size = size + len(data)
        self._seq, self._prev = record["seq"], record["hash"]
        if self.sink is not None:
            try:
                self.sink(record, payload)
            except Exception:
                self.sink_errors += 1
                log.exception("audit: record %d (%s) not handed on for HQ", record["seq"], action)
        return record

    def _sync(self) -> None:
        """If the file changed since we last saw it, read its tail to continue the
        chain, repairing a torn line; the thread lock and the flock are held."""
        assert self._fd is not None
        fd = self._fd
        size = os.fstat(fd).st_size
        if size == self._size:
            return
        repair: dict[str, Any] = {}
        complete_end = _rfind_newline(fd, size) + 1
        if complete_end < size:
            torn = os.pread(fd, size - complete_end, complete_end)
            side = self._keep_torn(torn)
            os.ftruncate(fd, complete_end)
            os.fsync(fd)
            repair.update(
                reason="torn last line",
                torn_bytes=len(torn),
                torn_sha256=hashlib.sha256(torn).hexdigest(),
                torn_file=side.name,
                truncated_to=complete_end,
            )
            log.warning(
                "audit: %s ended in a torn line (%d bytes), kept in %s",
                self.path,
                len(torn),
                side,
            )
        self._size = complete_end
        # The last complete line that is a record; normally the very last line.
        seq, prev = 0, GENESIS
        pos, skipped, skipped_bytes = complete_end, 0, 0
        while pos > 0:
            start = _rfind_newline(fd, pos - 1) + 1
            found = _tail_record(os.pread(fd, pos - 1 - start, start))
            if found is not None:
                seq, prev = found
                break
            skipped += 1
            skipped_bytes += pos - start
            pos = start
        self._seq, self._prev = seq, prev
        if skipped:
            repair.setdefault("reason", "unreadable last lines")
            repair.update(
                unreadable_lines=skipped,
                unreadable_bytes=skipped_bytes,
                continued_from_seq=seq,
            )
            log.warning(
                "audit: the last %d line(s) of %s are not audit records; left in place, "
                "the chain continues from seq %d",
                skipped,
                self.path,
                seq,
            )
        if repair:
            self.repaired = self._append(AUDIT_REPAIRED, repair)

    def _keep_torn(self, torn: bytes) -> Path:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        for n in range(1000):
            side = self.path.with_name(f"{self.path.stem}.torn-{stamp}" + (f"-{n}" if n else ""))
            try:
                fd = os.open(side, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                continue
            try:
                view = memoryview(torn)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            sync_folder(side.parent)
            return side
        raise OSError(errno.EEXIST, "no free name for the torn audit line", str(self.path))


class _flocked:
    """Exclusive ``flock`` on an open file for the duration of a ``with``."""

    def __init__(self, fd: int):
        self.fd = fd

    def __enter__(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)


def _rfind_newline(fd: int, end: int) -> int:
    """Offset of the last ``\\n`` before ``end``, or -1; reads backwards in chunks."""
    pos = end
    while pos > 0:
        start = max(0, pos - _CHUNK)
        index = os.pread(fd, pos - start, start).rfind(b"\n")
        if index >= 0:
            return start + index
        pos = start
    return -1


def _tail_record(line: bytes) -> tuple[int, str] | None:
    """(seq, hash) of a line that is an audit record, else None."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        return None
    seq, digest = record.get("seq"), record.get("hash")
    if type(seq) is not int or seq < 1 or not isinstance(digest, str):
        return None
    if not _HEX64.fullmatch(digest):
        return None
    return seq, digest


# --- verifying ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    #: 1-based line of the file (or position in the records given).
    line: int
    #: bad_json, bad_record, schema, hash_mismatch, not_canonical, prev_mismatch,
    #: seq_gap or torn.
    code: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(slots=True)
class VerifyResult:
    #: Lines (or records) examined, readable or not.
    records: int = 0
    problems: list[Problem] = field(default_factory=list)
    #: ``seq`` and ``hash`` of the last readable record: where to continue checking
    #: records that arrive later (:func:`verify_records` ``start_seq``/``start_prev``).
    last_seq: int | None = None
    last_hash: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


class _Checker:
    def __init__(self, start_seq: int | None, start_prev: str | None):
        self.result = VerifyResult()
        self.expect_seq = start_seq
        self.expect_prev = start_prev
        self.prev_line: int | None = None
        #: The previous line was unreadable: its hash is unknown, so the next record's
        #: link is not checked (the break is already reported).
        self.resync = False

    def problem(self, line: int, code: str, message: str) -> None:
        self.result.problems.append(Problem(line, code, message))

    def unreadable(self, line: int, code: str, message: str) -> None:
        self.problem(line, code, message)
        self.resync = True

    def feed(self, line: int, record: Any, raw: bytes | None = None) -> None:
        self.result.records += 1
        if not isinstance(record, dict):
            return self.unreadable(line, "bad_record", "not a JSON object")
        if record.get("schema") != SCHEMA:
            return self.unreadable(
                line, "schema", f"schema is {record.get('schema')!r}, expected {SCHEMA!r}"
            )
        seq, prev, digest = record.get("seq"), record.get("prev"), record.get("hash")
        missing = [
            k for k in ("event_id", "vehicle_id", "at", "action", "details") if k not in record
        ]
        if (
            type(seq) is not int
            or not isinstance(prev, str)
            or not isinstance(digest, str)
            or missing
        ):
            what = ", ".join(missing) or "seq, prev or hash of the wrong type"
            return self.unreadable(line, "bad_record", f"not an audit record ({what})")
        try:
            computed = record_hash(record)
        except (TypeError, ValueError):
            return self.unreadable(line, "bad_record", "not JSON data")
        if computed != digest:
            self.problem(line, "hash_mismatch", "hash does not match the record: it was changed")
        elif raw is not None and raw != canonical(record):
            self.problem(
                line,
                "not_canonical",
                "not in canonical form: the line was changed after it was written",
            )
        if not self.resync:
            if self.expect_prev is not None and prev != self.expect_prev:
                after = (
                    f"the hash of line {self.prev_line}" if self.prev_line else "the chain's start"
                )
                self.problem(
                    line,
                    "prev_mismatch",
                    f"prev does not match {after}: a record before it was deleted, "
                    "inserted, moved or changed",
                )
            if self.expect_seq is not None and seq != self.expect_seq:
                self.problem(line, "seq_gap", f"seq {seq}, expected {self.expect_seq}")
        self.resync = False
        self.expect_seq, self.expect_prev, self.prev_line = seq + 1, digest, line
        self.result.last_seq, self.result.last_hash = seq, digest


def verify_records(
    records: Iterable[dict],
    *,
    start_seq: int | None = 1,
    start_prev: str | None = GENESIS,
) -> VerifyResult:
    """Check records given as dicts, in chain order (HQ: one vehicle's records,
    duplicates dropped by ``event_id``, sorted by ``seq``). By default they must start
    the chain; to check records that continue an already checked part, pass the last
    checked ``seq + 1`` and ``hash``, or None to take the first record's as given."""
    checker = _Checker(start_seq, start_prev)
    for n, record in enumerate(records, 1):
        checker.feed(n, record)
    return checker.result


def verify_chain(path: Path | str) -> VerifyResult:
    """Check an audit log file line by line (streamed; any size)."""
    checker = _Checker(1, GENESIS)
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            if not raw.endswith(b"\n"):
                checker.result.records += 1
                checker.problem(
                    n,
                    "torn",
                    "incomplete last line (a write cut short); the service moves it "
                    "aside when it next starts",
                )
                break
            raw = raw[:-1]
            try:
                record = json.loads(raw.decode("utf-8"))
            except ValueError:  # UnicodeDecodeError included
                checker.result.records += 1
                checker.unreadable(n, "bad_json", "not valid JSON")
                continue
            checker.feed(n, record, raw)
    return checker.result


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """`lpr-edge audit verify`: check the chain of the vehicle's audit log (``--file``,
    else ``[storage] state_dir``/audit.jsonl). Exit 0 intact, 1 broken, 2 no log."""
    from edge.errors import UsageError

    file = getattr(args, "file", None)
    path = Path(file) if file else audit_path(load_config(getattr(args, "config", None)))
    if not path.is_file():
        raise UsageError(f"{path}: no audit log there")
    try:
        result = verify_chain(path)
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror or exc}") from None
    if result.ok:
        last = f", last seq {result.last_seq}" if result.last_seq is not None else ""
        print(f"{path}: {result.records} records, chain intact{last}")
        return 0
    count = len(result.problems)
    print(
        f"{path}: {result.records} records, chain BROKEN: "
        f"{count} problem{'s' if count != 1 else ''}"
    )
    for problem in result.problems:
        print(f"  {problem}")
    return 1
