"""The MQTT stage: the outbox drained to the HQ broker, the vehicle's status, and the
watchlists HQ pushes.

:class:`MqttPublisher` owns one paho client and one sender thread:

* the sender takes undelivered messages from the :class:`~edge.delivery.outbox.Outbox`,
  oldest first, publishes them at QoS 1 and marks each delivered only when the
  broker's PUBACK says it was accepted. A refused message (an ACL, a quota) stays in
  the outbox and is retried later; at most ``WINDOW`` messages are with the client at
  once, so hours of backlog stay on disk, not in memory;
* paho resends what was in flight after a reconnect; a message whose PUBACK never
  came before the process died is sent again by the next process (at least once);
* status: retained ``online`` on every connect and then every ``heartbeat_seconds``,
  with the broker holding a retained ``offline`` last will for an unclean loss, and
  an ``offline`` published on a clean stop;
* pushed watchlists arrive on the paho thread and are handed to a worker thread
  (verifying a large list takes seconds and must not stall the connection).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as paho

from edge.config import MqttConfig
from edge.delivery.messages import STATUS_SCHEMA, encode
from edge.delivery.mqtt import Topics, connect, new_client, reason_ok
from edge.delivery.outbox import Outbox
from edge.timefmt import now_iso
from edge.waits import poll_until

log = logging.getLogger("edge.publish")

#: Messages handed to the client and not yet acknowledged, at most.
WINDOW = 32
#: Seconds before a message the broker refused is offered again.
REFUSED_RETRY_S = 30.0
#: How long a clean stop waits for the ``offline`` status to go out.
CLOSE_TIMEOUT_S = 3.0

StatusProvider = Callable[[], dict]
WatchlistHandler = Callable[[str, bytes], None]


@dataclass(slots=True)
class PublisherStats:
    connected: bool = False
    connects: int = 0
    sent: int = 0
    delivered: int = 0
    refused: int = 0
    last_error: str | None = None

    def to_json(self) -> dict:
        return {
            "connected": self.connected,
            "connects": self.connects,
            "sent": self.sent,
            "delivered": self.delivered,
            "refused": self.refused,
            "last_error": self.last_error,
        }


class MqttPublisher:
    """Opened by :meth:`start`, closed by :meth:`close` (or as a context manager)."""

    def __init__(
        self,
        config: MqttConfig,
        vehicle_id: str,
        outbox: Outbox,
        *,
        status: StatusProvider | None = None,
        on_watchlist: WatchlistHandler | None = None,
    ):
        if not config.host:
            raise ValueError("[mqtt] host is empty: there is no broker to publish to")
        self.config = config
        self.vehicle_id = vehicle_id
        self.topics = Topics(config.topic_prefix, vehicle_id)
        self.outbox = outbox
        self.status_provider = status or (lambda: {})
        self.on_watchlist = on_watchlist
        self.stats = PublisherStats()
        self._client = new_client(config, config.client_id or f"lpr-edge-{vehicle_id}")
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message
        self._client.will_set(self.topics.status, self._offline(), qos=1, retain=True)
        # PUBACKs go from the paho thread to the sender through this queue: the sender
        # alone owns the in-flight map (a lock shared with paho's callbacks could
        # deadlock against its own internal locks).
        self._acks: queue.SimpleQueue[tuple[int, bool, str]] = queue.SimpleQueue()
        self._inflight: dict[int, int] = {}  # mid -> outbox seq
        self._retry_after: dict[int, float] = {}  # seq -> monotonic time
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._heartbeat_due = 0.0
        self._sender: threading.Thread | None = None
        self._pushes: queue.Queue[tuple[str, bytes] | None] = queue.Queue()
        self._push_worker: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> MqttPublisher:
        connect(self._client, self.config)
        self._client.loop_start()
        self._sender = threading.Thread(target=self._send_loop, name="mqtt-sender", daemon=True)
        self._sender.start()
        if self.on_watchlist:
            self._push_worker = threading.Thread(
                target=self._push_loop, name="watchlist-push", daemon=True
            )
            self._push_worker.start()
        log.info("MQTT: connecting to %s:%d", self.config.host, self.config.port)
        return self

    def close(self) -> None:
        """Say ``offline`` (if connected), disconnect and join the threads. Messages
        not yet acknowledged stay in the outbox for the next start."""
        self._stop.set()
        self._wake.set()
        if self._sender:
            self._sender.join(5.0)
        if self._push_worker:
            self._pushes.put(None)
            self._push_worker.join(5.0)
        if self._connected.is_set():
            info = self._client.publish(self.topics.status, self._offline(at=True), 1, True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(CLOSE_TIMEOUT_S)
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> MqttPublisher:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wake(self) -> None:
        """New messages are in the outbox: send them now rather than at the next poll."""
        self._wake.set()

    def wait_delivered(self, timeout: float) -> bool:
        """Wait until the outbox has nothing undelivered; False on timeout."""

        def empty() -> bool:
            self._wake.set()
            return not self.outbox.stats().pending

        return poll_until(empty, timeout, interval=0.05)

    # ----------------------------------------------------------------- paho thread

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_ok(reason_code):
            self.stats.last_error = f"connection refused: {reason_code}"
            log.error("MQTT: broker %s refused the connection: %s", self.config.host, reason_code)
            return
        self.stats.connects += 1
        self.stats.connected = True
        self._connected.set()
        log.info("MQTT: connected to %s:%d", self.config.host, self.config.port)
        if self.on_watchlist:
            client.subscribe([(self.topics.fleet_watchlist, 1), (self.topics.vehicle_watchlist, 1)])
        self._heartbeat_due = 0.0  # announce ``online`` now
        self._wake.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        self.stats.connected = False
        if was and not self._stop.is_set():
            self.stats.last_error = f"disconnected: {reason_code}"
            log.warning("MQTT: lost the broker (%s); hits wait in the outbox", reason_code)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._acks.put((mid, reason_ok(reason_code), str(reason_code)))
        self._wake.set()

    def _on_message(self, client, userdata, message) -> None:
        watchlists = (self.topics.fleet_watchlist, self.topics.vehicle_watchlist)
        # An empty retained message only clears the topic: the list in force stays.
        if message.topic in watchlists and message.payload:
            self._pushes.put((message.topic, bytes(message.payload)))

    # ----------------------------------------------------------------- workers

    def _send_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            try:
                self._take_acks()
                if not self._connected.is_set():
                    continue
                self._heartbeat()
                self._send_pending()
            except Exception:
                # A full disk or a locked database must not end delivery for good.
                log.exception("MQTT: sending from the outbox failed; retrying")
                self._stop.wait(1.0)
        self._take_acks()

    def _take_acks(self) -> None:
        while True:
            try:
                mid, ok, reason = self._acks.get_nowait()
            except queue.Empty:
                return
            seq = self._inflight.pop(mid, None)
            if seq is None:
                continue  # the status heartbeat, or an ack after a resend
            if ok:
                self.outbox.mark_delivered(seq)
                self.stats.delivered += 1
            else:
                self.stats.refused += 1
                self.stats.last_error = f"broker refused a message: {reason}"
                log.error("MQTT: broker refused message %d (%s); kept, retried later", seq, reason)
                self._retry_after[seq] = time.monotonic() + REFUSED_RETRY_S

    def _send_pending(self) -> None:
        room = WINDOW - len(self._inflight)
        if room <= 0:
            return
        now = time.monotonic()
        self._retry_after = {s: t for s, t in self._retry_after.items() if t > now}
        busy = set(self._inflight.values()) | set(self._retry_after)
        for message in self.outbox.pending(room, exclude=busy):
            info = self._client.publish(message.topic, message.payload, qos=1)
            if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
                log.warning("MQTT: publish failed (%s); will retry", paho.error_string(info.rc))
                return
            # NO_CONN still queues a QoS 1 message in the client: it goes on reconnect.
            self._inflight[info.mid] = message.seq
            self.outbox.mark_sent(message.seq)
            self.stats.sent += 1

    def _heartbeat(self) -> None:
        now = time.monotonic()
        if now < self._heartbeat_due:
            return
        self._heartbeat_due = now + self.config.heartbeat_seconds
        try:
            status = self.status_provider()
        except Exception:
            log.exception("MQTT: building the status failed")
            status = {}
        message = {
            "schema": STATUS_SCHEMA,
            "vehicle_id": self.vehicle_id,
            "state": "online",
            "at": now_iso(),
            **status,
        }
        self._client.publish(self.topics.status, encode(message), qos=1, retain=True)

    def _push_loop(self) -> None:
        while True:
            item = self._pushes.get()
            if item is None:
                return
            topic, payload = item
            try:
                self.on_watchlist(topic, payload)
            except Exception:
                log.exception("MQTT: handling a watchlist pushed on %s failed", topic)

    def _offline(self, at: bool = False) -> bytes:
        message = {"schema": STATUS_SCHEMA, "vehicle_id": self.vehicle_id, "state": "offline"}
        if at:
            message["at"] = now_iso()
        return encode(message)
