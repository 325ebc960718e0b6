"""A console app: the owner's routes behind token login, with security headers,
escaping templates and the packaged static files.

Nothing is fetched from outside: scripts, styles and sounds ship in the packages (the
car has no internet, and a CDN would see every console that loads). The Content
Security Policy allows scripts, styles, images and connections from the console
itself only, and no inline script: data reaches a page as JSON and is put on it as
text, never as markup.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import parse_qs, urlsplit

import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge.web.auth import SESSION_COOKIE, AuthMiddleware, Session, TokenAuth

#: Images may also be data: URLs (a crop the page already holds); nothing else from
#: outside the console, and no plugin, frame or form target elsewhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
SECURITY_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # Not "no-referrer": Chromium then sends "Origin: null" on the login form, which
    # the origin check must refuse. Other sites still get nothing.
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
)
#: Pages and API answers hold personal data: no cache keeps them.
NO_STORE = (b"cache-control", b"no-store")
#: A wrong token costs this long, so guessing is slow even on a short token.
LOGIN_FAILURE_DELAY_S = 0.5
#: The login form is small: a longer body is refused unread.
LOGIN_BODY_MAX = 4096
#: Credential checks at once, across all clients: HQ's scrypt is costly by design,
#: and a flood of logins must not take every CPU (nor the token guessed in parallel).
LOGIN_CHECKS_AT_ONCE = 2
#: A client address with this many failed logins within the window is refused (429)
#: until LOGIN_LOCKOUT_S after its last failure.
LOGIN_FAILURES_ALLOWED = 5
LOGIN_FAILURE_WINDOW_S = 300.0
LOGIN_LOCKOUT_S = 60.0
#: Client addresses remembered for their failures (the oldest forgotten first).
LOGIN_CLIENTS_KEPT = 4096


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every answer, and ``no-store`` to all but the
    static files."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope.get("path", "").startswith("/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0] != b"cache-control"]
                headers += SECURITY_HEADERS
                if not static:
                    headers.append(NO_STORE)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def template_environment(*packages: str) -> jinja2.Environment:
    """Jinja2 over the ``templates`` folders of ``packages`` then of edge.web, escaping
    every value (not only in .html files: a console has no template that must not)."""
    loaders = [jinja2.PackageLoader(p, "templates") for p in (*packages, "edge.web")]
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def session_of(request: Request) -> Session | None:
    return request.scope.get("state", {}).get("session")


class LoginRefused(Exception):
    """A login post refused before its credentials are looked at: ``status`` and the
    line the login page shows."""

    def __init__(self, status: int, why: str):
        super().__init__(why)
        self.status = status
        self.why = why


class BodyTooLarge(Exception):
    """A request body over the limit its handler reads."""


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, read no further than ``limit`` bytes: BodyTooLarge past
    it (a declared length over it is refused unread; a chunked body is cut off as
    soon as it passes it), so a client cannot make the console hold what it sends."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"request body over {limit} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(f"request body over {limit} bytes")
    return body


async def login_form(request: Request) -> dict[str, str]:
    """The fields of a posted login form (first value of each). LoginRefused for a
    post from another site (a page elsewhere must not log the browser in as someone)
    or a body too large to be a login."""
    origin = request.headers.get("origin")
    # The host (and port) only: behind a proxy that ends TLS the page is https and the
    # request reaching here http, and a post from another site names another host.
    if origin and urlsplit(origin).netloc.lower() != request.url.netloc.lower():
        raise LoginRefused(403, "Login from another site refused.")
    try:
        body = await read_body(request, LOGIN_BODY_MAX)
    except BodyTooLarge:
        raise LoginRefused(413, "Request too large.") from None
    return {key: values[0] for key, values in parse_qs(body.decode("utf-8", "replace")).items()}


class LoginGuard:
    """Slows login guessing: at most :data:`LOGIN_CHECKS_AT_ONCE` credential checks
    run at once, and a client address that failed :data:`LOGIN_FAILURES_ALLOWED`
    times within :data:`LOGIN_FAILURE_WINDOW_S` is refused for :data:`LOGIN_LOCKOUT_S`
    (behind a proxy every user shares its address: a lockout there is for all)."""

    def __init__(
        self,
        *,
        failures_allowed: int = LOGIN_FAILURES_ALLOWED,
        window_s: float = LOGIN_FAILURE_WINDOW_S,
        lockout_s: float = LOGIN_LOCKOUT_S,
    ):
        self.failures_allowed = failures_allowed
        self.window_s = window_s
        self.lockout_s = lockout_s
        self._checks = asyncio.Semaphore(LOGIN_CHECKS_AT_ONCE)
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def client(request: Request) -> str:
        return request.client.host if request.client else ""

    def locked_out(self, client: str) -> bool:
        now = time.monotonic()
        with self._lock:
            failures = self._failures.get(client)
            if not failures:
                return False
            while failures and failures[0] <= now - self.window_s:
                failures.popleft()
            return len(failures) >= self.failures_allowed and (now - failures[-1] < self.lockout_s)

    async def check(self, client: str, credentials: Callable[[], Awaitable[bool]]) -> bool:
        """Whether ``credentials()`` says yes, run under the global limit; a no counts
        against ``client`` and costs :data:`LOGIN_FAILURE_DELAY_S`."""
        async with self._checks:
            ok = await credentials()
        if ok:
            with self._lock:
                self._failures.pop(client, None)
            return True
        with self._lock:
            failures = self._failures.pop(client, None) or deque(maxlen=self.failures_allowed)
            failures.append(time.monotonic())
            self._failures[client] = failures
            while len(self._failures) > LOGIN_CLIENTS_KEPT:
                self._failures.popitem(last=False)
        await asyncio.sleep(LOGIN_FAILURE_DELAY_S)
        return False


#: What a locked-out client is told.
TOO_MANY_LOGINS = "Too many failed logins from this address: try again in a minute."


def logged_in(request: Request, auth: TokenAuth, session: Session) -> Response:
    """To the console with ``session``'s cookie; the session the browser had before
    ends (a login never leaves a second live session behind)."""
    old = session_of(request)
    if old is not None:
        auth.close_session(old.id)
    response = RedirectResponse("/", status_code=303)
    auth.set_cookie(response, session)
    return response


def logged_out(request: Request, auth: TokenAuth) -> Response:
    """Back to the login page, the session ended and its cookie deleted."""
    session = session_of(request)
    if session is not None:
        auth.close_session(session.id)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


#: A login's check of the posted form: (accepted, the user the session is for).
Credentials = Callable[[dict[str, str]], Awaitable[tuple[bool, str | None]]]


class ConsoleApp:
    """The pieces of a console: its login, templates and static folders. Build the
    ASGI app with :meth:`build` once the routes are known.

    By default the login is the console's token (``login.html``). A console with
    users gives its own ``credentials`` check (and ``on_login``, called with the
    request and the user once accepted, e.g. to audit it), its ``login_template``
    and the ``login_context`` that template needs; ``login_closed`` refuses every
    password login with that line (HQ behind its sign-in proxy)."""

    def __init__(
        self,
        title: str,
        auth: TokenAuth,
        *,
        packages: Sequence[str] = (),
        credentials: Credentials | None = None,
        on_login: Callable[[Request, str | None], Awaitable[None]] | None = None,
        login_template: str = "login.html",
        login_context: dict | None = None,
        wrong_login: str = "Wrong token.",
        login_closed: str | None = None,
    ):
        self.title = title
        self.auth = auth
        self.packages = tuple(packages)
        self.templates = template_environment(*self.packages)
        self.guard = LoginGuard()
        self.credentials = credentials or self._token_credentials
        self.on_login = on_login
        self.login_template = login_template
        self.login_context = dict(login_context or {})
        self.wrong_login = wrong_login
        self.login_closed = login_closed

    def render(self, request: Request, name: str, status: int = 200, **context) -> HTMLResponse:
        session = session_of(request)
        html = self.templates.get_template(name).render(
            title=self.title, csrf=session.csrf if session else "", **context
        )
        return HTMLResponse(html, status_code=status)

    def build(
        self, routes: Sequence[BaseRoute], *, middleware: Sequence[Middleware] = ()
    ) -> Starlette:
        """The app: login, logout, static files and ``routes``, behind the security
        headers and the login check; ``middleware`` goes outside those (it sees, and
        may change, their headers)."""
        static = StaticFiles(packages=[(p, "static") for p in (*self.packages, "edge.web")])
        all_routes = [
            Route("/login", self._login_page, methods=["GET"]),
            Route("/login", self._login, methods=["POST"]),
            Route("/logout", self._logout, methods=["POST"]),
            Mount("/static", app=static, name="static"),
            *routes,
        ]
        return Starlette(
            routes=all_routes,
            middleware=[
                *middleware,
                Middleware(SecurityHeaders),
                Middleware(AuthMiddleware, auth=self.auth),
            ],
        )

    def _login_answer(self, request: Request, status: int, error: str) -> Response:
        return self.render(request, self.login_template, status, error=error, **self.login_context)

    async def _token_credentials(self, form: dict[str, str]) -> tuple[bool, str | None]:
        return self.auth.check_token(form.get("token", "").strip()), None

    async def _login_page(self, request: Request) -> Response:
        if session_of(request) is not None:
            return RedirectResponse("/", status_code=303)
        return self._login_answer(request, 200, "")

    async def _login(self, request: Request) -> Response:
        if self.login_closed is not None:
            return self._login_answer(request, 403, self.login_closed)
        try:
            form = await login_form(request)
        except LoginRefused as refused:
            return self._login_answer(request, refused.status, refused.why)
        client = self.guard.client(request)
        if self.guard.locked_out(client):
            return self._login_answer(request, 429, TOO_MANY_LOGINS)
        accepted_user: list[str | None] = []

        async def accepted() -> bool:
            ok, user = await self.credentials(form)
            accepted_user.append(user)
            return ok

        if not await self.guard.check(client, accepted):
            return self._login_answer(request, 401, self.wrong_login)
        user = accepted_user[0]
        if self.on_login is not None:
            await self.on_login(request, user)
        return logged_in(request, self.auth, self.auth.open_session(user))

    async def _logout(self, request: Request) -> Response:
        return logged_out(request, self.auth)
