"""Recorded files: :class:`VideoFile` reads a recording in the consumer's own thread.
By default every frame comes out, in order, as fast as the consumer takes them
(``lpr-edge replay``), and ``Frame.timestamp`` is the media time, so a replay tracks
exactly like the recording would have. With ``realtime=True`` it behaves like a camera
watched by a slow consumer: frames are released at the file's frame rate and the ones
that were superseded before the consumer asked are skipped and counted.
"""

from __future__ import annotations

import math
import os
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from edge.capture.sources import DecodeTimes, SourceError, _now_utc, _read_timed
from edge.types import Frame

#: Frame rate assumed when a container does not state one.
DEFAULT_FPS = 30.0

# Frame counts without an explicit count in the container are estimated from the
# duration and can be one frame off on a healthy file.
_TRUNCATION_SLACK = 1


class VideoFile:
    """A recorded video file, read frame by frame in the caller's thread.

    Opening checks that the file exists, is a video and that a first frame decodes,
    raising :class:`SourceError` otherwise. Iterating yields :class:`Frame` objects with
    ``seq == frame_number`` (0-based position in the file), ``media_ms`` from the
    container (or ``frame_number * 1000 / fps`` where the container's time is unusable)
    and ``timestamp = media_ms / 1000``.

    At the end, ``truncated`` tells whether the container announced more frames than
    could be decoded (a recording cut off by a power loss); ``frames_read`` and
    ``frame_count`` give the numbers for "read N of M frames".

    With ``realtime=True`` frames are released no faster than the file's frame rate,
    counted from the first frame taken; when the consumer asks late, the frames that
    were due in the meantime are skipped (``frames_skipped``) and the newest due frame
    is returned, as a camera's one-slot mailbox would. Skipped frames keep their
    numbers, so a gap in ``seq`` is a skip.
    """

    def __init__(self, path: str | os.PathLike[str], camera: str, *, realtime: bool = False):
        self.path = Path(path)
        self.camera = camera
        self.realtime = realtime
        self._cap, first = _open_file(self.path)
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps_known = math.isfinite(fps) and 0 < fps <= 1000
        self.fps = float(fps) if self.fps_known else DEFAULT_FPS
        count = self._cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count = int(count) if math.isfinite(count) and 0 < count < 1e9 else 0
        self.size = (int(first.shape[1]), int(first.shape[0]))
        self.frames_read = 0
        self.frames_skipped = 0
        self.truncated = False
        self.ended = False
        self._last_ms: float | None = None
        self._pending: tuple[np.ndarray, float] | None = (first, self._media_ms(0))
        self._t0: float | None = None
        #: Decoding time of the frames after the first (which opening decoded); a
        #: :class:`~edge.capture.camera.Camera` swaps in its own so the sum spans every reopening.
        self.decode_times = DecodeTimes()

    @property
    def duration_s(self) -> float:
        """Announced length in seconds; 0.0 when the container does not say."""
        return self.frame_count / self.fps if self.frame_count else 0.0

    def __iter__(self) -> Iterator[Frame]:
        return self

    def __next__(self) -> Frame:
        if self._cap is None:
            raise StopIteration
        if self.realtime and not self._pace():
            self._finish()
            raise StopIteration
        if self._pending is not None:
            image, media_ms = self._pending
            self._pending = None
        else:
            ok, image = _read_timed(self._cap, self.decode_times)
            if not ok or image is None:
                self._finish()
                raise StopIteration
            media_ms = self._media_ms(self.frames_read)
        number = self.frames_read
        self.frames_read += 1
        return Frame(
            camera=self.camera,
            image=image,
            seq=number,
            timestamp=media_ms / 1000.0,
            captured_mono=time.monotonic(),
            captured_utc=_now_utc(),
            frame_number=number,
            media_ms=media_ms,
        )

    def _pace(self) -> bool:
        """Wait for the next frame's time, or skip to the newest frame already due.

        False when the file ended while skipping.
        """
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        due = math.floor((now - self._t0) * self.fps)
        if due <= self.frames_read:
            delay = self._t0 + self.frames_read / self.fps - now
            if delay > 0:
                time.sleep(delay)
            return True
        while self.frames_read < due:
            if self._pending is not None:
                self._pending = None
            else:
                started = time.perf_counter()
                grabbed = self._cap.grab()
                self.decode_times.grab_s += time.perf_counter() - started
                if not grabbed:
                    return False
            self.frames_read += 1
            self.frames_skipped += 1
        # The grabbed frames were never decoded to images, so their container times
        # are unknown; the position after them is still right.
        self._last_ms = None
        return True

    def _media_ms(self, number: int) -> float:
        pos = self._cap.get(cv2.CAP_PROP_POS_MSEC)
        last = self._last_ms
        if math.isfinite(pos) and pos >= 0 and (last is None or pos > last):
            value = float(pos)
        else:
            value = number * 1000.0 / self.fps
            if last is not None and value <= last:
                value = last + 1000.0 / self.fps
        self._last_ms = value
        return value

    def _finish(self) -> None:
        self.ended = True
        self.truncated = (
            self.frame_count > 0 and self.frames_read + _TRUNCATION_SLACK < self.frame_count
        )
        self.close()

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        self._pending = None

    def __enter__(self) -> VideoFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_file(path: Path) -> tuple[cv2.VideoCapture, np.ndarray]:
    try:
        if not path.exists():
            raise SourceError(f"{path}: no such file")
        if path.is_dir():
            raise SourceError(f"{path}: is a directory, not a video file")
        if not os.access(path, os.R_OK):
            raise SourceError(f"{path}: permission denied")
        if path.stat().st_size == 0:
            raise SourceError(f"{path}: the file is empty")
    except OSError as exc:
        raise SourceError(f"{path}: {exc.strerror or exc}") from exc
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        cap.release()
        if _mp4_without_index(path):
            raise SourceError(
                f"{path}: an MP4 recording without its index (no 'moov' box); it was "
                "probably cut off before the recorder finalised it and cannot be decoded"
            )
        raise SourceError(f"{path}: not a video file, or a format this build cannot read")
    ok, image = cap.read()
    if not ok or image is None:
        cap.release()
        raise SourceError(f"{path}: no frame could be decoded (damaged file or unsupported codec)")
    return cap, image


def _mp4_without_index(path: Path) -> bool:
    """True for an ISO-BMFF file (starts with 'ftyp') with no top-level 'moov' box."""
    try:
        with path.open("rb") as fh:
            size = path.stat().st_size
            offset, first = 0, True
            while offset + 8 <= size:
                fh.seek(offset)
                box_size, box_type = struct.unpack(">I4s", fh.read(8))
                if first and box_type != b"ftyp":
                    return False
                first = False
                if box_type == b"moov":
                    return False
                if box_size == 1:
                    (box_size,) = struct.unpack(">Q", fh.read(8))
                elif box_size == 0:
                    break
                if box_size < 8:
                    break
                offset += box_size
            return not first
    except (OSError, struct.error):
        return False
