from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge.config import PROJECT_ROOT
from tests.mosquitto import Broker

MODELS_DIR = PROJECT_ROOT / "models"


@pytest.fixture
def broker(tmp_path: Path):
    """A real Mosquitto broker on a free loopback port for one test."""
    instance = Broker(tmp_path).start()
    yield instance
    instance.stop()


def model_path(filename: str) -> Path:
    """A fetched model file. When absent the test is skipped, saying why, except under
    `make test` (LPR_EDGE_TEST_REQUIRE_MODELS=1), where a missing model is a failure."""
    path = MODELS_DIR / filename
    if not path.exists():
        message = f"{path} is missing: run 'lpr-edge models fetch' (make test does)"
        if os.environ.get("LPR_EDGE_TEST_REQUIRE_MODELS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path
