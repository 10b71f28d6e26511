"""A QoS 1 subscriber to everything floorlink publishes, with a persistent session, so
that a broker restart loses nothing it held for us: the benchmarks' counter of what
arrived."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def subscribe_until(port: int, client_id: str, on_message: Callable[[Any, Any, Any], None],
                    stop: threading.Event, max_delay: int) -> None:
    """Receive `floorlink/#` on 127.0.0.1:`port` until `stop` is set, reconnecting within
    `max_delay` seconds when the broker goes away."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    client.on_connect = lambda c, u, f, r, p: c.subscribe("floorlink/#", qos=1)
    client.on_message = on_message
    client.reconnect_delay_set(0.2, max_delay)
    client.connect_async("127.0.0.1", port)
    client.loop_start()
    stop.wait()
    client.loop_stop()
