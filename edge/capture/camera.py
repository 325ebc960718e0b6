"""Live sources: :class:`Camera` reads a V4L2 device, a network stream, or a file played
as if it were a camera, on its own thread and keeps the last few frames
(``buffer_frames``, none older than ``buffer_max_age_seconds``) in a bounded mailbox,
so a pipeline that is slow for a moment catches up, and one that is slow for good
costs dropped frames, never growing latency or memory. It reopens lost or stalled
sources with exponential backoff, forever. (Recordings read in the consumer's own
thread are :class:`edge.capture.videofile.VideoFile`.)

Frame counting in :class:`Camera`: every frame read from the source is ``frames_in``
and gets the next ``seq``; a frame pushed out of the full mailbox before anyone took
it is ``frames_dropped``; a frame handed out by :meth:`Camera.take` is
``frames_processed``. At any instant
``frames_in == frames_dropped + frames_processed + (frames waiting in the mailbox)``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from edge.capture.sources import (
    DecodeTimes,
    SourceError,
    SourceState,
    _now_utc,
    _read_timed,
    classify_source,
    set_os_thread_name,
)
from edge.capture.videofile import VideoFile
from edge.config import CameraConfig
from edge.textrules import redact
from edge.types import Frame

log = logging.getLogger("edge.capture")

# Consecutive failures logged at warning level before retries drop to debug: enough
# to see a problem in the journal, not a line per retry for a camera unplugged all day.
_WARN_RETRIES = 3

# A paced file source that falls this far behind its schedule (a starved CPU) restarts
# the schedule instead of bursting the backlog out the way no camera would.
_MAX_LAG_S = 1.0

_FPS_WINDOW_S = 2.0


@dataclass(frozen=True, slots=True)
class CameraStats:
    """A consistent snapshot of one camera's counters (see the module docstring)."""

    name: str
    state: SourceState
    frames_in: int
    frames_dropped: int
    frames_processed: int
    #: Frames per second read from the source over the last couple of seconds.
    fps_in: float
    #: Successful reopenings after a lost or stalled source (not file loop restarts).
    reconnects: int
    last_error: str | None
    #: Seconds spent in ``state`` when the snapshot was taken.
    since: float


class _Stopped(Exception):
    """Internal: stop() was called while the capture thread waited."""


class Camera:
    """A live source read by its own thread into a mailbox of ``config.buffer_frames``.

    ``take()`` returns the oldest frame waiting that is not older than
    ``config.buffer_max_age_seconds`` (the newest is always taken); a frame arriving at
    a full mailbox pushes the oldest out. Both count as dropped. Taking a frame counts
    it as processed: the caller takes the next frame only when done with the last one.

    Network sources are opened through FFmpeg with ``open_timeout_s`` and a read
    timeout of ``config.stall_seconds``, so no OpenCV call blocks longer than the larger
    of the two; that bounds how long :meth:`stop` can wait for the thread.

    A file source plays at its own frame rate like a camera would (restarting at the
    end with ``config.loop``, else ending in state ``ended``); its frames carry
    ``frame_number``/``media_ms`` but ``timestamp`` is the live capture time, as for
    every live source.
    """

    def __init__(
        self,
        config: CameraConfig,
        *,
        open_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.config = config
        self.name = config.name
        self.source = config.source
        self.kind = classify_source(config.source)
        self.open_timeout_s = open_timeout_s
        self._clock = clock
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._waiting: deque[Frame] = deque()
        self._seq = 0
        self._frames_in = 0
        self._dropped = 0
        self._processed = 0
        self._reconnects = 0
        self._last_error: str | None = None
        self._state = SourceState.CONNECTING
        self._since = clock()
        self._arrivals: deque[float] = deque(maxlen=256)
        #: Time the capture thread spends reading frames from the source, over every
        #: (re)opening; for a stream or device it includes waiting for frames.
        self.decode_times = DecodeTimes()

    # -- public API --

    def start(self) -> Camera:
        if self._thread is not None:
            raise RuntimeError(f"camera {self.name} was already started")
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> bool:
        """Stop capturing; True when the thread has finished within ``timeout``.

        The default timeout covers the longest a capture call can block. Pending
        :meth:`take` calls return None at once either way.
        """
        self._stop.set()
        self._set_state(SourceState.STOPPED)
        with self._cond:
            self._waiting.clear()
        thread = self._thread
        if thread is None:
            return True
        if timeout is None:
            timeout = max(self.open_timeout_s, self.config.stall_seconds) + 1.0
        thread.join(timeout)
        if thread.is_alive():
            log.warning(
                "camera %s: capture thread still blocked in the source after %.1f s",
                self.name,
                timeout,
            )
            return False
        return True

    def take(self, timeout: float) -> Frame | None:
        """The oldest frame waiting, waiting up to ``timeout`` seconds for one.

        None when no frame came in time, once the camera has ended and its last frame
        was taken, and always after :meth:`stop`.
        """
        with self._cond:
            self._cond.wait_for(lambda: self._waiting or self._state in _TERMINAL, timeout)
            if self._state is SourceState.STOPPED or not self._waiting:
                return None
            oldest_kept = self._clock() - self.config.buffer_max_age_seconds
            while len(self._waiting) > 1 and self._waiting[0].captured_mono < oldest_kept:
                self._waiting.popleft()
                self._dropped += 1
            self._processed += 1
            return self._waiting.popleft()

    @property
    def state(self) -> SourceState:
        with self._cond:
            return self._state

    @property
    def ended(self) -> bool:
        return self.state is SourceState.ENDED

    def wait_state(self, *states: SourceState, timeout: float) -> bool:
        """Wait until the camera is in one of ``states``; False on timeout or when it
        reached a final state (ended, stopped) not among them."""
        with self._cond:
            self._cond.wait_for(lambda: self._state in states or self._state in _TERMINAL, timeout)
            return self._state in states

    def wait_ended(self, timeout: float) -> bool:
        return self.wait_state(SourceState.ENDED, timeout=timeout)

    def stats(self) -> CameraStats:
        with self._cond:
            now = self._clock()
            recent = [t for t in self._arrivals if t >= now - _FPS_WINDOW_S]
            span = recent[-1] - recent[0] if len(recent) > 1 else 0.0
            return CameraStats(
                name=self.name,
                state=self._state,
                frames_in=self._frames_in,
                frames_dropped=self._dropped,
                frames_processed=self._processed,
                fps_in=(len(recent) - 1) / span if span > 0 else 0.0,
                reconnects=self._reconnects,
                last_error=self._last_error,
                since=now - self._since,
            )

    def __enter__(self) -> Camera:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- capture thread --

    def _run(self) -> None:
        # Named like the Python thread, so `top -H` and /proc tell the cameras apart.
        set_os_thread_name(f"camera-{self.name}")
        failures = 0  # consecutive, since the last frame read
        ever_opened = False
        warned_truncated = False
        resume_at: float | None = None  # a looping file's next frame time
        where = redact(self.source)
        try:
            while not self._stop.is_set():
                try:
                    reader = self._open(resume_at)
                except SourceError as exc:
                    failures += 1
                    state = SourceState.RECONNECTING if ever_opened else SourceState.FAILED
                    self._set_state(state, str(exc))
                    self._log_retry(failures, f"{exc}; retrying")
                    self._wait(self._backoff(failures))
                    continue
                if ever_opened and failures:
                    with self._cond:
                        self._reconnects += 1
                    log.info("camera %s: reconnected to %s", self.name, where)
                elif not ever_opened:
                    log.info("camera %s: connected to %s", self.name, where)
                ever_opened = True
                self._set_state(SourceState.CONNECTED)
                try:
                    outcome, failures = reader.pump(self, failures)
                except cv2.error as exc:
                    outcome = f"read error: {exc}"
                finally:
                    reader.close()
                if outcome == "end" and isinstance(reader, _FileReader):
                    if reader.video.truncated and not warned_truncated:
                        warned_truncated = True
                        log.warning(
                            "camera %s: %s is truncated: read %d of %d frames",
                            self.name,
                            where,
                            reader.video.frames_read,
                            reader.video.frame_count,
                        )
                    if self.config.loop:
                        resume_at = reader.next_due
                        continue
                    self._set_state(SourceState.ENDED)
                    log.info("camera %s: %s played to its end", self.name, where)
                    return
                failures += 1
                self._set_state(SourceState.RECONNECTING, outcome)
                delay = self._backoff(failures)
                self._log_retry(failures, f"{outcome}; reopening in {delay:.1f} s")
                self._wait(delay)
        except _Stopped:
            pass
        except Exception:
            # The thread must not die silently: the service would keep running blind.
            log.exception("camera %s: capture thread failed", self.name)
            self._set_state(SourceState.FAILED, "internal error in the capture thread")

    def _open(self, resume_at: float | None) -> _Reader:
        try:
            if self.kind == "file":
                video = VideoFile(self.source, self.name)
                video.decode_times = self.decode_times
                return _FileReader(video, resume_at)
            cap = self._open_network() if self.kind == "network" else _open_device(self.source)
            return _StreamReader(cap, self.config.stall_seconds, self.decode_times)
        except cv2.error as exc:
            raise SourceError(f"{redact(self.source)}: {exc}") from exc

    def _open_network(self) -> cv2.VideoCapture:
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            int(self.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            int(self.config.stall_seconds * 1000),
        ]
        started = time.monotonic()
        cap = cv2.VideoCapture(self.source, cv2.CAP_FFMPEG, params)
        if cap.isOpened():
            return cap
        cap.release()
        where = redact(self.source)
        # OpenCV does not say why an open failed (FFmpeg only prints it to stderr); the
        # time it took tells a timeout from an immediate refusal.
        if time.monotonic() - started >= 0.9 * self.open_timeout_s:
            raise SourceError(
                f"stream {where}: no video within {self.open_timeout_s:g} s "
                "(unreachable, or not sending)"
            )
        raise SourceError(
            f"stream {where}: cannot be opened (connection refused, wrong address or path, "
            "or not a video stream)"
        )

    def _backoff(self, failures: int) -> float:
        low, high = self.config.reconnect_min_seconds, self.config.reconnect_max_seconds
        return min(high, low * 2.0 ** min(failures - 1, 60))

    def _wait(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise _Stopped

    def _log_retry(self, failures: int, message: str) -> None:
        if failures < _WARN_RETRIES:
            log.warning("camera %s: %s", self.name, message)
        elif failures == _WARN_RETRIES:
            log.warning(
                "camera %s: %s (failed %d times in a row; further attempts logged at debug level)",
                self.name,
                message,
                failures,
            )
        else:
            log.debug("camera %s: %s (attempt %d)", self.name, message, failures)

    def _set_state(self, state: SourceState, error: str | None = None) -> None:
        with self._cond:
            if self._state is SourceState.STOPPED:
                return
            if error is not None:
                self._last_error = error
            if state is not self._state:
                self._state = state
                self._since = self._clock()
                self._cond.notify_all()

    def _publish(
        self, image: np.ndarray, frame_number: int | None = None, media_ms: float | None = None
    ) -> None:
        now = self._clock()
        utc = _now_utc()
        with self._cond:
            if self._state is SourceState.STOPPED:
                return
            frame = Frame(
                camera=self.name,
                image=image,
                seq=self._seq,
                timestamp=now,
                captured_mono=now,
                captured_utc=utc,
                frame_number=frame_number,
                media_ms=media_ms,
            )
            self._seq += 1
            self._frames_in += 1
            if len(self._waiting) >= self.config.buffer_frames:
                self._waiting.popleft()
                self._dropped += 1
            self._waiting.append(frame)
            self._arrivals.append(now)
            self._cond.notify_all()


_TERMINAL = (SourceState.ENDED, SourceState.STOPPED)


def _open_device(source: str) -> cv2.VideoCapture:
    text = source.strip()
    path = f"/dev/video{text}" if text.isdigit() else text
    if not os.path.exists(path):
        raise SourceError(f"video device {path} does not exist (camera unplugged or wrong path)")
    if not os.access(path, os.R_OK | os.W_OK):
        raise SourceError(
            f"video device {path}: permission denied (the service user needs the 'video' group)"
        )
    cap = cv2.VideoCapture(int(text) if text.isdigit() else path, cv2.CAP_V4L2)
    if not cap.isOpened():
        cap.release()
        raise SourceError(f"video device {path} cannot be opened (busy, or not a capture device)")
    return cap


class _Reader:
    def pump(self, camera: Camera, failures: int) -> tuple[str, int]:
        """Publish frames until the source ends or fails.

        Returns ("end", failures) at a file's end, else (reason for the loss,
        failures); ``failures`` is reset once a frame has been read.
        """
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _StreamReader(_Reader):
    def __init__(
        self, cap: cv2.VideoCapture, stall_seconds: float, decode_times: DecodeTimes | None = None
    ):
        self.cap = cap
        self.stall_seconds = stall_seconds
        self.decode_times = DecodeTimes() if decode_times is None else decode_times

    def pump(self, camera: Camera, failures: int) -> tuple[str, int]:
        clock = camera._clock
        last_frame = clock()
        stalled = False
        while not camera._stop.is_set():
            started = clock()
            ok, image = _read_timed(self.cap, self.decode_times)
            now = clock()
            # FFmpeg's read timeout aborts the stream, yet the read that timed out can
            # still return a frame flushed from the decoder; only later reads fail.
            if now - started >= 0.9 * self.stall_seconds:
                stalled = True
            if not ok or image is None:
                if stalled or now - last_frame >= self.stall_seconds:
                    return f"stream stalled (no frame for {self.stall_seconds:g} s)", failures
                return "stream lost (read failed or the sender closed it)", failures
            last_frame = now
            failures = 0
            camera._publish(image)
        raise _Stopped

    def close(self) -> None:
        self.cap.release()


class _FileReader(_Reader):
    """Plays a file on a camera's schedule: frame n is published at start + n / fps.

    ``resume_at`` continues the schedule of a previous pass (a loop restart), so the
    first frame of the new pass keeps the frame interval after the last one.
    """

    def __init__(self, video: VideoFile, resume_at: float | None = None):
        self.video = video
        self.resume_at = resume_at
        self.next_due: float | None = None

    def pump(self, camera: Camera, failures: int) -> tuple[str, int]:
        clock = camera._clock
        interval = 1.0 / self.video.fps
        start: float | None = None
        for frame in self.video:
            now = clock()
            if start is None:
                start = now if self.resume_at is None else max(now, self.resume_at)
            due = start + frame.frame_number * interval
            if due > now:
                camera._wait(due - now)
            elif now - due > _MAX_LAG_S:
                start = now - frame.frame_number * interval
            camera._publish(frame.image, frame.frame_number, frame.media_ms)
            self.next_due = start + (frame.frame_number + 1) * interval
            failures = 0
        return "end", failures

    def close(self) -> None:
        self.video.close()
