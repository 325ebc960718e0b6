"""`lpr-edge run`: the live service on the configured cameras.

Threads and who owns what:

* one capture thread per camera (:class:`~edge.capture.camera.Camera`), each keeping only
  the newest frame, so a slow pipeline drops old frames instead of queueing them;
* one processing thread (the caller of :meth:`LiveService.run`) taking the newest
  frame of each camera in turn through the shared :class:`~edge.tracking.pipeline.FramePipeline`;
* one delivery thread handing reads to the sink through a bounded queue: when the
  sink falls behind, processing waits on the queue and the cameras drop frames, so
  back-pressure never loses a read that was already made.

Stopping (SIGINT/SIGTERM, or ``duration``) ends every track, delivers the reads that
gives and joins the threads within a few seconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edge.capture.camera import Camera, CameraStats
from edge.capture.sources import SourceState
from edge.config import Config, load_config
from edge.privacy.audit import SERVICE_STOP
from edge.recognition.recognize import PlateRecognizer, open_recognizer
from edge.textrules import redact
from edge.tracking.pipeline import FramePipeline, latency_summary, load_calibration
from edge.types import Frame, PlateRead
from edge.vehicle.console import start_console
from edge.vehicle.delivery import Delivery
from edge.vehicle.gps.receiver import GpsReceiver
from edge.vehicle.sdnotify import SystemdNotifier, Watchdog, status_line

log = logging.getLogger("edge.service")

# Reads waiting for the sink. When it is full, processing waits (and the cameras drop
# frames) rather than lose a read; at shutdown the wait is bounded by DRAIN_TIMEOUT_S.
READ_QUEUE_SIZE = 256
# How long the processing loop waits for a frame when no camera has one.
IDLE_WAIT_S = 0.02
# Bound on the time to deliver queued reads at shutdown.
DRAIN_TIMEOUT_S = 5.0
# Frames in a row whose processing failed before the service gives up (and systemd
# restarts it): one bad frame is logged and skipped, a broken model is not hidden.
MAX_CONSECUTIVE_FAILURES = 50
# At a clean stop, how long to wait for the broker to take what is in the outbox.
SHUTDOWN_DELIVERY_S = 5.0
# Before READY=1, how long to wait for the cameras to open (or fail and go on retrying).
READY_CAMERA_WAIT_S = 10.0

ReadSink = Callable[[PlateRead], None]


@dataclass(frozen=True, slots=True)
class RunStats:
    cameras: dict[str, CameraStats]
    fps_processed: dict[str, float]
    reads: int
    latency_ms: dict[str, float | None]
    seconds: float

    def to_json(self) -> dict:
        return {
            "cameras": {
                name: {
                    "frames_in": s.frames_in,
                    "frames_processed": s.frames_processed,
                    "frames_dropped": s.frames_dropped,
                    "fps_processed": round(self.fps_processed[name], 2),
                    "state": s.state.value,
                    "reconnects": s.reconnects,
                }
                for name, s in self.cameras.items()
            },
            "reads": self.reads,
            "latency_ms": self.latency_ms,
            "seconds": round(self.seconds, 2),
        }


class LiveService:
    """Cameras + pipeline + read delivery, opened and closed by :meth:`run`."""

    def __init__(
        self,
        config: Config,
        recognizer: PlateRecognizer,
        sink: ReadSink,
        *,
        cameras: Sequence[Camera] | None = None,
        idle: Callable[[], None] | None = None,
        watchdog: Watchdog | None = None,
        status: Callable[[], str] | None = None,
    ):
        self.config = config
        # Called by the delivery thread when no read came for a while (the watchlist
        # file check runs there, so a changed file is loaded before the next read).
        self.idle = idle
        self.pipeline = FramePipeline(
            recognizer,
            config.tracking,
            keep_context=config.privacy.context_image == "blurred",
            calibration=load_calibration(config),
        )
        self.sink = sink
        if cameras is None:
            cameras = [Camera(c) for c in config.cameras if c.enabled]
        self.cameras = list(cameras)
        for camera in self.cameras:
            # Reads carry their source: never a camera's credentials.
            self.pipeline.add_camera(camera.name, redact(camera.source))
        self._reads: queue.Queue[PlateRead] = queue.Queue(READ_QUEUE_SIZE)
        self.stop_event = threading.Event()
        # Set once every read to deliver is queued; the delivery thread then empties
        # the queue and ends.
        self._drained = threading.Event()
        self._failures = 0
        # systemd: READY=1 once the cameras are up, WATCHDOG=1 while frames get
        # processed, STATUS= from ``status``, STOPPING=1 when the loop ends.
        self.watchdog = watchdog
        self.status = status or (lambda: status_line(self.camera_status()))

    def run(self, duration: float | None = None) -> RunStats:
        """Process until :meth:`stop` (or ``duration`` seconds, or every camera ended)."""
        if not self.cameras:
            raise ValueError("no enabled camera in the configuration")
        began = time.monotonic()
        deliverer = threading.Thread(target=self._deliver, name="deliver-reads", daemon=True)
        deliverer.start()
        try:
            for camera in self.cameras:
                camera.start()
            self._notify_ready()
            self._loop(began, duration)
        finally:
            if self.watchdog:
                self.watchdog.stopping("stopping: delivering the last reads")
            try:
                final_reads = self.pipeline.finish()
            except Exception:
                log.exception("ending the tracks at shutdown failed")
                final_reads = []
            for camera in self.cameras:
                camera.stop(timeout=2.0)
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            for read in final_reads:
                self._queue(read, deadline=deadline)
            self._drained.set()
            deliverer.join(max(0.0, deadline - time.monotonic()) + 0.5)
            if deliverer.is_alive():
                log.error(
                    "%d read(s) still undelivered %.0f s after the stop",
                    self._reads.qsize(),
                    DRAIN_TIMEOUT_S,
                )
        seconds = time.monotonic() - began
        stats = {c.name: c.stats() for c in self.cameras}
        latencies = list(self.pipeline.latencies_ms)
        return RunStats(
            cameras=stats,
            fps_processed={n: s.frames_processed / seconds for n, s in stats.items()},
            reads=self.pipeline.reads,
            latency_ms=latency_summary(latencies),
            seconds=seconds,
        )

    def stop(self) -> None:
        self.stop_event.set()

    def camera_status(self) -> dict:
        """Each camera's state for the status heartbeat."""
        out = {}
        for camera in self.cameras:
            s = camera.stats()
            out[camera.name] = {
                "state": s.state.value,
                "fps": round(s.fps_in, 1),
                "frames_processed": s.frames_processed,
                "frames_dropped": s.frames_dropped,
                "reconnects": s.reconnects,
                "last_error": s.last_error,
            }
        return out

    def _notify_ready(self) -> None:
        if self.watchdog is None:
            return
        deadline = time.monotonic() + READY_CAMERA_WAIT_S
        for camera in self.cameras:
            camera.wait_state(
                SourceState.CONNECTED,
                SourceState.RECONNECTING,
                SourceState.FAILED,
                timeout=max(0.0, deadline - time.monotonic()),
            )
        self.watchdog.ready(status=self.status())

    def _loop(self, began: float, duration: float | None) -> None:
        turn = 0
        while not self.stop_event.is_set():
            if self.watchdog:
                self.watchdog.tick(self.status)
            if duration is not None and time.monotonic() - began >= duration:
                break
            worked = False
            # Round robin from a rotating start, so neither camera starves the other.
            for k in range(len(self.cameras)):
                camera = self.cameras[(turn + k) % len(self.cameras)]
                frame = camera.take(0.0)
                worked |= frame is not None
                self._handle(camera, frame)
            turn += 1
            if worked:
                continue
            # Checked only after a round without frames, so a file's last frame counts.
            if all(c.ended for c in self.cameras):
                break
            # Nothing new anywhere: wait briefly for the next camera's frame.
            camera = self.cameras[turn % len(self.cameras)]
            frame = camera.take(IDLE_WAIT_S)
            if frame is not None:
                self._handle(camera, frame)

    def _handle(self, camera: Camera, frame: Frame | None) -> None:
        """One camera's turn: its new frame through the pipeline, or, with no new
        frame, the reads of tracks that ended meanwhile. A failure is logged and the
        service goes on; a run of failures means something is broken for good."""
        try:
            if frame is None:
                reads = self.pipeline.tick(camera.name, time.monotonic())
            else:
                reads = self.pipeline.process(frame)
            self._failures = 0
            if self.watchdog:
                self.watchdog.progress("loop")
        except Exception:
            self._failures += 1
            log.exception("camera %s: processing a frame failed", camera.name)
            if self._failures >= MAX_CONSECUTIVE_FAILURES:
                raise
            return
        for read in reads:
            self._queue(read)

    def _queue(self, read: PlateRead, deadline: float | None = None) -> None:
        """Hand a read to the delivery thread, waiting while its queue is full (the
        back-pressure); gives up only at the shutdown ``deadline``."""
        while True:
            try:
                self._reads.put(read, timeout=0.2)
                return
            except queue.Full:
                if deadline is not None and time.monotonic() >= deadline:
                    log.error("read %s dropped: delivery stalled at shutdown", read.event_id)
                    return

    def _deliver(self) -> None:
        while True:
            if self.watchdog:
                self.watchdog.progress("deliver")
            try:
                read = self._reads.get(timeout=0.2)
            except queue.Empty:
                if self._drained.is_set():
                    return
                if self.idle:
                    try:
                        self.idle()
                    except Exception:
                        log.exception("idle work of the delivery thread failed")
                continue
            try:
                self.sink(read)
            except Exception:
                log.exception("delivering read %s failed", read.event_id)


def cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    enabled = [c for c in config.cameras if c.enabled]
    if not enabled:
        print("lpr-edge run: no enabled camera in the configuration", file=sys.stderr)
        return 2
    service: LiveService | None = None
    notifier = SystemdNotifier(unset_environment=True)
    watchdog = Watchdog(notifier, sources=("loop", "deliver"))

    def cameras_status() -> dict:
        return service.camera_status() if service else {}

    with (
        open_recognizer(config) as recognizer,
        GpsReceiver(config.gps) as gps,
        Delivery(config, cameras=cameras_status, gps=gps) as out,
    ):

        def summary() -> str:
            return status_line(
                service.camera_status(),
                reads=service.pipeline.reads,
                hits=out.dispatcher.hits,
                outbox=out.outbox.stats().pending,
                broker=(
                    ("connected" if out.publisher.connected else "offline")
                    if out.publisher
                    else None
                ),
            )

        service = LiveService(
            config,
            recognizer,
            out.dispatcher,
            idle=out.idle,
            watchdog=watchdog,
            status=summary,
        )

        def on_signal(signum, _frame):
            # The first signal stops cleanly; a second one acts as if we had not
            # caught it (an operator's repeated Ctrl-C must always work).
            signal.signal(signum, previous[signum])
            service.stop()

        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, on_signal)
        out.audit_start(cameras=[c.name for c in enabled])
        reason = "error"
        console = None
        try:
            console = start_console(config, out)
            log.info("running %d camera(s): %s", len(enabled), ", ".join(c.name for c in enabled))
            stats = service.run(duration=args.duration)
            reason = "signal" if service.stop_event.is_set() else "ended"
            # Hits are safe in the outbox either way; a short wait lets this run's
            # reach HQ now rather than at the next start.
            if not out.wait_delivered(SHUTDOWN_DELIVERY_S):
                log.warning("outbox: hits left for the next start (broker not reachable)")
        finally:
            if console is not None:
                console.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            out.audit(
                SERVICE_STOP, reason=reason, reads=out.dispatcher.reads, hits=out.dispatcher.hits
            )
    result = stats.to_json()
    result["hits"] = out.dispatcher.hits
    print(json.dumps(result), flush=True)
    return 0
