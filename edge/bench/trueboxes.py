"""`lpr-edge bench video --mode true-boxes`: how soon the recogniser can read a plate,
given perfect detection.

Every legible frame of every pass in the clips, up to ``WINDOW_SECONDS`` after its
first, is read at the clip's true plate box exactly as the pipeline reads a detected
box (crop, OCR, plate format, minimum confidence). Reported:

* per plate width: the share of readings that are the plate exactly, and that are
  another plate (a wrong reading; the rest fit no plate or were not sure enough);
* the vote over those readings, one per frame from the first legible frame, with the
  configured ``decide_margin`` and ``min_reads``: the video time until it decides each
  pass, and whether rightly. That is the least legible-to-read latency this recogniser
  and vote allow, before any late detection, dropped frame or processing delay.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.bench.latency import legible_lines, legible_summary
from edge.capture.videofile import VideoFile
from edge.config import Config, TrackingConfig
from edge.recognition.plateformat import PlateFormat
from edge.recognition.recognize import PlateRecognizer, open_recognizer
from edge.synth.clipspec import ClipTruth
from edge.tracking.vote import is_decided, vote
from edge.types import PlateText

# Lower edges of the plate-width bands (pixels); the last band is open above.
WIDTH_BANDS = (60, 65, 70, 75, 80, 90, 120)
# How long after its first legible frame a pass is read: the slowest passes decide
# within about a second, and later frames only add large, easy readings.
WINDOW_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class BoxReading:
    frame: int
    width: float
    reading: PlateText | None


@dataclass(frozen=True, slots=True)
class PassReadings:
    """One pass's readings at its true boxes, in frame order from its first legible frame."""

    text: str
    kind: str
    first_legible_frame: int
    readings: tuple[BoxReading, ...]


def read_true_boxes(
    recognizer: PlateRecognizer, path: Path, truth: ClipTruth, window_seconds: float
) -> list[PassReadings]:
    """Decode ``path`` once and read each legible pass at its true box in its window."""
    window = max(1, round(window_seconds * truth.fps))
    due: dict[int, list[int]] = {}
    legible = [p for p in truth.passes if p.first_legible_frame is not None]
    for i, p in enumerate(legible):
        frames = p.legible_frames()
        for frame in frames[:window]:
            due.setdefault(frame, []).append(i)
    found: list[list[BoxReading]] = [[] for _ in legible]
    with VideoFile(path, "true-boxes") as video:
        for frame in video:
            todo = due.pop(frame.seq, [])
            if todo:
                boxes = np.array([legible[i].box_at(frame.seq) for i in todo], np.float32)
                texts = recognizer.read_boxes(frame.image, boxes)
                for i, box, text in zip(todo, boxes, texts, strict=True):
                    found[i].append(BoxReading(frame.seq, float(box[2] - box[0]), text))
            if not due:
                break
    return [
        PassReadings(p.text, p.kind, p.first_legible_frame, tuple(readings))
        for p, readings in zip(legible, found, strict=True)
    ]


def width_rates(passes: list[PassReadings]) -> list[dict]:
    """Per width band: readings, and the shares read exactly and read as another plate."""
    bands: dict[int, list[int]] = {low: [0, 0, 0] for low in WIDTH_BANDS}
    for p in passes:
        for r in p.readings:
            band = bisect_right(WIDTH_BANDS, r.width) - 1
            if band < 0:
                continue
            counts = bands[WIDTH_BANDS[band]]
            counts[0] += 1
            if r.reading is not None:
                counts[1 if r.reading.text == p.text else 2] += 1
    out = []
    for k, low in enumerate(WIDTH_BANDS):
        n, exact, wrong = bands[low]
        px = f"{low}-{WIDTH_BANDS[k + 1] - 1}" if k + 1 < len(WIDTH_BANDS) else f"{low}+"
        out.append(
            {
                "px": px,
                "readings": n,
                "exact_rate": round(exact / n, 3) if n else None,
                "wrong_rate": round(wrong / n, 3) if n else None,
            }
        )
    return out


def decide(
    p: PassReadings, tracking: TrackingConfig, plate_format: PlateFormat, fps: float
) -> tuple[float, str] | None:
    """Video time (ms) from the first legible frame to the frame whose reading decides
    the vote, and the text decided; None when it is not decided in the readings."""
    readings: list[PlateText] = []
    for r in p.readings:
        if r.reading is None:
            continue
        readings.append(r.reading)
        if len(readings) < tracking.min_reads:
            continue
        consensus = vote(readings, plate_format)
        if is_decided(consensus, tracking.decide_margin):
            assert consensus is not None
            return (r.frame - p.first_legible_frame) * 1e3 / fps, consensus.text
    return None


def vote_json(decisions: list[tuple[PassReadings, tuple[float, str] | None]]) -> dict:
    """Passes decided right (with their latency summary), wrong, and not at all."""
    right = [(p.kind, d[0]) for p, d in decisions if d is not None and d[1] == p.text]
    wrong = sum(1 for p, d in decisions if d is not None and d[1] != p.text)
    return {
        "passes": len(decisions),
        "decided_right": len(right),
        "decided_wrong": wrong,
        "undecided": sum(1 for _p, d in decisions if d is None),
        "legible_to_decision_ms": legible_summary(right),
    }


def run_true_boxes(config: Config, clips: list[tuple[Path, ClipTruth]]) -> dict:
    passes: list[PassReadings] = []
    decisions: list[tuple[PassReadings, tuple[float, str] | None]] = []
    with open_recognizer(config) as recognizer:
        for path, truth in clips:
            clip_passes = read_true_boxes(recognizer, path, truth, WINDOW_SECONDS)
            passes += clip_passes
            decisions += [
                (p, decide(p, config.tracking, recognizer.plate_format, truth.fps))
                for p in clip_passes
            ]
    return {
        "window_seconds": WINDOW_SECONDS,
        "by_width": width_rates(passes),
        "vote": vote_json(decisions),
    }


def format_true_boxes(result: dict) -> list[str]:
    lines = [
        "",
        f"true boxes (perfect detection), each legible frame read for "
        f"{result['window_seconds']:g} s from the first:",
        "  read exactly / read as another plate, by plate width (readings):",
    ]
    cells = [
        f"{b['px']} px {b['exact_rate']:.0%} / {b['wrong_rate']:.0%} ({b['readings']})"
        for b in result["by_width"]
        if b["readings"]
    ]
    lines += [f"    {', '.join(cells[i : i + 3])}" for i in range(0, len(cells), 3)]
    v = result["vote"]
    lines.append(
        f"  vote: {v['passes']} passes, decided right {v['decided_right']}, wrong "
        f"{v['decided_wrong']}, undecided {v['undecided']}"
    )
    lines += legible_lines(
        "plate first legible to the deciding frame (video time)", v["legible_to_decision_ms"]
    )
    return lines
