"""Run an ASGI app under uvicorn on a thread owned by the caller.

The socket is bound in :meth:`WebServer.start`, on the caller's thread, so a busy
port or a bad address is an exception there (not a log line from a thread), and port
0 gives a free port whose real number :attr:`WebServer.url` reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import threading

import uvicorn

log = logging.getLogger("edge.web")

#: How long a stop waits for open requests (event streams above all) before they are
#: cut: an officer's page reconnects by itself.
GRACEFUL_STOP_S = 1.0
#: How long start waits for uvicorn to be serving.
START_TIMEOUT_S = 10.0


class WebServerError(Exception):
    """The server could not be started (address taken, not an address here, ...)."""


class WebServer:
    """``start()`` binds and serves on a background thread; ``stop()`` ends it."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, *, name: str = "web"):
        self.app = app
        self.host = host
        self.port = port
        self.name = name
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        #: The event loop serving the app (for handing work to it from other threads).
        self.loop: asyncio.AbstractEventLoop | None = None
        self.bound: tuple[str, int] | None = None

    @property
    def url(self) -> str:
        """The address the server answers on, with the port actually bound."""
        if self.bound is None:
            raise RuntimeError("the server is not started")
        host, port = self.bound
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"

    def start(self) -> WebServer:
        self._socket = bind(self.host, self.port)
        self.bound = self._socket.getsockname()[:2]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            # Requests are not logged: a console URL may carry hit ids, and the audit
            # trail is where decisions are recorded.
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=GRACEFUL_STOP_S,
            server_header=False,
        )
        self._server = uvicorn.Server(config)
        started = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self.loop = loop
            try:
                loop.run_until_complete(self._serve(started))
            except BaseException as exc:  # reported to start(), or logged after it
                failure.append(exc)
                if started.is_set():
                    log.exception("%s server stopped on an error", self.name)
            finally:
                started.set()
                loop.close()

        self._thread = threading.Thread(target=serve, name=f"{self.name}-server", daemon=True)
        self._thread.start()
        if not started.wait(START_TIMEOUT_S) or failure or not self._server.started:
            self.stop()
            why = failure[0] if failure else "did not start in time"
            raise WebServerError(f"{self.name} server on {self.url}: {why}")
        log.info("%s server on %s", self.name, self.url)
        return self

    async def _serve(self, started: threading.Event) -> None:
        server = self._server

        async def report_started() -> None:
            while not server.started and not server.should_exit:
                await asyncio.sleep(0.01)
            started.set()

        watcher = asyncio.ensure_future(report_started())
        try:
            await server.serve(sockets=[self._socket])
        finally:
            watcher.cancel()

    def stop(self, timeout: float = 5.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("%s server did not stop within %.0f s", self.name, timeout)
            self._thread = None
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.close()
            self._socket = None

    def __enter__(self) -> WebServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host`` (an IP address) and ``port`` (0: a free one)."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        raise WebServerError(f"{host!r} is not an IP address") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(64)
    except OSError as exc:
        sock.close()
        raise WebServerError(
            f"cannot listen on {host} port {port}: {exc.strerror or exc}"
        ) from None
    sock.set_inheritable(False)
    return sock
