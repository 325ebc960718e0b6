"""Clips made from labelled photos (`bench video --photos`): the truth follows the
plate through the camera's motion, passes are split between cameras, other
labelled plates are fine to read, unclear boxes are blurred out, and a pass is
scored on the reads made while it was on screen."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.bench.passes import pass_outcomes, summarise_outcomes
from edge.bench.photoclips import PhotoClipSpec, photo_clips, plan_passes
from edge.synth.clipspec import ClipTruth, PassTruth
from tests.delivery.test_hits import make_read

RED = (0, 0, 255)


def photo(path: Path, plates: dict[str, tuple[int, int, int, int]], unclear=None) -> dict:
    """A grey street with a pure red rectangle for each plate (easy to find again in
    the frames) and a black-and-white checkerboard in the unclear box."""
    rng = np.random.default_rng(len(str(path)))
    image = rng.integers(90, 130, (900, 1200, 3)).astype(np.uint8)
    labels = []
    for text, (x1, y1, x2, y2) in plates.items():
        image[y1:y2, x1:x2] = RED
        labels.append({"text": text, "kind": "hk", "rows": 1, "box": [x1, y1, x2, y2]})
    if unclear:
        x1, y1, x2, y2 = unclear
        board = (np.indices((y2 - y1, x2 - x1)).sum(0) // 4 % 2 * 255).astype(np.uint8)
        image[y1:y2, x1:x2] = board[..., None]
        labels.append({"text": "", "kind": "unclear", "rows": 1, "box": list(unclear)})
    cv2.imwrite(str(path), image)
    return labels


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    photos = tmp_path / "photos"
    photos.mkdir()
    labels = {
        "a.png": photo(photos / "a.png", {"AB1234": (500, 600, 700, 650)}),
        "b.png": photo(
            photos / "b.png",
            {"CD5678": (300, 500, 520, 550), "EF90": (800, 520, 880, 540)},
            unclear=(100, 100, 300, 200),
        ),
        "c.png": photo(photos / "c.png", {"GH12": (550, 400, 700, 440)}),
        # Too small to make a pass: only fine to read.
        "d.png": photo(photos / "d.png", {"JK3": (600, 400, 620, 410)}),
    }
    (photos / "labels.json").write_text(json.dumps(labels))
    return photos


SPEC = PhotoClipSpec(
    size=(640, 360), fps=10.0, pass_seconds=2.0, gap_seconds=0.5, noise=0.0, exposure=0.0
)


def test_one_pass_per_photo_its_largest_plate_split_between_cameras(folder: Path):
    per_camera, problems = plan_passes(folder, SPEC)
    assert problems == []
    assert [len(c) for c in per_camera] == [2, 1]
    targets = sorted(p.target.plate for c in per_camera for p in c)
    assert targets == ["AB1234", "CD5678", "GH12"]  # d.png's plate is too small
    b = next(p for c in per_camera for p in c if p.image.name == "b.png")
    assert [o.plate for o in b.others] == ["EF90"] and len(b.unclear) == 1


def red_box(frame: np.ndarray) -> tuple[float, float, float, float] | None:
    mask = (frame[..., 2] > 200) & (frame[..., 1] < 60) & (frame[..., 0] < 60)
    ys, xs = np.nonzero(mask)
    if len(xs) < 20:
        return None
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def test_the_truth_box_is_where_the_plate_is_drawn_in_every_frame(folder: Path, tmp_path: Path):
    # One plate per photo, so the red pixels are the pass's plate.
    for name in ("b.png",):
        (folder / name).unlink()
    labels = json.loads((folder / "labels.json").read_text())
    del labels["b.png"]
    (folder / "labels.json").write_text(json.dumps(labels))
    spec = dataclasses.replace(SPEC, shake_px=0.0)
    clips, _ = photo_clips(folder, spec, tmp_path / "cache")
    checked = 0
    for path, truth in clips:
        cap = cv2.VideoCapture(str(path))
        frames = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
        assert len(frames) == truth.frame_count
        for p in truth.passes:
            for k in range(p.first_frame, p.last_frame + 1):
                box = p.box_at(k)
                found = red_box(frames[k])
                inside = box[0] > 0 and box[1] > 0 and box[2] < 640 and box[3] < 360
                # (A plate cut by the frame's edge has a clipped box that is not the
                # visible part's box once it is rolled.)
                if found is None or box[2] - box[0] < 12 or not inside:
                    continue
                # The codec smears edges by a pixel or two.
                assert np.allclose(found, box, atol=3.0), (p.text, k, found, box)
                checked += 1
            legible = p.legible_frames()
            assert len(legible) > 0
            for k in legible:
                x1, _y1, x2, _y2 = p.box_at(k)
                assert x2 - x1 >= truth.legible_px and x1 >= 0 and x2 <= truth.size[0]
            assert p.box_at(p.first_frame)[2] - p.box_at(p.first_frame)[0] < 40  # starts far
    assert checked > 20


def test_unclear_plates_are_blurred_out_and_other_plates_are_fine_to_read(
    folder: Path, tmp_path: Path
):
    clips, _ = photo_clips(folder, SPEC, tmp_path / "cache")
    truths = [t for _p, t in clips]
    assert "EF90" in {text for t in truths for text in t.fine_to_read}
    assert {p.text for t in truths for p in t.passes} == {"AB1234", "CD5678", "GH12"}
    # The clip is cached: asking again renders nothing and gives the same truth.
    again, _ = photo_clips(folder, SPEC, tmp_path / "cache")
    assert [t.to_dict() for _p, t in again] == [t.to_dict() for t in truths]
    from edge.bench.photoclips import _Photo

    image = cv2.imread(str(folder / "b.png"))
    blurred = _Photo(image, ((100, 100, 300, 200),)).levels[0]
    assert image[100:200, 100:300].std() > 100 and blurred[100:200, 100:300].std() < 20


def truth_of(*passes: tuple[str, int, int]) -> ClipTruth:
    return ClipTruth(
        size=(640, 360),
        fps=10.0,
        frame_count=100,
        legible_px=60.0,
        passes=tuple(
            PassTruth(text, "one-row", "approach", a, b, a + 1, b, ((0, 0, 100, 20),) * (b - a + 1))
            for text, a, b in passes
        ),
        spec=None,
        fine_to_read=("EF90",),
    )


def read_at(plate: str, frame: int, confidence: float):
    return dataclasses.replace(make_read(plate, frames=(frame, frame + 3)), confidence=confidence)


def test_a_pass_is_scored_on_the_reads_made_while_it_was_on_screen():
    truth = truth_of(("AB1234", 0, 30), ("CD5678", 40, 70), ("GH12", 80, 95))
    reads = [
        read_at("AB1238", 5, 0.62),  # an early wrong read of the first pass
        read_at("AB1234", 20, 0.97),
        read_at("EF90", 45, 0.9),  # another labelled plate: fine
        read_at("CD5678", 50, 0.93),
        read_at("CD5678", 65, 0.95),  # the same pass read twice
    ]
    outcomes = pass_outcomes(truth, reads)
    assert [(o.exact, o.wrong, o.duplicates) for o in outcomes] == [
        (True, 1, 0),
        (True, 0, 1),
        (False, 0, 0),
    ]
    summary = summarise_outcomes(outcomes)
    assert (summary["passes"], summary["read_exactly"], summary["missed"]) == (3, 2, 1)
    assert (summary["wrong_reads"], summary["duplicate_reads"]) == (1, 1)
    bands = {r["band"]: r for r in summary["reliability"]}
    assert (bands["0.50-0.70"]["reads"], bands["0.50-0.70"]["right"]) == (1, 0)
    assert (bands["0.95-1.00"]["reads"], bands["0.95-1.00"]["share_right"]) == (2, 1.0)
    assert sum(r["reads"] for r in summary["reliability"]) == 4  # EF90 left out


def test_a_corrected_read_is_judged_by_its_correction():
    truth = truth_of(("AB1234", 0, 30))
    early = read_at("AB1238", 5, 0.7)
    fixed = dataclasses.replace(read_at("AB1234", 20, 0.96), corrects_event_id=early.event_id)
    (outcome,) = pass_outcomes(truth, [early, fixed])
    assert (outcome.exact, outcome.wrong, outcome.wrong_corrected) == (True, 0, 1)
    summary = summarise_outcomes([outcome])
    assert (summary["wrong_reads"], summary["wrong_then_corrected"]) == (0, 1)
    assert sum(r["reads"] for r in summary["reliability"]) == 2  # both went out


def test_latency_is_measured_from_where_the_plate_is_wide_enough():
    from edge.bench.passes import decision_latency_by_width

    boxes = tuple((100.0, 100.0, 100.0 + 50 + 5 * k, 130.0) for k in range(20))
    p = PassTruth("AB1234", "one-row", "approach", 0, 19, 2, 19, boxes)
    truth = dataclasses.replace(truth_of(("AB1234", 0, 19)), passes=(p,))
    # 80 px from frame 6, 100 px from frame 10; the read was decided at frame 12.
    (outcome,) = pass_outcomes(truth, [read_at("AB1234", 9, 0.99)])
    figures = decision_latency_by_width([outcome], 10.0, (640, 360))
    assert figures["80px"]["p50"] == pytest.approx(600.0)
    assert figures["100px"]["p50"] == pytest.approx(200.0)
    assert figures["120px"]["p50"] == 0.0  # read before the plate was that wide


def test_a_cross_boundary_pair_is_the_pass_of_its_hk_plate_and_its_core_is_fine(
    tmp_path: Path,
):
    photos = tmp_path / "pair"
    photos.mkdir()
    labels = photo(photos / "pair.png", {"AB1234": (500, 500, 640, 530)})
    # The black Guangdong plate under it, wider in the photo than the HK plate.
    labels.append(
        {"text": "粤ZA123港", "kind": "crossboundary", "rows": 1, "box": [480, 540, 660, 580]}
    )
    (photos / "labels.json").write_text(json.dumps({"pair.png": labels}, ensure_ascii=False))
    spec = dataclasses.replace(SPEC, cameras=1)
    ((only,),), _ = plan_passes(photos, spec)
    assert only.target.plate == "AB1234"
    assert [o.plate for o in only.others] == ["ZA123"]
    ((_path, truth),), _ = photo_clips(photos, spec, tmp_path / "cache")
    assert [p.text for p in truth.passes] == ["AB1234"] and truth.fine_to_read == ("ZA123",)


def test_the_pass_listing_gives_each_reads_verdict():
    from edge.bench.passes import pass_listing

    truth = truth_of(("AB1234", 0, 30), ("CD5678", 40, 70))
    reads = [read_at("AB1234", 20, 0.97), read_at("EF90", 45, 0.9), read_at("XY99", 50, 0.6)]
    first, second = pass_listing(pass_outcomes(truth, reads))
    assert first["read_exactly"] and [r["verdict"] for r in first["reads"]] == ["right"]
    assert not second["read_exactly"]
    assert [(r["plate"], r["verdict"]) for r in second["reads"]] == [
        ("EF90", "fine"),
        ("XY99", "wrong"),
    ]
    assert second["reads"][1]["frames"] == [10, 13]
