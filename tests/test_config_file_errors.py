"""A config file that cannot be parsed is one clear ConfigError naming the file."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edge.config import PROJECT_ROOT, ConfigError, load_config

LATIN1_FILE = '[vehicle]\nid = "car-7"  # Fahrzeug Nr. 7, Stra\xdfe\n'.encode("latin-1")
DEEP_ARRAY = "x = " + "[" * 5000 + "]" * 5000 + "\n"


def test_a_file_not_in_utf8_names_the_file_and_the_byte(tmp_path):
    path = tmp_path / "edge.toml"
    path.write_bytes(LATIN1_FILE)
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    (line,) = err.value.problems
    assert line.startswith(f"{path}: not UTF-8 text")
    assert LATIN1_FILE.index(0xDF) == 46
    assert "(byte 0xdf at offset 46, line 2); save the file as UTF-8" in line


def test_an_array_nested_too_deep_names_the_file(tmp_path):
    path = tmp_path / "edge.toml"
    path.write_text(DEEP_ARRAY)
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    (line,) = err.value.problems
    assert line.startswith(f"{path}: not valid TOML: arrays or tables nested too deep")


@pytest.mark.parametrize("content", [LATIN1_FILE, DEEP_ARRAY.encode()])
def test_config_check_exits_2_without_a_traceback(tmp_path, content):
    path = tmp_path / "edge.toml"
    path.write_bytes(content)
    result = subprocess.run(
        [sys.executable, "-m", "edge", "config", "check", str(path)],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"lpr-edge: error: {path}: not ")
