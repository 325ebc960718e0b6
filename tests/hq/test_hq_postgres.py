"""HQ on PostgreSQL (a real server, tests/postgres.py) and several HQ workers sharing
one subscription on a real Mosquitto: the store's outcomes are SQLite's, its layout is
migrated and versioned, and every hit is stored exactly once whatever worker gets it,
even when one is killed mid-stream."""

from __future__ import annotations

import copy
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from edge.errors import UsageError
from edge.hq.command import cmd_hq, open_store
from edge.hq.pgstore import SCHEMA_VERSION, PostgresStore, mask_url
from edge.hq.store import DatabaseVersionError, HitStore, StoreOutcome
from edge.hq.subscriber import HqSubscriber, shared
from edge.ids import new_event_id
from tests.hq.test_hq import (
    ROOT,
    TIMEOUT,
    Publisher,
    hit_msg,
    parse,
    status_msg,
    subscriber_config,
    wait_for_text,
)


def withdrawal_of(hit: dict, **changes) -> dict:
    message = {
        "schema": "lpr.withdrawal/1",
        "event_id": new_event_id(),
        "vehicle_id": hit["vehicle_id"],
        "at": "2026-11-23T08:00:05.000Z",
        "withdraws_event_id": hit["event_id"],
        "reason": "corrected",
    }
    message.update(changes)
    return message


@pytest.fixture(params=["sqlite", "postgres"])
def any_store(request, tmp_path: Path) -> Iterator[HitStore | PostgresStore]:
    """Each store-level test runs on both stores: the outcomes must be the same."""
    if request.param == "sqlite":
        store = HitStore(tmp_path / "hq.sqlite", max_rejects=50)
    else:
        store = PostgresStore(request.getfixturevalue("postgres").fresh_url(), max_rejects=50)
    with store:
        yield store


# --- the store: the same outcomes as SQLite ----------------------------------------------


def test_idempotent_insert_conflicts_and_status(any_store):
    store = any_store
    first = hit_msg(vehicle="car-B", covert=True)
    assert store.add_hit(first).outcome is StoreOutcome.NEW
    assert store.add_hit(copy.deepcopy(first)).outcome is StoreOutcome.DUPLICATE
    real = hit_msg(vehicle="car-A", plate="XY987", event_id=first["event_id"])
    result = store.add_hit(real)
    assert result.outcome is StoreOutcome.CONFLICT and result.first == first
    changed = copy.deepcopy(first)
    changed["plate"] = "AB1235"
    assert store.add_hit(changed).outcome is StoreOutcome.CONFLICT
    assert store.add_hit(copy.deepcopy(real)).outcome is StoreOutcome.DUPLICATE
    assert store.hits() == [first, real, changed]
    assert store.hits(plate="XY987") == [real] and store.hits(vehicle_id="car-A") == [real]
    row = store.hit_row(first["event_id"])
    assert row is not None and row["payload"] == first
    assert (row["vehicle_id"], row["plate"], row["list"], row["priority"], row["match"]) == (
        "car-B",
        "AB1234",
        "stolen-vehicle",
        1,
        "exact",
    )
    assert row["covert"] == 1 and row["conflict_of"] is None
    assert [c["payload"] for c in store.conflicts()] == [real, changed]
    assert {c["conflict_of"] for c in store.conflicts()} == {row["id"]}

    assert store.set_status(status_msg("car-7", "online")) is None
    assert store.set_status(status_msg("car-7", "offline")) == "online"
    assert store.statuses()["car-7"]["state"] == "offline"
    record = {"event_id": new_event_id(), "vehicle_id": "car-7", "action": "check"}
    assert store.add_audit("car-7", record) is True
    assert store.add_audit("car-7", record) is False
    assert store.audit_records() == [record]
    assert store.counts() == {
        "hits": 3,
        "vehicle_status": 1,
        "audit": 1,
        "rejects": 0,
        "withdrawals": 0,
        "conflicts": 2,
        "withdrawn": 0,
        "decisions": 0,
        "decision_conflicts": 0,
    }


def test_withdrawals_either_order(any_store):
    store = any_store
    hit = hit_msg(plate="AB1238")
    store.add_hit(hit)
    withdrawal = withdrawal_of(hit)
    stored = store.add_withdrawal(withdrawal)
    assert stored.outcome is StoreOutcome.NEW and stored.hit == hit
    assert store.add_withdrawal(copy.deepcopy(withdrawal)).outcome is StoreOutcome.DUPLICATE
    assert store.hit_row(hit["event_id"])["withdrawn_by"] == withdrawal["event_id"]
    # The withdrawal first (a redelivery overtaking its hit): flagged, then mended.
    later = hit_msg(plate="CD5678")
    early = withdrawal_of(later)
    assert store.add_withdrawal(early).hit is None
    assert store.withdrawals()[-1]["hit_missing"] == 1
    assert store.add_hit(later).outcome is StoreOutcome.NEW
    assert store.hit_row(later["event_id"])["withdrawn_by"] == early["event_id"]
    assert store.withdrawals()[-1]["hit_missing"] == 0
    # Another vehicle cannot withdraw car-7's hit.
    other = withdrawal_of(hit, vehicle_id="car-8", event_id=new_event_id())
    assert store.add_withdrawal(other).hit is None
    counts = store.counts()
    assert (counts["withdrawals"], counts["withdrawn"]) == (3, 2)


def test_rejects_are_bounded(any_store):
    store = any_store
    for i in range(300):
        store.add_reject("lpr/v1/car-1/hit", "not-json", b"x" * 5000 + str(i).encode())
    rejects = store.rejects()
    assert 50 <= len(rejects) < 150
    assert all(len(r["payload"]) == 512 and r["payload_bytes"] >= 5000 for r in rejects)
    store.add_reject("lpr/v1/car-1/hit", "not-json", b"\x00\xff nul")  # (no NUL in text)
    assert store.rejects()[-1]["payload_bytes"] == 6


# --- the PostgreSQL layout -------------------------------------------------------------


def test_migrations_from_an_empty_database_and_again(postgres):
    url = postgres.fresh_url()
    with PostgresStore(url) as store:
        assert store.found_version == 0 and store.schema_version() == SCHEMA_VERSION
        message = hit_msg()
        store.add_hit(message)
    with psycopg.connect(url) as db:
        indexes = {r[0] for r in db.execute("SELECT indexname FROM pg_indexes")}
        versions = [r[0] for r in db.execute("SELECT version FROM schema_version")]
    assert {"hits_event", "hits_plate", "hits_vehicle", "hits_observed", "hits_list"} <= indexes
    assert versions == list(range(1, SCHEMA_VERSION + 1))
    # Opening it again migrates nothing and keeps what is stored.
    with PostgresStore(url) as store:
        assert store.found_version == SCHEMA_VERSION and store.hits() == [message]


def test_a_database_of_a_newer_layout_is_refused(postgres):
    url = postgres.fresh_url()
    PostgresStore(url).close()
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("INSERT INTO schema_version (version) VALUES (%s)", (SCHEMA_VERSION + 1,))
    with pytest.raises(DatabaseVersionError, match="newer HQ"):
        PostgresStore(url)
    with pytest.raises(UsageError, match=r"--db postgresql://.*newer HQ"):
        open_store(url)


def test_bad_urls_and_unreachable_servers_name_db_and_hide_the_password(postgres, tmp_path):
    with pytest.raises(UsageError, match=r"--db postgresql://lpr:\*\*\*@.*PGPASSWORD") as info:
        open_store(f"postgresql://lpr:s3cret@127.0.0.1:{postgres.port}/lpr")
    assert "s3cret" not in str(info.value)
    with pytest.raises(UsageError, match="--db postgresql://lpr@127.0.0.1:1/x: cannot open"):
        open_store("postgresql://lpr@127.0.0.1:1/x")
    with pytest.raises(UsageError, match="--db .*cannot open"):
        open_store(f"postgresql://lpr@127.0.0.1:{postgres.port}/no_such_database")
    assert mask_url("postgresql://u:p@h:5/d") == "postgresql://u:***@h:5/d"
    assert mask_url("postgresql://u@h/d") == "postgresql://u@h/d"
    # The command's usage error (exit 2 through lpr-edge's main).
    with pytest.raises(UsageError, match="--db"):
        cmd_hq(parse("--db", "postgresql://lpr@127.0.0.1:1/x"))


def test_share_group_and_client_id_are_checked():
    assert shared("lpr/v1/+/hit", "hq-1_a") == "$share/hq-1_a/lpr/v1/+/hit"
    assert shared("lpr/v1/+/hit", None) == "lpr/v1/+/hit"
    for bad in ("", "a/b", "a+", "#", "a b", "x" * 65):
        with pytest.raises(ValueError, match="share group"):
            shared("t", bad)
        args = parse("--client-id", "hq-a")
        args.share = bad
        with pytest.raises(UsageError, match="--share"):
            cmd_hq(args)
    args = parse()
    args.share = "G"
    with pytest.raises(UsageError, match="--client-id"):
        cmd_hq(args)


def backend_alive(postgres, pid: int) -> bool:
    with psycopg.connect(f"postgresql://lpr@127.0.0.1:{postgres.port}/postgres") as db:
        query = "SELECT count(*) FROM pg_stat_activity WHERE pid = %s"
        return db.execute(query, (pid,)).fetchone()[0] > 0


def test_a_lost_database_connection_is_not_acknowledged_and_the_hit_comes_again(broker, postgres):
    url = postgres.fresh_url()
    with PostgresStore(url) as store:
        sub = HqSubscriber(subscriber_config(broker.port), store, client_id="hq-pg-lost")
        with sub:
            assert sub.wait_subscribed(TIMEOUT)
            # The server ends HQ's connection (a restart, a failover) between messages.
            pid = store._db.info.backend_pid
            postgres.sql(f"SELECT pg_terminate_backend({pid})")
            assert sub.wait_until(lambda: not backend_alive(postgres, pid), TIMEOUT)
            message = hit_msg()
            publisher = Publisher(broker.port)
            try:
                publisher.hit(message)
                assert sub.wait_until(lambda: sub.stats()["hits"] == 1, TIMEOUT)
            finally:
                publisher.close()
            stats = sub.stats()
        assert store.hits() == [message]
    # The first delivery failed to commit, was not acknowledged, and came again.
    assert stats["store_errors"] == 1 and stats["received"] == 2 and stats["connects"] == 2


# --- several workers on one shared subscription ---------------------------------------


def publish_hits(port: int, messages: list[dict], client_id: str = "fleet") -> None:
    publisher = Publisher(port, client_id)
    try:
        for message in messages:
            publisher.hit(message)
    finally:
        publisher.close()


def stored_event_ids(url: str) -> list[str]:
    with psycopg.connect(url) as db:
        return [r[0] for r in db.execute("SELECT event_id FROM hits")]


def test_two_workers_sharing_a_subscription_store_every_hit_once(broker, postgres):
    url = postgres.fresh_url()
    messages = [hit_msg(vehicle=f"car-{i % 10}", plate=f"AB{i:04d}") for i in range(200)]
    with PostgresStore(url) as store_a, PostgresStore(url) as store_b:
        workers = [
            HqSubscriber(subscriber_config(broker.port), store, client_id=cid, share="hq")
            for store, cid in ((store_a, "hq-a"), (store_b, "hq-b"))
        ]
        for worker in workers:
            worker.start()
        try:
            assert all(w.wait_subscribed(TIMEOUT) for w in workers)
            publish_hits(broker.port, messages)
            done = lambda: sum(w.stats()["hits"] for w in workers) >= len(messages)  # noqa: E731
            assert workers[0].wait_until(done, TIMEOUT)
            stats = [w.stats() for w in workers]
        finally:
            for worker in workers:
                worker.close()
    ids = stored_event_ids(url)
    assert sorted(ids) == sorted(m["event_id"] for m in messages)
    # The broker split the stream: each worker stored some, none stored any twice.
    assert all(s["hits"] > 0 for s in stats)
    assert sum(s["received"] for s in stats) == len(messages)


def start_worker(tmp_path: Path, port: int, url: str, client_id: str, tag: str):
    out, err = tmp_path / f"{tag}.out", tmp_path / f"{tag}.err"
    argv = ["hq", "--host", "127.0.0.1", "--port", str(port), "--client-id", client_id]
    argv += ["--share", "hq", "--db", url, "--json"]
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen([sys.executable, "-m", "edge", *argv], cwd=ROOT, stdout=o, stderr=e)
    assert wait_for_text(err, "HQ: subscribed", proc), err.read_text()
    return proc, out, err


def wait_for_rows(url: str, count: int) -> bool:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if len(set(stored_event_ids(url))) >= count:
            return True
        time.sleep(0.05)
    return False


def test_a_worker_killed_mid_stream_loses_nothing(broker, postgres, tmp_path):
    url = postgres.fresh_url()
    PostgresStore(url).close()  # (migrated once, before the workers start)
    messages = [hit_msg(vehicle=f"car-{i % 10}", plate=f"CD{i:04d}") for i in range(200)]
    expected = sorted(m["event_id"] for m in messages)
    procs: list[subprocess.Popen] = []
    try:
        a, _, a_err = start_worker(tmp_path, broker.port, url, "hq-a", "a1")
        b, _, b_err = start_worker(tmp_path, broker.port, url, "hq-b", "b")
        procs += [a, b]
        publishing = threading.Thread(target=publish_hits, args=(broker.port, messages))
        publishing.start()
        # Kill worker A mid-stream: whatever it had received and not acknowledged,
        # and what the broker queues for it meanwhile, stays in its session.
        assert wait_for_rows(url, 40)
        a.send_signal(signal.SIGKILL)
        a.wait(TIMEOUT)
        publishing.join(TIMEOUT)
        assert not publishing.is_alive()
        # Restarted under its client id, it gets what its session held.
        a2, _, _ = start_worker(tmp_path, broker.port, url, "hq-a", "a2")
        procs.append(a2)
        wait_for_rows(url, len(expected))
        for proc in (b, a2):
            proc.send_signal(signal.SIGTERM)
        for proc in (b, a2):
            assert proc.wait(TIMEOUT) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    ids = stored_event_ids(url)
    assert sorted(ids) == expected, (a_err.read_text()[-2000:], b_err.read_text()[-2000:])
    stats = json.loads(b_err.read_text().strip().splitlines()[-1])
    assert stats["share"] == "hq" and stats["db"] == url and stats["hits"] > 0
