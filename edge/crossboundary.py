"""Cross-boundary plates: the Guangdong plate a Hong Kong cross-boundary vehicle
carries, usually under its Hong Kong plate (``粤Z`` + four letters or digits + ``港``
for Hong Kong or ``澳`` for Macao, white on black).

Its core (``Z1234``) reads like any registration; what tells it apart is the Chinese
characters around the core, which the recogniser is asked for only where a reading has
the core's shape. Linking it to the Hong Kong plate above it is geometry: the two are
mounted one under the other on the same bumper.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

#: The Chinese characters a cross-boundary plate can carry: the province, then the
#: region it crosses to.
PROVINCE = "粤"
REGIONS = "港澳"
MARKS = PROVINCE + REGIONS
#: The core of a cross-boundary plate as the plate alphabet reads it.
CORE = re.compile(r"Z[A-Z0-9]{4}")

Box = tuple[float, float, float, float]


#: A cross-boundary plate written as issued, as a watchlist may list it: 粤Z1234港,
#: 粤Z·1234港 (the dot the plate shows), or without the province or the region.
AS_ISSUED = re.compile(r"粤?Z[·.]?[A-Z0-9]{4}[港澳]?")


def written_as_issued(text: str) -> bool:
    """Whether ``text`` (upper case, spaces removed) is a cross-boundary plate with its
    Chinese characters where they belong."""
    return AS_ISSUED.fullmatch(text) is not None and any(c in MARKS for c in text)


def has_core_shape(text: str) -> bool:
    return CORE.fullmatch(text) is not None


def core_after_text(read: str) -> str | None:
    """A core of the cross-boundary shape in ``read`` after other characters (a
    Hong Kong plate and the cross-boundary plate under it, read as one line), or None."""
    found = CORE.search(read, 1)
    return None if found is None else found.group()


def marked_text(core: str, read: str) -> str | None:
    """The plate's full text from ``read`` (the recogniser's reading with the Chinese
    characters allowed), or None when ``read`` shows no cross-boundary mark around
    ``core``. A mark the recogniser missed is left out, not guessed: ``Z1234港``."""
    at = read.find(core)
    if at < 0:
        return None
    before, after = read[:at], read[at + len(core) :]
    prefix = PROVINCE if PROVINCE in before else ""
    region = next((c for c in after if c in REGIONS), "")
    if not prefix and not region:
        return None
    return f"{prefix}{core}{region}"


#: How far below a plate a cross-boundary plate may start, in its own heights, and
#: how much of the narrower plate's width the two must share.
STACK_GAP = 1.5
STACK_OVERLAP = 0.3


def stacked_above(below: Box, others: Sequence[tuple[int, Box]]) -> int | None:
    """The key, among ``others`` ((key, box) pairs), of the plate mounted directly
    above the plate at ``below`` (the same vehicle's Hong Kong plate), or None: the
    nearest one that overlaps it horizontally, lies above it, and ends at most
    :data:`STACK_GAP` of its heights above its top."""
    x1, y1, x2, y2 = below
    height = max(1.0, y2 - y1)
    best: tuple[float, int] | None = None
    for key, (ox1, oy1, ox2, oy2) in others:
        shared = min(x2, ox2) - max(x1, ox1)
        narrower = max(1.0, min(x2 - x1, ox2 - ox1))
        gap = y1 - oy2
        stacked = (
            shared >= STACK_OVERLAP * narrower
            and (oy1 + oy2) / 2 < (y1 + y2) / 2
            and gap <= STACK_GAP * height
        )
        if stacked and (best is None or abs(gap) < best[0]):
            best = (abs(gap), key)
    return None if best is None else best[1]
