"""The Edge Node's messages: births, data and deaths, numbered as the specification says.

Pure: no MQTT here. The uplink feeds it committed events (metrics.updates) and publishes
what it returns, in order. The rules it keeps (Sparkplug 3.0, chapters 5 and 6):
- NBIRTH has seq 0 and the session's bdSeq; every later message of the node (DBIRTH,
  NDATA, DDATA, DDEATH) takes the next seq, 255 wrapping to 0. NDEATH has no seq.
- Births name every metric with its alias, datatype and current value (null when there
  is none yet); data carries only changes, by alias.
- A value that does not fit the datatype it was born with is not sent changed. Where the
  config left the datatype open, data raises RebirthNeeded, and the births that follow
  declare the value's datatype. Where the config fixed it, the value goes as null with
  the Quality BAD (an integer code with no configured text, for a Modbus `enum` tag,
  goes as its decimal text).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .catalogue import BD_SEQ, REBIRTH, Catalogue, MetricDef, value_datatype
from .metrics import Update
from .payload import DataType, Metric, MetricValue, Quality, encode, fits
from .topics import device_topic, node_topic

# A metric the config leaves open and that has no value yet is born as a Double (PLC
# values are mostly numbers); a first value that is not one brings a rebirth.
OPEN_DATATYPE = DataType.DOUBLE


class RebirthNeeded(Exception):
    """A value does not fit the datatype its metric was born with."""


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes


class EdgeNode:
    def __init__(self, group: str, node: str, catalogue: Catalogue, bd_seq: int) -> None:
        self.group, self.node, self.catalogue, self.bd_seq = group, node, catalogue, bd_seq
        self._defs = catalogue.by_ref()
        self._device_of = {m.ref: device for device, metrics in catalogue.devices.items()
                           for m in metrics}
        self.current: dict[str, Update] = {}  # the latest value of each metric
        self._born: dict[str, DataType] = {}  # the datatype each metric was born with
        self._seq = 255  # the next is 0: the NBIRTH's

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) % 256
        return self._seq

    def death(self, now_ms: int) -> Message:
        """The NDEATH: the MQTT will, and what a clean stop publishes before DISCONNECT."""
        return Message(node_topic(self.group, "NDEATH", self.node), encode(now_ms, [
            Metric(self.alias(BD_SEQ), DataType.UINT64, self.bd_seq, now_ms, BD_SEQ)], None))

    def alias(self, ref: str) -> int:
        return self._defs[ref].alias

    def device_of(self, ref: str) -> str | None:
        """The device a metric belongs to; None for the node's own."""
        return self._device_of.get(ref)

    def remember(self, updates: Iterable[Update]) -> None:
        """Values committed before the session was born: the births carry the newest."""
        for update in updates:
            if update.ref in self._defs:
                self.current[update.ref] = update

    def births(self, now_ms: int, devices: Iterable[str]) -> list[Message]:
        """NBIRTH, then a DBIRTH for each of `devices` (those online), in that order."""
        self._seq = 255
        node_metrics = [self._born_metric(m, now_ms) for m in self.catalogue.node]
        messages = [Message(node_topic(self.group, "NBIRTH", self.node),
                            encode(now_ms, node_metrics, self._next_seq()))]
        messages += [self.device_birth(device, now_ms) for device in devices]
        return messages

    def device_birth(self, device: str, now_ms: int) -> Message:
        metrics = [self._born_metric(m, now_ms) for m in self.catalogue.devices[device]]
        return Message(device_topic(self.group, "DBIRTH", self.node, device),
                       encode(now_ms, metrics, self._next_seq()))

    def device_death(self, device: str, now_ms: int) -> Message:
        return Message(device_topic(self.group, "DDEATH", self.node, device),
                       encode(now_ms, [], self._next_seq()))

    def data(self, updates: list[Update], now_ms: int, historical: bool = False,
             ) -> list[Message]:
        """NDATA and DDATA for `updates` (unknown refs ignored), one message per device.

        Live data carries only changes: a value equal to the current one, with the same
        quality, is not sent again (a `publish: every` tag, a work order repeated by each
        confirmation). Historical values are older than what the births carried: they are
        not remembered as current, and one that does not fit its datatype goes as null
        with the Quality BAD (a rebirth would announce it as current)."""
        by_device: dict[str | None, list[Metric]] = {}
        if not historical:
            updates = [u for u in updates if self._changes(u)]
            self.remember(updates)  # all of them first: a rebirth below must carry each
        for update in updates:
            definition = self._defs.get(update.ref)
            if definition is None:
                continue
            datatype = self._born.get(update.ref)
            if datatype is None:
                raise RebirthNeeded(f"{definition.name} has not been born")
            value, quality = _coerce(datatype, update.value), update.quality
            if not fits(datatype, value):
                if definition.datatype is None and not historical:
                    raise RebirthNeeded(f"{definition.name}: {value!r} does not fit "
                                        f"{datatype.name}")
                value, quality = None, Quality.BAD
            by_device.setdefault(self._device_of.get(update.ref), []).append(Metric(
                definition.alias, datatype, value, update.at_ms,
                historical=historical, quality=quality))
        messages = []
        for device, metrics in by_device.items():
            topic = (node_topic(self.group, "NDATA", self.node) if device is None
                     else device_topic(self.group, "DDATA", self.node, device))
            messages.append(Message(topic, encode(now_ms, metrics, self._next_seq())))
        return messages

    def _changes(self, update: Update) -> bool:
        known = self.current.get(update.ref)
        # The type too: True == 1 and 1 == 1.0 in Python, not on the wire.
        return (known is None or known.quality != update.quality
                or type(known.value) is not type(update.value) or known.value != update.value)

    def _born_metric(self, definition: MetricDef, now_ms: int) -> Metric:
        value: MetricValue
        quality = Quality.GOOD
        at_ms = now_ms
        if definition.ref == BD_SEQ:
            value = self.bd_seq
        elif definition.ref == REBIRTH:
            value = False
        else:
            known = self.current.get(definition.ref)
            value = known.value if known is not None else None
            if known is not None:
                quality, at_ms = known.quality, known.at_ms
        datatype = _birth_datatype(definition, value)
        value = _coerce(datatype, value)
        if not fits(datatype, value):
            value, quality = None, Quality.BAD  # a stored value the config's type refuses
        self._born[definition.ref] = datatype
        return Metric(definition.alias, datatype, value, at_ms, definition.name,
                      quality=quality)


def _coerce(datatype: DataType, value: MetricValue) -> MetricValue:
    """The one change made to a value: an integer code where text is due (an `enum` tag's
    code that has no configured text) is sent as its decimal text."""
    if datatype in (DataType.STRING, DataType.TEXT) and type(value) is int:
        return str(value)
    return value


def _birth_datatype(definition: MetricDef, value: MetricValue) -> DataType:
    if definition.datatype is not None:
        return definition.datatype
    return OPEN_DATATYPE if value is None else value_datatype(value)
