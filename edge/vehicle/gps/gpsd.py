"""gpsd's JSON protocol, pure decoding: :func:`parse_gpsd_line` decodes one line
(``TPV`` reports) into a fix. A TPV without ``time`` is dated by its receive time.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

from edge.timefmt import parse_utc
from edge.types import Position
from edge.vehicle.gps.fixes import MS_TO_KMH, DecodedFix, _aware


class GpsdProtocolError(ValueError):
    """A gpsd line that is not a JSON object, or a TPV with unusable fields."""


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
