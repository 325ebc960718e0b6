"""HQ's console in a real Chromium (tests/browser.py): the real `lpr-edge hq --web`
on a real Mosquitto, storing into SQLite or a real PostgreSQL. Login is enforced;
a published hit appears on the page (the time it takes is written to the test
artefacts' measurements.json); officers' decisions built by the car's own code, and
clicked on the real in-car console, reach the database and show beside their hit;
hostile text stays text; searches and views of a hit are audited; vehicles'
positions are drawn, on a tile server's map too."""

from __future__ import annotations

import http.client
import http.server
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from edge.delivery.decisions import Decision, decision_message
from edge.errors import UsageError
from edge.hq.command import cmd_hq
from edge.hq.pgstore import PostgresStore
from edge.hq.store import HitStore
from edge.hq.web.app import HqConsole, parse_web_address, tile_origin
from edge.hq.web.users import Users, check_password, hash_password
from edge.ids import new_event_id
from edge.waits import poll_until
from tests.browser import open_browser, record_measurement, screenshot
from tests.hq.test_hq import PREFIX, ROOT, TIMEOUT, Publisher, hit_msg, status_msg, wait_for_text
from tests.mosquitto import free_port
from tests.vehicle.test_console import TIMEOUT_MS, Car, log_in

PASSWORD = "correct horse battery"
# A 1x1 PNG, what the test tile server answers for every tile.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63f8cfc0f01f0005000201a5f1d6aa0000000049454e44ae426082"
)


def open_store(db: str):
    return PostgresStore(db) if "://" in db else HitStore(db)


@pytest.fixture
def browser(tmp_path):
    with open_browser(tmp_path / "profile") as opened:
        yield opened


@pytest.fixture
def users_file(tmp_path) -> Path:
    path = tmp_path / "hq-users.toml"
    path.write_text(f'alice = "{hash_password(PASSWORD)}"\nbob = "{hash_password("other one!")}"\n')
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "hq.sqlite")
    return request.getfixturevalue("postgres").fresh_url()


class RunningHq:
    """The real `lpr-edge hq --web` in a process of its own."""

    def __init__(self, tmp_path: Path, broker_port: int, db: str, *extra: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.err = tmp_path / f"hq-{self.port}.err"
        argv = ["hq", "--host", "127.0.0.1", "--port", str(broker_port), "--db", db]
        argv += ["--web", f"127.0.0.1:{self.port}", *extra]
        with (tmp_path / f"hq-{self.port}.out").open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge", *argv], cwd=ROOT, stdout=out, stderr=err
            )
        ok = wait_for_text(self.err, "HQ: subscribed", self.proc)
        if not (ok and "HQ console on" in self.err.read_text()):
            self.proc.kill()
            self.proc.wait(TIMEOUT)
            pytest.fail(f"lpr-edge hq --web did not start:\n{self.err.read_text()}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(TIMEOUT)
            raise
        assert code == 0, self.err.read_text()


@pytest.fixture
def hq(request, tmp_path, broker, db, users_file) -> Iterator[RunningHq]:
    running = RunningHq(tmp_path, broker.port, db, "--web-users", str(users_file))
    yield running
    running.stop()


def http_status(url: str, headers: dict | None = None) -> tuple[int, str]:
    """Status and Location of a GET, redirects not followed."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=TIMEOUT) as r:
            return r.status, r.headers.get("location", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("location", "")


def login(page, url: str, user: str = "alice", password: str = PASSWORD) -> None:
    page.goto(url + "/")
    assert page.url.endswith("/login")
    page.fill("#user", user)
    page.fill("#password", password)
    page.click("button[type=submit]")


def decision(hit: dict, verdict: str, reason: str | None = None, note: str | None = None) -> dict:
    """A decision as the car makes it (edge.delivery.decisions)."""
    return decision_message(
        Decision(
            event_id=new_event_id(),
            hit_event_id=hit["event_id"],
            vehicle_id=hit["vehicle_id"],
            decision=verdict,
            reason=reason,
            note=note,
            officer="PC 4711",
            decided_at=datetime.now(UTC),
            supersedes=None,
        )
    )


def located_status(vehicle: str, lat: float, lon: float) -> dict:
    message = status_msg(vehicle, "online")
    message.update(
        cameras={"front-left": {"state": "streaming", "fps": 12.5}},
        outbox={"pending": 2, "oldest_pending_age_s": 3.0, "alarm": None},
        watchlist={"fleet": {"version": 12}, "file": None, "vehicle": None},
        gps={"source": "gpsd", "state": "fix", "lat": lat, "lon": lon, "last_fix": None},
    )
    return message


def audit_rows(db: str, action: str) -> list[dict]:
    with open_store(db) as store:
        return [row for row in store.hq_audit() if row["action"] == action]


# --- login --------------------------------------------------------------------------


def test_login_is_enforced_on_page_api_and_stream(hq, browser):
    assert http_status(hq.url + "/", {"Accept": "text/html"}) == (303, "/login")
    for path in ("/api/hits", "/api/statuses", "/api/search?plate=AB1", "/events", "/api/hits/x"):
        assert http_status(hq.url + path)[0] == 401, path
    # Without --web-trust-header, the header means nothing.
    assert http_status(hq.url + "/api/hits", {"X-Remote-User": "alice"})[0] == 401
    page = browser.page
    login(page, hq.url, password="wrong password")
    page.wait_for_selector("#login-error")
    assert "Wrong user name or password" in page.inner_text("#login-error")
    login(page, hq.url, user="mallory")
    page.wait_for_selector("#login-error")
    screenshot(page, "hq-console-login-refused")
    login(page, hq.url)
    page.wait_for_selector("#stream-state.online")
    assert page.inner_text("#who") == "alice"
    cookie = {c["name"]: c for c in browser.context.cookies()}["lpr_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    # The cookie alone (what a link or an image on another site would send) runs no
    # audited search; the page's own search, with the CSRF header, does.
    assert browser.context.request.get(hq.url + "/api/search?plate=AB1").status == 403
    page.fill("#search-form input[name=plate]", "AB1")
    page.click("#search-form button[type=submit]")
    expect(page.locator("#search-summary")).to_contain_text("result(s) for AB1")
    page.click("#logout")
    page.wait_for_url("**/login")
    page.goto(hq.url + "/")
    assert page.url.endswith("/login")


def test_a_trusted_proxy_header_only_when_configured(tmp_path):
    with HitStore(tmp_path / "hq.sqlite") as store:
        with HqConsole(store, port=0, trust_header="X-Remote-User") as console:
            headers = {"X-Remote-User": "carol", "Accept": "application/json"}
            # A proxied session's reads need the CSRF token (or the browser's word that
            # the page is HQ's own): a link from elsewhere must not run a logged search.
            assert http_status(console.url + "/api/search?plate=AB1", headers)[0] == 403
            headers["Sec-Fetch-Site"] = "same-origin"
            assert http_status(console.url + "/api/hits", headers)[0] == 200
            assert http_status(console.url + "/api/hits")[0] == 401
            bad = {"X-Remote-User": "carol<script>"}
            assert http_status(console.url + "/api/hits", bad)[0] == 401
            # Twice (a client's copy beside the proxy's): refused, whichever comes first.
            assert twice_named(console.url + "/api/hits", "X-Remote-User", "carol", "root") == 401
            # No password login in this mode.
            assert http_status(console.url + "/login")[0] == 200
            assert http_status(console.url + "/api/hits", headers)[0] == 200
            # Another user through the proxy: a login of their own.
            assert (
                http_status(console.url + "/api/hits", {**headers, "X-Remote-User": "dave"})[0]
                == 200
            )
        audited = [(row["user"], row["action"], row["query"]) for row in store.hq_audit()]
        # The login once, at carol's first admitted request (the refused one is not it).
        assert [(u, a) for u, a, _ in audited] == [
            ("carol", "login"), ("carol", "list"), ("carol", "list"),
            ("dave", "login"), ("dave", "list"),
        ]  # fmt: skip
        assert audited[0][2] == {"via": "header"}
    with pytest.raises(UsageError, match="--web-users"):
        HqConsole(store)
    for host in ("0.0.0.0", "192.0.2.7", "::"):
        with pytest.raises(UsageError, match="--web-trust-header needs --web on a loopback"):
            HqConsole(store, host=host, port=0, trust_header="X-Remote-User")


def twice_named(url: str, header: str, first: str, second: str) -> int:
    """The status of a GET carrying ``header`` twice (urllib would merge them)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT)
    conn.putrequest("GET", parts.path)
    conn.putheader(header, first)
    conn.putheader(header, second)
    conn.putheader("Accept", "application/json")
    conn.endheaders()
    status = conn.getresponse().status
    conn.close()
    return status


# --- the live page ----------------------------------------------------------------------


def test_live_hits_decisions_hostile_text_search_view_and_map(hq, db, broker, browser, request):
    kind = request.node.callspec.params["db"]
    page = browser.page
    login(page, hq.url)
    page.wait_for_selector("#stream-state.online")
    pub = Publisher(broker.port)
    try:
        pub.send(f"{PREFIX}/car-7/status", located_status("car-7", 22.3193, 114.1694))
        pub.send(f"{PREFIX}/car-9/status", located_status("car-9", 22.2783, 114.1747))
        first = hit_msg(vehicle="car-7", plate="AB1234")
        started = time.monotonic()
        pub.hit(first)
        page.wait_for_selector(f'#hit-rows tr[data-event-id="{first["event_id"]}"]', timeout=30_000)
        appeared_s = time.monotonic() - started
        record_measurement(
            f"hq-console-hit-appearance-{kind}",
            {
                "seconds": round(appeared_s, 4),
                "from": "publish (QoS 1) by a vehicle client",
                "to": "row on HQ's page in Chromium (SSE push)",
                "store": kind,
            },
        )
        # Positions drawn: one marker per vehicle with a fix (statuses are re-read).
        expect(page.locator("#map .marker")).to_have_count(2, timeout=30_000)
        assert page.inner_text('#vehicle-rows tr[data-vehicle="car-7"]').count("12.5 fps") == 1

        # Officers' decisions, as the car publishes them.
        second = hit_msg(vehicle="car-9", plate="XY987")
        pub.hit(second)
        page.wait_for_selector(f'tr[data-event-id="{second["event_id"]}"]')
        accept = decision(first, "accept")
        reject = decision(second, "reject", "misread", "plate was <b>XY937</b>")
        pub.send(f"{PREFIX}/car-7/decision", accept)
        pub.send(f"{PREFIX}/car-9/decision", reject)
        page.wait_for_selector(f'tr[data-event-id="{first["event_id"]}"] [data-decision=accept]')
        cell = f'tr[data-event-id="{second["event_id"]}"] [data-decision=reject]'
        page.wait_for_selector(cell)
        assert "misread" in page.inner_text(cell)
        assert "plate was <b>XY937</b>" in page.inner_text(cell)
        with open_store(db) as store:
            stored = {row["event_id"]: row for row in store.decisions()}
        assert stored[accept["event_id"]]["payload"] == accept
        assert (
            stored[reject["event_id"]]["reason"],
            stored[reject["event_id"]]["hit_missing"],
        ) == (
            "misread",
            0,
        )

        # Hostile text from a vehicle: shown as text, no script runs.
        hostile = hit_msg(vehicle="car-7", plate="ZZ1")
        hostile["watchlist"]["reason"] = "<img src=x onerror=alert(1)><script>alert(2)</script>"
        hostile["watchlist"]["entry_id"] = '"><svg onload=alert(3)>'
        pub.hit(hostile)
        row = f'tr[data-event-id="{hostile["event_id"]}"]'
        page.wait_for_selector(row)
        assert "<script>alert(2)</script>" in page.inner_text(row)
        assert page.locator(f"{row} img, {row} script, {row} svg").count() == 0
    finally:
        pub.close()
    # Control characters (the schema refuses them: stored by hand, as an older HQ might
    # have) are shown as marked escapes.
    controlled = hit_msg(vehicle="car-7", plate="CC1")
    controlled["watchlist"]["reason"] = "stolen\n\x1b[31mred\u202eevil"
    with open_store(db) as store:
        store.add_hit(controlled)
    page.reload()
    row = f'tr[data-event-id="{controlled["event_id"]}"]'
    page.wait_for_selector(row)
    marks = page.locator(f"{row} .ctl").all_inner_texts()
    assert marks == ["\\x0a", "\\x1b", "\\u202e"]
    screenshot(page, f"hq-console-live-{kind}")

    # The search, from the page: audited as `hq search` audits.
    before = len(audit_rows(db, "search"))
    page.fill("#search-plate", "AB1284")  # a look-alike of AB1234
    page.click("#search-form button[type=submit]")
    page.wait_for_selector(f'#search-rows tr[data-event-id="{first["event_id"]}"]')
    searches = audit_rows(db, "search")
    assert len(searches) == before + 1
    assert (searches[-1]["user"], searches[-1]["query"]["plate"]) == ("alice", "AB1284")
    assert searches[-1]["result_count"] >= 1

    # Viewing a hit's record: audited.
    page.click(f'#hit-rows tr[data-event-id="{first["event_id"]}"] .plate-button')
    page.wait_for_selector(f'#detail-body .record[data-event-id="{first["event_id"]}"] img')
    views = audit_rows(db, "view")
    assert [(v["user"], v["query"], v["result_count"]) for v in views] == [
        ("alice", {"event_id": first["event_id"]}, 1)
    ]
    screenshot(page, f"hq-console-hit-record-{kind}")
    assert browser.dialogs == [] and not [e for e in browser.errors if "alert" in e]
    assert audit_rows(db, "login")[0]["user"] == "alice"
    assert audit_rows(db, "list")  # the list loads are audited too


def test_map_tiles_from_a_configured_tile_server(tmp_path, browser):
    served: list[str] = []

    class Tiles(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            served.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            self.wfile.write(PNG)

        def log_message(self, *args):
            pass

    tiles = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Tiles)
    threading.Thread(target=tiles.serve_forever, daemon=True).start()
    template = f"http://127.0.0.1:{tiles.server_address[1]}/{{z}}/{{x}}/{{y}}.png"
    try:
        with HitStore(tmp_path / "hq.sqlite") as store:
            store.set_status(located_status("car-7", 22.3193, 114.1694))
            store.set_status(located_status("car-8", 22.2800, 114.1600))
            with HqConsole(store, port=0, trust_header="X-Remote-User", map_tiles=template) as hq:
                browser.context.set_extra_http_headers({"X-Remote-User": "dave"})
                page = browser.page
                page.goto(hq.url + "/")
                expect(page.locator("#map .marker")).to_have_count(2, timeout=30_000)
                expect(page.locator("#map image.tile").first).to_be_attached()
                href = page.get_attribute("#map image.tile", "href")
                assert href.startswith(tile_origin(template) + "/")
                # Fetched: the page's CSP lets the tile server's images in.
                deadline = time.monotonic() + TIMEOUT
                while not served and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert served and all(path.endswith(".png") for path in served)
                assert not [e for e in browser.errors if "Content Security Policy" in e]
                screenshot(page, "hq-console-map-tiles")
    finally:
        tiles.shutdown()


# --- options and users ---------------------------------------------------------------


def test_password_hashes_and_users_file(tmp_path):
    one, two = hash_password("same password"), hash_password("same password")
    assert one != two and one.startswith("scrypt$16384$8$1$")  # a salt of its own
    assert check_password("same password", one) and not check_password("other", one)
    path = tmp_path / "users.toml"
    path.write_text(f'alice = "{one}"\n')
    users = Users.load(path)
    assert users.check("alice", "same password")
    assert not users.check("alice", "wrong") and not users.check("nobody", "same password")
    for text, why in (
        ('alice = "md5$abc"\n', "not a hash"),
        ('"bad name" = "x"\n', "user"),
        ("alice = \n", "not TOML"),
        ("", "no users"),
    ):
        path.write_text(text)
        with pytest.raises(UsageError, match=why):
            Users.load(path)


def test_web_option_errors(tmp_path, users_file):
    assert parse_web_address("127.0.0.1:8081") == ("127.0.0.1", 8081)
    assert parse_web_address("[::1]:9000") == ("::1", 9000)
    assert parse_web_address("127.0.0.1") == ("127.0.0.1", 8080)
    for bad in ("localhost:80", "127.0.0.1:99999", "1.2.3.4:x"):
        with pytest.raises(UsageError, match="--web"):
            parse_web_address(bad)
    for bad in ("ftp://x/{z}/{x}/{y}", "https://tiles.example/{z}/{x}.png", 'https://a/"{z}{x}{y}'):
        with pytest.raises(UsageError, match="--map-tiles"):
            tile_origin(bad)
    from edge.cli import build_parser

    db = str(tmp_path / "hq.sqlite")
    for argv, why in (
        (["--web", "127.0.0.1:0"], "--web-users FILE or --web-trust-header"),
        (["--web-users", str(users_file)], "need --web"),
        (["--web", "127.0.0.1:0", "--web-trust-header", "X Bad"], "not a header name"),
        (["--web", "0.0.0.0:0", "--web-trust-header", "X-Remote-User"], "needs --web on a loop"),
        (["--web", "127.0.0.1:0", "--web-users", str(tmp_path / "none.toml")], "cannot read"),
    ):
        args = build_parser().parse_args(["hq", "--host", "127.0.0.1", "--db", db, *argv])
        with pytest.raises(UsageError, match=why):
            cmd_hq(args)
    # An address taken: refused naming --web, before any message is taken.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        argv = ["--web", address, "--web-users", str(users_file)]
        args = build_parser().parse_args(["hq", "--host", "127.0.0.1", "--db", db, *argv])
        with pytest.raises(UsageError, match="--web 127.0.0.1:.*cannot listen"):
            cmd_hq(args)


def test_web_user_add_prints_a_line_the_console_accepts(tmp_path):
    # A session of its own has no terminal: getpass then reads standard input.
    done = subprocess.run(
        [sys.executable, "-m", "edge", "hq", "web-user", "add", "erin"],
        cwd=ROOT,
        start_new_session=True,
        input="a long password\na long password\n",
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip().splitlines()[-1]
    (tmp_path / "u.toml").write_text(line + "\n")
    assert Users.load(tmp_path / "u.toml").check("erin", "a long password")
    assert json.dumps(line).count("scrypt$") == 1


# --- from the officer's click in the car to HQ's page ---------------------------------
# The real in-car console (the car's delivery, outbox and console, as
# tests/vehicle/test_console.py runs them) and the real `lpr-edge hq --web` on one
# Mosquitto, both pages in one Chromium.


@pytest.fixture
def car(tmp_path):
    car = Car(
        tmp_path,
        [
            "AB1234,stolen-vehicle,1,stolen,false,e1",
            "XY987,wanted-person,2,driver wanted,false,e2",
        ],
    )
    yield car
    car.close()


def test_decisions_clicked_in_the_car_reach_hqs_database_and_page(
    car, db, users_file, tmp_path, browser
):
    """A hit the car raises shows on both pages; accept, and reject with a reason,
    clicked on the in-car page reach HQ's database and show beside the hit there."""
    hq = RunningHq(tmp_path, car.broker.port, db, "--web-users", str(users_file))
    try:
        in_car = browser.page
        log_in(in_car, car.url)
        # Another host name for HQ: cookies are kept per host, not per port, and both
        # consoles name theirs lpr_session.
        at_hq = browser.context.new_page()
        login(at_hq, hq.url.replace("127.0.0.1", "localhost"))
        at_hq.wait_for_selector("#stream-state.online", timeout=TIMEOUT_MS)
        accepted, rejected = car.read("AB1234"), car.read("XY987")
        for hit in (accepted, rejected):
            in_car.wait_for_selector(f"li[data-event-id='{hit.event_id}']", timeout=TIMEOUT_MS)
            at_hq.wait_for_selector(f"tr[data-event-id='{hit.event_id}']", timeout=TIMEOUT_MS)

        in_car.locator(f"li[data-event-id='{accepted.event_id}'] .accept").click()
        card = in_car.locator(f"li[data-event-id='{rejected.event_id}']")
        card.locator(".reject-reason").select_option("plate-on-another-vehicle")
        card.locator(".note").fill("white van")
        card.locator(".reject").click()

        row = f"tr[data-event-id='{accepted.event_id}'] [data-decision=accept]"
        at_hq.wait_for_selector(row, timeout=TIMEOUT_MS)
        row = f"tr[data-event-id='{rejected.event_id}'] [data-decision=reject]"
        at_hq.wait_for_selector(row, timeout=TIMEOUT_MS)
        shown = at_hq.inner_text(row)
        assert "plate-on-another-vehicle" in shown and "PC 4711" in shown and "white van" in shown
        screenshot(in_car, "hq-e2e-in-car-decisions")
        screenshot(at_hq, "hq-e2e-hq-decisions")

        def stored() -> dict:
            with open_store(db) as store:
                return {row["hit_event_id"]: row for row in store.decisions()}

        assert poll_until(lambda: len(stored()) == 2, 30)
        rows = stored()
        assert rows[accepted.event_id]["decision"] == "accept"
        assert rows[accepted.event_id]["officer"] == "PC 4711"
        assert (rows[rejected.event_id]["reason"], rows[rejected.event_id]["hit_missing"]) == (
            "plate-on-another-vehicle",
            0,
        )
        assert {r["vehicle_id"] for r in rows.values()} == {car.config.vehicle.id}
        assert browser.errors == []
    finally:
        hq.stop()


def login_cookie(url: str) -> str:
    """The Set-Cookie of a password login as alice."""
    form = f"user=alice&password={PASSWORD}".replace(" ", "+").encode()
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT)
    conn.request(
        "POST", "/login", body=form, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    response = conn.getresponse()
    response.read()
    conn.close()
    assert response.status == 303, response.status
    return response.getheader("set-cookie")


def test_the_session_cookie_is_secure_when_asked_or_behind_a_proxy(tmp_path, users_file):
    from edge.cli import build_parser
    from edge.hq.command import _web_options

    users = Users.load(users_file)
    with HitStore(tmp_path / "hq.sqlite") as store:
        for options, secure in (
            ({}, False),
            ({"secure_cookie": True}, True),
            ({"trust_header": "X-Remote-User"}, True),
            ({"trust_header": "X-Remote-User", "secure_cookie": False}, False),
        ):
            with HqConsole(store, port=0, users=users, **options) as console:
                cookie = login_cookie(console.url)
            flags = [part.strip().lower() for part in cookie.split(";")]
            assert ("secure" in flags) == secure, (options, cookie)
    argv = ["hq", "--web", "127.0.0.1:0", "--web-users", str(users_file)]
    for extra, expected in (
        ([], None),
        (["--web-secure-cookie"], True),
        (["--no-web-secure-cookie"], False),
    ):
        args = build_parser().parse_args([*argv, *extra])
        assert _web_options(args)["secure_cookie"] is expected


def test_repeated_wrong_passwords_are_refused_for_a_while(tmp_path, users_file):
    def post(url: str, password: str) -> int:
        form = f"user=alice&password={password}".replace(" ", "+").encode()
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT)
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        conn.request("POST", "/login", body=form, headers=headers)
        status = conn.getresponse().status
        conn.close()
        return status

    users = Users.load(users_file)
    with HitStore(tmp_path / "hq.sqlite") as store, HqConsole(store, port=0, users=users) as hq:
        assert [post(hq.url, "guess") for _ in range(5)] == [401] * 5
        assert post(hq.url, PASSWORD) == 429


def test_a_hit_pushed_while_the_list_reloads_is_kept(tmp_path, users_file, browser):
    users = Users.load(users_file)
    with HitStore(tmp_path / "hq.sqlite") as store, HqConsole(store, port=0, users=users) as hq:
        before = hit_msg(plate="AB1234")
        store.add_hit(before)
        page = browser.page
        login(page, hq.url)
        page.wait_for_selector(f'#hit-rows tr[data-event-id="{before["event_id"]}"]')
        pushed = hit_msg(plate="XY987")

        def hold_the_list(route):
            # The list as the store held it, then a hit stored and pushed before the
            # page has that list: the push arrives while the reload is in flight.
            answer = route.fetch()
            store.add_hit(pushed)
            hq.hit_stored(pushed)
            page.wait_for_function("document.body.dataset.queued === '1'")
            route.fulfill(response=answer)

        page.route("**/api/hits?*", hold_the_list, times=1)
        page.reload()
        page.wait_for_selector(f'#hit-rows tr[data-event-id="{pushed["event_id"]}"]')
        shown = page.eval_on_selector_all(
            "#hit-rows tr", "rows => rows.map(r => r.dataset.eventId)"
        )
        assert shown == [pushed["event_id"], before["event_id"]]
        assert browser.errors == []


def test_the_verdict_in_force_follows_supersedes_not_the_cars_clock(tmp_path, users_file, browser):
    users = Users.load(users_file)
    with HitStore(tmp_path / "hq.sqlite") as store, HqConsole(store, port=0, users=users) as hq:
        hit = hit_msg(plate="AB1234")
        store.add_hit(hit)
        first = decision(hit, "accept")
        # The correction, after the car's clock was stepped back: an earlier decided_at.
        correction = decision_message(
            Decision(
                event_id=new_event_id(),
                hit_event_id=hit["event_id"],
                vehicle_id=hit["vehicle_id"],
                decision="reject",
                reason="misread",
                note=None,
                officer="PC 4711",
                decided_at=datetime.now(UTC) - timedelta(hours=1),
                supersedes=first["event_id"],
            )
        )
        store.add_decision(first)
        store.add_decision(correction)
        page = browser.page
        login(page, hq.url)
        row = f'#hit-rows tr[data-event-id="{hit["event_id"]}"]'
        page.wait_for_selector(f"{row} .verdict")
        in_force = page.locator(f"{row} .verdict:not(.superseded)")
        assert in_force.count() == 1 and in_force.get_attribute("data-decision") == "reject"
        assert page.locator(f"{row} .verdict.superseded").get_attribute("data-decision") == "accept"
