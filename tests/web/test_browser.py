"""The harness itself: Chromium loads the shared login page from a real server, the
CSP holds (no inline script runs), a login link's token logs in, screenshots land in
the artefact folder."""

from __future__ import annotations

import pytest
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from edge.web.app import ConsoleApp
from edge.web.auth import TokenAuth
from edge.web.server import WebServer
from tests.browser import artefact_dir, open_browser, screenshot

TOKEN = "browser-test-token-0123456789"


@pytest.fixture
def browser(tmp_path):
    with open_browser(tmp_path / "profile") as opened:
        yield opened


def test_login_page_and_a_token_link_in_chromium(browser):
    console = ConsoleApp("Harness check", TokenAuth(TOKEN))

    async def home(request: Request):
        # An inline script the CSP must block.
        return HTMLResponse("<p id='home'>in</p><script>alert('inline ran')</script>")

    with WebServer(console.build([Route("/", home)]), "127.0.0.1", 0) as server:
        page = browser.page
        page.goto(server.url + "/")
        assert page.url.endswith("/login")
        screenshot(page, "web-login")
        page.fill("#token", "wrong-token")
        page.click("button[type=submit]")
        page.wait_for_selector("#login-error")
        assert "Wrong token" in page.inner_text("#login-error")
        page.goto(f"{server.url}/login#token={TOKEN}")
        page.wait_for_selector("#home")
        cookies = browser.context.cookies()
        (session,) = [c for c in cookies if c["name"] == "lpr_session"]
        assert session["httpOnly"] and session["sameSite"] == "Strict"
        assert browser.dialogs == []  # the inline script never ran
    assert (artefact_dir() / "web-login.png").stat().st_size > 0
