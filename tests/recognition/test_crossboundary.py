"""Cross-boundary plates: the core's shape, the Chinese marks, the plate above."""

from __future__ import annotations

import pytest

from edge import crossboundary as cb


@pytest.mark.parametrize(
    ("text", "shaped"),
    [("Z1234", True), ("ZA12B", True), ("Z123", False), ("AZ1234", False), ("Z12345", False)],
)
def test_the_core_shape(text, shaped):
    assert cb.has_core_shape(text) is shaped


@pytest.mark.parametrize(
    ("read", "expected"),
    [
        ("粤Z1234港", "粤Z1234港"),
        ("粤ZA123澳", "粤ZA123澳"),
        ("Z1234港", "Z1234港"),  # the province missed: left out, not guessed
        ("1粤Z1234港7", "粤Z1234港"),  # bolts either side
        ("粤Z1234", "粤Z1234"),
        ("Z1234", None),  # no mark: an ordinary plate of that shape
        ("粤Z1284港", None),  # another core than the plate's reading
    ],
)
def test_marked_text(read, expected):
    assert cb.marked_text("Z1234" if "ZA" not in read else "ZA123", read) == expected


def test_the_plate_above_is_the_nearest_stacked_one():
    below = (100.0, 200.0, 300.0, 250.0)
    hk = (110.0, 140.0, 290.0, 190.0)  # directly above, 10 px gap
    beside = (400.0, 140.0, 600.0, 190.0)  # another car
    far_above = (100.0, 20.0, 300.0, 70.0)  # 130 px up: more than 1.5 plate heights
    under = (100.0, 270.0, 300.0, 320.0)
    assert cb.stacked_above(below, [(0, beside), (1, hk), (2, far_above), (3, under)]) == 1
    assert cb.stacked_above(below, [(0, beside), (2, far_above), (3, under)]) is None
    # A detector box that takes in the top of the lower plate still counts as above.
    overlapping = (110.0, 150.0, 290.0, 205.0)
    assert cb.stacked_above(below, [(7, overlapping)]) == 7


@pytest.fixture(scope="module")
def recognizer():
    from edge.config import load_config
    from edge.recognition.recognize import open_recognizer
    from tests.conftest import model_path

    model_path("PP-OCRv6_rec_small.onnx")
    with open_recognizer(load_config(None, environ={}), plate_format="hk") as rec:
        yield rec


@pytest.mark.parametrize(("hk_rows", "mark"), [(1, "粤Z1234港"), (2, "粤ZA123澳")])
def test_a_cross_boundary_plate_is_read_with_its_marks_and_linked(recognizer, hk_rows, mark):
    """A car with its Hong Kong plate and, under it, its Guangdong plate, read at the
    plates' boxes: the Guangdong plate reads as its core, is a cross-boundary plate
    with its Chinese characters, and names the Hong Kong plate as its vehicle's."""
    import numpy as np

    from edge.synth.hkplates import HkPlate, render_hk_scene
    from edge.types import Detections

    rng = np.random.default_rng(5)
    car = HkPlate("AB1234", rows=hk_rows, style="rear", crossboundary=mark)
    image, truths = render_hk_scene([car], rng=rng, plate_frac=(0.3, 0.3), perspective=False)
    boxes = np.array([t.box for t in truths], np.float32)
    plates = recognizer.read(image, Detections(boxes, np.array([0.9, 0.8], np.float32)))
    by_text = {p.text: p for p in plates}
    core = mark[1:-1]
    assert set(by_text) == {"AB1234", core}
    assert by_text["AB1234"].kind == "plate" and by_text["AB1234"].linked_to is None
    cross = by_text[core]
    assert cross.kind == "crossboundary" and cross.marked_text == mark
    assert plates[cross.linked_to].text == "AB1234"


def test_text_proposals_find_plates_the_plate_detector_does_not():
    """Plates on a flat background, no car around them: the plate detector draws no
    box, the text detector boxes both, and both are read, the lower one as the
    cross-boundary plate of the car whose plate is above it."""
    import dataclasses

    import numpy as np

    from edge.config import load_config
    from edge.recognition.recognize import open_recognizer
    from edge.synth.hkplates import render_hk_plate
    from tests.conftest import model_path

    model_path("PP-OCRv6_det_small.onnx")
    scene = np.full((600, 800, 3), 100, np.uint8)
    hk = render_hk_plate("AB1234", style="rear", width=400)
    cross = render_hk_plate("粤ZA123港", style="crossboundary", width=340)
    scene[150 : 150 + hk.shape[0], 200 : 200 + hk.shape[1]] = hk
    top = 160 + hk.shape[0]
    scene[top : top + cross.shape[0], 230 : 230 + cross.shape[1]] = cross
    config = load_config(None, environ={})
    with open_recognizer(config) as plain:
        assert plain.recognize(scene).plates == ()
    with_text = dataclasses.replace(
        config, recognition=dataclasses.replace(config.recognition, text_proposals=True)
    )
    with open_recognizer(with_text) as reader:
        plates = reader.recognize(scene).plates
    by_text = {p.text: p for p in plates}
    assert set(by_text) == {"AB1234", "ZA123"}
    assert by_text["ZA123"].marked_text == "粤ZA123港"
    assert plates[by_text["ZA123"].linked_to].text == "AB1234"


def test_text_proposals_read_only_where_the_plate_detector_sees_a_plate():
    """Text with no plate around it (painted on a wall, a sign, a sticker) is read by
    the recogniser like a personalised mark, but text boxes are only where the plate
    detector looks again: with no plate box drawn there, nothing is read; and a
    two-row plate's rows, which the text detector boxes apart, read as the plate."""
    import dataclasses

    import cv2
    import numpy as np

    from edge.config import load_config
    from edge.recognition.recognize import open_recognizer
    from edge.synth.hkplates import render_hk_plate

    scene = np.full((600, 800, 3), 100, np.uint8)
    plate = render_hk_plate("KT8821", rows=2, style="rear", width=260)
    scene[100 : 100 + plate.shape[0], 100 : 100 + plate.shape[1]] = plate
    cv2.putText(scene, "HELL0", (420, 470), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (20, 20, 20), 4)
    config = load_config(None, environ={})
    config = dataclasses.replace(
        config, recognition=dataclasses.replace(config.recognition, text_proposals=True)
    )
    with open_recognizer(config) as reader:
        assert reader.proposals is not None
        text = reader.proposals.detect(scene)
        read_alone = {t.text for t in reader.read_boxes(scene, text.xyxy) if t is not None}
        assert {"HELL0", "KT", "8821"} <= read_alone, "the text boxes do read as marks"
        result = reader.recognize(scene)
    assert [p.text for p in result.plates] == ["KT8821"]
    assert len(result.detections) == 1


@pytest.mark.parametrize(("hk", "rows"), [("AB1234", 1), ("KT88", 2), ("U8", 1)])
def test_one_box_over_a_plate_and_the_cross_boundary_plate_under_it_reads_nothing(
    recognizer, hk, rows
):
    """Read as one, such a box is a two-row plate of the two (U8Z1997, 234Z1997): a
    wrong read. The box gives none; the plates boxed apart read as themselves."""
    import numpy as np

    from edge.synth.hkplates import HkPlate, render_hk_scene

    car = HkPlate(hk, rows=rows, style="rear", crossboundary="粤Z1997港")
    rng = np.random.default_rng(5)
    image, (plate, cross) = render_hk_scene(
        [car], rng=rng, plate_frac=(0.25, 0.25), perspective=False
    )
    both = (
        min(plate.box[0], cross.box[0]),
        plate.box[1],
        max(plate.box[2], cross.box[2]),
        cross.box[3],
    )
    boxes = np.array([both, plate.box, cross.box], np.float32)
    pair, alone, under = recognizer.read_boxes(image, boxes)
    assert pair is None
    assert alone is not None and alone.text == hk
    assert under is not None and under.text == "Z1997" and under.marked_text == "粤Z1997港"
    assert cb.core_after_text("U8Z1997") == "Z1997" and cb.core_after_text("Z1997") is None
