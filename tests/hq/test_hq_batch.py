"""HQ stores messages in batches (one transaction each, acknowledged after its
commit): a batch comes out as the same messages one at a time would, on both stores;
a batch that cannot commit is not acknowledged and comes again, stored once; a fault
with one message does not hold back the others; several PostgreSQL writers taking
overlapping locks in batches do not deadlock."""

from __future__ import annotations

import copy
import json
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from edge.delivery.messages import encode
from edge.hq.pgstore import MIGRATIONS, SCHEMA_VERSION, PostgresStore
from edge.hq.store import HitStore, StoreOutcome
from edge.hq.subscriber import HqSubscriber
from edge.ids import new_event_id
from tests.hq.test_hq import (
    PREFIX,
    TIMEOUT,
    Publisher,
    hit_msg,
    status_msg,
    subscriber_config,
)
from tests.hq.test_hq_decisions import decision_of
from tests.hq.test_hq_postgres import withdrawal_of


def open_store(kind: str, tmp_path: Path, name: str, request) -> HitStore | PostgresStore:
    if kind == "sqlite":
        return HitStore(tmp_path / f"{name}.sqlite")
    return PostgresStore(request.getfixturevalue("postgres").fresh_url())


@pytest.fixture(params=["sqlite", "postgres"])
def two_stores(request, tmp_path: Path) -> Iterator[tuple]:
    a = open_store(request.param, tmp_path, "a", request)
    b = open_store(request.param, tmp_path, "b", request)
    with a, b:
        yield a, b


class Seen:
    """Everything a subscriber reports through its callbacks, in order."""

    def __init__(self):
        self.events: list[tuple] = []

    def callbacks(self) -> dict:
        return {
            "on_hit": lambda m: self.events.append(("hit", m["event_id"])),
            "on_conflict": lambda m, f: self.events.append(("conflict", m["event_id"])),
            "on_withdrawal": lambda m, h: self.events.append(("withdrawal", m["event_id"], h)),
            "on_decision": lambda m, h: self.events.append(("decision", m["event_id"], h)),
            "on_status": lambda m, p: self.events.append(("status", m["state"], p)),
        }


def mixed_messages() -> list[tuple[str, bytes]]:
    """A duplicate, a conflict, a withdrawal and a decision before their hit, a
    malformed message in the middle, statuses, audit, an empty status."""
    first = hit_msg(vehicle="car-1", plate="AB1001")
    conflict = hit_msg(vehicle="car-2", plate="AB1002", event_id=first["event_id"])
    late = hit_msg(vehicle="car-3", plate="AB1003")
    withdrawal = withdrawal_of(late)
    decision = decision_of(late)
    bad_confidence = copy.deepcopy(hit_msg(vehicle="car-1", plate="AB1004"))
    bad_confidence["confidence"] = 1.5
    audit = {"event_id": new_event_id(), "vehicle_id": "car-1", "action": "login"}

    def on(vehicle: str, kind: str, message: dict | bytes) -> tuple[str, bytes]:
        payload = message if isinstance(message, bytes) else encode(message)
        return f"{PREFIX}/{vehicle}/{kind}", payload

    return [
        on("car-1", "hit", first),
        on("car-1", "hit", first),  # a redelivery
        on("car-2", "hit", conflict),
        on("car-3", "hit", withdrawal),  # before its hit
        on("car-3", "decision", decision),  # before its hit
        on("car-1", "hit", b"{not json"),
        on("car-1", "hit", bad_confidence),
        on("car-3", "hit", late),
        on("car-3", "hit", withdrawal),  # a redelivery
        on("car-1", "status", status_msg("car-1", "online")),
        on("car-1", "status", status_msg("car-1", "offline")),
        on("car-1", "audit", audit),
        on("car-1", "audit", audit),
        on("car-9", "status", b""),
        on("car-1", "hit", hit_msg(vehicle="car-2", plate="AB1005")),  # vehicle mismatch
    ]


def contents(store) -> dict:
    """What a store holds, less what differs between two runs (row ids, times)."""

    def clean(rows: list[dict]) -> list[dict]:
        drop = ("id", "received_at", "conflict_of")
        return [{k: v for k, v in r.items() if k not in drop} for r in rows]

    return {
        "hits": store.hits(),
        "conflicts": clean(store.conflicts()),
        "withdrawals": clean(store.withdrawals()),
        "decisions": clean(store.decisions()),
        "statuses": {v: s["message"] for v, s in store.statuses().items()},
        "audit": store.audit_records(),
        "rejects": [(r["topic"], r["reason"]) for r in store.rejects()],
        "counts": store.counts(),
    }


def test_a_batch_comes_out_as_one_message_at_a_time_would(two_stores):
    batched_store, single_store = two_stores
    config = subscriber_config(1)  # (never connected: messages handed in directly)
    seen_batched, seen_single = Seen(), Seen()
    batched = HqSubscriber(config, batched_store, **seen_batched.callbacks())
    single = HqSubscriber(config, single_store, **seen_single.callbacks())
    messages = mixed_messages()
    assert batched.handle_batch(messages) == [True] * len(messages)
    assert [single.handle(topic, payload) for topic, payload in messages] == [True] * len(messages)
    assert seen_batched.events == seen_single.events
    assert batched.stats() == single.stats()
    assert contents(batched_store) == contents(single_store)
    stats = batched.stats()
    assert stats["hits"] == 2 and stats["conflicts"] == 1 and stats["duplicates"] == 3
    assert stats["withdrawals_unknown"] == 1 and stats["decisions_unknown"] == 1
    assert set(stats["rejected"]) == {"not-json", "schema", "vehicle-mismatch"}
    reasons = [reason for _topic, reason in contents(batched_store)["rejects"]]
    assert "schema: confidence: 1.5 is greater than the maximum of 1" in reasons
    # The withdrawal and the decision that came first were cleared by their hit.
    assert all(w["hit_missing"] == 0 for w in batched_store.withdrawals())
    assert all(d["hit_missing"] == 0 for d in batched_store.decisions())


def test_a_fault_with_one_message_does_not_hold_back_the_rest_of_its_batch(tmp_path):
    store = HitStore(tmp_path / "hq.sqlite")
    sub = HqSubscriber(subscriber_config(1), store)
    good = [hit_msg(plate=f"AB{n}") for n in range(1, 4)]
    cursed = hit_msg(plate="ZZ999")
    real_add = store.add_batch

    def faulty(ops):
        # A fault of ours with one message (not the storage's): the whole batch raises.
        if any(op[1].get("event_id") == cursed["event_id"] for op in ops):
            raise KeyError("a bug")
        return real_add(ops)

    store.add_batch = faulty
    batch = [(f"{PREFIX}/car-7/hit", encode(m)) for m in (good[0], cursed, *good[1:])]
    # Each is dealt with: the others stored one by one, the faulty one kept as a reject.
    assert sub.handle_batch(batch) == [True] * 4
    assert store.hits() == sorted(good, key=lambda m: m["event_id"])
    assert [r["reason"] for r in store.rejects()] == ["internal-error: KeyError"]
    assert sub.stats()["hits"] == 3 and sub.stats()["received"] == 4
    store.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_batch_that_cannot_commit_is_not_acknowledged_and_comes_again_once(
    kind, broker, tmp_path, request
):
    with open_store(kind, tmp_path, "hq", request) as store:
        config = subscriber_config(broker.port)
        client_id = f"hq-batch-{kind}"
        # Subscribed once, then away: what is sent meanwhile queues in the session
        # and arrives in a burst, batched.
        first = HqSubscriber(config, store, client_id=client_id)
        with first:
            assert first.wait_subscribed(TIMEOUT)
        sent = [hit_msg(vehicle=f"car-{n % 5}", plate=f"EF{n:04d}") for n in range(60)]
        publisher = Publisher(broker.port, "batch-fleet")
        try:
            for message in sent:
                publisher.hit(message)
        finally:
            publisher.close()
        real_add = store.add_batch
        failed: list[int] = []

        def failing_once(ops):
            if not failed:
                failed.append(len(ops))
                if kind == "sqlite":
                    raise sqlite3.OperationalError("database or disk is full")
                raise psycopg.OperationalError("server closed the connection unexpectedly")
            return real_add(ops)

        store.add_batch = failing_once
        printed: list[dict] = []
        second = HqSubscriber(config, store, client_id=client_id, on_hit=printed.append)
        with second:
            assert second.wait_until(lambda: len(printed) == len(sent), TIMEOUT)
            stats = second.stats()
        # The failed batch (all of it) was left unacknowledged, sent again, stored once.
        assert failed and stats["store_errors"] == failed[0]
        assert stats["connects"] >= 2
        assert store.counts()["hits"] == len(sent)
        assert sorted(m["event_id"] for m in store.hits()) == sorted(m["event_id"] for m in sent)
        assert sorted(m["event_id"] for m in printed) == sorted(m["event_id"] for m in sent)


def test_postgres_batches_with_overlapping_ids_in_any_order_do_not_deadlock(postgres):
    url = postgres.fresh_url()
    hits = [hit_msg(vehicle=f"car-{n % 3}", plate=f"GH{n:04d}") for n in range(40)]
    errors: list[Exception] = []

    def writer(order: list[dict]) -> None:
        try:
            with PostgresStore(url) as store:
                for start in range(0, len(order), 8):
                    chunk = order[start : start + 8]
                    ops = [("hit", m) for m in chunk]
                    ops += [("withdrawal", withdrawal_of(m, event_id=m["event_id"])) for m in chunk]
                    ops += [("status", status_msg(m["vehicle_id"], "online")) for m in chunk]
                    store.add_batch(ops)
        except Exception as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=writer, args=(order,))
        for order in (hits, hits[::-1], hits[20:] + hits[:20], hits[::2] + hits[1::2])
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT * 4)
    assert not errors and not any(t.is_alive() for t in threads)
    with PostgresStore(url) as store:
        # Each hit once, each withdrawal once (later writers saw duplicates).
        assert store.counts()["hits"] == len(hits)
        assert store.counts()["withdrawals"] == len(hits)
        assert store.counts()["withdrawn"] == len(hits)


def test_a_version_4_postgres_database_gets_the_one_round_trip_hit_functions(postgres):
    url = postgres.fresh_url()
    first = hit_msg()
    with psycopg.connect(url, autocommit=True) as db, db.transaction():
        db.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, "
                   "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")  # fmt: skip
        for version in (1, 2, 3, 4):
            db.execute(MIGRATIONS[version])
            db.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
        db.execute(
            "INSERT INTO hits (event_id, vehicle_id, camera, plate, observed_at, received_at, "
            '"list", priority, "match", covert, payload) VALUES (%s, %s, %s, %s, %s, %s, %s, '
            "%s, %s, %s, %s)",
            (
                first["event_id"],
                first["vehicle_id"],
                first["camera"],
                first["plate"],
                first["observed_at"],
                first["observed_at"],
                first["watchlist"]["list"],
                first["watchlist"]["priority"],
                first["watchlist"]["match"],
                False,
                json.dumps(first),
            ),
        )
    with PostgresStore(url) as store:
        assert store.found_version == 4 and store.schema_version() == SCHEMA_VERSION == 5
        # The row from before is found by the new path: a redelivery, then a conflict.
        assert store.add_hit(first).outcome is StoreOutcome.DUPLICATE
        other = dict(first, plate="XY0001")
        assert store.add_hit(other).outcome is StoreOutcome.CONFLICT
        assert store.add_hit(hit_msg()).outcome is StoreOutcome.NEW
        assert store.counts()["hits"] == 3 and store.counts()["conflicts"] == 1
