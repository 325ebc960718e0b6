"""MQTT plumbing shared by the vehicle, the HQ subscriber and the HQ tools: the topic
layout (a public contract) and a paho-mqtt 2.x client configured from ``[mqtt]``.

MQTT 5 throughout: a broker refusing a publish (an ACL, a quota) says so in the
PUBACK's reason code, where MQTT 3.1.1 would acknowledge and drop it silently. A hit
only leaves the outbox on a successful acknowledgement.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.config import MqttConfig

#: Session expiry asked for by persistent subscribers (HQ): a week of messages kept
#: by the broker while they are away.
PERSISTENT_SESSION_SECONDS = 7 * 24 * 3600


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
    client.reconnect_delay_set(
        min_delay=max(1, round(config.reconnect_min_seconds)),
        max_delay=max(1, round(config.reconnect_max_seconds)),
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
