"""Where the car is: :class:`GpsReceiver`, the live source, one background thread
reading gpsd (TCP, ``?WATCH``) or a serial device (read-only, raw, no controlling
tty), reopened with back-off when lost. It keeps the last couple of minutes of fixes
so a read, decided about a second after the plate was seen, gets the fix nearest in
time to the sighting (:meth:`GpsReceiver.position_at`), flagged stale beyond
``max_fix_age_seconds``. The caller decides what to do with a stale fix (a hit
carries a position only when it is not stale; the heartbeat reports it). Lines are
decoded by :mod:`edge.vehicle.gps.nmea` and :mod:`edge.vehicle.gps.gpsd`.

Times. A fix's time is the receiver's (GPS) time; ages are measured against the
system clock (a read's ``first_seen``), so they are right only when the system clock
is synchronised, which :func:`edge.vehicle.gps.clock.clock_synchronised` tells the
heartbeat. A fix without a date (GGA before any RMC; a TPV without ``time``) is
placed on the UTC day nearest its receive time and is *judged by its receive time*
(nearest-in-time selection and staleness): its time of day is the receiver's, but its
date is only the system's guess. Ages are absolute distances in time: a fix a little
after the requested moment is as good as one a little before.
"""

from __future__ import annotations

import bisect
import errno
import logging
import os
import select
import socket
import termios
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from time import monotonic as _monotonic

from edge.config import GpsConfig
from edge.timefmt import iso_utc
from edge.types import Position, PositionFix
from edge.vehicle.gps.fixes import DecodedFix, GpsError, _aware, _merge
from edge.vehicle.gps.gpsd import GpsdProtocolError, parse_gpsd_line
from edge.vehicle.gps.nmea import NmeaDecoder

log = logging.getLogger("edge.gps")

#: Fixes kept for :meth:`GpsReceiver.position_at` (seconds before the newest fix).
HISTORY_SECONDS = 120.0
#: Upper bound on kept fixes whatever their times (10 Hz for two minutes).
HISTORY_MAX = 1200

# An NMEA sentence is at most 82 characters; a longer "line" is a wrong baud rate
# or binary protocol output. gpsd JSON lines are longer (SKY) but bounded.
_NMEA_LINE_MAX = 512
_GPSD_LINE_MAX = 65536
# A serial receiver streams every second; this long without a byte, it is reopened.
_SERIAL_STALL_S = 10.0
# Garbage lines from a serial device without one good sentence: warn about the baud.
_GARBAGE_WARN = 20
_WARN_RETRIES = 3
_POLL_S = 0.25

_WATCH = b'?WATCH={"enable":true,"json":true};\n'


def _now_utc() -> datetime:
    return datetime.now(UTC)


class _Stopped(Exception):
    """Internal: stop() was called while the reader thread waited."""


class _Lost(Exception):
    """Internal: the connection or device went away (message says how)."""


class _Lines:
    """Splits a byte stream into text lines, dropping over-long ones."""

    def __init__(self, limit: int):
        self.limit = limit
        self._buf = b""
        self._overflow = False

    def feed(self, data: bytes) -> tuple[list[str], int]:
        """The complete lines in ``data`` (plus earlier leftovers), and how many
        over-long lines were dropped."""
        self._buf += data
        *complete, self._buf = self._buf.split(b"\n")
        lines, dropped = [], 0
        for raw in complete:
            if self._overflow:
                self._overflow = False
                dropped += 1
                continue
            if len(raw) > self.limit:
                dropped += 1
                continue
            lines.append(raw.decode("ascii", errors="replace").strip("\r\x00 "))
        if len(self._buf) > self.limit:
            self._buf = b""
            self._overflow = True
        return lines, dropped


@dataclass(slots=True)
class _Entry:
    key: float  # POSIX seconds the fix is judged by (fix time, or receive time if undated)
    position: Position


class GpsReceiver:
    """The car's GPS, read by one background thread (source "gpsd" or "nmea").

    The owner calls :meth:`start` and :meth:`stop` (or uses it as a context manager).
    With source "none" both do nothing, :meth:`position_at` returns None and
    :meth:`status` says ``"off"``.

    A lost gpsd connection or serial device is reopened after a delay that starts at
    ``reconnect_min_s`` and doubles up to ``reconnect_max_s``, forever; a serial
    device silent for 10 s is reopened too (gpsd may legitimately be silent).
    """

    def __init__(
        self,
        config: GpsConfig,
        *,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        history_s: float = HISTORY_SECONDS,
        now: Callable[[], datetime] = _now_utc,
    ):
        self.config = config
        self.source = config.source
        self.max_fix_age_s = config.max_fix_age_seconds
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = max(reconnect_min_s, reconnect_max_s)
        self.history_s = history_s
        self._now = now
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._history: list[_Entry] = []
        self._keys: list[float] = []
        self._connected = False
        self._errors = {"checksum": 0, "malformed": 0, "connection": 0}
        self._last_error: str | None = None
        self.fixes = 0
        self.connects = 0
        # Set after each change of connection state or new fix: lets tests and
        # owners wait instead of polling.
        self.changed = threading.Condition(self._lock)

    @property
    def where(self) -> str:
        if self.source == "gpsd":
            return f"gpsd {self.config.host}:{self.config.port}"
        if self.source == "nmea":
            return f"GPS device {self.config.device}"
        return "no GPS"

    # -- owner API --

    def start(self) -> GpsReceiver:
        if self.source == "none":
            return self
        if self._thread is not None:
            raise RuntimeError("GPS receiver was already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"gps-{self.source}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop reading; True when the thread has finished within ``timeout``."""
        self._stop.set()
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        if thread.is_alive():
            log.warning("%s: reader thread still running after %.1f s", self.where, timeout)
            return False
        self._thread = None
        return True

    def __enter__(self) -> GpsReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- queries --

    def position_at(self, moment: datetime | None = None) -> PositionFix | None:
        """The kept fix nearest in time to ``moment`` (now when None), with its age
        and whether it is stale; None when no fix has been received (or source none).

        Fixes are not interpolated: a hit carries a position the receiver reported.
        """
        when = (_aware(moment) if moment is not None else self._now()).timestamp()
        with self._lock:
            if not self._history:
                return None
            i = bisect.bisect_left(self._keys, when)
            choices = [j for j in (i - 1, i) if 0 <= j < len(self._history)]
            best = min(choices, key=lambda j: abs(self._keys[j] - when))
            entry = self._history[best]
        age = abs(entry.key - when)
        return PositionFix(entry.position, age, age > self.max_fix_age_s)

    def status(self) -> dict:
        """The fix state for the heartbeat.

        ``state``: "off" (source none), "disconnected" (gpsd or the device not open;
        ``last_error`` says why), "no-fix" (connected, no fix received yet), "fix"
        (newest fix at most ``max_fix_age_seconds`` old) or "stale" (older).
        ``last_fix``/``lat``/``lon``/``age_s`` describe the newest fix kept, in any
        state. ``errors`` counts bad-checksum and malformed lines, and failed or lost
        connections.
        """
        now = self._now().timestamp()
        with self._lock:
            latest = self._history[-1] if self._history else None
            connected = self._connected
            errors = dict(self._errors)
            last_error = self._last_error
        age = None if latest is None else abs(now - latest.key)
        if self.source == "none":
            state = "off"
        elif not connected:
            state = "disconnected"
        elif latest is None:
            state = "no-fix"
        else:
            assert age is not None
            state = "stale" if age > self.max_fix_age_s else "fix"
        return {
            "source": self.source,
            "state": state,
            "last_fix": None if latest is None else iso_utc(latest.position.fix_time),
            "age_s": None if age is None else round(age, 1),
            "lat": None if latest is None else round(latest.position.lat, 7),
            "lon": None if latest is None else round(latest.position.lon, 7),
            "errors": errors,
            "last_error": last_error,
        }

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` (called without the lock) holds after a change."""
        deadline = _monotonic() + timeout
        while True:
            if predicate():
                return True
            remaining = deadline - _monotonic()
            if remaining <= 0:
                return False
            with self.changed:
                self.changed.wait(min(remaining, _POLL_S))

    # -- the reader thread --

    def _run(self) -> None:
        failures = 0
        try:
            while not self._stop.is_set():
                try:
                    reader = self._open()
                except OSError as exc:
                    failures = self._failed(failures, _os_reason(exc))
                    continue
                except GpsError as exc:
                    failures = self._failed(failures, str(exc))
                    continue
                self.connects += 1
                self._set_connected(True)
                log.info("%s: connected", self.where)
                try:
                    reader.pump()
                    raise _Stopped
                except _Lost as exc:
                    reason = str(exc)
                finally:
                    reader.close()
                    self._set_connected(False)
                if reader.got_data:
                    failures = 0
                failures = self._failed(failures, reason)
        except _Stopped:
            pass
        except Exception:
            log.exception("%s: GPS reader thread failed", self.where)
            with self.changed:
                self._last_error = "internal error in the GPS reader thread"
                self._connected = False
                self.changed.notify_all()

    def _failed(self, failures: int, reason: str) -> int:
        failures += 1
        delay = min(self.reconnect_max_s, self.reconnect_min_s * 2.0 ** min(failures - 1, 60))
        with self.changed:
            self._errors["connection"] += 1
            self._last_error = reason
            self.changed.notify_all()
        message = f"{self.where}: {reason}; retrying in {delay:.1f} s"
        if failures < _WARN_RETRIES:
            log.warning("%s", message)
        elif failures == _WARN_RETRIES:
            log.warning("%s (further attempts logged at debug level)", message)
        else:
            log.debug("%s (attempt %d)", message, failures)
        if self._stop.wait(delay):
            raise _Stopped
        return failures

    def _open(self) -> _SourceReader:
        if self.source == "gpsd":
            return _GpsdReader(self)
        return _SerialReader(self)

    def _set_connected(self, connected: bool) -> None:
        with self.changed:
            self._connected = connected
            self.changed.notify_all()

    def _count(self, kind: str, message: str | None = None) -> None:
        with self.changed:
            self._errors[kind] = self._errors.get(kind, 0) + 1
            if message:
                self._last_error = message

    def _add(self, fix: DecodedFix, received: datetime) -> None:
        key = fix.position.fix_time.timestamp() if fix.dated else received.timestamp()
        with self.changed:
            history, keys = self._history, self._keys
            i = bisect.bisect_left(keys, key)
            if i < len(keys) and abs(keys[i] - key) < 1e-3:
                history[i].position = _merge(history[i].position, fix.position)
            elif i > 0 and abs(keys[i - 1] - key) < 1e-3:
                history[i - 1].position = _merge(history[i - 1].position, fix.position)
            else:
                history.insert(i, _Entry(key, fix.position))
                keys.insert(i, key)
            oldest = keys[-1] - self.history_s
            drop = max(bisect.bisect_left(keys, oldest), len(keys) - HISTORY_MAX)
            if drop > 0:
                del history[:drop]
                del keys[:drop]
            self.fixes += 1
            self.changed.notify_all()


def _os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


class _SourceReader:
    got_data = False

    def pump(self) -> None:
        """Read until stopped (returns) or lost (raises _Lost)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _GpsdReader(_SourceReader):
    def __init__(self, owner: GpsReceiver):
        self.owner = owner
        cfg = owner.config
        try:
            self.sock = socket.create_connection((cfg.host, cfg.port), timeout=5.0)
        except OSError as exc:
            raise GpsError(f"cannot connect: {_os_reason(exc)}") from None
        try:
            self.sock.sendall(_WATCH)
            self.sock.settimeout(_POLL_S)
        except OSError as exc:
            self.sock.close()
            raise GpsError(f"cannot send ?WATCH: {_os_reason(exc)}") from None
        self.lines = _Lines(_GPSD_LINE_MAX)

    def pump(self) -> None:
        owner = self.owner
        while not owner._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                raise _Lost(f"connection lost: {_os_reason(exc)}") from None
            if not data:
                raise _Lost("gpsd closed the connection")
            self.got_data = True
            lines, dropped = self.lines.feed(data)
            for _ in range(dropped):
                owner._count("malformed", "gpsd: over-long line")
            received = owner._now()
            for line in lines:
                if not line:
                    continue
                try:
                    fix = parse_gpsd_line(line, received)
                except GpsdProtocolError as exc:
                    owner._count("malformed", f"gpsd: {exc}")
                    continue
                if fix is not None:
                    owner._add(fix, received)

    def close(self) -> None:
        self.sock.close()


def _baud_constant(baud: int) -> int:
    value = getattr(termios, f"B{baud}", None)
    if value is None:
        raise GpsError(f"baud rate {baud} is not supported by this system's serial driver")
    return value


def open_serial(device: str, baud: int) -> int:
    """Open ``device`` read-only, non-blocking, as no controlling tty, in raw mode
    (8N1, no echo, no line editing, no flow control) at ``baud``; returns the fd."""
    speed = _baud_constant(baud)
    fd = os.open(device, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        attrs = termios.tcgetattr(fd)
        iflag, oflag, cflag, lflag, _ispeed, _ospeed, cc = attrs
        iflag &= ~(
            termios.IGNBRK
            | termios.BRKINT
            | termios.PARMRK
            | termios.ISTRIP
            | termios.INLCR
            | termios.IGNCR
            | termios.ICRNL
            | termios.IXON
            | termios.IXOFF
        )
        oflag &= ~termios.OPOST
        lflag &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN)
        cflag &= ~(termios.CSIZE | termios.PARENB | termios.CSTOPB)
        cflag |= termios.CS8 | termios.CREAD | termios.CLOCAL
        cc = list(cc)
        cc[termios.VMIN] = 1
        cc[termios.VTIME] = 0
        termios.tcsetattr(fd, termios.TCSANOW, [iflag, oflag, cflag, lflag, speed, speed, cc])
    except termios.error as exc:
        os.close(fd)
        reason = exc.args[1] if len(exc.args) > 1 else exc
        raise GpsError(f"{device} is not a usable serial device ({reason})") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


class _SerialReader(_SourceReader):
    def __init__(self, owner: GpsReceiver):
        self.owner = owner
        device = owner.config.device
        if not os.path.exists(device):
            raise GpsError("device does not exist (receiver unplugged or wrong path)")
        try:
            self.fd = open_serial(device, owner.config.baud)
        except PermissionError:
            raise GpsError(
                "permission denied (the service user needs the 'dialout' group)"
            ) from None
        self.lines = _Lines(_NMEA_LINE_MAX)
        self.decoder = NmeaDecoder()

    def pump(self) -> None:
        owner = self.owner
        last_data = _monotonic()
        good = garbage = 0
        warned = False
        while not owner._stop.is_set():
            ready, _, _ = select.select([self.fd], [], [], _POLL_S)
            if not ready:
                if _monotonic() - last_data > _SERIAL_STALL_S:
                    raise _Lost(f"no data for {_SERIAL_STALL_S:g} s")
                continue
            try:
                data = os.read(self.fd, 4096)
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise _Lost(f"device lost: {_os_reason(exc)}") from None
            if not data:
                raise _Lost("device hung up")
            last_data = _monotonic()
            self.got_data = True
            lines, dropped = self.lines.feed(data)
            garbage += dropped
            for _ in range(dropped):
                owner._count("malformed", "NMEA: over-long line (wrong baud rate?)")
            received = owner._now()
            for line in lines:
                if not line:
                    continue
                before = dict(self.decoder.errors)
                fix = self.decoder.feed(line, received)
                for kind, count in self.decoder.errors.items():
                    if count > before[kind]:
                        owner._count(kind, self.decoder.last_error)
                        garbage += 1
                if self.decoder.sentences:
                    good = self.decoder.sentences
                if fix is not None:
                    owner._add(fix, received)
            if not warned and not good and garbage >= _GARBAGE_WARN:
                warned = True
                log.warning(
                    "%s: %d unreadable lines and no valid NMEA sentence: check the baud "
                    "rate (configured %d) and that the device speaks NMEA",
                    owner.where,
                    garbage,
                    owner.config.baud,
                )

    def close(self) -> None:
        os.close(self.fd)
