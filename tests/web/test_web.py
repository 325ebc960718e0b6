"""The shared web layer on a real uvicorn server on a free loopback port: start and
stop, token login and sessions, CSRF, security headers, escaping templates and the
server-sent event stream (a page that stops reading is dropped, others go on)."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from edge.web.app import CONTENT_SECURITY_POLICY, ConsoleApp, session_of
from edge.web.auth import SESSION_COOKIE, TokenAuth
from edge.web.events import EventStream
from edge.web.server import WebServer, WebServerError

TOKEN = "test-token-0123456789abcdef"


class Site:
    """A console with one page, one JSON answer, one POST and one event stream."""

    def __init__(self, stream: EventStream, ttl_s: float = 3600.0):
        auth = TokenAuth(TOKEN, ttl_s=ttl_s)
        auth.when_closed(stream.recheck)
        self.console = ConsoleApp("Test console", auth)
        self.posted: list[dict] = []
        self.stream = stream
        self.app = self.console.build(
            [
                Route("/", self.page),
                Route("/api/echo", self.echo, methods=["POST"]),
                Route("/api/data", self.data),
                Route("/login-history", self.data),
                Route("/loginx", self.data),
                Route("/events", self.events),
            ]
        )

    async def page(self, request: Request):
        return self.console.render(request, "login.html", error="<b>bold</b> & 'quoted'")

    async def echo(self, request: Request):
        self.posted.append(await request.json())
        return JSONResponse({"ok": True})

    async def events(self, request: Request):
        still_valid = self.console.auth.still_valid(session_of(request))
        return self.stream.response(request, hello={}, still_valid=still_valid)

    async def data(self, request: Request):
        return JSONResponse({"value": 1})


@pytest.fixture
def site():
    stream = EventStream(queue_size=16, keepalive_s=0.5)
    site = Site(stream)
    server = WebServer(site.app, "127.0.0.1", 0, name="test").start()
    site.server = server
    yield site
    stream.close()
    server.stop()


def request(server: WebServer, method: str, path: str, *, body=None, headers=None):
    parts = urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response, data


def login(server: WebServer) -> tuple[str, str]:
    """(cookie header value, CSRF token) of a fresh session."""
    response, _ = request(
        server,
        "POST",
        "/login",
        body=f"token={TOKEN}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status == 303
    set_cookie = response.getheader("set-cookie")
    assert "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie.replace("Strict", "strict")
    cookie = set_cookie.split(";")[0]
    _, page = request(server, "GET", "/", headers={"Cookie": cookie})
    marker = b'name="csrf-token" content="'
    start = page.index(marker) + len(marker)
    return cookie, page[start : page.index(b'"', start)].decode()


def test_port_zero_reports_the_bound_port_and_stop_frees_it(site):
    port = urlsplit(site.server.url).port
    assert port and port != 0
    assert site.server.url == f"http://127.0.0.1:{port}"
    site.server.stop()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # free again


def test_a_taken_port_or_a_bad_address_is_an_error_at_start(site):
    port = urlsplit(site.server.url).port
    with pytest.raises(WebServerError, match="cannot listen"):
        WebServer(site.app, "127.0.0.1", port).start()
    with pytest.raises(WebServerError, match="not an IP address"):
        WebServer(site.app, "localhost-ish", 0).start()


def test_without_login_pages_redirect_and_the_rest_is_refused(site):
    response, _ = request(site.server, "GET", "/", headers={"Accept": "text/html"})
    assert response.status == 303 and response.getheader("location") == "/login"
    for method, path in (("GET", "/api/data"), ("GET", "/events"), ("POST", "/api/echo")):
        response, _ = request(site.server, method, path, body=b"{}" if method == "POST" else None)
        assert response.status == 401, path
    response, _ = request(site.server, "GET", "/static/web.js")
    assert response.status == 200  # the login page needs it


def test_wrong_token_and_forged_session_are_refused(site):
    response, page = request(
        site.server,
        "POST",
        "/login",
        body="token=wrong",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status == 401 and b"Wrong token" in page
    assert response.getheader("set-cookie") is None
    for headers in (
        {"Cookie": f"{SESSION_COOKIE}=made-up"},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
    ):
        response, _ = request(site.server, "GET", "/api/data", headers=headers)
        assert response.status == 401, headers


def test_a_session_needs_the_csrf_header_to_post(site):
    cookie, csrf = login(site.server)
    body = json.dumps({"x": 1})
    response, _ = request(site.server, "POST", "/api/echo", body=body, headers={"Cookie": cookie})
    assert response.status == 403
    response, _ = request(
        site.server,
        "POST",
        "/api/echo",
        body=body,
        headers={"Cookie": cookie, "X-CSRF-Token": csrf[:-1] + "x"},
    )
    assert response.status == 403
    assert site.posted == []
    response, _ = request(
        site.server,
        "POST",
        "/api/echo",
        body=body,
        headers={"Cookie": cookie, "X-CSRF-Token": csrf},
    )
    assert response.status == 200 and site.posted == [{"x": 1}]
    # A program with the token itself needs no session and no CSRF token.
    response, _ = request(
        site.server, "POST", "/api/echo", body=body, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status == 200


def test_logout_ends_the_session(site):
    cookie, csrf = login(site.server)
    response, _ = request(
        site.server, "POST", "/logout", headers={"Cookie": cookie, "X-CSRF-Token": csrf}
    )
    assert response.status == 303
    response, _ = request(site.server, "GET", "/api/data", headers={"Cookie": cookie})
    assert response.status == 401


def test_security_headers_and_escaping(site):
    cookie, _ = login(site.server)
    response, page = request(site.server, "GET", "/", headers={"Cookie": cookie})
    assert response.getheader("content-security-policy") == CONTENT_SECURITY_POLICY
    assert "default-src 'self'" in CONTENT_SECURITY_POLICY
    assert response.getheader("x-content-type-options") == "nosniff"
    assert response.getheader("cache-control") == "no-store"
    assert response.getheader("server") is None
    assert b"&lt;b&gt;bold&lt;/b&gt; &amp; &#39;quoted&#39;" in page
    assert b"<b>bold</b>" not in page


def test_a_login_from_another_origin_is_refused(site):
    def post(origin: str):
        response, _ = request(
            site.server,
            "POST",
            "/login",
            body=f"token={TOKEN}",
            headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": origin},
        )
        return response

    here = urlsplit(site.server.url).netloc
    port = urlsplit(site.server.url).port
    for origin in ("http://evil.example", f"https://evil.example:{port}", "null"):
        response = post(origin)
        assert response.status == 403 and response.getheader("set-cookie") is None, origin
    # The same host through a proxy that ends TLS: the page's origin is https.
    for origin in (f"https://{here}", f"http://{here}"):
        response = post(origin)
        assert response.status == 303 and response.getheader("set-cookie"), origin


class SseReader:
    """One client of the event stream, reading on its own thread (or not at all)."""

    def __init__(self, server: WebServer, *, read: bool = True, cookie: str | None = None):
        parts = urlsplit(server.url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
        if not read:
            # A small receive buffer makes a client that stops reading fall behind soon.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        # Connection: close, so that a refusal ends the connection too (the tests
        # then tell it from a stream that ended by whether the stream said hello).
        credential = f"Cookie: {cookie}" if cookie else f"Authorization: Bearer {TOKEN}"
        self.sock.sendall(
            f"GET /events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{credential}\r\n\r\n".encode()
        )
        self.events: list[dict] = []
        self.ended = threading.Event()
        self.hello = threading.Event()
        if read:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buffer = b""
        try:
            while chunk := self.sock.recv(65536):
                buffer += chunk
                while b"\n\n" in buffer:
                    frame, buffer = buffer.split(b"\n\n", 1)
                    if b"event: hello" in frame:
                        self.hello.set()
                    for line in frame.split(b"\n"):
                        if line.startswith(b"data: {") and b'"n"' in line:
                            self.events.append(json.loads(line[6:]))
        except OSError:
            pass
        self.ended.set()

    def close(self) -> None:
        self.sock.close()


def wait(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_events_reach_every_reader_and_a_stalled_one_is_dropped(site):
    stream = site.stream
    reader = SseReader(site.server)
    stalled = SseReader(site.server, read=False)
    assert wait(lambda: stream.clients == 2)
    big = "x" * 40000  # fills the stalled client's socket buffers soon
    for n in range(200):
        # Returns whatever the stalled client does: were it waited on, this loop would
        # never end (the test's timeout), and the reader would get nothing more.
        stream.publish("tick", {"n": n, "pad": big})
        time.sleep(0.005)  # a reading page keeps up at this pace
    assert wait(lambda: stream.dropped == 1 and stream.clients == 1), (
        stream.dropped,
        stream.clients,
        len(reader.events),
    )
    assert wait(lambda: len(reader.events) == 200)
    assert [e["n"] for e in reader.events] == list(range(200))
    stream.publish("tick", {"n": 1000})
    assert wait(lambda: reader.events[-1]["n"] == 1000)
    reader.close()
    stalled.close()


def test_stop_ends_open_streams(site):
    reader = SseReader(site.server)
    assert wait(lambda: site.stream.clients == 1)
    site.stream.close()
    site.server.stop()
    assert reader.ended.wait(30)


def test_logging_out_ends_the_sessions_streams_and_not_others(site):
    cookie, csrf = login(site.server)
    other_cookie, _ = login(site.server)
    reader = SseReader(site.server, cookie=cookie)
    other = SseReader(site.server, cookie=other_cookie)
    program = SseReader(site.server)
    assert wait(lambda: site.stream.clients == 3)
    response, _ = request(
        site.server, "POST", "/logout", headers={"Cookie": cookie, "X-CSRF-Token": csrf}
    )
    assert response.status == 303
    assert reader.ended.wait(30) and reader.hello.is_set()
    site.stream.publish("tick", {"n": 1})
    assert wait(lambda: other.events and program.events)
    assert not other.ended.is_set() and not program.ended.is_set()
    for r in (reader, other, program):
        r.close()


def test_a_stream_ends_when_its_session_expires():
    stream = EventStream(keepalive_s=0.2)
    site = Site(stream, ttl_s=3.0)
    with WebServer(site.app, "127.0.0.1", 0, name="test") as server:
        cookie, _ = login(server)
        reader = SseReader(server, cookie=cookie)
        # No logout: the session runs out, and a keepalive finds it gone.
        assert reader.ended.wait(30) and reader.hello.is_set()
        reader.close()
        stream.close()


def test_an_api_read_of_a_session_needs_the_csrf_header(site):
    cookie, csrf = login(site.server)
    for refused in ({}, {"Sec-Fetch-Site": "cross-site"}, {"X-CSRF-Token": csrf[:-1] + "x"}):
        response, _ = request(
            site.server, "GET", "/api/data", headers={"Cookie": cookie, **refused}
        )
        assert response.status == 403, refused
    for allowed in ({"X-CSRF-Token": csrf}, {"Sec-Fetch-Site": "same-origin"}):
        response, data = request(
            site.server, "GET", "/api/data", headers={"Cookie": cookie, **allowed}
        )
        assert response.status == 200 and json.loads(data) == {"value": 1}, allowed
    # Pages and a program's bearer token are not concerned.
    response, _ = request(site.server, "GET", "/", headers={"Cookie": cookie})
    assert response.status == 200
    response, _ = request(
        site.server, "GET", "/api/data", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status == 200


def test_repeated_wrong_tokens_from_one_address_are_refused_for_a_while(site):
    def post(token: str):
        return request(
            site.server,
            "POST",
            "/login",
            body=f"token={token}",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )

    for _ in range(5):
        response, _ = post("wrong")
        assert response.status == 401
    # Now even the right token is refused, without being looked at.
    response, page = post(TOKEN)
    assert response.status == 429 and b"Too many failed logins" in page
    assert response.getheader("set-cookie") is None


def test_only_the_login_page_itself_and_static_files_are_public(site):
    for path in ("/login-history", "/loginx", "/static"):
        response, _ = request(site.server, "GET", path)
        assert response.status == 401, path
    for path in ("/login", "/static/web.js"):
        response, _ = request(site.server, "GET", path)
        assert response.status == 200, path
