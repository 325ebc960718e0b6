"""HQ's subscriber against a real Mosquitto: real hit messages in, SQLite out.

The test broker runs with ``persistence false``: a persistent session lives as long
as the broker process, which is all the outage tests need.
"""

from __future__ import annotations

import argparse
import base64
import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge.cli import build_parser
from edge.config import PROJECT_ROOT, MqttConfig
from edge.delivery.hits import Hit
from edge.delivery.messages import STATUS_SCHEMA, encode, hit_message
from edge.delivery.mqtt import connect, new_client
from edge.errors import UsageError
from edge.hq.command import cmd_hq
from edge.hq.console import format_hit, hit_summary_json
from edge.hq.store import HitStore, StoreOutcome
from edge.hq.subscriber import HqSubscriber
from edge.hq.validate import schema_validator
from edge.ids import new_event_id
from edge.types import PlateRead, TextCandidate
from edge.watchlist.lists import WatchlistEntry, WatchlistMatch

TIMEOUT = 30.0  # generous: the test machine may be loaded
PREFIX = "lpr/v1"
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4 + b"\xff\xd9"
ROOT = PROJECT_ROOT
#: When the test hits were read: yesterday, so that they stay well inside HQ's 28-day
#: retention (the real `lpr-edge hq` these tests run purges older hits at its start).
OBSERVED = (datetime.now(UTC) - timedelta(days=1)).replace(
    hour=8, minute=0, second=1, microsecond=125000
)
OBSERVED_ISO = OBSERVED.strftime("%Y-%m-%dT%H:%M:%S.") + "125Z"


def make_hit(
    *,
    vehicle: str = "car-7",
    plate: str = "AB1234",
    camera: str = "front-left",
    event_id: str | None = None,
    covert: bool = False,
    kind: str = "exact",
    entry_plate: str | None = None,
    jpeg: bytes | None = JPEG,
) -> Hit:
    first = OBSERVED
    read = PlateRead(
        event_id=event_id or new_event_id(),
        camera=camera,
        source="rtsp://192.0.2.10/stream",
        plate=plate,
        confidence=0.9312,
        candidates=(TextCandidate(plate, 0.9312),),
        frames=6,
        readings=5,
        first_seen=first,
        last_seen=first + timedelta(seconds=1.5),
        first_frame=None,
        last_frame=None,
        box=(100.0, 200.0, 220.0, 240.0),
        crop=None,
        last_capture_mono=0.0,
        emitted_mono=0.0,
    )
    entry = WatchlistEntry(
        plate=entry_plate or plate,
        list="stolen-vehicle",
        priority=1,
        reason="reported stolen",
        covert=covert,
        entry_id="17",
    )
    match = WatchlistMatch(entry, kind, 0.0 if kind == "exact" else 1.0, plate)
    return Hit(read, match, vehicle, None, jpeg)


def hit_msg(**kwargs) -> dict:
    return hit_message(make_hit(**kwargs))


def status_msg(vehicle: str, state: str) -> dict:
    message = {"schema": STATUS_SCHEMA, "vehicle_id": vehicle, "state": state}
    if state == "online":
        message.update(at="2026-11-23T08:00:00.000Z", software="lpr-edge 0.1.0", uptime_s=5.0)
    return message


class Publisher:
    """A plain vehicle-side paho client (MQTT 5, clean session)."""

    def __init__(self, port: int, client_id: str = "test-vehicle"):
        self.config = MqttConfig(host="127.0.0.1", port=port)
        self.client = new_client(self.config, client_id)
        self.connected = threading.Event()
        self.client.on_connect = lambda *a: self.connected.set()
        connect(self.client, self.config)
        self.client.loop_start()
        assert self.connected.wait(TIMEOUT), "publisher did not connect"

    def send(self, topic: str, payload: bytes | dict, *, retain: bool = False) -> None:
        if isinstance(payload, dict):
            payload = encode(payload)
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(TIMEOUT)
        assert info.is_published()

    def hit(self, message: dict, vehicle: str | None = None) -> None:
        self.send(f"{PREFIX}/{vehicle or message['vehicle_id']}/hit", message)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher(broker) -> Iterator[Publisher]:
    pub = Publisher(broker.port)
    yield pub
    pub.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[HitStore]:
    with HitStore(tmp_path / "hq.sqlite") as s:
        yield s


def subscriber_config(port: int) -> MqttConfig:
    return MqttConfig(
        host="127.0.0.1", port=port, reconnect_min_seconds=0.2, reconnect_max_seconds=1.0
    )


@pytest.fixture
def hq(broker, store) -> Iterator[tuple[HqSubscriber, list[dict]]]:
    printed: list[dict] = []
    sub = HqSubscriber(subscriber_config(broker.port), store, on_hit=printed.append)
    sub.start()
    assert sub.wait_subscribed(TIMEOUT)
    yield sub, printed
    sub.close()


# --- pure parts ----------------------------------------------------------------------


def test_shipped_schemas_compile_and_accept_real_messages():
    hit = hit_msg()
    assert list(schema_validator("hit").iter_errors(hit)) == []
    for state in ("online", "offline"):
        assert list(schema_validator("status").iter_errors(status_msg("car-7", state))) == []


def test_format_hit_human_line():
    assert format_hit(hit_msg()) == (
        f"{OBSERVED_ISO} car-7 front-left AB1234 stolen-vehicle P1 exact (entry 17)"
    )
    fuzzy = hit_msg(plate="AB1284", entry_plate="AB1234", kind="fuzzy", covert=True)
    assert format_hit(fuzzy).endswith("P1 fuzzy (entry 17: AB1234) covert")


def test_hit_summary_json_replaces_the_image_by_its_size():
    summary = hit_summary_json(hit_msg())
    assert "plate_image" not in summary
    assert summary["plate_image_bytes"] == len(JPEG)
    assert hit_summary_json(hit_msg(jpeg=None))["plate_image_bytes"] == 0


def test_store_dedups_and_keeps_columns(store):
    message = hit_msg(covert=True)
    assert store.add_hit(message).outcome is StoreOutcome.NEW
    assert store.add_hit(message).outcome is StoreOutcome.DUPLICATE
    row = store.hit_row(message["event_id"])
    assert row is not None
    assert (row["vehicle_id"], row["plate"], row["list"], row["priority"]) == (
        "car-7",
        "AB1234",
        "stolen-vehicle",
        1,
    )
    assert (row["match"], row["covert"], row["payload"]) == ("exact", 1, message)
    assert store.set_status(status_msg("car-7", "online")) is None
    assert store.set_status(status_msg("car-7", "offline")) == "online"
    assert store.statuses()["car-7"]["state"] == "offline"
    assert store.counts() == {
        "hits": 1,
        "vehicle_status": 1,
        "audit": 0,
        "rejects": 0,
        "withdrawals": 0,
        "conflicts": 0,
        "withdrawn": 0,
        "decisions": 0,
        "decision_conflicts": 0,
    }
    # WAL with full sync, as promised to the operator.
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_store_caps_rejects(tmp_path):
    with HitStore(tmp_path / "r.sqlite", max_rejects=50) as s:
        for i in range(300):
            s.add_reject("lpr/v1/car-1/hit", "not-json", b"x" * 5000 + str(i).encode())
        rejects = s.rejects()
    assert 50 <= len(rejects) < 150
    assert all(len(r["payload"]) == 512 and r["payload_bytes"] >= 5000 for r in rejects)


# --- with a broker -----------------------------------------------------------------------


def test_hits_are_stored_and_reported(hq, publisher, store):
    sub, printed = hq
    messages = [hit_msg(), hit_msg(vehicle="car-8", plate="XY987", camera="rear")]
    for m in messages:
        publisher.hit(m)
    assert sub.wait_until(lambda: len(printed) == 2, TIMEOUT)
    assert printed == messages
    assert store.hits() == messages
    assert [h["event_id"] for h in store.hits(vehicle_id="car-8")] == [messages[1]["event_id"]]
    stats = sub.stats()
    assert (stats["received"], stats["hits"], stats["duplicates"], stats["rejected"]) == (
        2,
        2,
        0,
        {},
    )


def test_duplicate_event_id_is_stored_once(hq, publisher, store):
    sub, printed = hq
    message = hit_msg()
    publisher.hit(message)
    publisher.hit(message)
    assert sub.wait_until(lambda: sub.stats()["received"] == 2, TIMEOUT)
    assert store.counts()["hits"] == 1
    assert len(printed) == 1
    assert sub.stats()["duplicates"] == 1


def test_malformed_messages_are_rejected_and_it_keeps_working(hq, publisher, store, caplog):
    sub, printed = hq
    missing_plate = hit_msg()
    del missing_plate["plate"]
    bad_confidence = hit_msg()
    bad_confidence["confidence"] = 1.5
    bad_image = hit_msg()
    bad_image["plate_image"] = "not base64!"
    caplog.set_level("WARNING", logger="edge.hq")
    cases = [
        ("car-7/hit", b"\x00\xffnot json at all", "not-utf8"),
        ("car-7/hit", b"{plate: AB1234", "not-json"),
        ("car-7/hit", b'[{"plate": "AB1234"}]', "not-object"),
        ("car-7/hit", encode(missing_plate), "schema"),
        ("car-7/hit", encode(bad_confidence), "schema"),
        ("car-7/hit", encode(bad_image), "bad-image"),
        ("car-9/hit", encode(hit_msg(vehicle="car-7")), "vehicle-mismatch"),
        ("car-9/status", encode(status_msg("car-7", "online")), "vehicle-mismatch"),
        ("car-7/status", encode({"vehicle_id": "car-7", "state": "parked"}), "schema"),
        ("car-7/audit", encode({"what": "login"}), "audit-no-event-id"),
    ]
    for suffix, payload, _ in cases:
        publisher.send(f"{PREFIX}/{suffix}", payload)
    assert sub.wait_until(lambda: sub.stats()["received"] == len(cases), TIMEOUT)
    expected: dict[str, int] = {}
    for _, _, reason in cases:
        expected[reason] = expected.get(reason, 0) + 1
    assert sub.stats()["rejected"] == expected
    assert store.counts()["hits"] == 0
    rejects = store.rejects()
    assert [r["reason"].split(":")[0] for r in rejects] == [reason for *_, reason in cases]
    assert rejects[3]["topic"] == f"{PREFIX}/car-7/hit"
    assert "plate" in rejects[3]["reason"]
    assert "confidence" in rejects[4]["reason"]
    # Logged with topic and reason, never the payload (the image is in most of them).
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == len(cases)
    assert all(len(w) < 400 and base64.b64encode(JPEG)[:40].decode() not in w for w in warnings)
    # Still working afterwards.
    good = hit_msg()
    publisher.hit(good)
    assert sub.wait_until(lambda: printed == [good], TIMEOUT)


def test_status_and_audit(hq, publisher, store):
    sub, _ = hq
    changes: list[tuple[str, str | None]] = []
    sub.on_status = lambda m, prev: changes.append((m["state"], prev))
    publisher.send(f"{PREFIX}/car-7/status", status_msg("car-7", "online"), retain=True)
    publisher.send(f"{PREFIX}/car-7/status", status_msg("car-7", "online"), retain=True)
    publisher.send(f"{PREFIX}/car-7/status", status_msg("car-7", "offline"), retain=True)
    record = {"event_id": new_event_id(), "vehicle_id": "car-7", "action": "watchlist-check"}
    publisher.send(f"{PREFIX}/car-7/audit", record)
    publisher.send(f"{PREFIX}/car-7/audit", record)
    publisher.send(f"{PREFIX}/car-7/status", b"", retain=True)  # clears the retained status
    assert sub.wait_until(lambda: sub.stats()["received"] == 6, TIMEOUT)
    assert changes == [("online", None), ("offline", "online")]
    assert store.statuses()["car-7"]["state"] == "offline"
    assert store.audit_records() == [record]
    stats = sub.stats()
    assert (stats["statuses"], stats["audit"], stats["duplicates"], stats["ignored"]) == (
        3,
        1,
        1,
        1,
    )
    assert stats["rejected"] == {}


def test_a_new_session_gets_each_vehicles_retained_status(broker, publisher, store):
    publisher.send(f"{PREFIX}/car-5/status", status_msg("car-5", "online"), retain=True)
    with HqSubscriber(subscriber_config(broker.port), store, client_id="hq-fresh") as sub:
        assert sub.wait_until(lambda: "car-5" in store.statuses(), TIMEOUT)
    assert store.statuses()["car-5"]["message"] == status_msg("car-5", "online")


def test_hits_sent_while_hq_is_away_arrive_when_it_returns(broker, publisher, store):
    config = subscriber_config(broker.port)
    first = HqSubscriber(config, store, client_id="hq-outage-test")
    with first:
        assert first.wait_subscribed(TIMEOUT)
        assert first.session_present is False
    # HQ is down: the broker queues for its session.
    sent = [hit_msg(plate=f"AB{n}") for n in range(1, 6)]
    for m in sent:
        publisher.hit(m)
    assert store.counts()["hits"] == 0
    printed: list[dict] = []
    second = HqSubscriber(config, store, client_id="hq-outage-test", on_hit=printed.append)
    with second:
        assert second.wait_until(lambda: len(printed) == len(sent), TIMEOUT)
        assert second.session_present is True
    assert sorted(m["event_id"] for m in printed) == sorted(m["event_id"] for m in sent)
    assert store.counts()["hits"] == len(sent)


def test_a_failed_commit_is_not_acknowledged_and_comes_again(hq, publisher, store):
    sub, printed = hq
    # Messages are stored in batches (one transaction each): the batch holding the
    # hit fails to commit once.
    real_add = store.add_batch
    failures = []

    def failing_once(ops):
        if not failures:
            failures.extend(op[1]["event_id"] for op in ops)
            raise sqlite3.OperationalError("database or disk is full")
        return real_add(ops)

    store.add_batch = failing_once
    message = hit_msg()
    publisher.hit(message)
    # The broker sends it again once the subscriber has reconnected.
    assert sub.wait_until(lambda: printed == [message], TIMEOUT)
    assert failures == [message["event_id"]]
    stats = sub.stats()
    assert stats["store_errors"] == 1
    assert stats["connects"] >= 2
    assert store.counts()["hits"] == 1


# --- the command -------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["hq", *argv])


def start_cli(tmp_path: Path, *argv: str) -> tuple[subprocess.Popen, Path, Path]:
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge", "hq", *argv], cwd=ROOT, stdout=o, stderr=e
        )
    return proc, out, err


def wait_for_text(path: Path, text: str, proc: subprocess.Popen) -> bool:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return True
        if proc.poll() is not None:
            return text in path.read_text(errors="replace")
        time.sleep(0.05)
    return False


def test_cmd_hq_json_until_sigterm(broker, publisher, tmp_path):
    db = tmp_path / "cli.sqlite"
    args = ["--host", "127.0.0.1", "--port", str(broker.port), "--db", str(db), "--json"]
    proc, out, err = start_cli(tmp_path, *args)
    try:
        assert wait_for_text(err, "HQ: subscribed", proc), err.read_text()
        message = hit_msg()
        publisher.hit(message)
        assert wait_for_text(out, "\n", proc), err.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0, err.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = out.read_text().splitlines()
    assert len(lines) == 1
    printed = json.loads(lines[0])
    assert printed == hit_summary_json(message)
    assert printed["plate_image_bytes"] == len(JPEG)
    stats = json.loads(err.read_text().strip().splitlines()[-1])
    assert (stats["received"], stats["hits"], stats["db"]) == (1, 1, str(db))
    with HitStore(db) as s:
        assert s.hits() == [message]


def test_cmd_hq_human_with_duration_gets_what_was_queued(broker, publisher, store, tmp_path):
    # A session for the command's client id exists (HQ ran before) ...
    config = subscriber_config(broker.port)
    with HqSubscriber(config, store, client_id="hq-cli-test") as sub:
        assert sub.wait_subscribed(TIMEOUT)
    # ... and while it is away a car comes online and reports a hit.
    publisher.send(f"{PREFIX}/car-7/status", status_msg("car-7", "online"), retain=True)
    message = hit_msg()
    publisher.hit(message)
    args = ["--host", "127.0.0.1", "--port", str(broker.port), "--client-id", "hq-cli-test"]
    args += ["--db", str(tmp_path / "cli.sqlite"), "--duration", "3"]
    proc, out, err = start_cli(tmp_path, *args)
    try:
        assert proc.wait(TIMEOUT + 3) == 0, err.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert out.read_text().splitlines() == [format_hit(message)]
    errors = err.read_text()
    # Queued while away, and not sent again as retained: the session was resumed.
    assert errors.count("2026-11-23T08:00:00.000Z car-7 online") == 1
    stats = json.loads(errors.strip().splitlines()[-1])
    assert (stats["hits"], stats["statuses"], stats["rejected"]) == (1, 1, {})


def test_cmd_hq_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="--ca-file"):
        cmd_hq(parse("--ca-file", str(tmp_path / "missing.pem"), "--db", str(tmp_path / "a.db")))
    with pytest.raises(UsageError, match="go together"):
        cmd_hq(parse("--cert-file", str(tmp_path / "c.pem")))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(UsageError, match="TLS"):
        cmd_hq(parse("--tls", "--ca-file", str(garbage), "--db", str(tmp_path / "b.db")))
    with pytest.raises(UsageError, match="--prefix"):
        cmd_hq(parse("--prefix", "lpr/#"))
    with pytest.raises(UsageError, match="--duration"):
        cmd_hq(parse("--duration", "0"))
    with pytest.raises(UsageError, match="--db"):
        cmd_hq(parse("--db", str(tmp_path)))  # a directory


def test_cmd_hq_defaults(monkeypatch):
    from edge.hq.command import _mqtt_config

    monkeypatch.setenv("LPR_EDGE_HQ_PASSWORD", "from-env")
    config = _mqtt_config(parse())
    assert (config.host, config.port, config.topic_prefix, config.client_id) == (
        "localhost",
        1883,
        "lpr/v1",
        "lpr-edge-hq",
    )
    assert config.password == "from-env" and not config.tls.enabled
    assert _mqtt_config(parse("--tls", "--password", "x")).port == 8883
    assert _mqtt_config(parse("--tls", "--password", "x")).password == "x"
