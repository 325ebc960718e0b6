"""JSON forms of what lpr-edge emits. These are public contracts (replay output files,
and the MQTT messages HQ integrators subscribe to): change them only by adding keys.
"""

from __future__ import annotations

from datetime import UTC, datetime

from edge.types import PlateRead


def iso_utc(moment: datetime) -> str:
    """ISO-8601 in UTC with milliseconds and a 'Z': ``2026-11-23T08:00:00.125Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_utc(text: str) -> datetime:
    """An ISO-8601 date or date-time as an aware UTC datetime; without a zone it is
    taken as UTC. ValueError when it is not one."""
    moment = datetime.fromisoformat(text.strip())
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def read_record(read: PlateRead) -> dict:
    """A read as one JSON object (one line of ``lpr-edge replay --out``)."""
    return {
        "type": "read",
        "event_id": read.event_id,
        "camera": read.camera,
        "plate": read.plate,
        "confidence": round(read.confidence, 4),
        "candidates": [
            {"plate": c.text, "confidence": round(c.confidence, 4)} for c in read.candidates
        ],
        "frames": read.frames,
        "readings": read.readings,
        "first_frame": read.first_frame,
        "last_frame": read.last_frame,
        "first_seen": iso_utc(read.first_seen),
        "last_seen": iso_utc(read.last_seen),
        "box": [round(v, 1) for v in read.box],
        "source": read.source,
        "linked_event_id": read.linked_event_id,
    }
