"""The lists in force on a vehicle (edge.watchlist.live): the file list and the two
pushed lists, how each is replaced, kept across restarts and reported."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.config import Config, load_config
from edge.watchlist.keys import generate_keypair, public_key_base64
from edge.watchlist.lists import WatchlistEntry
from edge.watchlist.live import LiveWatchlist
from edge.watchlist.pushstore import SINGLE_STORE_NAME, STORE_NAMES
from edge.watchlist.signing import sign_document

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


# --- the fleet list and the vehicle's own list ---------------------------------------


def trust_hq(tmp_path: Path, *, list_file: str | None = None) -> Ed25519PrivateKey:
    """A car-A config (edge.toml) that trusts a new HQ key; the key."""
    private_key, public_key = generate_keypair()
    path = f'path = "{list_file}"\n' if list_file else ""
    (tmp_path / "edge.toml").write_text(
        f'[vehicle]\nid = "car-A"\n[watchlist]\n{path}'
        f'public_keys = ["{public_key_base64(public_key)}"]\n[storage]\nstate_dir = "state"\n',
        encoding="utf-8",
    )
    return private_key


@pytest.fixture
def hq_key(tmp_path: Path) -> Ed25519PrivateKey:
    return trust_hq(tmp_path)


def started(tmp_path: Path, events: list[tuple[str, dict]] | None = None) -> LiveWatchlist:
    """The lists in force as the service starts them, events recorded in ``events``."""
    recorded = events if events is not None else []
    live = LiveWatchlist(
        load_config(tmp_path / "edge.toml"),
        state_dir=tmp_path / "state",
        on_event=lambda action, details: recorded.append((action, details)),
    )
    live.load()
    return live


def fleet(key: Ed25519PrivateKey, version: int, *plates: str) -> bytes:
    return sign_document([WatchlistEntry(p, entry_id=p) for p in plates], version, key)


def own(key: Ed25519PrivateKey, version: int, *plates: str) -> bytes:
    entries = [WatchlistEntry(p, entry_id=p) for p in plates]
    return sign_document(entries, version, key, vehicle_id="car-A")


def versions(live: LiveWatchlist) -> dict[str, int | None]:
    status = live.status()
    return {scope: (status[scope] or {}).get("version") for scope in ("fleet", "vehicle")}


def test_the_fleet_list_and_the_cars_own_list_are_both_in_force_each_with_its_versions(
    tmp_path, hq_key
):
    events: list[tuple[str, dict]] = []
    live = started(tmp_path, events)
    assert live.apply_push("lpr/v1/watchlist", fleet(hq_key, 5, "FL1", "FL2"))
    # The car's own v6 used to replace the fleet list (2 entries -> 1) ...
    assert live.apply_push("lpr/v1/car-A/watchlist", own(hq_key, 6, "CA1"))
    assert plates(live) == ["CA1", "FL1", "FL2"]
    # ... and fleet v7 the car's list, which was then "stale" at every restart.
    assert live.apply_push("lpr/v1/watchlist", fleet(hq_key, 7, "FL1", "FL2", "FL3"))
    assert plates(live) == ["CA1", "FL1", "FL2", "FL3"]
    assert versions(live) == {"fleet": 7, "vehicle": 6}
    assert live.status()["last_rejection"] is None

    # Each applied list is in the audit trail with the list it replaced.
    applied = [(d["scope"], d["version"]) for a, d in events if a == "watchlist.applied"]
    assert applied == [("fleet", 5), ("vehicle", 6), ("fleet", 7)]

    # A restart restores both; the retained copies delivered again are no news.
    restarted = started(tmp_path)
    assert plates(restarted) == ["CA1", "FL1", "FL2", "FL3"]
    assert versions(restarted) == {"fleet": 7, "vehicle": 6}
    assert not restarted.apply_push("lpr/v1/car-A/watchlist", own(hq_key, 6, "CA1"))
    assert not restarted.apply_push("lpr/v1/watchlist", fleet(hq_key, 7, "FL1", "FL2", "FL3"))
    assert restarted.status()["last_rejection"] is None

    # Replay protection stays, list by list.
    assert not restarted.apply_push("lpr/v1/watchlist", fleet(hq_key, 6, "OLD1"))
    assert restarted.status()["last_rejection"]["code"] == "stale"
    assert not restarted.apply_push("lpr/v1/car-A/watchlist", own(hq_key, 5, "OLD2"))
    rejection = restarted.status()["last_rejection"]
    assert rejection["code"] == "stale" and "car-A's own list: version 5" in rejection["message"]
    assert plates(restarted) == ["CA1", "FL1", "FL2", "FL3"]
    # The car's list moves on without touching the fleet's.
    assert restarted.apply_push("lpr/v1/car-A/watchlist", own(hq_key, 8, "CA2"))
    assert plates(restarted) == ["CA2", "FL1", "FL2", "FL3"]
    assert versions(restarted) == {"fleet": 7, "vehicle": 8}


def test_a_match_says_which_list_named_the_plate(tmp_path):
    (tmp_path / "watchlist.csv").write_text("plate\nFI1\n", encoding="utf-8")
    hq_key = trust_hq(tmp_path, list_file="watchlist.csv")
    live = started(tmp_path)
    live.apply_push("lpr/v1/watchlist", fleet(hq_key, 5, "FL1"))
    live.apply_push("lpr/v1/car-A/watchlist", own(hq_key, 2, "CA1"))
    at = datetime.now(UTC)
    scopes = {}
    for plate in ("FI1", "FL1", "CA1"):
        (match,) = [m for w in live.lists() if (m := w.match(plate, at=at, max_distance=0))]
        scopes[plate] = match.scope
    assert scopes == {"FI1": "file", "FL1": "fleet", "CA1": "vehicle"}


def test_a_store_from_before_the_two_lists_is_migrated_and_the_other_list_comes_again(
    tmp_path, hq_key
):
    state = tmp_path / "state"
    state.mkdir()
    # The single stored file held whichever list came last: here the car's own.
    (state / SINGLE_STORE_NAME).write_bytes(own(hq_key, 6, "CA1"))
    live = started(tmp_path)
    assert versions(live) == {"fleet": None, "vehicle": 6}
    # The retained fleet list, older by number, is not "stale" against the car's.
    assert live.apply_push("lpr/v1/watchlist", fleet(hq_key, 5, "FL1"))
    assert plates(live) == ["CA1", "FL1"]
    assert sorted(p.name for p in state.iterdir()) == sorted(STORE_NAMES.values())
