"""Retention and data minimisation: expired hits and non-hit reads are deleted for
good (searched for in the database files), undelivered hits never; a replay whose
reads match nothing sends HQ nothing but status and keeps no plate in the car."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.config import PrivacyConfig
from edge.delivery.outbox import Outbox
from edge.privacy.readlog import ReadLog
from edge.privacy.retention import apply_retention
from edge.synth.clips import render_clip
from edge.synth.clipspec import ClipSpec
from tests.conftest import model_path
from tests.delivery.test_hits import make_read
from tests.delivery.test_publish import Listener
from tests.mosquitto import Broker

DAY = 86400.0
EDGE = (sys.executable, "-m", "edge")


def files_containing(folder: Path, text: str) -> list[str]:
    needle = text.encode()
    return [p.name for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_delivered_hits_go_after_the_retention_and_undelivered_ones_never(tmp_path: Path):
    privacy = PrivacyConfig(hit_retention_days=28)
    with Outbox(tmp_path / "outbox.sqlite") as outbox:
        outbox.add("hit", "old", "t", b'{"plate":"OLDHIT1"}')
        outbox.add("hit", "recent", "t", b'{"plate":"NEWHIT2"}')
        outbox.add("hit", "stuck", "t", b'{"plate":"STUCK33"}')  # never acknowledged
        outbox.mark_delivered(outbox.get("old").seq)
        outbox.mark_delivered(outbox.get("recent").seq)
        now = time.time()
        assert apply_retention(privacy, outbox, now=now + 27 * DAY).hits == 0
        counts = apply_retention(privacy, outbox, now=now + 29 * DAY)
        assert counts.hits == 2
        assert outbox.get("stuck") is not None  # a hit is never lost to retention
        assert apply_retention(privacy, outbox, now=now + 400 * DAY).hits == 0
    assert files_containing(tmp_path, "OLDHIT1") == []
    assert files_containing(tmp_path, "NEWHIT2") == []
    assert files_containing(tmp_path, "STUCK33") != []


def test_reads_kept_for_keep_reads_seconds_then_gone_from_the_files(tmp_path: Path):
    privacy = PrivacyConfig(keep_reads_seconds=60)
    with Outbox(tmp_path / "outbox.sqlite") as outbox, ReadLog(tmp_path / "reads.sqlite") as log:
        read = make_read("RD4242")
        log.add(read)
        now = time.time()
        counts = apply_retention(privacy, outbox, log, now=now + 30)
        assert counts.total == 0 and log.find("RD4242")
        counts = apply_retention(privacy, outbox, log, now=now + 61)
        assert counts.logged_reads == 1
        assert log.count() == 0
    assert files_containing(tmp_path, "RD4242") == []


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    model_path("platedet-int8.onnx")
    model_path("ch_PP-OCRv4_rec_infer.onnx")
    path = tmp_path_factory.mktemp("clip") / "street.mp4"
    render_clip(path, ClipSpec(size=(960, 540), fps=15, plates=("KT4821", "HN2468"), seed=5))
    return path


def test_a_replay_with_no_hit_sends_only_status_and_keeps_no_plate(tmp_path: Path, clip: Path):
    broker = Broker(tmp_path).start()
    listener = Listener(broker.port)
    (tmp_path / "watchlist.csv").write_text("plate,list\nZZ9999,stolen-vehicle\n")
    config = tmp_path / "edge.toml"
    config.write_text(
        '[vehicle]\nid = "car-1"\n[watchlist]\npath = "watchlist.csv"\n'
        '[storage]\nstate_dir = "state"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n'
        # Reads kept an hour in the car; then the operator cuts it to a second.
        "[privacy]\nkeep_reads_seconds = 3600\n"
    )
    out = tmp_path / "analyst.jsonl"
    args = ["--log-level", "info", "replay", "--config", str(config), "--out", str(out)]
    try:
        replay = subprocess.run(
            [*EDGE, *args, str(clip)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert replay.returncode == 0, replay.stderr
        reads = [json.loads(line)["plate"] for line in out.open()]
        assert sorted(reads) == ["HN2468", "KT4821"]  # the analyst asked for them
        state = tmp_path / "state"
        assert files_containing(state, "KT4821")  # kept for keep_reads_seconds
        # Logs at INFO never name a non-hit plate.
        assert "KT4821" not in replay.stderr and "HN2468" not in replay.stderr
        config.write_text(config.read_text().replace("3600", "1"))
        time.sleep(1.2)
        purge = subprocess.run(
            [sys.executable, "-m", "edge", "purge", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert purge.returncode == 0, purge.stderr
        assert json.loads(purge.stdout)["purged"]["logged_reads"] == 2
        assert files_containing(state, "KT4821") == []
        assert files_containing(state, "HN2468") == []
        time.sleep(0.5)
        topics = {topic.rsplit("/", 1)[-1] for topic, _, _ in listener.messages}
        assert topics <= {"status", "audit"}, topics
        assert not any(b"KT4821" in p or b"HN2468" in p for _, p, _ in listener.messages)
    finally:
        listener.close()
        broker.stop()


def test_a_full_disk_deletes_non_hit_data_first_and_never_an_undelivered_hit(tmp_path: Path):
    from edge.privacy.retention import make_room

    privacy = PrivacyConfig()
    free = {"mb": 100.0}
    with Outbox(tmp_path / "outbox.sqlite") as outbox, ReadLog(tmp_path / "reads.sqlite") as log:
        log.add(make_read("RD1111"))
        outbox.add("hit", "sent", "t", b'{"plate":"SENT11"}')
        outbox.mark_delivered(outbox.get("sent").seq)
        outbox.add("hit", "waiting", "t", b'{"plate":"WAIT22"}')
        assert make_room(privacy, outbox, log, lambda: 900.0, 500) is None  # room enough

        def freed_by_reads():
            # Deleting the reads was enough.
            return free["mb"] if log.count() else 600.0

        counts = make_room(privacy, outbox, log, freed_by_reads, 500)
        assert (counts.logged_reads, counts.hits) == (1, 0)
        assert outbox.get("sent") is not None
        counts = make_room(privacy, outbox, log, lambda: 100.0, 500)  # still full
        assert counts.hits == 1 and outbox.get("sent") is None
        assert outbox.get("waiting") is not None
    assert files_containing(tmp_path, "WAIT22")


def test_the_service_schedule_applies_retention_every_minute_and_vacuums_daily(tmp_path):
    from edge.privacy.retention import RETENTION_INTERVAL_S, VACUUM_INTERVAL_S, Retention

    passes = []
    with Outbox(tmp_path / "o.sqlite") as outbox:
        schedule = Retention(PrivacyConfig(), outbox, on_purge=passes.append)
        assert schedule.tick(1000.0) is not None  # the first tick runs at once
        assert schedule.tick(1000.0 + RETENTION_INTERVAL_S / 2) is None
        assert schedule.tick(1000.0 + RETENTION_INTERVAL_S) is not None
        assert passes == []  # nothing deleted and no vacuum: nothing to audit
        schedule.tick(1000.0 + VACUUM_INTERVAL_S + 1)
        assert len(passes) == 1  # the daily vacuum is audited even with nothing deleted


def test_reads_an_older_version_queued_for_hq_are_deleted_sent_or_not(tmp_path: Path):
    """publish_reads = true is refused now; what it queued must not go to HQ later."""
    with Outbox(tmp_path / "outbox.sqlite") as outbox:
        outbox.add("read", "sent", "lpr/v1/car/read", b'{"plate":"SENT11"}')
        outbox.add("read", "queued", "lpr/v1/car/read", b'{"plate":"QUEUE2"}')
        outbox.add("hit", "hit", "lpr/v1/car/hit", b'{"plate":"HIT333"}')
        outbox.mark_delivered(outbox.get("sent").seq)
        counts = apply_retention(PrivacyConfig(), outbox)
        assert counts.published_reads == 2
        assert [m.event_id for m in outbox.pending()] == ["hit"]
    assert files_containing(tmp_path, "QUEUE2") == []
