"""MQTT plumbing shared by the vehicle, the HQ subscriber and the HQ tools: the topic
layout (a public contract) and a paho-mqtt 2.x client configured from ``[mqtt]``.

MQTT 5 throughout: a broker refusing a publish (an ACL, a quota) says so in the
PUBACK's reason code, where MQTT 3.1.1 would acknowledge and drop it silently. A hit
only leaves the outbox on a successful acknowledgement.
"""

from __future__ import annotations

import argparse
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.config import MqttConfig, TlsConfig

#: Session expiry asked for by persistent subscribers (HQ): two weeks of messages kept
#: by the broker while they are away (config/mosquitto/lpr-edge.conf agrees).
PERSISTENT_SESSION_SECONDS = 14 * 24 * 3600


@dataclass(frozen=True, slots=True)
class Topics:
    """Where each message goes, under ``{prefix}``."""

    prefix: str
    vehicle_id: str

    @property
    def hit(self) -> str:
        return f"{self.prefix}/{self.vehicle_id}/hit"

    @property
    def status(self) -> str:
        return f"{self.prefix}/{self.vehicle_id}/status"

    @property
    def audit(self) -> str:
        return f"{self.prefix}/{self.vehicle_id}/audit"

    @property
    def decision(self) -> str:
        """The officer's accept/reject of a hit (``lpr.decision/1``)."""
        return f"{self.prefix}/{self.vehicle_id}/decision"

    @property
    def fleet_watchlist(self) -> str:
        """The list pushed to every vehicle."""
        return f"{self.prefix}/watchlist"

    @property
    def vehicle_watchlist(self) -> str:
        """The list pushed to this vehicle only."""
        return f"{self.prefix}/{self.vehicle_id}/watchlist"

    @staticmethod
    def all_vehicles(prefix: str, kind: str) -> str:
        """Subscription for one kind of message from every vehicle (HQ side)."""
        return f"{prefix}/+/{kind}"


def new_client(config: MqttConfig, client_id: str) -> paho.Client:
    """A paho client with the config's credentials, TLS and reconnect back-off set.

    The caller sets callbacks and a last will, then calls :func:`connect`.
    """
    client = paho.Client(
        paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5
    )
    if config.username:
        client.username_pw_set(config.username, config.password or None)
    if config.tls.enabled:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=config.tls.ca_file or None
        )
        if config.tls.cert_file:
            context.load_cert_chain(config.tls.cert_file, config.tls.key_file or None)
        client.tls_set_context(context)
    # paho types these as int but sleeps on them as given: fractions work.
    client.reconnect_delay_set(
        min_delay=config.reconnect_min_seconds,  # type: ignore[arg-type]
        max_delay=max(config.reconnect_min_seconds, config.reconnect_max_seconds),  # type: ignore[arg-type]
    )
    return client


def connect(client: paho.Client, config: MqttConfig, *, persistent: bool = False) -> None:
    """Start connecting in the background (``loop_start`` is the caller's): a broker
    that is down now is retried with back-off, never an error at start-up.

    ``persistent``: keep the session (subscriptions and queued QoS 1 messages) while
    this client is away, as HQ's subscriber does.
    """
    properties = None
    if persistent:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = PERSISTENT_SESSION_SECONDS
    client.connect_async(
        config.host,
        config.port,
        keepalive=config.keepalive,
        clean_start=not persistent,
        properties=properties,
    )


def reason_ok(reason_code) -> bool:
    """True for a successful MQTT 5 reason code (paho passes ReasonCode objects)."""
    return not getattr(reason_code, "is_failure", False)


# ---------------------------------------------------------------- command line (HQ tools)

DEFAULT_PREFIX = "lpr/v1"


def add_broker_arguments(
    parser: argparse.ArgumentParser, *, client_id: str, password_env: str
) -> None:
    """The broker connection options shared by `lpr-edge hq` and `watchlist publish`."""
    parser.add_argument("--host", default="localhost", help="broker host (default: localhost)")
    parser.add_argument(
        "--port", type=int, default=None, help="broker port (default: 1883, or 8883 with TLS)"
    )
    parser.add_argument(
        "--prefix",
        default=DEFAULT_PREFIX,
        metavar="TOPIC",
        help=f"topic prefix (default: {DEFAULT_PREFIX})",
    )
    parser.add_argument(
        "--client-id", default=client_id, help=f"MQTT client id (default: {client_id})"
    )
    parser.add_argument("--username", default="", help="MQTT username")
    parser.add_argument(
        "--password",
        default=None,
        help=f"MQTT password (default: ${password_env}; prefer the variable, a command "
        "line is visible to other users)",
    )
    parser.add_argument("--tls", action="store_true", help="connect over TLS")
    parser.add_argument(
        "--ca-file", default="", metavar="PEM", help="CA certificate of the broker (implies --tls)"
    )
    parser.add_argument(
        "--cert-file", default="", metavar="PEM", help="client certificate (implies --tls)"
    )
    parser.add_argument(
        "--key-file", default="", metavar="PEM", help="client certificate's private key"
    )


def broker_config(args: argparse.Namespace, *, client_id: str, password_env: str) -> MqttConfig:
    """An :class:`MqttConfig` from :func:`add_broker_arguments` options; ValueError
    naming the option when one is wrong."""
    ca_file = getattr(args, "ca_file", "") or ""
    cert_file = getattr(args, "cert_file", "") or ""
    key_file = getattr(args, "key_file", "") or ""
    tls = bool(getattr(args, "tls", False) or ca_file or cert_file or key_file)
    if bool(cert_file) != bool(key_file):
        raise ValueError("--cert-file and --key-file go together")
    for option, path in (
        ("--ca-file", ca_file),
        ("--cert-file", cert_file),
        ("--key-file", key_file),
    ):
        if path and not Path(path).is_file():
            raise ValueError(f"{option} {path}: no such file")
    port = getattr(args, "port", None)
    if port is None:
        port = 8883 if tls else 1883
    if not 1 <= port <= 65535:
        raise ValueError(f"--port {port}: expected 1 to 65535")
    prefix = getattr(args, "prefix", None) or DEFAULT_PREFIX
    if any(ch in prefix for ch in "#+") or prefix.endswith("/"):
        raise ValueError(f"--prefix {prefix!r}: no wildcards or trailing '/'")
    password = getattr(args, "password", None)
    if password is None:
        password = os.environ.get(password_env, "")
    return MqttConfig(
        host=getattr(args, "host", None) or "localhost",
        port=port,
        topic_prefix=prefix,
        client_id=getattr(args, "client_id", None) or client_id,
        username=getattr(args, "username", None) or "",
        password=password,
        tls=TlsConfig(enabled=tls, ca_file=ca_file, cert_file=cert_file, key_file=key_file),
    )
