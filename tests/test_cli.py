from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys

import pytest

from edge.config import PROJECT_ROOT
from edge.logs import JsonFormatter

SUBCOMMANDS = ["run", "replay", "recognize", "watchlist", "hq", "models", "bench", "config"]


def lpr_edge(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edge", *args],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env=env,
        timeout=120,
        check=False,
    )


def test_help_lists_every_subcommand():
    result = lpr_edge("--help")
    assert result.returncode == 0
    for name in SUBCOMMANDS:
        assert f"    {name} " in result.stdout, name


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_each_subcommand_has_help(name):
    result = lpr_edge(name, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: lpr-edge " + name)


def test_config_check_example_exits_0_and_prints_effective_config():
    result = lpr_edge("config", "check", "config/edge.example.toml")
    assert result.returncode == 0, result.stderr
    assert "[recognition]" in result.stdout and 'name = "front-left"' in result.stdout


def test_config_typo_exits_2_with_one_line_naming_the_key(tmp_path):
    bad = tmp_path / "edge.toml"
    bad.write_text('[mqtt]\nhots = "hq"\n')
    result = lpr_edge("config", "check", str(bad))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "mqtt.hots" in lines[0] and "did you mean 'host'" in lines[0]
    assert "Traceback" not in result.stderr


def test_missing_config_file_exits_2():
    result = lpr_edge("config", "check", "/nonexistent/edge.toml")
    assert result.returncode == 2 and "file not found" in result.stderr


def test_bad_usage_exits_2():
    assert lpr_edge("frobnicate").returncode == 2
    assert lpr_edge("models").returncode == 2


def test_hq_tools_report_bad_options_with_exit_2(tmp_path):
    result = lpr_edge("hq", "--cert-file", str(tmp_path / "missing.pem"), "--key-file", "k")
    assert result.returncode == 2 and "--cert-file" in result.stderr
    result = lpr_edge("watchlist", "publish", str(tmp_path / "missing.json"))
    assert result.returncode == 2 and "missing.json" in result.stderr
    assert lpr_edge("watchlist", "sign").returncode == 2  # CSV and --key are required


def test_run_without_cameras_says_so():
    result = lpr_edge("run")
    assert result.returncode == 2
    assert "no enabled camera" in result.stderr


def test_models_list_reports_tampered_model_with_exit_1(tmp_path):
    payload = b"model bytes"
    models = tmp_path / "models"
    models.mkdir()
    (models / "manifest.toml").write_text(
        '[[model]]\nname = "tiny"\npackage = "tinypkg==1.0"\nmember = "m"\nfile = "tiny.onnx"\n'
        f'sha256 = "{hashlib.sha256(payload).hexdigest()}"\nlicence = "MIT"\ndescription = "t"\n'
    )
    (models / "tiny.onnx").write_bytes(payload)
    ok = lpr_edge("models", "list", "--models-dir", str(models))
    assert ok.returncode == 0 and "verified" in ok.stdout
    (models / "tiny.onnx").write_bytes(payload + b"!")
    bad = lpr_edge("models", "list", "--models-dir", str(models))
    assert bad.returncode == 1 and "hash mismatch" in bad.stdout


def test_json_log_lines_carry_extra_fields():
    record = logging.LogRecord(
        "edge.test", logging.WARNING, __file__, 1, "camera %s lost", ("front",), None
    )
    record.camera = "front"
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "warning" and line["msg"] == "camera front lost"
    assert line["camera"] == "front" and line["ts"].endswith("Z")


def test_recognize_refuses_a_tampered_model(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / "manifest.toml").write_text((PROJECT_ROOT / "models" / "manifest.toml").read_text())
    (models / "platedet-int8.onnx").write_bytes(b"not the model we pinned")
    image = tmp_path / "frame.png"
    image.write_bytes(b"unused: the model check comes first")
    env = {**os.environ, "LPR_EDGE_MODELS_DIR": str(models)}
    result = lpr_edge("recognize", str(image), env=env)
    assert result.returncode == 1
    assert "model 'platedet-int8' failed verification" in result.stderr
    assert "Traceback" not in result.stderr
    (models / "platedet-int8.onnx").unlink()
    result = lpr_edge("recognize", str(image), env=env)
    assert result.returncode == 1 and "lpr-edge models fetch" in result.stderr


def test_bench_video_refuses_a_bad_size():
    result = lpr_edge("bench", "video", "--size", "big")
    assert result.returncode == 2 and "--size expected WIDTHxHEIGHT" in result.stderr


def test_replay_with_an_unwritable_out_path_exits_2(tmp_path):
    existing = tmp_path / "clip.mp4"
    existing.write_bytes(b"unused: the output path is checked before any file is read")
    result = lpr_edge("replay", str(existing), "--out", str(tmp_path / "no" / "such" / "r.jsonl"))
    assert result.returncode == 2, result.stderr
    assert "--out" in result.stderr and "Traceback" not in result.stderr
