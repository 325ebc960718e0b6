"""NMEA 0183, pure decoding. :func:`parse_nmea` checks one sentence's checksum and
decodes ``$xxRMC``/``$xxGGA`` (any talker: GP, GN, GL, GA...) into an
:class:`NmeaSentence`. :class:`NmeaDecoder` turns a stream of sentences into dated
fixes: RMC carries the date, GGA only the time of day, so a GGA takes the date of the
last RMC, rolled over at midnight. A fix without a date (GGA before any RMC) is placed
on the UTC day nearest its receive time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import reduce

from edge.types import Position
from edge.vehicle.gps.fixes import DecodedFix, _aware

KNOTS_TO_KMH = 1.852


class NmeaError(ValueError):
    """A sentence that is not well-formed NMEA 0183 (or a field out of range)."""


class NmeaChecksumError(NmeaError):
    """A sentence whose checksum is missing or does not match (line noise)."""


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
    :class:`~edge.vehicle.gps.receiver.GpsReceiver` and
    :class:`~edge.vehicle.gps.track.PositionTrack` merge fixes with equal times.
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
