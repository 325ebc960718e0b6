"""From a read to HQ: hits, their messages, the outbox, MQTT publishing and in-car alerts."""
