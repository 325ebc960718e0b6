"""The MQTT stage against a real Mosquitto: outbox delivery through outages, refused
messages kept, retained status with a last will, pushed watchlists handed over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edge.config import MqttConfig
from edge.delivery.mqtt import connect, new_client
from edge.delivery.outbox import Outbox
from edge.delivery.publish import MqttPublisher
from edge.waits import poll_until
from tests.mosquitto import Broker, durable_broker


class Listener:
    """A plain subscriber recording (topic, payload, retained) for assertions."""

    def __init__(self, port: int, topic: str = "lpr/v1/#", *, persistent: bool = False):
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        config = MqttConfig(host="127.0.0.1", port=port, reconnect_min_seconds=0.2)
        self.client = new_client(config, f"listener-{time.monotonic_ns()}")
        self.subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe(topic, 1)
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        connect(self.client, config, persistent=persistent)
        self.client.loop_start()
        assert self.subscribed.wait(10)

    def _on_message(self, client, userdata, message):
        with self.lock:
            self.messages.append((message.topic, bytes(message.payload), message.retain))

    def payloads(self, topic: str) -> list[bytes]:
        with self.lock:
            return [p for t, p, _ in self.messages if t == topic]

    def wait_for(self, predicate, timeout: float = 20.0) -> bool:
        return poll_until(predicate, timeout, interval=0.05)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def mqtt(port: int, **kw) -> MqttConfig:
    return MqttConfig(
        host="127.0.0.1", port=port, reconnect_min_seconds=0.2, reconnect_max_seconds=1, **kw
    )


def add_hits(outbox: Outbox, start: int, n: int) -> list[bytes]:
    payloads = []
    for i in range(start, start + n):
        payload = json.dumps({"n": i}).encode()
        outbox.add("hit", f"event-{i:04d}", "lpr/v1/car-1/hit", payload)
        payloads.append(payload)
    return payloads


def test_every_hit_arrives_through_a_broker_outage_in_order(tmp_path: Path):
    # HQ's subscriber keeps its session through the outage, as in production: the
    # publisher may deliver the backlog before the subscriber has reconnected.
    broker = durable_broker(tmp_path).start()
    listener = Listener(broker.port, persistent=True)
    outbox = Outbox(tmp_path / "outbox.sqlite")
    expected = add_hits(outbox, 0, 40)  # a backlog from before the connection
    publisher = MqttPublisher(mqtt(broker.port), "car-1", outbox).start()
    try:
        assert publisher.wait_delivered(20)
        broker.stop()
        expected += add_hits(outbox, 40, 30)  # made while the broker is away
        publisher.wake()
        time.sleep(0.5)
        assert outbox.stats().pending == 30
        broker.start()
        assert publisher.wait_delivered(30)
        assert listener.wait_for(lambda: len(set(listener.payloads("lpr/v1/car-1/hit"))) == 70)
    finally:
        publisher.close()
        listener.close()
        outbox.close()
        broker.stop()
    received = listener.payloads("lpr/v1/car-1/hit")
    assert set(received) == set(expected)
    # Oldest first within each connection: the first copy of each arrives in order.
    firsts = list(dict.fromkeys(received))
    assert firsts == expected


def test_a_message_the_broker_refuses_stays_in_the_outbox(tmp_path: Path):
    acl = tmp_path / "acl"
    acl.write_text("topic write lpr/v1/car-1/status\ntopic write lpr/v1/car-1/hit\n")
    # Started as root, mosquitto drops to user "mosquitto", who cannot read pytest's
    # folders; the test broker stays the user that runs the tests.
    broker = Broker(tmp_path, extra_config=f"user root\nacl_file {acl}\n").start()
    outbox = Outbox(tmp_path / "outbox.sqlite")
    outbox.add("hit", "allowed", "lpr/v1/car-1/hit", b"{}")
    outbox.add("hit", "refused", "lpr/v1/car-2/hit", b"{}")
    publisher = MqttPublisher(mqtt(broker.port), "car-1", outbox).start()
    try:
        poll_until(lambda: publisher.stats.refused > 0, 20, interval=0.05)
        assert publisher.stats.refused >= 1
        assert outbox.is_delivered("allowed")
        assert not outbox.is_delivered("refused")
        assert "refused" in publisher.stats.last_error
    finally:
        publisher.close()
        outbox.close()
        broker.stop()


def test_status_is_retained_online_then_offline_and_the_will_covers_a_kill(tmp_path: Path):
    broker = Broker(tmp_path).start()
    topic = "lpr/v1/car-1/status"
    try:
        outbox = Outbox(tmp_path / "outbox.sqlite")
        publisher = MqttPublisher(
            mqtt(broker.port, heartbeat_seconds=1), "car-1", outbox, status=lambda: {"x": 1}
        ).start()
        listener = Listener(broker.port, topic)
        assert listener.wait_for(lambda: len(listener.payloads(topic)) >= 2)
        beat = json.loads(listener.payloads(topic)[-1])
        assert (beat["state"], beat["x"], beat["schema"]) == ("online", 1, "lpr.status/1")
        publisher.close()
        outbox.close()
        assert listener.wait_for(lambda: b'"offline"' in listener.payloads(topic)[-1])
        listener.close()

        # A process killed outright: the broker publishes the retained will.
        script = (
            "import sys, time\n"
            "from edge.config import MqttConfig\nfrom edge.delivery.outbox import Outbox\n"
            "from edge.delivery.publish import MqttPublisher\n"
            f"p = MqttPublisher(MqttConfig(host='127.0.0.1', port={broker.port}), 'car-1',"
            f" Outbox({str(tmp_path / 'o2.sqlite')!r})).start()\n"
            "while not p.connected: time.sleep(0.05)\n"
            "print('up', flush=True)\ntime.sleep(60)\n"
        )
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "up"
        late = Listener(broker.port, topic)  # joins later: sees the retained message
        assert late.wait_for(lambda: late.payloads(topic) and b"online" in late.payloads(topic)[-1])
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert late.wait_for(lambda: b'"offline"' in late.payloads(topic)[-1])
        late.close()
        again = Listener(broker.port, topic)
        assert again.wait_for(lambda: again.payloads(topic) != [])
        retained = json.loads(again.payloads(topic)[-1])
        assert retained["state"] == "offline"
        again.close()
    finally:
        broker.stop()


def test_pushed_watchlists_reach_the_handler_from_both_topics(tmp_path: Path):
    broker = Broker(tmp_path).start()
    got: list[tuple[str, bytes]] = []
    outbox = Outbox(tmp_path / "outbox.sqlite")
    hq = new_client(mqtt(broker.port), "hq")
    hq.connect("127.0.0.1", broker.port)
    hq.loop_start()
    # Retained before the vehicle connects: it must still get them.
    hq.publish("lpr/v1/watchlist", b"fleet-doc", qos=1, retain=True).wait_for_publish(5)
    hq.publish("lpr/v1/car-2/watchlist", b"other-car", qos=1, retain=True).wait_for_publish(5)
    publisher = MqttPublisher(
        mqtt(broker.port), "car-1", outbox, on_watchlist=lambda t, p: got.append((t, p))
    ).start()
    try:
        hq.publish("lpr/v1/car-1/watchlist", b"car-doc", qos=1, retain=True).wait_for_publish(5)
        poll_until(lambda: len(got) >= 2, 20, interval=0.05)
        time.sleep(0.3)
        assert sorted(got) == [
            ("lpr/v1/car-1/watchlist", b"car-doc"),
            ("lpr/v1/watchlist", b"fleet-doc"),
        ]
    finally:
        publisher.close()
        hq.disconnect()
        hq.loop_stop()
        outbox.close()
        broker.stop()


def test_no_host_is_a_clear_error(tmp_path: Path):
    with Outbox(tmp_path / "o.sqlite") as outbox, pytest.raises(ValueError, match="host"):
        MqttPublisher(MqttConfig(), "car-1", outbox)


def test_pushed_lists_over_mqtt_applied_or_rejected_and_the_list_in_force_stays(tmp_path):
    """The vehicle's real path: broker -> publisher -> LiveWatchlist.apply_push."""
    from edge.config import load_config
    from edge.watchlist.keys import generate_keypair, public_key_base64
    from edge.watchlist.lists import WatchlistEntry
    from edge.watchlist.live import LiveWatchlist
    from edge.watchlist.signing import sign_document

    key, public = generate_keypair()
    rogue, _ = generate_keypair()
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        f'[vehicle]\nid = "car-1"\n[watchlist]\npublic_keys = ["{public_key_base64(public)}"]\n'
        '[storage]\nstate_dir = "state"\n'
    )
    config = load_config(cfg)
    broker = Broker(tmp_path).start()
    watchlists = LiveWatchlist(config, state_dir=tmp_path / "state")
    watchlists.load()
    outbox = Outbox(tmp_path / "outbox.sqlite")
    publisher = MqttPublisher(
        mqtt(broker.port), "car-1", outbox, on_watchlist=watchlists.apply_push
    ).start()
    hq = new_client(mqtt(broker.port), "hq")
    hq.connect("127.0.0.1", broker.port)
    hq.loop_start()

    def push(topic: str, payload: bytes) -> None:
        hq.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)

    def wait(predicate) -> bool:
        return poll_until(predicate, 20, interval=0.05)

    def rejection() -> str | None:
        last = watchlists.status()["last_rejection"]
        return last and last["code"]

    try:
        v5 = sign_document([WatchlistEntry("AB1234", entry_id="a")], 5, key)
        push("lpr/v1/watchlist", v5)
        assert wait(lambda: watchlists.pushed_list("fleet") is not None)
        assert watchlists.status()["fleet"]["version"] == 5
        # Signed by a key the car does not trust.
        push("lpr/v1/watchlist", sign_document([WatchlistEntry("EVIL1")], 6, rogue))
        assert wait(lambda: rejection() == "unknown_key")
        # Tampered after signing.
        tampered = sign_document([WatchlistEntry("XY1")], 7, key).replace(b"XY1", b"XY2")
        push("lpr/v1/car-1/watchlist", tampered)
        assert wait(lambda: rejection() == "bad_signature")
        # Older than the list in force; then not JSON at all.
        push("lpr/v1/watchlist", sign_document([WatchlistEntry("OLD1")], 4, key))
        assert wait(lambda: rejection() == "stale")
        push("lpr/v1/car-1/watchlist", b"not json")
        assert wait(lambda: rejection() == "malformed")
        assert watchlists.pushed_list("fleet").version == 5
        assert [e.plate for e in watchlists.pushed_list("fleet").watchlist.entries()] == ["AB1234"]
        # A newer one is applied, and kept for the next start.
        push("lpr/v1/car-1/watchlist", sign_document([WatchlistEntry("NEW9")], 8, key))
        assert wait(lambda: watchlists.pushed_list("fleet").version == 8)
        restarted = LiveWatchlist(config, state_dir=tmp_path / "state")
        restarted.load()
        assert restarted.pushed_list("fleet").version == 8
    finally:
        publisher.close()
        hq.disconnect()
        hq.loop_stop()
        outbox.close()
        broker.stop()
