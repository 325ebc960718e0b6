"""EasyOCR english_g2: torch-free conversion to ONNX and the ``easyocr`` engine."""

from __future__ import annotations

import importlib.util
import io
import math
import os
import pickle
import zipfile
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from edge.recognition.ocr import easyocr_onnx as g2
from edge.recognition.ocr.easyocr_convert import convert_english_g2, load_state_dict
from edge.recognition.ocr.easyocr_engine import EasyOCRRecognizer
from edge.synth.scenes import render_plate
from edge.types import OcrResult
from tests.conftest import MODELS_DIR

PTH = MODELS_DIR / g2.PTH_NAME
needs_weights = pytest.mark.skipif(
    not PTH.is_file(), reason=f"{PTH} absent (run `lpr-edge models fetch` to get the weights)"
)


def plate(text: str, scale: float = 2.0, thickness: int = 5, border: int = 0) -> np.ndarray:
    """Black bold text on white, as a BGR crop; optionally in a dark frame."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    (w, h), base = cv2.getTextSize(text, font, scale, thickness)
    img = np.full((h + base + 24, w + 24, 3), 255, np.uint8)
    cv2.putText(img, text, (12, h + 12), font, scale, (0, 0, 0), thickness, cv2.LINE_AA)
    if border:
        img = cv2.copyMakeBorder(
            img, border, border, border, border, cv2.BORDER_CONSTANT, value=(20, 20, 20)
        )
    return img


def held_plate(text: str, *, width: int = 150, blur: float = 0.8, angle: float = 0.0) -> np.ndarray:
    """A generated HK plate (thin inset border) in a dark holder, turned ``angle``
    degrees, as small and soft as the detector's crops of a generated scene."""
    held = cv2.copyMakeBorder(
        render_plate(text, width=520), 24, 24, 30, 30, cv2.BORDER_CONSTANT, value=(35, 35, 35)
    )
    if angle:
        h, w = held.shape[:2]
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        held = cv2.warpAffine(held, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
    scale = width / held.shape[1]
    small = cv2.resize(held, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(small, (0, 0), blur)


def emblem_plate(district: str, number: str) -> np.ndarray:
    """An EU-style plate: small country letters at the left and a dark crest, 0.6 of
    the character height, between district and number (as on Slovak plates)."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    (w1, h), _ = cv2.getTextSize(district, font, 1.6, 4)
    (w2, _), _ = cv2.getTextSize(number, font, 1.6, 4)
    img = np.full((h + 30, w1 + w2 + 110, 3), 240, np.uint8)
    base = h + 15
    cv2.putText(img, "SK", (6, base), font, 0.5, (20, 20, 20), 1, cv2.LINE_AA)
    cv2.putText(img, district, (40, base), font, 1.6, (20, 20, 20), 4, cv2.LINE_AA)
    cx, cy = 40 + w1 + 25, base - h // 2
    crest = ((cx - 9, cy - int(0.3 * h)), (cx + 9, cy + int(0.3 * h)))
    cv2.rectangle(img, *crest, (120, 40, 20), -1)
    cv2.putText(img, number, (40 + w1 + 50, base), font, 1.6, (20, 20, 20), 4, cv2.LINE_AA)
    cv2.rectangle(img, (1, 1), (img.shape[1] - 2, img.shape[0] - 2), (20, 20, 20), 2)
    return img


def located(crop: np.ndarray) -> g2.TextLine | None:
    return g2.find_text_line(g2.stretch_contrast(g2.to_grey(crop, "red")))


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    if not PTH.is_file():
        pytest.skip(f"{PTH} absent (run `lpr-edge models fetch` to get the weights)")
    d = tmp_path_factory.mktemp("easyocr")
    convert_english_g2(PTH, d / g2.ONNX_NAME)
    return d


@pytest.fixture(scope="session")
def engine(model_dir):
    with EasyOCRRecognizer(model_dir / g2.ONNX_NAME, threads=1) as eng:
        yield eng


# ---------------------------------------------------------------- reading the .pth


@needs_weights
def test_state_dict_reads_without_torch():
    sd = load_state_dict(PTH)
    assert sd["module.Prediction.weight"].shape == (len(g2.CHARACTERS) + 1, 256)
    assert sd["module.FeatureExtraction.ConvNet.0.weight"].shape == (32, 1, 3, 3)
    assert sd["module.FeatureExtraction.ConvNet.12.num_batches_tracked"].dtype == np.int64
    # The LSTM's four matrices share one storage at different offsets.
    ih = sd["module.SequenceModeling.0.rnn.weight_ih_l0"]
    hh = sd["module.SequenceModeling.0.rnn.weight_hh_l0"]
    assert ih.shape == hh.shape == (1024, 256)
    assert not np.array_equal(ih, hh)
    assert all(np.isfinite(v).all() for v in sd.values())


def test_unpickler_refuses_foreign_globals(tmp_path):
    evil = tmp_path / "evil.pth"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"w": os.system}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_state_dict(evil)


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "bad.pth"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("readme.txt", "hello")
    bad.write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match="not a zip-format"):
        load_state_dict(bad)


# ---------------------------------------------------------------- the converted model


def test_converted_model_shape_and_metadata(model_dir):
    import onnxruntime as ort

    path = model_dir / g2.ONNX_NAME
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["blank"] == "0"
    assert "charset" in meta

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n, w in ((1, 64), (3, 256)):
        x = np.random.default_rng(0).uniform(-1, 1, (n, 1, g2.HEIGHT, w)).astype(np.float32)
        (probs,) = sess.run(["probs"], {"image": x})
        assert probs.shape == (n, w // 4 - 1, len(g2.CHARACTERS) + 1)
        np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-4)


@needs_weights
def test_conversion_matches_the_manifest(model_dir):
    from edge.recognition.models import load_manifest, sha256_of

    spec = load_manifest(PTH.parent)["easyocr-english-g2-onnx"]
    assert sha256_of(model_dir / g2.ONNX_NAME) == spec.sha256


@needs_weights
def test_conversion_is_repeatable(model_dir, tmp_path):
    again = tmp_path / "again.onnx"
    convert_english_g2(PTH, again)
    assert again.read_bytes() == (model_dir / g2.ONNX_NAME).read_bytes()
    assert not list(tmp_path.glob("*.part"))


def test_reads_synthetic_plate(engine):
    (res,) = engine.read([plate("AB 1234")])
    assert isinstance(res, OcrResult)
    assert res.text == "AB1234"
    assert len(res.chars) == len(res.text)
    assert res.confidence > 0.5
    assert all(0.0 <= p <= 1.0 for p in res.char_confidences)
    assert res.candidates[0].text == res.text
    # Alternatives are other characters, most likely first.
    for choice in res.chars:
        assert choice.probs == tuple(sorted(choice.probs, reverse=True))
        assert len(set(choice.chars)) == len(choice.chars)


def test_all_classes_keep_the_space(model_dir):
    eng = EasyOCRRecognizer(
        model_dir / g2.ONNX_NAME, threads=1, allowed=None, preprocess=g2.Preprocess.easyocr()
    )
    (res,) = eng.read([plate("AB 1234")])
    assert res.text == "AB 1234"


def test_grey_and_framed_crops(engine):
    grey = cv2.cvtColor(plate("XY 9876"), cv2.COLOR_BGR2GRAY)
    framed = plate("XY 9876", border=6)
    texts = [r.text for r in engine.read([grey, framed])]
    assert texts == ["XY9876", "XY9876"]


@pytest.mark.parametrize("text", ["VA5219", "RG1485", "BF38", "H651", "KT88"])
def test_plate_in_holder_reads_without_edge_junk(engine, text):
    # Cropped whole, the holder and the plate's inset border were read as a
    # leading L or C and pushed characters out (LVA5219, LR61485, CA651).
    (res,) = engine.read([held_plate(text)])
    assert res.text == text


@pytest.mark.parametrize("angle", [-4.0, 4.0])
def test_tilted_plate_reads(engine, angle):
    (res,) = engine.read([held_plate("XY9876", width=170, angle=angle)])
    assert res.text == "XY9876"


def test_batch_equals_single(engine):
    crops = [plate("AB 1234"), plate("K 77", 1.2, 3), plate("XY 9876"), plate("M 5 XSX")]
    batched = engine.read(crops)
    single = [engine.read([c])[0] for c in crops]
    assert [r.text for r in batched] == [r.text for r in single]
    for a, b in zip(batched, single, strict=True):
        np.testing.assert_allclose(a.char_confidences, b.char_confidences, atol=1e-5)
    assert engine.read([]) == []


# ---------------------------------------------------------------- preprocessing


def test_trim_frame_and_band():
    img = plate("AB 1234", border=8)
    trimmed = g2.trim_frame(img)
    assert trimmed.shape[0] <= img.shape[0] - 12 and trimmed.shape[1] <= img.shape[1] - 12

    banded = plate("AB 1234")
    banded[:, :20] = (200, 60, 0)  # BGR blue
    cut = g2.trim_blue_band(banded)
    assert cut.shape[1] == banded.shape[1] - 20
    blue_plate = np.full_like(banded, (200, 60, 0))
    assert g2.trim_blue_band(blue_plate).shape == blue_plate.shape


@pytest.mark.parametrize("text", ["KT88", "R5"])
def test_text_line_found_where_characters_blur_into_the_frame(text):
    # At Otsu's level these characters are one blob with the border line above or
    # below them; only a darker binarisation level separates them.
    crop = held_plate(text, blur=1.2)
    line = located(crop)
    assert line is not None and line.dark
    assert len(line.boxes) == len(text)
    w = crop.shape[1]
    assert all(0.1 * w < x and x + bw < 0.9 * w for x, _, bw, _ in line.boxes)


def test_text_line_leaves_out_crest_and_country_letters():
    line = located(emblem_plate("RK", "828AG"))
    assert line is not None
    assert len(line.boxes) == 7
    assert line.boxes[0][0] > 35  # right of "SK"
    heights = [b[3] for b in line.boxes]
    assert max(heights) - min(heights) <= 0.1 * line.char_height


def test_text_line_leaves_out_a_thin_frame_edge_as_tall_as_the_characters():
    crop = plate("AB 1234")
    x, y, _, h = located(crop).boxes[0]
    cv2.line(crop, (int(x) - 8, int(y)), (int(x) - 8, int(y + h)), (20, 20, 20), 1)
    line = located(crop)
    assert len(line.boxes) == 6
    assert line.boxes[0][0] > x - 4


def test_text_line_light_characters_on_dark_plate():
    line = located(255 - plate("AB 1234"))
    assert line is not None and not line.dark
    assert len(line.boxes) == 6


def test_no_text_line_on_an_empty_crop():
    blank = np.full((30, 120, 3), 200, np.uint8)
    assert located(blank) is None
    x = g2.Preprocess()(blank)
    assert x.shape == (1, g2.HEIGHT, 4 * g2.HEIGHT)


def test_cut_to_line_levels_a_slanted_line():
    crop = held_plate("XY9876", width=170, angle=5.0)
    grey = g2.to_grey(crop, "red")
    line = located(crop)
    assert line is not None
    # Turned counter-clockwise, the line rises to the right (y falls).
    assert line.slope == pytest.approx(-math.tan(math.radians(5.0)), abs=0.02)
    cut, moved = g2.cut_to_line(grey, line)
    assert moved is not None
    tops = [b[1] for b in moved.boxes]
    assert max(tops) - min(tops) < 0.15 * moved.char_height
    assert cut.shape[0] <= 1.2 * moved.char_height
    unlevelled, _ = g2.cut_to_line(grey, line, level=False)
    assert unlevelled.shape[0] > cut.shape[0] + 0.3 * moved.char_height


@pytest.mark.parametrize("dark", [True, False])
def test_thin_strokes_thins_only_bold_strokes(dark):
    img = np.full((64, 64), 230, np.uint8)
    img[:, 22:42] = 20
    if not dark:
        img = 255 - img
    bold = g2.TextLine(((22.0, 0.0, 20.0, 64.0),), dark, 20 / 64, 0.0)
    thinned = g2.thin_strokes(img, bold, 0.16, 1.0)
    ink = (thinned < 128) if dark else (thinned > 128)
    assert abs(int(ink[32].sum()) - round(0.16 * 64)) <= 2
    light = g2.TextLine(((22.0, 0.0, 20.0, 64.0),), dark, 0.12, 0.0)
    assert np.array_equal(g2.thin_strokes(img, light, 0.16, 1.0), img)


@pytest.mark.parametrize(("fold_bars", "text"), [(True, "AI"), (False, "A")])
def test_decoder_reads_a_slash_as_I(fold_bars, text):
    charset = ["", *g2.CHARACTERS]
    probs = np.full((4, len(charset)), 1e-4, np.float32)
    for t, ch in enumerate(["A", "", "/", ""]):
        probs[t, charset.index(ch)] = 1.0
    probs /= probs.sum(axis=1, keepdims=True)
    res = g2.CharsetDecoder(charset, fold_bars=fold_bars)(probs)
    assert res.text == text


def test_preprocess_pads_to_squares():
    x = g2.Preprocess()(plate("AB 1234"))
    assert x.shape[0] == 1 and x.shape[1] == g2.HEIGHT and x.shape[2] % g2.HEIGHT == 0
    assert x.dtype == np.float32 and x.min() >= -1.0 and x.max() <= 1.0
    with pytest.raises(ValueError):
        g2.Preprocess()(np.zeros((0, 10, 3), np.uint8))


# ---------------------------------------------------------------- engine options


def test_bad_backend_and_missing_model(tmp_path):
    with pytest.raises(ValueError, match="backend"):
        EasyOCRRecognizer(tmp_path, backend="tensorflow")
    with pytest.raises(Exception, match="english_g2.onnx"):
        EasyOCRRecognizer(tmp_path / "english_g2.onnx")


@pytest.mark.skipif(
    importlib.util.find_spec("easyocr") is not None, reason="easyocr is installed here"
)
def test_torch_backend_without_easyocr_says_how_to_get_it(tmp_path):
    with pytest.raises(ImportError, match=r"lpr-edge\[easyocr\]"):
        EasyOCRRecognizer(tmp_path / g2.PTH_NAME, backend="torch")
