"""The officer's decisions (lpr.decision/1): checked against the hits the car holds,
kept in the outbox behind their hit, audited, corrected by a later decision, sent to
a real Mosquitto across an outage and a restart."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from edge.config import ConfigError, load_config
from edge.delivery.decisions import (
    DECISION_SCHEMA,
    NOTE_MAX_LENGTH,
    DecisionDesk,
    DecisionRefused,
)
from edge.delivery.hits import make_hit
from edge.delivery.messages import encode, hit_message
from edge.delivery.mqtt import Topics
from edge.delivery.outbox import Outbox
from edge.delivery.publish import MqttPublisher
from edge.watchlist.lists import Watchlist
from tests.delivery.test_hits import T0, entry, make_read
from tests.delivery.test_publish import Listener, mqtt
from tests.mosquitto import durable_broker

SCHEMA = json.loads(resources.files("edge").joinpath("data/decision.schema.json").read_text())
TOPICS = Topics("lpr/v1", "car-1")
REASONS = ("misread", "plate-on-another-vehicle")


def add_hit(outbox: Outbox, plate: str = "AB1234", *, covert: bool = False) -> str:
    read = make_read(plate)
    match = Watchlist([entry(plate, covert=covert, list="stolen-vehicle")]).match(plate, at=T0)
    hit = make_hit(read, match, "car-1", image_max_bytes=20000)
    outbox.add("hit", hit.event_id, TOPICS.hit, encode(hit_message(hit)))
    return hit.event_id


@pytest.fixture
def outbox(tmp_path):
    with Outbox(tmp_path / "outbox.sqlite") as box:
        yield box


def desk(outbox: Outbox, audited: list | None = None, **kw) -> DecisionDesk:
    return DecisionDesk(
        outbox,
        TOPICS,
        reject_reasons=REASONS,
        audit=(audited.append if audited is not None else lambda d: None),
        **kw,
    )


def test_accept_and_reject_are_valid_messages_kept_in_the_outbox(outbox):
    audited: list[dict] = []
    taker = desk(outbox, audited, officer="PC 4711")
    first, second = add_hit(outbox, "AB1234"), add_hit(outbox, "XY987")
    accept = taker.decide(first, "accept")
    reject = taker.decide(second, "reject", "misread", note="  read 8 as B\n twice ")
    for message in (accept, reject):
        jsonschema.validate(message, SCHEMA)
        assert message["schema"] == DECISION_SCHEMA and message["vehicle_id"] == "car-1"
        kept = outbox.get(message["event_id"])
        assert kept.topic == "lpr/v1/car-1/decision" and json.loads(kept.payload) == message
    assert accept["reason"] is None and accept["officer"] == "PC 4711"
    assert reject["note"] == "read 8 as B twice"
    assert [a["decision"] for a in audited] == ["accept", "reject"]
    assert audited[1]["hit_event_id"] == second and audited[1]["reason"] == "misread"
    assert audited[1]["plate"] == "XY987"
    # Behind its hit in the queue, so HQ gets the hit first.
    pending = [m.event_id for m in outbox.pending()]
    assert pending.index(second) < pending.index(reject["event_id"])


def test_the_schema_wants_a_reason_for_a_reject_and_none_for_an_accept(outbox):
    message = desk(outbox).decide(add_hit(outbox), "reject", "misread")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**message, "reason": None}, SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**message, "decision": "accept"}, SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**message, "note": "a\x1b[2Jb"}, SCHEMA)


@pytest.mark.parametrize(
    ("decision", "reason", "note", "status", "why"),
    [
        ("maybe", None, None, 400, "decision"),
        ("reject", None, None, 400, "reason"),
        ("reject", "not-in-the-list", None, 400, "reason"),
        ("accept", "misread", None, 400, "reason"),
        ("accept", None, "x" * (NOTE_MAX_LENGTH + 1), 400, "longer"),
        ("accept", None, "bidi \u202e override", 400, "\\u202e"),
        ("accept", None, "escape \x1b[31m", 400, "\\x1b"),
    ],
)
def test_bad_decisions_are_refused_and_nothing_is_kept(outbox, decision, reason, note, status, why):
    hit = add_hit(outbox)
    with pytest.raises(DecisionRefused, match=why.replace("\\", "\\\\")) as refused:
        desk(outbox).decide(hit, decision, reason, note)
    assert refused.value.status == status
    assert outbox.on_topic(TOPICS.decision) == []


def test_unknown_covert_and_withdrawn_ids_are_refused_alike(outbox):
    taker = desk(outbox)
    covert = add_hit(outbox, "CV1234", covert=True)
    outbox.add("hit", "w-1", TOPICS.hit, encode({"schema": "lpr.withdrawal/1"}))
    for hit_id in (covert, "w-1", "0190a0a0-0000-7000-8000-000000000000", 42):
        with pytest.raises(DecisionRefused) as refused:
            taker.decide(hit_id, "accept")
        assert refused.value.status == 404
    assert outbox.on_topic(TOPICS.decision) == []


def test_a_second_decision_corrects_the_first_and_both_are_sent(outbox):
    taker = desk(outbox)
    hit = add_hit(outbox)
    first = taker.decide(hit, "accept")
    second = taker.decide(hit, "reject", "plate-on-another-vehicle")
    assert first["supersedes"] is None and second["supersedes"] == first["event_id"]
    assert taker.latest([hit]) == {hit: second}
    assert len(outbox.on_topic(TOPICS.decision)) == 2


def test_decisions_reach_the_broker_through_an_outage_and_a_restart(tmp_path: Path):
    broker = durable_broker(tmp_path)
    path = tmp_path / "outbox.sqlite"
    with Outbox(path) as box:  # the car, offline: decided, then switched off
        hit = add_hit(box)
        taken = desk(box).decide(hit, "reject", "misread")
    broker.start()
    listener = Listener(broker.port)
    outbox = Outbox(path)
    publisher = MqttPublisher(mqtt(broker.port), "car-1", outbox).start()
    try:
        assert publisher.wait_delivered(30)
        assert listener.wait_for(lambda: listener.payloads(TOPICS.decision))
    finally:
        publisher.close()
        listener.close()
        outbox.close()
        broker.stop()
    (payload,) = set(listener.payloads(TOPICS.decision))
    message = json.loads(payload)
    jsonschema.validate(message, SCHEMA)
    assert message == taken
    assert listener.payloads(TOPICS.hit)  # the hit too, before it


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('listen = "localhost"', "'console.listen' expected an IP address"),
        ('listen = "0.0.0.0"', "'console.listen' 0.0.0.0 listens on every interface"),
        ('listen = "::"', "'console.listen' :: listens on every interface"),
        ('token = "short"', "'console.token' expected at least 16"),
        ("reject_reasons = []", "'console.reject_reasons' expected at least one"),
        ('reject_reasons = ["mis read"]', "'console.reject_reasons[0]' expected 1 to 64"),
        ('reject_reasons = ["a", "a"]', "'console.reject_reasons[1]' 'a' is listed twice"),
        ("port = 70000", "'console.port' expected a value between 0 and 65535"),
        ('officer = "PC\\u001b1"', "'console.officer' expected at most 64"),
        ("enabeld = true", "unknown key 'console.enabeld' (did you mean 'enabled'?)"),
    ],
)
def test_console_settings_are_checked_at_load_naming_the_key(tmp_path, text, expected):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, f"[console]\n{text}\n"), environ={})
    assert any(expected in p for p in err.value.problems), err.value.problems


def test_console_token_from_the_environment_is_masked(tmp_path):
    from edge.config import to_dict

    config = load_config(
        write(tmp_path, "[console]\nenabled = true\n"),
        environ={"LPR_EDGE_CONSOLE_TOKEN": "0123456789abcdef-env"},
    )
    assert config.console.token == "0123456789abcdef-env"
    assert to_dict(config)["console"]["token"] == "********"


def test_the_decision_in_force_skips_what_is_not_a_decision_object(outbox):
    hit = add_hit(outbox)
    taken = desk(outbox).decide(hit, "accept")
    # Damaged or foreign payloads on the decision topic: valid JSON, not an object.
    for n, payload in enumerate((b"[1, 2]", b'"text"', b"7")):
        outbox.add("hit", f"odd-{n}", TOPICS.decision, payload)
    assert desk(outbox).latest() == {hit: taken}
