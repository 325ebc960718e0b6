"""The PP-OCR engine (v4 and v6 recognisers) on synthetic plates drawn with OpenCV."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.recognition.crop import plate_lines
from edge.recognition.ocr.base import BaseOCR
from edge.recognition.ocr.ppocr import PLATE_ALPHABET, PPOCRRecognizer, charset_from_metadata
from edge.recognition.plateformat import apply_format
from edge.types import OcrResult
from tests.conftest import model_path

MODEL = "PP-OCRv6_rec_small.onnx"
MODELS = ["ch_PP-OCRv4_rec_infer.onnx", MODEL]


def plate(text: str, scale: float = 2.0, thickness: int = 5, pad: int = 14) -> np.ndarray:
    """Black bold text on white, as a BGR crop."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    (w, h), base = cv2.getTextSize(text, font, scale, thickness)
    img = np.full((h + base + 2 * pad, w + 2 * pad, 3), 255, np.uint8)
    cv2.putText(img, text, (pad, h + pad), font, scale, (0, 0, 0), thickness, cv2.LINE_AA)
    return img


@pytest.fixture(scope="module", params=MODELS)
def engine(request):
    with PPOCRRecognizer(model_path(request.param), threads=1) as eng:
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
    (line,) = plate_lines(scene, box)
    (result,) = engine.read([line])
    assert result.text == "AB1234"

    two = np.full((180, 260, 3), 255, np.uint8)
    cv2.putText(two, "AB", (70, 75), cv2.FONT_HERSHEY_SIMPLEX, 2.4, (0, 0, 0), 6, cv2.LINE_AA)
    cv2.putText(two, "1234", (25, 160), cv2.FONT_HERSHEY_SIMPLEX, 2.4, (0, 0, 0), 6, cv2.LINE_AA)
    (flat,) = engine.read([two])
    _, two_rows = plate_lines(two, (0, 0, 260, 180))
    assert flat.text != "AB1234"  # the line recogniser alone cannot read two rows
    assert engine.read([two_rows])[0].text == "AB1234"


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


def test_folded_model_computes_the_same_probabilities():
    # PP-OCRv4's backbone has the affines to fold (v6 has none: it opens as it is).
    v4 = model_path(MODELS[0])
    engine = PPOCRRecognizer(v4, threads=1)
    with engine, PPOCRRecognizer(v4, threads=1, simplify=False) as plain:
        crops = [plate("AB123CD"), plate("7"), plate("KL-4410")]
        for folded_p, plain_p in zip(
            engine.probabilities(crops), plain.probabilities(crops), strict=True
        ):
            np.testing.assert_allclose(folded_p, plain_p, atol=1e-4)
        assert [r.text for r in engine.read(crops)] == [r.text for r in plain.read(crops)]


def test_fold_rewrites_the_model_and_keeps_padded_convs_exact():
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from edge.recognition.ocr.ppocr import fold_affine_ops

    rng = np.random.default_rng(1)

    def const(name, value):
        return helper.make_node(
            "Constant", [], [name], value=numpy_helper.from_array(np.asarray(value, np.float32))
        )

    nodes = [
        const("w1", rng.normal(size=(4, 3, 3, 3))),
        const("b1", rng.normal(size=4)),
        const("a", [1.7]),
        const("b", [-0.3]),
        const("three", [3.0]),
        const("zero", 0.0),
        const("six", 6.0),
        const("six1", [6.0]),
        const("c", [0.8]),
        const("d", [0.25]),
        const("w2", rng.normal(size=(4, 4, 1, 1))),
        const("w3", rng.normal(size=(2, 4, 3, 3))),
        helper.make_node("Conv", ["x", "w1", "b1"], ["y1"], pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["a", "y1"], ["m1"]),
        helper.make_node("Add", ["m1", "b"], ["s1"]),
        helper.make_node("Add", ["s1", "three"], ["h0"]),
        helper.make_node("Clip", ["h0", "zero", "six"], ["h1"]),
        helper.make_node("Mul", ["s1", "h1"], ["h2"]),
        helper.make_node("Div", ["h2", "six1"], ["hs"]),
        helper.make_node("Mul", ["c", "hs"], ["m2"]),
        helper.make_node("Add", ["m2", "d"], ["s2"]),
        helper.make_node("Conv", ["s2", "w2"], ["y2"]),  # 1x1, no padding: folded
        helper.make_node("Mul", ["c", "y2"], ["m3"]),
        helper.make_node("Add", ["m3", "d"], ["s3"]),
        helper.make_node("Add", ["s3", "s3"], ["s4"]),  # not a scalar affine: kept
        helper.make_node("Mul", ["c", "s4"], ["m4"]),
        helper.make_node("Add", ["m4", "d"], ["s5"]),
        helper.make_node("Conv", ["s5", "w3"], ["out"], pads=[1, 1, 1, 1]),  # padded: kept
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 12])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 2, 8, 12])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
    model.ir_version = 8
    original = model.SerializeToString()
    rewrites = fold_affine_ops(model)
    onnx.checker.check_model(model)
    ops = [n.op_type for n in model.graph.node if n.op_type != "Constant"]
    # y1 affine, hard-swish, s2 affine into conv 2, y2 affine into conv 2's output.
    assert rewrites == 4
    assert ops == ["Conv", "HardSigmoid", "Mul", "Conv", "Add", "Mul", "Add", "Conv"]
    x = rng.normal(size=(1, 3, 8, 12)).astype(np.float32)
    run = [
        ort.InferenceSession(m, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        for m in (original, model.SerializeToString())
    ]
    np.testing.assert_allclose(run[1], run[0], rtol=1e-5, atol=1e-5)
