"""End to end on generated plates: detector -> crop -> OCR -> format rules."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.bench.accuracy import load_labels, run_benchmark
from edge.config import PROJECT_ROOT, load_config
from edge.recognition.detect import box_iou
from edge.recognition.recognize import (
    MAX_IMAGE_PIXELS,
    PlateRecognizer,
    _surer,
    image_dimensions,
    open_recognizer,
    read_image,
)
from edge.synth.scenes import render_scene
from edge.types import PlateText
from tests.conftest import model_path

SCENE_PLATES = ["AB1234", "KT88"]


@pytest.fixture(scope="module", params=["ppocr", "easyocr"])
def recognizer(request) -> PlateRecognizer:
    model_path("platedet.onnx")
    config = load_config(None, environ={})
    with open_recognizer(config, ocr=request.param, plate_format="hk") as rec:
        yield rec


@pytest.fixture(scope="module")
def scene_folder(tmp_path_factory) -> Path:
    """Three generated scenes labelled in the OpenALPR benchmark format, plus one
    corrupt JPEG that must be reported without stopping the batch."""
    folder = tmp_path_factory.mktemp("scenes")
    rng = np.random.default_rng(7)
    for i, texts in enumerate([["AB1234"], ["KT88", "PX5170"], ["LM9"]]):
        image, truths = render_scene(texts, rng=rng, styles=["front", "rear"][: len(texts)])
        name = f"scene{i}.jpg"
        cv2.imwrite(str(folder / name), image)
        lines = [
            f"{name}\t{x1:.0f}\t{y1:.0f}\t{x2 - x1:.0f}\t{y2 - y1:.0f}\t{text}"
            for text, (x1, y1, x2, y2) in truths
        ]
        (folder / f"scene{i}.txt").write_text("\n".join(lines) + "\n")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    (folder / "broken.txt").write_text("broken.jpg\t1\t1\t10\t10\tXX1\n")
    return folder


def test_reads_generated_plates(recognizer):
    image, truths = render_scene(SCENE_PLATES, rng=np.random.default_rng(11))
    result = recognizer.recognize(image)
    assert {p.text for p in result.plates} == set(SCENE_PLATES)
    for text, box in truths:
        plate = next(p for p in result.plates if p.text == text)
        assert box_iou(np.array(plate.box), np.array([box]))[0] > 0.5
        assert 0.5 <= plate.confidence <= 1.0
        assert len(plate.char_confidences) == len(text)
        assert plate.candidates and plate.candidates[0].text == text


def test_image_without_plates_reads_nothing(recognizer):
    blank = np.full((720, 1280, 3), 90, np.uint8)
    result = recognizer.recognize(blank)
    assert result.plates == ()


def test_benchmark_scores_generated_folder_and_skips_corrupt_file(recognizer, scene_folder):
    dataset, problems = load_labels(scene_folder)
    assert len(dataset) == 4 and not problems
    report, outcomes = run_benchmark(scene_folder, recognizer, recognizer.ocr.name, "hk")
    assert sorted(o.image for o in outcomes) == ["scene0.jpg", "scene1.jpg", "scene2.jpg"]
    assert report.failed_images == 1  # broken.jpg, reported and skipped
    assert report.images == 3 and report.plates == 4
    assert report.detection_rate == 1.0
    assert report.exact_rate >= 0.75
    assert report.median_ms > 0


def lpr_edge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edge", *args],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=300,
        check=False,
    )


def test_recognize_cli_json_reports_corrupt_file_and_continues(scene_folder):
    model_path("platedet.onnx")
    result = lpr_edge("recognize", "--json", "--format", "hk", str(scene_folder))
    assert result.returncode == 1, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    by_name = {Path(line["image"]).name: line for line in lines}
    assert set(by_name) == {"broken.jpg", "scene0.jpg", "scene1.jpg", "scene2.jpg"}
    assert "error" in by_name["broken.jpg"]
    scene0 = by_name["scene0.jpg"]
    assert [p["text"] for p in scene0["plates"]] == ["AB1234"]
    plate = scene0["plates"][0]
    assert len(plate["box"]) == 4 and 0 < plate["confidence"] <= 1
    assert plate["candidates"][0]["text"] == "AB1234"
    assert set(scene0["timing_ms"]) == {"detect", "ocr", "total"}
    assert "1 of 4 image(s) skipped" in result.stderr


def test_recognize_cli_all_good_exits_0(scene_folder):
    model_path("platedet.onnx")
    result = lpr_edge("recognize", "--format", "hk", str(scene_folder / "scene0.jpg"))
    assert result.returncode == 0, result.stderr
    assert "AB1234" in result.stdout


def test_recognize_cli_bad_engine_and_format_exit_2(scene_folder):
    image = str(scene_folder / "scene0.jpg")
    assert lpr_edge("recognize", "--ocr", "tesseract", image).returncode == 2
    bad_format = lpr_edge("recognize", "--format", "martian", image)
    assert bad_format.returncode == 2
    assert "martian" in bad_format.stderr and "Traceback" not in bad_format.stderr


@pytest.fixture(scope="module")
def json_folder(tmp_path_factory) -> Path:
    """Two generated scenes labelled in labels.json: a plate, a box marked unclear, a
    two-row label, and a label with a bad box that must be reported and skipped."""
    folder = tmp_path_factory.mktemp("json-scenes")
    rng = np.random.default_rng(7)
    labels: dict[str, list[dict]] = {}
    for i, texts in enumerate([["AB1234", "KT88"], ["PX5170"]]):
        image, truths = render_scene(texts, rng=rng)
        name = f"scene{i}.png"
        cv2.imwrite(str(folder / name), image)
        labels[name] = [
            {"text": text, "kind": "hk", "rows": 1, "box": [round(v) for v in box]}
            for text, box in truths
        ]
    labels["scene0.png"][1].update(kind="unclear", text="")
    labels["scene1.png"][0]["rows"] = 2
    labels["scene1.png"].append({"text": "XX1", "kind": "hk", "rows": 1, "box": [5, 5, 1, 1]})
    labels["missing.png"] = [{"text": "AB1", "kind": "hk", "rows": 1, "box": [0, 0, 9, 9]}]
    (folder / "labels.json").write_text(json.dumps(labels))
    return folder


def test_json_labels_are_loaded_with_kinds_and_problems_named(json_folder):
    dataset, problems = load_labels(json_folder)
    assert [image.name for image, _ in dataset] == ["scene0.png", "scene1.png"]
    kinds = [(label.plate, label.category) for _, labels in dataset for label in labels]
    assert kinds == [("AB1234", "one-row"), ("", None), ("PX5170", "two-row")]
    assert len(problems) == 2
    assert any("scene1.png label 2" in p and "box" in p for p in problems)
    assert any("missing.png not found" in p for p in problems)


def test_benchmark_reports_per_kind_and_ignores_unclear_boxes(json_folder):
    config = load_config(None, environ={})
    model_path("platedet.onnx")
    with open_recognizer(config, plate_format="hk") as recognizer:
        report, outcomes = run_benchmark(json_folder, recognizer, "ppocr", "hk")
    # The unclear plate is neither counted nor, when boxed, an extra box.
    assert report.plates == 2 and report.extra_boxes_per_image == 0
    assert set(report.by_kind) == {"one-row", "two-row"}
    assert report.by_kind["one-row"].plates == 1 and report.by_kind["two-row"].plates == 1
    assert report.by_kind["one-row"].exact_rate == 1.0
    scene0 = next(o for o in outcomes if o.image == "scene0.png")
    assert [label.plate for label in scene0.labels] == ["AB1234"]
    assert "KT88" in scene0.read  # read on the unclear box, not scored


def test_bench_accuracy_cli_prints_kinds(json_folder):
    model_path("platedet.onnx")
    result = lpr_edge("bench", "accuracy", "--format", "hk", str(json_folder))
    assert result.returncode == 0, result.stderr
    assert "one-row: exact" in result.stdout and "two-row: found" in result.stdout
    assert "missing.png not found" in result.stderr


def _text(text: str, confidence: float) -> PlateText:
    return PlateText(text, confidence, (confidence,) * len(text), "?")


def test_a_squarish_box_keeps_the_surer_reading_or_the_whole_two_row_one():
    one, two = _text("W0LLY", 0.99), _text("K1NW0LLY", 0.86)
    # The bottom row read alone, however sure, loses to the reading of both rows.
    assert _surer(one, two) is two
    assert _surer(_text("AB1234", 0.9), _text("AB1284", 0.8)).text == "AB1234"
    assert _surer(_text("AB1234", 0.7), _text("XY123", 0.8)).text == "XY123"
    assert _surer(_text("AB1234", 0.8), _text("AB1234", 0.8)).text == "AB1234"
    assert _surer(None, two) is two and _surer(one, None) is one and _surer(None, None) is None


def _two_row_plate() -> np.ndarray:
    img = np.full((180, 260, 3), (0, 200, 255), np.uint8)  # HK rear yellow
    cv2.putText(img, "AB", (70, 75), cv2.FONT_HERSHEY_SIMPLEX, 2.4, (20, 20, 20), 6, cv2.LINE_AA)
    cv2.putText(img, "1234", (25, 160), cv2.FONT_HERSHEY_SIMPLEX, 2.4, (20, 20, 20), 6, cv2.LINE_AA)
    return img


def _banded_plate() -> np.ndarray:
    """A US-style one-row plate: a state name above the registration, a slogan below."""
    img = np.full((150, 300, 3), 245, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(img, "California", (80, 28), font, 0.8, (150, 60, 20), 2, cv2.LINE_AA)
    cv2.putText(img, "7ABC123", (18, 100), font, 2.0, (30, 30, 120), 6, cv2.LINE_AA)
    cv2.putText(img, "dmv.ca.gov", (95, 135), font, 0.6, (150, 60, 20), 1, cv2.LINE_AA)
    return img


@pytest.mark.parametrize(
    ("plate", "fmt", "expected"),
    [(_two_row_plate, "hk", "AB1234"), (_banded_plate, "us", "7ABC123")],
)
def test_two_row_plates_are_read_by_rows_and_banded_plates_are_not_split(plate, fmt, expected):
    image = np.full((400, 600, 3), 90, np.uint8)
    crop = plate()
    h, w = crop.shape[:2]
    image[100 : 100 + h, 150 : 150 + w] = crop
    with open_recognizer(load_config(None, environ={}), plate_format=fmt) as reader:
        (text,) = reader.read_boxes(image, np.array([[150, 100, 150 + w, 100 + h]], np.float32))
    assert text is not None and text.text == expected


def _flat_plate(text: str, ink: tuple[int, int, int], paper: tuple[int, int, int]) -> np.ndarray:
    img = np.full((90, 400, 3), paper, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    (tw, th), _ = cv2.getTextSize(text, font, 2.0, 5)
    cv2.putText(img, text, ((400 - tw) // 2, (90 + th) // 2), font, 2.0, ink, 5, cv2.LINE_AA)
    return img


@pytest.mark.parametrize(
    ("ink", "paper"),
    [
        ((20, 20, 20), (242, 242, 242)),  # HK front: black on white
        ((20, 20, 20), (0, 200, 255)),  # HK rear: black on yellow
        ((235, 235, 235), (25, 25, 25)),  # cross-boundary: white on black
        ((30, 30, 200), (242, 242, 242)),  # trade plate: red on white
    ],
)
def test_plates_of_either_polarity_are_read(ink, paper):
    """Light characters on a dark plate need no inversion: the crop's grey keeps their
    contrast and the recogniser reads them (inverting by the share or the largest
    region of dark pixels took 3 of 43 real HK plates and 15 of 330 US/EU plates for
    dark plates, bold characters and frames making those the larger)."""
    image = np.full((300, 600, 3), 90, np.uint8)
    image[100:190, 100:500] = _flat_plate("PX 5170", ink, paper)
    with open_recognizer(load_config(None, environ={}), plate_format="hk") as reader:
        (text,) = reader.read_boxes(image, np.array([[100, 100, 500, 190]], np.float32))
    assert text is not None and text.text == "PX5170" and text.confidence > 0.9


# --- images that must not be decoded --------------------------------------------------


def png_declaring(width: int, height: int) -> bytes:
    """A well-formed PNG that declares ``width`` x ``height`` pixels: valid signature,
    IHDR and CRCs, but only a few kilobytes of (zero) image data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    pixels = zlib.compress(bytes(14_000_000), 9)  # about 14 KB: a row start, no more
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def jpeg_declaring(width: int, height: int) -> bytes:
    """The start of a baseline JPEG whose frame header declares ``width`` x ``height``."""
    frame = struct.pack(">BHHB", 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8" + b"\xff\xc0" + struct.pack(">H", 2 + len(frame)) + frame + b"\xff\xd9"


@pytest.mark.parametrize(
    ("name", "data", "declared"),
    [
        ("huge.png", png_declaring(100_000, 100_000), "100000x100000 pixels (10000.0"),
        ("huge.jpg", jpeg_declaring(65_535, 65_535), "65535x65535 pixels (4294.8"),
        ("wide.png", png_declaring(10_000, 5_001), "10000x5001 pixels (50.0"),
    ],
)
def test_an_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path, name, data, declared):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ValueError) as err:
        read_image(path)
    assert MAX_IMAGE_PIXELS == 50_000_000
    limit = "megapixels): over the limit of 50 megapixels for a still image"
    assert str(err.value) == f"{declared} {limit}"


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp", ".webp", ".tif"])
def test_images_within_the_limit_are_measured_from_their_header_and_decoded(tmp_path, suffix):
    picture = np.zeros((37, 53, 3), np.uint8)
    ok, encoded = cv2.imencode(suffix, picture)
    assert ok
    assert image_dimensions(encoded.tobytes()) == (53, 37)
    path = tmp_path / f"small{suffix}"
    path.write_bytes(encoded.tobytes())
    assert read_image(path).shape == (37, 53, 3)


def test_recognize_cli_skips_a_bomb_names_it_and_reads_the_rest(scene_folder, tmp_path):
    model_path("platedet.onnx")
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a-scene.jpg").write_bytes((scene_folder / "scene0.jpg").read_bytes())
    (folder / "b-bomb.png").write_bytes(png_declaring(100_000, 100_000))
    (folder / "c-scene.jpg").write_bytes((scene_folder / "scene2.jpg").read_bytes())
    result = lpr_edge("recognize", "--format", "hk", str(folder))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{folder / 'a-scene.jpg'}: AB1234" in result.stdout
    assert f"{folder / 'c-scene.jpg'}: " in result.stdout
    assert (
        f"lpr-edge recognize: {folder / 'b-bomb.png'}: skipped: 100000x100000 pixels "
        "(10000.0 megapixels): over the limit of 50 megapixels for a still image" in result.stderr
    )
    assert "lpr-edge recognize: 1 of 3 image(s) skipped" in result.stderr


def test_a_second_look_counts_only_a_sure_reading():
    """Where the detector is unsure (a weak box), it looks again zoomed in and can box
    a plate it did not see (real photos: two-row and distant plates). Such a plate can
    also be too small and dark to read, and the recogniser still reads something there
    (ETE for KT8821): a plate found on a second look counts only when read surely."""
    from edge.recognition.recognize import SECOND_LOOK_FLOOR, SECOND_LOOK_MIN_CONFIDENCE
    from tests.recognition.test_detect import unsure_night_scene

    image, truths = unsure_night_scene()
    plate = np.array(truths[0].box, np.float32)
    config = load_config(None, environ={})
    assert config.recognition.second_look, "on by default for still images"
    with open_recognizer(config) as reader:
        sure, weak = reader.detector.detect_weak(image, SECOND_LOOK_FLOOR)
        assert box_iou(plate, sure.xyxy).max(initial=0) < 0.4 < box_iou(plate, weak.xyxy).max()
        found = reader._second_look(image, sure, weak)
        assert len(found) == len(sure) + 1, "the second look boxes the plate"
        assert box_iou(plate, found.xyxy[-1:]).max() > 0.5
        (text,) = reader.read_boxes(image, found.xyxy[-1:])
        assert text is not None and text.text != "KT8821"
        assert text.confidence < SECOND_LOOK_MIN_CONFIDENCE
        assert reader.recognize(image).plates == ()
