"""HQ's console: one page of live hits (newest first, filtered by list and priority)
with the officers' decisions beside them, each vehicle's last status and position
(on map tiles when ``--map-tiles`` names a tile server, on a plain coordinate canvas
otherwise, so that it works offline), a hit's full record, and the search of
``lpr-edge hq search``.

Login: users and scrypt hashes from ``--web-users`` (:mod:`edge.hq.web.users`), or a
reverse proxy's authentication header with ``--web-trust-header`` (trusted as it
comes, so refused unless ``--web`` is a loopback address: the proxy runs on this host
and must strip the header from clients; a request carrying it twice is refused).
Sessions and CSRF checks are the shared layer's (:class:`edge.web.auth.TokenAuth`,
:class:`edge.web.auth.AuthMiddleware`); its console token is never given out, so
only a user's login opens a session.

Audited in ``hq_audit`` as the logged-in user: each login, each load of the hit list
(``list``: its filters and how many hits it showed), each view of a hit's record
(``view``), each search (``search``, through :func:`edge.hq.query.audited_search`,
as the command records it).

Live push: the subscriber's callbacks publish what this worker stored to the page's
event stream. With several workers sharing a subscription each serves its own page
over the shared database: the list a page loads (at open, on reconnect, on a filter
change) comes from the database and holds every worker's hits; what arrives after is
pushed by the worker that stored it, so a page shows live the share of its worker,
and a reload shows all.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import re
import secrets
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge.errors import UsageError
from edge.hq.console import escape_control, log
from edge.hq.query import audited_search, search_query
from edge.hq.web.users import Users
from edge.textrules import IDENTIFIER
from edge.timefmt import now_iso
from edge.web.app import (
    CONTENT_SECURITY_POLICY,
    ConsoleApp,
    session_of,
)
from edge.web.auth import Session, TokenAuth
from edge.web.events import EventStream
from edge.web.server import WebServer

DEFAULT_PORT = 8080
#: Hits a list load shows at most.
MAX_LIST = 500
DEFAULT_LIST = 200
_EVENT_ID = re.compile(r"[0-9A-Za-z-]{1,64}")


def parse_web_address(text: str) -> tuple[str, int]:
    """``ADDR[:PORT]`` (IPv6 as ``[ADDR]:PORT``) -> (address, port); UsageError
    naming ``--web`` otherwise."""
    host, port = text, str(DEFAULT_PORT)
    found = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", text) or re.fullmatch(
        r"([^:]+)(?::(\d+))?", text
    )
    if found:
        host, port = found[1], found[2] or port
    try:
        ipaddress.ip_address(host)
        number = int(port)
        if not 0 <= number <= 65535:
            raise ValueError
    except ValueError:
        raise UsageError(
            f"--web {escape_control(text)!r}: expected ADDRESS[:PORT], an IP address "
            f"(e.g. 127.0.0.1:{DEFAULT_PORT} or [::1]:{DEFAULT_PORT})"
        ) from None
    return host, number


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tile_origin(template: str) -> str:
    """The origin of a ``--map-tiles`` URL template (for the page's CSP); UsageError
    unless it is an http(s) URL with ``{z}``, ``{x}`` and ``{y}``."""
    parts = urlsplit(template)
    if (
        parts.scheme not in ("http", "https")
        or not parts.netloc
        or any(f"{{{key}}}" not in template for key in "zxy")
        or not template.isprintable()
        or any(c in template for c in "\"' <>")
    ):
        raise UsageError(
            f"--map-tiles {escape_control(template)!r}: expected an http(s) URL template "
            "with {z}, {x} and {y}, e.g. https://tiles.example.hk/{z}/{x}/{y}.png"
        )
    return f"{parts.scheme}://{parts.netloc}"


class HqAuth(TokenAuth):
    """The shared layer's sessions, opened by a user's login (never by its token,
    which nobody is given: bearer requests are refused), remembering each session's
    user; and, with ``trust_header``, a session per user the proxy names."""

    def __init__(self, users: Users | None, trust_header: str | None):
        super().__init__(secrets.token_urlsafe(32))
        self.users = users
        self.trust_header = trust_header.lower() if trust_header else None
        self._user_lock = threading.Lock()
        self._proxied: dict[str, Session] = {}
        #: Proxied sessions whose login is not yet audited (at their first admitted
        #: request: a proxy's login has no form, so that is when HQ learns of it).
        self._unaudited: set[str] = set()
        #: Records a proxied login (blocking: run off the event loop).
        self.audit_login: Callable[[str], object] = lambda user: None

    def bearer(self, request: Request) -> bool:
        return False

    def close_session(self, session_id: str | None) -> None:
        with self._user_lock:
            for user in [u for u, s in self._proxied.items() if s.id == session_id]:
                del self._proxied[user]
            self._unaudited.discard(session_id or "")
        super().close_session(session_id)

    async def admitted(self, session: Session) -> None:
        with self._user_lock:
            first = session.id in self._unaudited
            self._unaudited.discard(session.id)
        if first and session.user is not None:
            await asyncio.to_thread(self.audit_login, session.user)

    def is_open(self, session: Session) -> bool:
        with self._user_lock:
            proxied = session in self._proxied.values()
        if proxied:
            return session.expires > time.time()
        return super().is_open(session)

    def session_of(self, request: Request) -> Session | None:
        if self.trust_header is not None:
            named = request.headers.getlist(self.trust_header)
            if named:
                user = named[0]
                # Twice is not what the proxy sends: a client's copy got past it, and
                # which one a reader takes first is not something to bet a login on.
                if len(named) > 1 or not IDENTIFIER.fullmatch(user):
                    return None
                with self._user_lock:
                    session = self._proxied.get(user)
                    if session is None or session.expires <= time.time():
                        # Not among the cookie sessions: the proxy logs in each request.
                        session = Session(
                            secrets.token_urlsafe(32),
                            secrets.token_urlsafe(32),
                            time.time() + self.ttl_s,
                            user,
                        )
                        self._proxied[user] = session
                        self._unaudited.add(session.id)
                return session
        if self.users is None:
            return None
        return super().session_of(request)


class TileImages:
    """Lets the page load images from the map's tile server: the shared CSP allows
    the console itself only."""

    def __init__(self, app: ASGIApp, origin: str):
        self.app = app
        self.policy = CONTENT_SECURITY_POLICY.replace(
            "img-src 'self' data:", f"img-src 'self' data: {origin}"
        ).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, self.policy if k == b"content-security-policy" else v)
                    for k, v in message.get("headers", [])
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_policy)


def _position(message: dict) -> dict | None:
    where = message.get("position")
    if isinstance(where, dict) and isinstance(where.get("lat"), int | float):
        return {"lat": where["lat"], "lon": where.get("lon")}
    return None


def hit_summary(
    message: dict,
    *,
    received_at: str | None,
    conflict: bool = False,
    withdrawn_by: str | None = None,
) -> dict:
    """A hit as the page lists it (no images: those are in its record, audited)."""
    wl = message.get("watchlist") or {}
    return {
        "event_id": message.get("event_id"),
        "vehicle_id": message.get("vehicle_id"),
        "camera": message.get("camera"),
        "plate": message.get("plate"),
        "observed_at": message.get("observed_at"),
        "received_at": received_at,
        "list": wl.get("list"),
        "priority": wl.get("priority"),
        "match": wl.get("match"),
        "entry_id": wl.get("entry_id"),
        "entry_plate": wl.get("entry_plate"),
        "reason": wl.get("reason"),
        "covert": bool(wl.get("covert")),
        "position": _position(message),
        "conflict": conflict,
        "withdrawn": withdrawn_by is not None,
        "decisions": [],
    }


def _row_summary(row: dict) -> dict:
    return hit_summary(
        row["payload"],
        received_at=row["received_at"],
        conflict=row["conflict_of"] is not None,
        withdrawn_by=row["withdrawn_by"],
    )


def decision_summary(
    message: dict, *, conflict: bool = False, hit_missing: bool = False, received_at=None
) -> dict:
    keys = ("event_id", "hit_event_id", "vehicle_id", "decision", "reason", "note", "officer")
    summary = {key: message.get(key) for key in keys}
    summary.update(
        decided_at=message.get("decided_at"),
        supersedes=message.get("supersedes"),
        conflict=conflict,
        hit_missing=hit_missing,
        received_at=received_at,
    )
    return summary


def _decision_row(row: dict) -> dict:
    return decision_summary(
        row["payload"],
        conflict=row["conflict_of"] is not None,
        hit_missing=bool(row["hit_missing"]),
        received_at=row["received_at"],
    )


def status_summary(vehicle_id: str, status: dict) -> dict:
    message = status.get("message") or {}
    return {
        "vehicle_id": vehicle_id,
        "state": status.get("state"),
        "at": status.get("at"),
        "received_at": status.get("received_at"),
        "software": message.get("software"),
        "cameras": message.get("cameras") or {},
        "outbox": message.get("outbox"),
        "watchlist": message.get("watchlist"),
        "gps": message.get("gps"),
    }


def _int_param(request: Request, name: str, default: int | None, low: int, high: int):
    text = request.query_params.get(name, "")
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{name}: expected a whole number") from None
    if not low <= value <= high:
        raise UsageError(f"{name}: expected {low} to {high}")
    return value


def _text_param(request: Request, name: str) -> str | None:
    text = request.query_params.get(name, "").strip()
    return text[:200] or None


class HqConsole:
    """HQ's console over an open store; :meth:`start` serves it, the ``*_stored``
    methods (the subscriber's callbacks, any thread) push to open pages."""

    def __init__(
        self,
        store,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        users: Users | None = None,
        trust_header: str | None = None,
        map_tiles: str | None = None,
        secure_cookie: bool | None = None,
        title: str = "HQ console",
    ):
        if users is None and trust_header is None:
            raise UsageError("--web needs --web-users FILE or --web-trust-header HEADER")
        if trust_header is not None and not _loopback(host):
            # The header is believed from whoever sends it: only the proxy on this host
            # may reach the console, or any client could name any user.
            raise UsageError(
                f"--web-trust-header needs --web on a loopback address (127.0.0.1 or "
                f"[::1]), not {escape_control(host)}: the proxy that sets the header runs "
                "on this host, and anyone else who can reach HQ could send it too"
            )
        self.store = store
        self.host, self.port = host, port
        self.title = title
        self.map_tiles = map_tiles
        self.auth = HqAuth(users, trust_header)
        self.auth.audit_login = lambda user: store.add_hq_audit(user, "login", {"via": "header"}, 0)
        # HQ itself speaks plain HTTP: Secure only when users come through a TLS proxy,
        # which a trusted header says they do (else the browser would never send it).
        self.auth.secure_cookie = (
            trust_header is not None if secure_cookie is None else secure_cookie
        )
        self.events = EventStream()
        self.auth.when_closed(self.events.recheck)
        self.web = ConsoleApp(
            title,
            self.auth,
            packages=("edge.hq.web",),
            credentials=self._credentials,
            on_login=self._logged_in,
            login_template="hq-login.html",
            login_context={
                "password_login": users is not None,
                "trust_header": self.auth.trust_header or "",
            },
            wrong_login="Wrong user name or password.",
            login_closed=None if users is not None else "Log in through the HQ sign-in proxy.",
        )
        tiles = [Middleware(TileImages, origin=tile_origin(map_tiles))] if map_tiles else []
        self.app = self.web.build(
            [
                Route("/", self._page),
                Route("/api/hits", self._hits),
                Route("/api/hits/{event_id}", self._hit),
                Route("/api/statuses", self._statuses),
                Route("/api/search", self._search),
                Route("/events", self._events),
            ],
            middleware=tiles,
        )
        self.server: WebServer | None = None

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> HqConsole:
        self.server = WebServer(self.app, self.host, self.port, name="HQ console").start()
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def stop(self) -> None:
        self.events.close()
        if self.server is not None:
            self.server.stop()
            self.server = None

    def __enter__(self) -> HqConsole:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ----------------------------------------------------------------- pushed

    def hit_stored(self, message: dict, *, conflict: bool = False) -> None:
        self.events.publish("hit", hit_summary(message, received_at=now_iso(), conflict=conflict))

    def decision_stored(self, message: dict, hit: dict | None) -> None:
        summary = decision_summary(message, hit_missing=hit is None, received_at=now_iso())
        self.events.publish("decision", summary)

    def withdrawal_stored(self, message: dict, hit: dict | None) -> None:
        withdrawn = message.get("withdraws_event_id")
        self.events.publish(
            "withdrawal", {"hit_event_id": withdrawn, "vehicle_id": message["vehicle_id"]}
        )

    def status_changed(self, message: dict, previous: str | None) -> None:
        self.events.publish("status", {"vehicle_id": message["vehicle_id"]})

    # ----------------------------------------------------------------- app

    def _user(self, request: Request) -> str:
        # AuthMiddleware lets only a session through (HQ refuses bearer requests), and
        # HQ opens sessions for a user only.
        session = session_of(request)
        assert session is not None and session.user is not None
        return session.user

    async def _run(self, work: Callable, *args, **kwargs):
        # The stores block (SQLite, psycopg): off the event loop.
        return await asyncio.to_thread(work, *args, **kwargs)

    async def _credentials(self, form: dict[str, str]) -> tuple[bool, str | None]:
        user, password = form.get("user", "").strip(), form.get("password", "")
        users = self.auth.users
        assert users is not None  # (password logins are closed without users)
        if IDENTIFIER.fullmatch(user) and await self._run(users.check, user, password):
            return True, user
        log.warning("HQ console: a login as %r was refused", user[:64])
        return False, None

    async def _logged_in(self, request: Request, user: str | None) -> None:
        await self._run(self.store.add_hq_audit, user, "login", {"via": "password"}, 0)

    async def _page(self, request: Request) -> Response:
        return self.web.render(
            request, "hq.html", user=self._user(request), map_tiles=self.map_tiles or ""
        )

    def _load_hits(self, user: str, list_name, priority, limit) -> dict:
        rows = self.store.recent_hits(limit=limit, list_name=list_name, priority=priority)
        hits = [_row_summary(row) for row in rows]
        by_hit: dict[tuple, list] = {}
        for hit in hits:
            by_hit.setdefault((hit["event_id"], hit["vehicle_id"]), []).append(hit)
        ids = sorted({hit["event_id"] for hit in hits})
        for row in self.store.decisions(ids) if ids else []:
            for hit in by_hit.get((row["hit_event_id"], row["vehicle_id"]), []):
                hit["decisions"].append(_decision_row(row))
        query = {"list": list_name, "priority": priority, "limit": limit}
        self.store.add_hq_audit(user, "list", query, len(hits))
        return {"hits": hits, "lists": self.store.lists()}

    async def _hits(self, request: Request) -> Response:
        try:
            priority = _int_param(request, "priority", None, 0, 1000)
            limit = _int_param(request, "limit", DEFAULT_LIST, 1, MAX_LIST)
        except UsageError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        found = await self._run(
            self._load_hits, self._user(request), _text_param(request, "list"), priority, limit
        )
        return JSONResponse(found)

    def _load_hit(self, user: str, event_id: str) -> dict:
        rows = self.store.hit_rows(event_id)
        self.store.add_hq_audit(user, "view", {"event_id": event_id}, len(rows))
        records = []
        for row in rows:
            message = row["payload"]
            record = _row_summary(row)
            record["images"] = {
                key: message.get(key)
                for key in ("plate_image", "context_image")
                if isinstance(message.get(key), str)
            }
            record["message"] = {
                k: v for k, v in message.items() if k not in ("plate_image", "context_image")
            }
            records.append(record)
        return {
            "event_id": event_id,
            "rows": records,
            "decisions": [_decision_row(row) for row in self.store.decisions([event_id])],
            "withdrawals": [
                {key: row[key] for key in ("event_id", "vehicle_id", "reason", "at")}
                for row in self.store.withdrawals_of(event_id)
            ],
        }

    async def _hit(self, request: Request) -> Response:
        event_id = request.path_params["event_id"]
        if not _EVENT_ID.fullmatch(event_id):
            return JSONResponse({"error": "not an event id"}, status_code=400)
        found = await self._run(self._load_hit, self._user(request), event_id)
        return JSONResponse(found, status_code=200 if found["rows"] else 404)

    async def _statuses(self, request: Request) -> Response:
        statuses = await self._run(self.store.statuses)
        return JSONResponse(
            {"vehicles": [status_summary(vid, status) for vid, status in statuses.items()]}
        )

    async def _search(self, request: Request) -> Response:
        user = self._user(request)
        try:
            limit = _int_param(request, "limit", None, 1, MAX_LIST)
            args = argparse.Namespace(
                user=user,
                plate=_text_param(request, "plate"),
                since=_text_param(request, "since"),
                until=_text_param(request, "until"),
                vehicle=_text_param(request, "vehicle"),
                list=_text_param(request, "list"),
                limit=limit,
            )
            query = search_query(args)
        except UsageError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        results = await self._run(audited_search, self.store, query, user)
        return JSONResponse({"query": query, "results": results})

    async def _events(self, request: Request) -> Response:
        return self.events.response(
            request,
            hello={"user": self._user(request)},
            still_valid=self.auth.still_valid(session_of(request)),
        )
