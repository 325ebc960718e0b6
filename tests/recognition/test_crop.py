"""From a detector box to the OCR input: margins, EU band, grey, two rows, tilt."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.recognition import crop as C

FONT = cv2.FONT_HERSHEY_SIMPLEX
BLUE = (170, 60, 10)  # BGR of an EU band


def plate(text: str = "AB 1234", size=(400, 90), scale: float = 2.0, band: int = 0) -> np.ndarray:
    """Black text on white, optionally with a blue band of ``band`` pixels on the left."""
    w, h = size
    img = np.full((h, w, 3), 255, np.uint8)
    if band:
        img[:, :band] = BLUE
    (tw, th), _ = cv2.getTextSize(text, FONT, scale, 5)
    x = band + (w - band - tw) // 2
    cv2.putText(img, text, (x, (h + th) // 2), FONT, scale, (0, 0, 0), 5, cv2.LINE_AA)
    return img


def in_scene(crop: np.ndarray, at=(50, 40), size=(640, 240)) -> np.ndarray:
    scene = np.full((size[1], size[0], 3), 90, np.uint8)
    x, y = at
    scene[y : y + crop.shape[0], x : x + crop.shape[1]] = crop
    return scene


def test_expand_box_grows_and_clips():
    assert C.expand_box((10, 10, 110, 30), (100, 200, 3), 0.1, 0.5) == (0, 0, 120, 40)
    assert C.expand_box((150, 80, 210, 120), (100, 200, 3), 0.0, 0.0) == (150, 80, 200, 100)


def test_plain_crop_is_the_box_plus_margins():
    scene = in_scene(plate())
    out = C.crop_plate(
        scene, (50, 40, 450, 130), margin_x=0.05, margin_y=0.1, cut_band=False,
        grey="none", trim=False,
    )  # fmt: skip
    assert out.shape == (108, 440, 3)
    assert np.array_equal(out, scene[31:139, 30:470])


def test_degenerate_box_gives_a_tiny_image_and_bad_grey_is_rejected():
    scene = in_scene(plate())
    assert C.crop_plate(scene, (700, 10, 720, 20)).shape == (1, 1, 3)
    with pytest.raises(ValueError, match="grey"):
        C.crop_plate(scene, (50, 40, 450, 130), grey="sepia")


def test_grey_images_are_accepted():
    scene = cv2.cvtColor(in_scene(plate()), cv2.COLOR_BGR2GRAY)
    out = C.crop_plate(scene, (50, 40, 450, 130))
    assert out.ndim == 3 and out.shape[2] == 3


def test_blue_band_is_measured_and_cut():
    img = plate(band=40)
    width = C.blue_band_width(img)
    assert 40 <= width <= 46
    assert C.blue_band_width(plate()) == 0
    out = C.crop_plate(
        in_scene(img), (50, 40, 450, 130), margin_x=0, margin_y=0, grey="none",
        trim=False,
    )  # fmt: skip
    assert out.shape[1] == 400 - width
    # Nothing blue is left at the left edge.
    assert C.blue_band_width(out) == 0


def test_an_all_blue_plate_has_no_band_to_cut():
    img = np.full((90, 400, 3), BLUE, np.uint8)
    cv2.putText(img, "W 053011", (20, 65), FONT, 2.0, (255, 255, 255), 5, cv2.LINE_AA)
    assert C.blue_band_width(img) == 0


def test_value_grey_fades_coloured_marks_and_keeps_dark_text():
    img = plate()
    cv2.circle(img, (200, 45), 12, (30, 30, 220), -1)  # a red emblem between characters
    v = C.value_grey(img)
    luma = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    assert v[45, 200, 0] > 200 > luma[45, 200]
    ys, xs = np.nonzero(luma < 30)
    assert v[ys, xs].max() < 60


def test_auto_grey_falls_back_to_luma_when_the_dark_part_is_coloured():
    assert not C.dark_is_coloured(plate())
    blue_plate = np.full((90, 400, 3), BLUE, np.uint8)
    cv2.putText(blue_plate, "W 053011", (20, 65), FONT, 2.0, (255, 255, 255), 5, cv2.LINE_AA)
    assert C.dark_is_coloured(blue_plate)
    out = C.crop_plate(blue_plate, (0, 0, 400, 90), margin_x=0, margin_y=0)
    luma = cv2.cvtColor(blue_plate, cv2.COLOR_BGR2GRAY)
    assert np.array_equal(out[..., 0], luma)


def two_row_plate() -> np.ndarray:
    img = np.full((180, 260, 3), 255, np.uint8)
    cv2.putText(img, "AB", (70, 75), FONT, 2.4, (0, 0, 0), 6, cv2.LINE_AA)
    cv2.putText(img, "1234", (25, 160), FONT, 2.4, (0, 0, 0), 6, cv2.LINE_AA)
    return img


def test_a_squarish_crop_is_also_read_as_two_rows_side_by_side():
    img = two_row_plate()
    one_row, two_rows = C.plate_lines(img, (0, 0, 260, 180), margin_x=0, margin_y=0)
    assert one_row.shape == (180, 540 + 270, 3)  # widened to 3:1, then the blank tail
    h, w = two_rows.shape[:2]
    assert h == 90 and w > 3 * h, "rows of half the height, one beside the other"
    # Ink in both halves of the line: AB on the left, 1234 on the right.
    ink = (two_rows[:, :, 0] < 128).any(axis=0)
    assert ink[: w // 3].any() and ink[w // 2 :].any()


def test_a_long_crop_is_read_as_one_row_only():
    (line,) = C.plate_lines(plate(), (0, 0, 400, 90), margin_x=0, margin_y=0, trim=False)
    assert line.shape == (90, 400, 3)
    assert len(C.plate_lines(np.full((12, 20, 3), 255, np.uint8), (0, 0, 20, 12))) == 1


@pytest.mark.parametrize(("hw", "expected"), [((48, 96), (48, 144)), ((20, 300), (20, 300))])
def test_a_line_gets_three_heights_of_width_at_least(hw, expected):
    """Frames per character: a recogniser gives one output column per sixth of the
    line's height and needs about three per character. A widened line is followed by
    half its width of the recognisers' padding grey."""
    line = np.zeros((*hw, 3), np.uint8)
    out = C.widen(line)
    width = expected[1]
    tail = 0 if width == hw[1] else width // 2
    assert out.shape[:2] == (expected[0], width + tail)
    assert (out[:, :width] == 0).all() and (out[:, width:] == C.PAD_GREY).all()
    assert C.widen(line, min_aspect=4).shape[1] >= max(hw[1], 4 * hw[0])


def test_two_row_line_drops_frame_lines_at_the_rows_ends():
    img = two_row_plate()
    framed = cv2.copyMakeBorder(img, 6, 6, 24, 24, cv2.BORDER_CONSTANT, value=(255, 255, 255))
    cv2.rectangle(framed, (20, 2), (framed.shape[1] - 21, framed.shape[0] - 3), (0, 0, 0), 4)
    line = C.two_row_line(framed)
    plain = C.two_row_line(
        cv2.copyMakeBorder(img, 6, 6, 24, 24, cv2.BORDER_CONSTANT, value=(255, 255, 255))
    )
    # The frame's sides are cut with the rows' blank ends: no wider than without them.
    assert line.shape[1] <= plain.shape[1] + 4


def test_text_line_angle_and_deskew():
    img = cv2.copyMakeBorder(plate(), 40, 40, 20, 20, cv2.BORDER_CONSTANT, value=(255, 255, 255))
    assert abs(C.text_line_angle(img)) < 1.0
    tilted = C.rotate(img, 8.0)
    angle = C.text_line_angle(tilted)
    assert angle == pytest.approx(8.0, abs=2.0)
    level = C.rotate(tilted, -angle)
    assert abs(C.text_line_angle(level)) < 1.5
    assert C.text_line_angle(np.full((40, 200, 3), 255, np.uint8)) is None


def _hk(text: str, width: int) -> np.ndarray:
    from edge.synth.scenes import render_plate

    img = render_plate(text, width=width)
    # The surroundings crop_plate's margins take in: 6% of the width, 8% of the height.
    side, top = round(0.06 * width), max(1, round(0.08 * img.shape[0]))
    return cv2.copyMakeBorder(img, top, top, side, side, cv2.BORDER_CONSTANT, value=(90, 90, 90))


@pytest.mark.parametrize("width", [70, 120, 400])
def test_a_short_registration_is_trimmed_to_its_text(width):
    img = _hk("C4", width)
    h, w = img.shape[:2]
    ink = np.flatnonzero((img[h // 3 : h - h // 3, :, 0] < 60).any(axis=0))
    # The frame lines sit near the ends; the characters are the middle columns.
    middle = ink[(ink > 0.25 * w) & (ink < 0.75 * w)]
    span = C.text_span(img)
    assert span is not None
    x1, x2 = span
    assert x1 < middle.min() and x2 > middle.max(), "every character kept"
    assert x2 - x1 < 0.6 * w, "the blank either side cut"
    out = C.crop_plate(img, (0, 0, w, h), margin_x=0, margin_y=0)
    assert out.shape[1] == x2 - x1
    assert C.crop_plate(img, (0, 0, w, h), margin_x=0, margin_y=0, trim=False).shape[1] == w


@pytest.mark.parametrize("width", [70, 200])
def test_a_plate_its_text_fills_is_not_trimmed(width):
    assert C.text_span(_hk("AB1234", width)) is None


def test_no_text_no_span():
    assert C.text_span(np.full((40, 200, 3), 255, np.uint8)) is None
    assert C.text_span(_hk("", 200)) is None


def _framed(img: np.ndarray, left: int = 40) -> np.ndarray:
    """``img`` in a loose box: dark car body at the left, a chrome frame around it."""
    framed = cv2.copyMakeBorder(img, 10, 10, 10, 10, cv2.BORDER_CONSTANT, value=(200, 200, 200))
    return cv2.copyMakeBorder(framed, 6, 6, left, 6, cv2.BORDER_CONSTANT, value=(40, 40, 40))


def test_plate_region_is_the_light_plate_inside_a_loose_box():
    img = two_row_plate()
    loose = _framed(img)
    x1, y1, x2, y2 = C.plate_region(loose)
    # The plate (and its light frame, same brightness) without the dark body.
    assert x1 >= 40 and y1 >= 6 and x2 <= loose.shape[1] - 6 and y2 <= loose.shape[0] - 6
    assert (x2 - x1) >= img.shape[1] and (y2 - y1) >= img.shape[0]
    dark = cv2.bitwise_not(img)  # light characters on a dark plate: no light background
    assert C.plate_region(_framed(dark, left=6)) is None


def test_a_loose_two_row_box_is_read_from_the_plate_itself():
    """The car body in a loose box's margin would stand at the rows' ends, where it
    reads as 1 (KF7881 as KF17881 on a real photo)."""
    line = C.two_row_line(_framed(two_row_plate(), left=60))
    ends = np.concatenate([line[:, :4], line[:, -4:]], axis=1)
    assert ends.min() > 100, "no dark body at either end of the line"
