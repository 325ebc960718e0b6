"""The broker the MQTT tests rely on is a real Mosquitto that real clients can use."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt


def test_real_broker_round_trip(broker):
    received: list[bytes] = []
    got = threading.Event()
    subscribed = threading.Event()

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-sub")
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.on_message = lambda _c, _u, msg: (received.append(msg.payload), got.set())
    sub.connect("127.0.0.1", broker.port)
    sub.subscribe("lpr/v1/+/hit", qos=1)
    sub.loop_start()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-pub")
    try:
        assert subscribed.wait(5)
        pub.connect("127.0.0.1", broker.port)
        pub.loop_start()
        pub.publish("lpr/v1/car-1/hit", b'{"plate": "AB1234"}', qos=1).wait_for_publish(5)
        assert got.wait(5)
        assert received == [b'{"plate": "AB1234"}']
    finally:
        pub.loop_stop()
        pub.disconnect()
        sub.loop_stop()
        sub.disconnect()
