"""The PP-OCRv4 engine on synthetic plates drawn with OpenCV."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.crop import crop_plate
from edge.ocr.base import BaseOCR
from edge.ocr.ppocr import PLATE_ALPHABET, PPOCRRecognizer, charset_from_metadata
from edge.plateformat import apply_format
from edge.types import OcrResult
from tests.conftest import model_path

MODEL = "ch_PP-OCRv4_rec_infer.onnx"


def plate(text: str, scale: float = 2.0, thickness: int = 5, pad: int = 14) -> np.ndarray:
    """Black bold text on white, as a BGR crop."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    (w, h), base = cv2.getTextSize(text, font, scale, thickness)
    img = np.full((h + base + 2 * pad, w + 2 * pad, 3), 255, np.uint8)
    cv2.putText(img, text, (pad, h + pad), font, scale, (0, 0, 0), thickness, cv2.LINE_AA)
    return img


@pytest.fixture(scope="module")
def engine():
    with PPOCRRecognizer(model_path(MODEL), threads=1) as eng:
        yield eng


def test_charset_follows_paddle_convention():
    assert charset_from_metadata("a\nb\nc") == ["", "a", "b", "c", " "]
    assert charset_from_metadata("a\nb\n") == ["", "a", "b", " "]


def test_model_charset_has_blank_first_space_last_and_plate_characters(engine):
    charset = engine.charset
    assert charset[0] == "" and charset[-1] == " "
    assert set(PLATE_ALPHABET) <= set(charset)
    assert isinstance(engine, BaseOCR) and engine.name == "ppocr"


def test_reads_a_synthetic_plate(engine):
    (result,) = engine.read([plate("AB 1234")])
    assert isinstance(result, OcrResult)
    # Restricted to A-Z0-9, so the gap is not read as a character.
    assert result.text == "AB1234"
    assert len(result.chars) == 6
    assert all(c.prob > 0.8 for c in result.chars)
    assert result.confidence == pytest.approx(min(c.prob for c in result.chars))
    assert result.candidates[0].text == "AB1234"
    plate_text = apply_format(result, "hk")
    assert plate_text is not None and plate_text.text == "AB1234"


def test_batch_keeps_order_across_widths_and_accepts_grey(engine):
    crops = [plate("XY 98"), plate("KL 4455", scale=1.5), plate("C 7")]
    crops[1] = cv2.cvtColor(crops[1], cv2.COLOR_BGR2GRAY)
    results = engine.read(crops)
    assert [r.text for r in results] == ["XY98", "KL4455", "C7"]
    assert engine.read([]) == []


def test_reads_through_the_crop_pipeline_including_two_rows(engine):
    scene = np.full((300, 600, 3), 80, np.uint8)
    one = plate("AB 1234")
    scene[40 : 40 + one.shape[0], 50 : 50 + one.shape[1]] = one
    box = (50, 40, 50 + one.shape[1], 40 + one.shape[0])
    (result,) = engine.read([crop_plate(scene, box)])
    assert result.text == "AB1234"

    two = np.full((180, 260, 3), 255, np.uint8)
    cv2.putText(two, "AB", (70, 75), cv2.FONT_HERSHEY_SIMPLEX, 2.4, (0, 0, 0), 6, cv2.LINE_AA)
    cv2.putText(two, "1234", (25, 160), cv2.FONT_HERSHEY_SIMPLEX, 2.4, (0, 0, 0), 6, cv2.LINE_AA)
    (flat,) = engine.read([two])
    (joined,) = engine.read([crop_plate(two, (0, 0, 260, 180))])
    assert flat.text != "AB1234"  # the line recogniser alone cannot read two rows
    assert joined.text == "AB1234"


def test_unrestricted_engine_reports_raw_text():
    with PPOCRRecognizer(model_path(MODEL), threads=1, restrict=False, beam_width=0) as raw:
        (result,) = raw.read([plate("ab-12")])
    assert result.text.lower().replace(" ", "") == "ab-12"


def test_padded_batches_read_the_same_and_closed_engine_refuses():
    crops = [plate("KL 4455", scale=1.5), plate("C 7"), plate("XY 98")]
    eng = PPOCRRecognizer(model_path(MODEL), threads=1, batch_size=8)
    # Sorted by width inside the batch, results still come back in input order.
    assert [r.text for r in eng.read(crops)] == ["KL4455", "C7", "XY98"]
    eng.close()
    with pytest.raises(RuntimeError, match="closed"):
        eng.read(crops)
