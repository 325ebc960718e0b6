"""What every frame source shares: the kinds of source (device, network stream, file)
and their states, the source error, and the timing of each decode
(:class:`DecodeTimes`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

import cv2
import numpy as np

SourceKind = Literal["device", "network", "file"]

NETWORK_SCHEMES = ("rtsp", "rtsps", "http", "https", "udp", "tcp", "rtmp")


class SourceError(Exception):
    """A source that cannot be used; the message says why in terms a user can act on."""


class SourceState(StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    #: Never opened since start; still retried with backoff (a file or camera may appear).
    FAILED = "failed"
    #: A file source without ``loop`` played to its end.
    ENDED = "ended"
    STOPPED = "stopped"


def classify_source(source: str) -> SourceKind:
    """``device`` for a V4L2 path or a bare index, ``network`` for a stream URL, else ``file``."""
    text = source.strip()
    if text.isdigit() or text.startswith("/dev/"):
        return "device"
    scheme, sep, _ = text.partition("://")
    if sep and scheme.lower() in NETWORK_SCHEMES:
        return "network"
    return "file"


def _now_utc() -> datetime:
    return datetime.now(UTC)


def set_os_thread_name(name: str) -> None:
    """Name the calling thread for the OS (Linux keeps 15 bytes); a no-op elsewhere."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_name = 15
        libc.prctl(pr_set_name, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass


@dataclass(slots=True)
class DecodeTimes:
    """Time a reader spends getting frames, summed over frames (seconds).

    ``grab_s`` is ``VideoCapture.grab()``: demuxing and decoding (for a live stream or
    device it also holds the wait for the next frame to arrive); ``retrieve_s`` is
    ``VideoCapture.retrieve()``: conversion of the decoded picture to a BGR array.
    Only the thread reading the source writes it; readers elsewhere see a recent sum.
    """

    frames: int = 0
    grab_s: float = 0.0
    retrieve_s: float = 0.0

    @property
    def total_s(self) -> float:
        return self.grab_s + self.retrieve_s


def _read_timed(cap: cv2.VideoCapture, times: DecodeTimes) -> tuple[bool, np.ndarray | None]:
    """``cap.read()`` (which is grab then retrieve) with each half timed into ``times``."""
    t0 = time.perf_counter()
    ok = cap.grab()
    t1 = time.perf_counter()
    times.grab_s += t1 - t0
    if not ok:
        return False, None
    ok, image = cap.retrieve()
    times.retrieve_s += time.perf_counter() - t1
    if ok and image is not None:
        times.frames += 1
    return ok, image
