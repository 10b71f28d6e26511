"""Prometheus metrics, read from the status board at scrape time.

Counters the agent already keeps (samples, deliveries, dead letters, drops) are
exported as they stand rather than counted twice; only publish latency needs its
own histogram, fed by the forwarders. The registry is per agent, so tests and the
demo can run several agents in one process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .board import StatusBoard

# Publish latency from submission to the peer's acknowledgement, in seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class AgentMetrics:
    def __init__(self, board: StatusBoard) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, cpu seconds
        self.registry.register(_BoardCollector(board))
        self.publish_latency = Histogram(
            "floorlink_publish_latency_seconds",
            "From handing an event to the uplink to the peer's acknowledgement.",
            ["uplink"], buckets=LATENCY_BUCKETS, registry=self.registry)

    def latency_observer(self, uplink: str) -> Callable[[float], None]:
        return self.publish_latency.labels(uplink=uplink).observe


class _BoardCollector(Collector):
    def __init__(self, board: StatusBoard) -> None:
        self.board = board

    def collect(self) -> Iterator[Metric]:
        board = self.board
        now = time.time()
        up = GaugeMetricFamily("floorlink_up", "1 while the agent's core tasks run.")
        up.add_metric([], 1.0 if board.alive else 0.0)
        yield up
        ready = GaugeMetricFamily("floorlink_ready", "1 when /readyz answers 200.")
        ready.add_metric([], 1.0 if board.ready else 0.0)
        yield ready
        yield from self._devices()
        events = CounterMetricFamily("floorlink_events", "Events derived and committed, by type.",
                                     labels=["type"])
        for event_type, count in sorted(board.events_by_type.items()):
            events.add_metric([event_type], count)
        yield events
        yield from self._uplinks(now)
        yield from self._buffer()
        yield from self._shift()
        clock = GaugeMetricFamily("floorlink_clock_synchronized",
                                  "1 if the system clock is synchronised, 0 if not.")
        if board.clock is not None and board.clock.synchronized is not None:
            clock.add_metric([], 1.0 if board.clock.synchronized else 0.0)
        yield clock

    def _shift(self) -> Iterator[Metric]:
        """The current shift's figures per asset, as on the page (agent/shift/)."""
        ratios = {key: GaugeMetricFamily(f"floorlink_shift_{key}",
                                         f"Current shift's {key} (0-1), per asset.",
                                         labels=["asset"])
                  for key in ("oee", "availability", "performance", "quality")}
        seconds = GaugeMetricFamily("floorlink_shift_state_seconds",
                                    "Seconds in each state this shift.",
                                    labels=["asset", "state"])
        made = GaugeMetricFamily("floorlink_shift_parts", "Parts confirmed this shift.",
                                 labels=["asset", "kind"])
        down = GaugeMetricFamily("floorlink_shift_downtime_minutes",
                                 "Downtime minutes this shift, by reason.",
                                 labels=["asset", "reason"])
        for asset, views in sorted(self.board.shifts.items()):
            current = views["current"]
            for key, family in ratios.items():
                if current.get(key) is not None:
                    family.add_metric([asset], float(current[key]))
            for state, value in current["seconds"].items():
                seconds.add_metric([asset, state], float(value))
            seconds.add_metric([asset, "micro_stop"], float(current["micro_stop_s"]))
            made.add_metric([asset, "good"], float(current["good"]))
            made.add_metric([asset, "scrap"], float(current["scrap"]))
            for reason, entry in current["downtime_by_reason"].items():
                down.add_metric([asset, reason], float(entry["minutes"]))
        yield from ratios.values()
        yield from (seconds, made, down)

    def _devices(self) -> Iterator[Metric]:
        labels = ["device", "protocol"]
        samples = CounterMetricFamily("floorlink_samples", "Samples read from PLCs.", labels=labels)
        connected = GaugeMetricFamily("floorlink_device_connected", "1 while the device is up.",
                                      labels=labels)
        reconnects = CounterMetricFamily("floorlink_device_reconnects",
                                         "Times the device connection was lost.", labels=labels)
        offset = GaugeMetricFamily("floorlink_opcua_server_clock_offset_seconds",
                                   "OPC UA server clock minus ours.", labels=["device"])
        for d in self.board.devices:
            key = [d.device, d.protocol]
            samples.add_metric(key, d.samples)
            connected.add_metric(key, 1.0 if d.state == "up" else 0.0)
            reconnects.add_metric(key, d.reconnects)
            value = d.details.get("server_clock_offset_s")
            if isinstance(value, int | float):
                offset.add_metric([d.device], float(value))
        yield from (samples, connected, reconnects, offset)

    def _uplinks(self, now: float) -> Iterator[Metric]:
        labels = ["uplink", "type"]
        connected = GaugeMetricFamily("floorlink_uplink_connected", "1 while the uplink is up.",
                                      labels=labels)
        delivered = CounterMetricFamily("floorlink_uplink_delivered",
                                        "Events the peer acknowledged.", labels=labels)
        dead = CounterMetricFamily("floorlink_uplink_dead_lettered",
                                   "Events the peer refused for good, kept as dead letters.",
                                   labels=labels)
        disconnects = CounterMetricFamily("floorlink_uplink_disconnects",
                                          "Times the uplink lost its peer.", labels=labels)
        failovers = CounterMetricFamily(
            "floorlink_uplink_failovers",
            "Times the uplink's session moved to another node of a broker cluster.",
            labels=labels)
        server = GaugeMetricFamily("floorlink_uplink_server",
                                   "1 for the broker node the uplink is on or trying.",
                                   labels=[*labels, "server"])
        paused = GaugeMetricFamily("floorlink_uplink_paused",
                                   "1 while the uplink waits for someone to act.", labels=labels)
        backlog = GaugeMetricFamily("floorlink_uplink_backlog_events",
                                    "Events buffered and not yet acknowledged.", labels=labels)
        oldest = GaugeMetricFamily("floorlink_uplink_oldest_pending_age_seconds",
                                   "Age of the oldest event not yet acknowledged.", labels=labels)
        stats = self.board.buffer
        for u in self.board.uplinks:
            key = [u.uplink, u.type]
            connected.add_metric(key, 1.0 if u.connected else 0.0)
            delivered.add_metric(key, u.delivered)
            dead.add_metric(key, u.dead_lettered)
            disconnects.add_metric(key, u.disconnects)
            failovers.add_metric(key, u.failovers)
            server.add_metric([*key, u.target], 1.0)
            paused.add_metric(key, 1.0 if u.alarm else 0.0)
            if stats is not None:
                backlog.add_metric(key, sum(stats.backlog.get(u.uplink, {}).values()))
                at = stats.oldest_pending_at.get(u.uplink)
                oldest.add_metric(key, max(0.0, now - at) if at else 0.0)
        yield from (connected, delivered, dead, disconnects, failovers, server, paused, backlog,
                    oldest)

    def _buffer(self) -> Iterator[Metric]:
        stats = self.board.buffer
        size = GaugeMetricFamily("floorlink_buffer_file_bytes", "Size of the buffer file.")
        used = GaugeMetricFamily("floorlink_buffer_used_bytes", "Bytes the buffer's pages hold.")
        events = GaugeMetricFamily("floorlink_buffer_events", "Events stored in the buffer.")
        limit = GaugeMetricFamily("floorlink_buffer_limit", "Configured buffer limits.",
                                  labels=["limit"])
        drops = CounterMetricFamily("floorlink_buffer_dropped_events",
                                    "Events dropped by the buffer's limits, never delivered.",
                                    labels=["uplink", "class"])
        alarms = GaugeMetricFamily("floorlink_alarms", "Alarms raised now.", labels=["key"])
        writable = GaugeMetricFamily("floorlink_buffer_writable",
                                     "0 while commits to the buffer fail.")
        writable.add_metric([], 0.0 if self.board.buffer_error else 1.0)
        commits = CounterMetricFamily(
            "floorlink_buffer_commits", "Transactions committed to the buffer; each one is an "
            "fsync with synchronous: full (see buffer.commit_interval).")
        commits.add_metric([], self.board.commits)
        if stats is not None:
            size.add_metric([], stats.file_bytes)
            used.add_metric([], stats.used_bytes)
            events.add_metric([], stats.events)
            for name, value in stats.limits.items():
                limit.add_metric([name], value)
            for uplink, classes in stats.drops.items():
                for kind, count in classes.items():
                    drops.add_metric([uplink, kind], count)
        for alarm in self.board.alarms():
            alarms.add_metric([str(alarm["key"])], 1.0)
        yield from (size, used, events, limit, drops, writable, commits, alarms)
