"""The watchlist stage: a read that matches the watchlist becomes a :class:`Hit`.

Pure functions of their inputs, no I/O: the service hands the hit to the outbox
(:mod:`edge.delivery.outbox`) and to the in-car alert (:mod:`edge.delivery.alerts`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime

import cv2
import numpy as np

from edge.types import PlateRead, PositionFix
from edge.watchlist.lists import Watchlist, WatchlistEntry, WatchlistMatch

# JPEG qualities tried, best first, before the crop is made smaller to fit the cap.
_JPEG_QUALITIES = (90, 75, 60, 45)
# A crop is never shrunk below this width: past it the image no longer shows the plate.
_MIN_IMAGE_WIDTH = 48
#: Largest context image sent with a hit (bytes of JPEG).
CONTEXT_IMAGE_MAX_BYTES = 150_000
# Context images are made at most this wide: enough to place the car, no more.
_CONTEXT_WIDTH = 1280
# Around the plate, this much of its width (each side) and height stays sharp.
_SHARP_MARGIN_X, _SHARP_MARGIN_Y = 0.3, 0.5
# Blur: the frame is averaged down by this factor, then smoothed back up, so no
# text, face or other plate survives in it.
_PIXELATE = 24


@dataclasses.dataclass(frozen=True, slots=True)
class Hit:
    """A read that matched a watchlist entry, with what HQ needs to act on it."""

    read: PlateRead
    match: WatchlistMatch
    vehicle_id: str
    #: The GPS fix nearest the read (with its age), or None without one.
    position: PositionFix | None = None
    #: The plate crop as JPEG bytes within the configured cap, or None.
    plate_jpeg: bytes | None = None
    #: The whole frame blurred except the plate (``[privacy] context_image``), or None.
    context_jpeg: bytes | None = None

    @property
    def event_id(self) -> str:
        return self.read.event_id

    @property
    def covert(self) -> bool:
        """Covert entries go to HQ but raise no alert in the car."""
        return self.match.entry.covert


@dataclasses.dataclass(frozen=True, slots=True)
class RaisedHit:
    """What the car keeps of a hit it raised, so that it can withdraw the hit when
    the read behind it is corrected: no images, only what the officer must be told."""

    event_id: str
    plate: str
    camera: str
    entry: WatchlistEntry

    @classmethod
    def of(cls, hit: Hit) -> RaisedHit:
        return cls(hit.event_id, hit.read.plate, hit.read.camera, hit.match.entry)

    @property
    def covert(self) -> bool:
        return self.entry.covert


@dataclasses.dataclass(frozen=True, slots=True)
class Withdrawal:
    """A hit taken back: the car's later views of the plate read another text
    (``lpr.withdrawal/1``). It names the hit by its id only: the corrected text is not
    a hit and stays in the car."""

    #: The withdrawal's own id (a UUIDv7 like every message's).
    event_id: str
    vehicle_id: str
    #: When the car saw what overturned the read (the correction's last frame).
    at: datetime
    withdrawn: RaisedHit
    reason: str = "corrected"


def same_entry(a: WatchlistEntry, b: WatchlistEntry) -> bool:
    """Whether two matches name the same watchlist entry (a reloaded list gives equal
    entries as new objects, perhaps on other lines)."""
    return (a.list, a.entry_id, a.plate) == (b.list, b.entry_id, b.plate)


def best_match(
    read: PlateRead,
    watchlists: Sequence[Watchlist],
    *,
    at: datetime,
    max_distance: float,
) -> WatchlistMatch | None:
    """The best entry for ``read`` over several lists (the local file and the list HQ
    pushed), trying the read's other candidates too; lists rank alike."""
    candidates = [c.text for c in read.candidates if c.text != read.plate]
    found = [
        m
        for wl in watchlists
        if (m := wl.match(read.plate, at=at, candidates=candidates, max_distance=max_distance))
    ]
    return min(found, key=WatchlistMatch.sort_key) if found else None


def make_hit(
    read: PlateRead,
    match: WatchlistMatch,
    vehicle_id: str,
    *,
    position: PositionFix | None = None,
    image_max_bytes: int = 0,
    context_max_bytes: int = 0,
) -> Hit:
    jpeg = plate_jpeg(read.crop, image_max_bytes) if read.crop is not None else None
    context = None
    if read.context is not None and context_max_bytes > 0:
        context = plate_jpeg(blurred_context(read.context, read.box), context_max_bytes)
    return Hit(read, match, vehicle_id, position, jpeg, context)


def blurred_context(frame: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """The frame, reduced to at most ``_CONTEXT_WIDTH`` wide and blurred beyond
    recognition everywhere except the plate ``box`` and a small margin around it:
    where the car was, without the bystanders, buildings and other plates."""
    h, w = frame.shape[:2]
    scale = min(1.0, _CONTEXT_WIDTH / w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    image = cv2.resize(frame, size, interpolation=cv2.INTER_AREA) if scale < 1 else frame
    small = (max(1, size[0] // _PIXELATE), max(1, size[1] // _PIXELATE))
    coarse = cv2.resize(image, small, interpolation=cv2.INTER_AREA)
    out = cv2.resize(coarse, size, interpolation=cv2.INTER_LINEAR)
    out = cv2.GaussianBlur(out, (0, 0), _PIXELATE / 2)
    x1, y1, x2, y2 = (v * scale for v in box)
    mx, my = (x2 - x1) * _SHARP_MARGIN_X, (y2 - y1) * _SHARP_MARGIN_Y
    left, top = max(0, int(x1 - mx)), max(0, int(y1 - my))
    right, bottom = min(size[0], int(np.ceil(x2 + mx))), min(size[1], int(np.ceil(y2 + my)))
    out[top:bottom, left:right] = image[top:bottom, left:right]
    return out


def plate_jpeg(crop: np.ndarray, max_bytes: int) -> bytes | None:
    """The crop as a JPEG of at most ``max_bytes``: lower quality first, then smaller.
    None when ``max_bytes`` is 0 or no legible size fits."""
    if max_bytes <= 0 or crop.size == 0:
        return None
    image = crop
    while True:
        for quality in _JPEG_QUALITIES:
            ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if ok and len(data) <= max_bytes:
                return data.tobytes()
        width = image.shape[1] * 3 // 4
        if width < _MIN_IMAGE_WIDTH:
            return None
        height = max(1, round(image.shape[0] * width / image.shape[1]))
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
