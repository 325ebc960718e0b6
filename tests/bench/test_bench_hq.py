"""`lpr-edge bench hq` end to end, tiny: real Mosquitto, real `lpr-edge hq` workers,
real PostgreSQL and SQLite. Every hit arrives exactly once; timings are not asserted
(the machine is shared)."""

from __future__ import annotations

import json

import pytest

from edge.cli import main

LOAD_KEYS = {
    "db", "workers", "vehicles", "publishers", "rate", "published", "acknowledged",
    "unacknowledged", "publish_rate", "stored", "stored_per_s", "latency_ms", "lost",
    "lost_examples", "duplicates", "redeliveries_seen", "worker_hits", "rejected",
    "store_errors", "errors", "cpu_s", "cpu_ms_per_hit",
}  # fmt: skip


@pytest.mark.parametrize(("db", "workers"), [("postgres", 2), ("sqlite", 1)])
def test_every_hit_stored_once(db, workers, capsys):
    argv = ["bench", "hq", "--vehicles", "20", "--count", "200", "--workers", str(workers)]
    assert main([*argv, "--db", db, "--rate", "400", "--drain", "20", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(report) == LOAD_KEYS
    assert report["published"] == report["acknowledged"] == report["stored"] == 200
    assert report["lost"] == 0 and report["duplicates"] == 0 and report["errors"] == []
    assert report["rejected"] == 0 and report["store_errors"] == 0
    assert (report["db"], report["workers"], report["vehicles"]) == (db, workers, 20)
    assert len(report["worker_hits"]) == workers and sum(report["worker_hits"]) == 200
    assert set(report["latency_ms"]) == {"p50", "p95", "max"}
    assert report["latency_ms"]["p50"] is not None and report["stored_per_s"] is not None
    # (CPU clocks tick every 10 ms: a tiny run may show 0 for the broker.)
    parts = {"workers", "broker", "database"} if db == "postgres" else {"workers", "broker"}
    assert set(report["cpu_s"]) == parts and all(v >= 0 for v in report["cpu_s"].values())


@pytest.mark.parametrize("db", ["postgres", "sqlite"])
def test_search_over_generated_hits(db, capsys):
    argv = ["bench", "hq", "--db", db, "--search-hits", "5000", "--searches", "20", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["hits"] == 5000 and set(report["search"]) == {"exact", "lookalike", "miss"}
    assert report["search"]["exact"]["mean_results"] >= 1
    assert report["search"]["miss"]["mean_results"] == 0
    assert all(m["searches"] == 20 and m["median_ms"] >= 0 for m in report["search"].values())


def test_bad_options_are_usage_errors(capsys):
    assert main(["bench", "hq", "--vehicles", "0"]) == 2
    assert "--vehicles must be from 1" in capsys.readouterr().err
    assert main(["bench", "hq", "--broker", "nohostport", "--count", "1"]) == 2
    assert "--broker 'nohostport': expected HOST:PORT" in capsys.readouterr().err
