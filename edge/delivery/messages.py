"""JSON forms of what lpr-edge emits. These are public contracts (replay output files,
and the MQTT messages HQ integrators subscribe to): change them only by adding keys.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import TYPE_CHECKING

from edge.timefmt import iso_utc
from edge.types import PlateRead, PositionFix

if TYPE_CHECKING:
    from edge.delivery.hits import Hit, Withdrawal


def position_record(fix: PositionFix | None) -> dict | None:
    """A GPS fix as carried by reads and hits: where, when, and how old it was at the
    read (``stale`` when older than ``[gps] max_fix_age_seconds``)."""
    if fix is None:
        return None
    p = fix.position
    return {
        "lat": round(p.lat, 7),
        "lon": round(p.lon, 7),
        "heading": None if p.heading is None else round(p.heading, 1),
        "speed_kmh": None if p.speed_kmh is None else round(p.speed_kmh, 1),
        "fix_time": iso_utc(p.fix_time),
        "age_s": round(fix.age_s, 2),
        "stale": fix.stale,
    }


def read_record(read: PlateRead, fix: PositionFix | None = None) -> dict:
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
        "corrects_event_id": read.corrects_event_id,
        "position": position_record(fix),
        **cross_boundary_fields(read),
    }


def cross_boundary_fields(read: PlateRead) -> dict:
    """The keys a cross-boundary plate's read or hit adds (none for other plates):
    its kind, its text with the Chinese characters, and its vehicle's plate above it."""
    if not read.marked_plate:
        return {}
    return {
        "plate_kind": read.kind,
        "marked_plate": read.marked_plate,
        "vehicle_plate": read.vehicle_plate,
    }


HIT_SCHEMA = "lpr.hit/1"
WITHDRAWAL_SCHEMA = "lpr.withdrawal/1"
STATUS_SCHEMA = "lpr.status/1"


def hit_message(hit: Hit) -> dict:
    """A hit as published to ``{prefix}/{vehicle_id}/hit`` (``edge/data/hit.schema.json``).

    ``observed_at`` is when the plate was first seen; ``first_seen``/``last_seen``
    bound the pass. ``source`` is set for recorded files only (file name, not path:
    an analyst's folders are not evidence).
    """
    read, match = hit.read, hit.match
    entry = match.entry
    source = None
    if read.first_frame is not None:
        source = {
            "file": Path(read.source).name,
            "first_frame": read.first_frame,
            "last_frame": read.last_frame,
        }
    # A stale fix is not where the car was: the hit says "no position" instead.
    fix = hit.position
    position = position_record(fix) if fix is not None and not fix.stale else None
    return {
        "schema": HIT_SCHEMA,
        "event_id": read.event_id,
        "vehicle_id": hit.vehicle_id,
        "camera": read.camera,
        "plate": read.plate,
        "confidence": round(read.confidence, 4),
        "observed_at": iso_utc(read.first_seen),
        "first_seen": iso_utc(read.first_seen),
        "last_seen": iso_utc(read.last_seen),
        "frames": read.frames,
        "watchlist": {
            "list": entry.list,
            "entry_id": entry.entry_id,
            "entry_plate": entry.plate,
            "reason": entry.reason,
            "priority": entry.priority,
            "match": match.kind,
            "distance": match.distance,
            "matched_text": match.text,
            "covert": entry.covert,
            "scope": match.scope,
        },
        "position": position,
        "plate_image": base64.b64encode(hit.plate_jpeg).decode("ascii") if hit.plate_jpeg else None,
        "source": source,
        "linked_event_id": read.linked_event_id,
        "corrects_event_id": read.corrects_event_id,
        "context_image": (
            base64.b64encode(hit.context_jpeg).decode("ascii") if hit.context_jpeg else None
        ),
        **cross_boundary_fields(read),
    }


def withdrawal_message(withdrawal: Withdrawal) -> dict:
    """A withdrawn hit as published to ``{prefix}/{vehicle_id}/hit``, beside the hits
    (``edge/data/withdrawal.schema.json``): the id of the hit taken back and why. No
    plate: the text the read was corrected to is not a hit, and stays in the car."""
    return {
        "schema": WITHDRAWAL_SCHEMA,
        "event_id": withdrawal.event_id,
        "vehicle_id": withdrawal.vehicle_id,
        "at": iso_utc(withdrawal.at),
        "withdraws_event_id": withdrawal.withdrawn.event_id,
        "reason": withdrawal.reason,
    }


#: Keys of a hit holding base64 JPEG images.
IMAGE_KEYS = ("plate_image", "context_image")


def without_images(message: dict) -> dict:
    """A hit for printing: each image replaced by its size, as ``<key>_bytes``."""
    out = {k: v for k, v in message.items() if k not in IMAGE_KEYS}
    for key in IMAGE_KEYS:
        image = message.get(key)
        out[f"{key}_bytes"] = base64_size(image) if isinstance(image, str) else 0
    return out


def base64_size(text: str) -> int:
    """Bytes that base64 ``text`` decodes to (without decoding it)."""
    stripped = text.rstrip("=")
    return len(stripped) * 3 // 4


def encode(message: dict) -> bytes:
    """The wire form of every message: compact UTF-8 JSON."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
