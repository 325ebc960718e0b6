"""HQ retention and case holds on both stores: what a purge deletes and keeps, holds
and releases, their hq_audit rows, dry runs, migrations from the previous layout,
option errors, and purges racing on PostgreSQL (tests/hq/conftest.py gives the real
server)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from edge.cli import build_parser
from edge.errors import UsageError
from edge.hq.pgstore import _LOCK_PURGE, MIGRATIONS, PostgresStore
from edge.hq.pgstore import SCHEMA_VERSION as PG_SCHEMA_VERSION
from edge.hq.retention import PeriodicPurge, RetentionPolicy
from edge.hq.store import SCHEMA_VERSION, HitStore, StoreOutcome
from edge.timefmt import iso_utc
from tests.hq.test_hq import ROOT, hit_msg, status_msg
from tests.hq.test_hq_postgres import withdrawal_of

FUTURE = "2999-01-01T00:00:00.000Z"


def days_ago(days: float) -> str:
    return iso_utc(datetime.now(UTC) - timedelta(days=days))


def recent() -> str:
    return iso_utc(datetime.now(UTC) - timedelta(hours=1))


#: Past every period used here for what it dates (hits 28 days at most, statuses and
#: rejects 7), whatever the year the tests run in.
OLD_DAYS = 60
OLD = days_ago(OLD_DAYS)


def seen(observed: str, **kwargs) -> dict:
    message = hit_msg(**kwargs)
    message["observed_at"] = observed
    return message


def open_store(url: str):
    return PostgresStore(url) if "://" in url else HitStore(url)


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path: Path) -> str:
    """An empty database (its --db) on each store."""
    if request.param == "sqlite":
        return str(tmp_path / "hq.sqlite")
    return request.getfixturevalue("postgres").fresh_url()


@pytest.fixture
def store(url) -> Iterator[HitStore | PostgresStore]:
    with open_store(url) as opened:
        yield opened


def cli(*argv: str) -> int:
    args = build_parser().parse_args(["hq", *argv])
    return args.handler(args)


def event_ids(store) -> list[str]:
    return sorted(m["event_id"] for m in store.hits())


def everything_before(**cuts: str) -> dict[str, str]:
    """Moments for StoreRetention.purge: nothing goes unless named."""
    never = "2000-01-01T00:00:00.000Z"
    return {"hits": never, "statuses": never, "rejects": never, "audit": never, **cuts}


# --- what a purge deletes and keeps ----------------------------------------------------


def test_purge_deletes_old_hits_keeps_recent_and_held_with_their_withdrawals(url, capsys):
    old, kept, held = seen(OLD, plate="AB1"), seen(recent(), plate="AB2"), seen(OLD, plate="AB3")
    with open_store(url) as store:
        for message in (old, kept, held):
            store.add_hit(message)
        for message in (old, kept, held):
            store.add_withdrawal(withdrawal_of(message))
    assert cli("hold", "--db", url, "--event-id", held["event_id"], "--case", "KC/RN/2026/1",
               "--user", "insp-chan", "--reason", "robbery, Mong Kok") == 0  # fmt: skip
    assert cli("purge", "--db", url, "--user", "insp-wong") == 0
    out = capsys.readouterr().out
    assert "hits            deleted 1\n" in out and "withdrawals     deleted 1\n" in out
    with open_store(url) as store:
        assert event_ids(store) == sorted([kept["event_id"], held["event_id"]])
        assert sorted(w["withdraws_event_id"] for w in store.withdrawals()) == event_ids(store)
        assert store.hit_row(held["event_id"])["withdrawn_by"] is not None


def test_released_hit_goes_at_the_next_purge_unless_another_case_holds_it(url):
    held = seen(OLD)
    with open_store(url) as store:
        store.add_hit(held)
    event = held["event_id"]
    for case in ("C-1", "C-2"):
        assert cli("hold", "--db", url, "--event-id", event, "--case", case, "--user", "u1") == 0
    assert cli("release", "--db", url, "--event-id", event, "--case", "C-1", "--user", "u2") == 0
    assert cli("purge", "--db", url, "--user", "u3") == 0
    with open_store(url) as store:
        assert event_ids(store) == [event]
        assert [h["case_ref"] for h in store.holds()] == ["C-2"]
    assert cli("release", "--db", url, "--event-id", event, "--case", "C-2", "--user", "u2") == 0
    assert cli("purge", "--db", url, "--user", "u3") == 0
    with open_store(url) as store:
        assert store.hits() == [] and store.holds() == []
        # A release is recorded on the hold's row, never deleted.
        rows = store.holds(released=True)
        assert [(h["case_ref"], h["released_by"]) for h in rows] == [("C-1", "u2"), ("C-2", "u2")]


def test_a_hit_goes_by_arrival_too_when_its_car_clock_ran_fast(store):
    fast = seen("2998-06-01T00:00:00.000Z")
    store.add_hit(fast)
    store.purge(everything_before(), user="u", policy={})
    assert store.hits() == [fast]
    # A moment after its arrival but before its (wrong) observed_at: it goes.
    counts = store.purge(everything_before(hits=FUTURE), user="u", policy={})
    assert counts["hits"] == 1 and store.hits() == []


def test_conflicts_go_by_their_own_age(store):
    first = seen(OLD, vehicle="car-1")
    second = seen(recent(), vehicle="car-2", event_id=first["event_id"])
    store.add_hit(first)
    assert store.add_hit(second).outcome is StoreOutcome.CONFLICT
    counts = store.purge(RetentionPolicy().before(), user="u", policy={})
    assert counts["hits"] == 1
    assert store.hits() == [second]
    assert store.conflicts()[0]["vehicle_id"] == "car-2"  # still flagged


def test_statuses_rejects_audit_and_orphan_withdrawals_by_their_own_period(store):
    store.set_status(status_msg("car-1", "online"))
    store.add_reject("lpr/car-1/hit", "not-json", b"{")
    store.add_audit("car-1", {"event_id": "a-1", "action": "service.start"})
    orphan = withdrawal_of(seen(recent()))  # its hit never came
    store.add_withdrawal(orphan)
    hit = seen(recent())
    store.add_hit(hit)
    moments = everything_before(statuses=FUTURE)
    assert store.purge(moments, user="u", policy={})["vehicle_status"] == 1
    assert store.statuses() == {} and len(store.rejects()) == 1
    assert store.purge(everything_before(rejects=FUTURE), user="u", policy={})["rejects"] == 1
    assert store.rejects() == [] and len(store.audit_records()) == 1
    assert store.purge(everything_before(audit=FUTURE), user="u", policy={})["audit"] == 1
    assert store.audit_records() == [] and store.hits() == [hit]
    # The default policy keeps a recent orphan withdrawal (its hit may yet come)...
    assert store.purge(RetentionPolicy().before(), user="u", policy={})["withdrawals"] == 0
    assert len(store.withdrawals()) == 1
    # ... and lets it go a hits' period after it arrived.
    counts = store.purge(everything_before(hits=FUTURE), user="u", policy={})
    assert counts == {
        "hits": 1,
        "withdrawals": 1,
        "decisions": 0,
        "vehicle_status": 0,
        "rejects": 0,
        "audit": 0,
    }


def test_purge_in_small_batches_skips_held_hits_and_counts_each_row_once(store):
    store.purge_batch = 3
    messages = [seen(days_ago(OLD_DAYS + day)) for day in range(1, 12)]
    for message in messages:
        store.add_hit(message)
    for message in messages[::4]:
        store.hold(message["event_id"], "C-9", user="u")
    counts = store.purge(RetentionPolicy().before(), user="u", policy={})
    assert counts["hits"] == len(messages) - len(messages[::4])
    assert event_ids(store) == sorted(m["event_id"] for m in messages[::4])


# --- dry run, holds refused, audit ---------------------------------------------------


def test_dry_run_counts_and_deletes_nothing(url, capsys):
    old = seen(OLD)
    with open_store(url) as store:
        store.add_hit(old)
        store.add_hit(seen(recent()))
        store.add_withdrawal(withdrawal_of(old))
    assert cli("purge", "--db", url, "--user", "u", "--dry-run", "--json") == 0
    dry = json.loads(capsys.readouterr().out)
    assert (dry["dry_run"], dry["hits"], dry["withdrawals"]) == (True, 1, 1)
    with open_store(url) as store:
        assert store.counts()["hits"] == 2 and store.counts()["withdrawals"] == 1
    assert cli("purge", "--db", url, "--user", "u", "--json") == 0
    done = json.loads(capsys.readouterr().out)
    assert {k: done[k] for k in ("hits", "withdrawals")} == {"hits": 1, "withdrawals": 1}


def test_hold_of_an_unknown_hit_and_other_refusals(url):
    with open_store(url) as store:
        hit = seen(recent())
        store.add_hit(hit)
    with pytest.raises(UsageError, match="no hit with event id nope is stored"):
        cli("hold", "--db", url, "--event-id", "nope", "--case", "C-1", "--user", "u")
    cli("hold", "--db", url, "--event-id", hit["event_id"], "--case", "C-1", "--user", "u")
    with pytest.raises(UsageError, match="already held for case C-1"):
        cli("hold", "--db", url, "--event-id", hit["event_id"], "--case", "C-1", "--user", "u")
    with pytest.raises(UsageError, match="case C-2 holds no hit"):
        cli("release", "--db", url, "--event-id", hit["event_id"], "--case", "C-2", "--user", "u")
    with pytest.raises(UsageError, match="--case"):
        cli(
            "hold", "--db", url, "--event-id", hit["event_id"], "--case", "no spaces", "--user", "u"
        )
    with open_store(url) as store:
        # Only what was done is audited.
        assert [row["action"] for row in store.hq_audit()] == ["hold"]


def test_purge_hold_and_release_are_audited(url, capsys):
    with open_store(url) as store:
        hit = seen(OLD)
        store.add_hit(hit)
    event = hit["event_id"]
    cli("hold", "--db", url, "--event-id", event, "--case", "C-7", "--user", "insp-lee",
        "--reason", "assault")  # fmt: skip
    cli("purge", "--db", url, "--user", "insp-ho", "--keep-hits", "14d", "--dry-run")
    cli("release", "--db", url, "--event-id", event, "--case", "C-7", "--user", "insp-lee")
    cli("purge", "--db", url, "--user", "insp-ho", "--keep-statuses", "2d")
    cli("holds", "--db", url, "--all", "--json")
    (listed,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()[-1:]]
    assert (listed["event_id"], listed["released_by"]) == (event, "insp-lee")
    with open_store(url) as store:
        rows = store.hq_audit()
    assert [(r["action"], r["user"]) for r in rows] == [
        ("hold", "insp-lee"),
        ("purge", "insp-ho"),
        ("release", "insp-lee"),
        ("purge", "insp-ho"),
    ]
    assert rows[0]["query"] == {"event_id": event, "case": "C-7", "reason": "assault"}
    dry, done = rows[1]["query"], rows[3]["query"]
    assert dry["dry_run"] and dry["policy"]["hits"] == "14d" and dry["deleted"]["hits"] == 0
    assert not done["dry_run"] and done["policy"]["statuses"] == "2d"
    assert done["policy"]["hits"] == "28d" and done["deleted"]["hits"] == 1
    assert rows[3]["result_count"] == 1 and done["before"]["hits"] < iso_utc(datetime.now(UTC))


def test_the_running_hq_purges_by_itself(store):
    store.add_hit(seen(OLD))
    with PeriodicPurge(store, RetentionPolicy(), every=3600) as purge:
        deadline = datetime.now(UTC) + timedelta(seconds=30)
        while purge.rounds == 0 and datetime.now(UTC) < deadline:
            threading.Event().wait(0.05)
    assert purge.rounds == 1 and store.hits() == []
    assert [(r["action"], r["user"]) for r in store.hq_audit()] == [("purge", "hq")]


# --- options -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["purge", "--user", "u", "--keep-hits", "0d"], "--keep-hits"),
        (["purge", "--user", "u", "--keep-hits", "29d"], "--keep-hits"),
        (["purge", "--user", "u", "--keep-statuses", "soon"], "--keep-statuses"),
        (["purge", "--user", "u", "--keep-rejects=-1h"], "--keep-rejects"),
        (["purge", "--user", "u", "--keep-audit", "7"], "--keep-audit"),
        (["purge", "--user", "no one"], "--user"),
        (["--keep-hits", "forever"], "--keep-hits"),
        (["--purge-every", "0s"], "--purge-every"),
    ],
)
def test_bad_values_are_refused_naming_the_option(tmp_path, argv, named):
    db = tmp_path / "hq.sqlite"
    run = subprocess.run(
        [sys.executable, "-m", "edge", "hq", *argv, "--db", str(db), "--port", "1"]
        if argv[0].startswith("--")
        else [sys.executable, "-m", "edge", "hq", *argv, "--db", str(db)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2, run.stderr
    assert f"error: {named} " in run.stderr
    assert not db.exists()  # refused before opening anything


# --- migrations ------------------------------------------------------------------------

#: The SQLite layout of version 2 as the release before this one made it.
VERSION_2 = """
CREATE TABLE hits (
    id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL, vehicle_id TEXT NOT NULL,
    camera TEXT NOT NULL, plate TEXT NOT NULL, observed_at TEXT NOT NULL,
    received_at TEXT NOT NULL, "list" TEXT NOT NULL, priority INTEGER NOT NULL,
    "match" TEXT NOT NULL, covert INTEGER NOT NULL, payload TEXT NOT NULL,
    conflict_of INTEGER REFERENCES hits (id), withdrawn_by TEXT
);
CREATE INDEX hits_event ON hits (event_id);
CREATE INDEX hits_conflicts ON hits (conflict_of) WHERE conflict_of IS NOT NULL;
CREATE INDEX hits_plate ON hits (plate);
CREATE INDEX hits_observed ON hits (observed_at);
CREATE INDEX hits_vehicle ON hits (vehicle_id, observed_at);
CREATE TABLE vehicle_status (vehicle_id TEXT PRIMARY KEY, state TEXT NOT NULL, "at" TEXT,
    received_at TEXT NOT NULL, payload TEXT NOT NULL);
CREATE TABLE audit (event_id TEXT PRIMARY KEY, vehicle_id TEXT NOT NULL,
    received_at TEXT NOT NULL, payload TEXT NOT NULL);
CREATE TABLE withdrawals (
    id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL, vehicle_id TEXT NOT NULL,
    withdraws_event_id TEXT NOT NULL, reason TEXT NOT NULL, "at" TEXT NOT NULL,
    received_at TEXT NOT NULL, hit_missing INTEGER NOT NULL, payload TEXT NOT NULL
);
CREATE INDEX withdrawals_event ON withdrawals (event_id);
CREATE INDEX withdrawals_of ON withdrawals (withdraws_event_id, vehicle_id);
CREATE TABLE hq_audit (id INTEGER PRIMARY KEY AUTOINCREMENT, "at" TEXT NOT NULL,
    "user" TEXT NOT NULL, action TEXT NOT NULL, query TEXT NOT NULL,
    result_count INTEGER NOT NULL);
CREATE TABLE rejects (id INTEGER PRIMARY KEY AUTOINCREMENT, received_at TEXT NOT NULL,
    topic TEXT NOT NULL, reason TEXT NOT NULL, payload_bytes INTEGER NOT NULL,
    payload TEXT NOT NULL);
PRAGMA user_version = 2;
"""

HIT_COLUMNS = (
    'event_id, vehicle_id, camera, plate, observed_at, received_at, "list", priority, '
    '"match", covert, payload'
)


def _old_hit_row(message: dict) -> tuple:
    return (message["event_id"], message["vehicle_id"], "front-left", message["plate"],
            message["observed_at"], message["observed_at"], "stolen-vehicle", 1, "exact", 0,
            json.dumps(message))  # fmt: skip


def test_a_version_2_sqlite_database_is_migrated_keeping_its_rows(tmp_path):
    path = tmp_path / "hq.sqlite"
    old, kept = seen(OLD, plate="AB1234"), seen(recent(), plate="AB1235")
    with sqlite3.connect(path) as db:
        db.executescript(VERSION_2)
        for message in (old, kept):
            db.execute(
                f"INSERT INTO hits ({HIT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                _old_hit_row(message),
            )
        db.execute(
            'INSERT INTO hq_audit ("at", "user", action, query, result_count) '
            "VALUES (?, 'u', 'search', '{}', 0)",
            (recent(),),
        )
    db.close()
    with HitStore(path) as store:
        assert store.hits() == [old, kept] and len(store.hq_audit()) == 1
        store.hold(old["event_id"], "C-1", user="u")
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
        columns = {
            name: [row[2] for row in db.execute(f"PRAGMA index_info({name})")]
            for name in ("hits_plate", "hits_list", "hits_received")
        }
    db.close()
    assert columns == {
        "hits_plate": ["plate", "observed_at"],
        "hits_list": ["list", "observed_at"],
        "hits_received": ["received_at"],
    }


def test_a_version_2_postgres_database_is_migrated_keeping_its_rows(postgres):
    url = postgres.fresh_url()
    first, conflict = seen(OLD, vehicle="car-1"), seen(recent(), vehicle="car-2")
    conflict["event_id"] = first["event_id"]
    with psycopg.connect(url, autocommit=True) as db, db.transaction():
        db.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, "
                   "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")  # fmt: skip
        for version in (1, 2):
            db.execute(MIGRATIONS[version])
            db.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
        row = list(_old_hit_row(first))
        row[9] = False
        first_id = db.execute(
            f"INSERT INTO hits ({HIT_COLUMNS}) VALUES ({', '.join(['%s'] * 11)}) RETURNING id",
            row,
        ).fetchone()[0]
        row = list(_old_hit_row(conflict))
        row[9] = False
        db.execute(
            f"INSERT INTO hits ({HIT_COLUMNS}, conflict_of) VALUES ({', '.join(['%s'] * 12)})",
            [*row, first_id],
        )
    with PostgresStore(url) as store:
        assert store.found_version == 2 and store.schema_version() == PG_SCHEMA_VERSION
        assert store.hits() == [first, conflict]
        # The first hit goes by its age though its conflict stays (no foreign key now).
        assert store.purge(RetentionPolicy().before(), user="u", policy={})["hits"] == 1
        assert store.hits() == [conflict] and len(store.conflicts()) == 1


# --- several workers on PostgreSQL -------------------------------------------------------


def test_two_purges_racing_on_postgres_delete_each_row_once(postgres):
    url = postgres.fresh_url()
    with PostgresStore(url) as store:
        messages = [seen(days_ago(OLD_DAYS + n % 28)) for n in range(120)]
        for message in messages:
            store.add_hit(message)
            if len(store.withdrawals()) < 10:
                store.add_withdrawal(withdrawal_of(message))
    start = threading.Barrier(2)
    results: list = []

    def purge() -> None:
        with PostgresStore(url) as mine:
            mine.purge_batch = 7
            start.wait()
            results.append(mine.purge(RetentionPolicy().before(), user="u", policy={}))

    workers = [threading.Thread(target=purge) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert len(results) == 2 and None not in results
    assert sum(r["hits"] for r in results) == 120
    assert sum(r["withdrawals"] for r in results) == 10
    with PostgresStore(url) as store:
        assert store.counts()["hits"] == 0
        assert [r["action"] for r in store.hq_audit()] == ["purge", "purge"]


def test_a_worker_skips_its_purge_while_another_purges(postgres):
    url = postgres.fresh_url()
    with PostgresStore(url) as store, psycopg.connect(url, autocommit=True) as other:
        store.add_hit(seen(OLD))
        other.execute("SELECT pg_advisory_lock(%s)", (_LOCK_PURGE,))
        assert store.purge(RetentionPolicy().before(), user="hq", policy={}, wait=False) is None
        assert len(store.hits()) == 1 and store.hq_audit() == []
        other.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_PURGE,))
        assert store.purge(RetentionPolicy().before(), user="hq", policy={}, wait=False)
        assert store.hits() == []


def test_a_stopped_purge_ends_between_batches_and_the_next_goes_on(store):
    store.purge_batch = 2
    for day in range(1, 7):
        store.add_hit(seen(days_ago(OLD_DAYS + day)))
    answers = iter([False])  # one batch, then asked to stop
    counts = store.purge(
        RetentionPolicy().before(), user="hq", policy={}, stopping=lambda: next(answers, True)
    )
    assert counts["hits"] == 2 and len(store.hits()) == 4
    assert store.hq_audit()[-1]["query"]["stopped"] is True
    assert store.purge(RetentionPolicy().before(), user="hq", policy={})["hits"] == 4
    assert "stopped" not in store.hq_audit()[-1]["query"]
