"""The audit trail as the product writes it: starts with the config hash, watchlist
versions applied and rejected, manual queries, purges, configuration changes; each
record also queued for HQ; `lpr-edge audit verify` finds an edited line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge.delivery.outbox import Outbox
from edge.synth.clips import render_clip
from edge.synth.clipspec import ClipSpec
from tests.conftest import model_path

EDGE = (sys.executable, "-m", "edge")


def lpr_edge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*EDGE, *args], capture_output=True, text=True, timeout=300)


def records(state: Path) -> list[dict]:
    return [json.loads(line) for line in (state / "audit.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    model_path("platedet-int8.onnx")
    model_path("ch_PP-OCRv4_rec_infer.onnx")
    path = tmp_path_factory.mktemp("clip") / "short.mp4"
    render_clip(path, ClipSpec(size=(640, 360), fps=10, plates=("KT4821",), seed=3))
    return path


def test_what_happens_to_the_watchlist_and_the_data_is_audited(tmp_path: Path, clip: Path):
    (tmp_path / "watchlist.csv").write_text("plate,list,entry_id\nKT4821,stolen-vehicle,w1\n")
    config = tmp_path / "edge.toml"
    config.write_text(
        '[vehicle]\nid = "car-1"\n[watchlist]\npath = "watchlist.csv"\n'
        '[storage]\nstate_dir = "state"\n'
    )
    state = tmp_path / "state"

    check = lpr_edge("watchlist", "check", "KT 4821", "--config", str(config))
    assert check.returncode == 0, check.stderr
    replay = lpr_edge("replay", "--config", str(config), str(clip))
    assert replay.returncode == 0, replay.stderr
    (tmp_path / "watchlist.csv").write_text("plate,priority\nBAD!,12\n")
    config.write_text(config.read_text() + "[privacy]\nhit_retention_days = 7\n")
    replay = lpr_edge("replay", "--config", str(config), str(clip))
    assert replay.returncode == 0, replay.stderr
    purge = lpr_edge("purge", "--config", str(config))
    assert purge.returncode == 0, purge.stderr

    log = records(state)
    actions = [r["action"] for r in log]
    assert actions[0] == "watchlist.query"
    assert log[0]["details"]["plate"] == "KT4821" and log[0]["details"]["matches"] == ["w1"]
    assert "watchlist.applied" in actions and "watchlist.rejected" in actions
    rejected = next(r for r in log if r["action"] == "watchlist.rejected")
    assert "line 2" in rejected["details"]["message"]
    starts = [r for r in log if r["action"] == "replay.start"]
    assert (
        len(starts) == 2
        and starts[0]["details"]["config_hash"] != starts[1]["details"]["config_hash"]
    )
    changed = actions.index("config.changed")
    assert actions[changed + 1] == "replay.start"
    assert actions[-1] == "purge"
    # Every record also waits in the outbox for HQ, in order.
    with Outbox(state / "outbox.sqlite") as outbox:
        queued = [json.loads(m.payload) for m in outbox.pending(1000) if m.kind == "audit"]
    assert [r["seq"] for r in queued] == [r["seq"] for r in log]

    verify = lpr_edge("audit", "verify", "--config", str(config))
    assert verify.returncode == 0, verify.stdout + verify.stderr

    # An investigator's query edited away afterwards is caught, naming the line.
    lines = (state / "audit.jsonl").read_text().splitlines(keepends=True)
    lines[0] = lines[0].replace("KT4821", "XX0000")
    (state / "audit.jsonl").write_text("".join(lines))
    verify = lpr_edge("audit", "verify", "--config", str(config))
    assert verify.returncode == 1
    assert "line 1" in verify.stdout + verify.stderr
