"""`lpr-edge replay`: recorded dashcam files through the same pipeline as the live cameras.

Each file is read frame by frame (every frame, as fast as the machine allows; or paced
at its frame rate with ``--realtime``, dropping what processing cannot keep up with,
as a live camera would) and goes through :class:`~edge.tracking.pipeline.FramePipeline`. Reads
go to ``--out`` as JSON lines. A file that cannot be read is reported and the others
continue.

Times: tracking runs on the file's media time, so a replay tracks as the car did.
The wall-clock time of a frame is the recording's start plus its media time; the
start is ``--start`` when given (for the first file; each next file follows on from
the previous one's end), else the file's modification time minus its duration (a
dashcam writes the file as it records, so the file is last modified when the
recording ends). Files of one camera share the dedup window, so a car crossing from
one dashcam segment into the next is one read.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

from edge.capture.sources import SourceError
from edge.capture.videofile import VideoFile
from edge.config import Config, load_config
from edge.delivery.messages import read_record
from edge.errors import UsageError
from edge.recognition.recognize import open_recognizer
from edge.timefmt import parse_utc
from edge.tracking.pipeline import FramePipeline, latency_summary, load_calibration
from edge.types import Frame, PlateRead
from edge.vehicle.console import start_console
from edge.vehicle.delivery import Delivery
from edge.vehicle.gps.track import GpsFileError, PositionTrack

log = logging.getLogger("edge.replay")

PROGRESS_EVERY_S = 0.5
#: Seconds between reminders that hits wait in memory for disk space.
UNSAVED_REPORT_S = 10.0


@dataclasses.dataclass(slots=True)
class FileResult:
    path: str
    frames: int = 0
    skipped: int = 0
    reads: int = 0
    duplicates: int = 0
    seconds: float = 0.0
    error: str | None = None
    truncated: bool = False
    #: Media length read, for chaining the next file's start after this one.
    duration_s: float = 0.0


def parse_start(text: str) -> datetime:
    """An ISO-8601 time; without a zone it is taken as UTC."""
    try:
        return parse_utc(text)
    except ValueError:
        raise UsageError(f"--start expected an ISO-8601 time, got {text!r}") from None


def recording_start(video: VideoFile, given: datetime | None) -> datetime:
    if given is not None:
        return given
    modified = datetime.fromtimestamp(video.path.stat().st_mtime, UTC)
    return modified - timedelta(seconds=video.duration_s)


def replay_file(
    pipeline: FramePipeline,
    path: Path,
    camera: str,
    *,
    realtime: bool = False,
    start: datetime | None = None,
    on_read=None,
    progress: TextIO | None = None,
) -> FileResult:
    """Run one file through ``pipeline`` under camera name ``camera``."""
    result = FileResult(str(path))
    try:
        video = VideoFile(path, camera, realtime=realtime)
    except SourceError as exc:
        result.error = str(exc)
        return result
    began = time.perf_counter()
    last_report = began
    pipeline.add_camera(camera, str(path))
    duplicates_before = pipeline.duplicates(camera)
    base = recording_start(video, start)

    def emit(reads: list[PlateRead]) -> None:
        result.reads += len(reads)
        if on_read:
            for read in reads:
                on_read(read)

    with video:
        for frame in video:
            frame = _restamp(frame, base)
            try:
                emit(pipeline.process(frame))
            except Exception as exc:
                # Keep what this file already gave (its tracks still end below) and go
                # on with the next file.
                log.exception("%s: frame %s failed", path, frame.frame_number)
                result.error = f"processing failed at frame {frame.frame_number}: {exc}"
                break
            result.frames += 1
            now = time.perf_counter()
            if progress and now - last_report >= PROGRESS_EVERY_S:
                last_report = now
                _progress(progress, path, video, result, now - began)
        emit(pipeline.finish(camera))
    result.skipped = video.frames_skipped
    result.duration_s = video.frames_read / video.fps
    result.truncated = video.truncated
    result.duplicates = pipeline.duplicates(camera) - duplicates_before
    result.seconds = time.perf_counter() - began
    if progress:
        progress.write("\r\x1b[K")
    if video.truncated:
        log.warning(
            "%s: truncated: read %d of %d frames", path, video.frames_read, video.frame_count
        )
    return result


def _restamp(frame: Frame, base: datetime) -> Frame:
    return dataclasses.replace(
        frame, captured_utc=base + timedelta(milliseconds=frame.media_ms or 0.0)
    )


def _progress(out: TextIO, path: Path, video: VideoFile, result: FileResult, elapsed: float):
    total = f"/{video.frame_count}" if video.frame_count else ""
    fps = result.frames / elapsed if elapsed > 0 else 0.0
    out.write(
        f"\r\x1b[K{path.name}: frame {video.frames_read}{total}  {fps:.1f} fps  "
        f"{result.reads} reads"
    )
    out.flush()


def camera_name(config: Config, given: str | None) -> str:
    if given:
        if not all(c.isalnum() or c in "-_" for c in given):
            raise UsageError(f"--camera expected letters, digits, '-' or '_', got {given!r}")
        return given
    return config.cameras[0].name if config.cameras else "replay"


def cmd_replay(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    camera = camera_name(config, args.camera)
    start = parse_start(args.start) if args.start else None
    track = None
    if args.gps:
        try:
            track = PositionTrack.load(args.gps, max_fix_age_s=config.gps.max_fix_age_seconds)
        except GpsFileError as exc:
            raise UsageError(f"--gps: {exc}") from None
    progress = sys.stderr if sys.stderr.isatty() else None
    results: list[FileResult] = []
    latencies: list[float] = []
    hits = 0

    def write(read: PlateRead) -> None:
        # The hit first: it is safe in the outbox (or held in memory while the disk is
        # full) whatever happens to the analyst's output file.
        delivery.dispatcher(read)
        fix = track.position_at(read.first_seen) if track else None
        line = json.dumps(read_record(read, fix)) + "\n"
        try:
            target = out or sys.stdout
            target.write(line)
            target.flush()
        except OSError as exc:
            out_errors.append(f"{read.event_id}: {exc}")
            if len(out_errors) == 1:
                log.error("--out: cannot write a read (%s); the file goes on missing reads", exc)

    out = None
    undelivered = 0
    out_errors: list[str] = []
    try:
        with (
            open_recognizer(config) as recognizer,
            Delivery(config, gps=track) as delivery,
            contextlib.ExitStack() as console_stop,
        ):
            # Opened once the models are known good, so a failed start leaves an
            # earlier output file as it was.
            out = _open_out(args.out)
            delivery.audit_start(
                "replay.start", files=[Path(f).name for f in args.files], camera=camera
            )
            # The officer's page for the replay's hits, while the replay runs.
            console = start_console(config, delivery)
            if console is not None:  # stopped before the delivery closes
                console_stop.callback(console.stop)
            pipeline = FramePipeline(
                recognizer,
                config.tracking,
                keep_context=config.privacy.context_image == "blurred",
                calibration=load_calibration(config),
            )
            for path in args.files:
                result = replay_file(
                    pipeline,
                    Path(path),
                    camera,
                    realtime=args.realtime,
                    start=start,
                    on_read=write,
                    progress=progress,
                )
                results.append(result)
                if start is not None:
                    # --start dates the first file; the next ones follow on from it.
                    start += timedelta(seconds=result.duration_s)
                if result.error:
                    print(f"lpr-edge replay: {path}: {result.error}", file=sys.stderr)
            latencies = list(pipeline.latencies_ms)
            hits = delivery.dispatcher.hits
            wait_until_saved(delivery)
            delivery.audit("replay.end", reads=delivery.dispatcher.reads, hits=hits)
            if not delivery.wait_delivered(args.wait_delivery):
                undelivered = delivery.outbox.stats().pending
                print(
                    f"lpr-edge replay: {undelivered} message(s) not yet acknowledged by the "
                    "broker; they stay in the outbox for the next run",
                    file=sys.stderr,
                )
    finally:
        if out:
            try:
                out.close()
            except OSError as exc:
                out_errors.append(str(exc))
    # Reads own stdout (when no --out); the summary goes beside the log, on stderr.
    summary = _summary(results, latencies)
    summary.update(hits=hits, undelivered=undelivered, out_errors=len(out_errors))
    print(json.dumps({"summary": summary}), file=sys.stderr)
    if out_errors:
        print(
            f"lpr-edge replay: --out {args.out}: {len(out_errors)} read(s) could not be "
            "written; the hits among them are in the outbox",
            file=sys.stderr,
        )
    return 1 if any(r.error for r in results) or out_errors else 0


def wait_until_saved(delivery: Delivery, *, interval_s: float = 1.0) -> None:
    """Hits the full disk refused are held in memory and would die with this process:
    a replay does not end before they are written. It says so every
    :data:`UNSAVED_REPORT_S` and keeps making room (delivered and non-hit data first,
    as the service does); Ctrl-C stops it and names what is lost."""
    outbox = delivery.outbox
    if outbox.save_unsaved() == 0:
        return
    next_report = 0.0
    while (held := outbox.save_unsaved()) > 0:
        now = time.monotonic()
        if now >= next_report:
            next_report = now + UNSAVED_REPORT_S
            print(
                f"lpr-edge replay: {held} hit(s) wait in memory for room in "
                f"{delivery.state_dir} (disk full); free space there, or Ctrl-C to give "
                "them up",
                file=sys.stderr,
                flush=True,
            )
        delivery.watch_disk()
        time.sleep(interval_s)


def _open_out(path: str | None) -> TextIO | None:
    if not path:
        return None
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--out {path}: {exc.strerror or exc}") from None


def _summary(results: list[FileResult], latencies) -> dict:
    frames = sum(r.frames for r in results)
    seconds = sum(r.seconds for r in results)
    return {
        "files": len(results),
        "failed": sum(1 for r in results if r.error),
        "truncated": sum(1 for r in results if r.truncated),
        "frames": frames,
        "frames_skipped": sum(r.skipped for r in results),
        "reads": sum(r.reads for r in results),
        "duplicates_suppressed": sum(r.duplicates for r in results),
        "fps": round(frames / seconds, 1) if seconds else 0.0,
        "latency_ms": latency_summary(latencies),
    }
