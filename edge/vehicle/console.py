"""The in-car console: a web page for the car's mobile data terminal.

Served by the live service and by replay when ``[console] enabled`` (and by the demo
over its state directory), on ``[console] listen``:``port``, token-protected
(:mod:`edge.web.auth`). It shows the newest hits first and each new one the moment
the dispatcher raises it (server-sent events from the hit alert hook, on the
dispatcher's thread, never waiting for a page): the plate crop, the blurred context
image when there is one and ``show_context`` is on, the read beside the watchlist
entry with the differing characters marked and an approximate match shown as
such, camera, time, position, list, reason and priority; priority 1 loudly. The
officer accepts or rejects (with a configured reason) each hit: the decision goes
through :class:`~edge.delivery.decisions.DecisionDesk` (outbox, audit trail, HQ).
A status panel shows what ``lpr-edge status`` shows.

Covert hits are never listed, pushed, served (images) nor decided on. Everything a
hit holds reaches the page as JSON and is put on it as text by the page's script.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import difflib
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edge.config import CONSOLE_TOKEN_MIN_LENGTH, Config, ConfigError
from edge.delivery.decisions import DecisionDesk, DecisionRefused
from edge.delivery.messages import HIT_SCHEMA, WITHDRAWAL_SCHEMA
from edge.delivery.mqtt import Topics
from edge.delivery.outbox import Outbox
from edge.files import write_private
from edge.privacy.audit import HIT_DECISION
from edge.vehicle.health import STALE_AFTER_S, STATUS_FILE, summary_lines
from edge.vehicle.state import VehicleState
from edge.web.app import BodyTooLarge, ConsoleApp, read_body, session_of
from edge.web.auth import TokenAuth
from edge.web.events import EventStream
from edge.web.server import WebServer, WebServerError

log = logging.getLogger("edge.console")

#: The generated token's file in the state directory (0600).
TOKEN_FILE = "console.token"
#: The largest decision request read.
DECISION_BODY_MAX = 8192


def console_token(config: Config) -> str:
    """The console's token: ``[console] token`` (or LPR_EDGE_CONSOLE_TOKEN), else the
    ``token_file``'s content, else the state directory's ``console.token``, made at
    the first start."""
    console = config.console
    if console.token:
        return console.token
    if console.token_file:
        path = config.resolve_path(console.token_file)
        try:
            token = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([f"'console.token_file' {path}: cannot read it ({exc})"]) from None
        if len(token) < CONSOLE_TOKEN_MIN_LENGTH:
            raise ConfigError(
                [
                    f"'console.token_file' {path}: expected a token of at least "
                    f"{CONSOLE_TOKEN_MIN_LENGTH} characters"
                ]
            )
        return token
    path = config.state_dir / TOKEN_FILE
    try:
        token = path.read_text(encoding="utf-8").strip()
        if len(token) >= CONSOLE_TOKEN_MIN_LENGTH:
            return token
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError) as exc:
        # Not made over: a file there that cannot be read is for a person to look at.
        raise ConfigError([f"console token file {path}: cannot read it ({exc})"]) from None
    token = secrets.token_urlsafe(24)
    write_private(path, (token + "\n").encode())
    log.warning("console: no token configured; made one in %s", path)
    return token


def text_diff(read: str, entry: str) -> tuple[list[dict], list[dict]]:
    """The read and the entry's plate as runs ``{"text", "same"}``: the characters
    that differ are the runs with ``same`` false. An entry's ``?`` matches any one
    character and ``*`` any run (wildcard entries): those are not differences."""
    if "?" in entry or "*" in entry:
        return [{"text": read, "same": True}], [{"text": entry, "same": True}]
    read_runs: list[dict] = []
    entry_runs: list[dict] = []
    matcher = difflib.SequenceMatcher(None, read, entry, autojunk=False)
    for op, a1, a2, b1, b2 in matcher.get_opcodes():
        same = op == "equal"
        if a2 > a1:
            read_runs.append({"text": read[a1:a2], "same": same})
        if b2 > b1:
            entry_runs.append({"text": entry[b1:b2], "same": same})
    return read_runs, entry_runs


def hit_view(hit: dict, *, show_context: bool) -> dict:
    """What the page shows of a hit message, and nothing more (no image bytes: the
    page fetches them)."""
    wl = hit.get("watchlist") or {}
    read_text = str(hit.get("plate") or "")
    matched = str(wl.get("matched_text") or read_text)
    entry_plate = str(wl.get("entry_plate") or "")
    read_runs, entry_runs = text_diff(matched, entry_plate)
    event_id = str(hit.get("event_id"))
    approximate = wl.get("match") != "exact" or matched != read_text
    return {
        "event_id": event_id,
        "plate": read_text,
        "matched_text": matched,
        "read_runs": read_runs,
        "entry_runs": entry_runs,
        "entry_id": wl.get("entry_id"),
        "list": wl.get("list"),
        "reason": wl.get("reason"),
        "priority": wl.get("priority"),
        "match": wl.get("match"),
        "approximate": approximate,
        "camera": hit.get("camera"),
        "observed_at": hit.get("observed_at"),
        "position": hit.get("position"),
        "plate_image": f"/hits/{event_id}/plate.jpg" if hit.get("plate_image") else None,
        "context_image": (
            f"/hits/{event_id}/context.jpg" if show_context and hit.get("context_image") else None
        ),
        "withdrawn": False,
        "decision": None,
    }


def _shown(hit: dict) -> bool:
    """A hit the officer may see: a hit message, and explicitly not covert."""
    return hit.get("schema") == HIT_SCHEMA and (hit.get("watchlist") or {}).get("covert") is False


class InCarConsole:
    """The console's app, server and event stream over the car's outbox."""

    def __init__(
        self,
        config: Config,
        outbox: Outbox,
        *,
        token: str,
        status: Callable[[], dict],
        audit: Callable[..., object] = lambda action, **details: None,
        sent: Callable[[], None] = lambda: None,
    ):
        self.config = config
        self.settings = config.console
        self.outbox = outbox
        self.topics = Topics(config.mqtt.topic_prefix, config.vehicle.id)
        self.status_provider = status
        self.desk = DecisionDesk(
            outbox,
            self.topics,
            reject_reasons=self.settings.reject_reasons,
            officer=self.settings.officer,
            audit=lambda details: audit(HIT_DECISION, **details),
            sent=sent,
        )
        self.events = EventStream()
        auth = TokenAuth(token)
        auth.when_closed(self.events.recheck)
        self.web = ConsoleApp(
            f"In-car console: {config.vehicle.id}", auth, packages=("edge.vehicle",)
        )
        self.app = self.web.build(
            [
                Route("/", self._page),
                Route("/api/hits", self._hits),
                Route("/api/status", self._status),
                Route("/api/hits/{event_id}/decision", self._decide, methods=["POST"]),
                Route("/hits/{event_id}/{image}", self._image),
                Route("/events", self._events),
            ]
        )
        self.server: WebServer | None = None

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> InCarConsole:
        self.server = WebServer(
            self.app, self.settings.listen, self.settings.port, name="console"
        ).start()
        return self

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> None:
        self.events.close()
        if self.server is not None:
            self.server.stop()

    def __enter__(self) -> InCarConsole:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def attach(self, dispatcher) -> None:
        """Show each hit the dispatcher raises (it alerts only for non-covert hits),
        before the in-car alert command runs."""
        alert, withdrawn = dispatcher.alert, dispatcher.alert_withdrawn

        def on_hit(hit, payload: bytes) -> None:
            self.hit_raised(payload)
            if alert:
                alert(hit, payload)

        def on_withdrawn(withdrawal, payload: bytes) -> None:
            self.hit_withdrawn(payload)
            if withdrawn:
                withdrawn(withdrawal, payload)

        dispatcher.alert, dispatcher.alert_withdrawn = on_hit, on_withdrawn

    # ----------------------------------------------------------------- pushed

    def hit_raised(self, payload: bytes) -> None:
        """A new hit: to every open page now. Never raises into the dispatcher."""
        try:
            hit = json.loads(payload)
            if _shown(hit):
                self.events.publish("hit", hit_view(hit, show_context=self.settings.show_context))
        except Exception:
            log.exception("console: showing a hit failed")

    def hit_withdrawn(self, payload: bytes) -> None:
        try:
            withdrawal = json.loads(payload)
            target = self.desk.hit(withdrawal.get("withdraws_event_id"))
            if target is not None:
                self.events.publish("withdrawn", {"event_id": target["event_id"]})
        except Exception:
            log.exception("console: showing a withdrawal failed")

    # ----------------------------------------------------------------- pages

    async def _page(self, request: Request) -> Response:
        return self.web.render(
            request,
            "console.html",
            reasons=self.settings.reject_reasons,
            vehicle=self.config.vehicle.id,
            officer=self.settings.officer,
        )

    def recent_hits(self) -> list[dict]:
        """The newest hits the officer may see, newest first, with the decision in
        force and whether the car withdrew them."""
        limit = self.settings.recent_hits
        views, withdrawn = [], set()
        for message in self.outbox.on_topic(self.topics.hit, limit=limit * 4):
            try:
                hit = json.loads(message.payload)
            except ValueError:
                continue
            if not isinstance(hit, dict):
                continue
            if hit.get("schema") == WITHDRAWAL_SCHEMA:
                withdrawn.add(hit.get("withdraws_event_id"))
            elif _shown(hit) and len(views) < limit:
                views.append(hit_view(hit, show_context=self.settings.show_context))
        decisions = self.desk.latest(v["event_id"] for v in views)
        for view in views:
            view["withdrawn"] = view["event_id"] in withdrawn
            view["decision"] = decisions.get(view["event_id"])
        return views

    # The handlers that read the outbox are plain functions: Starlette runs them on its
    # thread pool, so a slow disk never stalls the event loop (and the pushed hits).
    def _hits(self, request: Request) -> Response:
        return JSONResponse({"hits": self.recent_hits()})

    def _status(self, request: Request) -> Response:
        try:
            status = self.status_provider()
        except Exception as exc:
            log.exception("console: building the status failed")
            status = {"error": str(exc)}
        age = max(0.0, time.time() - float(status.get("written_unix", time.time())))
        return JSONResponse({"status": status, "lines": summary_lines(status, age)})

    def _image(self, request: Request) -> Response:
        image = request.path_params["image"]
        key = {"plate.jpg": "plate_image", "context.jpg": "context_image"}.get(image)
        hit = self.desk.hit(request.path_params["event_id"])
        if key is None or hit is None or not hit.get(key):
            return JSONResponse({"error": "no such image"}, status_code=404)
        if key == "context_image" and not self.settings.show_context:
            return JSONResponse({"error": "no such image"}, status_code=404)
        try:
            data = base64.b64decode(hit[key], validate=True)
        except (binascii.Error, ValueError, TypeError):
            return JSONResponse({"error": "no such image"}, status_code=404)
        if not data.startswith(b"\xff\xd8"):
            return JSONResponse({"error": "no such image"}, status_code=404)
        return Response(data, media_type="image/jpeg")

    async def _decide(self, request: Request) -> Response:
        try:
            body = await read_body(request, DECISION_BODY_MAX)
        except BodyTooLarge:
            return JSONResponse({"error": "request too large"}, status_code=413)
        try:
            data = json.loads(body)
        except ValueError:
            return JSONResponse({"error": "expected JSON"}, status_code=400)
        if not isinstance(data, dict):
            return JSONResponse({"error": "expected a JSON object"}, status_code=400)
        try:
            message = await run_in_threadpool(
                self.desk.decide,
                request.path_params["event_id"],
                data.get("decision"),
                data.get("reason"),
                data.get("note"),
            )
        except DecisionRefused as refused:
            return JSONResponse({"error": str(refused)}, status_code=refused.status)
        self.events.publish("decision", message)
        return JSONResponse({"decision": message})

    async def _events(self, request: Request) -> Response:
        return self.events.response(
            request,
            hello={"vehicle": self.config.vehicle.id},
            still_valid=self.web.auth.still_valid(session_of(request)),
        )


def start_console(config: Config, delivery) -> InCarConsole | None:
    """The console over a running :class:`~edge.vehicle.delivery.Delivery`, showing
    its dispatcher's hits, or None when ``[console] enabled`` is false."""
    if not config.console.enabled:
        return None
    console = InCarConsole(
        config,
        delivery.outbox,
        token=console_token(config),
        status=lambda: {**delivery.status(), "written_unix": time.time()},
        audit=delivery.audit,
        sent=delivery.dispatcher.sent,
    )
    console.attach(delivery.dispatcher)
    try:
        console.start()
    except WebServerError as exc:
        # A port taken or an address not on this machine: said as a configuration
        # problem (exit 2), like a state directory that cannot be made.
        raise ConfigError([f"'console.listen'/'console.port': {exc}"]) from None
    log.info("in-car console on %s", console.url)
    return console


def status_from_file(state_dir: Path) -> dict:
    """The last status the service or a replay wrote (for a console with no service
    running in this process), or an empty one."""
    try:
        return json.loads((state_dir / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"state": "stopped", "written_unix": time.time() - STALE_AFTER_S - 1}


def serve_state_console(
    config: Config,
    *,
    seconds: float | None = None,
    stop: threading.Event | None = None,
    announce: Callable[[str], None] = print,
) -> int:
    """Serve the console over the state directory's outbox with no service running
    in this process (the demo's hits, after its replay): for ``seconds`` (None: no
    limit), until ``stop`` is set, or until Ctrl-C. Decisions taken go to the outbox
    and the audit trail as in the service, and reach HQ when the service next runs
    with a broker."""
    stop = stop or threading.Event()
    state = VehicleState(config).open()
    try:
        token = console_token(config)  # (in the state directory, made by the open)

        def status() -> dict:
            found = status_from_file(config.state_dir)
            return {**found, "outbox": state.outbox.stats().to_json()}

        console = InCarConsole(
            config,
            state.outbox,
            token=token,
            status=status,
            audit=state.audit.record,
        )
        try:
            console.start()
        except WebServerError as exc:
            if config.console.port == 0:
                raise
            announce(f"console: port {config.console.port} is taken ({exc}); using a free one")
            console.settings = dataclasses.replace(config.console, port=0)
            console.start()
        announce(f"In-car console: {console.url}/login#token={token}")
        announce(f"  (token in {config.state_dir / TOKEN_FILE}, or log in at {console.url}/)")
        try:
            if seconds is None:
                announce("  serving until Ctrl-C")
            else:
                announce(f"  serving for {seconds:g} s (Ctrl-C stops it sooner)")
            stop.wait(seconds)
        except KeyboardInterrupt:
            pass
        finally:
            console.stop()
    finally:
        state.close()
    return 0
