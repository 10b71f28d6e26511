"""Where an MQTT uplink connects: one broker, or the nodes of a cluster, and how it logs in.
Shared by the CloudEvents MQTT uplink and the Sparkplug uplink."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator

from .base import Port, Strict, TlsSettings
from .durations import Duration


class MqttServer(Strict):
    host: str = Field(min_length=1, max_length=253)
    port: Port = 1883


# A cluster has three to seven nodes; a list past this is a mistake in the file.
MAX_MQTT_SERVERS = 16


class BrokerConnection(Strict):
    host: str = "127.0.0.1"
    port: Port = 1883
    servers: list[MqttServer] | None = Field(
        default=None, min_length=1, max_length=MAX_MQTT_SERVERS,
        description=(
            "The nodes of a broker cluster, instead of host and port. A lost connection "
            "moves to the next node, with the same client id and session; the uplink stays "
            "on the node it reached until that one fails (see docs/uplinks.md)."
        ),
    )
    tls: TlsSettings | None = Field(default=None, description="TLS; usually with port 8883.")
    client_id: str | None = Field(default=None, description="Default: floorlink-<agent.id>.")
    username: str | None = None
    password: SecretStr | None = None
    keepalive: Duration = Field(default=30.0, ge=5)
    reconnect_max: Duration = Field(
        default=10.0, ge=1, le=300,
        description="Longest wait between two connection attempts. The wait starts near "
        "1 s and doubles after each failed attempt up to this; a broker that accepts the "
        "connection starts it over.",
    )

    @model_validator(mode="after")
    def _one_way_to_name_the_broker(self) -> BrokerConnection:
        if self.servers is None:
            return self
        both = sorted({"host", "port"} & self.model_fields_set)
        if both:
            raise ValueError(f"give the broker either as servers or as host and port, not "
                             f"both: move {' and '.join(both)} into the servers list")
        seen: set[tuple[str, int]] = set()
        for server in self.servers:
            key = (server.host.lower(), server.port)
            if key in seen:
                raise ValueError(f"servers lists {server.host}:{server.port} twice")
            seen.add(key)
        return self

    def endpoints(self) -> list[tuple[str, int]]:
        """The brokers to try, in order: the servers list, or the one host and port."""
        if self.servers is None:
            return [(self.host, self.port)]
        return [(server.host, server.port) for server in self.servers]
