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
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge.config import MqttConfig
from edge.delivery.outbox import Outbox
from edge.hq.store import HitStore
from edge.hq.subscriber import HqSubscriber
from edge.synth.clips import render_clip
from edge.synth.clipspec import ClipSpec
from tests.conftest import model_path
from tests.mosquitto import Broker, durable_broker, free_port

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
    from edge.vehicle.delivery import Delivery

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


def gpx_drive(start: datetime, seconds: int) -> str:
    """A drive due north at 36 km/h (10 m/s) from 22.3 N 114.17 E, one point every 2 s."""
    points = []
    for t in range(0, seconds + 1, 2):
        lat = 22.3 + t * 10 / 111_195  # metres to degrees of latitude
        moment = (start + timedelta(seconds=t)).strftime("%Y-%m-%dT%H:%M:%SZ")
        points.append(f'<trkpt lat="{lat:.7f}" lon="114.17"><time>{moment}</time></trkpt>')
    return (
        '<?xml version="1.0"?><gpx version="1.1" xmlns="http://www.topografix.com/GPX/1/1">'
        f"<trk><trkseg>{''.join(points)}</trkseg></trk></gpx>"
    )


def test_replay_with_a_gps_track_puts_every_read_and_hit_where_the_car_was(
    tmp_path: Path, clip: Path
):
    start = datetime(2026, 11, 23, 8, 0, 0, tzinfo=UTC)
    track = tmp_path / "drive.gpx"
    track.write_text(gpx_drive(start, 120))
    config = edge_config(tmp_path, 1, {"e1": "KT4821"})
    config.write_text(config.read_text().replace('host = "127.0.0.1"', 'host = ""'))
    out = tmp_path / "reads.jsonl"
    args = ["--start", "2026-11-23T08:00:00Z", "--gps", str(track), "--out", str(out)]
    proc = subprocess.run(
        [*EDGE, "replay", "--config", str(config), *args, str(clip)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    reads = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(reads) >= 4
    for read in reads:
        seen = datetime.fromisoformat(read["first_seen"].replace("Z", "+00:00"))
        t = (seen - start).total_seconds()
        position = read["position"]
        # Interpolated along the drive: 10 m/s north, heading 0, 36 km/h.
        assert position["lat"] == pytest.approx(22.3 + t * 10 / 111_195, abs=2e-6)
        assert position["lon"] == pytest.approx(114.17)
        assert position["speed_kmh"] == pytest.approx(36.0, abs=0.5)
        assert not position["stale"]
    hits = [json.loads(line) for line in proc.stdout.splitlines() if '"lpr.hit/1"' in line]
    assert [h["plate"] for h in hits] == ["KT4821"]
    assert hits[0]["position"]["lat"] > 22.3

    bad = tmp_path / "bad.gpx"
    bad.write_text("<gpx><trk><trkseg>")
    proc = subprocess.run(
        [*EDGE, "replay", "--config", str(config), "--gps", str(bad), str(clip)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "bad.gpx" in proc.stderr


def test_the_live_service_puts_the_gpsd_fix_on_its_hits(tmp_path: Path, clip: Path):
    from tests.fakegpsd import FakeGpsd, tpv

    (tmp_path / "watchlist.csv").write_text("plate,list\nKT4821,stolen-vehicle\n")
    config = tmp_path / "edge.toml"
    with FakeGpsd() as gpsd:
        config.write_text(
            '[vehicle]\nid = "car-1"\n[watchlist]\npath = "watchlist.csv"\n'
            '[storage]\nstate_dir = "state"\n'
            f'[gps]\nsource = "gpsd"\nport = {gpsd.port}\nmax_fix_age_seconds = 5\n'
            f'[[cameras]]\nname = "front-left"\nsource = "{clip}"\n'
        )
        proc = subprocess.Popen(
            [*EDGE, "run", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert gpsd.wait_watching(timeout=60)
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            gpsd.send(tpv(datetime.now(UTC), 22.28, 114.16, track=90.0, speed=5.0))
            time.sleep(0.2)
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr[-3000:]
    hits = [json.loads(line) for line in stdout.splitlines() if '"lpr.hit/1"' in line]
    assert [h["plate"] for h in hits] == ["KT4821"]
    position = hits[0]["position"]
    assert (position["lat"], position["lon"], position["heading"]) == (22.28, 114.16, 90.0)
    assert position["speed_kmh"] == pytest.approx(18.0) and position["age_s"] < 1.0
    status = json.loads((tmp_path / "state" / "status.json").read_text())
    assert status["gps"]["source"] == "gpsd" and status["gps"]["lat"] == 22.28
