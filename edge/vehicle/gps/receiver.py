"""Where the car was: GPS fixes from gpsd or an NMEA serial receiver, and position
tracks (NMEA logs, GPX) for recorded files.

Three layers:

* Pure decoding. :func:`parse_nmea` checks one NMEA 0183 sentence's checksum and
  decodes ``$xxRMC``/``$xxGGA`` (any talker: GP, GN, GL, GA...) into an
  :class:`NmeaSentence`. :class:`NmeaDecoder` turns a stream of sentences into dated
  fixes: RMC carries the date, GGA only the time of day, so a GGA takes the date of
  the last RMC, rolled over at midnight. :func:`parse_gpsd_line` decodes one line of
  gpsd's JSON protocol (``TPV`` reports).
* :class:`GpsReceiver`: the live source, one background thread reading gpsd
  (TCP, ``?WATCH``) or a serial device (read-only, raw, no controlling tty), reopened
  with back-off when lost. It keeps the last couple of minutes of fixes so a read,
  decided about a second after the plate was seen, gets the fix nearest in time to
  the sighting (:meth:`GpsReceiver.position_at`), flagged stale beyond
  ``max_fix_age_seconds``. The caller decides what to do with a stale fix (a hit
  carries a position only when it is not stale; the heartbeat reports it).
* :class:`PositionTrack`: a recorded track (NMEA log or GPX 1.1) for
  ``lpr-edge replay --gps``, interpolated by time.

Times. A fix's time is the receiver's (GPS) time; ages are measured against the
system clock (a read's ``first_seen``), so they are right only when the system clock
is synchronised, which :func:`clock_synchronised` tells the heartbeat. A fix without
a date (GGA before any RMC; a TPV without ``time``) is placed on the UTC day nearest
its receive time and is *judged by its receive time* (nearest-in-time selection and
staleness): its time of day is the receiver's, but its date is only the system's
guess. Ages are absolute distances in time: a fix a little after the requested
moment is as good as one a little before.
"""

from __future__ import annotations

import bisect
import ctypes
import ctypes.util
import errno
import json
import logging
import math
import os
import select
import socket
import sys
import termios
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from functools import reduce
from pathlib import Path
from time import monotonic as _monotonic

from edge.config import GpsConfig
from edge.timefmt import iso_utc, parse_utc
from edge.types import Position, PositionFix

log = logging.getLogger("edge.gps")

KNOTS_TO_KMH = 1.852
MS_TO_KMH = 3.6
#: Mean Earth radius (IUGG), metres.
EARTH_RADIUS_M = 6_371_008.8

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


class GpsError(Exception):
    """A GPS source that cannot be used; the message says why."""


class GpsFileError(GpsError):
    """A position track file that cannot be used; the message names the file."""


class NmeaError(ValueError):
    """A sentence that is not well-formed NMEA 0183 (or a field out of range)."""


class NmeaChecksumError(NmeaError):
    """A sentence whose checksum is missing or does not match (line noise)."""


class GpsdProtocolError(ValueError):
    """A gpsd line that is not a JSON object, or a TPV with unusable fields."""


@dataclass(frozen=True, slots=True)
class NmeaSentence:
    """One decoded RMC or GGA sentence.

    ``valid`` is False for RMC status V (or FAA mode N) and GGA quality 0: the
    receiver has no fix, and the position fields are None. ``date`` is set for RMC
    only; ``heading`` (degrees true) and ``speed_kmh`` for RMC only, where given.
    """

    kind: str
    talker: str
    valid: bool
    time_of_day: time | None
    date: date | None = None
    lat: float | None = None
    lon: float | None = None
    heading: float | None = None
    speed_kmh: float | None = None


@dataclass(frozen=True, slots=True)
class DecodedFix:
    """A fix as decoded from a source. ``dated`` is False when its date (or whole
    time) came from the receive time rather than from the receiver."""

    position: Position
    dated: bool


def _now_utc() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


# --- NMEA 0183 ----------------------------------------------------------------------


def nmea_checksum(body: str) -> int:
    """XOR of the characters between '$' and '*'."""
    return reduce(lambda acc, ch: acc ^ ord(ch), body, 0)


def parse_nmea(line: str) -> NmeaSentence | None:
    """Decode one sentence; None for a well-formed sentence of another type (or a
    blank line). Text before the '$' (a logger's timestamp) is ignored.

    Raises :class:`NmeaChecksumError` for a missing or wrong checksum and
    :class:`NmeaError` for anything else malformed.
    """
    text = line.strip()
    if not text:
        return None
    start = text.find("$")
    if start < 0:
        raise NmeaError("no '$' sentence start")
    body, star, given = text[start + 1 :].partition("*")
    if not star:
        raise NmeaChecksumError("no checksum")
    given = given.strip()
    try:
        expected = int(given, 16) if len(given) == 2 else -1
    except ValueError:
        expected = -1
    if expected < 0:
        raise NmeaChecksumError(f"checksum {given!r} is not two hex digits")
    if nmea_checksum(body) != expected:
        raise NmeaChecksumError(f"checksum {given} does not match {nmea_checksum(body):02X}")
    fields = body.split(",")
    address = fields[0]
    if len(address) < 5 or not address.isalnum():
        raise NmeaError(f"bad sentence address {address!r}")
    talker, kind = address[:-3], address[-3:]
    if kind == "RMC" and not talker.startswith("P"):
        return _parse_rmc(talker, fields)
    if kind == "GGA" and not talker.startswith("P"):
        return _parse_gga(talker, fields)
    return None


def _parse_rmc(talker: str, f: list[str]) -> NmeaSentence:
    if len(f) < 10:
        raise NmeaError(f"RMC has {len(f) - 1} fields, expected at least 9")
    status = f[2].strip().upper()
    mode = f[12].strip().upper() if len(f) > 12 else ""
    if status not in ("A", "V", ""):
        raise NmeaError(f"RMC status {status!r} is neither A nor V")
    valid = status == "A" and mode != "N"
    tod = _parse_time(f[1]) if f[1] else None
    day = _parse_date(f[9]) if f[9] else None
    if not valid:
        return NmeaSentence("RMC", talker, False, tod, day)
    if tod is None or day is None:
        raise NmeaError("RMC with status A but no time or date")
    return NmeaSentence(
        "RMC",
        talker,
        True,
        tod,
        day,
        lat=_parse_coord(f[3], f[4], lat=True),
        lon=_parse_coord(f[5], f[6], lat=False),
        heading=_parse_number(f[8], "course", 0.0, 360.0),
        speed_kmh=_knots(f[7]),
    )


def _parse_gga(talker: str, f: list[str]) -> NmeaSentence:
    if len(f) < 7:
        raise NmeaError(f"GGA has {len(f) - 1} fields, expected at least 6")
    quality = f[6].strip()
    if quality and not quality.isdigit():
        raise NmeaError(f"GGA fix quality {quality!r} is not a number")
    tod = _parse_time(f[1]) if f[1] else None
    if quality in ("", "0") or int(quality) == 0:
        return NmeaSentence("GGA", talker, False, tod)
    if tod is None:
        raise NmeaError("GGA with a fix but no time")
    return NmeaSentence(
        "GGA",
        talker,
        True,
        tod,
        lat=_parse_coord(f[2], f[3], lat=True),
        lon=_parse_coord(f[4], f[5], lat=False),
    )


def _parse_time(text: str) -> time:
    text = text.strip()
    if len(text) < 6 or not text[:6].isdigit():
        raise NmeaError(f"time {text!r} is not hhmmss[.sss]")
    hour, minute = int(text[0:2]), int(text[2:4])
    try:
        seconds = float(text[4:])
    except ValueError:
        raise NmeaError(f"time {text!r} is not hhmmss[.sss]") from None
    if hour > 23 or minute > 59 or not 0 <= seconds < 61:
        raise NmeaError(f"time {text!r} out of range")
    micro = min(round(seconds * 1e6), 59_999_999)  # a leap second 60 stays in the minute
    return time(hour, minute, micro // 1_000_000, micro % 1_000_000, tzinfo=UTC)


def _parse_date(text: str) -> date:
    text = text.strip()
    if len(text) != 6 or not text.isdigit():
        raise NmeaError(f"date {text!r} is not ddmmyy")
    try:
        # Two-digit years are 20yy: receivers from before 2000 are not in service.
        return date(2000 + int(text[4:6]), int(text[2:4]), int(text[0:2]))
    except ValueError:
        raise NmeaError(f"date {text!r} out of range") from None


def _parse_coord(value: str, hemisphere: str, *, lat: bool) -> float:
    name = "latitude" if lat else "longitude"
    value, hemisphere = value.strip(), hemisphere.strip().upper()
    if not value or not hemisphere:
        raise NmeaError(f"{name} missing in a sentence with a fix")
    try:
        raw = float(value)
    except ValueError:
        raise NmeaError(f"{name} {value!r} is not a number") from None
    if not math.isfinite(raw) or raw < 0:
        raise NmeaError(f"{name} {value!r} out of range")
    degrees = int(raw // 100)
    minutes = raw - degrees * 100
    result = degrees + minutes / 60.0
    if minutes >= 60 or result > (90.0 if lat else 180.0):
        raise NmeaError(f"{name} {value!r} out of range")
    signs = ("N", "S") if lat else ("E", "W")
    if hemisphere not in signs:
        raise NmeaError(f"{name} hemisphere {hemisphere!r} is not {' or '.join(signs)}")
    return -result if hemisphere == signs[1] else result


def _parse_number(text: str, name: str, lo: float, hi: float) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise NmeaError(f"{name} {text!r} is not a number") from None
    if not math.isfinite(value) or not lo <= value <= hi:
        raise NmeaError(f"{name} {text!r} out of range")
    return value % 360.0 if name == "course" else value


def _knots(text: str) -> float | None:
    knots = _parse_number(text, "speed", 0.0, 10_000.0)
    return None if knots is None else knots * KNOTS_TO_KMH


def _nearest_day(tod: time, reference: datetime) -> datetime:
    """``tod`` on the day (reference's, or the one before or after) that puts it
    nearest ``reference``: a time of day just past midnight after a reference just
    before it is on the next day, and the other way round."""
    candidate = datetime.combine(reference.date(), tod)
    delta = (candidate - reference).total_seconds()
    if delta < -43200:
        candidate += timedelta(days=1)
    elif delta > 43200:
        candidate -= timedelta(days=1)
    return candidate


class NmeaDecoder:
    """Turns NMEA lines into dated fixes, counting bad lines in ``errors``.

    RMC gives date and time; GGA gives the time of day only and takes its date from
    the last valid fix, with midnight rollover (a GGA at 00:00:01 after a fix at
    23:59:59 is on the next day). A GGA before any RMC is placed on the day nearest
    ``received`` and marked undated. RMC and GGA for the same epoch both give a fix;
    :class:`GpsReceiver` and :class:`PositionTrack` merge fixes with equal times.
    """

    def __init__(self) -> None:
        self.errors = {"checksum": 0, "malformed": 0}
        self.last_error: str | None = None
        self.sentences = 0
        self._last: datetime | None = None

    def seed(self, moment: datetime) -> None:
        """Take ``moment`` as the last dated fix (a log's first RMC, for the GGAs
        before it)."""
        self._last = moment

    def feed(self, line: str, received: datetime | None = None) -> DecodedFix | None:
        try:
            sentence = parse_nmea(line)
        except NmeaChecksumError as exc:
            self.errors["checksum"] += 1
            self.last_error = f"NMEA checksum: {exc}"
            return None
        except NmeaError as exc:
            self.errors["malformed"] += 1
            self.last_error = f"NMEA: {exc}"
            return None
        if sentence is None:
            return None
        self.sentences += 1
        return self.decode(sentence, received)

    def decode(self, sentence: NmeaSentence, received: datetime | None) -> DecodedFix | None:
        if not sentence.valid or sentence.time_of_day is None:
            return None
        assert sentence.lat is not None and sentence.lon is not None
        if sentence.date is not None:
            moment, dated = datetime.combine(sentence.date, sentence.time_of_day), True
        elif self._last is not None:
            moment, dated = _nearest_day(sentence.time_of_day, self._last), True
        elif received is not None:
            moment = _nearest_day(sentence.time_of_day, _aware(received).astimezone(UTC))
            return DecodedFix(
                Position(sentence.lat, sentence.lon, moment, sentence.heading, sentence.speed_kmh),
                False,
            )
        else:
            return None
        self._last = moment
        return DecodedFix(
            Position(sentence.lat, sentence.lon, moment, sentence.heading, sentence.speed_kmh),
            dated,
        )


# --- gpsd ------------------------------------------------------------------------------


def parse_gpsd_line(line: str, received: datetime) -> DecodedFix | None:
    """Decode one line of gpsd's JSON protocol: a fix for a ``TPV`` report with
    ``mode`` >= 2 and a position, else None (other classes, no fix yet).

    ``speed`` (m/s) becomes km/h; ``track`` is the heading. A TPV without ``time``
    is timed by ``received`` and undated. Raises :class:`GpsdProtocolError` for a
    line that is not a JSON object or a TPV with unusable fields.
    """
    try:
        report = json.loads(line)
    except ValueError as exc:
        raise GpsdProtocolError(f"not JSON: {exc}") from None
    if not isinstance(report, dict):
        raise GpsdProtocolError("not a JSON object")
    if report.get("class") != "TPV":
        return None
    mode = report.get("mode", 0)
    if isinstance(mode, bool) or not isinstance(mode, int):
        raise GpsdProtocolError(f"TPV mode {mode!r} is not an integer")
    if mode < 2:
        return None
    lat = _json_number(report, "lat", -90.0, 90.0)
    lon = _json_number(report, "lon", -180.0, 180.0)
    if lat is None or lon is None:
        raise GpsdProtocolError(f"TPV with mode {mode} but no lat/lon")
    track = _json_number(report, "track", -360.0, 720.0)
    speed = _json_number(report, "speed", 0.0, 10_000.0)
    stamp = report.get("time")
    if stamp is None:
        moment, dated = _aware(received).astimezone(UTC), False
    else:
        if not isinstance(stamp, str):
            raise GpsdProtocolError(f"TPV time {stamp!r} is not a string")
        try:
            moment, dated = parse_utc(stamp), True
        except ValueError:
            raise GpsdProtocolError(f"TPV time {stamp!r} is not ISO 8601") from None
    return DecodedFix(
        Position(
            lat,
            lon,
            moment,
            None if track is None else track % 360.0,
            None if speed is None else speed * MS_TO_KMH,
        ),
        dated,
    )


def _json_number(report: dict, key: str, lo: float, hi: float) -> float | None:
    value = report.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise GpsdProtocolError(f"TPV {key} {value!r} is not a number")
    value = float(value)
    if not math.isfinite(value) or not lo <= value <= hi:
        raise GpsdProtocolError(f"TPV {key} {value!r} out of range")
    return value


# --- live receiver -------------------------------------------------------------------


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


def _merge(old: Position, new: Position) -> Position:
    """Two reports of one epoch (RMC and GGA; GN and GP talkers): the newer position,
    with heading and speed from whichever gave them."""
    return replace(
        new,
        heading=new.heading if new.heading is not None else old.heading,
        speed_kmh=new.speed_kmh if new.speed_kmh is not None else old.speed_kmh,
    )


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


# --- recorded tracks -----------------------------------------------------------------


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def bearing_deg(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Initial great-circle bearing from point 1 to point 2, degrees from true north."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dl = math.radians(lon2 - lon1)
    y = math.sin(dl) * math.cos(p2)
    x = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    return math.degrees(math.atan2(y, x)) % 360.0


def _lerp_angle(a: float, b: float, f: float) -> float:
    delta = (b - a + 180.0) % 360.0 - 180.0
    return (a + f * delta) % 360.0


# A segment shorter than this gives no bearing (a parked car's jitter).
_MIN_BEARING_M = 1.0


class PositionTrack:
    """A recorded position track, interpolated by time (``lpr-edge replay --gps``).

    Between two points :meth:`position_at` interpolates linearly (longitude across
    the antimeridian included); its ``age_s`` is the time to the nearer real point,
    so a gap in the track (a tunnel) shows as stale. Within ``max_gap_s`` before the
    first or after the last point it returns that end point with its age; further
    out, None.
    """

    def __init__(
        self,
        points: Iterable[Position],
        *,
        max_fix_age_s: float = 5.0,
        max_gap_s: float = 60.0,
        source: str = "",
    ):
        merged: list[Position] = []
        for point in sorted(points, key=lambda p: p.fix_time):
            if merged and merged[-1].fix_time == point.fix_time:
                merged[-1] = _merge(merged[-1], point)
            else:
                merged.append(point)
        if not merged:
            raise GpsFileError(f"{source or 'track'}: no positions")
        self.points: Sequence[Position] = tuple(merged)
        self._times = [p.fix_time.timestamp() for p in merged]
        self.max_fix_age_s = max_fix_age_s
        self.max_gap_s = max_gap_s
        self.source = source
        #: Lines skipped while loading an NMEA log, by kind.
        self.errors = {"checksum": 0, "malformed": 0}

    def __len__(self) -> int:
        return len(self.points)

    @property
    def start(self) -> datetime:
        return self.points[0].fix_time

    @property
    def end(self) -> datetime:
        return self.points[-1].fix_time

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, max_fix_age_s: float = 5.0, max_gap_s: float = 60.0
    ) -> PositionTrack:
        """Read a GPX file (first non-blank character '<') or an NMEA log (any other
        text). Raises :class:`GpsFileError` naming the file when it holds no usable
        position."""
        path = Path(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise GpsFileError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise GpsFileError(
                f"{path}: is a directory, expected an NMEA log or GPX file"
            ) from None
        except OSError as exc:
            raise GpsFileError(f"{path}: {exc.strerror or exc}") from None
        head = data.lstrip(b"\xef\xbb\xbf \t\r\n")
        if not head:
            raise GpsFileError(f"{path}: the file is empty")
        kwargs = {"max_fix_age_s": max_fix_age_s, "max_gap_s": max_gap_s, "source": str(path)}
        if head.startswith(b"<"):
            return cls(_gpx_points(path, data), **kwargs)
        points, errors = _nmea_points(path, data.decode("ascii", errors="replace"))
        track = cls(points, **kwargs)
        track.errors = errors
        if any(errors.values()):
            log.warning(
                "%s: skipped %d line(s) with bad checksums and %d malformed line(s)",
                path,
                errors["checksum"],
                errors["malformed"],
            )
        return track

    def position_at(self, moment: datetime) -> PositionFix | None:
        when = _aware(moment).timestamp()
        times, points = self._times, self.points
        if when <= times[0] or when >= times[-1]:
            edge = 0 if when <= times[0] else len(times) - 1
            age = abs(times[edge] - when)
            if age > self.max_gap_s:
                return None
            return PositionFix(points[edge], age, age > self.max_fix_age_s)
        i = bisect.bisect_right(times, when)
        a, b = points[i - 1], points[i]
        t0, t1 = times[i - 1], times[i]
        if when == t0:
            return PositionFix(a, 0.0, False)
        f = (when - t0) / (t1 - t0)
        dlon = (b.lon - a.lon + 180.0) % 360.0 - 180.0
        lon = (a.lon + f * dlon + 180.0) % 360.0 - 180.0
        lat = a.lat + f * (b.lat - a.lat)
        distance = haversine_m(a.lat, a.lon, b.lat, b.lon)
        if a.heading is not None and b.heading is not None:
            heading = _lerp_angle(a.heading, b.heading, f)
        elif distance >= _MIN_BEARING_M:
            heading = bearing_deg(a.lat, a.lon, b.lat, b.lon)
        else:
            heading = a.heading if a.heading is not None else b.heading
        if a.speed_kmh is not None and b.speed_kmh is not None:
            speed = a.speed_kmh + f * (b.speed_kmh - a.speed_kmh)
        else:
            speed = distance / (t1 - t0) * MS_TO_KMH
        fix_time = datetime.fromtimestamp(when, UTC)
        age = min(when - t0, t1 - when)
        return PositionFix(
            Position(lat, lon, fix_time, heading, speed), age, age > self.max_fix_age_s
        )


def _nmea_points(path: Path, text: str) -> tuple[list[Position], dict[str, int]]:
    decoder = NmeaDecoder()
    parsed: list[tuple[int, NmeaSentence]] = []
    first_bad: tuple[int, str] | None = None
    seed: datetime | None = None
    lines = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        lines += 1
        try:
            sentence = parse_nmea(line)
        except NmeaError as exc:
            decoder.errors["checksum" if isinstance(exc, NmeaChecksumError) else "malformed"] += 1
            if first_bad is None:
                first_bad = (number, str(exc))
            continue
        if sentence is None:
            continue
        parsed.append((number, sentence))
        if seed is None and sentence.valid and sentence.date and sentence.time_of_day:
            seed = datetime.combine(sentence.date, sentence.time_of_day)
    fixes = [s for _, s in parsed if s.valid]
    if not fixes:
        detail = f"{lines} non-blank line(s)"
        if first_bad is not None:
            detail += f"; first bad data at line {first_bad[0]}: {first_bad[1]}"
        raise GpsFileError(f"{path}: no valid NMEA position fix (RMC or GGA) found ({detail})")
    if seed is None:
        raise GpsFileError(
            f"{path}: NMEA log has GGA fixes but no valid RMC sentence to give their date"
        )
    decoder.seed(seed)
    points = []
    for _, sentence in parsed:
        fix = decoder.decode(sentence, None)
        if fix is not None:
            points.append(fix.position)
    return points, dict(decoder.errors)


def _local(tag: object) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _gpx_points(path: Path, data: bytes) -> list[Position]:
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise GpsFileError(f"{path}: not valid XML (GPX expected): {exc}") from None
    if _local(root.tag) != "gpx":
        raise GpsFileError(f"{path}: not a GPX file (root element <{_local(root.tag)}>)")
    points = []
    for number, element in enumerate((e for e in root.iter() if _local(e.tag) == "trkpt"), 1):
        where = f"{path}: track point {number}"
        try:
            lat = float(element.get("lat", ""))
            lon = float(element.get("lon", ""))
        except ValueError:
            raise GpsFileError(f"{where}: missing or non-numeric lat/lon") from None
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
            raise GpsFileError(f"{where}: lat/lon {lat}, {lon} out of range")
        stamp = heading = speed = None
        for child in element.iter():
            name = _local(child.tag)
            text = (child.text or "").strip()
            if name == "time" and stamp is None:
                stamp = text
            elif name == "course" and heading is None and text:
                heading = _gpx_number(where, "course", text) % 360.0
            elif name == "speed" and speed is None and text:
                speed = _gpx_number(where, "speed", text) * MS_TO_KMH
        if not stamp:
            raise GpsFileError(f"{where}: no <time> (a replay track needs times)")
        try:
            moment = parse_utc(stamp)
        except ValueError:
            raise GpsFileError(f"{where}: time {stamp!r} is not ISO 8601") from None
        points.append(Position(lat, lon, moment, heading, speed))
    if not points:
        raise GpsFileError(f"{path}: GPX file has no track points (<trkpt>)")
    return points


def _gpx_number(where: str, name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise GpsFileError(f"{where}: {name} {text!r} is not a number") from None
    if not math.isfinite(value) or (name == "speed" and value < 0):
        raise GpsFileError(f"{where}: {name} {text!r} out of range")
    return value


# --- system clock --------------------------------------------------------------------

_TIME_ERROR = 5
_STA_UNSYNC = 0x0040


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    # Linux <sys/timex.h>; the trailing padding is part of the kernel ABI.
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_padding", ctypes.c_int * 11),
    ]


def clock_synchronised() -> bool | None:
    """Whether the kernel considers the system clock synchronised (an NTP or PTP
    daemon disciplines it), from a read-only ``adjtimex`` call; None where that
    cannot be determined (not Linux, no libc, call failed)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        adjtimex = libc.adjtimex
    except (OSError, AttributeError):
        return None
    adjtimex.argtypes = [ctypes.POINTER(_Timex)]
    adjtimex.restype = ctypes.c_int
    timex = _Timex()  # modes 0: read only, no privilege needed
    state = adjtimex(ctypes.byref(timex))
    if state < 0:
        return None
    return state != _TIME_ERROR and not timex.status & _STA_UNSYNC
