"""The shipped HQ broker configuration, proven against a real Mosquitto.

The broker runs ``config/mosquitto/lpr-edge.conf`` and ``config/mosquitto/acl`` as
they are in the repository: only the file paths, the port and the user are rewritten
for the test (see :func:`rewrite_config`), so a change to the shipped files is a
change to what these tests check. Clients are the product's own
(:func:`edge.delivery.mqtt.new_client` from an :class:`edge.config.MqttConfig`), MQTT 5;
the end-to-end tests at the bottom run the product itself over TLS (a vehicle's
:class:`~edge.delivery.publish.MqttPublisher`, HQ's
:class:`~edge.hq.subscriber.HqSubscriber` and the ``lpr-edge watchlist publish``
command).

Observed with Mosquitto 2.0.11 (and asserted below):

* an ACL-refused QoS 1 publish gets a PUBACK with reason 0x87 (not authorised), is
  delivered to nobody, and the client stays connected;
* a subscription to a topic the client may not read is granted all the same; the
  broker then never delivers a message it may not read (live or retained);
* a bad password or unknown user gets CONNACK 0x87; a missing or foreign client
  certificate, or plain TCP, fails in TLS, before any CONNACK;
* removing a user from the password file and reloading (SIGHUP) disconnects that
  user's live connection at once, whatever mosquitto.conf(5) says;
* with ``use_username_as_clientid true`` the client id a client sends is ignored:
  its session is its username's, and a second connection by the same user takes
  over the first, whose connection is closed;
* a user's own "topic deny" lines in the ACL beat the "pattern" lines that would
  otherwise grant that user something.
"""

from __future__ import annotations

import getpass
import json
import os
import queue
import shutil
import ssl
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from edge.config import PROJECT_ROOT, MqttConfig, TlsConfig
from edge.delivery.hits import make_hit
from edge.delivery.messages import encode, hit_message
from edge.delivery.mqtt import Topics, connect, new_client, reason_ok
from edge.delivery.outbox import Outbox
from edge.delivery.publish import MqttPublisher
from edge.hq.pushtools import PASSWORD_ENV
from edge.hq.store import HitStore
from edge.hq.subscriber import HqSubscriber
from edge.waits import poll_until
from edge.watchlist.keys import generate_keypair, key_id
from edge.watchlist.lists import Watchlist, WatchlistEntry
from edge.watchlist.signing import sign_document, verify_document
from tests.delivery.test_hits import make_read
from tests.mosquitto import Broker, find_mosquitto, free_port
from tests.pki import TestPki

CONFIG_DIR = PROJECT_ROOT / "config" / "mosquitto"
SHIPPED_CONF = CONFIG_DIR / "lpr-edge.conf"
SHIPPED_ACL = CONFIG_DIR / "acl"
PREFIX = "lpr/v1"

#: Waiting for what should happen (generous: a loaded CI machine).
TIMEOUT = 10.0
#: Watching for what should not happen.
QUIET = 1.0

PASSWORDS = {
    "car-1": "car-1-secret",
    "car-2": "car-2-secret",
    "hq": "hq-secret",
    "hq-publish": "hq-publish-secret",
}
NOT_AUTHORIZED = 0x87

MOSQUITTO = find_mosquitto()
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or next(
    (
        p
        for p in ("/usr/bin/mosquitto_passwd", "/usr/local/bin/mosquitto_passwd")
        if Path(p).exists()
    ),
    None,
)
needs_mosquitto = pytest.mark.skipif(
    MOSQUITTO is None or MOSQUITTO_PASSWD is None,
    reason="mosquitto / mosquitto_passwd not installed (apt-get install mosquitto; CI does)",
)

#: Directives naming a file or directory: each must be given a test location.
PATH_DIRECTIVES = frozenset(
    {
        "acl_file",
        "cafile",
        "capath",
        "certfile",
        "crlfile",
        "dhparamfile",
        "keyfile",
        "password_file",
        "persistence_location",
        "pid_file",
        "psk_file",
    }
)


def directives(text: str) -> list[tuple[str, str]]:
    """(name, value) for each directive line of a mosquitto config or ACL file."""
    found = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition(" ")
            found.append((name, value.strip()))
    return found


def rewrite_config(text: str, *, port: int, paths: dict[str, Path], log: Path) -> str:
    """The shipped config with its listener moved to loopback:``port``, each path
    directive pointed at ``paths[name]``, logging to ``log`` and the broker kept as
    the current user. Anything the test could not relocate is an error, not a
    silent difference between what is tested and what is shipped."""
    out: list[str] = []
    listeners = 0
    for name, value in directives(text):
        if name == "listener":
            listeners += 1
            out.append(f"listener {port} 127.0.0.1")
        elif name in PATH_DIRECTIVES:
            if name not in paths:
                raise AssertionError(f"lpr-edge.conf: the test has no file for '{name} {value}'")
            out.append(f"{name} {paths[name]}")
        elif name in ("log_dest", "user"):
            continue  # set below for the test
        elif name in ("port", "bind_address", "include_dir", "bind_interface"):
            raise AssertionError(f"lpr-edge.conf: the test cannot relocate '{name} {value}'")
        else:
            out.append(f"{name} {value}".rstrip())
    assert listeners == 1, f"lpr-edge.conf: expected one listener, found {listeners}"
    # As root mosquitto would switch to the mosquitto user, who cannot read the test's
    # files; as anyone else the option has no effect.
    out.append(f"user {getpass.getuser()}")
    out.append(f"log_dest file {log}")
    return "\n".join(out) + "\n"


# --- the fixtures: a PKI, a password file, the broker -------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> TestPki:
    return TestPki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def password_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("passwd") / "passwd"
    for user, password in PASSWORDS.items():
        create = ["-c"] if not path.exists() else []
        subprocess.run(
            [MOSQUITTO_PASSWD, *create, "-b", str(path), user, password],
            check=True,
            capture_output=True,
        )
    return path


@dataclass
class Hq:
    """The broker under test and what clients need to reach it."""

    broker: Broker
    pki: TestPki
    password_file: Path
    peers: list[Peer]

    def config(
        self,
        user: str | None,
        password: str | None = None,
        *,
        cert: str | None = "",
        rogue: bool = False,
        tls: bool = True,
        **settings,
    ) -> MqttConfig:
        """An ``[mqtt]`` section for ``user``: its password and a fleet certificate
        with its name unless told otherwise (``cert=None``: no client certificate);
        ``settings``: other :class:`MqttConfig` fields."""
        tls_config = TlsConfig()
        if tls:
            issued = None
            if cert is not None:
                issued = self.pki.client(cert or user or "anonymous", rogue=rogue)
            tls_config = TlsConfig(
                enabled=True,
                ca_file=str(self.pki.ca_file),
                cert_file=str(issued.cert_file) if issued else "",
                key_file=str(issued.key_file) if issued else "",
            )
        return MqttConfig(
            host="127.0.0.1",
            port=self.broker.port,
            username=user or "",
            password=PASSWORDS.get(user or "", "") if password is None else password,
            tls=tls_config,
            **settings,
        )

    def product_config(self, user: str) -> MqttConfig:
        """``user``'s settings for the product's own clients: quick reconnects."""
        return self.config(user, reconnect_min_seconds=0.2, reconnect_max_seconds=1)

    def peer(
        self, config: MqttConfig, client_id: str, *, persistent: bool = False, retry: bool = True
    ) -> Peer:
        peer = Peer(new_client(config, client_id), retry=retry)
        self.peers.append(peer)
        peer.start(config, persistent=persistent)
        return peer

    def connected(self, user: str, client_id: str | None = None, **kwargs) -> Peer:
        """A client for ``user`` (with its certificate and password), connected."""
        peer = self.peer(self.config(user), client_id or f"test-{user}", **kwargs)
        peer.expect_connack(success=True)
        return peer


@pytest.fixture
def hq(tmp_path, pki, password_template) -> Iterator[Hq]:
    password_file = tmp_path / "passwd"
    shutil.copyfile(password_template, password_file)
    (tmp_path / "db").mkdir()
    port = free_port()
    paths = {
        "cafile": pki.ca_file,
        "certfile": pki.server.cert_file,
        "keyfile": pki.server.key_file,
        "password_file": password_file,
        "acl_file": SHIPPED_ACL,
        "persistence_location": tmp_path / "db",
    }
    text = rewrite_config(
        SHIPPED_CONF.read_text(), port=port, paths=paths, log=tmp_path / "mosquitto.log"
    )
    broker = Broker(tmp_path, port=port, config_text=text).start()
    assert broker.log_path == tmp_path / "mosquitto.log"
    setup = Hq(broker, pki, password_file, [])
    try:
        yield setup
    finally:
        for peer in setup.peers:
            peer.stop()
        broker.stop()


# --- an MQTT 5 client with everything it hears queued for the test ------------------


@dataclass(frozen=True)
class Event:
    kind: str  # "connack", "closed" (a disconnect, or a connection attempt that failed)
    reason: object = None
    session_present: bool = False


class Peer:
    """A paho client whose connection events, messages and acknowledgements are
    queued for the test. It reconnects with back-off after a failed or lost
    connection, as the product's clients do, unless ``retry=False``."""

    def __init__(self, client: paho.Client, *, retry: bool = True):
        self.client = client
        self.retry = retry
        if not retry:
            # paho takes this only as a constructor argument, which new_client does not
            # pass; without it a lost connection is retried after a 1 s sleep.
            client._reconnect_on_failure = False
        self.events: queue.Queue[Event] = queue.Queue()
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self._acks: dict[int, object] = {}
        self._acked = threading.Condition()
        self._closed = threading.Event()
        client.on_connect = self._on_connect
        client.on_connect_fail = lambda _c, _u: self._on_closed(None)
        client.on_disconnect = self._on_disconnect
        client.on_message = lambda _c, _u, message: self.messages.put(message)
        client.on_publish = lambda _c, _u, mid, rc, _p: self._ack(mid, rc)
        client.on_subscribe = lambda _c, _u, mid, rcs, _p: self._ack(mid, rcs)

    def _on_connect(self, _client, _userdata, flags, reason_code, _properties) -> None:
        self.events.put(Event("connack", reason_code, bool(flags.session_present)))

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _properties) -> None:
        self._on_closed(reason_code)

    def _on_closed(self, reason_code) -> None:
        if not self.retry:
            self.client.disconnect()  # no socket: marks it disconnected, ends the retries
        self._closed.set()
        self.events.put(Event("closed", reason_code))

    def _ack(self, mid: int, result: object) -> None:
        with self._acked:
            self._acks[mid] = result
            self._acked.notify_all()

    def _wait_ack(self, mid: int) -> object:
        with self._acked:
            assert self._acked.wait_for(lambda: mid in self._acks, TIMEOUT), f"no ack for {mid}"
            return self._acks.pop(mid)

    def start(self, config: MqttConfig, *, persistent: bool = False) -> None:
        connect(self.client, config, persistent=persistent)
        self.client.loop_start()

    def stop(self) -> None:
        """Disconnect cleanly (the DISCONNECT sent before the network thread ends)."""
        if self.client.is_connected():
            self._closed.clear()
            self.client.disconnect()
            self._closed.wait(TIMEOUT)
        self.client.loop_stop()

    def next_event(self, timeout: float = TIMEOUT) -> Event:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"nothing happened within {timeout} s") from None

    def no_event(self, window: float = QUIET) -> bool:
        """True when nothing happens to the connection for ``window`` seconds."""
        try:
            event = self.events.get(timeout=window)
        except queue.Empty:
            return True
        raise AssertionError(f"unexpected {event}")

    def expect_connack(self, *, success: bool) -> Event:
        event = self.next_event()
        assert event.kind == "connack", f"expected a CONNACK, got {event}"
        assert reason_ok(event.reason) is success, f"CONNACK {event.reason}"
        return event

    def publish(self, topic: str, payload: bytes, *, retain: bool = False):
        """Publish at QoS 1; the PUBACK's reason code."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        assert info.rc == paho.MQTT_ERR_SUCCESS, paho.error_string(info.rc)
        return self._wait_ack(info.mid)

    def subscribe(self, *topics: str) -> list:
        """Subscribe at QoS 1; the SUBACK's reason codes, one per topic."""
        rc, mid = self.client.subscribe([(topic, 1) for topic in topics])
        assert rc == paho.MQTT_ERR_SUCCESS, paho.error_string(rc)
        return self._wait_ack(mid)

    def next_message(self, timeout: float = TIMEOUT) -> paho.MQTTMessage:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message within {timeout} s") from None

    def drain(self, window: float = QUIET) -> list[paho.MQTTMessage]:
        """Everything received until ``window`` seconds pass without a message."""
        got = []
        while True:
            try:
                got.append(self.messages.get(timeout=window))
            except queue.Empty:
                return got

    def received_nothing(self, window: float = QUIET) -> bool:
        try:
            message = self.messages.get(timeout=window)
        except queue.Empty:
            return True
        raise AssertionError(f"unexpected message on {message.topic}: {message.payload!r}")


def car(vehicle_id: str) -> Topics:
    return Topics(PREFIX, vehicle_id)


# --- the shipped files themselves ---------------------------------------------------


def test_shipped_config_is_tls_only_with_certificate_and_password():
    lines = directives(SHIPPED_CONF.read_text())
    conf = dict(lines)
    assert [name for name, _ in lines].count("listener") == 1
    assert conf["listener"] == "8883"
    assert conf["tls_version"] == "tlsv1.2"
    assert conf["require_certificate"] == "true"
    assert conf["allow_anonymous"] == "false"
    assert conf.get("use_identity_as_username", "false") == "false"
    # One session per user, keyed by its name: no client can take another's.
    assert conf["use_username_as_clientid"] == "true"
    assert conf["persistence"] == "true"
    for name, value in lines:
        if name in PATH_DIRECTIVES:
            assert value.startswith(("/etc/mosquitto/lpr-edge/", "/var/lib/mosquitto/")), name


def test_shipped_limits_fit_hours_of_hits_and_a_million_entry_watchlist():
    conf = dict(directives(SHIPPED_CONF.read_text()))
    # ~150 bytes an entry, signed: a packet of 150 MB must be accepted.
    packet_limit = int(conf.get("max_packet_size", 0)) or int(conf.get("message_size_limit", 0))
    assert packet_limit == 0 or packet_limit >= 160_000_000
    assert int(conf["max_queued_messages"]) >= 100_000


def acl_sections(text: str) -> tuple[list[str], dict[str, list[str]]]:
    """The ACL's pattern lines (values), and each user's topic lines (values)."""
    patterns: list[str] = []
    users: dict[str, list[str]] = {}
    current: list[str] | None = None
    for name, value in directives(text):
        if name == "user":
            assert value not in users, f"acl: user {value} twice"
            current = users[value] = []
        elif name == "pattern":
            patterns.append(value)
        else:
            # A "topic" line before the first "user" would apply to anonymous clients only.
            assert name == "topic" and current is not None, (name, value)
            current.append(value)
    return patterns, users


def test_acl_uses_patterns_for_vehicles_and_least_privilege_users_for_hq():
    patterns, users = acl_sections(SHIPPED_ACL.read_text())
    assert set(users) == {"hq", "hq-publish"}
    # Each HQ user first takes back what the patterns would give it under its name.
    assert users["hq"][0] == f"deny {PREFIX}/hq/#"
    assert users["hq-publish"][0] == f"deny {PREFIX}/hq-publish/#"
    # The subscriber only reads; the publisher only writes watchlists.
    assert users["hq"][1:] == [f"read {PREFIX}/#"]
    assert sorted(users["hq-publish"][1:]) == [
        f"write {PREFIX}/+/watchlist",
        f"write {PREFIX}/watchlist",
    ]
    assert all(p.startswith(("read ", "write ")) for p in patterns)


# --- the broker running them --------------------------------------------------------


@needs_mosquitto
def test_vehicle_publishes_its_hit_status_audit_and_decisions_and_hq_receives_them(hq):
    hq_sub = hq.connected("hq", "lpr-edge-hq")
    assert all(reason_ok(rc) for rc in hq_sub.subscribe(f"{PREFIX}/#"))
    car1 = hq.connected("car-1", "lpr-edge-car-1")
    topics = car("car-1")

    assert reason_ok(car1.publish(topics.hit, b'{"plate": "AB1234"}'))
    message = hq_sub.next_message()
    assert (message.topic, message.payload) == (topics.hit, b'{"plate": "AB1234"}')

    assert reason_ok(car1.publish(topics.status, b'{"state": "online"}', retain=True))
    assert hq_sub.next_message().topic == topics.status
    assert reason_ok(car1.publish(topics.audit, b'{"event": "start"}'))
    assert hq_sub.next_message().topic == topics.audit
    assert reason_ok(car1.publish(topics.decision, b'{"decision": "accept"}'))
    assert hq_sub.next_message().topic == topics.decision
    # Not on another vehicle's behalf.
    reason = car1.publish(car("car-2").decision, b'{"decision": "reject"}')
    assert reason.is_failure and reason.value == NOT_AUTHORIZED, reason


@needs_mosquitto
def test_vehicle_cannot_publish_as_another_vehicle(hq):
    hq_sub = hq.connected("hq", "lpr-edge-hq")
    hq_sub.subscribe(f"{PREFIX}/#")
    car1 = hq.connected("car-1", "lpr-edge-car-1")

    reason = car1.publish(car("car-2").hit, b'{"plate": "FAKE1"}')
    assert reason.is_failure and reason.value == NOT_AUTHORIZED, reason
    # Still connected: the next, legitimate hit goes through, and it is the first
    # thing HQ receives (the refused one was not delivered before it).
    assert car1.client.is_connected()
    assert reason_ok(car1.publish(car("car-1").hit, b'{"plate": "AB1234"}'))
    assert hq_sub.next_message().topic == car("car-1").hit
    assert hq_sub.received_nothing()


@needs_mosquitto
def test_vehicle_cannot_publish_a_watchlist(hq):
    hq_sub = hq.connected("hq", "lpr-edge-hq")
    hq_sub.subscribe(f"{PREFIX}/#")
    car1 = hq.connected("car-1", "lpr-edge-car-1")
    car2 = hq.connected("car-2", "lpr-edge-car-2")
    car2.subscribe(car("car-2").fleet_watchlist, car("car-2").vehicle_watchlist)
    topics = car("car-1")

    for topic in (topics.fleet_watchlist, topics.vehicle_watchlist, car("car-2").vehicle_watchlist):
        reason = car1.publish(topic, b"forged list", retain=True)
        assert reason.is_failure and reason.value == NOT_AUTHORIZED, (topic, reason)
    assert reason_ok(car1.publish(topics.hit, b"{}"))
    assert hq_sub.next_message().topic == topics.hit
    assert car2.received_nothing()
    # Nothing was retained either: a vehicle connecting now gets no list.
    late = hq.connected("car-2", "lpr-edge-car-2-late")
    late.subscribe(car("car-2").fleet_watchlist, car("car-2").vehicle_watchlist)
    assert late.received_nothing()


@needs_mosquitto
def test_vehicle_receives_the_fleet_list_and_its_own_and_nothing_else(hq):
    car1 = hq.connected("car-1", "lpr-edge-car-1")
    topics = car("car-1")
    allowed = car1.subscribe(topics.fleet_watchlist, topics.vehicle_watchlist)
    assert all(reason_ok(rc) for rc in allowed)
    # Subscriptions it may not read: mosquitto 2.0.11 grants them and then delivers
    # nothing on them (a broker that refused them with 0x87 would do as well).
    car1.subscribe(car("car-2").vehicle_watchlist, f"{PREFIX}/+/hit", f"{PREFIX}/#")
    car2 = hq.connected("car-2", "lpr-edge-car-2")
    hq_pub = hq.connected("hq-publish", "lpr-edge-hq-publish")

    assert reason_ok(car2.publish(car("car-2").hit, b"car-2 hit"))
    assert reason_ok(hq_pub.publish(car("car-2").vehicle_watchlist, b"car-2 list", retain=True))
    assert reason_ok(hq_pub.publish(topics.vehicle_watchlist, b"car-1 list", retain=True))
    assert reason_ok(hq_pub.publish(topics.fleet_watchlist, b"fleet list", retain=True))

    # car-2's hit and list went to the broker first: had either been delivered to
    # car-1, it would have arrived before car-1's own list.
    first = car1.next_message()
    assert (first.topic, first.payload) == (topics.vehicle_watchlist, b"car-1 list")
    # Then copies for the overlapping subscriptions, and the fleet list; nothing else.
    rest = {(m.topic, m.payload) for m in car1.drain()}
    assert rest == {
        (topics.vehicle_watchlist, b"car-1 list"),
        (topics.fleet_watchlist, b"fleet list"),
    }


@needs_mosquitto
def test_hq_publishes_retained_watchlists_that_vehicles_get_on_connecting(hq):
    hq_pub = hq.connected("hq-publish", "lpr-edge-hq-publish")
    assert reason_ok(hq_pub.publish(car("car-1").fleet_watchlist, b"fleet list", retain=True))
    assert reason_ok(hq_pub.publish(car("car-1").vehicle_watchlist, b"car-1 list", retain=True))
    assert reason_ok(hq_pub.publish(car("car-2").vehicle_watchlist, b"car-2 list", retain=True))

    car1 = hq.connected("car-1", "lpr-edge-car-1")
    topics = car("car-1")
    car1.subscribe(topics.fleet_watchlist, topics.vehicle_watchlist, car("car-2").vehicle_watchlist)
    got = {}
    for _ in range(2):
        message = car1.next_message()
        assert message.retain
        got[message.topic] = message.payload
    assert got == {topics.fleet_watchlist: b"fleet list", topics.vehicle_watchlist: b"car-1 list"}
    assert car1.received_nothing()


@needs_mosquitto
def test_hits_wait_for_hq_across_a_broker_restart(hq):
    """Persistence: hits sent while HQ's persistent session is away are kept, on disk."""
    first = hq.connected("hq", "lpr-edge-hq", persistent=True)
    first.subscribe(Topics.all_vehicles(PREFIX, "hit"))
    first.stop()

    car1 = hq.connected("car-1", "lpr-edge-car-1")
    assert reason_ok(car1.publish(car("car-1").hit, b'{"plate": "AB1234"}'))
    car1.stop()

    hq.broker.stop()
    hq.broker.start()
    again = hq.peer(hq.config("hq"), "lpr-edge-hq", persistent=True)
    assert again.expect_connack(success=True).session_present
    message = again.next_message()
    assert (message.topic, message.payload) == (car("car-1").hit, b'{"plate": "AB1234"}')


@needs_mosquitto
def test_hq_publish_writes_watchlists_and_nothing_else(hq):
    hq_sub = hq.connected("hq", "lpr-edge-hq")
    hq_sub.subscribe(f"{PREFIX}/#")
    hq_pub = hq.connected("hq-publish", "lpr-edge-hq-publish")
    topics = car("car-1")

    for topic in (topics.fleet_watchlist, topics.vehicle_watchlist):
        assert reason_ok(hq_pub.publish(topic, b"list", retain=True)), topic
        assert hq_sub.next_message().topic == topic
    # Not a vehicle's messages, not even under its own name (the patterns would
    # allow lpr/v1/hq-publish/hit but for the deny line), nor anything else.
    for topic in (
        topics.hit,
        topics.status,
        topics.audit,
        car("hq-publish").hit,
        car("hq-publish").status,
        car("hq-publish").audit,
        car("hq-publish").vehicle_watchlist,
        car("hq").hit,
        f"{PREFIX}/other",
        "elsewhere",
    ):
        reason = hq_pub.publish(topic, b"{}")
        assert reason.is_failure and reason.value == NOT_AUTHORIZED, (topic, reason)
    # Nor does it read what the fleet sends.
    hq_pub.subscribe(f"{PREFIX}/+/hit", f"{PREFIX}/+/status")
    car1 = hq.connected("car-1", "lpr-edge-car-1")
    assert reason_ok(car1.publish(topics.hit, b"car-1 hit"))
    # The first thing HQ's subscriber gets after the lists: none of the refused ones.
    assert hq_sub.next_message().topic == topics.hit
    assert hq_pub.received_nothing()


@needs_mosquitto
def test_hq_subscriber_user_reads_and_publishes_nothing(hq):
    """``hq`` (the subscriber) has no write access at all: not the watchlists (that
    is ``hq-publish``), not a vehicle's topics under its own name."""
    hq_user = hq.connected("hq", "lpr-edge-hq")
    car1 = hq.connected("car-1", "lpr-edge-car-1")
    topics = car("car-1")
    car1.subscribe(topics.fleet_watchlist, topics.vehicle_watchlist)
    for topic in (
        topics.fleet_watchlist,
        topics.vehicle_watchlist,
        topics.hit,
        car("hq").hit,
        car("hq").status,
        car("hq").audit,
    ):
        reason = hq_user.publish(topic, b"forged", retain=True)
        assert reason.is_failure and reason.value == NOT_AUTHORIZED, (topic, reason)
    assert hq_user.client.is_connected()
    assert car1.received_nothing()


@needs_mosquitto
def test_a_vehicle_cannot_take_over_hqs_session(hq):
    """``use_username_as_clientid``: whatever client id car-1 sends, HQ's or HQ's
    user name, it gets car-1's own session. HQ stays connected, and what is queued
    for it while away waits for it (README.md, "Client ids")."""
    hq_sub = hq.connected("hq", "lpr-edge-hq", persistent=True)
    hq_sub.subscribe(f"{PREFIX}/#")
    car2 = hq.connected("car-2", "lpr-edge-car-2")

    thief = hq.peer(hq.config("car-1"), "lpr-edge-hq", persistent=True, retry=False)
    # A new session: HQ's, which exists, would have been "present".
    assert not thief.expect_connack(success=True).session_present
    assert reason_ok(car2.publish(car("car-2").hit, b"sent live"))
    # Taken over, HQ's connection would have been closed before this arrived.
    assert hq_sub.next_message().payload == b"sent live"
    assert hq_sub.client.is_connected() and hq_sub.events.empty()
    thief.stop()

    hq_sub.stop()  # away: the broker queues for its session
    assert reason_ok(car2.publish(car("car-2").hit, b"queued for hq"))
    for stolen_id in ("lpr-edge-hq", "hq"):
        thief = hq.peer(hq.config("car-1"), stolen_id, persistent=True, retry=False)
        thief.expect_connack(success=True)
        thief.subscribe(f"{PREFIX}/#")
        thief.stop()

    # HQ's session is its user name's, whatever client id it sends.
    again = hq.peer(hq.config("hq"), "lpr-edge-hq-elsewhere", persistent=True)
    assert again.expect_connack(success=True).session_present
    message = again.next_message()
    assert (message.topic, message.payload) == (car("car-2").hit, b"queued for hq")


@needs_mosquitto
def test_a_second_connection_by_the_same_user_takes_over_the_first(hq):
    """The price of one session per user: two programs sharing a user push each
    other off (README.md, "Client ids")."""
    first = hq.connected("car-1", "lpr-edge-car-1", retry=False)
    second = hq.connected("car-1", "some-other-id")
    # (Over TLS paho sees the connection drop, not mosquitto's DISCONNECT 0x8E.)
    assert first.next_event().kind == "closed"
    assert "Client car-1 already connected, closing old connection" in hq.broker.log_text()
    assert second.client.is_connected()


@needs_mosquitto
@pytest.mark.parametrize(
    ("user", "password"),
    [("car-1", "wrong password"), ("car-9", "car-1-secret"), (None, None)],
    ids=["wrong-password", "unknown-user", "no-username"],
)
def test_bad_credentials_are_refused_with_connack_0x87(hq, user, password):
    peer = hq.peer(hq.config(user, password, cert="car-1"), f"test-{user}", retry=False)
    event = peer.expect_connack(success=False)
    assert event.reason.value == NOT_AUTHORIZED


@needs_mosquitto
@pytest.mark.parametrize("case", ["no-client-certificate", "rogue-ca-certificate", "plain-tcp"])
def test_connections_without_a_fleet_certificate_fail_in_tls(hq, case):
    """With the right username and password, still refused before MQTT begins."""
    config = {
        "no-client-certificate": lambda: hq.config("car-1", cert=None),
        "rogue-ca-certificate": lambda: hq.config("car-1", rogue=True),
        "plain-tcp": lambda: hq.config("car-1", tls=False),
    }[case]()
    peer = hq.peer(config, "lpr-edge-car-1", retry=False)
    event = peer.next_event()
    assert event.kind == "closed", f"expected the connection to fail, got {event}"


@needs_mosquitto
def test_tls_below_1_2_is_refused_and_1_2_accepted(hq):
    """TLS 1.2 clients (older vehicle images) get in; TLS 1.1 does not. (OpenSSL 3
    refuses 1.1 at its default security level too; the static test above pins
    ``tls_version`` itself.)"""

    def peer_with(version: ssl.TLSVersion, client_id: str) -> Peer:
        config = hq.config("car-1", tls=False)
        client = new_client(config, client_id)
        issued = hq.pki.client("car-1")
        context = ssl.create_default_context(cafile=str(hq.pki.ca_file))
        context.load_cert_chain(issued.cert_file, issued.key_file)
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer old versions
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1_1: on purpose
            context.minimum_version = ssl.TLSVersion.TLSv1_1
            context.maximum_version = version
        client.tls_set_context(context)
        peer = Peer(client, retry=False)
        hq.peers.append(peer)
        peer.start(config)
        return peer

    assert peer_with(ssl.TLSVersion.TLSv1_1, "old-tls").next_event().kind == "closed"
    peer_with(ssl.TLSVersion.TLSv1_2, "tls-1-2").expect_connack(success=True)


@needs_mosquitto
def test_revoked_vehicle_is_disconnected_and_kept_out(hq):
    """README.md's revocation: delete the password entry, reload the broker."""
    car1 = hq.connected("car-1", "lpr-edge-car-1")
    subprocess.run(
        [MOSQUITTO_PASSWD, "-D", str(hq.password_file), "car-1"], check=True, capture_output=True
    )
    hq.broker.reload()
    assert car1.next_event().kind == "closed"
    # paho reconnects by itself, and is now turned away.
    event = car1.expect_connack(success=False)
    assert event.reason.value == NOT_AUTHORIZED
    hq.connected("car-2", "lpr-edge-car-2")  # the others are unaffected


# --- end to end over TLS: the product's own programs ---------------------------------


def wait_for(predicate, timeout: float = TIMEOUT) -> bool:
    return poll_until(predicate, timeout)


def stolen_vehicle_hit(vehicle_id: str) -> tuple[str, bytes]:
    """A real hit, plate image included: its event id and wire payload."""
    read = make_read("AB1234")
    watchlist = Watchlist(
        [WatchlistEntry(plate="AB1234", list="stolen-vehicle", priority=1, entry_id="17")]
    )
    match = watchlist.match(read.plate, at=read.first_seen)
    assert match is not None
    hit = make_hit(read, match, vehicle_id, image_max_bytes=20000)
    message = hit_message(hit)
    assert message["plate_image"]
    return hit.event_id, encode(message)


@needs_mosquitto
def test_a_hit_goes_from_a_vehicles_outbox_into_hqs_store_over_tls(hq, tmp_path):
    event_id, payload = stolen_vehicle_hit("car-1")
    outbox = Outbox(tmp_path / "outbox.sqlite")
    outbox.add("hit", event_id, car("car-1").hit, payload)
    with HitStore(tmp_path / "hq-hits.sqlite") as store:
        subscriber = HqSubscriber(hq.product_config("hq"), store)
        with subscriber:
            assert subscriber.wait_subscribed(TIMEOUT), "HQ did not subscribe"
            with MqttPublisher(hq.product_config("car-1"), "car-1", outbox) as vehicle:
                # Delivered means acknowledged by the broker, which HQ then gets.
                assert vehicle.wait_delivered(TIMEOUT), vehicle.stats.to_json()
                assert subscriber.wait_until(lambda: store.counts()["hits"] == 1, TIMEOUT)
                assert subscriber.wait_until(
                    lambda: store.statuses().get("car-1", {}).get("state") == "online", TIMEOUT
                )
            # A clean stop says "offline" on the way out.
            assert subscriber.wait_until(
                lambda: store.statuses()["car-1"]["state"] == "offline", TIMEOUT
            )
            stats = subscriber.stats()
        assert store.hits() == [json.loads(payload)]
        row = store.hit_row(event_id)
        assert (row["vehicle_id"], row["plate"], row["list"]) == (
            "car-1",
            "AB1234",
            "stolen-vehicle",
        )
    assert stats["rejected"] == {} and stats["store_errors"] == 0, stats
    assert (outbox.stats().pending, outbox.stats().delivered) == (0, 1)
    assert vehicle.stats.refused == 0
    outbox.close()


def lpr_edge_publish(hq: Hq, document: Path, user: str, password: str):
    """`lpr-edge watchlist publish` as HQ runs it: over TLS, password in the environment."""
    issued = hq.pki.client(user)
    env = {**os.environ, PASSWORD_ENV: password}
    command = [
        sys.executable,
        "-m",
        "edge",
        "watchlist",
        "publish",
        str(document),
        "--host",
        "127.0.0.1",
        "--port",
        str(hq.broker.port),
        "--tls",
        "--ca-file",
        str(hq.pki.ca_file),
        "--cert-file",
        str(issued.cert_file),
        "--key-file",
        str(issued.key_file),
        "--username",
        user,
    ]
    return subprocess.run(
        command, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60
    )


@needs_mosquitto
def test_watchlist_publish_reaches_the_vehicles_it_is_for_over_tls(hq, tmp_path):
    private_key, public_key = generate_keypair()
    keys = {key_id(public_key): public_key}
    entries = [WatchlistEntry(plate="AB1234", list="stolen-vehicle", priority=1, entry_id="1")]
    fleet_doc = tmp_path / "fleet.json"
    fleet_doc.write_bytes(sign_document(entries, 7, private_key))
    car2_doc = tmp_path / "car-2.json"
    car2_doc.write_bytes(sign_document(entries, 8, private_key, vehicle_id="car-2"))

    pushed: dict[str, queue.Queue[tuple[str, bytes]]] = {}
    vehicles = []
    for vehicle_id in ("car-1", "car-2"):
        pushed[vehicle_id] = received = queue.Queue()
        outbox = Outbox(tmp_path / f"{vehicle_id}-outbox.sqlite")
        vehicles.append(
            MqttPublisher(
                hq.product_config(vehicle_id),
                vehicle_id,
                outbox,
                on_watchlist=lambda topic, payload, q=received: q.put((topic, payload)),
            ).start()
        )
    try:
        assert wait_for(lambda: all(v.connected for v in vehicles))
        # car-2's list first: had car-1 been given it, it would come before the fleet's.
        for document, target in ((car2_doc, "vehicle car-2"), (fleet_doc, "every vehicle")):
            result = lpr_edge_publish(hq, document, "hq-publish", PASSWORDS["hq-publish"])
            assert result.returncode == 0, result.stderr
            assert f" to {target} on " in result.stdout, result.stdout

        topic, payload = pushed["car-1"].get(timeout=TIMEOUT)
        assert (topic, payload) == (car("car-1").fleet_watchlist, fleet_doc.read_bytes())
        assert verify_document(payload, keys, vehicle_id="car-1", current_version=0).version == 7
        got = dict(pushed["car-2"].get(timeout=TIMEOUT) for _ in range(2))
        assert got == {
            car("car-2").vehicle_watchlist: car2_doc.read_bytes(),
            car("car-2").fleet_watchlist: fleet_doc.read_bytes(),
        }
        pushed_list = verify_document(
            got[car("car-2").vehicle_watchlist], keys, vehicle_id="car-2", current_version=7
        )
        assert (pushed_list.version, pushed_list.vehicle_id) == (8, "car-2")
        time.sleep(QUIET / 2)  # anything late for car-1 would be car-2's list
        assert pushed["car-1"].empty()
    finally:
        for vehicle in vehicles:
            vehicle.close()
            vehicle.outbox.close()


@needs_mosquitto
@pytest.mark.parametrize(
    ("user", "password", "says"),
    [
        ("hq-publish", "wrong password", "cannot connect to 127.0.0.1:{port}: Not authorized"),
        ("hq", PASSWORDS["hq"], "the broker did not accept it on lpr/v1/watchlist: Not authorized"),
    ],
    ids=["wrong-password", "subscriber-user"],
)
def test_watchlist_publish_refused_exits_1_and_says_why(hq, tmp_path, user, password, says):
    private_key, _ = generate_keypair()
    document = tmp_path / "fleet.json"
    entries = [WatchlistEntry(plate="AB1234", entry_id="1")]
    document.write_bytes(sign_document(entries, 1, private_key))
    result = lpr_edge_publish(hq, document, user, password)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert (
        result.stderr.strip() == f"lpr-edge watchlist publish: {says.format(port=hq.broker.port)}"
    )
    assert result.stdout == ""
