"""Still-image recognition: detect plates, read them, apply the plate-format rules.

:class:`PlateRecognizer` is the recognition core every camera frame goes through;
``lpr-edge recognize`` runs it over image files.
"""

from __future__ import annotations

import argparse
import json
import logging
import struct
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from edge import crossboundary
from edge.config import Config, load_config
from edge.recognition.crop import plate_lines
from edge.recognition.detect import BaseDetector, YoloPlateDetector
from edge.recognition.models import require
from edge.recognition.ocr.base import BaseOCR
from edge.recognition.plateformat import PlateFormat, apply_format, load_format
from edge.recognition.textdetect import (
    TextPlateDetector,
    holding,
    merge_proposals,
    uncovered,
    zoom_regions,
)
from edge.types import Detections, OcrResult, PlateText, RecognizedPlate

log = logging.getLogger("edge.recognize")

OCR_ENGINES = ("ppocr", "easyocr")
#: A text box overlapping a plate box by more than this is the same plate.
PROPOSAL_IOU = 0.3
#: A text box no plate box covers is searched for a plate in a region this many times
#: its size around it (see :func:`~edge.recognition.textdetect.zoom_regions`) ...
PROPOSAL_CONTEXT = 2.5
#: ... scaled, up or down, to this longest side, where a plate in the region spans
#: about a third of the detector's input, as in the scenes it was trained on ...
PROPOSAL_ZOOM = 480
#: ... for at most this many text boxes per image, the surest first (the others are
#: not read either).
PROPOSAL_LIMIT = 8
#: A second look goes to detector boxes scored from this up to the detection
#: threshold: a plate the detector sees too small or too oddly (a two-row plate, a
#: distant one) often gets a box of a few hundredths ...
SECOND_LOOK_FLOOR = 0.01
#: ... in a region this many times its size around it (some of the car with it) ...
SECOND_LOOK_CONTEXT = 1.8
#: ... scaled, up or down, to this longest side ...
SECOND_LOOK_ZOOM = 320
#: ... for at most this many weak boxes per image, the strongest first.
SECOND_LOOK_LIMIT = 8
#: A plate the detector was unsure of counts only when read at least this surely: the
#: second look also boxes plates too small or dark to read, and the recogniser can
#: still read something there (an unreadable 50 px night plate as ETE at 0.61; the
#: real plates it gained read at 0.84-1.0).
SECOND_LOOK_MIN_CONFIDENCE = 0.8
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
#: Largest still image decoded, in pixels. 50 megapixels holds any camera's photo (a
#: 48 MP phone photo is 8000x6000) and decodes to 150 MB as BGR. The size is read from
#: the file's header before decoding, so a small file declaring a huge picture costs
#: nothing (OpenCV's own limit, 2**30 pixels, would let it allocate 3 GB first).
MAX_IMAGE_PIXELS = 50_000_000
#: JPEG markers that start a frame header (SOF0-SOF15 but DHT, JPG and DAC), which
#: holds the picture's size.
_JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


@dataclass(frozen=True, slots=True)
class Recognition:
    """Everything found in one image: every detected box, the plates that were read
    (boxes whose text met the format and confidence rules), and where time went."""

    detections: Detections
    plates: tuple[RecognizedPlate, ...]
    detect_ms: float
    ocr_ms: float

    @property
    def total_ms(self) -> float:
        return self.detect_ms + self.ocr_ms


class PlateRecognizer:
    """Detector + OCR engine + plate format, owned together and closed together."""

    def __init__(
        self,
        detector: BaseDetector,
        ocr: BaseOCR,
        plate_format: PlateFormat,
        *,
        min_confidence: float = 0.5,
        proposals: BaseDetector | None = None,
        second_look: bool = False,
    ):
        self.detector = detector
        self.ocr = ocr
        self.plate_format = plate_format
        self.min_confidence = min_confidence
        #: A second source of boxes for still images (text detection), whose boxes the
        #: plate detector's do not cover are read too.
        self.proposals = proposals
        #: Whether the detector looks again, zoomed in, at its weak boxes.
        self.second_look = second_look

    def recognize(self, image: np.ndarray) -> Recognition:
        start = time.perf_counter()
        if self.second_look:
            sure, weak = self.detector.detect_weak(image, SECOND_LOOK_FLOOR)
            found = self._second_look(image, sure, weak)
        else:
            sure = found = self.detector.detect(image)
        hints = Detections.empty()
        if self.proposals is not None:
            found, hints = self._proposals(image, found)
        detected = time.perf_counter()
        boxes = merge_proposals(found, hints, PROPOSAL_IOU)
        texts = self.read_boxes(image, boxes.xyxy)
        keep = [i for i, text in enumerate(texts) if _counts(i, text, len(sure), len(found))]
        if len(keep) < len(texts):
            boxes = boxes[keep]
            texts = [texts[i] for i in keep]
        plates = self._plates(boxes, texts)
        done = time.perf_counter()
        return Recognition(boxes, plates, (detected - start) * 1e3, (done - detected) * 1e3)

    def _second_look(
        self, image: np.ndarray, detections: Detections, weak: Detections
    ) -> Detections:
        """``detections`` with the plates the detector finds when it looks again, zoomed
        in, around its ``weak`` boxes that no detection covers. Only a box as sure as
        any other detection counts, and only one around the weak box: the second look
        finds what was seen too small, not new places."""
        weak = weak[uncovered(detections, weak, PROPOSAL_IOU)][:SECOND_LOOK_LIMIT]
        return self._look_again(image, detections, weak, SECOND_LOOK_CONTEXT, SECOND_LOOK_ZOOM)

    def _look_again(
        self,
        image: np.ndarray,
        detections: Detections,
        around: Detections,
        context: float,
        zoom: int,
    ) -> Detections:
        """``detections`` followed by the plate boxes the detector draws around the
        ``around`` boxes when it looks again at regions ``context`` times their size,
        scaled to ``zoom`` px."""
        if not len(around):
            return detections
        found = self.detector.detect_regions(
            image, zoom_regions(around.xyxy, context), zoom, enlarge=True
        )
        return merge_proposals(detections, holding(found, around.xyxy), PROPOSAL_IOU)

    def _proposals(
        self, image: np.ndarray, detections: Detections
    ) -> tuple[Detections, Detections]:
        """``detections`` with the plates the plate detector finds when it looks again,
        zoomed in, around the text boxes none of them covers; and the text boxes it
        found no plate around.

        Text boxes are a hint where to look: read as they are, a two-row plate's rows
        come apart (``TK`` for ``TK8921``) and shop signs, slogans and stickers read as
        personalised marks. A plate box drawn around the text is a plate, both rows of
        it, and not a sign."""
        assert self.proposals is not None
        text = self.proposals.detect(image)
        text = text[uncovered(detections, text, PROPOSAL_IOU)][:PROPOSAL_LIMIT]
        return self._look_again(image, detections, text, PROPOSAL_CONTEXT, PROPOSAL_ZOOM), text

    def read(self, image: np.ndarray, detections: Detections) -> tuple[RecognizedPlate, ...]:
        """Read every detected box in one OCR batch; keep those the format accepts, and
        tell cross-boundary plates apart, linked to the plate above them."""
        return self._plates(detections, self.read_boxes(image, detections.xyxy))

    def _plates(
        self, detections: Detections, texts: Sequence[PlateText | None]
    ) -> tuple[RecognizedPlate, ...]:
        """The boxes' readings as plates, those without one left out, cross-boundary
        plates linked to the plate above them."""
        plates = []
        for box, score, text in zip(detections.xyxy, detections.scores, texts, strict=True):
            if text is None:
                continue
            plates.append(
                RecognizedPlate(
                    box=tuple(float(v) for v in box),
                    detection_score=float(score),
                    text=text.text,
                    confidence=text.confidence,
                    char_confidences=text.char_confidences,
                    candidates=text.candidates,
                    marked_text=text.marked_text,
                )
            )
        return link_cross_boundary(plates)

    def read_boxes(self, image: np.ndarray, boxes: np.ndarray) -> list[PlateText | None]:
        """The plate reading of each box (N, 4), or None where none fits the format
        with enough confidence; one OCR batch.

        A squarish box is read both as one row and as two (see
        :func:`~edge.recognition.crop.plate_lines`) and the surer reading is kept: a two-row plate
        read as one line gives its bottom row alone, confidently, and a one-row plate
        with text bands read as two rows gives a poor fit."""
        if not len(boxes):
            return []
        layouts = [plate_lines(image, box) for box in boxes]
        results = iter(self.ocr.read([line for lines in layouts for line in lines]))
        raw = [[next(results) for _ in lines] for lines in layouts]
        texts: list[PlateText | None] = []
        for reads in raw:
            readings = [
                apply_format(r, self.plate_format, min_confidence=self.min_confidence)
                for r in reads
            ]
            texts.append(_surer(*readings) if len(readings) == 2 else readings[0])
        for i in self._stacked_pairs(layouts, raw):
            texts[i] = None
        return self._mark_cross_boundary(texts, [lines[0] for lines in layouts])

    def _stacked_pairs(
        self, layouts: list[tuple[np.ndarray, ...]], raw: list[list[OcrResult]]
    ) -> list[int]:
        """The boxes that hold a Hong Kong plate and the cross-boundary plate under it:
        their two-row line reads as text, then a core of the cross-boundary shape with
        its Chinese characters. The detector often boxes the pair as one, and any
        reading of such a box is a wrong one (U8 over 粤Z1997港 read U8Z1997), so it
        gives none; other views of the car, boxed apart, give the plates."""
        suspects = [
            i
            for i, reads in enumerate(raw)
            if len(reads) == 2 and crossboundary.core_after_text(reads[1].text) is not None
        ]
        if not suspects:
            return []
        marks = self.ocr.read_marks([layouts[i][1] for i in suspects], crossboundary.MARKS)
        if marks is None:
            return []
        return [
            i
            for i, read in zip(suspects, marks, strict=True)
            if crossboundary.marked_text(crossboundary.core_after_text(raw[i][1].text), read)
        ]

    def _mark_cross_boundary(
        self, texts: list[PlateText | None], lines: list[np.ndarray]
    ) -> list[PlateText | None]:
        """``texts`` with cross-boundary plates' ``marked_text`` set: a reading of the
        core's shape is read again with the Chinese characters allowed, and is one when
        they show. Ordinary plates cost nothing: only the core's shape is asked."""
        shaped = [
            i for i, t in enumerate(texts) if t is not None and crossboundary.has_core_shape(t.text)
        ]
        if not shaped:
            return texts
        marks = self.ocr.read_marks([lines[i] for i in shaped], crossboundary.MARKS)
        if marks is None:
            return texts
        for i, read in zip(shaped, marks, strict=True):
            text = texts[i]
            assert text is not None
            full = crossboundary.marked_text(text.text, read)
            if full is not None:
                texts[i] = replace(text, marked_text=full)
        return texts

    def close(self) -> None:
        self.detector.close()
        self.ocr.close()
        if self.proposals is not None:
            self.proposals.close()

    def __enter__(self) -> PlateRecognizer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def link_cross_boundary(plates: list[RecognizedPlate]) -> tuple[RecognizedPlate, ...]:
    """``plates`` of one image with each cross-boundary plate linked to the plate
    mounted directly above it, its vehicle's Hong Kong plate."""
    others = [(j, p.box) for j, p in enumerate(plates) if p.kind != "crossboundary"]
    return tuple(
        replace(p, linked_to=crossboundary.stacked_above(p.box, others))
        if p.kind == "crossboundary"
        else p
        for p in plates
    )


def _counts(index: int, text: PlateText | None, sure: int, found: int) -> bool:
    """Whether the reading of box ``index`` counts, where the boxes up to ``sure`` are
    the detector's own, those up to ``found`` were found on a second look (around a
    weak box or a text box), and the rest are bare text boxes."""
    if index < sure:
        return True
    if text is None:
        return False
    if index < found:
        return text.confidence >= SECOND_LOOK_MIN_CONFIDENCE
    # A bare text box counts only where it reads as a cross-boundary plate, Chinese
    # characters and all: the plate detector finds few of those black plates, and
    # nothing else reads so.
    return bool(text.marked_text)


def _surer(one_row: PlateText | None, two_rows: PlateText | None) -> PlateText | None:
    """The reading to keep of a squarish box read as one row and as two rows.

    The surer one, ties to one row; but a one-row reading that is the end of the
    two-row one is the bottom row read alone (a line recogniser reads the larger row
    of a two-row plate, often confidently), so the two-row reading explains more of
    the plate and is kept."""
    if one_row is None or two_rows is None:
        return one_row or two_rows
    if two_rows.text != one_row.text and two_rows.text.endswith(one_row.text):
        return two_rows
    return two_rows if two_rows.confidence > one_row.confidence else one_row


def open_ocr(name: str, config: Config) -> BaseOCR:
    """The configured OCR engine, on verified model files."""
    rec = config.recognition
    if name == "ppocr":
        from edge.recognition.ocr.ppocr import PPOCRRecognizer

        path = require(rec.ppocr_model, config.models_dir)
        return PPOCRRecognizer(path, threads=rec.threads, providers=rec.providers)
    if name == "easyocr":
        from edge.recognition.ocr.easyocr_engine import EasyOCRRecognizer

        model = "easyocr-english-g2-onnx" if rec.easyocr_backend == "onnx" else "easyocr-english-g2"
        return EasyOCRRecognizer(
            require(model, config.models_dir),
            rec.easyocr_backend,
            threads=rec.threads,
            providers=rec.providers,
        )
    raise ValueError(f"unknown OCR engine {name!r} (known: ppocr, easyocr)")


def open_recognizer(
    config: Config, *, ocr: str | None = None, plate_format: str | None = None
) -> PlateRecognizer:
    """Build the recognition core from config; models are verified before use."""
    rec = config.recognition
    fmt = load_format(plate_format or rec.plate_format)
    detector = YoloPlateDetector(
        require(rec.detector, config.models_dir),
        score_threshold=rec.detection_threshold,
        iou_threshold=rec.nms_iou,
        threads=rec.threads,
        providers=rec.providers,
        input_size=rec.detector_input,
        tile=rec.detector_tile,
    )
    opened: list[BaseDetector | BaseOCR] = [detector]
    try:
        engine = open_ocr(ocr or rec.ocr, config)
        opened.append(engine)
        proposals = None
        if rec.text_proposals:
            proposals = TextPlateDetector(
                require("ppocr-v6-det", config.models_dir),
                threads=rec.threads,
                providers=rec.providers,
            )
    except BaseException:
        for resource in opened:
            resource.close()
        raise
    return PlateRecognizer(
        detector,
        engine,
        fmt,
        min_confidence=rec.min_confidence,
        proposals=proposals,
        second_look=rec.second_look,
    )


def iter_images(paths: Sequence[str]) -> Iterator[Path]:
    """Files as given; folders expanded to their image files, sorted."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            yield path


def read_image(path: Path) -> np.ndarray:
    """Decode an image file to BGR; ValueError with a reason a user understands.

    Only PNG, JPEG, BMP, WebP and TIFF files are decoded, and only when their header
    declares at most MAX_IMAGE_PIXELS: the size is known before any pixel is."""
    if not path.exists():
        raise ValueError("file not found")
    if not path.is_file():
        raise ValueError("not a regular file")
    data = path.read_bytes()
    size = image_dimensions(data)
    if size is None:
        raise ValueError(
            "not a readable image (not PNG, JPEG, BMP, WebP or TIFF, or its header is "
            "corrupt or truncated)"
        )
    width, height = size
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(
            f"{width}x{height} pixels ({width * height / 1e6:.1f} megapixels): over the "
            f"limit of {MAX_IMAGE_PIXELS // 10**6} megapixels for a still image"
        )
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        # OpenCV raises rather than returning None for some damage (a header it
        # rejects); its message's last line says what.
        raise ValueError(f"not a readable image ({str(exc).strip().splitlines()[-1]})") from None
    if image is None:
        raise ValueError("not a readable image (corrupt, truncated or not an image format)")
    return image


def image_dimensions(data: bytes) -> tuple[int, int] | None:
    """(width, height) declared by a PNG, JPEG, BMP, WebP or TIFF file's header, read
    without decoding; None for another format or a header cut short."""
    try:
        if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
            width, height = struct.unpack(">II", data[16:24])
            return width, height
        if data.startswith(b"\xff\xd8"):
            return _jpeg_dimensions(data)
        if data.startswith(b"BM"):
            (header_size,) = struct.unpack("<I", data[14:18])
            if header_size == 12:  # OS/2 bitmap header: unsigned 16-bit sizes
                width, height = struct.unpack("<HH", data[18:22])
                return width, height
            width, height = struct.unpack("<ii", data[18:26])
            return abs(width), abs(height)  # a negative height is a top-down bitmap
        if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
            return _webp_dimensions(data)
        if data[:4] in (b"II*\0", b"MM\0*"):
            return _tiff_dimensions(data)
    except struct.error:
        return None
    return None


def _jpeg_dimensions(data: bytes) -> tuple[int, int] | None:
    """The frame header's size, found by walking the segments (an EXIF thumbnail's
    own frame header lies inside an APP1 segment, which is skipped whole)."""
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte before a marker
            at += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            at += 2
            continue
        if marker in _JPEG_FRAME_MARKERS:
            height, width = struct.unpack(">HH", data[at + 5 : at + 9])
            return width, height
        (length,) = struct.unpack(">H", data[at + 2 : at + 4])
        at += 2 + length
    return None


def _webp_dimensions(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":  # extended: 24-bit sizes minus one
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    if chunk == b"VP8L":  # lossless: 14-bit sizes minus one, after a signature byte
        (bits,) = struct.unpack("<I", data[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":  # lossy: 14-bit sizes after the frame tag and start code
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None


def _tiff_dimensions(data: bytes) -> tuple[int, int] | None:
    """ImageWidth (256) and ImageLength (257) of the first image directory."""
    order = "<" if data.startswith(b"II") else ">"
    (directory,) = struct.unpack(order + "I", data[4:8])
    (entries,) = struct.unpack(order + "H", data[directory : directory + 2])
    size: dict[int, int] = {}
    for i in range(entries):
        at = directory + 2 + 12 * i
        tag, kind = struct.unpack(order + "HH", data[at : at + 4])
        if tag in (256, 257):
            short = kind == 3  # SHORT; otherwise LONG
            value_format = order + ("H" if short else "I")
            value_end = at + (10 if short else 12)
            (size[tag],) = struct.unpack(value_format, data[at + 8 : value_end])
    if 256 in size and 257 in size:
        return size[256], size[257]
    return None


def plate_json(plate: RecognizedPlate) -> dict:
    return {
        "text": plate.text,
        "kind": plate.kind,
        "marked_text": plate.marked_text,
        "linked_to": plate.linked_to,
        "confidence": round(plate.confidence, 4),
        "box": [round(v, 1) for v in plate.box],
        "candidates": [
            {"text": c.text, "confidence": round(c.confidence, 4)} for c in plate.candidates
        ],
    }


def _plate_line(plate: RecognizedPlate, plates: Sequence[RecognizedPlate]) -> str:
    text = f"{plate.text} ({plate.confidence:.2f}) at {[int(v) for v in plate.box]}"
    if plate.kind == "crossboundary":
        text += f" cross-boundary {plate.marked_text}"
        if plate.linked_to is not None:
            text += f" under {plates[plate.linked_to].text}"
    return text


def cmd_recognize(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.ocr and args.ocr not in OCR_ENGINES:
        print(
            f"lpr-edge recognize: unknown OCR engine {args.ocr!r} "
            f"(known: {', '.join(OCR_ENGINES)})",
            file=sys.stderr,
        )
        return 2
    images = list(iter_images(args.paths))
    if not images:
        print("lpr-edge recognize: no images found in the given paths", file=sys.stderr)
        return 1
    skipped = 0
    with open_recognizer(config, ocr=args.ocr, plate_format=args.format) as recognizer:
        for path in images:
            try:
                image = read_image(path)
            except ValueError as exc:
                skipped += 1
                print(f"lpr-edge recognize: {path}: skipped: {exc}", file=sys.stderr, flush=True)
                if args.json:
                    print(json.dumps({"image": str(path), "error": str(exc)}), flush=True)
                continue
            result = recognizer.recognize(image)
            if args.json:
                print(
                    json.dumps(
                        {
                            "image": str(path),
                            "plates": [plate_json(p) for p in result.plates],
                            "timing_ms": {
                                "detect": round(result.detect_ms, 1),
                                "ocr": round(result.ocr_ms, 1),
                                "total": round(result.total_ms, 1),
                            },
                        }
                    ),
                    flush=True,
                )
            else:
                found = ", ".join(_plate_line(p, result.plates) for p in result.plates)
                found = found or "no plate read"
                print(f"{path}: {found}  [{result.total_ms:.0f} ms]", flush=True)
    if skipped:
        print(f"lpr-edge recognize: {skipped} of {len(images)} image(s) skipped", file=sys.stderr)
        return 1
    return 0
