"""The vehicle's delivery: :class:`Delivery` owns the resources behind the
:class:`~edge.delivery.dispatch.Dispatcher` (the state directory with the outbox, read
log and audit trail, the watchlists, the status file, GPS, and the MQTT publisher when
``[mqtt] host`` is set) and opens and closes them together. With no host, hits stay in
the outbox and are printed on stdout: the embedded default `make demo` runs.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from edge import __version__
from edge.config import Config, ConfigError, MqttConfig
from edge.delivery.alerts import InCarAlert
from edge.delivery.dispatch import Dispatcher
from edge.delivery.outbox import Outbox
from edge.delivery.publish import MqttPublisher
from edge.files import write_private
from edge.privacy.audit import CONFIG_CHANGED, PURGE, SERVICE_START, config_hash
from edge.privacy.retention import make_room
from edge.sqlitedb import unless_disk_refuses
from edge.vehicle.gps.clock import clock_synchronised
from edge.vehicle.gps.receiver import GpsReceiver
from edge.vehicle.gps.track import PositionTrack
from edge.vehicle.health import STATUS_FILE, STATUS_FILE_INTERVAL_S, write_status_file
from edge.vehicle.state import VehicleState
from edge.waits import poll_until
from edge.watchlist.live import LiveWatchlist

log = logging.getLogger("edge.dispatch")

# The config hash of the last start, to notice (and audit) a changed configuration.
CONFIG_HASH_FILE = "config.sha256"


class Delivery:
    """Outbox + watchlists + (optional) MQTT publisher, opened and closed together.

    ``cameras`` supplies the cameras' part of the status heartbeat (the live service
    gives its camera stats; replay has none).
    """

    def __init__(
        self,
        config: Config,
        *,
        cameras: Callable[[], dict] | None = None,
        echo: TextIO | None = None,
        gps: GpsReceiver | PositionTrack | None = None,
    ):
        #: Where positions come from: the live receiver, or a replay's track.
        self.gps = gps
        self.config = config
        self.state_dir = config.resolve_path(config.storage.state_dir)
        self.cameras = cameras or (lambda: {})
        self._echo = echo
        self.state = VehicleState(config)
        self.outbox: Outbox | None = None
        self.watchlists: LiveWatchlist | None = None
        self.publisher: MqttPublisher | None = None
        self.dispatcher: Dispatcher | None = None
        self.alert = InCarAlert(config.watchlist.alert_command)
        self._started = time.monotonic()
        self._next_status = 0.0
        #: True when another process (the service) sends this outbox.
        self.handed_over = False
        self.disk_low = False
        #: Audit records the disk refused (see :meth:`audit`).
        self.audit_failures = 0

    def open(self) -> Delivery:
        self.state.open()
        self.outbox = self.state.outbox
        # What expired while the service was down goes before anything else happens.
        self._apply_retention()
        self.watchlists = LiveWatchlist(
            self.config,
            state_dir=self.state_dir,
            on_event=lambda action, details: self.audit(action, **details),
        )
        self.watchlists.load()
        if not self.watchlists.lists():
            log.warning("no watchlist in force: reads are checked against nothing")
        pending = self.outbox.stats().pending
        sending = bool(self.config.mqtt.host) and self.state.claim_sender()
        if self.config.mqtt.host and not sending:
            log.info("outbox: another lpr-edge process sends it; it will send these hits too")
            self.handed_over = True
        if sending:
            self.publisher = MqttPublisher(
                broker_settings(self.config),
                self.config.vehicle.id,
                self.outbox,
                status=self.status,
                on_watchlist=self.watchlists.apply_push,
            ).start()
            self.state.queued = self.publisher.wake
            if pending:
                log.info("outbox: %d message(s) from before are sent first", pending)
        elif pending:
            log.warning(
                "outbox: %d message(s) undelivered and no [mqtt] host to send them to", pending
            )
        echo = None if self.config.mqtt.host else (self._echo or sys.stdout)
        self.dispatcher = Dispatcher(
            self.config,
            self.watchlists,
            self.outbox,
            alert=self.alert,
            alert_withdrawn=self.alert.withdrawn,
            sent=self.publisher.wake if self.publisher else None,
            echo=echo,
            readlog=self.state.readlog if self.config.privacy.keep_reads_seconds > 0 else None,
            positions=self.gps.position_at if self.gps else None,
        )
        return self

    def audit(self, action: str, /, **details) -> bool:
        """Record in the audit trail; a disk that refuses is logged and counted in
        status (:attr:`audit_failures`), never raised: reading plates and delivering
        hits must go on while the disk is full."""
        try:
            self.state.audit.record(action, **details)
            return True
        except OSError as exc:
            self.audit_failures += 1
            log.error("audit: cannot record %s (%s)", action, exc)
            return False

    def audit_start(self, action: str = SERVICE_START, **details) -> None:
        """Record a start in the audit trail with the config's hash, and a
        ``config.changed`` first when the configuration differs from the last start."""
        digest = config_hash(self.config)
        marker = self.state_dir / CONFIG_HASH_FILE
        try:
            previous = marker.read_text().strip()
        except OSError:
            previous = None
        if previous and previous != digest:
            self.audit(CONFIG_CHANGED, old_hash=previous, new_hash=digest)
        recorded = self.audit(
            action, config_hash=digest, version=__version__, pid=os.getpid(), **details
        )
        if recorded and previous != digest:
            # Replaced whole or not at all: a full disk must not leave an empty hash
            # (the next start would then miss a configuration change). Written only
            # once the change is audited, so a change that could not be recorded is
            # recorded at the next start.
            try:
                write_private(marker, (digest + "\n").encode())
            except OSError as exc:
                log.error("cannot write %s (%s)", marker, exc)

    def _apply_retention(self) -> None:
        with unless_disk_refuses("retention: cannot apply it", logger=log):
            self.state.retention.run()

    def idle(self) -> None:
        """Background upkeep, called when no read is waiting: a changed watchlist file
        is loaded, retention applied, the status file written and the disk watched."""
        self.watchlists.refresh()
        with unless_disk_refuses("retention: cannot apply it", logger=log):
            self.state.retention.tick()
        # Hits the disk refused are written as soon as it takes them.
        self.outbox.save_unsaved()
        now = time.monotonic()
        if now >= self._next_status:
            self._next_status = now + STATUS_FILE_INTERVAL_S
            self.watch_disk()
            try:
                write_status_file(self.state_dir / STATUS_FILE, self.status())
            except OSError as exc:
                # The heartbeat to HQ still carries the status (and says why).
                log.error("cannot write the status file (%s)", exc)

    def watch_disk(self) -> None:
        state = self.state
        counts = None
        with unless_disk_refuses("disk: cannot make room", logger=log):
            counts = make_room(
                self.config.privacy,
                state.outbox,
                state.readlog,
                lambda: disk_free_mb(self.state_dir),
                self.config.storage.min_free_mb,
            )
        if counts is not None:
            self.audit(PURGE, reason="disk_low", **counts.to_json())
        free = disk_free_mb(self.state_dir)
        self.disk_low = free is not None and free < self.config.storage.min_free_mb

    def wait_delivered(self, timeout: float) -> bool:
        """With a broker, wait (up to ``timeout``) for the outbox to empty, whether
        this process sends it or the service does."""
        if self.publisher is not None:
            return self.publisher.wait_delivered(timeout)
        if not self.handed_over:
            return True
        return poll_until(lambda: not self.outbox.stats().pending, timeout, interval=0.2)

    def close(self) -> None:
        self.alert.join(5.0)
        if self._next_status:  # a service that wrote a status says it stopped
            status = {**self.status(), "state": "stopped"}
            try:
                write_status_file(self.state_dir / STATUS_FILE, status)
            except OSError:
                log.exception("writing the final status failed")
        if self.publisher:
            self.publisher.close()
        if self.state.retention:
            self._apply_retention()
        self.state.close()

    def __enter__(self) -> Delivery:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def status(self) -> dict:
        """The vehicle's health, for the MQTT heartbeat."""
        return {
            "software": __version__,
            "uptime_s": round(time.monotonic() - self._started, 1),
            "cameras": self.cameras(),
            "outbox": self.outbox.stats().to_json() if self.outbox else None,
            # `is not None`: a LiveWatchlist with no list in force is empty, and HQ's
            # schema wants the object (what is in force, errors) all the same.
            "watchlist": self.watchlists.status() if self.watchlists is not None else None,
            "gps": self.gps.status() if isinstance(self.gps, GpsReceiver) else None,
            "clock_synchronised": clock_synchronised(),
            "disk_free_mb": disk_free_mb(self.state_dir),
            "disk_low": self.disk_low,
            "broker": self.publisher.stats.to_json() if self.publisher else None,
            "state_files": self.state_files(),
        }

    def state_files(self) -> dict:
        """Trouble with the state directory's files, for status: damaged databases set
        aside at start, audit records and non-hit reads the disk refused."""
        return {
            "recovered": list(self.state.recovered),
            "audit_failures": self.audit_failures,
            "reads_not_logged": self.dispatcher.reads_not_logged if self.dispatcher else 0,
        }


def broker_settings(config: Config) -> MqttConfig:
    """``[mqtt]`` with the TLS files resolved against the config file's folder and
    checked, so a wrong path is a configuration error naming the key."""
    tls = config.mqtt.tls
    if not tls.enabled:
        return config.mqtt
    paths, problems = {}, []
    for key in ("ca_file", "cert_file", "key_file"):
        value = getattr(tls, key)
        if value:
            path = config.resolve_path(value)
            if not path.is_file():
                problems.append(f"'mqtt.tls.{key}': {path}: no such file")
            paths[key] = str(path)
    if problems:
        raise ConfigError(problems)
    return dataclasses.replace(config.mqtt, tls=dataclasses.replace(tls, **paths))


def disk_free_mb(path: Path) -> float | None:
    try:
        return round(shutil.disk_usage(path).free / 2**20, 1)
    except OSError:
        return None
