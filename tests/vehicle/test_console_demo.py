"""`make demo`'s ending: the console served over a state directory's hits with no
service running (serve_state_console), its printed login link opened in Chromium."""

from __future__ import annotations

import re
import threading

import pytest

from edge.config import load_config
from edge.vehicle.console import serve_state_console
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
    stop_after = 10.0  # serves this long, as `make demo` does, then ends by itself
    server = threading.Thread(
        target=serve_state_console,
        args=(config,),
        kwargs={"seconds": stop_after, "announce": lines.append},
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
        server.join(stop_after + 10)
    assert not server.is_alive()
    assert browser.errors == []
