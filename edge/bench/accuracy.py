"""Recognition accuracy on photos labelled in the OpenALPR benchmark format.

Each image ``NAME.jpg`` has ``NAME.txt`` with one line per plate:
``file<TAB>x<TAB>y<TAB>w<TAB>h<TAB>PLATE``. A label counts as detected when some
detected box overlaps it with IoU > 0.4, and as read exactly when a plate read from
such a box has the label's text (upper-case letters and digits only). Because some
labels write the letter O where the plate shows the digit 0, a second score treats
O/0 and I/1 alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edge.config import load_config
from edge.detect import box_iou
from edge.plateformat import normalize
from edge.recognize import (
    IMAGE_SUFFIXES,
    OCR_ENGINES,
    PlateRecognizer,
    open_recognizer,
    read_image,
)

IOU_MATCH = 0.4
_ALIKE = str.maketrans({"O": "0", "I": "1"})


@dataclass(frozen=True, slots=True)
class Label:
    image: Path
    box: tuple[float, float, float, float]
    plate: str


@dataclass(frozen=True, slots=True)
class ImageOutcome:
    image: str
    labels: tuple[str, ...]
    read: tuple[str, ...]
    detected: int
    exact: int
    alike: int
    extra_boxes: int
    total_ms: float
    detect_ms: float
    ocr_ms: float
    crops_read: int


@dataclass(frozen=True, slots=True)
class AccuracyReport:
    engine: str
    plate_format: str
    images: int
    plates: int
    detection_rate: float
    exact_rate: float
    alike_rate: float
    extra_boxes_per_image: float
    median_ms: float
    p95_ms: float
    median_detect_ms: float
    ocr_ms_per_plate: float
    failed_images: int


def load_labels(folder: Path) -> tuple[list[tuple[Path, list[Label]]], list[str]]:
    """Images with their labels, and a problem line for each label file skipped."""
    problems: list[str] = []
    dataset: list[tuple[Path, list[Label]]] = []
    for txt in sorted(folder.glob("*.txt")):
        labels: list[Label] = []
        for lineno, line in enumerate(txt.read_text(errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) < 6:
                problems.append(f"{txt}:{lineno}: expected 6 tab-separated fields")
                continue
            try:
                x, y, w, h = (float(v) for v in parts[1:5])
            except ValueError:
                problems.append(f"{txt}:{lineno}: x, y, w, h must be numbers")
                continue
            image = folder / parts[0]
            labels.append(Label(image, (x, y, x + w, y + h), normalize(parts[5])))
        if not labels:
            continue
        image = labels[0].image
        if not image.exists() or image.suffix.lower() not in IMAGE_SUFFIXES:
            problems.append(f"{txt}: image {image.name} not found")
            continue
        dataset.append((image, labels))
    return dataset, problems


def score_image(image: Path, labels: list[Label], recognizer: PlateRecognizer) -> ImageOutcome:
    result = recognizer.recognize(read_image(image))
    boxes = result.detections.xyxy
    plate_boxes = np.array([p.box for p in result.plates], np.float32).reshape(-1, 4)
    detected = exact = alike = 0
    matched_boxes: set[int] = set()
    for label in labels:
        hits = np.flatnonzero(box_iou(np.array(label.box), boxes) > IOU_MATCH).tolist()
        if hits:
            detected += 1
            matched_boxes.update(hits)
        overlapping = box_iou(np.array(label.box), plate_boxes) > IOU_MATCH
        reads = [p.text for p, hit in zip(result.plates, overlapping, strict=True) if hit]
        if label.plate in reads:
            exact += 1
        if label.plate.translate(_ALIKE) in {r.translate(_ALIKE) for r in reads}:
            alike += 1
    return ImageOutcome(
        image=image.name,
        labels=tuple(label.plate for label in labels),
        read=tuple(p.text for p in result.plates),
        detected=detected,
        exact=exact,
        alike=alike,
        extra_boxes=len(boxes) - len(matched_boxes),
        total_ms=result.total_ms,
        detect_ms=result.detect_ms,
        ocr_ms=result.ocr_ms,
        crops_read=len(result.detections),
    )


def summarise(engine: str, fmt: str, outcomes: list[ImageOutcome], failed: int) -> AccuracyReport:
    plates = sum(len(o.labels) for o in outcomes) or 1
    totals = [o.total_ms for o in outcomes] or [0.0]
    crops = sum(o.crops_read for o in outcomes)
    return AccuracyReport(
        engine=engine,
        plate_format=fmt,
        images=len(outcomes),
        plates=sum(len(o.labels) for o in outcomes),
        detection_rate=sum(o.detected for o in outcomes) / plates,
        exact_rate=sum(o.exact for o in outcomes) / plates,
        alike_rate=sum(o.alike for o in outcomes) / plates,
        extra_boxes_per_image=sum(o.extra_boxes for o in outcomes) / max(1, len(outcomes)),
        median_ms=statistics.median(totals),
        p95_ms=float(np.percentile(totals, 95)),
        median_detect_ms=statistics.median([o.detect_ms for o in outcomes] or [0.0]),
        ocr_ms_per_plate=sum(o.ocr_ms for o in outcomes) / crops if crops else 0.0,
        failed_images=failed,
    )


def run_benchmark(
    folder: Path, recognizer: PlateRecognizer, engine: str, fmt: str, *, verbose: bool = False
) -> tuple[AccuracyReport, list[ImageOutcome]]:
    dataset, problems = load_labels(folder)
    for problem in problems:
        print(f"skipped: {problem}", file=sys.stderr)
    outcomes, failed = [], len(problems)
    # One warm-up run so session initialisation does not count as the first image's time.
    if dataset:
        recognizer.recognize(np.zeros((480, 640, 3), np.uint8))
    for image, labels in dataset:
        try:
            outcome = score_image(image, labels, recognizer)
        except ValueError as exc:
            print(f"skipped: {image}: {exc}", file=sys.stderr)
            failed += 1
            continue
        outcomes.append(outcome)
        if verbose:
            mark = "ok " if outcome.alike == len(outcome.labels) else "BAD"
            print(
                f"{mark} {outcome.image:<16} label={','.join(outcome.labels):<12} "
                f"read={','.join(outcome.read) or '-'}",
                file=sys.stderr,
            )
    return summarise(engine, fmt, outcomes, failed), outcomes


def format_table(reports: list[AccuracyReport]) -> str:
    rows = [
        ("images", lambda r: f"{r.images}"),
        ("plates", lambda r: f"{r.plates}"),
        ("detection rate (IoU>0.4)", lambda r: f"{r.detection_rate:.3f}"),
        ("exact match", lambda r: f"{r.exact_rate:.3f}"),
        ("exact, O=0 I=1 alike", lambda r: f"{r.alike_rate:.3f}"),
        ("extra boxes / image", lambda r: f"{r.extra_boxes_per_image:.2f}"),
        ("median ms / image", lambda r: f"{r.median_ms:.1f}"),
        ("p95 ms / image", lambda r: f"{r.p95_ms:.1f}"),
        ("median detect ms / image", lambda r: f"{r.median_detect_ms:.1f}"),
        ("OCR ms / plate", lambda r: f"{r.ocr_ms_per_plate:.1f}"),
        ("images skipped", lambda r: f"{r.failed_images}"),
    ]
    width = max(len(name) for name, _ in rows)
    header = f"{'':<{width}}  " + "  ".join(f"{r.engine:>10}" for r in reports)
    lines = [header, "-" * len(header)]
    for name, cell in rows:
        lines.append(f"{name:<{width}}  " + "  ".join(f"{cell(r):>10}" for r in reports))
    return "\n".join(lines)


def cmd_bench_accuracy(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    if not folder.is_dir():
        print(f"lpr-edge bench accuracy: {folder} is not a folder", file=sys.stderr)
        return 2
    config = load_config(args.config)
    engines = [e.strip() for e in (args.ocr or config.recognition.ocr).split(",") if e.strip()]
    unknown = [e for e in engines if e not in OCR_ENGINES]
    if unknown:
        print(
            f"lpr-edge bench accuracy: unknown OCR engine(s) {', '.join(unknown)} "
            f"(known: {', '.join(OCR_ENGINES)})",
            file=sys.stderr,
        )
        return 2
    fmt = args.format or config.recognition.plate_format
    reports = []
    for engine in engines:
        with open_recognizer(config, ocr=engine, plate_format=fmt) as recognizer:
            report, _ = run_benchmark(folder, recognizer, engine, fmt, verbose=args.verbose)
        reports.append(report)
    if args.json:
        print(json.dumps([asdict(r) for r in reports], indent=2))
    else:
        print(f"{folder}  format={fmt}")
        print(format_table(reports))
    return 0 if all(r.images for r in reports) else 1
