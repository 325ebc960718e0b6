"""A small stand-in for gpsd on a free loopback port, for tests.

It speaks the part of gpsd's JSON protocol the receiver uses: each new client gets
the ``VERSION`` banner; a ``?WATCH={...};`` command is answered with ``DEVICES`` and
``WATCH`` lines and counted. The test then pushes whatever lines it wants
(:meth:`FakeGpsd.send`, :func:`tpv`) and can drop the client (:meth:`FakeGpsd.drop`)
to simulate gpsd restarting. One client at a time, like the receiver.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from datetime import UTC, datetime

VERSION = {
    "class": "VERSION",
    "release": "3.25",
    "rev": "fake",
    "proto_major": 3,
    "proto_minor": 15,
}


def tpv(
    moment: datetime | None,
    lat: float | None = None,
    lon: float | None = None,
    *,
    mode: int = 3,
    track: float | None = None,
    speed: float | None = None,
    device: str = "/dev/ttyFAKE",
) -> dict:
    """A TPV report; ``speed`` in m/s as gpsd sends it. None values are left out."""
    report: dict = {"class": "TPV", "device": device, "mode": mode}
    if moment is not None:
        report["time"] = (
            moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        )
    for key, value in (("lat", lat), ("lon", lon), ("track", track), ("speed", speed)):
        if value is not None:
            report[key] = value
    return report


class FakeGpsd:
    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(4)
        self._listener.settimeout(0.1)
        self.host, self.port = self._listener.getsockname()
        self._cond = threading.Condition()
        self._client: socket.socket | None = None
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        #: Clients accepted so far, and ?WATCH commands received from them.
        self.connections = 0
        self.watches = 0
        self.commands: list[str] = []

    def start(self) -> FakeGpsd:
        self._thread = threading.Thread(target=self._serve, name="fakegpsd", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._closed.set()
        self.drop()
        if self._thread is not None:
            self._thread.join(5.0)
        self._listener.close()

    def __enter__(self) -> FakeGpsd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_watching(self, count: int = 1, timeout: float = 10.0) -> bool:
        """Wait until ``count`` clients in all have sent ``?WATCH``."""
        with self._cond:
            return self._cond.wait_for(lambda: self.watches >= count, timeout)

    def send(self, *items: dict | str) -> None:
        """Send reports (dicts, as JSON) or raw text lines to the current client."""
        data = "".join((json.dumps(i) if isinstance(i, dict) else i) + "\n" for i in items)
        with self._cond:
            client = self._client
        if client is None:
            raise RuntimeError("no gpsd client connected")
        client.sendall(data.encode())

    def drop(self) -> None:
        """Close the current client's connection (gpsd restarting)."""
        with self._cond:
            client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
            client.close()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.drop()  # one client at a time
            with self._cond:
                self._client = client
                self.connections += 1
            try:
                client.sendall((json.dumps(VERSION) + "\n").encode())
                self._read_commands(client)
            except OSError:
                pass
            finally:
                with self._cond:
                    if self._client is client:
                        self._client = None
                client.close()

    def _read_commands(self, client: socket.socket) -> None:
        client.settimeout(0.1)
        buffer = b""
        while not self._closed.is_set():
            with self._cond:
                if self._client is not client:
                    return
            try:
                data = client.recv(4096)
            except TimeoutError:
                continue
            if not data:
                return
            buffer += data
            while b";" in buffer:
                command, _, buffer = buffer.partition(b";")
                text = command.decode(errors="replace").strip()
                self.commands.append(text)
                if text.startswith("?WATCH"):
                    client.sendall(
                        b'{"class":"DEVICES","devices":[{"class":"DEVICE","path":"/dev/ttyFAKE"}]}\n'
                        b'{"class":"WATCH","enable":true,"json":true}\n'
                    )
                    with self._cond:
                        self.watches += 1
                        self._cond.notify_all()
