from __future__ import annotations

import re

import numpy as np
import pytest

from edge.synth.scenes import (
    PLATE_MM,
    plate_display_text,
    random_hk_plate,
    render_plate,
    render_scene,
)

HK_MARK = re.compile(r"^[A-HJ-NPR-Z]{1,2}[1-9][0-9]{0,3}$")


def test_random_marks_are_valid_and_varied():
    rng = np.random.default_rng(7)
    marks = [random_hk_plate(rng) for _ in range(500)]
    bad = [m for m in marks if not HK_MARK.match(m)]
    assert not bad, bad[:5]
    letters = {len(re.match(r"[A-Z]+", m).group()) for m in marks}
    digits = {len(re.search(r"[0-9]+", m).group()) for m in marks}
    assert letters == {1, 2}
    assert digits == {1, 2, 3, 4}


def test_display_text_puts_the_gap_between_letters_and_digits():
    assert plate_display_text("AB1234") == "AB 1234"
    assert plate_display_text("k88") == "K 88"
    assert plate_display_text("AB 1234") == "AB 1234"


def test_plate_proportions_and_colours():
    front = render_plate("AB1234", width=520)
    rear = render_plate("AB1234", style="rear", width=520)
    assert front.shape == (PLATE_MM[1], PLATE_MM[0], 3)
    assert front.dtype == np.uint8
    # Background samples between the border and the characters.
    b, g, r = rear[12, 260].astype(int)
    assert r > 200 and g > 150 and b < 80, "rear plates are yellow"
    assert (front[12, 260] > 200).all(), "front plates are white"
    # The border is dark.
    assert front[:, :6].min() < 60
    assert render_plate("K88", width=260).shape == (55, 260, 3)


def test_plate_characters_fill_about_seventy_percent_of_the_height():
    plate = render_plate("AB1234", width=520)
    h = plate.shape[0]
    inner = plate[11 : h - 11, 12:-12].min(axis=2)  # inside the border
    dark_rows = np.nonzero((inner < 100).any(axis=1))[0]
    span = (dark_rows.max() - dark_rows.min() + 1) / h
    assert 0.6 < span < 0.8, span
    dark_cols = np.nonzero((inner < 100).any(axis=0))[0]
    assert (dark_cols.max() - dark_cols.min()) > 0.7 * plate.shape[1]


def test_bad_style_is_rejected():
    with pytest.raises(ValueError):
        render_plate("AB1", style="green")


def test_scene_is_deterministic_for_a_seed():
    a, boxes_a = render_scene(["AB1234", "K88"], rng=np.random.default_rng(3))
    b, boxes_b = render_scene(["AB1234", "K88"], rng=np.random.default_rng(3))
    c, _ = render_scene(["AB1234", "K88"], rng=np.random.default_rng(4))
    assert np.array_equal(a, b)
    assert boxes_a == boxes_b
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("seed", range(6))
def test_scene_boxes_are_inside_sized_and_apart(seed):
    rng = np.random.default_rng(seed)
    texts = [random_hk_plate(rng) for _ in range(1 + seed % 3)]
    image, truths = render_scene(texts, size=(1280, 720), rng=rng)
    assert image.shape == (720, 1280, 3) and image.dtype == np.uint8
    assert [t for t, _ in truths] == texts
    for _, (x1, y1, x2, y2) in truths:
        assert 0 <= x1 < x2 <= 1280 and 0 <= y1 < y2 <= 720
        width = (x2 - x1) / 1280
        # Multi-car scenes shrink plates so cars fit side by side.
        assert (0.07 if len(texts) == 1 else 0.05) < width < 0.23, width
        assert 3.0 < (x2 - x1) / (y2 - y1) < 6.0
    for i, (_, a) in enumerate(truths):
        for _, b in truths[i + 1 :]:
            assert a[2] <= b[0] or b[2] <= a[0], "plates overlap"


def test_plate_is_drawn_where_the_box_says():
    image, [(_, box)] = render_scene(
        ["AB1234"], rng=np.random.default_rng(1), styles=["rear"], blur=0, noise=0
    )
    x1, y1, x2, y2 = (round(v) for v in box)
    centre = image[(y1 + y2) // 2 - 2 : (y1 + y2) // 2 + 3, x1 + 4 : x2 - 4].reshape(-1, 3)
    # A row through the middle of a yellow plate: mostly yellow, some black ink.
    yellow = (centre[:, 2] > 180) & (centre[:, 1] > 140) & (centre[:, 0] < 90)
    assert 0.3 < yellow.mean() < 0.95
    assert (centre.max(axis=1) < 80).mean() > 0.05


def test_blur_and_noise_switches():
    clean, _ = render_scene(["AB1"], rng=np.random.default_rng(2), blur=0, noise=0)
    noisy, _ = render_scene(["AB1"], rng=np.random.default_rng(2), blur=0, noise=6)
    diff = noisy.astype(int) - clean
    assert 4 < diff.std() < 8


def test_portrait_scene_and_style_count_check():
    image, truths = render_scene(["AB12"], size=(720, 1280), rng=np.random.default_rng(5))
    assert image.shape == (1280, 720, 3)
    x1, _, x2, _ = truths[0][1]
    assert 0 <= x1 < x2 <= 720
    with pytest.raises(ValueError):
        render_scene(["AB12", "CD34"], rng=np.random.default_rng(5), styles=["front"])


def test_pixels_are_unchanged():
    """The INT8 detector is calibrated on these scenes and accepted by its hash in
    models/manifest.toml, so any change to them must come with a new model hash (and
    new plate looks belong in edge.synth.hkplates instead)."""
    import hashlib

    digest = hashlib.sha256()
    for style in ("front", "rear"):
        digest.update(render_plate("AB1234", style=style).tobytes())
    image, _ = render_scene(["AB1234", "K88"], rng=np.random.default_rng(3))
    digest.update(image.tobytes())
    assert digest.hexdigest() == (
        "d1f30f8f4878d256916d5b9a984750fd91d43c3258b9d48475ee19de0f896207"
    ), "edge.synth.scenes output changed: the INT8 calibration scenes would differ"
