"""The lists in force on a vehicle (edge.watchlist_live): the file list and the two
pushed lists, how each is replaced, kept across restarts and reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config import Config, load_config
from edge.watchlist_live import LiveWatchlist

FOUR_ENTRIES = "plate,reason\nAB1,stolen\nCD2,wanted\nEF3,stolen\nGH4,stolen\n"


@pytest.fixture
def config(tmp_path: Path) -> Config:
    (tmp_path / "watchlist.csv").write_text(FOUR_ENTRIES, encoding="utf-8")
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        '[vehicle]\nid = "car-A"\n[watchlist]\npath = "watchlist.csv"\n'
        '[storage]\nstate_dir = "state"\n',
        encoding="utf-8",
    )
    return load_config(cfg)


def plates(live: LiveWatchlist) -> list[str]:
    return sorted(e.plate for w in live.lists() for e in w.entries())


def test_a_file_with_a_stray_quote_keeps_the_previous_list_and_names_the_line(tmp_path, config):
    live = LiveWatchlist(config, state_dir=tmp_path / "state")
    live.load()
    assert plates(live) == ["AB1", "CD2", "EF3", "GH4"]
    # One stray quote used to swallow lines 3-5 into a reason: a 1-entry list in force.
    (tmp_path / "watchlist.csv").write_text(
        'plate,reason\nAB1,stolen\nCD2,"wanted\nEF3,stolen\nGH4,stolen\nJK5,stolen\n',
        encoding="utf-8",
    )
    assert not live.refresh(force=True)
    assert plates(live) == ["AB1", "CD2", "EF3", "GH4"]
    status = live.status()
    assert status["file"]["entries"] == 4 and status["file"]["version"] == 1
    assert "line 3: a quoted field is not closed on its line" in status["file"]["error"]
    assert status["last_rejection"]["code"] == "invalid_file"
