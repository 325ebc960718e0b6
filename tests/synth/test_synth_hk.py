from __future__ import annotations

import re

import numpy as np
import pytest

from edge.synth import hkplates as synth_hk
from edge.synth.hkplates import (
    TYPEFACES,
    FontMissingError,
    HkPlate,
    hk_rows,
    random_crossboundary_mark,
    random_personalised_mark,
    random_standard_mark,
    render_hk_plate,
    render_hk_scene,
)


def _inner(plate: np.ndarray) -> np.ndarray:
    """The plate inside its border."""
    h, w = plate.shape[:2]
    return plate[round(h * 0.08) : h - round(h * 0.08), round(w * 0.06) : -round(w * 0.06)]


def _ink_bands(plate: np.ndarray, dark: bool = True) -> list[tuple[int, int]]:
    """Runs of rows of :func:`_inner` holding character ink."""
    inner = _inner(plate)
    # Black ink is dark in every channel; yellow is not (its blue is near 0).
    grey = inner.max(axis=2) if dark else inner.min(axis=2)
    ink = (grey < 90) if dark else (grey > 170)
    rows = ink.mean(axis=1) > 0.02
    bands, start = [], None
    for y, on in enumerate([*rows, False]):
        if on and start is None:
            start = y
        elif not on and start is not None:
            bands.append((start, y))
            start = None
    return bands


def _background(plate: np.ndarray) -> np.ndarray:
    """The commonest colour of the plate, rounded to 16 levels: its background."""
    q = (plate.reshape(-1, 3) // 16).astype(np.int32)
    keys, counts = np.unique(q[:, 0] * 256 + q[:, 1] * 16 + q[:, 2], return_counts=True)
    k = keys[counts.argmax()]
    return np.array([k // 256, (k // 16) % 16, k % 16]) * 16 + 8


def test_same_seed_same_pixels_and_another_seed_differs():
    kwargs = dict(rows=2, style="rear", dirt=0.5, screws=True, lighting=0.5, rotation=3)
    a = render_hk_plate("AB1234", rng=np.random.default_rng(5), **kwargs)
    b = render_hk_plate("AB1234", rng=np.random.default_rng(5), **kwargs)
    c = render_hk_plate("AB1234", rng=np.random.default_rng(6), **kwargs)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    plates = ["K88", HkPlate("UV88", rows=2, crossboundary="粤Z1234港")]
    img_a, truths_a = render_hk_scene(plates, rng=np.random.default_rng(3), wear=1, night=True)
    img_b, truths_b = render_hk_scene(plates, rng=np.random.default_rng(3), wear=1, night=True)
    assert np.array_equal(img_a, img_b) and truths_a == truths_b


@pytest.mark.parametrize("seed", [None, 0, 1, 2])
@pytest.mark.parametrize("typeface", sorted(TYPEFACES))
def test_sizes_and_colours_per_style(seed, typeface):
    rng = None if seed is None else np.random.default_rng(seed)
    front = render_hk_plate("AB1234", typeface=typeface, rng=rng, width=520)
    rear = render_hk_plate("AB1234", style="rear", typeface=typeface, rng=rng, width=520)
    two = render_hk_plate("AB1234", rows=2, style="rear", typeface=typeface, rng=rng, width=330)
    cross = render_hk_plate(
        "粤Z1234港", style="crossboundary", typeface=typeface, rng=rng, width=440
    )
    assert front.shape == rear.shape == (110, 520, 3) and front.dtype == np.uint8
    assert two.shape == (165, 330, 3)
    assert cross.shape == (140, 440, 3)
    assert (_background(front) > 210).all(), "front plates are white"
    for plate in (rear, two):
        b, g, r = _background(plate)
        assert r > 210 and 160 < g < 235 and b < 70, "rear plates are yellow"
    assert (_background(cross) < 50).all(), "cross-boundary plates are black"
    # Black ink on HK plates, white ink on cross-boundary ones.
    assert (front.max(axis=2) < 60).mean() > 0.1
    assert (cross.min(axis=2) > 200).mean() > 0.1


def test_two_rows_are_two_bands_of_equal_height_and_one_row_is_one():
    for typeface in TYPEFACES:
        two = render_hk_plate("AB1234", rows=2, style="rear", typeface=typeface)
        bands = _ink_bands(two)
        assert len(bands) == 2, bands
        (a0, a1), (b0, b1) = bands
        assert abs((a1 - a0) - (b1 - b0)) <= 2, bands
        assert (a1 - a0) > 0.3 * two.shape[0]
        # Letters above digits: the top row is narrower than "1234" below it.
        top, bottom = (_inner(two)[y0:y1].max(axis=2) < 90 for y0, y1 in bands)
        assert np.ptp(np.nonzero(top.any(axis=0))[0]) < np.ptp(np.nonzero(bottom.any(axis=0))[0])
        one = render_hk_plate("AB1234", typeface=typeface)
        [(y0, y1)] = _ink_bands(one)
        assert 0.6 < (y1 - y0) / one.shape[0] < 0.8
    cross = render_hk_plate("粤Z1234港", style="crossboundary")
    assert len(_ink_bands(cross, dark=False)) == 1


def test_rows_and_gap_of_marks():
    assert hk_rows("AB1234", 1) == ["AB 1234"]
    assert hk_rows("ab1234", 2) == ["AB", "1234"]
    assert hk_rows("L0VEBB", 1) == ["L0VEBB"]
    assert hk_rows("K1N W0LLY", 2) == ["K1N", "W0LLY"]
    assert hk_rows("K1NW0LLY", 2) == ["K1NW", "0LLY"]
    rng = np.random.default_rng(0)
    marks = [random_personalised_mark(rng) for _ in range(200)]
    assert all(2 <= len(m) <= 8 and not set(m) & set("IOQ") for m in marks)
    assert re.fullmatch(r"粤Z[A-HJ-NP-Z0-9]{4}[港澳]", random_crossboundary_mark(rng))
    standard = [random_standard_mark(rng) for _ in range(400)]
    assert all(re.fullmatch(r"[A-HJ-NPR-Z]{2}[1-9][0-9]{0,3}", m) for m in standard)
    # Every length of number comes up, not only four digits.
    assert {len(m) for m in standard} == {3, 4, 5, 6}
    with pytest.raises(ValueError):
        render_hk_plate("ABCDEFGHJ")
    with pytest.raises(ValueError):
        render_hk_plate("AB1", style="green")
    with pytest.raises(ValueError):
        render_hk_plate("粤Z1234港", style="crossboundary", rows=2)


def test_each_effect_changes_the_plate_but_not_its_size():
    clean = render_hk_plate("AB1234", style="rear", rng=np.random.default_rng(1))
    effects = dict(
        screws=True, frame=True, dirt=0.8, lighting=0.8, blur=1.5, jpeg=30,
        perspective=0.1, rotation=5.0, night=True,
    )  # fmt: skip
    for name, value in effects.items():
        out = render_hk_plate("AB1234", style="rear", rng=np.random.default_rng(1), **{name: value})
        assert out.shape == clean.shape and out.dtype == np.uint8
        assert np.abs(out.astype(int) - clean).mean() > 0.5, name
    night = render_hk_plate("AB1234", style="rear", rng=np.random.default_rng(1), night=True)
    assert night.mean() < 0.7 * clean.mean()


@pytest.mark.parametrize("seed", range(4))
def test_scene_truths_are_inside_and_stacked(seed):
    rng = np.random.default_rng(seed)
    plates = [
        HkPlate("AB1234", style="front"),
        HkPlate("K1N W0LLY", rows=2, style="rear", typeface="sans"),
        HkPlate("UV88", style="rear", crossboundary="粤Z1234港"),
    ]
    image, truths = render_hk_scene(plates, rng=rng, wear=0.5, night=seed == 3, jpeg=70)
    assert image.shape == (720, 1280, 3) and image.dtype == np.uint8
    assert [(t.text, t.kind, t.rows) for t in truths] == [
        ("AB1234", "hk", 1),
        ("K1NW0LLY", "hk", 2),
        ("UV88", "hk", 1),
        ("粤Z1234港", "crossboundary", 1),
    ]
    for t in truths:
        x1, y1, x2, y2 = t.box
        assert 0 <= x1 < x2 <= 1280 and 0 <= y1 < y2 <= 720
    one, two = truths[0].box, truths[1].box
    assert (one[2] - one[0]) / (one[3] - one[1]) > 3.5
    assert 1.4 < (two[2] - two[0]) / (two[3] - two[1]) < 2.4
    # The cross-boundary plate hangs directly under its HK plate, across the same span.
    hk, cb = truths[2].box, truths[3].box
    assert abs(cb[1] - hk[3]) < 0.35 * (hk[3] - hk[1])
    assert cb[0] < (hk[0] + hk[2]) / 2 < cb[2]
    # A plain string is a one-row plate of either colour.
    _, [truth] = render_hk_scene(["K88"], rng=rng)
    assert (truth.text, truth.kind, truth.rows) == ("K88", "hk", 1)


def test_missing_font_names_its_debian_package(monkeypatch, tmp_path):
    monkeypatch.setattr(synth_hk, "FONT_DIRS", (tmp_path,))
    synth_hk._font.cache_clear()
    synth_hk._glyph.cache_clear()
    try:
        with pytest.raises(FontMissingError, match="fonts-dejavu-extra"):
            render_hk_plate("AB1234", typeface="condensed")
        with pytest.raises(FontMissingError, match="fonts-dejavu-core"):
            render_hk_plate("AB1234", typeface="mono")
        with pytest.raises(FontMissingError, match="fonts-wqy-zenhei"):
            synth_hk.font_path("wqy-zenhei")
    finally:
        synth_hk._font.cache_clear()
        synth_hk._glyph.cache_clear()


def test_recogniser_reads_clean_one_and_two_row_plates():
    from edge.config import load_config
    from edge.recognition.recognize import open_recognizer
    from tests.conftest import model_path

    model_path("platedet.onnx")
    rec = open_recognizer(load_config(None, environ={}), plate_format="hk")
    try:
        for text, rows, width in (("AB1234", 1, 360), ("PZ4321", 2, 240), ("L0VEBB", 1, 360)):
            plate = render_hk_plate(text, rows=rows, style="rear", width=width)
            # A little of the car around the plate, as a detector's box would leave.
            image = np.full((plate.shape[0] + 40, plate.shape[1] + 40, 3), 50, np.uint8)
            image[20:-20, 20:-20] = plate
            box = np.array([[20, 20, 20 + plate.shape[1], 20 + plate.shape[0]]], np.float32)
            [read] = rec.read_boxes(image, box)
            assert read is not None and read.text == text, (text, read)
    finally:
        rec.close()
