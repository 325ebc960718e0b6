"""Hits end to end with a real Mosquitto: `lpr-edge replay` (the real pipeline on a
generated clip) -> watchlist -> outbox -> MQTT -> the HQ subscriber; through a broker
outage in the middle of a replay, and across a SIGKILL of the edge process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.config import MqttConfig
from edge.hq import HitStore, HqSubscriber
from edge.outbox import Outbox
from edge.synthclip import ClipSpec, render_clip
from tests.conftest import model_path
from tests.mosquitto import Broker, free_port

PLATES = ("KT4821", "PX507", "AB88", "HN2468", "TV135")
# Slow enough, played in real time, that the broker can be stopped between hits.
CLIP = ClipSpec(size=(960, 540), fps=15, plates=PLATES, seed=5)
TIMEOUT = 60.0
EDGE = (sys.executable, "-m", "edge")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    model_path("platedet-int8.onnx")
    model_path("ch_PP-OCRv4_rec_infer.onnx")
    path = tmp_path_factory.mktemp("clip") / "dashcam.mp4"
    render_clip(path, CLIP)
    return path


def durable_broker(workdir: Path) -> Broker:
    """A broker that keeps sessions across a restart, as HQ's does."""
    port = free_port()
    (workdir / "db").mkdir()
    return Broker(
        workdir,
        port=port,
        config_text=(
            f"listener {port} 127.0.0.1\nallow_anonymous true\nuser root\n"
            f"persistence true\npersistence_location {workdir / 'db'}/\n"
            f"log_dest file {workdir / 'mosquitto.log'}\n"
        ),
    )


def edge_config(tmp_path: Path, port: int, listed: dict[str, str]) -> Path:
    rows = ["plate,list,priority,reason,entry_id"]
    rows += [f"{plate},stolen-vehicle,2,test,{entry}" for entry, plate in listed.items()]
    (tmp_path / "watchlist.csv").write_text("\n".join(rows) + "\n")
    config = tmp_path / "edge.toml"
    config.write_text(
        f'[vehicle]\nid = "car-1"\n[watchlist]\npath = "watchlist.csv"\n'
        f'[storage]\nstate_dir = "state"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\n'
        "reconnect_min_seconds = 0.2\nreconnect_max_seconds = 1.0\n"
    )
    return config


class Hq:
    """The HQ subscriber with its own database, as `lpr-edge hq` runs it."""

    def __init__(self, tmp_path: Path, port: int):
        self.store = HitStore(tmp_path / "hq.sqlite")
        config = MqttConfig(
            host="127.0.0.1", port=port, reconnect_min_seconds=0.2, reconnect_max_seconds=1
        )
        self.subscriber = HqSubscriber(config, self.store).start()
        assert self.subscriber.wait_subscribed(TIMEOUT)

    def plates(self) -> list[str]:
        return [h["plate"] for h in self.store.hits()]

    def event_ids(self) -> set[str]:
        return {h["event_id"] for h in self.store.hits()}

    def wait_for(self, count: int) -> bool:
        return self.subscriber.wait_until(lambda: len(self.store.hits()) >= count, TIMEOUT)

    def close(self):
        self.subscriber.close()
        self.store.close()


def replay(config: Path, clip: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "edge", "replay", "--config", str(config), *extra, str(clip)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def summary(stderr: str) -> dict:
    lines = [line for line in stderr.splitlines() if line.startswith('{"summary"')]
    assert lines, stderr
    return json.loads(lines[-1])["summary"]


def test_hits_from_a_replay_arrive_at_hq(tmp_path: Path, clip: Path):
    broker = Broker(tmp_path).start()
    hq = Hq(tmp_path, broker.port)
    try:
        # One plate listed as is, one with a look-alike (0 for O): fuzzy; one wildcard.
        listed = {"e1": "KT4821", "e2": "PX5O7", "e3": "HN24*"}
        config = edge_config(tmp_path, broker.port, listed)
        proc = replay(config, clip)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        result = summary(err)
        assert (result["hits"], result["undelivered"]) == (3, 0)
        assert hq.wait_for(3)
        hits = {h["plate"]: h for h in hq.store.hits()}
        assert set(hits) == {"KT4821", "PX507", "HN2468"}
        assert [hits[p]["watchlist"]["match"] for p in ("KT4821", "PX507", "HN2468")] == [
            "exact",
            "fuzzy",
            "wildcard",
        ]
        assert all(h["vehicle_id"] == "car-1" and h["plate_image"] for h in hits.values())
        assert hq.subscriber.stats()["rejected"] == {}
        # Nothing about the two reads that matched nothing reached the broker.
        assert not set(hq.plates()) & {"AB88", "TV135"}
    finally:
        hq.close()
        broker.stop()


def test_every_hit_arrives_when_the_broker_stops_in_the_middle_of_a_replay(
    tmp_path: Path, clip: Path
):
    broker = durable_broker(tmp_path).start()
    hq = Hq(tmp_path, broker.port)
    try:
        config = edge_config(tmp_path, broker.port, {f"e{i}": p for i, p in enumerate(PLATES)})
        proc = replay(config, clip, "--realtime", "--wait-delivery", "60")
        assert hq.wait_for(1), "no hit before the outage"
        broker.stop()
        during = len(hq.store.hits())
        time.sleep(2.0)
        broker.start()
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        result = summary(err)
        assert result["undelivered"] == 0
        assert hq.wait_for(result["hits"])
        produced = result["hits"]
        received = len(hq.store.hits())
        duplicates = hq.subscriber.stats()["duplicates"]
        print(
            f"outage: {produced} hits produced, {received} received ({during} before the "
            f"outage), {duplicates} duplicates dropped at HQ"
        )
        assert produced >= 4 and received == produced
        assert during < produced, "the outage came after the last hit: nothing was tested"
    finally:
        hq.close()
        broker.stop()


def test_hits_in_the_outbox_survive_sigkill_and_are_sent_after_restart(tmp_path: Path, clip: Path):
    port = free_port()
    config = edge_config(tmp_path, port, {f"e{i}": p for i, p in enumerate(PLATES)})
    # No broker yet: the car is out of coverage. The hits pile up in the outbox.
    proc = replay(config, clip, "--wait-delivery", "600")
    outbox_path = tmp_path / "state" / "outbox.sqlite"
    deadline = time.monotonic() + 300
    committed: list[str] = []
    while time.monotonic() < deadline and proc.poll() is None:
        if outbox_path.exists():
            with Outbox(outbox_path) as outbox:
                committed = [m.event_id for m in outbox.pending(100) if m.kind == "hit"]
            if len(committed) >= 4:
                break
        time.sleep(0.2)
    # Killed outright: no clean shutdown, no flush.
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert len(committed) >= 4, proc.stderr.read()
    with Outbox(outbox_path) as outbox:
        committed = [m.event_id for m in outbox.pending(100) if m.kind == "hit"]

    broker = Broker(tmp_path, port=port).start()
    hq = Hq(tmp_path, port)
    try:
        # Back in coverage: the restarted edge sends what the killed one left.
        flush = subprocess.run(
            [sys.executable, "-m", "edge", "outbox", "flush", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert flush.returncode == 0, flush.stderr
        assert hq.wait_for(len(committed))
        assert hq.event_ids() == set(committed)
        print(f"kill -9: {len(committed)} hits in the outbox, {len(hq.event_ids())} received")
        status = subprocess.run(
            [sys.executable, "-m", "edge", "outbox", "status", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert json.loads(status.stdout)["pending"] == 0
    finally:
        hq.close()
        broker.stop()


def test_one_sender_per_outbox_and_publish_fails_fast_without_a_broker(tmp_path: Path):
    """A second process on the same state directory leaves sending to the first (two
    connections under one vehicle id push each other off)."""
    from edge.config import load_config
    from edge.dispatch import Delivery

    port = free_port()  # nothing listens there
    config = load_config(edge_config(tmp_path, port, {"e1": "KT4821"}))
    with Delivery(config) as service:
        assert service.publisher is not None
        flush = subprocess.run(
            [*EDGE, "outbox", "flush", "--config", str(config.source_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert flush.returncode == 1 and "sends the outbox itself" in flush.stderr
        with Delivery(config) as second:
            assert second.publisher is None and second.handed_over
    doc = tmp_path / "doc.json"
    doc.write_text('{"schema": "lpr.watchlist/1", "signature": {}}')
    began = time.monotonic()
    where = ["--host", "127.0.0.1", "--port", str(port)]
    publish = subprocess.run(
        [*EDGE, "watchlist", "publish", str(doc), *where],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert publish.returncode == 1 and "connection failed" in publish.stderr
    assert time.monotonic() - began < 20
