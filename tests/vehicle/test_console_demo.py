"""`make demo`'s ending: the console served over a state directory's hits with no
service running (serve_state_console), its printed login link opened in Chromium."""

from __future__ import annotations

import re
import threading

import pytest

from edge.config import ConfigError, load_config
from edge.vehicle.console import TOKEN_FILE, console_token, serve_state_console
from edge.vehicle.delivery import Delivery
from edge.waits import poll_until
from tests.browser import open_browser, screenshot
from tests.delivery.test_hits import make_read


@pytest.fixture
def browser(tmp_path):
    with open_browser(tmp_path / "profile") as opened:
        yield opened


def test_the_printed_link_opens_the_console_over_the_kept_hits(tmp_path, browser):
    (tmp_path / "watchlist.csv").write_text(
        "plate,list,priority,reason,covert,entry_id\nAB1234,stolen-vehicle,1,demo,false,d1\n"
    )
    path = tmp_path / "edge.toml"
    path.write_text(
        '[watchlist]\npath = "watchlist.csv"\n[storage]\nstate_dir = "state"\n[console]\nport = 0\n'
    )
    config = load_config(path, environ={})
    with Delivery(config) as delivery:  # a replay before: no broker, hits kept
        hit = delivery.dispatcher(make_read("AB1234"))
    lines: list[str] = []
    stop = threading.Event()
    server = threading.Thread(
        target=serve_state_console,
        args=(config,),
        kwargs={"stop": stop, "announce": lines.append},
    )
    server.start()
    try:
        assert poll_until(lambda: any("/login#token=" in line for line in lines), 20)
        link = re.search(r"http://\S+/login#token=\S+", "\n".join(lines)).group()
        page = browser.page
        page.goto(link)
        page.wait_for_selector(f"li[data-event-id='{hit.event_id}']", timeout=30_000)
        assert "stolen-vehicle" in page.locator("#hits").inner_text()
        screenshot(page, "in-car-console-demo")
    finally:
        stop.set()
        server.join(30)
    assert not server.is_alive()
    assert browser.errors == []


def test_a_token_file_that_cannot_be_read_is_a_config_error_naming_it(tmp_path):
    path = tmp_path / "edge.toml"
    path.write_text('[storage]\nstate_dir = "state"\n[console]\nport = 0\n')
    config = load_config(path, environ={})
    config.state_dir.mkdir(parents=True, exist_ok=True)
    token_file = config.state_dir / TOKEN_FILE
    for damage in (lambda: token_file.mkdir(), lambda: token_file.write_bytes(b"\xff\xfe" * 20)):
        if token_file.is_dir():
            token_file.rmdir()
        damage()
        with pytest.raises(ConfigError, match=re.escape(str(token_file))):
            console_token(config)
    # Made over only when there is none.
    token_file.unlink()
    assert len(console_token(config)) >= 16 and token_file.exists()
