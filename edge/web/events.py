"""Server-sent events fanned out to every open page, fed from any thread.

:meth:`EventStream.publish` is called by the pipeline's threads: it never blocks and
never waits on a client. Each client has a bounded queue; a client whose queue is
full (a page that stopped reading, a stalled network) is dropped instead: its stream
ends, and the page's EventSource reconnects and fetches the current state, so it
misses nothing it would have shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable

from starlette.requests import Request
from starlette.responses import StreamingResponse

log = logging.getLogger("edge.web")

#: Events waiting for one client before it is dropped.
CLIENT_QUEUE_SIZE = 64
#: A comment line this often keeps proxies from closing an idle stream and lets a
#: dead connection be noticed.
KEEPALIVE_S = 15.0
#: What the page's EventSource waits before reconnecting (milliseconds).
RETRY_MS = 1000

_CLOSE = object()


class _Client:
    __slots__ = ("dropped", "queue", "still_valid")

    def __init__(self, size: int, still_valid: Callable[[], bool]):
        self.queue: asyncio.Queue = asyncio.Queue(size)
        self.dropped = False
        self.still_valid = still_valid


class EventStream:
    """One stream of named JSON events for every subscribed page."""

    def __init__(self, *, queue_size: int = CLIENT_QUEUE_SIZE, keepalive_s: float = KEEPALIVE_S):
        self.queue_size = queue_size
        self.keepalive_s = keepalive_s
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clients: set[_Client] = set()
        self._ids = itertools.count(1)
        #: Clients dropped for not keeping up (for tests and status).
        self.dropped = 0

    @property
    def clients(self) -> int:
        with self._lock:
            return len(self._clients)

    def publish(self, event: str, data: dict) -> None:
        """Send ``data`` as event ``event`` to every page; safe from any thread, and
        returns at once."""
        with self._lock:
            loop = self._loop
            if loop is None or not self._clients:
                return
        frame = f"id: {next(self._ids)}\nevent: {event}\ndata: {_json(data)}\n\n"
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._fan_out, frame)

    def close(self) -> None:
        """End every open stream (the server is stopping)."""
        with self._lock:
            loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._close_all)

    def recheck(self) -> None:
        """End the streams whose session is no longer valid (one was logged out), now
        rather than at their next frame or keepalive; safe from any thread."""
        with self._lock:
            loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._end_invalid)

    def _end_invalid(self) -> None:
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            if not client.still_valid():
                self._end(client)

    def _fan_out(self, frame: str) -> None:
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            if client.dropped:
                continue
            try:
                client.queue.put_nowait(frame)
            except asyncio.QueueFull:
                self._drop(client)

    def _drop(self, client: _Client) -> None:
        client.dropped = True
        self.dropped += 1
        # Out of the fan-out now: a client stuck in a send (its socket full) reads its
        # close only once that send completes, if ever, and gets nothing more till then.
        with self._lock:
            self._clients.discard(client)
        log.warning("event stream: a page fell %d events behind and was dropped", self.queue_size)
        while not client.queue.empty():
            client.queue.get_nowait()
        client.queue.put_nowait(_CLOSE)

    def _close_all(self) -> None:
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            self._end(client)

    @staticmethod
    def _end(client: _Client) -> None:
        while not client.queue.empty():
            client.queue.get_nowait()
        client.queue.put_nowait(_CLOSE)

    async def frames(
        self, first: str | None = None, still_valid: Callable[[], bool] = lambda: True
    ) -> AsyncIterator[str]:
        """The stream as SSE text, for one client, until it is dropped or closed, or
        ``still_valid()`` (asked before every frame and keepalive) says its session
        has ended: a page logged out or expired gets nothing more."""
        client = _Client(self.queue_size, still_valid)
        with self._lock:
            self._loop = asyncio.get_running_loop()
            self._clients.add(client)
        try:
            yield f"retry: {RETRY_MS}\n\n"
            if first is not None:
                yield first
            while True:
                try:
                    frame = await asyncio.wait_for(client.queue.get(), self.keepalive_s)
                except TimeoutError:
                    frame = ": keepalive\n\n"
                if frame is _CLOSE or not still_valid():
                    return
                yield frame
        finally:
            with self._lock:
                self._clients.discard(client)

    def response(
        self,
        request: Request,
        *,
        hello: dict | None = None,
        still_valid: Callable[[], bool] = lambda: True,
    ) -> StreamingResponse:
        """The stream for one page; ``hello`` is sent first as event ``hello`` (the
        page learns its stream is open and reloads what it shows). ``still_valid``:
        whether the page's session is still open (see :meth:`frames`); the owner
        calls :meth:`recheck` when a session ends, so its streams end at once."""
        first = None if hello is None else f"event: hello\ndata: {_json(hello)}\n\n"
        return StreamingResponse(
            self.frames(first, still_valid),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )


def _json(data: dict) -> str:
    # One line whatever the data holds: SSE ends a field at a line break, and JSON
    # escapes every control character.
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))
