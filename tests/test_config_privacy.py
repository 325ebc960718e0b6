"""[privacy] publish_reads: non-hit reads stay in the car (PDPO), so `true` is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config import ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge.toml"
    path.write_text(text)
    return path


def test_publish_reads_true_is_refused_naming_the_key_and_the_reason(tmp_path):
    path = write(tmp_path, "[privacy]\npublish_reads = true\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    (line,) = err.value.problems
    assert line.startswith(f"{path}: 'privacy.publish_reads' = true is not supported")
    assert "non-hit reads stay in the car" in line and "set it to false" in line


def test_publish_reads_true_from_the_environment_is_refused_too():
    with pytest.raises(ConfigError, match="'privacy.publish_reads' = true is not supported"):
        load_config(None, environ={"LPR_EDGE_PRIVACY_PUBLISH_READS": "true"})


def test_publish_reads_false_still_loads(tmp_path):
    config = load_config(write(tmp_path, "[privacy]\npublish_reads = false\n"), environ={})
    assert config.privacy.publish_reads is False
