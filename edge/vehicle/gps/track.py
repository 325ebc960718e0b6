"""Where the car was: :class:`PositionTrack`, a recorded track (NMEA log or GPX 1.1)
for ``lpr-edge replay --gps``, interpolated by time.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from edge.timefmt import parse_utc
from edge.types import Position, PositionFix
from edge.vehicle.gps.fixes import MS_TO_KMH, GpsError, _aware, _merge
from edge.vehicle.gps.nmea import (
    NmeaChecksumError,
    NmeaDecoder,
    NmeaError,
    NmeaSentence,
    parse_nmea,
)

log = logging.getLogger("edge.gps")

#: Mean Earth radius (IUGG), metres.
EARTH_RADIUS_M = 6_371_008.8


class GpsFileError(GpsError):
    """A position track file that cannot be used; the message names the file."""


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
