"""A real PostgreSQL server on a free loopback port, started and stopped by tests
(the server code is :mod:`edge.bench.servers`, shared with ``lpr-edge bench hq``)."""

from __future__ import annotations

from edge.bench.servers import DB_USER, SYSTEM_USER, PostgresServer, find_pg_bin

__all__ = ["DB_USER", "SYSTEM_USER", "PostgresServer", "find_pg_bin"]
