"""The throw-away PostgreSQL of `bench hq` and the tests (edge.bench.servers): its
settings reach the server whatever characters they hold, and a cluster that fails to
start leaves nothing behind."""

from __future__ import annotations

import psycopg
import pytest

from edge.bench.servers import PostgresServer


def test_settings_with_spaces_and_quotes_reach_the_server():
    server = PostgresServer(settings={"application_name": "lpr edge's bench"}).start()
    try:
        with psycopg.connect(server.url(), autocommit=True) as db:
            assert db.execute("SHOW application_name").fetchone() == ("lpr edge's bench",)
            assert db.execute("SHOW fsync").fetchone() == ("off",)
    finally:
        server.stop()
    assert not server.root.exists()


def test_a_cluster_that_does_not_start_leaves_no_folder():
    server = PostgresServer(settings={"max_connections": "not a number"})
    with pytest.raises(RuntimeError, match="pg_ctl start failed"):
        server.start()
    assert not server.root.exists() and not server.running
