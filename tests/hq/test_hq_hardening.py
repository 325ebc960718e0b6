"""HQ against hostile or broken input (the hardening issue, defects 6, 7, 9 and 11):
terminal and log injection, event-id collisions, non-finite numbers, images that are
not JPEGs, and its database's mode and corruption. A real Mosquitto where a broker is
needed; pure functions tested directly."""

from __future__ import annotations

import base64
import copy
import json
import logging
import os
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.config import MqttConfig
from edge.delivery.messages import encode
from edge.hq.console import escape_control, format_hit
from edge.hq.store import HitStore, StoreOutcome
from edge.hq.subscriber import HqSubscriber
from edge.hq.validate import MAX_IMAGE_BYTES, Reject, parse_object, schema_validator
from tests.hq.test_hq import (
    JPEG,
    PREFIX,
    TIMEOUT,
    Publisher,
    hit_msg,
    start_cli,
    status_msg,
    subscriber_config,
    wait_for_text,
)

ESC = "\x1b"
#: An OSC sequence that sets the terminal's title (and, in some terminals, worse).
OSC_TITLE = "\x1b]0;pwned\x07"


def forged_hit() -> dict:
    """The attack from the issue: car-B's hit whose camera and list names end its line
    and start a forged one (as if car-B had reported FAKE99 as a wanted person), with an
    OSC sequence for the terminal."""
    message = hit_msg(vehicle="car-B", plate="XY987")
    message["camera"] = "rear\n2026-11-23T08:00:02.000Z car-B front FAKE99 wanted-person P1"
    message["watchlist"]["list"] = f"stolen-vehicle{OSC_TITLE}"
    message["watchlist"]["reason"] = f"reported stolen{ESC}[2J"
    return message


def schema_errors(message: dict) -> list[str]:
    return [
        "/".join(map(str, e.absolute_path)) for e in schema_validator("hit").iter_errors(message)
    ]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[HitStore]:
    with HitStore(tmp_path / "hq.sqlite") as s:
        yield s


@pytest.fixture
def publisher(broker) -> Iterator[Publisher]:
    pub = Publisher(broker.port)
    yield pub
    pub.close()


@pytest.fixture
def hq(broker, store) -> Iterator[tuple[HqSubscriber, list[dict], list[tuple[dict, dict]]]]:
    printed: list[dict] = []
    conflicts: list[tuple[dict, dict]] = []
    sub = HqSubscriber(
        subscriber_config(broker.port),
        store,
        on_hit=printed.append,
        on_conflict=lambda message, first: conflicts.append((message, first)),
    )
    sub.start()
    assert sub.wait_subscribed(TIMEOUT)
    yield sub, printed, conflicts
    sub.close()


# --- defect 6: attacker-controlled text on HQ's console and in its log ----------------


def test_escape_control_shows_every_control_character_escaped():
    assert escape_control("front-left 粤Z1234港 AB1234") == "front-left 粤Z1234港 AB1234"
    assert escape_control("a\nb\r\tc") == "a\\nb\\r\\tc"
    assert escape_control(OSC_TITLE) == "\\x1b]0;pwned\\x07"
    # C1 (CSI as one character), DEL, line separators and a bidi override.
    assert escape_control("\x9b2J\x7f\u2028\u202e") == "\\x9b2J\\x7f\\u2028\\u202e"


def test_hq_schema_refuses_control_characters_and_overlong_text():
    assert schema_errors(forged_hit()) == ["camera", "watchlist/list", "watchlist/reason"]
    for path, value in [
        (("camera",), "front left"),  # an identifier: no blanks
        (("camera",), "front-left\n"),  # Python's $ matches before a final newline
        (("plate",), "AB1234\n"),
        (("camera",), "c" * 65),
        (("watchlist", "list"), "x" * 65),
        (("watchlist", "reason"), "r" * 1001),
        (("watchlist", "reason"), "stolen\u202eredaolnwod"),
        (("watchlist", "entry_id"), "17\n"),
        (("watchlist", "entry_plate"), "AB1234\x1b"),
        (("watchlist", "matched_text"), "AB 1234"),
        (("source",), {"file": "front.mp4\r", "first_frame": 1, "last_frame": 2}),
    ]:
        message = hit_msg()
        target = message
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        assert schema_errors(message), (path, value)
    # The schema's free text refuses what HQ's output escapes.
    for char in "\x00\t\x1f\x7f\x85\x9f\u061c\u200b\u2028\u202e\u2066\ufeff\ud800":
        message = hit_msg()
        message["watchlist"]["reason"] = f"stolen{char}"
        assert schema_errors(message) == ["watchlist/reason"], repr(char)
        assert escape_control(char) != char
    # What the car sends is still valid: reasons are free text, in any script.
    fine = hit_msg()
    fine["watchlist"]["reason"] = "報稱被盜 (reported stolen) 2026-11-01; blue Toyota"
    fine["watchlist"]["list"] = ""  # an entry without a list
    assert schema_errors(fine) == []


def schema_patterns(node: object) -> Iterator[str]:
    """Every ``pattern`` keyword's value in a schema."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str):
                yield value
            else:
                yield from schema_patterns(value)
    elif isinstance(node, list):
        for item in node:
            yield from schema_patterns(item)


def test_every_schema_pattern_ends_the_text_for_python_too():
    # Python's re (what jsonschema uses) lets "$" match before a final newline; ECMA's
    # does not. "$(?!\\n)" ends the text in both.
    for name in ("hit", "status"):
        patterns = list(schema_patterns(schema_validator(name).schema))
        assert patterns
        for pattern in patterns:
            assert pattern.startswith("^") and pattern.endswith("$(?!\\n)"), (name, pattern)


def test_status_schema_refuses_forged_vehicle_and_state_text():
    validator = schema_validator("status")
    good = status_msg("car-7", "online")
    assert list(validator.iter_errors(good)) == []
    for key, value in [
        ("vehicle_id", "car-7\n"),
        ("software", "lpr-edge\x1b]0;x\x07"),
        ("at", "now"),
    ]:
        bad = dict(good, **{key: value})
        assert list(validator.iter_errors(bad)), key


def test_format_hit_escapes_every_field():
    line = format_hit(forged_hit())
    assert "\n" not in line and ESC not in line and "\x07" not in line
    assert "rear\\n2026-11-23T08:00:02.000Z car-B front FAKE99" in line
    assert "stolen-vehicle\\x1b]0;pwned\\x07" in line


def test_hqs_log_escapes_what_a_sender_controls(store, caplog):
    # No broker needed: handle() is what paho's thread calls for each message.
    sub = HqSubscriber(MqttConfig(host="127.0.0.1", port=1), store)
    caplog.set_level("INFO", logger="edge.hq")
    topic = f"{PREFIX}/car-7{OSC_TITLE}\nHQ: hit forged/hit"
    assert sub.handle(topic, encode(hit_msg()))
    lines = [r.getMessage() for r in caplog.records]
    assert lines and all("\n" not in m and ESC not in m and "\x07" not in m for m in lines)
    assert any("car-7\\x1b]0;pwned\\x07\\nHQ: hit forged" in m for m in lines)
    assert sub.stats()["rejected"] == {"bad-topic": 1}


def test_a_forged_hit_neither_forges_a_console_line_nor_reaches_the_terminal(
    broker, publisher, tmp_path
):
    db = tmp_path / "cli.sqlite"
    args = ["--host", "127.0.0.1", "--port", str(broker.port), "--db", str(db)]
    proc, out, err = start_cli(tmp_path, *args)
    try:
        assert wait_for_text(err, "HQ: subscribed", proc), err.read_text()
        publisher.hit(forged_hit())
        real = hit_msg(vehicle="car-A")
        publisher.hit(real)
        assert wait_for_text(out, "\n", proc), err.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0, err.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    console = out.read_text()
    assert console.splitlines() == [format_hit(real)]
    log_text = err.read_text()
    assert "FAKE99" not in console and ESC not in console + log_text
    assert not any(
        line.startswith("2026-11-23T08:00:02.000Z car-B") for line in log_text.splitlines()
    )
    stats = json.loads(log_text.strip().splitlines()[-1])
    assert (stats["hits"], stats["rejected"]) == (1, {"schema": 1})


# --- defect 7: the same event_id with other content is a conflict, not a duplicate ----


def test_store_tells_a_redelivery_from_a_conflict(store):
    first = hit_msg(vehicle="car-B")
    assert store.add_hit(first).outcome is StoreOutcome.NEW
    assert store.add_hit(copy.deepcopy(first)).outcome is StoreOutcome.DUPLICATE
    # car-A's real hit with the id car-B used first: stored, flagged.
    real = hit_msg(vehicle="car-A", plate="XY987", event_id=first["event_id"])
    result = store.add_hit(real)
    assert result.outcome is StoreOutcome.CONFLICT
    assert result.first is not None and result.first["vehicle_id"] == "car-B"
    # The same vehicle sending other content under an id it used: a conflict too.
    changed = copy.deepcopy(first)
    changed["plate"] = "AB1235"
    assert store.add_hit(changed).outcome is StoreOutcome.CONFLICT
    # And a redelivery of a conflicting hit is a duplicate of it.
    assert store.add_hit(copy.deepcopy(real)).outcome is StoreOutcome.DUPLICATE
    assert store.hits() == [first, real, changed]
    assert store.hits(plate="XY987") == [real]
    assert [c["payload"] for c in store.conflicts()] == [real, changed]
    first_id = store.hit_row(first["event_id"])["id"]
    assert {c["conflict_of"] for c in store.conflicts()} == {first_id}
    assert store.counts()["hits"] == 3 and store.counts()["conflicts"] == 2


def test_a_hit_with_another_vehicles_event_id_is_not_lost(hq, publisher, store, caplog):
    sub, printed, conflicts = hq
    caplog.set_level("WARNING", logger="edge.hq")
    earlier = hit_msg(vehicle="car-B", plate="XY987")
    real = hit_msg(vehicle="car-A", event_id=earlier["event_id"])
    publisher.hit(earlier)
    publisher.hit(real)
    publisher.hit(real)  # a real re-delivery
    assert sub.wait_until(lambda: sub.stats()["received"] == 3, TIMEOUT)
    assert printed == [earlier]
    assert conflicts == [(real, earlier)]
    assert store.hits(vehicle_id="car-A") == [real]
    stats = sub.stats()
    assert (stats["hits"], stats["conflicts"], stats["duplicates"]) == (1, 1, 1)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("conflict" in w and "car-A" in w and "car-B" in w for w in warnings)


def test_the_console_prints_a_conflict_as_such(broker, publisher, tmp_path):
    db = tmp_path / "cli.sqlite"
    args = ["--host", "127.0.0.1", "--port", str(broker.port), "--db", str(db)]
    proc, out, err = start_cli(tmp_path, *args)
    earlier = hit_msg(vehicle="car-B", plate="XY987")
    real = hit_msg(vehicle="car-A", event_id=earlier["event_id"])
    try:
        assert wait_for_text(err, "HQ: subscribed", proc), err.read_text()
        publisher.hit(earlier)
        publisher.hit(real)
        assert wait_for_text(out, "CONFLICT", proc), out.read_text() + err.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0, err.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert out.read_text().splitlines() == [
        format_hit(earlier),
        f"CONFLICT {format_hit(real)} [event_id {real['event_id']} first used by car-B]",
    ]
    stats = json.loads(err.read_text().strip().splitlines()[-1])
    assert (stats["hits"], stats["conflicts"]) == (1, 1)


#: ``hits`` as the previous release made it (event_id the primary key).
PREVIOUS_HITS_TABLE = """
CREATE TABLE hits (
    event_id    TEXT PRIMARY KEY,
    vehicle_id  TEXT NOT NULL,
    camera      TEXT NOT NULL,
    plate       TEXT NOT NULL,
    observed_at TEXT NOT NULL,
    received_at TEXT NOT NULL,
    "list"      TEXT NOT NULL,
    priority    INTEGER NOT NULL,
    "match"     TEXT NOT NULL,
    covert      INTEGER NOT NULL,
    payload     TEXT NOT NULL
);
CREATE INDEX hits_plate ON hits (plate);
CREATE INDEX hits_observed ON hits (observed_at);
CREATE INDEX hits_vehicle ON hits (vehicle_id, observed_at);
CREATE TABLE audit (
    event_id    TEXT PRIMARY KEY,
    vehicle_id  TEXT NOT NULL,
    received_at TEXT NOT NULL,
    payload     TEXT NOT NULL
);
"""


def test_a_database_from_the_previous_release_is_migrated(tmp_path):
    path = tmp_path / "hq.sqlite"
    old = hit_msg(vehicle="car-B")
    record = {"event_id": old["event_id"], "vehicle_id": "car-B", "action": "check"}
    with sqlite3.connect(path) as db:
        db.executescript(PREVIOUS_HITS_TABLE)
        db.execute(
            "INSERT INTO hits VALUES (?, 'car-B', 'front-left', 'AB1234', ?, ?, "
            "'stolen-vehicle', 1, 'exact', 0, ?)",
            (old["event_id"], old["observed_at"], old["observed_at"], json.dumps(old)),
        )
        db.execute(
            "INSERT INTO audit VALUES (?, 'car-B', ?, ?)",
            (record["event_id"], old["observed_at"], json.dumps(record)),
        )
    db.close()
    with HitStore(path) as store:
        assert store.hits() == [old] and store.audit_records() == [record]
        assert store.add_hit(old).outcome is StoreOutcome.DUPLICATE
        real = hit_msg(vehicle="car-A", event_id=old["event_id"])
        assert store.add_hit(real).outcome is StoreOutcome.CONFLICT
        assert store.add_audit("car-B", record) is False
    # Opening it again changes nothing.
    with HitStore(path) as store:
        assert store.hits() == [old, real] and store.counts()["conflicts"] == 1


# --- defect 9: non-finite numbers and images that are not JPEGs -----------------------


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_are_not_json(token):
    with pytest.raises(Reject, match="not-json"):
        parse_object(b'{"confidence": %s}' % token.encode())


SVG = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>'


def test_nan_and_images_that_are_not_jpegs_are_rejected(hq, publisher, store, caplog):
    sub, printed, _ = hq
    caplog.set_level("WARNING", logger="edge.hq")
    nan = encode(hit_msg()).replace(b'"confidence":0.9312', b'"confidence":NaN')
    assert b"NaN" in nan
    svg = hit_msg()
    svg["plate_image"] = base64.b64encode(SVG).decode()
    svg_context = hit_msg()
    svg_context["context_image"] = base64.b64encode(SVG).decode()
    too_large = hit_msg()
    too_large["plate_image"] = base64.b64encode(JPEG[:4] + bytes(MAX_IMAGE_BYTES)).decode()
    cases = [
        (nan, "not-json"),
        (encode(svg), "bad-image"),
        (encode(svg_context), "bad-image"),
        (encode(too_large), "schema"),
    ]
    for payload, _ in cases:
        publisher.send(f"{PREFIX}/car-7/hit", payload)
    # "received" counts a message before it is checked: wait for the verdicts.
    assert sub.wait_until(lambda: sum(sub.stats()["rejected"].values()) == len(cases), TIMEOUT)
    assert sub.stats()["rejected"] == {"not-json": 1, "bad-image": 2, "schema": 1}
    assert store.counts()["hits"] == 0 and printed == []
    reasons = [r["reason"] for r in store.rejects()]
    assert "NaN" in reasons[0]
    assert "plate_image" in reasons[1] and "JPEG" in reasons[1]
    assert "context_image" in reasons[2]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == len(cases)
    good = hit_msg()
    publisher.hit(good)
    assert sub.wait_until(lambda: printed == [good], TIMEOUT)


# --- defect 11: the database's mode, and a database that is not one --------------------


def test_the_database_is_private_whatever_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        with HitStore(tmp_path / "hq.sqlite") as store:
            store.add_hit(hit_msg())
    finally:
        os.umask(previous)
    for path in tmp_path.iterdir():
        assert path.stat().st_mode & 0o777 == 0o600, path


def test_an_existing_database_loses_group_and_other_permissions(tmp_path):
    path = tmp_path / "hq.sqlite"
    HitStore(path).close()
    path.chmod(0o644)
    HitStore(path).close()
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_corrupt_database_is_set_aside_and_a_fresh_one_started(tmp_path, caplog):
    path = tmp_path / "hq.sqlite"
    garbage = b"this is not an SQLite database\n" * 200
    path.write_bytes(garbage)
    caplog.set_level("ERROR", logger="edge.hq")
    with HitStore(path) as store:
        message = hit_msg()
        assert store.add_hit(message).outcome is StoreOutcome.NEW
        assert store.hits() == [message]
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("hq.sqlite.corrupt-")]
    assert len(kept) == 1 and kept[0].read_bytes() == garbage
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(str(kept[0]) in e for e in errors), errors
    assert path.stat().st_mode & 0o777 == 0o600
