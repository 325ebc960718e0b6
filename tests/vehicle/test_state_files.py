"""The car's state files under trouble: a full disk, damaged databases, a clock that
ran ahead, and files made under a loose umask."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.config import PrivacyConfig
from edge.delivery.outbox import Outbox
from edge.privacy.readlog import ReadLog
from edge.privacy.retention import apply_retention
from tests.delivery.test_hits import make_read
from tests.fulldisk import namespaces_available, run_in_small_disk

DAY = 86400.0
EDGE = (sys.executable, "-m", "edge")

no_namespace = namespaces_available()
needs_small_disk = pytest.mark.skipif(
    no_namespace is not None, reason=f"a full disk needs a mount namespace: {no_namespace}"
)


def inside(tmp_path: Path, scenario: str, *extra: str, size_kb: int = 512) -> dict:
    disk, work = tmp_path / "disk", tmp_path / "work"
    work.mkdir()
    done = run_in_small_disk(
        disk,
        size_kb,
        [sys.executable, "-m", "tests.fulldisk", scenario, str(disk), str(work), *extra],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


# --------------------------------------------------------------------- full disk


@needs_small_disk
def test_hits_on_a_full_disk_alert_stay_in_memory_and_are_written_once_there_is_room(
    tmp_path: Path,
):
    report = inside(tmp_path, "running")
    plates = ["FD1001", "FD1002", "FD1003"]
    assert report["hits_made"] == plates  # none dropped ("delivering read failed")
    assert sorted(report["alerted"]) == plates  # the officer is told at once
    assert report["echoed"] == 3
    outbox = report["status_outbox"]
    # The 3 hits held in memory, and the audit copies queued for HQ before the disk
    # filled.
    assert outbox["unsaved"] == 3 and outbox["pending"] >= 3
    assert "held in memory" in outbox["alarm"]  # raised in status and the heartbeat
    assert report["unsaved_after_free"] == 0
    assert report["in_outbox"] == plates  # on disk, in order, once space came back


@needs_small_disk
def test_a_disk_full_at_start_neither_stops_the_service_nor_empties_the_config_hash(
    tmp_path: Path,
):
    report = inside(tmp_path, "full-at-start")
    plates = ["FD1001", "FD1002", "FD1003"]
    assert report["hits_made"] == plates
    assert sorted(report["alerted"]) == plates
    assert report["status_outbox"]["unsaved"] == 3
    # Never a 0-byte hash: absent (could not be written) or whole.
    assert report["config_hash_bytes"] in (None, 65)
    assert report["in_outbox"] == plates


@needs_small_disk
def test_hits_the_full_disk_refused_still_reach_hq_from_memory(tmp_path: Path):
    from tests.delivery.test_publish import Listener
    from tests.mosquitto import Broker

    broker = Broker(tmp_path).start()
    listener = Listener(broker.port)
    try:
        report = inside(tmp_path, "sending", str(broker.port))
        hits = [json.loads(p)["plate"] for p in listener.payloads("lpr/v1/car-1/hit")]
    finally:
        listener.close()
        broker.stop()
    assert report["unsaved_while_full"] == 2
    assert report["delivered_while_full"]  # acknowledged while still only in memory
    assert sorted(hits) == ["FD2001", "FD2002"]
    assert report["unsaved_after_free"] == 0
    # Written once there was room, as delivered: not sent again, purged on time.
    assert report["pending_after"] == 0
    assert report["delivered_on_disk"] == ["FD2001", "FD2002"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    from edge.synth.clips import render_clip
    from edge.synth.clipspec import ClipSpec
    from tests.conftest import model_path

    model_path("platedet-int8.onnx")
    path = tmp_path_factory.mktemp("clip") / "street.mp4"
    render_clip(path, ClipSpec(size=(960, 540), fps=15, plates=("KT4821", "HN2468"), seed=5))
    return path


@needs_small_disk
def test_a_replay_on_a_full_disk_finishes_the_file_and_waits_for_room_for_its_hits(
    tmp_path: Path, clip: Path
):
    report = inside(tmp_path, "replay", str(clip), "KT4821,HN2468", size_kb=1024)
    assert report["waited"], report["stderr_tail"]
    assert report["returncode"] == 0, report["stderr_tail"]
    assert report["in_out_file"] == ["HN2468", "KT4821"]
    assert report["in_outbox"] == ["HN2468", "KT4821"]


# --------------------------------------------------------------------- damage


def damage_pages(path: Path, first_page: int, pages: int = 1) -> None:
    """Overwrite whole database pages with noise, as a torn write or a failing card
    does."""
    page = sqlite3.connect(path).execute("PRAGMA page_size").fetchone()[0]
    with open(path, "r+b") as fh:
        fh.seek(first_page * page)
        fh.write(os.urandom(page * pages))


def test_an_outbox_that_is_not_a_database_is_set_aside_and_a_fresh_one_started(
    tmp_path: Path,
):
    path = tmp_path / "outbox.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with Outbox(path) as outbox:
        assert outbox.recovery is not None
        kept = outbox.recovery.set_aside_as
        assert kept.read_bytes().startswith(b"this is not a database")  # never deleted
        assert outbox.add("hit", "after", "t", b"x")
        assert [m.event_id for m in outbox.pending()] == ["after"]


def test_a_damaged_outbox_gives_back_every_row_it_can_still_read(tmp_path: Path):
    path = tmp_path / "outbox.sqlite"
    with Outbox(path) as outbox:
        for i in range(400):
            outbox.add("hit", f"e{i:03d}", "t", os.urandom(600))
        outbox.mark_delivered(outbox.get("e000").seq)
        outbox.compact()
    pages = path.stat().st_size // 4096
    damage_pages(path, pages // 2)
    with Outbox(path) as outbox:
        recovery = outbox.recovery
        assert recovery is not None and recovery.incomplete
        recovered = recovery.rows_recovered["outbox"]
        # One torn page loses the rows it held (or, for a b-tree page, the rows under
        # it); the rest come back in their order, with their delivered stamps.
        assert 0 < recovered < 400
        pending = [m.event_id for m in outbox.pending(500)]
        delivered = outbox.stats().delivered
        assert len(pending) + delivered == recovered and delivered <= 1
        assert pending == sorted(pending)
    assert recovery.set_aside_as.exists()


def test_a_damaged_read_log_is_set_aside_too(tmp_path: Path):
    path = tmp_path / "reads.sqlite"
    path.write_bytes(os.urandom(8192))
    with ReadLog(path) as log:
        assert log.recovery is not None and log.recovery.set_aside_as.exists()
        log.add(make_read("RL1234"))
        assert log.count() == 1


def write_config(tmp_path: Path, **sections: str) -> Path:
    (tmp_path / "watchlist.csv").write_text("plate,list\nKT4821,stolen-vehicle\n")
    config = tmp_path / "edge.toml"
    config.write_text(
        '[vehicle]\nid = "car-1"\n[watchlist]\npath = "watchlist.csv"\n'
        '[storage]\nstate_dir = "state"\n' + "".join(sections.values())
    )
    return config


def test_outbox_status_and_replay_go_on_past_a_corrupt_outbox_and_audit_it(
    tmp_path: Path, clip: Path
):
    config = write_config(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    (state / "outbox.sqlite").write_bytes(b"\x00garbage" * 512)
    status = subprocess.run(
        [*EDGE, "outbox", "status", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert status.returncode == 0, status.stderr
    # Only the audit record of the recovery, queued for HQ.
    assert json.loads(status.stdout)["pending"] == 1
    assert "Traceback" not in status.stderr and "is damaged" in status.stderr
    kept = sorted(p.name for p in state.glob("outbox.sqlite.corrupt-*"))
    assert len(kept) == 1
    (state / "outbox.sqlite").write_bytes(b"\x00garbage again" * 512)
    replay = subprocess.run(
        [*EDGE, "replay", "--config", str(config), "--out", str(tmp_path / "o.jsonl"), str(clip)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert replay.returncode == 0, replay.stderr
    assert "is damaged" in replay.stderr
    assert len(list(state.glob("outbox.sqlite.corrupt-*"))) == 2
    with Outbox(state / "outbox.sqlite") as outbox:
        hits = [json.loads(m.payload)["plate"] for m in outbox.pending() if m.kind == "hit"]
    assert hits == ["KT4821"]
    audit = [json.loads(line) for line in (state / "audit.jsonl").read_text().splitlines()]
    recovered = [r["details"] for r in audit if r["action"] == "state.recovered"]
    assert len(recovered) == 2 and recovered[0]["file"] == "outbox.sqlite"


# --------------------------------------------------------------------- clock


def test_a_clock_that_ran_ahead_does_not_keep_delivered_hits_past_retention(tmp_path: Path):
    privacy = PrivacyConfig(hit_retention_days=28, keep_reads_seconds=3600)
    now = time.time()
    ahead = now + 400 * DAY  # the clock stepped forward 400 days, then back
    with Outbox(tmp_path / "outbox.sqlite") as outbox, ReadLog(tmp_path / "reads.sqlite") as log:
        outbox.add("hit", "sent-while-ahead", "t", b"{}", now=ahead)
        outbox.mark_delivered(outbox.get("sent-while-ahead").seq, now=ahead)
        outbox.add("hit", "stuck", "t", b"{}", now=ahead)
        log.add(make_read("CL0CK1"), now=ahead)
        assert apply_retention(privacy, outbox, log, now=now).total == 0
        # Counted from when the clock came back, not from the future stamp.
        counts = apply_retention(privacy, outbox, log, now=now + 29 * DAY)
        assert (counts.hits, counts.logged_reads) == (1, 1)
        assert outbox.get("sent-while-ahead") is None
        assert outbox.get("stuck") is not None  # undelivered: never deleted
        assert outbox.stats(now=now).oldest_pending_age_s == 0.0


# --------------------------------------------------------------------- modes


def test_state_databases_are_owner_only_whatever_the_umask(tmp_path: Path):
    old = os.umask(0o022)
    try:
        with Outbox(tmp_path / "outbox.sqlite") as outbox, ReadLog(tmp_path / "r.sqlite") as log:
            outbox.add("hit", "e", "t", b"{}")
            log.add(make_read("MD0600"))
            for path in tmp_path.iterdir():
                assert path.stat().st_mode & 0o777 == 0o600, path.name
    finally:
        os.umask(old)
    # An outbox made 0644 by an older version is tightened when opened.
    (tmp_path / "outbox.sqlite").chmod(0o644)
    Outbox(tmp_path / "outbox.sqlite").close()
    assert (tmp_path / "outbox.sqlite").stat().st_mode & 0o777 == 0o600


# --------------------------------------------------------------------- heartbeat


def test_a_vehicle_with_no_watchlist_in_force_sends_a_heartbeat_hq_accepts(tmp_path: Path):
    from edge.config import load_config
    from edge.delivery.messages import STATUS_SCHEMA, encode
    from edge.hq.validate import validate_status
    from edge.timefmt import now_iso
    from edge.vehicle.delivery import Delivery

    config = tmp_path / "edge.toml"
    config.write_text('[vehicle]\nid = "car-1"\n[storage]\nstate_dir = "state"\n')
    with Delivery(load_config(config)) as delivery:
        assert not delivery.watchlists.lists()
        # As MqttPublisher builds it.
        heartbeat = {
            "schema": STATUS_SCHEMA,
            "vehicle_id": "car-1",
            "state": "online",
            "at": now_iso(),
            **delivery.status(),
        }
    validate_status(json.loads(encode(heartbeat)), "car-1")  # raises when rejected
    assert heartbeat["watchlist"] is not None


def test_a_state_dir_that_cannot_be_made_is_a_configuration_error_not_a_traceback(
    tmp_path: Path, clip: Path
):
    (tmp_path / "blocker").write_text("a file where the state folder should go")
    config = tmp_path / "edge.toml"
    config.write_text('[vehicle]\nid = "car-1"\n[storage]\nstate_dir = "blocker/lpr-edge"\n')
    replay = subprocess.run(
        [*EDGE, "replay", "--config", str(config), str(clip)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert replay.returncode == 2, replay.stderr
    assert "Traceback" not in replay.stderr
    assert "'storage.state_dir'" in replay.stderr and "is not a directory" in replay.stderr
