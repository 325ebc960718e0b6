"""`lpr-edge bench video`: two-camera throughput, latency and read accuracy.

Generates two 1920x1080 30 fps clips (different traffic per camera, with ground truth)
and measures:

* **live**: both clips played as the two cameras at their own frame rate, exactly as
  `lpr-edge run` does with file sources: processed fps per camera, frames dropped,
  read latency p50/p95 (from the last frame a read used, and from the first frame in
  which its plate was legible), and how many passes were read exactly;
* **replay**: one clip through `lpr-edge replay`'s path, every frame: fps and the
  exact-read rate against the ground truth, duplicate and wrong reads.

Both report the video time from a plate's first legible frame to the frame that
decided its read: the share of the latency that detection, OCR and the vote make,
which a replay measures the same on any machine.

Each part also reports a profile: milliseconds per processed frame and share of the
processing thread's busy time for resize/letterbox, detector inference, output
decoding + NMS, the rest of detection (search planning), tracking and OCR; decoding
(on the capture threads, in parallel: ms per decoded frame); the read sink (on the
delivery thread; here a list append, no watchlist or outbox); the CPU cores the
process kept busy; and memory (peak and current RSS).

Clips are cached under the state directory's ``bench/`` folder by their spec, so
repeated runs measure processing, not rendering.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from edge.bench.latency import legible_lines, legible_summary
from edge.bench.meters import PartMeter, process_memory, thread_ids
from edge.bench.passes import (
    decision_latency_by_width,
    pass_listing,
    pass_outcomes,
    summarise_outcomes,
)
from edge.bench.photoclips import PhotoClipSpec, photo_clips
from edge.bench.trueboxes import format_true_boxes, run_true_boxes
from edge.capture.camera import Camera
from edge.capture.sources import DecodeTimes
from edge.config import CameraConfig, Config, load_config
from edge.errors import UsageError
from edge.recognition.recognize import open_recognizer
from edge.synth import clipplan, clipspec, hkplates, scenes
from edge.synth import clips as synth_clips
from edge.synth.clips import render_clip
from edge.synth.clipspec import ClipSpec, ClipTruth, PassTruth
from edge.tracking.pipeline import FramePipeline, StageTimes, latency_summary, load_calibration
from edge.types import PlateRead
from edge.vehicle.replay import replay_file
from edge.vehicle.service import LiveService

CAMERAS = ("front-left", "rear-right")


@dataclass(frozen=True, slots=True)
class ReadScore:
    passes: int
    exact: int
    wrong: int
    duplicates: int

    @property
    def exact_rate(self) -> float:
        return self.exact / self.passes if self.passes else 0.0

    def to_json(self) -> dict:
        return {
            "passes": self.passes,
            "read_exactly": self.exact,
            "exact_rate": round(self.exact_rate, 3),
            "wrong_reads": self.wrong,
            "duplicate_reads": self.duplicates,
        }


def score_reads(truth: ClipTruth, reads: list[PlateRead]) -> ReadScore:
    """Reads against the clip's legible passes: a pass is read exactly when some read
    has its text; reads of a text no pass has are wrong; extra reads of a pass are
    duplicates. A pass never legible (too small or cut by the frame edge) is not counted."""
    texts = [p.text for p in truth.passes if p.first_legible_frame is not None]
    everything = {p.text for p in truth.passes} | set(truth.fine_to_read)
    counts: dict[str, int] = {}
    wrong = 0
    for read in reads:
        if read.plate in texts:
            counts[read.plate] = counts.get(read.plate, 0) + 1
        elif read.plate not in everything:
            wrong += 1
    duplicates = sum(n - 1 for n in counts.values() if n > 1)
    return ReadScore(len(texts), len(counts), wrong, duplicates)


def _first_reads(truth: ClipTruth, reads: list[PlateRead]) -> Iterator[tuple[PassTruth, PlateRead]]:
    """Each legible pass read exactly, with the first read of its text."""
    first_read: dict[str, PlateRead] = {}
    for read in sorted(reads, key=lambda r: r.emitted_mono):
        first_read.setdefault(read.plate, read)
    for p in truth.passes:
        read = first_read.get(p.text)
        if p.first_legible_frame is not None and read is not None and read.last_frame is not None:
            yield p, read


def legible_latencies_ms(truth: ClipTruth, reads: list[PlateRead]) -> list[tuple[str, float]]:
    """For each pass read exactly, its kind and the time from the capture of the first
    frame in which its plate was legible to the read being emitted (the first read of
    that text). A played file is captured on a fixed schedule (frame n at start + n /
    fps), so that frame's capture time follows from the last frame the read used."""
    out = []
    for p, read in _first_reads(truth, reads):
        frames_before = read.last_frame - p.first_legible_frame
        legible_mono = read.last_capture_mono - frames_before / truth.fps
        out.append((p.kind, (read.emitted_mono - legible_mono) * 1e3))
    return out


def legible_to_decision_ms(truth: ClipTruth, reads: list[PlateRead]) -> list[tuple[str, float]]:
    """For each pass read exactly, its kind and the video time from its first legible
    frame to the frame that decided its read (the read's last frame; 0 when decided
    sooner): the part of the legible-to-read latency that detection, OCR and the vote
    make. A replay measures it the same on any machine; live adds the processing
    delay (the latency from the last frame used) and the frames it dropped."""
    return [
        (p.kind, max(0, read.last_frame - p.first_legible_frame) * 1e3 / truth.fps)
        for p, read in _first_reads(truth, reads)
    ]


def clip_for(cache: Path, spec: ClipSpec) -> tuple[Path, ClipTruth]:
    """The clip for ``spec``, rendered once and then reused; a change to the spec's
    other fields or to the renderer's code makes a new one (a clip drawn by an older
    renderer would measure the old plates)."""
    digest = hashlib.sha256(repr(spec).encode())
    for module in (clipspec, clipplan, synth_clips, scenes, hkplates):
        digest.update(Path(module.__file__).read_bytes())
    name = (
        f"clip-{spec.size[0]}x{spec.size[1]}-{spec.fps:g}fps-{spec.seconds:g}s-{spec.seed}"
        f"-{digest.hexdigest()[:12]}"
    )
    path = cache / f"{name}.mp4"
    if path.exists() and path.with_suffix(".json").exists():
        return path, ClipTruth.load(path.with_suffix(".json"))
    cache.mkdir(parents=True, exist_ok=True)
    return path, render_clip(path, spec)


#: Processing-thread stages of the profile, in pipeline order: (name, StageTimes field).
STAGES = (
    ("resize_letterbox", "preprocess_ms"),
    ("detector", "infer_ms"),
    ("decode_nms", "postprocess_ms"),
    ("detect_other", "detect_other_ms"),
    ("tracking", "track_ms"),
    ("ocr", "ocr_ms"),
)


def profile_json(times: StageTimes, wall_s: float | None = None) -> dict:
    """Per-stage ms per processed frame and percent of the processing thread's busy
    time. ``wall_s``, when given, adds how much of that wall time the thread was busy
    with this camera's frames."""
    total = times.busy_ms or times.detect_ms + times.ocr_ms + times.track_ms
    n = max(times.frames, 1)

    def share(ms: float) -> dict:
        return {
            "ms_per_frame": round(ms / n, 2),
            "percent": round(100 * ms / total, 1) if total else 0,
        }

    out = {
        "frames": times.frames,
        "busy_ms_per_frame": round(total / n, 2),
        "stages": {name: share(getattr(times, field)) for name, field in STAGES},
        "detect": share(times.detect_ms),
        "ocr": share(times.ocr_ms),
        "track": share(times.track_ms),
        "detector_runs_per_frame": round(times.detector_runs / n, 2),
        "ocr_crops_per_frame": round(times.ocr_crops / n, 2),
        "searched_whole": times.scans,
        "searched_around_tracks": times.region_searches,
        "not_searched": times.unsearched,
    }
    if wall_s:
        out["busy_percent_of_wall"] = round(100 * total / 1e3 / wall_s, 1)
    return out


def decode_json(times: DecodeTimes, wall_s: float) -> dict:
    """Capture-thread time per decoded frame (decoded frames include those dropped
    later) and the share of the run's wall time the thread spent decoding."""
    n = max(times.frames, 1)
    return {
        "frames": times.frames,
        "ms_per_frame": round(times.total_s * 1e3 / n, 2),
        "grab_ms_per_frame": round(times.grab_s * 1e3 / n, 2),
        "retrieve_ms_per_frame": round(times.retrieve_s * 1e3 / n, 2),
        "percent_of_wall": round(100 * times.total_s / wall_s, 1) if wall_s else 0,
    }


def _sum_decode(times: list[DecodeTimes]) -> DecodeTimes:
    return DecodeTimes(
        frames=sum(t.frames for t in times),
        grab_s=sum(t.grab_s for t in times),
        retrieve_s=sum(t.retrieve_s for t in times),
    )


# --- the two parts ------------------------------------------------------------------


def run_live(config: Config, clips: list[tuple[Path, ClipTruth]]) -> dict:
    # The clips stand in for the configured cameras: their other settings (buffer)
    # are kept, so a configuration can be measured as it would run.
    configured = list(config.cameras) + [CameraConfig()] * len(CAMERAS)
    cameras = [
        Camera(replace(base, name=name, source=str(path), enabled=True, loop=False))
        for base, name, (path, _truth) in zip(configured, CAMERAS, clips, strict=False)
    ]
    reads: dict[str, list[PlateRead]] = {name: [] for name in CAMERAS}
    lock = threading.Lock()
    sink_s = [0.0]

    def sink(read: PlateRead) -> None:
        started = time.perf_counter()
        with lock:
            reads[read.camera].append(read)
        sink_s[0] += time.perf_counter() - started

    before = thread_ids()
    with open_recognizer(config) as recognizer, PartMeter(thread_ids() - before) as meter:
        service = LiveService(config, recognizer, sink, cameras=cameras)
        # Bounded even if a clip cannot be played (a failed camera never ends).
        longest = max(truth.seconds for _path, truth in clips)
        stats = service.run(duration=longest * 1.5 + 10)
        times = service.pipeline.times
    out = stats.to_json()
    legible: list[tuple[str, float]] = []
    deciding: list[tuple[str, float]] = []
    for name, (_path, truth) in zip(CAMERAS, clips, strict=True):
        out["cameras"][name]["reads"] = score_reads(truth, reads[name]).to_json()
        out["cameras"][name]["profile"] = profile_json(times[name], stats.seconds)
        legible += legible_latencies_ms(truth, reads[name])
        deciding += legible_to_decision_ms(truth, reads[name])
    # What an officer waits: from the first frame a plate could be read in to its read.
    out["legible_to_read_ms"] = legible_summary(legible)
    out["legible_to_decision_ms"] = legible_summary(deciding)
    decode = {c.name: c.decode_times for c in cameras}
    for name, cam in out["cameras"].items():
        cam["decode"] = decode_json(decode[name], stats.seconds)
    total = StageTimes()
    for name in CAMERAS:
        total = total.add(times[name])
    n_reads = sum(len(r) for r in reads.values())
    out["total"] = {
        "profile": profile_json(total, stats.seconds),
        "decode": decode_json(_sum_decode(list(decode.values())), stats.seconds),
        "publish": {
            "reads": n_reads,
            "ms_per_read": round(sink_s[0] * 1e3 / n_reads, 3) if n_reads else 0.0,
            "sink": "bench: list append on the delivery thread (no watchlist, no outbox)",
        },
    }
    out["process"] = meter.to_json()
    if all(truth.spec is None for _path, truth in clips):
        outcomes = []
        by_width: dict[str, list[float]] = {}
        for name, (_path, truth) in zip(CAMERAS, clips, strict=True):
            clip_outcomes = pass_outcomes(truth, reads[name])
            outcomes += clip_outcomes
            for width, delays in decision_latency_by_width(
                clip_outcomes, truth.fps, truth.size, samples=True, live=True
            ).items():
                by_width.setdefault(width, []).extend(delays)
        out["photo_passes"] = summarise_outcomes(outcomes)
        out["pass_listing"] = pass_listing(outcomes)
        out["read_ms_from_width"] = {
            width: {"passes": len(v), **latency_summary(v)} for width, v in by_width.items()
        }
    return out


def run_replay_photos(config: Config, clips: list[tuple[Path, ClipTruth]]) -> dict:
    """Every frame of each photo clip, one after the other: every photo's pass read
    once, scored pass by pass."""
    outcomes = []
    by_width: dict[str, list[float]] = {}
    frames, seconds, video_s, withheld = 0, 0.0, 0.0, 0
    deciding: list[tuple[str, float]] = []
    calibration = load_calibration(config)
    before = thread_ids()
    with open_recognizer(config) as recognizer, PartMeter(thread_ids() - before) as meter:
        for path, truth in clips:
            reads: list[PlateRead] = []
            pipeline = FramePipeline(recognizer, config.tracking, calibration=calibration)
            result = replay_file(pipeline, path, CAMERAS[0], on_read=reads.append)
            frames += result.frames
            withheld += pipeline.withheld
            seconds += result.seconds
            video_s += truth.seconds
            clip_outcomes = pass_outcomes(truth, reads)
            outcomes += clip_outcomes
            for width, figures in decision_latency_by_width(
                clip_outcomes, truth.fps, truth.size, samples=True
            ).items():
                by_width.setdefault(width, []).extend(figures)
            deciding += legible_to_decision_ms(truth, reads)
    return {
        "frames": frames,
        "fps": round(frames / seconds, 2) if seconds else 0.0,
        "realtime_factor": round(video_s / seconds, 2) if seconds else 0.0,
        "photo_passes": summarise_outcomes(outcomes),
        "pass_listing": pass_listing(outcomes),
        "withheld_unsure": withheld,
        "legible_to_decision_ms": legible_summary(deciding),
        "decision_ms_from_width": {
            width: {"passes": len(v), **latency_summary(v)} for width, v in by_width.items()
        },
        "process": meter.to_json(),
    }


def run_replay(config: Config, clip: tuple[Path, ClipTruth]) -> dict:
    path, truth = clip
    reads: list[PlateRead] = []
    before = thread_ids()
    with open_recognizer(config) as recognizer, PartMeter(thread_ids() - before) as meter:
        pipeline = FramePipeline(recognizer, config.tracking, calibration=load_calibration(config))
        result = replay_file(pipeline, path, CAMERAS[0], on_read=reads.append)
        times = pipeline.times[CAMERAS[0]]
    profile = profile_json(times, result.seconds)
    # Replay decodes in the processing thread: what the pipeline did not use of the
    # loop's time is mostly decoding.
    outside = max(0.0, result.seconds * 1e3 - times.busy_ms)
    profile["outside_pipeline"] = {
        "ms_per_frame": round(outside / max(times.frames, 1), 2),
        "what": "decoding and the replay loop, in the same thread",
    }
    return {
        "frames": result.frames,
        "fps": round(result.frames / result.seconds, 2) if result.seconds else 0.0,
        "realtime_factor": round(result.frames / truth.fps / result.seconds, 2)
        if result.seconds
        else 0.0,
        "reads": score_reads(truth, reads).to_json(),
        "legible_to_decision_ms": legible_summary(legible_to_decision_ms(truth, reads)),
        "profile": profile,
        "process": meter.to_json(),
    }


def cmd_bench_video(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    width, _, height = args.size.lower().partition("x")
    if not (width.isdigit() and height.isdigit()):
        raise UsageError(f"--size expected WIDTHxHEIGHT, e.g. 1920x1080, got {args.size!r}")
    size = (int(width), int(height))
    if args.seconds <= 0 or not 1 <= args.fps <= 240:
        raise UsageError("--seconds must be positive and --fps between 1 and 240")
    if args.format:
        config = replace(config, recognition=replace(config.recognition, plate_format=args.format))
    cache = config.state_dir / "bench"
    if args.photos:
        folder = Path(args.photos)
        if not folder.is_dir():
            raise UsageError(f"--photos {folder}: not a folder")
        spec = PhotoClipSpec(size=size, fps=args.fps, seed=args.seed)
        try:
            clips, problems = photo_clips(folder, spec, cache)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        for problem in problems:
            print(f"lpr-edge bench video: skipped: {problem}", file=sys.stderr)
        report: dict = {
            "clip": {
                "size": list(size),
                "fps": args.fps,
                "seconds": round(max(t.seconds for _p, t in clips), 1),
                "photos": str(folder),
                "passes": sum(len(t.passes) for _p, t in clips),
            }
        }
    else:
        clips = [
            clip_for(cache, ClipSpec(size=size, fps=args.fps, seconds=args.seconds, seed=seed))
            for seed in (args.seed, args.seed + 1)
        ]
        report = {"clip": {"size": list(size), "fps": args.fps, "seconds": args.seconds}}
    if args.mode in ("live", "both"):
        report["live"] = run_live(config, clips)
    if args.mode in ("replay", "both"):
        if args.photos:
            report["replay"] = run_replay_photos(config, clips)
        else:
            report["replay"] = run_replay(config, clips[0])
    if args.mode == "true-boxes":
        report["true_boxes"] = run_true_boxes(config, clips)
    report["memory"] = process_memory()
    if args.json:
        print(json.dumps(report))
    else:
        print(format_report(report, verbose=args.verbose))
    return 0


def _listing_lines(listing: list[dict]) -> list[str]:
    """One line per pass: its plate, how it went, and every read it got."""
    lines = ["  every pass (reads: text confidence, frames into the pass, width, verdict):"]
    for p in listing:
        reads = " | ".join(
            f"{r['plate']} {r['confidence']:.2f} f{r['frames'][0]}-{r['frames'][1]} "
            f"{r['width_px']}px {r['verdict']}{' (overturned)' if r['overturned'] else ''}"
            if r["frames"]
            else f"{r['plate']} {r['confidence']:.2f} {r['verdict']}"
            for r in p["reads"]
        )
        status = "read" if p["read_exactly"] else "MISSED"
        lines.append(
            f"    {status:<6} {p['plate']:<9} {p['plate_kind']:<8} {p['motion']:<8} "
            f"widest {p['widest_px']:>4}px  {reads or '-'}"
        )
    return lines


def format_report(report: dict, *, verbose: bool = False) -> str:
    lines = [
        f"clip: {report['clip']['size'][0]}x{report['clip']['size'][1]} "
        f"{report['clip']['fps']:g} fps, {report['clip']['seconds']:g} s per camera"
    ]
    live = report.get("live")
    if live:
        lines.append("")
        lines.append("live, two cameras at their own frame rate:")
        lines.append(
            f"  {'camera':<12} {'in':>6} {'processed':>10} {'dropped':>8} {'fps':>6} "
            f"{'passes':>7} {'exact':>6} {'wrong':>6} {'dup':>4}"
        )
        for name, cam in live["cameras"].items():
            r = cam["reads"]
            lines.append(
                f"  {name:<12} {cam['frames_in']:>6} {cam['frames_processed']:>10} "
                f"{cam['frames_dropped']:>8} {cam['fps_processed']:>6.2f} {r['passes']:>7} "
                f"{r['read_exactly']:>6} {r['wrong_reads']:>6} {r['duplicate_reads']:>4}"
            )
        lat = live["latency_ms"]
        lines.append(
            f"  read latency ms, last frame used to read: p50 {lat['p50']}  p95 {lat['p95']}"
        )
        if "legible_to_read_ms" in live:
            lines += legible_lines("plate first legible to read", live["legible_to_read_ms"])
        if "legible_to_decision_ms" in live:
            lines += legible_lines(
                "plate first legible to the deciding frame (video time)",
                live["legible_to_decision_ms"],
            )
        columns = [(name, cam["profile"], cam["decode"]) for name, cam in live["cameras"].items()]
        if "total" in live:
            columns.append(("total", live["total"]["profile"], live["total"]["decode"]))
        lines += _profile_table(columns)
        if "total" in live:
            pub = live["total"]["publish"]
            lines.append(
                f"  publish: {pub['ms_per_read']} ms per read over {pub['reads']} reads "
                f"({pub['sink']})"
            )
        for name, cam in live["cameras"].items():
            lines.append(f"  searches {name}: {_search_line(cam['profile'])}")
        if "process" in live:
            lines.append(f"  process: {_process_line(live['process'])}")
        if "photo_passes" in live:
            lines += _width_latency_lines(
                "plate first W px wide (whole, in the picture) to read", live["read_ms_from_width"]
            )
            lines += _photo_lines(live["photo_passes"])
            if verbose:
                lines += _listing_lines(live["pass_listing"])
    replay = report.get("replay")
    if replay and "photo_passes" in replay:
        lines.append("")
        lines.append("replay, every frame of each camera's clip:")
        lines.append(
            f"  {replay['frames']} frames at {replay['fps']} fps "
            f"({replay['realtime_factor']}x real time); {replay['withheld_unsure']} tracks ended "
            "unsure: no read (tracking.min_read_confidence)"
        )
        lines += legible_lines(
            "plate first legible to the deciding frame (video time)",
            replay["legible_to_decision_ms"],
        )
        lines += _width_latency_lines(
            "plate first W px wide to the deciding frame (video time)",
            replay["decision_ms_from_width"],
        )
        lines += _photo_lines(replay["photo_passes"])
        if verbose:
            lines += _listing_lines(replay["pass_listing"])
        if "process" in replay:
            lines.append(f"  process: {_process_line(replay['process'])}")
    elif replay:
        r = replay["reads"]
        lines.append("")
        lines.append("replay, every frame of one clip:")
        lines.append(
            f"  {replay['frames']} frames at {replay['fps']} fps "
            f"({replay['realtime_factor']}x real time); passes {r['passes']}, "
            f"read exactly {r['read_exactly']} ({r['exact_rate']:.3f}), wrong {r['wrong_reads']}, "
            f"duplicates {r['duplicate_reads']}"
        )
        if "legible_to_decision_ms" in replay:
            lines += legible_lines(
                "plate first legible to the deciding frame (video time)",
                replay["legible_to_decision_ms"],
            )
        profile = replay["profile"]
        lines += _profile_table([("replay", profile, None)])
        if "outside_pipeline" in profile:
            other = profile["outside_pipeline"]
            lines.append(
                f"  outside the pipeline: {other['ms_per_frame']} ms/frame ({other['what']})"
            )
        lines.append(f"  searches: {_search_line(profile)}")
        if "process" in replay:
            lines.append(f"  process: {_process_line(replay['process'])}")
    if "true_boxes" in report:
        lines += format_true_boxes(report["true_boxes"])
    memory = report.get("memory")
    if memory:
        lines.append("")
        lines.append(
            f"memory: peak RSS {memory['peak_rss_mb']} MiB (whole process), "
            f"RSS at the end {memory['rss_mb']} MiB"
        )
    return "\n".join(lines)


def _width_latency_lines(what: str, by_width: dict) -> list[str]:
    return [
        f"  read latency ms, {what}: "
        + ", ".join(
            f"W={width} ({f['passes']}) p50 {f['p50']} p95 {f['p95']}"
            for width, f in by_width.items()
        )
    ]


def _photo_lines(summary: dict) -> list[str]:
    """A photo clip's passes: overall, per kind of plate, per width, and how far the
    reads' confidence can be trusted."""

    def row(label: str, b: dict) -> str:
        return (
            f"    {label:<16} {b['passes']:>6} {b['read_exactly']:>6} {b['exact_rate']:>6.3f} "
            f"{b['wrong_reads']:>6} {b['wrong_then_corrected']:>9} {b['duplicate_reads']:>4}"
        )

    lines = [
        f"  passes from photos (each pass scored on the reads made while it was on screen; "
        f"{summary['never_legible']} never legible, not counted):",
        f"    {'':<16} {'passes':>6} {'exact':>6} {'rate':>6} {'wrong':>6} {'corrected':>9} "
        f"{'dup':>4}",
        row("all", summary),
    ]
    lines += [row(kind, b) for kind, b in summary["by_plate_kind"].items()]
    lines += [row(f"widest {band}", b) for band, b in summary["by_width"].items() if b["passes"]]
    lines.append("  confidence of the reads (other labelled plates left out):")
    lines.append(f"    {'band':<12} {'reads':>6} {'right':>6} {'share':>6} {'mean conf':>10}")
    for r in summary["reliability"]:
        mean = "-" if r["mean_confidence"] is None else f"{r['mean_confidence']:.3f}"
        lines.append(
            f"    {r['band']:<12} {r['reads']:>6} {r['right']:>6} {r['share_right']:>6.3f} "
            f"{mean:>10}"
        )
    return lines


def _profile_table(columns: list[tuple[str, dict, dict | None]]) -> list[str]:
    """Stages down, one column per camera: ms per processed frame and percent of busy time."""
    width = 17
    lines = ["  profile, ms per processed frame (% of the processing thread's busy time):"]
    lines.append(f"  {'stage':<18}" + "".join(f"{name:>{width}}" for name, _p, _d in columns))

    def row(label: str, cells: list[str]) -> None:
        lines.append(f"  {label:<18}" + "".join(f"{c:>{width}}" for c in cells))

    for stage, _field in STAGES:
        cells = []
        for _name, p, _d in columns:
            s = p.get("stages", {}).get(stage)
            cells.append(f"{s['ms_per_frame']:.2f} ({s['percent']:4.1f}%)" if s else "-")
        row(stage, cells)
    row("busy", [f"{p.get('busy_ms_per_frame', 0):.2f}" for _n, p, _d in columns])
    if any("busy_percent_of_wall" in p for _n, p, _d in columns):
        row("busy % of wall", [f"{p.get('busy_percent_of_wall', '-')}" for _n, p, _d in columns])
    if any(d for _n, _p, d in columns):
        row(
            "decode (capture)",
            [f"{d['ms_per_frame']:.2f}" if d else "-" for _n, _p, d in columns],
        )
        row(
            "  grab / retrieve",
            [
                f"{d['grab_ms_per_frame']:.1f} / {d['retrieve_ms_per_frame']:.1f}" if d else "-"
                for _n, _p, d in columns
            ],
        )
        row("  % of wall", [f"{d['percent_of_wall']}" if d else "-" for _n, _p, d in columns])
    return lines


def _search_line(p: dict) -> str:
    return (
        f"{p.get('detector_runs_per_frame', '-')} detector runs/frame, "
        f"{p['ocr_crops_per_frame']} OCR crops/frame; frames searched whole "
        f"{p['searched_whole']}, around tracks {p['searched_around_tracks']}, "
        f"not searched {p['not_searched']}"
    )


def _process_line(p: dict) -> str:
    peak = p["peak_rss_mb"]
    scope = "this part" if p["peak_rss_is_this_part_only"] else "so far"
    threads = ", ".join(f"{k} {v}" for k, v in p.get("cores_by_thread", {}).items())
    return (
        f"{p['cpu_cores_busy']} of {p['cpu_count']} CPU cores busy over {p['wall_s']} s "
        f"({threads}); peak RSS {peak} MiB ({scope}), {p['rss_mb_at_end']} MiB at the end"
    )
