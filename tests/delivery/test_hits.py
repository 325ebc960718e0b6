"""The watchlist stage: reads to hits, the hit message contract, the read sink."""

from __future__ import annotations

import base64
import dataclasses
import json
import sys
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest

from edge.config import load_config
from edge.delivery.alerts import InCarAlert
from edge.delivery.dispatch import Dispatcher
from edge.delivery.hits import best_match, make_hit, plate_jpeg
from edge.delivery.messages import hit_message, without_images
from edge.delivery.outbox import Outbox
from edge.ids import new_event_id
from edge.types import PlateRead, Position, PositionFix, TextCandidate
from edge.watchlist.csvfile import parse_csv
from edge.watchlist.lists import Watchlist, WatchlistEntry
from edge.watchlist.live import LiveWatchlist

T0 = datetime(2026, 11, 23, 8, 0, 0, 125000, tzinfo=UTC)
HIT_SCHEMA = json.loads(resources.files("edge").joinpath("data/hit.schema.json").read_text())


def make_read(plate: str, *candidates: str, source: str = "rtsp://cam", frames=(None, None)):
    crop = np.full((40, 160, 3), 255, np.uint8)
    cv2.putText(crop, plate, (5, 30), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 2)
    return PlateRead(
        event_id=new_event_id(),
        camera="front-left",
        source=source,
        plate=plate,
        confidence=0.93,
        candidates=tuple(TextCandidate(t, 0.9) for t in (plate, *candidates)),
        frames=7,
        readings=5,
        first_seen=T0,
        last_seen=T0 + timedelta(seconds=0.8),
        first_frame=frames[0],
        last_frame=frames[1],
        box=(10.0, 20.0, 170.0, 60.0),
        crop=crop,
        last_capture_mono=1.0,
        emitted_mono=1.1,
    )


def entry(plate: str, **kw) -> WatchlistEntry:
    kw.setdefault("entry_id", plate)
    return WatchlistEntry(plate=plate, **kw)


def test_best_match_over_two_lists_and_the_reads_candidates():
    local = Watchlist([entry("AB1234", priority=5, list="stolen-vehicle")])
    pushed = Watchlist([entry("XY987", priority=1, list="wanted-person")])
    at = T0
    assert best_match(make_read("AB1234"), [local, pushed], at=at, max_distance=1).entry.plate == (
        "AB1234"
    )
    # The voted text misses; an OCR candidate of the same pass hits.
    match = best_match(make_read("XV987", "XY987"), [local, pushed], at=at, max_distance=0)
    assert match.entry.plate == "XY987" and match.via_candidate
    assert best_match(make_read("ZZ1"), [local, pushed], at=at, max_distance=1) is None
    # Priority beats list order: both lists offer an entry for the same read.
    both = Watchlist([entry("AB1234", priority=2, entry_id="p2")])
    assert best_match(make_read("AB1234"), [local, both], at=at, max_distance=1).entry.priority == 2


def test_plate_jpeg_respects_the_cap():
    rng = np.random.default_rng(1)
    crop = rng.integers(0, 255, (120, 480, 3), np.uint8)  # noise: hard to compress
    assert plate_jpeg(crop, 0) is None
    for cap in (4000, 12000, 60000):
        data = plate_jpeg(crop, cap)
        assert data is not None and len(data) <= cap
        assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is not None
    assert plate_jpeg(crop, 50) is None  # nothing legible fits in 50 bytes


def test_hit_message_follows_the_published_schema():
    read = make_read("AB1234", source="/data/rec/2026-11-23/front.mp4", frames=(12, 40))
    match = Watchlist([entry("AB12?4", list="stolen-vehicle", reason="stolen 2026-11-01")]).match(
        "AB1234", at=T0
    )
    position = PositionFix(Position(22.3193, 114.1694, T0, 87.5, 42.0), age_s=0.4, stale=False)
    hit = make_hit(read, match, "car-7", position=position, image_max_bytes=20000)
    message = hit_message(hit)
    jsonschema.Draft202012Validator(HIT_SCHEMA).validate(message)
    assert message["observed_at"] == "2026-11-23T08:00:00.125Z"
    assert message["position"]["lat"] == 22.3193 and message["position"]["age_s"] == 0.4
    # A stale fix is not used as the car's position.
    stale = PositionFix(position.position, age_s=30.0, stale=True)
    assert hit_message(make_hit(read, match, "car-7", position=stale))["position"] is None
    assert message["watchlist"]["match"] == "wildcard"
    assert message["source"] == {"file": "front.mp4", "first_frame": 12, "last_frame": 40}
    assert base64.b64decode(message["plate_image"])[:2] == b"\xff\xd8"  # a JPEG
    # Live cameras: no source; no fix: no position; no image when disabled.
    live = hit_message(make_hit(make_read("AB1234"), match, "car-7", image_max_bytes=0))
    jsonschema.Draft202012Validator(HIT_SCHEMA).validate(live)
    assert live["source"] is None and live["position"] is None and live["plate_image"] is None
    assert without_images(message)["plate_image_bytes"] > 0


def write_list(path: Path, rows: list[str]) -> Path:
    path.write_text("plate,list,priority,reason,covert,entry_id\n" + "\n".join(rows) + "\n")
    return path


@pytest.fixture
def config(tmp_path: Path):
    write_list(
        tmp_path / "watchlist.csv",
        ["AB1234,stolen-vehicle,1,stolen,false,w1", "CV99,wanted-person,2,covert op,true,w2"],
    )
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        '[vehicle]\nid = "car-7"\n[watchlist]\npath = "watchlist.csv"\n'
        'reload_check_seconds = 0.1\n[storage]\nstate_dir = "state"\n'
    )
    return load_config(cfg)


def test_dispatcher_commits_hits_and_forgets_other_reads(tmp_path: Path, config):
    watchlists = LiveWatchlist(config, state_dir=tmp_path / "state")
    watchlists.load()
    alerts = []
    echo = (tmp_path / "echo.jsonl").open("w")
    with Outbox(tmp_path / "o.sqlite") as outbox:
        sink = Dispatcher(
            config, watchlists, outbox, alert=lambda h, p: alerts.append(h), echo=echo
        )
        assert sink(make_read("QQ111")) is None
        hit = sink(make_read("A81234"))  # look-alike: fuzzy at 0.5
        covert = sink(make_read("CV99"))
        assert hit.match.kind == "fuzzy" and covert.covert
        stored = [json.loads(m.payload) for m in outbox.pending()]
        assert [m["plate"] for m in stored] == ["A81234", "CV99"]
        assert all(m["vehicle_id"] == "car-7" for m in stored)
        assert [m.topic for m in outbox.pending()] == ["lpr/v1/car-7/hit"] * 2
    echo.close()
    # A covert hit goes to HQ and is printed for the operator's record, but no alert.
    assert [h.read.plate for h in alerts] == ["A81234"]
    printed = [json.loads(line) for line in (tmp_path / "echo.jsonl").read_text().splitlines()]
    assert [p["plate"] for p in printed] == ["A81234", "CV99"]
    assert sink.reads == 3 and sink.hits == 2


def test_a_changed_file_is_reloaded_and_a_broken_one_keeps_the_old_list(tmp_path, config):
    watchlists = LiveWatchlist(config, state_dir=tmp_path / "state")
    watchlists.load()
    assert watchlists.status()["file"]["entries"] == 2
    path = tmp_path / "watchlist.csv"
    write_list(path, ["NEW1,stolen-vehicle,1,,false,n1"])
    assert watchlists.refresh(force=True)
    assert [e.plate for w in watchlists.lists() for e in w.entries()] == ["NEW1"]
    path.write_text("plate,priority\nOK1,1\nBAD!,12\n")
    assert not watchlists.refresh(force=True)
    status = watchlists.status()
    assert status["file"]["entries"] == 1 and "line 3" in status["file"]["error"]
    assert status["last_rejection"]["code"] == "invalid_file"
    assert [e.plate for w in watchlists.lists() for e in w.entries()] == ["NEW1"]


def test_alert_command_gets_the_hit_json_on_stdin(tmp_path: Path):
    out = tmp_path / "alert.json"
    script = f"import sys; open({str(out)!r}, 'wb').write(sys.stdin.buffer.read())"
    alert = InCarAlert(f'{sys.executable} -c "{script}"')
    read = make_read("AB1234")
    match = Watchlist([entry("AB1234")]).match("AB1234", at=T0)
    hit = make_hit(read, match, "car-7")
    payload = json.dumps(hit_message(hit)).encode()
    alert(hit, payload)
    alert.join(20)
    assert json.loads(out.read_bytes())["event_id"] == read.event_id


def test_blurred_context_keeps_the_plate_and_hides_everything_else():
    """The hit's plate reads the same in the context image; another plate, and a line
    of text elsewhere in the frame, no longer read at all."""
    from tests.conftest import model_path

    model_path("platedet-int8.onnx")
    model_path("ch_PP-OCRv4_rec_infer.onnx")
    from edge.delivery.hits import blurred_context
    from edge.recognition.recognize import open_recognizer
    from edge.synth.scenes import render_scene

    image, plates = render_scene(
        ["KT4821", "PX5072"], rng=np.random.default_rng(4), perspective=False, blur=0.3
    )
    # A shop sign: dark text on a light board, top left, away from the plates.
    cv2.rectangle(image, (20, 20), (460, 110), (235, 235, 235), -1)
    cv2.putText(image, "WANTED 77", (35, 90), cv2.FONT_HERSHEY_SIMPLEX, 2.0, (0, 0, 0), 5)
    sign = (slice(20, 110), slice(20, 460))
    (hit_text, hit_box), (other_text, _) = plates
    with open_recognizer(load_config(None)) as recognizer:
        before = {p.text for p in recognizer.recognize(image).plates}
        context = blurred_context(image, hit_box)
        after = {p.text for p in recognizer.recognize(context).plates}
        sign_before, sign_after = recognizer.ocr.read([image[sign], context[sign]])
    # Legible in the frame, as a check that the test can fail.
    assert {hit_text, other_text} <= before
    assert sign_before.text.replace(" ", "") == "WANTED77"
    assert after == {hit_text}
    assert not any(c.isalnum() for c in sign_after.text) or sign_after.confidence < 0.5


def test_a_cross_boundary_plate_matches_an_entry_of_either_form_and_says_what_it_is():
    read = dataclasses.replace(make_read("Z1234"), marked_plate="粤Z1234港", vehicle_plate="AB1234")
    # Listed with its Chinese characters or as its core, the entry is the same plate.
    for listed in ("粤Z1234港", "Z1234"):
        (listed_entry,) = parse_csv(f"plate,list\n{listed},stolen-vehicle\n")
        match = Watchlist([listed_entry]).match(read.plate, at=T0)
        assert match is not None and match.kind == "exact"
        message = hit_message(make_hit(read, match, "car-7"))
        jsonschema.Draft202012Validator(HIT_SCHEMA).validate(message)
        assert message["plate"] == "Z1234" and message["plate_kind"] == "crossboundary"
        assert message["marked_plate"] == "粤Z1234港" and message["vehicle_plate"] == "AB1234"
    # Any other plate's hit carries none of the three keys (the contract is unchanged).
    ordinary = hit_message(make_hit(make_read("AB1234"), match, "car-7"))
    assert not {"plate_kind", "marked_plate", "vehicle_plate"} & set(ordinary)
    # A forged marked plate breaks the schema.
    bad = dict(message, marked_plate="粤Z12345港")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(HIT_SCHEMA).validate(bad)
