"""paho-mqtt 2.x clients set up from MqttSettings, for the gateway and the bridge alike."""

from __future__ import annotations

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from .config import MqttSettings


def mqtt_client(settings: MqttSettings, client_id: str, *, manual_ack: bool = False,
                persistent: bool = False, session_expiry_s: int = 0) -> tuple[mqtt.Client, dict]:
    """A paho 2.x client set up from the settings, and the connect() keyword arguments.

    persistent: the broker keeps our subscriptions and queues QoS 1 messages while we are away
    (MQTT 5: clean_start false and a session expiry; 3.1.1: clean session off).
    """
    v5 = settings.protocol == "5"
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311, manual_ack=manual_ack,
                         clean_session=None if v5 else not persistent)
    if settings.username:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls_ca:
        client.tls_set(ca_certs=settings.tls_ca)
    kwargs: dict = {"keepalive": settings.keepalive_s}
    if v5:
        kwargs["clean_start"] = not persistent
        if persistent:
            kwargs["properties"] = Properties(PacketTypes.CONNECT)
            kwargs["properties"].SessionExpiryInterval = session_expiry_s
    client.reconnect_delay_set(min_delay=1, max_delay=10)
    return client, kwargs
