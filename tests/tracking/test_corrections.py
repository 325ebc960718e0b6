"""Read corrections: a read that later, larger views of the same plate overturn is
re-issued as a correction naming it, and a hit raised on the wrong text is withdrawn."""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import sqlite3
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from edge.config import Config, load_config
from edge.delivery.alerts import InCarAlert
from edge.delivery.dispatch import Dispatcher
from edge.delivery.hits import make_hit
from edge.delivery.messages import hit_message, read_record
from edge.delivery.outbox import Outbox
from edge.hq.console import format_hit, format_withdrawal
from edge.hq.store import SCHEMA_VERSION, HitStore, StoreOutcome
from edge.hq.subscriber import HqSubscriber
from edge.ids import new_event_id
from edge.recognition.plateformat import load_format
from edge.timefmt import iso_utc
from edge.tracking.track import PlateTracker
from edge.types import PlateRead
from edge.vehicle.delivery import Delivery
from edge.watchlist.lists import Watchlist, WatchlistEntry
from edge.watchlist.live import LiveWatchlist
from tests.delivery.test_hits import T0, make_read
from tests.hq.test_hq import Publisher, hit_msg, start_cli, subscriber_config, wait_for_text
from tests.tracking.test_track import config, dets, frame, reading

HK = load_format("hk")


def approaching_box(n: int, x0: float = 100, y: float = 400) -> list[float]:
    """A plate coming closer: 4% wider every frame, from 70 px."""
    width = 70 * 1.04**n
    return [x0, y, x0 + width, y + width * 0.225]


def drive(tracker: PlateTracker, texts: list[str], box=approaching_box) -> list:
    """Feed one track ``texts[n]`` in frame ``n`` (read whenever the tracker asks),
    then end it; every read it gave, in order."""
    reads = []
    for n, text in enumerate(texts):
        f = frame(n)
        detections = dets(box(n))
        (track,) = tracker.associate(f, detections)
        if tracker.wants_reading(track, f.timestamp):
            tracker.add_reading(track, f, detections.xyxy[0], reading(text, 0.95), 0.8)
        reads += tracker.collect(f.timestamp, after_frame=True)
    return reads + tracker.collect(final=True)


def tracker() -> PlateTracker:
    return PlateTracker("front", "cam", config(decide_margin=1.9), HK)


# --- the tracker ---------------------------------------------------------------------


def test_an_early_misread_is_corrected_by_the_larger_views_that_follow():
    # Small and early, the plate reads AB1238 (4 as 8); larger, it reads AB1234.
    tr = tracker()
    reads = drive(tr, ["AB1238"] * 6 + ["AB1234"] * 24)
    assert [r.plate for r in reads] == ["AB1238", "AB1234"]
    first, correction = reads
    assert first.corrects_event_id is None
    assert correction.corrects_event_id == first.event_id
    assert correction.event_id != first.event_id
    # The same pass: it began when the plate was first seen, and its evidence is a
    # view that reads the corrected text (a larger one than the read's).
    assert correction.first_seen == first.first_seen and correction.camera == "front"
    assert correction.last_frame > first.last_frame
    assert correction.crop is not None and correction.crop.shape[1] > first.crop.shape[1]
    assert correction.readings > first.readings
    assert correction.candidates[0].text == "AB1234"
    # The corrected text is this pass: the same car picked up again within the dedup
    # window (a new track) is not a new read, whichever way it reads.
    assert drive(tr, ["AB1234"] * 10) == []
    assert tr.duplicates == 1


def test_a_single_contrary_reading_does_not_correct_the_read():
    texts = ["AB1234"] * 12 + ["AB1238"] + ["AB1234"] * 17
    assert [r.plate for r in drive(tracker(), texts)] == ["AB1234"]
    # Nor do two contrary readings in a row against the read's evidence.
    texts = ["AB1234"] * 12 + ["AB1238"] * 2 + ["AB1234"] * 16
    assert [r.plate for r in drive(tracker(), texts)] == ["AB1234"]


def test_another_plate_two_characters_away_is_still_a_new_pass_not_a_correction():
    reads = drive(tracker(), ["AB1234"] * 8 + ["XY1234"] * 22)
    assert [r.plate for r in reads] == ["AB1234", "XY1234"]
    assert [r.corrects_event_id for r in reads] == [None, None]


def test_a_corrected_read_never_flips_back():
    # The evidence turns to AB1234, then back to AB1238: one correction, never undone.
    texts = ["AB1238"] * 6 + ["AB1234"] * 14 + ["AB1238"] * 30
    reads = drive(tracker(), texts)
    assert [r.plate for r in reads] == ["AB1238", "AB1234"]


def test_a_read_that_was_a_duplicate_gives_its_corrected_text_as_a_plain_read():
    # The first pass reads AB1238 right; a second car in the window is first misread
    # as AB1238 (a duplicate: nothing goes out), then read as AB1234: a read of its own.
    tr = tracker()
    assert [r.plate for r in drive(tr, ["AB1238"] * 10)] == ["AB1238"]
    reads = drive(tr, ["AB1238"] * 6 + ["AB1234"] * 24)
    assert [(r.plate, r.corrects_event_id) for r in reads] == [("AB1234", None)]


# --- the car: dispatcher, withdrawal, in-car alert --------------------------------------

WITHDRAWAL_SCHEMA = json.loads(
    resources.files("edge").joinpath("data/withdrawal.schema.json").read_text()
)
HIT_SCHEMA = json.loads(resources.files("edge").joinpath("data/hit.schema.json").read_text())
LISTED = [
    "AB1238,stolen-vehicle,1,stolen,false,w1",
    "CD1234,wanted-person,2,,false,w2",
    "EF123?,stolen-vehicle,3,,false,w3",
    "GH1238,stolen-vehicle,1,,false,w4",
    "GH1234,wanted-person,2,,false,w5",
    "CV1238,wanted-person,2,covert op,true,w6",
]


def car_config(tmp_path: Path, mqtt: str = "") -> Config:
    """car-7, the list above matched exactly (max_distance 0: with 1, a one-character
    correction of an exact hit still matches its entry), an alert command appending
    what it gets on stdin, one JSON a line, to alerts.jsonl."""
    (tmp_path / "watchlist.csv").write_text(
        "plate,list,priority,reason,covert,entry_id\n" + "\n".join(LISTED) + "\n"
    )
    out = tmp_path / "alerts.jsonl"
    script = f"import sys; open({str(out)!r}, 'ab').write(sys.stdin.buffer.read() + b'\\n')"
    command = f'{sys.executable} -c "{script}"'
    path = tmp_path / "edge.toml"
    path.write_text(
        '[vehicle]\nid = "car-7"\n'
        '[watchlist]\npath = "watchlist.csv"\nmax_distance = 0\n'
        f"alert_command = {json.dumps(command)}\n"
        f'[storage]\nstate_dir = "state"\n{mqtt}'
    )
    return load_config(path)


def alerted(tmp_path: Path) -> list[dict]:
    path = tmp_path / "alerts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def car(tmp_path: Path) -> Iterator[tuple[Dispatcher, Outbox, InCarAlert]]:
    config = car_config(tmp_path)
    watchlists = LiveWatchlist(config, state_dir=tmp_path / "state")
    watchlists.load()
    alert = InCarAlert(config.watchlist.alert_command)
    with Outbox(tmp_path / "outbox.sqlite") as outbox:
        yield (
            Dispatcher(config, watchlists, outbox, alert=alert, alert_withdrawn=alert.withdrawn),
            outbox,
            alert,
        )


def correcting(read: PlateRead, plate: str) -> PlateRead:
    """A correction of ``read`` to ``plate``, as the tracker makes it."""
    return dataclasses.replace(make_read(plate), corrects_event_id=read.event_id)


def sent(outbox: Outbox) -> list[dict]:
    return [json.loads(m.payload) for m in outbox.pending()]


def test_a_hit_whose_read_is_corrected_to_an_unlisted_plate_is_withdrawn(car, tmp_path, caplog):
    sink, outbox, alert = car
    caplog.set_level("DEBUG")
    first = make_read("AB1238")
    assert sink(first) is not None
    correction = correcting(first, "AB1234")
    assert sink(correction) is None, "the corrected plate is listed nowhere"
    hit, withdrawal = sent(outbox)
    assert hit["schema"] == "lpr.hit/1" and hit["event_id"] == first.event_id
    jsonschema.Draft202012Validator(WITHDRAWAL_SCHEMA).validate(withdrawal)
    assert withdrawal == {
        "schema": "lpr.withdrawal/1",
        "event_id": withdrawal["event_id"],
        "vehicle_id": "car-7",
        "at": iso_utc(correction.last_seen),
        "withdraws_event_id": first.event_id,
        "reason": "corrected",
    }
    assert withdrawal["event_id"] not in (first.event_id, correction.event_id)
    assert [m.topic for m in outbox.pending()] == ["lpr/v1/car-7/hit"] * 2
    # Privacy: the corrected text is a non-hit read; nothing of it leaves the car, and
    # it is logged at DEBUG only.
    assert not any(b"AB1234" in m.payload for m in outbox.pending())
    assert not any("AB1234" in r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)
    # The officer is told: a prominent line, and the command with the withdrawal.
    told = [r.getMessage() for r in caplog.records if "*** HIT WITHDRAWN ***" in r.getMessage()]
    assert len(told) == 1 and "AB1238" in told[0] and "misread" in told[0]
    alert.join(20)
    # (Each command runs on its own thread: in either order.)
    by_schema = {a["schema"]: a for a in alerted(tmp_path)}
    assert len(alerted(tmp_path)) == 2 and by_schema["lpr.withdrawal/1"] == withdrawal
    assert by_schema["lpr.hit/1"]["event_id"] == first.event_id
    assert (sink.reads, sink.hits, sink.corrections, sink.withdrawals) == (2, 1, 1, 1)


def test_a_corrected_read_that_is_a_hit_is_sent_as_a_hit_naming_the_read(car):
    sink, outbox, _ = car
    # The first read was no hit: the correction is one.
    first = make_read("CD1238")
    assert sink(first) is None
    correction = correcting(first, "CD1234")
    assert sink(correction).match.entry.entry_id == "w2"
    (hit,) = sent(outbox)
    jsonschema.Draft202012Validator(HIT_SCHEMA).validate(hit)
    assert (hit["plate"], hit["corrects_event_id"]) == ("CD1234", first.event_id)


def test_a_correction_on_the_same_entry_is_a_hit_and_on_another_entry_withdraws_the_first(car):
    sink, outbox, _ = car
    # A wildcard entry matches both texts: the hit is sent again, corrected, and stands.
    first = make_read("EF1238")
    sink(first)
    sink(correcting(first, "EF1234"))
    assert [(m["plate"], m.get("corrects_event_id")) for m in sent(outbox)] == [
        ("EF1238", None),
        ("EF1234", first.event_id),
    ]
    assert sink.withdrawals == 0
    for message in outbox.pending():
        outbox.mark_delivered(message.seq)
    # Another entry: the first hit was for nobody; withdrawn, then the right hit.
    first = make_read("GH1238")
    sink(first)
    sink(correcting(first, "GH1234"))
    messages = sent(outbox)
    assert [m["schema"] for m in messages] == ["lpr.hit/1", "lpr.withdrawal/1", "lpr.hit/1"]
    assert messages[1]["withdraws_event_id"] == first.event_id
    assert messages[2]["watchlist"]["entry_id"] == "w5"
    assert messages[2]["corrects_event_id"] == first.event_id


def test_a_covert_hit_is_withdrawn_silently_in_the_car(car, tmp_path, caplog):
    sink, outbox, alert = car
    first = make_read("CV1238")
    sink(first)
    sink(correcting(first, "CV1234"))
    assert [m["schema"] for m in sent(outbox)] == ["lpr.hit/1", "lpr.withdrawal/1"]
    alert.join(20)
    assert alerted(tmp_path) == []
    assert not any("WITHDRAWN" in r.getMessage() for r in caplog.records)


def test_read_records_and_hits_say_what_they_correct():
    read = make_read("AB1234")
    assert read_record(read)["corrects_event_id"] is None
    correction = correcting(read, "AB1238")
    assert read_record(correction)["corrects_event_id"] == read.event_id
    match = Watchlist([WatchlistEntry("AB1238", entry_id="w1")]).match("AB1238", at=T0)
    message = hit_message(make_hit(correction, match, "car-7"))
    jsonschema.Draft202012Validator(HIT_SCHEMA).validate(message)
    assert message["corrects_event_id"] == read.event_id
    bad = {**message, "corrects_event_id": "not-an-id"}
    assert not jsonschema.Draft202012Validator(HIT_SCHEMA).is_valid(bad)


def test_the_withdrawal_schema_refuses_what_is_not_one():
    validator = jsonschema.Draft202012Validator(WITHDRAWAL_SCHEMA)
    validator.check_schema(WITHDRAWAL_SCHEMA)
    good = {
        "schema": "lpr.withdrawal/1",
        "event_id": new_event_id(),
        "vehicle_id": "car-7",
        "at": "2026-11-23T08:00:01.125Z",
        "withdraws_event_id": new_event_id(),
        "reason": "corrected",
    }
    assert validator.is_valid(good)
    assert validator.is_valid({**good, "later_key": 1}), "unknown keys are for consumers to ignore"
    for key in good:
        assert not validator.is_valid({k: v for k, v in good.items() if k != key}), key
    for key, value in [
        ("reason", "changed-mind"),
        ("withdraws_event_id", "17"),
        ("vehicle_id", "car 7"),
        ("at", "2026-11-23 08:00:01"),
        ("schema", "lpr.hit/1"),
    ]:
        assert not validator.is_valid({**good, key: value}), key


# --- HQ ------------------------------------------------------------------------------------

TIMEOUT = 30.0


class Hq:
    """HQ's subscriber on its own database, noting each withdrawal it reports."""

    def __init__(self, tmp_path: Path, port: int):
        self.store = HitStore(tmp_path / "hq.sqlite")
        self.withdrawals: list[tuple[dict, dict | None]] = []
        self.subscriber = HqSubscriber(
            subscriber_config(port),
            self.store,
            on_withdrawal=lambda message, hit: self.withdrawals.append((message, hit)),
        ).start()
        assert self.subscriber.wait_subscribed(TIMEOUT)

    def wait(self, predicate) -> bool:
        return self.subscriber.wait_until(predicate, TIMEOUT)

    def close(self) -> None:
        self.subscriber.close()
        self.store.close()


@pytest.fixture
def hq(broker, tmp_path: Path) -> Iterator[Hq]:
    instance = Hq(tmp_path, broker.port)
    yield instance
    instance.close()


def test_a_withdrawn_hit_reaches_hq_and_is_shown_withdrawn(broker, hq, tmp_path):
    mqtt = f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\nreconnect_min_seconds = 0.2\n'
    with Delivery(car_config(tmp_path, mqtt)) as delivery:
        sink = delivery.dispatcher
        wrong = make_read("AB1238")
        sink(wrong)
        sink(correcting(wrong, "AB1234"))
        unlisted = make_read("CD1238")
        sink(unlisted)
        corrected_hit = correcting(unlisted, "CD1234")
        sink(corrected_hit)
        assert delivery.wait_delivered(TIMEOUT)
    assert hq.wait(lambda: hq.store.counts()["hits"] == 2 and len(hq.withdrawals) == 1)
    (message, hit), (withdrawal,) = hq.withdrawals[0], hq.store.withdrawals()
    assert withdrawal["payload"] == message and withdrawal["hit_missing"] == 0
    assert (withdrawal["withdraws_event_id"], withdrawal["reason"]) == (wrong.event_id, "corrected")
    # The hit is marked withdrawn, and the console says so.
    assert hq.store.hit_row(wrong.event_id)["withdrawn_by"] == message["event_id"]
    assert hit["plate"] == "AB1238"
    assert format_withdrawal(message, hit) == (
        f"WITHDRAWN {wrong.event_id} (plate AB1238 from vehicle car-7: corrected in the car)"
    )
    # A hit from a corrected read is stored as any hit, with its link.
    row = hq.store.hit_row(corrected_hit.event_id)
    assert row["payload"]["corrects_event_id"] == unlisted.event_id
    assert row["withdrawn_by"] is None
    assert hq.store.counts()["withdrawn"] == 1
    # Nothing of the non-hit texts reached HQ.
    everything = json.dumps([hq.store.hits(), hq.store.withdrawals()])
    assert "AB1234" not in everything and "CD1238" not in everything
    stats = hq.subscriber.stats()
    assert (stats["withdrawals"], stats["withdrawals_unknown"], stats["rejected"]) == (1, 0, {})


def withdrawal_of(event_id: str, vehicle: str = "car-7") -> dict:
    return {
        "schema": "lpr.withdrawal/1",
        "event_id": new_event_id(),
        "vehicle_id": vehicle,
        "at": "2026-11-23T08:00:02.500Z",
        "withdraws_event_id": event_id,
        "reason": "corrected",
    }


def test_a_withdrawal_of_a_hit_hq_does_not_hold_is_stored_and_flagged(broker, hq):
    publisher = Publisher(broker.port)
    try:
        hit = hit_msg(vehicle="car-7", plate="AB1238")
        early = withdrawal_of(hit["event_id"])
        # Another vehicle cannot withdraw car-7's hit: for it, that hit does not exist.
        foreign = withdrawal_of(hit["event_id"], vehicle="car-8")
        publisher.hit(early)
        publisher.hit(early)  # a redelivery
        publisher.hit(foreign)
        assert hq.wait(lambda: len(hq.withdrawals) == 2 and hq.subscriber.stats()["duplicates"])
        assert [w["hit_missing"] for w in hq.store.withdrawals()] == [1, 1]
        assert [hit for _, hit in hq.withdrawals] == [None, None]
        assert format_withdrawal(early, None) == (
            f"WITHDRAWN {hit['event_id']} (a hit HQ does not hold from vehicle car-7: "
            "corrected in the car)"
        )
        stats = hq.subscriber.stats()
        assert (stats["withdrawals"], stats["withdrawals_unknown"], stats["duplicates"]) == (
            2,
            2,
            1,
        )
        # The hit, arriving after its withdrawal, is stored withdrawn.
        publisher.hit(hit)
        assert hq.wait(lambda: hq.store.counts()["hits"] == 1)
        assert hq.store.hit_row(hit["event_id"])["withdrawn_by"] == early["event_id"]
        assert [w["hit_missing"] for w in hq.store.withdrawals()] == [0, 1]
        # A malformed withdrawal is a reject like any malformed hit.
        bad = {**withdrawal_of(hit["event_id"]), "reason": "changed-mind"}
        publisher.hit(bad)
        assert hq.wait(lambda: hq.subscriber.stats()["rejected"] == {"schema": 1})
    finally:
        publisher.close()


def test_the_hq_console_prints_a_withdrawal(broker, tmp_path):
    publisher = Publisher(broker.port)
    db = tmp_path / "cli.sqlite"
    proc, out, err = start_cli(
        tmp_path, "--host", "127.0.0.1", "--port", str(broker.port), "--db", str(db)
    )
    try:
        assert wait_for_text(err, "HQ: subscribed", proc), err.read_text()
        hit = hit_msg(vehicle="car-7", plate="AB1238")
        publisher.hit(hit)
        publisher.hit(withdrawal_of(hit["event_id"]))
        assert wait_for_text(out, "WITHDRAWN", proc), err.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0, err.read_text()
    finally:
        publisher.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = out.read_text().splitlines()
    assert lines == [
        format_hit(hit),
        f"WITHDRAWN {hit['event_id']} (plate AB1238 from vehicle car-7: corrected in the car)",
    ]


# The layout of version 1 (before withdrawals), as that release made it.
VERSION_1_HITS = """
CREATE TABLE hits (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    TEXT NOT NULL,
    vehicle_id  TEXT NOT NULL,
    camera      TEXT NOT NULL,
    plate       TEXT NOT NULL,
    observed_at TEXT NOT NULL,
    received_at TEXT NOT NULL,
    "list"      TEXT NOT NULL,
    priority    INTEGER NOT NULL,
    "match"     TEXT NOT NULL,
    covert      INTEGER NOT NULL,
    payload     TEXT NOT NULL,
    conflict_of INTEGER REFERENCES hits (id)
);
CREATE INDEX hits_event ON hits (event_id);
PRAGMA user_version = 1;
"""


def test_a_database_from_before_withdrawals_is_migrated(tmp_path):
    path = tmp_path / "hq.sqlite"
    old = hit_msg(vehicle="car-7", plate="AB1238")
    with sqlite3.connect(path) as db:
        db.executescript(VERSION_1_HITS)
        db.execute(
            "INSERT INTO hits (event_id, vehicle_id, camera, plate, observed_at, received_at, "
            '"list", priority, "match", covert, payload) '
            "VALUES (?, 'car-7', 'front-left', 'AB1238', ?, ?, 'stolen-vehicle', 1, 'exact', 0, ?)",
            (old["event_id"], old["observed_at"], old["observed_at"], json.dumps(old)),
        )
    db.close()
    with HitStore(path) as store:
        assert store.hits() == [old] and store.hit_row(old["event_id"])["withdrawn_by"] is None
        withdrawal = withdrawal_of(old["event_id"])
        stored = store.add_withdrawal(withdrawal)
        assert stored.hit == old
        assert store.add_withdrawal(withdrawal).outcome is StoreOutcome.DUPLICATE
    with HitStore(path) as store, sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert store.hit_row(old["event_id"])["withdrawn_by"] == withdrawal["event_id"]
        assert store.counts()["withdrawals"] == 1


def test_part_of_the_read_plate_is_neither_a_new_pass_nor_a_correction():
    """A box that catches only some of the read plate's characters reads as a shorter
    text two or more characters away: it is the same plate, never another car's."""
    for partial in ("HEYDU", "YDUDE"):
        reads = drive(tracker(), ["HEYDUDE"] * 8 + [partial] * 22)
        assert [r.plate for r in reads] == ["HEYDUDE"], partial
