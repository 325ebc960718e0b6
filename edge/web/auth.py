"""Token login, sessions and CSRF checks for a console.

A console has one shared secret, its token (from the configuration or a private
file). Two ways in:

* a person logs in once with the token on ``/login``; the session is a random id in
  an ``HttpOnly; SameSite=Strict`` cookie (scripts cannot read it, other sites cannot
  send it), kept in memory only, so a restart asks for the token again;
* a program sends ``Authorization: Bearer <token>`` with each request.

Every state-changing request (anything but GET/HEAD) made with a session, and every
``/api/`` request (some reads are audited), must carry the session's CSRF token in
``X-CSRF-Token`` (the page reads it from a ``<meta>`` tag): a form posted or a link
followed from elsewhere has the cookie at most, never the header. Tokens are
compared in constant time.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

SESSION_COOKIE = "lpr_session"
CSRF_HEADER = "x-csrf-token"
#: A session lasts a shift at most.
SESSION_TTL_S = 12 * 3600.0
#: Sessions kept at once; the oldest goes first (a page reloaded in a loop must not
#: fill memory).
MAX_SESSIONS = 256
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def same_secret(given: str | None, expected: str) -> bool:
    """Whether ``given`` is the token, in time independent of where they differ."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    csrf: str
    expires: float
    #: Who logged in, where a console has users (HQ); None for a token login.
    user: str | None = None


class TokenAuth:
    """The token, the open sessions, and the checks of :class:`AuthMiddleware`."""

    def __init__(
        self,
        token: str,
        *,
        ttl_s: float = SESSION_TTL_S,
        secure_cookie: bool = False,
        public_paths: tuple[str, ...] = ("/login",),
        public_prefixes: tuple[str, ...] = ("/static/",),
    ):
        if not token:
            raise ValueError("a console needs a token")
        self._token = token
        self.ttl_s = ttl_s
        self.secure_cookie = secure_cookie
        self.public_paths = public_paths
        self.public_prefixes = public_prefixes
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._on_close: list[Callable[[], None]] = []

    def check_token(self, given: str | None) -> bool:
        return same_secret(given, self._token)

    def open_session(self, user: str | None = None) -> Session:
        now = time.time()
        session = Session(
            secrets.token_urlsafe(32), secrets.token_urlsafe(32), now + self.ttl_s, user
        )
        with self._lock:
            self._expire(now)
            while len(self._sessions) >= MAX_SESSIONS:
                self._sessions.pop(next(iter(self._sessions)))
            self._sessions[session.id] = session
        return session

    def close_session(self, session_id: str | None) -> None:
        with self._lock:
            self._sessions.pop(session_id or "", None)
        self.closed()

    def when_closed(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (no arguments, from any thread, must not block) whenever a
        session ends by logout or a newer login: an event stream rechecks its pages."""
        self._on_close.append(listener)

    def closed(self) -> None:
        for listener in self._on_close:
            listener()

    def is_open(self, session: Session) -> bool:
        with self._lock:
            return self._sessions.get(session.id) is session and session.expires > time.time()

    def still_valid(self, session: Session | None) -> Callable[[], bool]:
        """Whether the session a request came with is still open, asked again later (an
        event stream asks at every frame). A bearer request (no session) stays valid:
        the token cannot be logged out."""
        if session is None:
            return lambda: True
        return lambda: self.is_open(session)

    def session_of(self, request: Request) -> Session | None:
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie:
            return None
        with self._lock:
            self._expire(time.time())
            # Looked up by value, compared in constant time: the dict lookup alone
            # could leak, through timing, how much of an id was right.
            session = self._sessions.get(cookie)
        if session is None or not same_secret(cookie, session.id):
            return None
        return session

    def _expire(self, now: float) -> None:
        for sid in [s for s, v in self._sessions.items() if v.expires <= now]:
            del self._sessions[sid]

    def bearer(self, request: Request) -> bool:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self.check_token(value.strip())

    def set_cookie(self, response: Response, session: Session) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            session.id,
            max_age=int(self.ttl_s),
            path="/",
            httponly=True,
            samesite="strict",
            secure=self.secure_cookie,
        )

    async def admitted(self, session: Session) -> None:
        """Called once a request of ``session`` has passed every check, before it is
        handled (a console whose sessions open without a login form records the
        login here)."""

    def is_public(self, path: str) -> bool:
        """The login page exactly (a route added later as /login-something must not be
        public by accident), and what is under a public folder (the static files)."""
        return path in self.public_paths or path.startswith(self.public_prefixes)


def refusal(request: Request, status: int, why: str) -> Response:
    """A page gets the login form; anything else (fetch, event stream, a program) an
    HTTP error it can tell apart."""
    wants_page = request.method == "GET" and "text/html" in request.headers.get("accept", "")
    if status == 401 and wants_page:
        return RedirectResponse("/login", status_code=303)
    return JSONResponse({"error": why}, status_code=status)


def needs_csrf(request: Request) -> bool:
    """Whether a request of a session must carry its CSRF token: every state-changing
    one, and every ``/api/`` one, reads included (some write audit rows at HQ, and
    none is for another site to make). A read the browser itself marks as from this
    console (``Sec-Fetch-Site: same-origin``, which no page can forge) is let through
    without it."""
    if request.method not in SAFE_METHODS:
        return True
    if not request.url.path.startswith("/api/"):
        return False
    return request.headers.get("sec-fetch-site") != "same-origin"


class AuthMiddleware:
    """Lets through public paths, bearer-token requests and requests of an open
    session (with the CSRF header on state-changing ones); refuses the rest. The
    session is left in ``scope["state"]["session"]`` for the handlers."""

    def __init__(self, app: ASGIApp, auth: TokenAuth):
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        scope.setdefault("state", {})
        if self.auth.is_public(request.url.path):
            scope["state"]["session"] = self.auth.session_of(request)
            await self.app(scope, receive, send)
            return
        if self.auth.bearer(request):
            scope["state"]["session"] = None
            await self.app(scope, receive, send)
            return
        session = self.auth.session_of(request)
        if session is None:
            response = refusal(request, 401, "login required")
        elif needs_csrf(request) and not same_secret(
            request.headers.get(CSRF_HEADER), session.csrf
        ):
            response = refusal(request, 403, "missing or wrong CSRF token")
        else:
            scope["state"]["session"] = session
            await self.auth.admitted(session)
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)
