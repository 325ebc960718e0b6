"""The state directory (``[storage] state_dir``) and the files the car keeps in it.

:class:`VehicleState` opens and closes them together: the outbox (hits and audit
records for HQ), the audit log (each record also queued in the outbox for HQ), the
local read log (only with ``[privacy] keep_reads_seconds`` > 0, or while one from an
earlier setting still has to be emptied) and retention over both (each purge
audited). Anything that touches these files (the service, replay, `outbox`, `purge`)
goes through it, so each file has one owner per process.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from edge.config import Config, ConfigError, state_dir_problem
from edge.delivery.mqtt import Topics
from edge.delivery.outbox import Outbox
from edge.privacy.audit import AUDIT_FILE, PURGE, STATE_RECOVERED, AuditLog
from edge.privacy.readlog import READLOG_FILE, ReadLog
from edge.privacy.retention import PurgeCounts, Retention
from edge.sqlitedb import is_disk_error

log = logging.getLogger("edge.state")

OUTBOX_FILE = "outbox.sqlite"
# Held by the one process that sends this outbox to the broker (see claim_sender).
SENDER_LOCK = "sender.lock"


class VehicleState:
    def __init__(self, config: Config):
        self.config = config
        self.state_dir: Path = config.resolve_path(config.storage.state_dir)
        self.outbox: Outbox | None = None
        self.readlog: ReadLog | None = None
        self.retention: Retention | None = None
        self.audit: AuditLog | None = None
        #: Called after a record is queued for HQ (the publisher's wake-up).
        self.queued: Callable[[], None] = lambda: None
        self._sender_lock: int | None = None
        #: Damaged databases set aside at open: {"file", "set_aside_as", ...} each,
        #: for status (and each is in the audit trail).
        self.recovered: list[dict] = []

    def open(self) -> VehicleState:
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            # A configuration problem (a path under a file, no permission), said as
            # one, not a traceback; `config check` finds it before any start.
            why = state_dir_problem(self.state_dir) or f"{self.state_dir}: {exc.strerror or exc}"
            raise ConfigError([f"'storage.state_dir' {why}"]) from None
        storage, privacy = self.config.storage, self.config.privacy
        self.outbox = Outbox(
            self.state_dir / OUTBOX_FILE,
            alarm_pending=storage.outbox_alarm_pending,
            alarm_age_s=storage.outbox_alarm_hours * 3600,
        )
        readlog_path = self.state_dir / READLOG_FILE
        if privacy.keep_reads_seconds > 0 or readlog_path.exists():
            try:
                self.readlog = ReadLog(readlog_path)
            except sqlite3.Error as exc:
                if not is_disk_error(exc):
                    raise
                # Only non-hit reads kept by choice live there: the car goes on reading
                # and matching without it (the outbox holds hits in memory likewise).
                log.error(
                    "read log %s cannot be opened (%s): reads are not kept", readlog_path, exc
                )
        topic = Topics(self.config.mqtt.topic_prefix, self.config.vehicle.id).audit

        def to_hq(record: dict, payload: bytes) -> None:
            self.outbox.add("audit", record["event_id"], topic, payload)
            self.queued()

        self.audit = AuditLog(
            self.state_dir / AUDIT_FILE, self.config.vehicle.id, sink=to_hq
        ).open()
        for resource in (self.outbox, self.readlog):
            if resource is not None and resource.recovery is not None:
                report = {"file": resource.path.name, **resource.recovery.to_json()}
                self.recovered.append(report)
                self.audit.record(STATE_RECOVERED, **report)
        self.retention = Retention(privacy, self.outbox, self.readlog, on_purge=self._purged)
        return self

    def _purged(self, counts: PurgeCounts) -> None:
        self.audit.record(PURGE, **counts.to_json())

    def claim_sender(self) -> bool:
        """Become the one process that sends this outbox to the broker. False when
        another holds it (the running service): it then sends what this process adds,
        and two connections under one vehicle id would only push each other off."""
        fd = os.open(self.state_dir / SENDER_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._sender_lock = fd
        return True

    def close(self) -> None:
        if self._sender_lock is not None:
            os.close(self._sender_lock)  # releases the lock
            self._sender_lock = None
        for resource in (self.audit, self.readlog, self.outbox):
            if resource is not None:
                resource.close()

    def __enter__(self) -> VehicleState:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()


def open_state(config: Config) -> VehicleState:
    """``with open_state(config) as state:`` the state directory's files."""
    return VehicleState(config)
