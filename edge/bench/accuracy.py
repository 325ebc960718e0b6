"""Recognition accuracy on labelled photos, per kind of plate.

Two label formats are read:

* ``labels.json`` in the folder: ``{"IMAGE": [{"text", "kind", "rows", "box"}, ...]}``
  with several plates per image, ``box`` as x1, y1, x2, y2, ``kind`` one of ``hk``,
  ``crossboundary``, ``mainland`` or ``unclear`` (too blurred to label: a read there is
  neither right nor wrong, and a box there is not an extra box), ``rows`` 1 or 2;
* the OpenALPR benchmark format: ``NAME.txt`` beside each image with one line per
  plate, ``file<TAB>x<TAB>y<TAB>w<TAB>h<TAB>PLATE``.

A label counts as found when some detected box overlaps it with IoU > 0.4, as read
exactly when a plate read from such a box has the label's text (upper-case letters
and digits only; a cross-boundary plate's ``粤Z1234港`` compares as its core
``Z1234``), and as read wrongly when every plate read there says something else.
Because some labels write the letter O where the plate shows the digit 0, a second
score treats O/0 and I/1 alike. Figures are reported overall and per kind: one-row,
two-row and cross-boundary plates.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edge import crossboundary
from edge.config import load_config
from edge.platetext import normalize
from edge.recognition.detect import box_iou
from edge.recognition.recognize import (
    IMAGE_SUFFIXES,
    OCR_ENGINES,
    PlateRecognizer,
    open_recognizer,
    read_image,
)

IOU_MATCH = 0.4
_ALIKE = str.maketrans({"O": "0", "I": "1"})
LABELS_JSON = "labels.json"
LABEL_KINDS = ("hk", "crossboundary", "mainland", "unclear", "plate")
#: The kinds of plate reported apart, in report order.
CATEGORIES = ("one-row", "two-row", "cross-boundary", "mainland")


@dataclass(frozen=True, slots=True)
class Label:
    image: Path
    box: tuple[float, float, float, float]
    plate: str
    #: hk, crossboundary, mainland, unclear (labels.json), or plate (OpenALPR format).
    kind: str = "plate"
    rows: int = 1
    #: The text as labelled, Chinese characters included (a cross-boundary plate's).
    full_text: str = ""

    @property
    def category(self) -> str | None:
        """The kind of plate it is reported under; None for an unclear box."""
        if self.kind == "unclear":
            return None
        if self.kind == "crossboundary":
            return "cross-boundary"
        if self.kind == "mainland":
            return "mainland"
        return "two-row" if self.rows == 2 else "one-row"


@dataclass(frozen=True, slots=True)
class LabelOutcome:
    plate: str
    category: str
    width: float
    detected: bool
    exact: bool
    alike: bool
    #: Something was read on the plate and none of it is the plate (O/0 I/1 alike).
    wrong: bool
    reads: tuple[str, ...]
    #: Cross-boundary plates: read with its Chinese characters exactly as labelled.
    full_text: bool = False
    #: Cross-boundary plates: read as one and linked to the plate labelled above it.
    linked: bool = False


@dataclass(frozen=True, slots=True)
class ImageOutcome:
    image: str
    labels: tuple[LabelOutcome, ...]
    read: tuple[str, ...]
    extra_boxes: int
    total_ms: float
    detect_ms: float
    ocr_ms: float
    crops_read: int

    @property
    def detected(self) -> int:
        return sum(o.detected for o in self.labels)

    @property
    def exact(self) -> int:
        return sum(o.exact for o in self.labels)

    @property
    def alike(self) -> int:
        return sum(o.alike for o in self.labels)


@dataclass(frozen=True, slots=True)
class KindScore:
    """The figures of one kind of plate."""

    plates: int
    detection_rate: float
    exact_rate: float
    alike_rate: float
    wrong_rate: float
    full_text_rate: float = 0.0
    linked_rate: float = 0.0


@dataclass(frozen=True, slots=True)
class AccuracyReport:
    engine: str
    plate_format: str
    images: int
    plates: int
    detection_rate: float
    exact_rate: float
    alike_rate: float
    wrong_rate: float
    extra_boxes_per_image: float
    median_ms: float
    p95_ms: float
    median_detect_ms: float
    ocr_ms_per_plate: float
    failed_images: int
    by_kind: dict[str, KindScore] = field(default_factory=dict)


def _openalpr_labels(folder: Path) -> tuple[list[tuple[Path, list[Label]]], list[str]]:
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


def _json_label(image: Path, entry: object) -> Label:
    """One labels.json entry; ValueError naming what is wrong with it."""
    if not isinstance(entry, dict):
        raise ValueError("a label must be an object with text, kind, rows and box")
    kind = entry.get("kind", "hk")
    if kind not in LABEL_KINDS:
        raise ValueError(f"kind {kind!r} is not one of {', '.join(LABEL_KINDS[:4])}")
    rows = entry.get("rows", 1)
    if rows not in (1, 2):
        raise ValueError(f"rows must be 1 or 2, not {rows!r}")
    box = entry.get("box")
    if (
        not isinstance(box, list)
        or len(box) != 4
        or not all(isinstance(v, int | float) for v in box)
        or box[2] <= box[0]
        or box[3] <= box[1]
    ):
        raise ValueError(f"box must be [x1, y1, x2, y2] with x2 > x1 and y2 > y1, not {box!r}")
    text = entry.get("text", "")
    if not isinstance(text, str) or (kind != "unclear" and not normalize(text)):
        raise ValueError(f"text must name the plate, not {text!r}")
    x1, y1, x2, y2 = (float(v) for v in box)
    return Label(image, (x1, y1, x2, y2), normalize(text), kind, rows, text.replace(" ", ""))


def _json_labels(path: Path) -> tuple[list[tuple[Path, list[Label]]], list[str]]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return [], [f"{path}: not readable JSON ({exc})"]
    if not isinstance(data, dict):
        return [], [f"{path}: expected an object mapping image names to lists of labels"]
    problems: list[str] = []
    dataset: list[tuple[Path, list[Label]]] = []
    for name, entries in sorted(data.items()):
        image = path.parent / name
        if not isinstance(entries, list):
            problems.append(f"{path}: {name}: expected a list of labels")
            continue
        labels: list[Label] = []
        for i, entry in enumerate(entries):
            try:
                labels.append(_json_label(image, entry))
            except ValueError as exc:
                problems.append(f"{path}: {name} label {i + 1}: {exc}")
        if not image.is_file() or image.suffix.lower() not in IMAGE_SUFFIXES:
            problems.append(f"{path}: image {name} not found")
            continue
        if labels:
            dataset.append((image, labels))
    return dataset, problems


def load_labels(folder: Path) -> tuple[list[tuple[Path, list[Label]]], list[str]]:
    """Images with their labels, and a problem line for each label skipped: from
    ``labels.json`` when the folder has one, else from OpenALPR ``.txt`` files."""
    if (folder / LABELS_JSON).exists():
        return _json_labels(folder / LABELS_JSON)
    return _openalpr_labels(folder)


def _alike(text: str) -> str:
    return text.translate(_ALIKE)


def _label_above(label: Label, labels: list[Label]) -> Label | None:
    """The labelled plate of the same vehicle above a cross-boundary plate."""
    others = [(i, other.box) for i, other in enumerate(labels) if other.kind == "hk"]
    found = crossboundary.stacked_above(label.box, others)
    return None if found is None else labels[found]


def score_image(image: Path, labels: list[Label], recognizer: PlateRecognizer) -> ImageOutcome:
    result = recognizer.recognize(read_image(image))
    boxes = result.detections.xyxy
    plate_boxes = np.array([p.box for p in result.plates], np.float32).reshape(-1, 4)
    matched_boxes: set[int] = set()
    outcomes: list[LabelOutcome] = []
    for label in labels:
        hits = np.flatnonzero(box_iou(np.array(label.box), boxes) > IOU_MATCH).tolist()
        # A box on an unclear plate is not an extra box, whatever it reads.
        matched_boxes.update(hits)
        if label.category is None:
            continue
        overlapping = box_iou(np.array(label.box), plate_boxes) > IOU_MATCH
        read_here = [p for p, hit in zip(result.plates, overlapping, strict=True) if hit]
        reads = tuple(p.text for p in read_here)
        alike = _alike(label.plate) in {_alike(r) for r in reads}
        full_text = linked = False
        if label.kind == "crossboundary":
            as_such = [p for p in read_here if p.kind == "crossboundary"]
            full_text = any(p.marked_text == label.full_text for p in as_such)
            above = _label_above(label, labels)
            linked = above is not None and any(
                p.linked_to is not None and result.plates[p.linked_to].text == above.plate
                for p in as_such
            )
        outcomes.append(
            LabelOutcome(
                plate=label.plate,
                category=label.category,
                width=label.box[2] - label.box[0],
                detected=bool(hits),
                exact=label.plate in reads,
                alike=alike,
                wrong=bool(reads) and not alike,
                reads=reads,
                full_text=full_text,
                linked=linked,
            )
        )
    return ImageOutcome(
        image=image.name,
        labels=tuple(outcomes),
        read=tuple(p.text for p in result.plates),
        extra_boxes=len(boxes) - len(matched_boxes),
        total_ms=result.total_ms,
        detect_ms=result.detect_ms,
        ocr_ms=result.ocr_ms,
        crops_read=len(result.detections),
    )


def _kind_score(outcomes: list[LabelOutcome]) -> KindScore:
    n = len(outcomes) or 1
    return KindScore(
        plates=len(outcomes),
        detection_rate=sum(o.detected for o in outcomes) / n,
        exact_rate=sum(o.exact for o in outcomes) / n,
        alike_rate=sum(o.alike for o in outcomes) / n,
        wrong_rate=sum(o.wrong for o in outcomes) / n,
        full_text_rate=sum(o.full_text for o in outcomes) / n,
        linked_rate=sum(o.linked for o in outcomes) / n,
    )


def summarise(engine: str, fmt: str, outcomes: list[ImageOutcome], failed: int) -> AccuracyReport:
    labels = [label for o in outcomes for label in o.labels]
    overall = _kind_score(labels)
    totals = [o.total_ms for o in outcomes] or [0.0]
    crops = sum(o.crops_read for o in outcomes)
    return AccuracyReport(
        engine=engine,
        plate_format=fmt,
        images=len(outcomes),
        plates=overall.plates,
        detection_rate=overall.detection_rate,
        exact_rate=overall.exact_rate,
        alike_rate=overall.alike_rate,
        wrong_rate=overall.wrong_rate,
        extra_boxes_per_image=sum(o.extra_boxes for o in outcomes) / max(1, len(outcomes)),
        median_ms=statistics.median(totals),
        p95_ms=float(np.percentile(totals, 95)),
        median_detect_ms=statistics.median([o.detect_ms for o in outcomes] or [0.0]),
        ocr_ms_per_plate=sum(o.ocr_ms for o in outcomes) / crops if crops else 0.0,
        failed_images=failed,
        by_kind={
            category: _kind_score([x for x in labels if x.category == category])
            for category in CATEGORIES
            if any(x.category == category for x in labels)
        },
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
            for label in outcome.labels:
                mark = "ok   " if label.alike else "WRONG" if label.wrong else "miss "
                found = "found" if label.detected else "not found"
                print(
                    f"{mark} {outcome.image:<16} {label.category:<14} {label.plate:<10} "
                    f"{label.width:5.0f}px {found:<9} read={','.join(label.reads) or '-'}",
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
        ("wrong read", lambda r: f"{r.wrong_rate:.3f}"),
        ("extra boxes / image", lambda r: f"{r.extra_boxes_per_image:.2f}"),
        ("median ms / image", lambda r: f"{r.median_ms:.1f}"),
        ("p95 ms / image", lambda r: f"{r.p95_ms:.1f}"),
        ("median detect ms / image", lambda r: f"{r.median_detect_ms:.1f}"),
        ("OCR ms / plate", lambda r: f"{r.ocr_ms_per_plate:.1f}"),
        ("labels or images skipped", lambda r: f"{r.failed_images}"),
    ]
    for category in CATEGORIES:
        if not any(category in r.by_kind for r in reports):
            continue

        def kind(r: AccuracyReport, attr: str, category: str = category) -> str:
            score = r.by_kind.get(category)
            if score is None:
                return "-"
            value = getattr(score, attr)
            return f"{value}" if attr == "plates" else f"{value:.3f}"

        attrs = [
            ("plates", "plates"),
            ("detection_rate", "found"),
            ("exact_rate", "exact" if category != "cross-boundary" else "exact (core Z1234)"),
            ("alike_rate", "exact, O=0 I=1 alike"),
            ("wrong_rate", "wrong read"),
        ]
        if category == "cross-boundary":
            attrs += [("full_text_rate", "full text (粤, 港)"), ("linked_rate", "linked")]
        for attr, name in attrs:
            rows.append((f"{category}: {name}", lambda r, attr=attr, kind=kind: kind(r, attr)))
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
