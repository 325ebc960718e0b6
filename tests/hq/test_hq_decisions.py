"""Officers' decisions (lpr.decision/1) in HQ's two stores: stored once per message,
a reused event id kept and flagged, a decision before its hit flagged until the hit
comes, the layout migrated from version 3 keeping its rows, and a purge taking the
decisions with their hit; the subscriber validates and counts them (real Mosquitto)."""

from __future__ import annotations

import copy
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from edge.hq.console import decision_summary_json, format_decision
from edge.hq.pgstore import MIGRATIONS, SCHEMA_VERSION, PostgresStore
from edge.hq.store import HitStore, StoreOutcome
from edge.hq.subscriber import HqSubscriber
from edge.ids import new_event_id
from tests.hq.test_hq import PREFIX, TIMEOUT, Publisher, hit_msg, subscriber_config
from tests.hq.test_hq_retention import FUTURE, OLD, everything_before, recent, seen


def decision_of(hit: dict, decision: str = "accept", **changes) -> dict:
    """A decision as the car's lpr.decision/1 message spells it."""
    message = {
        "schema": "lpr.decision/1",
        "event_id": new_event_id(),
        "hit_event_id": hit["event_id"],
        "vehicle_id": hit["vehicle_id"],
        "decision": decision,
        "reason": "misread" if decision == "reject" else None,
        "note": None,
        "officer": "PC 4711",
        "decided_at": "2026-11-23T08:00:09.250Z",
        "supersedes": None,
    }
    message.update(changes)
    return message


@pytest.fixture(params=["sqlite", "postgres"])
def any_store(request, tmp_path: Path) -> Iterator[HitStore | PostgresStore]:
    if request.param == "sqlite":
        store = HitStore(tmp_path / "hq.sqlite")
    else:
        store = PostgresStore(request.getfixturevalue("postgres").fresh_url())
    with store:
        yield store


def test_decisions_stored_once_conflicts_flagged_and_linked_to_their_hit(any_store):
    store = any_store
    hit = hit_msg(vehicle="car-7")
    store.add_hit(hit)
    accept = decision_of(hit)
    stored = store.add_decision(accept)
    assert stored.outcome is StoreOutcome.NEW and stored.hit == hit
    assert store.add_decision(copy.deepcopy(accept)).outcome is StoreOutcome.DUPLICATE
    # The officer corrects it: a new message naming the one it replaces.
    reject = decision_of(hit, "reject", supersedes=accept["event_id"], note="<b>2nd</b> look")
    assert store.add_decision(reject).outcome is StoreOutcome.NEW
    # Another message reusing the accept's id: kept, flagged.
    reuse = decision_of(hit, "reject", event_id=accept["event_id"])
    conflict = store.add_decision(reuse)
    assert conflict.outcome is StoreOutcome.CONFLICT and conflict.first == accept
    rows = store.decisions([hit["event_id"]])
    assert [r["payload"] for r in rows] == [accept, reject, reuse]
    assert [r["conflict_of"] is not None for r in rows] == [False, False, True]
    assert rows[2]["conflict_of"] == rows[0]["id"]
    assert (rows[1]["decision"], rows[1]["reason"], rows[1]["supersedes"]) == (
        "reject",
        "misread",
        accept["event_id"],
    )
    assert {r["hit_missing"] for r in rows} == {0}
    counts = store.counts()
    assert (counts["decisions"], counts["decision_conflicts"]) == (3, 1)
    # A decision on another vehicle's hit of the same id does not link to it.
    other = decision_of(hit, vehicle_id="car-8")
    assert store.add_decision(other).hit is None
    assert store.decisions(vehicle_id="car-8")[0]["hit_missing"] == 1


def test_a_decision_before_its_hit_is_flagged_until_the_hit_comes(any_store):
    store = any_store
    hit = hit_msg(vehicle="car-7")
    early = decision_of(hit, "reject", reason="plate-on-another-vehicle")
    stored = store.add_decision(early)
    assert stored.outcome is StoreOutcome.NEW and stored.hit is None
    assert store.decisions()[0]["hit_missing"] == 1
    store.add_hit(hit)
    assert store.decisions()[0]["hit_missing"] == 0


def test_purge_takes_decisions_with_their_hit(any_store):
    store = any_store
    old, kept, held = seen(OLD, plate="AB1"), seen(recent(), plate="AB2"), seen(OLD, plate="AB3")
    for hit in (old, kept, held):
        store.add_hit(hit)
        store.add_decision(decision_of(hit))
    store.hold(held["event_id"], "C-1", user="u")
    orphan = decision_of(seen(recent()))  # its hit never came
    store.add_decision(orphan)
    before = everything_before(hits=recent()[:10] + "T00:00:00.000Z")
    assert store.purge(before, user="u", policy={}, dry_run=True)["decisions"] == 1
    counts = store.purge(before, user="u", policy={})
    assert (counts["hits"], counts["decisions"]) == (1, 1)
    left = {r["hit_event_id"] for r in store.decisions()}
    assert left == {kept["event_id"], held["event_id"], orphan["hit_event_id"]}
    # The orphan goes a hits' period after it arrived.
    assert store.purge(everything_before(hits=FUTURE), user="u", policy={})["decisions"] >= 1
    assert orphan["hit_event_id"] not in {r["hit_event_id"] for r in store.decisions()}


def test_a_version_3_sqlite_database_gets_decisions_keeping_its_rows(tmp_path):
    path = tmp_path / "hq.sqlite"
    hit = hit_msg()
    with HitStore(path) as store:
        store.add_hit(hit)
    # Version 3 is version 4 without the decisions table.
    with sqlite3.connect(path) as db:
        db.executescript("DROP TABLE decisions; PRAGMA user_version = 3;")
    db.close()
    with HitStore(path) as store:
        assert store.hits() == [hit]
        assert store.add_decision(decision_of(hit)).hit == hit
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 4
        indexes = {r[1] for r in db.execute("PRAGMA index_list(decisions)")}
    db.close()
    assert {"decisions_event", "decisions_of", "decisions_received"} <= indexes


def test_a_version_3_postgres_database_gets_decisions_keeping_its_rows(postgres):
    url = postgres.fresh_url()
    hit = hit_msg()
    with psycopg.connect(url, autocommit=True) as db, db.transaction():
        db.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, "
                   "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")  # fmt: skip
        for version in (1, 2, 3):
            db.execute(MIGRATIONS[version])
            db.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
    with PostgresStore(url) as store:
        store.add_hit(hit)
    with psycopg.connect(url, autocommit=True) as db, db.transaction():
        # (Version 5's functions name the decisions table: they go with it.)
        db.execute("DROP FUNCTION hq_store_hit, hq_insert_hit")
        db.execute("DROP TABLE decisions")
        db.execute("DELETE FROM schema_version WHERE version >= 4")
    with PostgresStore(url) as store:
        assert store.found_version == 3 and store.schema_version() == SCHEMA_VERSION
        assert store.hits() == [hit]
        assert store.add_decision(decision_of(hit)).hit == hit


def test_subscriber_validates_stores_and_counts_decisions(broker, tmp_path):
    hit = hit_msg(vehicle="car-7")
    seen_decisions: list[tuple[dict, dict | None]] = []
    with HitStore(tmp_path / "hq.sqlite") as store:
        sub = HqSubscriber(
            subscriber_config(broker.port),
            store,
            on_decision=lambda message, found: seen_decisions.append((message, found)),
        )
        with sub:
            assert sub.wait_subscribed(TIMEOUT)
            pub = Publisher(broker.port)
            try:
                pub.hit(hit)
                good = decision_of(hit, "reject", reason="wrong-state")
                early = decision_of(hit_msg(vehicle="car-7"))
                pub.send(f"{PREFIX}/car-7/decision", good)
                pub.send(f"{PREFIX}/car-7/decision", good)  # a redelivery
                pub.send(f"{PREFIX}/car-7/decision", early)
                # Another vehicle's topic; a reject without its reason.
                pub.send(f"{PREFIX}/car-8/decision", decision_of(hit))
                pub.send(f"{PREFIX}/car-7/decision", decision_of(hit, "reject", reason=None))
                assert sub.wait_until(lambda: sub.stats()["received"] == 6, TIMEOUT)
            finally:
                pub.close()
        stats = sub.stats()
        assert (stats["decisions"], stats["decisions_unknown"], stats["duplicates"]) == (2, 1, 1)
        assert stats["rejected"] == {"schema": 1, "vehicle-mismatch": 1}
        assert [(m["event_id"], h is not None) for m, h in seen_decisions] == [
            (good["event_id"], True),
            (early["event_id"], False),
        ]
        assert [r["payload"] for r in store.decisions()] == [good, early]


def test_decisions_printed_on_hqs_console_escaped():
    hit = hit_msg(vehicle="car-7", plate="AB1234")
    reject = decision_of(hit, "reject", reason="wrong-state", supersedes=new_event_id())
    line = format_decision(reject, hit)
    assert line.startswith(f"DECISION reject {hit['event_id']} (plate AB1234 from vehicle car-7")
    assert "wrong-state" in line and "officer PC 4711" in line and "corrects" in line
    assert "a hit HQ does not hold" in format_decision(decision_of(hit), None)
    # Text the schema refuses, were it ever stored, still cannot drive the terminal.
    hostile = decision_of(hit, officer="PC\x1b[2J\n4711")
    assert "\x1b" not in format_decision(hostile, hit) and "\\x1b" in format_decision(hostile, hit)
    assert decision_summary_json(reject, None)["plate"] is None
