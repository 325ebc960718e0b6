"""HQ's subscriber: receives hits, officers' decisions, vehicle status and audit records
from every vehicle, validates them (:mod:`edge.hq.validate`) and keeps them (:mod:`edge.hq.store`).

Delivery is at least once from end to end:

* the subscriber holds a persistent MQTT 5 session (a fixed client id, no clean start,
  a session expiry), so QoS 1 messages sent while HQ is away are queued by the broker
  and arrive when it returns;
* a message is acknowledged (PUBACK, sent by hand: paho's manual ack) only once it is
  committed to the database (SQLite or PostgreSQL), or judged malformed and recorded
  as a reject. If the commit fails (a full disk, a lost database), the message is
  left unacknowledged and the connection is dropped, so the broker sends it again on
  the next session resumption; a crash before the commit has the same effect;
* messages are stored by a thread of their own, in batches: whatever has queued while
  the last batch was committed goes into one transaction (:meth:`HqSubscriber.
  handle_batch`), and each is acknowledged, in order, once that transaction is
  committed. A batch that cannot be committed leaves all of its messages
  unacknowledged; one that fails for another reason (a fault of ours with one
  message) is stored again one message per transaction, so that one bad message
  cannot hold back the others;
* a message that arrives twice (a vehicle resending after a lost PUBACK, or the broker
  redelivering) is stored once (see :mod:`edge.hq.store` for what counts as the
  same message).

With ``share`` (``lpr-edge hq --share GROUP``) the subscriptions are MQTT 5 shared
ones, ``$share/GROUP/{prefix}/+/{kind}``: the broker hands each message to one of the
group's workers. Each worker keeps its own persistent session (its own client id), so
what was sent to a worker that died unacknowledged is sent again when it returns.

The topic is the trusted identity (the broker's ACL lets a vehicle publish under its
own id only). A reject is counted by reason, logged at WARNING with its topic and a
short reason (never the payload), stored with a size-capped excerpt in ``rejects``,
and acknowledged: sending it again would not mend it.
"""

from __future__ import annotations

import contextlib
import queue
import re
import socket
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as paho
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge.config import VEHICLE_ID, MqttConfig
from edge.delivery.messages import WITHDRAWAL_SCHEMA
from edge.delivery.mqtt import Topics, connect, new_client, reason_ok
from edge.hq.console import log
from edge.hq.store import HitStore, StoreOutcome, WriteOp, WriteResult
from edge.hq.validate import (
    Reject,
    _short,
    parse_object,
    validate_audit,
    validate_decision,
    validate_hit,
    validate_status,
    validate_withdrawal,
)
from edge.waits import poll_until

if TYPE_CHECKING:
    from edge.hq.pgstore import PostgresStore

DEFAULT_CLIENT_ID = "lpr-edge-hq"
DEFAULT_PREFIX = "lpr/v1"

#: Message kinds subscribed to, each as ``{prefix}/+/{kind}``.
KINDS = ("hit", "status", "audit", "decision")

#: Messages stored in one transaction at most: whatever has queued while the last
#: batch was committed, up to this many (one commit, one disk sync for them all).
BATCH_MAX = 200
#: Messages received and not yet stored that the storing thread's queue holds. The
#: broker sends at most its in-flight window of unacknowledged QoS 1 messages (a few
#: dozen to a few hundred), so the queue does not fill; were it to, paho's thread
#: waits (back-pressure: the broker holds the rest), never past close().
QUEUE_MAX = 10_000

#: A shared subscription's group name (``--share``): letters, digits, ``-`` and ``_``.
SHARE_GROUP = re.compile(r"[A-Za-z0-9_-]{1,64}")


def shared(topic_filter: str, group: str | None) -> str:
    """``topic_filter`` as a shared subscription of ``group`` (MQTT 5
    ``$share/GROUP/filter``), or unchanged for None."""
    if group is None:
        return topic_filter
    if not SHARE_GROUP.fullmatch(group):
        raise ValueError(f"share group {group!r}: expected 1 to 64 letters, digits, '-' or '_'")
    return f"$share/{group}/{topic_filter}"


@dataclass(slots=True)
class _Counters:
    received: int = 0
    hits: int = 0
    statuses: int = 0
    audit: int = 0
    duplicates: int = 0
    #: Hits stored that reused another message's event_id.
    conflicts: int = 0
    withdrawals: int = 0
    #: Withdrawals stored that named no hit HQ held.
    withdrawals_unknown: int = 0
    #: Officers' decisions stored (conflicts included), and those naming no hit HQ held.
    decisions: int = 0
    decisions_unknown: int = 0
    ignored: int = 0
    store_errors: int = 0
    connects: int = 0


HitCallback = Callable[[dict], None]
#: ``on_status(message, previous_state)``: a vehicle's status changed state (or was
#: seen for the first time, ``previous_state`` None).
StatusCallback = Callable[[dict, str | None], None]
#: ``on_conflict(message, first)``: a hit was stored as a conflict of ``first``, the
#: message stored earlier with the same ``event_id``.
ConflictCallback = Callable[[dict, dict], None]
#: ``on_withdrawal(message, hit)``: a withdrawal was stored; ``hit`` is the message of
#: the hit it withdraws, or None when HQ holds no such hit.
WithdrawalCallback = Callable[[dict, dict | None], None]
#: ``on_decision(message, hit)``: an officer's decision was stored; ``hit`` is the
#: message of the hit decided on, or None when HQ holds no such hit.
DecisionCallback = Callable[[dict, dict | None], None]


class HqSubscriber:
    """Receives every vehicle's hits, status and audit records into a
    :class:`HitStore` or :class:`edge.hq.pgstore.PostgresStore` (owned by the caller,
    open while this runs).

    ``on_hit`` is called on the subscriber's storing thread for each new hit (never a
    duplicate), after it is committed; ``on_conflict`` instead for a hit stored as a conflict;
    ``on_status`` when a vehicle's state changes; ``on_withdrawal`` for each new
    withdrawal; ``on_decision`` for each new officer's decision. An exception in any
    of them is logged and changes nothing else.
    """

    def __init__(
        self,
        config: MqttConfig,
        store: HitStore | PostgresStore,
        *,
        client_id: str = DEFAULT_CLIENT_ID,
        prefix: str | None = None,
        on_hit: HitCallback | None = None,
        on_status: StatusCallback | None = None,
        on_conflict: ConflictCallback | None = None,
        on_withdrawal: WithdrawalCallback | None = None,
        share: str | None = None,
        on_decision: DecisionCallback | None = None,
    ):
        if not config.host:
            raise ValueError("no broker host")
        if share is not None:
            shared("x", share)  # (validates the group name)
        #: The shared subscription group this worker belongs to, or None (every
        #: message comes to this subscriber).
        self.share = share
        #: What a failed commit raises: SQLite's and the OS's errors, and those the
        #: store names (PostgreSQL's connection errors).
        self._store_errors: tuple[type[Exception], ...] = (
            sqlite3.Error,
            OSError,
            *getattr(store, "transient_errors", ()),
        )
        self.config = config
        self.store = store
        self.client_id = client_id
        self.prefix = prefix if prefix is not None else config.topic_prefix
        self.on_hit = on_hit
        self.on_status = on_status
        self.on_conflict = on_conflict
        self.on_withdrawal = on_withdrawal
        self.on_decision = on_decision
        self._lock = threading.Lock()
        self._counters = _Counters()
        self._rejected: Counter[str] = Counter()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._subscribe_mid: int | None = None
        self._closing = False
        self._started = False
        #: Messages received, waiting for the storing thread: (connection, mid, qos,
        #: topic, payload), or None to stop it.
        self._queue: queue.Queue[tuple[int, int, int, str, bytes] | None] = queue.Queue(QUEUE_MAX)
        self._storing: threading.Thread | None = None
        #: Counts connections: a message is acknowledged only on the connection it
        #: came by (after a reconnect the broker sends it again anyway).
        self._connection = 0
        #: Whether the broker still had our session at the last connect.
        self.session_present: bool | None = None
        self._client = new_client(config, client_id)
        self._client.manual_ack_set(True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> HqSubscriber:
        self._storing = threading.Thread(target=self._store_loop, name="hq-store", daemon=True)
        self._storing.start()
        connect(self._client, self.config, persistent=True)
        self._client.loop_start()
        self._started = True
        log.info(
            "HQ: connecting to %s:%d as %r (persistent session%s)",
            self.config.host,
            self.config.port,
            self.client_id,
            f", shared subscription group {self.share}" if self.share else "",
        )
        return self

    def close(self) -> None:
        """Disconnect (the broker keeps the session and queues for it) and stop the
        network thread; no callback runs after this returns."""
        self._closing = True
        if not self._started:
            return
        self._started = False
        # What is queued is stored and acknowledged while the connection is still up;
        # anything arriving meanwhile stays unacknowledged in the session.
        if self._storing is not None:
            self._queue.put(None)
            self._storing.join()
            self._storing = None
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()
        self._subscribed.clear()

    def __enter__(self) -> HqSubscriber:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_subscribed(self, timeout: float) -> bool:
        """Wait until connected and subscribed to every topic; False on timeout."""
        return self._subscribed.wait(timeout)

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Poll ``predicate`` until it is true; False on timeout."""
        return poll_until(predicate, timeout)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            c = self._counters
            return {
                "connected": self.connected,
                "connects": c.connects,
                "received": c.received,
                "stored": (
                    c.hits + c.conflicts + c.statuses + c.audit + c.withdrawals + c.decisions
                ),
                "hits": c.hits,
                "conflicts": c.conflicts,
                "withdrawals": c.withdrawals,
                "withdrawals_unknown": c.withdrawals_unknown,
                "decisions": c.decisions,
                "decisions_unknown": c.decisions_unknown,
                "statuses": c.statuses,
                "audit": c.audit,
                "duplicates": c.duplicates,
                "ignored": c.ignored,
                "rejected": dict(sorted(self._rejected.items())),
                "store_errors": c.store_errors,
            }

    # ----------------------------------------------------------------- paho thread

    def _subscriptions(self) -> list[tuple[str, SubscribeOptions]]:
        # Retained messages (each vehicle's last status) only with a new subscription:
        # a resumed session gets what it missed from its queue instead.
        # (A shared subscription gets no retained messages: MQTT 5 section 4.8.2.)
        options = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
        return [
            (shared(Topics.all_vehicles(self.prefix, kind), self.share), options) for kind in KINDS
        ]

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_ok(reason_code):
            log.error("HQ: broker %s refused the connection: %s", self.config.host, reason_code)
            return
        self.session_present = bool(flags.session_present)
        with self._lock:
            self._counters.connects += 1
            self._connection += 1
        self._connected.set()
        log.info(
            "HQ: connected to %s:%d (session %s)",
            self.config.host,
            self.config.port,
            "resumed" if self.session_present else "new",
        )
        # Always (re)subscribe: a broker restarted without persistence has forgotten
        # the session, and subscribing again to the same filters changes nothing.
        result, mid = client.subscribe(self._subscriptions())
        if result != paho.MQTT_ERR_SUCCESS:
            log.error("HQ: subscribe failed: %s", paho.error_string(result))
        self._subscribe_mid = mid

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        if mid != self._subscribe_mid:
            return
        failed = [
            topic
            for (topic, _qos), code in zip(self._subscriptions(), reason_codes, strict=False)
            if not reason_ok(code)
        ]
        if failed:
            log.error("HQ: broker refused the subscription to %s", ", ".join(failed))
            return
        if any(getattr(code, "value", 1) < 1 for code in reason_codes):
            log.warning("HQ: broker granted QoS 0 only; messages may be lost")
        log.info("HQ: subscribed to %s", ", ".join(t for t, _ in self._subscriptions()))
        self._subscribed.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        self._subscribed.clear()
        if was and not self._closing:
            log.warning("HQ: lost the broker (%s); reconnecting", reason_code)

    def _on_message(self, client, userdata, message) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = repr(getattr(message, "_topic", b"?"))
        entry = (self._connection, message.mid, message.qos, topic, bytes(message.payload))
        # Waits only while the queue is full; gives up at close (the message stays
        # unacknowledged in the session).
        while not self._closing:
            try:
                self._queue.put(entry, timeout=0.5)
                return
            except queue.Full:
                continue

    # ----------------------------------------------------------------- storing thread

    def _store_loop(self) -> None:
        while True:
            entry = self._queue.get()
            if entry is None:
                return
            batch = [entry]
            stop = False
            while len(batch) < BATCH_MAX:
                try:
                    entry = self._queue.get_nowait()
                except queue.Empty:
                    break
                if entry is None:
                    stop = True
                    break
                batch.append(entry)
            try:
                self._store_batch(batch)
            except Exception:
                # Unacknowledged: the broker sends them again at the next session.
                log.exception("HQ: storing a batch of %d messages failed", len(batch))
            if stop:
                return

    def _store_batch(self, batch: list[tuple[int, int, int, str, bytes]]) -> None:
        done = self.handle_batch([(topic, payload) for _c, _m, _q, topic, payload in batch])
        client = self._client
        failed = 0
        for (connection, mid, qos, _topic, _payload), ok in zip(batch, done, strict=True):
            if not ok:
                failed += 1
            elif connection == self._connection:
                client.ack(mid, qos)
        if not failed:
            return
        # Not acknowledged: the broker sends them again when the session resumes. Drop
        # the connection to resume it now (paho reconnects with its back-off).
        with self._lock:
            self._counters.store_errors += failed
        sock = client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    # ----------------------------------------------------------------- processing

    def handle(self, topic: str, payload: bytes) -> bool:
        """Validate and store one message. True when it is dealt with (stored, a
        duplicate, ignored or rejected) and may be acknowledged; False when storing
        it failed and the broker should send it again.

        ``received`` goes up only once the message is dealt with, so a caller that
        sees it reach N also sees the first N messages' rows and counters."""
        return self.handle_batch([(topic, payload)])[0]

    def handle_batch(self, messages: list[tuple[str, bytes]]) -> list[bool]:
        """:meth:`handle` for several messages (topic, payload) at once: those to
        store are stored in one transaction, then each is reported (counters, log,
        callbacks) in order, as :meth:`handle` one at a time would. A batch that
        cannot be committed is False throughout (nothing of it stored); one that
        raises anything else is stored one message per transaction instead."""
        checked = [self._check(topic, payload) for topic, payload in messages]
        ops = [item for item in checked if isinstance(item, tuple)]
        results: list[WriteResult] | None = None
        failure: Exception | None = None
        if ops:
            try:
                results = self.store.add_batch(ops)
            except self._store_errors as exc:
                failure = exc
            except Exception:
                # Each message alone: the one at fault becomes a reject, the others
                # are stored.
                log.debug("HQ: a batch of %d failed; storing one by one", len(ops), exc_info=True)
        stored = iter(results or ())
        done = []
        for (topic, payload), item in zip(messages, checked, strict=True):
            try:
                done.append(self._deal(topic, payload, item, stored, failure, results))
            except Exception as exc:
                # A fault of ours, not of the storage: sending the message again would
                # fail again and stall everything behind it, so it is kept as a reject.
                log.exception("HQ: handling a message on %s failed", topic)
                self._reject(topic, Reject("internal-error", type(exc).__name__), payload)
                done.append(True)
            finally:
                with self._lock:
                    self._counters.received += 1
        return done

    def _deal(self, topic, payload, item, stored, failure, results) -> bool:
        if isinstance(item, Reject):
            self._reject(topic, item, payload)
            return True
        if isinstance(item, Exception):
            raise item
        if item is None:
            log.info("HQ: status of %s cleared on the broker", self._parse_topic(topic)[0])
            with self._lock:
                self._counters.ignored += 1
            return True
        kind = item[0]
        if failure is not None:
            log.error(
                "HQ: storing a %s from %s failed (%s); left for redelivery", kind, topic, failure
            )
            return False
        if results is not None:
            result = next(stored)
        else:
            try:
                result = self.store.add_batch([item])[0]
            except self._store_errors as exc:
                log.error(
                    "HQ: storing a %s from %s failed (%s); left for redelivery", kind, topic, exc
                )
                return False
        self._report(item, result)
        return True

    def _check(self, topic: str, payload: bytes) -> WriteOp | Reject | Exception | None:
        """What to store for a message; a Reject; None for nothing to store (an
        empty status, reported here); or the exception checking it raised (a fault of
        ours, reported in order by handle_batch)."""
        try:
            vehicle_id, kind = self._parse_topic(topic)
            if kind == "status" and not payload:
                # An empty retained message clears a vehicle's status topic (an
                # administrator retiring a car): nothing to store.
                return None
            message = parse_object(payload)
            if kind == "hit" and message.get("schema") == WITHDRAWAL_SCHEMA:
                # Beside the hits on their topic: a hit taken back.
                kind = "withdrawal"
                validate_withdrawal(message, vehicle_id)
            elif kind == "hit":
                validate_hit(message, vehicle_id)
            elif kind == "status":
                validate_status(message, vehicle_id)
            elif kind == "decision":
                validate_decision(message, vehicle_id)
            else:
                validate_audit(message, vehicle_id)
                return ("audit", message, vehicle_id)
        except Reject as reject:
            return reject
        except Exception as exc:
            return exc
        return (kind, message)

    def _report(self, op: WriteOp, result: WriteResult) -> None:
        kind, message = op[0], op[1]
        if kind == "hit":
            self._stored_hit(message, result)
        elif kind == "withdrawal":
            self._stored_withdrawal(message, result)
        elif kind == "status":
            self._stored_status(message, result)
        elif kind == "decision":
            self._stored_decision(message, result)
        else:
            self._stored_audit(result)

    def _parse_topic(self, topic: str) -> tuple[str, str]:
        head = self.prefix + "/"
        parts = topic[len(head) :].split("/") if topic.startswith(head) else []
        # A vehicle id is what the configuration allows (and the broker's ACL keys
        # on): nothing else is a vehicle's topic.
        if len(parts) != 2 or not VEHICLE_ID.fullmatch(parts[0]) or parts[1] not in KINDS:
            raise Reject("bad-topic", _short(topic, 120))
        return parts[0], parts[1]

    def _reject(self, topic: str, reject: Reject, payload: bytes) -> None:
        log.warning("HQ: rejected a message on %s: %s", _short(topic, 120), reject)
        try:
            self.store.add_reject(topic, str(reject), payload)
        except self._store_errors as exc:
            log.error("HQ: recording a rejected message failed: %s", exc)
        with self._lock:
            self._rejected[reject.kind] += 1

    def _stored_hit(self, message: dict, stored) -> None:
        if stored.outcome is StoreOutcome.DUPLICATE:
            with self._lock:
                self._counters.duplicates += 1
            log.debug("HQ: duplicate hit %s", message["event_id"])
            return
        if stored.outcome is StoreOutcome.CONFLICT:
            self._conflicting_hit(message, stored.first or {})
            return
        with self._lock:
            self._counters.hits += 1
        log.info(
            "HQ: hit %s from %s (%s)",
            message["event_id"],
            message["vehicle_id"],
            message["watchlist"]["list"],
        )
        if self.on_hit:
            try:
                self.on_hit(message)
            except Exception:
                log.exception("HQ: the hit callback failed for %s", message["event_id"])

    def _conflicting_hit(self, message: dict, first: dict) -> None:
        with self._lock:
            self._counters.conflicts += 1
        log.warning(
            "HQ: conflicting hit %s from %s: its event_id was first used by %s with other "
            "content; stored and flagged as a conflict",
            message["event_id"],
            message["vehicle_id"],
            first.get("vehicle_id"),
        )
        if self.on_conflict:
            try:
                self.on_conflict(message, first)
            except Exception:
                log.exception("HQ: the conflict callback failed for %s", message["event_id"])

    def _stored_withdrawal(self, message: dict, stored) -> None:
        if stored.outcome is StoreOutcome.DUPLICATE:
            with self._lock:
                self._counters.duplicates += 1
            log.debug("HQ: duplicate withdrawal %s", message["event_id"])
            return
        with self._lock:
            self._counters.withdrawals += 1
            if stored.hit is None:
                self._counters.withdrawals_unknown += 1
        if stored.outcome is StoreOutcome.CONFLICT:
            log.warning(
                "HQ: withdrawal %s from %s reuses the event_id of another withdrawal; stored",
                message["event_id"],
                message["vehicle_id"],
            )
        if stored.hit is None:
            log.warning(
                "HQ: withdrawal %s from %s names hit %s, which HQ does not hold: stored "
                "and flagged (hit_missing)",
                message["event_id"],
                message["vehicle_id"],
                message["withdraws_event_id"],
            )
        else:
            log.info(
                "HQ: hit %s withdrawn by %s (%s)",
                message["withdraws_event_id"],
                message["vehicle_id"],
                message["reason"],
            )
        if self.on_withdrawal:
            try:
                self.on_withdrawal(message, stored.hit)
            except Exception:
                log.exception("HQ: the withdrawal callback failed for %s", message["event_id"])

    def _stored_decision(self, message: dict, stored) -> None:
        if stored.outcome is StoreOutcome.DUPLICATE:
            with self._lock:
                self._counters.duplicates += 1
            log.debug("HQ: duplicate decision %s", message["event_id"])
            return
        with self._lock:
            self._counters.decisions += 1
            if stored.hit is None:
                self._counters.decisions_unknown += 1
        if stored.outcome is StoreOutcome.CONFLICT:
            log.warning(
                "HQ: decision %s from %s reuses the event_id of another decision with other "
                "content; stored and flagged as a conflict",
                message["event_id"],
                message["vehicle_id"],
            )
        if stored.hit is None:
            log.warning(
                "HQ: decision %s from %s names hit %s, which HQ does not hold: stored and "
                "flagged (hit_missing)",
                message["event_id"],
                message["vehicle_id"],
                message["hit_event_id"],
            )
        else:
            log.info(
                "HQ: hit %s %sed by %s",
                message["hit_event_id"],
                message["decision"],
                message["vehicle_id"],
            )
        if self.on_decision:
            try:
                self.on_decision(message, stored.hit)
            except Exception:
                log.exception("HQ: the decision callback failed for %s", message["event_id"])

    def _stored_status(self, message: dict, previous) -> None:
        with self._lock:
            self._counters.statuses += 1
        if previous != message["state"]:
            log.info("HQ: %s is %s", message["vehicle_id"], message["state"])
            if self.on_status:
                try:
                    self.on_status(message, previous)
                except Exception:
                    log.exception("HQ: the status callback failed")

    def _stored_audit(self, new) -> None:
        if new:
            with self._lock:
                self._counters.audit += 1
        else:
            with self._lock:
                self._counters.duplicates += 1
