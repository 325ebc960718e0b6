"""`lpr-edge hq search`: exact and look-alike plate search on both stores, its
filters and output, and the audit row every search writes (tests/hq/conftest.py
gives the real PostgreSQL)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from edge.cli import build_parser
from edge.errors import UsageError
from edge.hq.pgstore import MIGRATIONS, SCHEMA_VERSION, PostgresStore
from edge.hq.search import cmd_hq_search
from edge.hq.store import HitStore
from tests.hq.test_hq import ROOT, hit_msg
from tests.hq.test_hq_postgres import withdrawal_of


def at(message: dict, observed: str, **watchlist) -> dict:
    message["observed_at"] = observed
    message["watchlist"].update(watchlist)
    return message


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path: Path) -> Iterator[str]:
    """A database (its --db) holding a few hits, on each store."""
    if request.param == "sqlite":
        url = str(tmp_path / "hq.sqlite")
        store = HitStore(url)
    else:
        url = request.getfixturevalue("postgres").fresh_url()
        store = PostgresStore(url)
    hits = [
        at(hit_msg(plate="AB1234", vehicle="car-1"), "2026-11-23T08:00:00.000Z"),
        at(hit_msg(plate="AB1234", vehicle="car-2"), "2026-11-24T08:00:00.000Z"),
        at(hit_msg(plate="A81234", vehicle="car-1"), "2026-11-25T08:00:00.000Z"),
        at(
            hit_msg(plate="AB12345", vehicle="car-3"),
            "2026-11-26T08:00:00.000Z",
            list="wanted-person",
        ),
        at(hit_msg(plate="XY9876", vehicle="car-1"), "2026-11-26T09:00:00.000Z"),
    ]
    with store:
        for message in hits:
            store.add_hit(message)
        store.add_withdrawal(withdrawal_of(hits[0]))
    yield url


def search(db: str, *argv: str, capsys=None) -> int:
    args = build_parser().parse_args(["hq", "search", "--db", db, *argv])
    return cmd_hq_search(args)


def results(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def audit(db: str) -> list[dict]:
    store = HitStore(db) if "://" not in db else PostgresStore(db)
    with store:
        return store.hq_audit()


def test_exact_and_look_alike_matches_nearest_then_newest(db, capsys):
    assert search(db, "--plate", "ab 1234", "--json", "--user", "insp-chan") == 0
    found = results(capsys)
    assert [(r["plate"], r["distance"], r["vehicle_id"]) for r in found] == [
        ("AB1234", 0.0, "car-2"),
        ("AB1234", 0.0, "car-1"),
        ("A81234", 0.5, "car-1"),
        ("AB12345", 1.0, "car-3"),
    ]
    first = found[1]
    assert first["withdrawn"] is True and first["conflict"] is False
    assert first["list"] == "stolen-vehicle" and first["entry_id"] == "17"
    assert first["priority"] == 1 and first["camera"] == "front-left"
    assert first["observed_at"] == "2026-11-23T08:00:00.000Z"
    # Look-alikes the other way round: B typed as 8, 1 as I (half a point each).
    search(db, "--plate", "A8I234", "--json", "--user", "insp-chan")
    assert [(r["plate"], r["distance"]) for r in results(capsys)] == [
        ("A81234", 0.5),
        ("AB1234", 1.0),
        ("AB1234", 1.0),
    ]
    rows = audit(db)
    assert [(r["user"], r["action"], r["query"]["plate"]) for r in rows] == [
        ("insp-chan", "search", "AB1234"),
        ("insp-chan", "search", "A8I234"),
    ]
    assert rows[0]["result_count"] == 4 and rows[0]["at"].endswith("Z")


def test_filters_since_until_vehicle_list_and_limit(db, capsys):
    def plates(*argv: str) -> list[tuple[str, str]]:
        search(db, "--plate", "AB1234", "--json", "--user", "u1", *argv)
        return [(r["plate"], r["observed_at"][:10]) for r in results(capsys)]

    assert plates("--since", "2026-11-24", "--until", "2026-11-25T23:00:00Z") == [
        ("AB1234", "2026-11-24"),
        ("A81234", "2026-11-25"),
    ]
    assert plates("--vehicle", "car-1") == [("AB1234", "2026-11-23"), ("A81234", "2026-11-25")]
    assert plates("--list", "wanted-person") == [("AB12345", "2026-11-26")]
    assert plates("--limit", "1") == [("AB1234", "2026-11-24")]
    assert plates("--vehicle", "car-9") == []
    rows = audit(db)
    assert len(rows) == 5 and rows[-1]["result_count"] == 0
    assert rows[0]["query"] == {
        "plate": "AB1234",
        "since": "2026-11-24T00:00:00.000Z",
        "until": "2026-11-25T23:00:00.000Z",
        "vehicle_id": None,
        "list": None,
        "limit": 100,
    }
    assert rows[1]["query"]["vehicle_id"] == "car-1"


def test_console_table(db, capsys):
    assert search(db, "--plate", "XY9876", "--user", "u1") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["distance", "plate", "observed_at"]
    assert "XY9876" in out[1] and "car-1" in out[1] and "stolen-vehicle" in out[1]
    assert out[-1].startswith("1 result(s) for XY9876")


def test_bad_options_are_usage_errors_naming_them(db):
    with pytest.raises(UsageError, match="--since"):
        search(db, "--plate", "AB1234", "--since", "yesterday", "--user", "u1")
    with pytest.raises(UsageError, match="--until"):
        search(db, "--plate", "AB1234", "--until", "2026-13-01", "--user", "u1")
    with pytest.raises(UsageError, match="--user"):
        search(db, "--plate", "AB1234", "--user", "bad name\n")
    with pytest.raises(UsageError, match="--plate"):
        search(db, "--plate=-.-", "--user", "u1")
    with pytest.raises(SystemExit) as exc:
        search(db, "--plate", "AB1234")
    assert exc.value.code == 2
    assert audit(db) == []  # (nothing searched)


def test_hq_without_an_action_is_still_the_subscriber():
    args = build_parser().parse_args(["hq", "--db", "x.sqlite", "--duration", "1", "--json"])
    assert args.hq_action is None and args.db == "x.sqlite" and args.json
    assert args.handler.__name__ != "cmd_hq_search"


def test_cli_end_to_end(tmp_path):
    path = tmp_path / "hq.sqlite"
    with HitStore(path) as store:
        store.add_hit(hit_msg(plate="AB1234"))
    run = [sys.executable, "-m", "edge", "hq", "search", "--db", str(path), "--plate", "AB1Z34"]
    done = subprocess.run([*run, "--user", "u1", "--json"], cwd=ROOT, capture_output=True)
    assert done.returncode == 0, done.stderr
    [line] = done.stdout.decode().splitlines()
    assert json.loads(line)["plate"] == "AB1234" and json.loads(line)["distance"] == 0.5
    bad = subprocess.run([*run, "--user", "u1", "--since", "soon"], cwd=ROOT, capture_output=True)
    assert bad.returncode == 2 and b"--since" in bad.stderr
    missing = subprocess.run(run, cwd=ROOT, capture_output=True)
    assert missing.returncode == 2 and b"--user" in missing.stderr
    with HitStore(path) as store:
        assert [r["result_count"] for r in store.hq_audit()] == [1]


def test_sqlite_database_of_the_previous_layout_gains_the_audit_table(tmp_path):
    path = tmp_path / "hq.sqlite"
    with HitStore(path) as store:
        store.add_hit(hit_msg(plate="AB1234"))
    with sqlite3.connect(path) as db:  # as the HQ before hq_audit left it
        db.execute("DROP TABLE hq_audit")
    with HitStore(path) as store:
        assert store.hq_audit() == []
        assert [r["plate"] for r in store.search("AB1234")] == ["AB1234"]
        store.add_hq_audit("u1", "search", {"plate": "AB1234"}, 1)
        assert store.hq_audit()[0]["user"] == "u1"


def test_postgres_migrates_from_empty_and_from_version_1(postgres):
    assert SCHEMA_VERSION >= 2 and "hq_audit" in MIGRATIONS[2]
    with PostgresStore(postgres.fresh_url()) as store:
        assert store.found_version == 0 and store.hq_audit() == []
    url = postgres.fresh_url()
    with psycopg.connect(url, autocommit=True) as db:  # a database HQ version 1 made
        db.execute(
            "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, "
            "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        db.execute(MIGRATIONS[1])
        db.execute("INSERT INTO schema_version (version) VALUES (1)")
    with PostgresStore(url) as store:
        assert store.found_version == 1
        store.add_hit(hit_msg(plate="AB1234"))
        assert [r["plate"] for r in store.search("AB1Z34")] == ["AB1234"]
        store.add_hq_audit("u1", "search", {"plate": "AB1Z34"}, 1)
        assert store.hq_audit()[0]["query"] == {"plate": "AB1Z34"}
    with psycopg.connect(url) as db:
        versions = [r[0] for r in db.execute("SELECT version FROM schema_version ORDER BY 1")]
    assert versions == list(range(1, SCHEMA_VERSION + 1))
