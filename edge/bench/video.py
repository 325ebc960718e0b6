"""`lpr-edge bench video`: two-camera throughput, latency and read accuracy.

Generates two 1920x1080 30 fps clips (different traffic per camera, with ground truth)
and measures:

* **live**: both clips played as the two cameras at their own frame rate, exactly as
  `lpr-edge run` does with file sources: processed fps per camera, frames dropped,
  read latency p50/p95, and how many passes were read exactly;
* **replay**: one clip through `lpr-edge replay`'s path, every frame: fps and the
  exact-read rate against the ground truth, duplicate and wrong reads.

Clips are cached under the state directory's ``bench/`` folder by their spec, so
repeated runs measure processing, not rendering.
"""

from __future__ import annotations

import argparse
import json
import threading
from dataclasses import dataclass
from pathlib import Path

from edge.capture import Camera
from edge.cli import UsageError
from edge.config import CameraConfig, Config, load_config
from edge.pipeline import FramePipeline, StageTimes
from edge.recognize import open_recognizer
from edge.replay import replay_file
from edge.service import LiveService
from edge.synthclip import ClipSpec, ClipTruth, render_clip
from edge.types import PlateRead

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
    everything = {p.text for p in truth.passes}
    counts: dict[str, int] = {}
    wrong = 0
    for read in reads:
        if read.plate in texts:
            counts[read.plate] = counts.get(read.plate, 0) + 1
        elif read.plate not in everything:
            wrong += 1
    duplicates = sum(n - 1 for n in counts.values() if n > 1)
    return ReadScore(len(texts), len(counts), wrong, duplicates)


def clip_for(cache: Path, spec: ClipSpec) -> tuple[Path, ClipTruth]:
    """The clip for ``spec``, rendered once and then reused."""
    name = f"clip-{spec.size[0]}x{spec.size[1]}-{spec.fps:g}fps-{spec.seconds:g}s-{spec.seed}"
    path = cache / f"{name}.mp4"
    if path.exists() and path.with_suffix(".json").exists():
        return path, ClipTruth.load(path.with_suffix(".json"))
    cache.mkdir(parents=True, exist_ok=True)
    return path, render_clip(path, spec)


def profile_json(times: StageTimes) -> dict:
    total = times.detect_ms + times.ocr_ms + times.track_ms
    n = max(times.frames, 1)

    def share(ms: float) -> dict:
        return {
            "ms_per_frame": round(ms / n, 2),
            "percent": round(100 * ms / total, 1) if total else 0,
        }

    return {
        "frames": times.frames,
        "detect": share(times.detect_ms),
        "ocr": share(times.ocr_ms),
        "track": share(times.track_ms),
        "ocr_crops_per_frame": round(times.ocr_crops / n, 2),
        "searched_whole": times.scans,
        "searched_around_tracks": times.region_searches,
        "not_searched": times.unsearched,
    }


def run_live(config: Config, clips: list[tuple[Path, ClipTruth]]) -> dict:
    cameras = [
        Camera(CameraConfig(name=name, source=str(path)))
        for name, (path, _truth) in zip(CAMERAS, clips, strict=True)
    ]
    reads: dict[str, list[PlateRead]] = {name: [] for name in CAMERAS}
    lock = threading.Lock()

    def sink(read: PlateRead) -> None:
        with lock:
            reads[read.camera].append(read)

    with open_recognizer(config) as recognizer:
        service = LiveService(config, recognizer, sink, cameras=cameras)
        # Bounded even if a clip cannot be played (a failed camera never ends).
        longest = max(truth.seconds for _path, truth in clips)
        stats = service.run(duration=longest * 1.5 + 10)
        times = service.pipeline.times
    out = stats.to_json()
    for name, (_path, truth) in zip(CAMERAS, clips, strict=True):
        out["cameras"][name]["reads"] = score_reads(truth, reads[name]).to_json()
        out["cameras"][name]["profile"] = profile_json(times[name])
    return out


def run_replay(config: Config, clip: tuple[Path, ClipTruth]) -> dict:
    path, truth = clip
    reads: list[PlateRead] = []
    with open_recognizer(config) as recognizer:
        pipeline = FramePipeline(recognizer, config.tracking)
        result = replay_file(pipeline, path, CAMERAS[0], on_read=reads.append)
        times = pipeline.times[CAMERAS[0]]
    return {
        "frames": result.frames,
        "fps": round(result.frames / result.seconds, 2) if result.seconds else 0.0,
        "realtime_factor": round(result.frames / truth.fps / result.seconds, 2)
        if result.seconds
        else 0.0,
        "reads": score_reads(truth, reads).to_json(),
        "profile": profile_json(times),
    }


def cmd_bench_video(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    width, _, height = args.size.lower().partition("x")
    if not (width.isdigit() and height.isdigit()):
        raise UsageError(f"--size expected WIDTHxHEIGHT, e.g. 1920x1080, got {args.size!r}")
    size = (int(width), int(height))
    if args.seconds <= 0 or not 1 <= args.fps <= 240:
        raise UsageError("--seconds must be positive and --fps between 1 and 240")
    cache = config.state_dir / "bench"
    clips = [
        clip_for(cache, ClipSpec(size=size, fps=args.fps, seconds=args.seconds, seed=seed))
        for seed in (args.seed, args.seed + 1)
    ]
    report: dict = {"clip": {"size": list(size), "fps": args.fps, "seconds": args.seconds}}
    if args.mode in ("live", "both"):
        report["live"] = run_live(config, clips)
    if args.mode in ("replay", "both"):
        report["replay"] = run_replay(config, clips[0])
    if args.json:
        print(json.dumps(report))
    else:
        print(format_report(report))
    return 0


def format_report(report: dict) -> str:
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
        lines.append(f"  read latency ms: p50 {lat['p50']}  p95 {lat['p95']}")
        for name, cam in live["cameras"].items():
            lines.append(f"  profile {name}: {_profile_line(cam['profile'])}")
    replay = report.get("replay")
    if replay:
        r = replay["reads"]
        lines.append("")
        lines.append("replay, every frame of one clip:")
        lines.append(
            f"  {replay['frames']} frames at {replay['fps']} fps "
            f"({replay['realtime_factor']}x real time); passes {r['passes']}, "
            f"read exactly {r['read_exactly']} ({r['exact_rate']:.3f}), wrong {r['wrong_reads']}, "
            f"duplicates {r['duplicate_reads']}"
        )
        lines.append(f"  profile: {_profile_line(replay['profile'])}")
    return "\n".join(lines)


def _profile_line(p: dict) -> str:
    return (
        ", ".join(
            f"{stage} {p[stage]['ms_per_frame']} ms ({p[stage]['percent']}%)"
            for stage in ("detect", "ocr", "track")
        )
        + f"; {p['ocr_crops_per_frame']} OCR crops/frame; frames searched whole "
        f"{p['searched_whole']}, around tracks {p['searched_around_tracks']}, "
        f"not searched {p['not_searched']}"
    )
