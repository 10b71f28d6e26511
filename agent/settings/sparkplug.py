"""The Sparkplug B uplink's settings: the broker, and who the Edge Node is in the namespace."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from .base import Identifier
from .brokers import BrokerConnection

# The specification forbids these in a group, edge node, device or host id: '/' separates
# the topic's levels and '+' and '#' are MQTT's wildcards.
FORBIDDEN = ("/", "+", "#")


def id_problem(value: str) -> str | None:
    """Why `value` cannot be a Sparkplug id, or None."""
    if not value:
        return "a Sparkplug id cannot be empty"
    for character in FORBIDDEN:
        if character in value:
            return f"a Sparkplug id cannot contain '{character}'"
    return None


def _sparkplug_id(value: str) -> str:
    problem = id_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


# What the Sparkplug uplink takes from the buffer: values and what they say of an asset.
# Every other event stays on the CloudEvents uplinks (docs/sparkplug.md).
SPARKPLUG_EVENTS = ("telemetry", "telemetry.batch", "device.status", "machine.state_changed",
                    "downtime.started", "downtime.ended", "production.confirmed",
                    "quality.hold_raised", "quality.hold_released")

SparkplugId = Annotated[str, Field(max_length=200), AfterValidator(_sparkplug_id)]


class SparkplugUplink(BrokerConnection):
    id: Identifier
    type: Literal["sparkplug"]
    group_id: SparkplugId = Field(description="The Sparkplug group this Edge Node is in.")
    edge_node_id: SparkplugId | None = Field(
        default=None, description="The Edge Node's id in the group. Default: agent.id.")
    primary_host_id: SparkplugId | None = Field(
        default=None,
        description="The host application (Ignition's MQTT Engine, say) this node waits for: "
        "no birth until its STATE says online on the broker, and a move to the next "
        "server when it goes offline there. Values meanwhile wait in the buffer. "
        "Default: none, the node publishes as soon as it is connected.")
    max_inflight: Annotated[int, Field(ge=1, le=10000)] = Field(
        default=500,
        description="Events taken from the buffer and not yet published: while no session "
        "is born, at most this many wait in memory, the rest in the buffer.")
    @property
    def events(self) -> list[str]:
        """What its forwarder takes from the buffer: fixed, not configured."""
        return list(SPARKPLUG_EVENTS)

    max_rate: Annotated[float, Field(ge=0)] = Field(
        default=10000,
        description="Events per second at most, so the replay of stored values after an "
        "outage does not flood the broker and the host. 0: unlimited.")
