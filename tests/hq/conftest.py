from __future__ import annotations

import pytest

from tests.postgres import PostgresServer


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server for the whole test session (tests/postgres.py); each
    test takes a database of its own with ``postgres.fresh_url()``."""
    try:
        server = PostgresServer()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        server.start()
    except RuntimeError as exc:
        server.stop()
        pytest.fail(str(exc))
    yield server
    server.stop()
