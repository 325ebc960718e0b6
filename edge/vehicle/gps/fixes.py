"""What the GPS decoders, the receiver and the recorded tracks share: the errors, a
decoded fix (:class:`DecodedFix`), and how two reports of one epoch are merged.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

from edge.types import Position

MS_TO_KMH = 3.6


class GpsError(Exception):
    """A GPS source that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class DecodedFix:
    """A fix as decoded from a source. ``dated`` is False when its date (or whole
    time) came from the receive time rather than from the receiver."""

    position: Position
    dated: bool


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _merge(old: Position, new: Position) -> Position:
    """Two reports of one epoch (RMC and GGA; GN and GP talkers): the newer position,
    with heading and speed from whichever gave them."""
    return replace(
        new,
        heading=new.heading if new.heading is not None else old.heading,
        speed_kmh=new.speed_kmh if new.speed_kmh is not None else old.speed_kmh,
    )
