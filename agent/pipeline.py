"""The one derive-and-commit loop: the buffer's single writer.

Sample batches from every device arrive on one bounded queue. The loop gathers
what arrived together, derives events per asset, and commits the events with
the new asset states in one transaction. What arrives while a commit is on its
way to the disk waits in the queue and goes into the next one (group commit), so
a lone sample commits at once and a flood commits in large batches. Only after the commit
succeeds does the in-memory state move on: if the disk refuses, nothing was
half-done, and the same samples are derived and committed again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from buffer import Outbox, downtimes
from buffer.history import HistoryMark

from .derive import (
    AssetSpec,
    AssetState,
    DeriveContext,
    DeviceSpec,
    DeviceState,
    apply_device_loss,
    apply_device_offline,
    apply_device_online,
    apply_device_samples,
    apply_device_tick,
    apply_samples,
    apply_stop,
    apply_tick,
)
from .derive.classify import KnownDowntime, apply_classification
from .derive.counters import new_held_back
from .derive.state import DEVICE_KEY
from .errors import BufferError, BufferFull
from .events import Event, Lane
from .shared import Classification, ClassificationRefused, QueueItem, Sample, backoff_delay
from .shift.ends import shift_ends
from .statewrites import RowMembers, StateWrites, state_writes

SHIFT_CHECK_INTERVAL = 5.0  # seconds between looks for a shift that has ended

log = logging.getLogger("floorlink.pipeline")

TICK_INTERVAL = 0.2
MAX_BATCHES_PER_COMMIT = 200


@dataclass(frozen=True)
class _Derived:
    """What one derivation produced, to be committed together or not at all."""

    states: dict[str, AssetState]
    device_states: dict[str, DeviceState]
    events: list[Event]
    # Each operator input of the derivation, with the ids of its events or why not.
    answers: tuple[tuple[Classification, str | ClassificationRefused], ...] = ()


class Pipeline:
    def __init__(self, specs: list[AssetSpec], saved: dict[str, str], outbox: Outbox,
                 ctx: DeriveContext, queue: asyncio.Queue[QueueItem],
                 commit_interval: float = 0.0,
                 on_event: Callable[[Event], None] | None = None,
                 clock: Callable[[], float] = time.time,
                 device_specs: list[DeviceSpec] | None = None) -> None:
        self.specs = specs
        self.device_specs = device_specs or []
        self.states = {spec.id: AssetState.from_json(saved[spec.id]) if spec.id in saved
                       else AssetState() for spec in specs}
        self.device_states = {
            spec.id: DeviceState.from_json(saved[DEVICE_KEY + spec.id])
            if DEVICE_KEY + spec.id in saved else DeviceState() for spec in self.device_specs}
        self._committed_json = {asset: st.document_json()
                                for asset, st in self.states.items()}
        self._committed_json.update({DEVICE_KEY + d: st.document_json()
                                     for d, st in self.device_states.items()})
        self._row_members: RowMembers = {}  # statewrites.py
        self.outbox = outbox
        self.ctx = ctx
        self.queue = queue
        self.commit_interval = commit_interval
        self.on_event = on_event
        self.clock = clock
        self.commits = 0
        self.events_committed = 0
        self.last_error: str | None = None
        self.events_by_type: dict[str, int] = {}
        self._lost: dict[str, float] = {}  # device -> its last sample, until derived
        # When the loop last went round (monotonic): the systemd watchdog is fed only
        # while this stays fresh, so a wedged derivation gets the service restarted.
        self.heartbeat = time.monotonic()
        self._routes: dict[str, list[AssetSpec]] = {}
        for spec in specs:
            for ref in {*spec.roles, *spec.telemetry}:
                self._routes.setdefault(ref, []).append(spec)
        # Only devices with telemetry of their own see their samples: the others would cost
        # a lookup per sample for nothing. Status needs only the device's first sample.
        self._device_routes = {spec.id: spec for spec in self.device_specs if spec.telemetry}
        self._device_specs_by_id = {spec.id: spec for spec in self.device_specs}
        self._timed_devices = [spec for spec in self.device_specs if spec.timed_telemetry]
        self._specs_by_id = {spec.id: spec for spec in specs}

    async def run(self) -> None:
        next_shift_check = 0.0
        while True:
            self.heartbeat = time.monotonic()
            batches = await self._gather()
            await self.step(batches)
            if time.monotonic() >= next_shift_check:
                next_shift_check = time.monotonic() + SHIFT_CHECK_INTERVAL
                await self.end_shifts()

    async def end_shifts(self) -> list[Event]:
        """Report every shift that has ended (shift.completed), with the note of it."""
        changed, events = await shift_ends(self.outbox, self.specs, self.states,
                                           self.clock(), self.ctx)
        if not changed:
            return []
        states = {**self.states, **changed}
        return await self._commit(_Derived(states, dict(self.device_states), events))

    async def _gather(self) -> list[QueueItem]:
        # asyncio.timeout, never wait_for: on Python 3.11, wait_for swallows a cancellation
        # that lands just as the queue hands over a batch, and the writer then carries on
        # while the stop waits for it - for ever (seen in 5 of 10 stops at 30,000
        # samples/s).
        try:
            async with asyncio.timeout(TICK_INTERVAL):
                first = await self.queue.get()
        except TimeoutError:
            return []
        batches = [first]
        if self.commit_interval:  # gather on purpose: fewer fsyncs, more latency
            await asyncio.sleep(self.commit_interval)
        while len(batches) < MAX_BATCHES_PER_COMMIT and not self.queue.empty():
            batches.append(self.queue.get_nowait())
        return batches

    async def step(self, batches: list[QueueItem]) -> list[Event]:
        """Derive from `batches` (and the passing of time), then commit atomically.

        When the disk has no room for all of it, the batches are derived and committed
        again in halves, down to one read at a time: after a stall the queue holds many
        reads, and one transaction of them all may need more space than the disk will
        ever have, while each read alone fits."""
        derived = self._derive(batches, await self._known_downtimes(batches))
        if len(batches) > 1:
            try:
                return await self._commit(derived, retry=False)
            except BufferFull:
                half = len(batches) // 2
                return await self.step(batches[:half]) + await self.step(batches[half:])
        return await self._commit(derived)

    def device_lost(self, device: str, last_sample_at: float) -> None:
        """A device stopped delivering (drivers/runner.py says so): applied with the next
        derivation, in the single writer, so the shift history records no data."""
        self._lost[device] = last_sample_at

    async def _known_downtimes(self, items: list[QueueItem]) -> dict[str, KnownDowntime]:
        """The recorded stops that operator inputs name (an open stop is in the state)."""
        known: dict[str, KnownDowntime] = {}
        for item in items:
            if not isinstance(item, Classification) or item.downtime_id in known:
                continue
            row = await downtimes.downtime(self.outbox, item.asset, item.downtime_id)
            if row is None:
                continue
            known[row.id] = KnownDowntime.stored(row.id, row.asset, row.start, row.end,
                                                 row.work_order, row.detail)
        return known

    def _derive(self, batches: list[QueueItem],
                known: dict[str, KnownDowntime] | None = None) -> _Derived:
        now = self.clock()
        states = dict(self.states)
        device_states = dict(self.device_states)
        events: list[Event] = []
        known = dict(known or {})  # a derivation that does not commit leaves no trace
        answers: list[tuple[Classification, str | ClassificationRefused]] = []
        lost, self._lost = self._lost, {}
        for spec in self.specs:
            state_ref = spec.counter_tag("state")
            device = state_ref.split(".", 1)[0] if state_ref else None
            if device in lost:
                states[spec.id] = apply_device_loss(spec, states[spec.id], lost[device])
        for device, last_sample_at in lost.items():
            if device in device_states:
                device_states[device], produced = apply_device_offline(
                    self._device_specs_by_id[device], device_states[device], last_sample_at,
                    now, self.ctx)
                events.extend(produced)
        offline = {d for d, st in device_states.items() if st.offline_since is not None}
        for batch in batches:
            if isinstance(batch, Classification):
                answers.append(self._classify(batch, states, known, events, now))
                continue
            if offline:
                self._back_online(batch, offline, device_states, events)
            per_asset: dict[str, list[Sample]] = {}
            per_device: dict[str, list[Sample]] = {}
            for sample in batch:
                for spec in self._routes.get(f"{sample.device}.{sample.tag}", ()):
                    per_asset.setdefault(spec.id, []).append(sample)
                if sample.device in self._device_routes:
                    per_device.setdefault(sample.device, []).append(sample)
            for spec in self.specs:
                if spec.id in per_asset:
                    states[spec.id], produced = apply_samples(
                        spec, states[spec.id], per_asset[spec.id], now, self.ctx)
                    events.extend(produced)
            for device, samples in per_device.items():
                device_spec = self._device_routes[device]
                device_states[device], produced = apply_device_samples(
                    device_spec, device_states[device], samples, now, self.ctx)
                events.extend(produced)
        for spec in self.specs:
            states[spec.id], produced = apply_tick(spec, states[spec.id], now, self.ctx)
            events.extend(produced)
        for device_spec in self._timed_devices:
            device_states[device_spec.id], produced = apply_device_tick(
                device_spec, device_states[device_spec.id], now, self.ctx)
            events.extend(produced)
        return _Derived(states, device_states, events, tuple(answers))

    def _back_online(self, batch: list[Sample], offline: set[str],
                     device_states: dict[str, DeviceState], events: list[Event]) -> None:
        """A device's first values after an outage: its status before its telemetry."""
        firsts: dict[str, Sample] = {}
        for sample in batch:
            if sample.device in offline and (
                    sample.device not in firsts
                    or sample.source_time < firsts[sample.device].source_time):
                firsts[sample.device] = sample
        for device, first in firsts.items():
            device_states[device], produced = apply_device_online(
                self._device_specs_by_id[device], device_states[device], first, self.ctx)
            events.extend(produced)
            offline.discard(device)

    def _classify(self, choice: Classification, states: dict[str, AssetState],
                  known: dict[str, KnownDowntime], events: list[Event], now: float
                  ) -> tuple[Classification, str | ClassificationRefused]:
        """An operator's reason, derived in turn with the samples around it."""
        spec = self._specs_by_id.get(choice.asset)
        if spec is None:
            return choice, ClassificationRefused(f"There is no asset {choice.asset!r} here.")
        try:
            states[spec.id], produced, after = apply_classification(
                spec, states[spec.id], known.get(choice.downtime_id), choice, now, self.ctx)
        except ClassificationRefused as refused:
            return choice, refused
        if after is not None:
            known[after.id] = after
        events.extend(produced)
        return choice, " ".join(event.id for event in produced)

    async def stop(self) -> list[Event]:
        """On a clean stop: confirm what was produced, so the ERP is current."""
        now = self.clock()
        states = dict(self.states)
        events: list[Event] = []
        for spec in self.specs:
            states[spec.id], produced = apply_stop(spec, states[spec.id], now, self.ctx)
            events.extend(produced)
        return await self._commit(_Derived(states, dict(self.device_states), events))

    async def _commit(self, derived: _Derived, retry: bool = True) -> list[Event]:
        """Commit until it lands (or, without `retry`, raise BufferFull when the disk has
        no room); the events committed. When not even one read fits, and retention freed
        nothing in time, its business events and state go in without its telemetry, which
        is counted as dropped: business events keep flowing while the disk is merely
        tight."""
        states, device_states = derived.states, derived.device_states
        writes = state_writes(states, device_states, self.states, self.device_states,
                              self._committed_json, self._row_members)
        events = derived.events

        def adopt() -> None:
            self.states, self.device_states = states, device_states
            self._committed_json.update(writes.documents)
            counts = self.events_by_type
            for event in events:
                counts[event.type] = counts.get(event.type, 0) + 1
                if self.on_event:
                    self.on_event(event)
            for choice, answer in derived.answers:
                _answer(choice, answer)

        if not (events or writes):
            adopt()
            return events
        alarms = self._held_back_alarms(states, events)
        marks = self._history_marks(states)
        attempt, shed = 0, 0
        while True:
            try:
                await self._commit_once(events, writes, adopt, shed, alarms, marks)
                if self.last_error:
                    log.info("buffer writable again; committed %d waiting events", len(events))
                    self.last_error = None
                self.commits += 1
                self.events_committed += len(events)
                return events
            except BufferFull as exc:
                self._failed(exc)
                if not retry:
                    raise
                telemetry = sum(1 for e in events if e.lane == Lane.TELEMETRY)
                # The first refusal has retention drop the oldest telemetry (the writer
                # waits one backoff for it); if that did not make room, this read's own
                # telemetry goes, rather than holding back the drivers and their edges.
                if telemetry and attempt > 0:
                    log.warning("no room in the buffer even for one read: committing its "
                                "business events and state without its %d telemetry "
                                "event(s), counted as dropped", telemetry)
                    events = [e for e in events if e.lane != Lane.TELEMETRY]
                    shed += telemetry
                    continue
            except BufferError as exc:
                self._failed(exc)
            await asyncio.sleep(backoff_delay(attempt, cap=10.0))
            self.heartbeat = time.monotonic()  # waiting for the disk is not a hang
            attempt += 1

    def _history_marks(self, states: dict[str, AssetState]) -> list[HistoryMark]:
        """No data, and data again, for the shift history: in the commit that records it."""
        marks = []
        for asset, state in states.items():
            before = self.states.get(asset)
            if before is None or state is before:
                continue
            if state.no_data_since is not None and before.no_data_since is None:
                marks.append(HistoryMark(asset, state.no_data_since, "no_data"))
            if state.data_resumed_at is not None and (
                    state.data_resumed_at != before.data_resumed_at):
                marks.append(HistoryMark(asset, state.data_resumed_at, state.machine_state))
        return marks

    def _held_back_alarms(self, states: dict[str, AssetState],
                          events: list[Event]) -> list[tuple[str, str, str]]:
        """A counter reading no machine could make: an alarm that stays until someone
        looks at the PLC, raised with the commit that held the reading back."""
        alarms = []
        for asset, state in states.items():
            before = self.states.get(asset)
            if before is None or state is before:
                continue
            confirmed = [e.data for e in events if e.subject == asset
                         and e.type == "production.confirmed"]
            for held in new_held_back(before, state, confirmed):
                log.error("asset %s: counter %s (device %s) read %r at %s, which no machine "
                          "makes: held back, not booked", asset, held["tag"], held["device"],
                          held["value"], held["at"])
                alarms.append((
                    f"counter.held_back.{asset}", "warning",
                    f"counter {held['tag']} of asset {asset} (device {held['device']}) read "
                    f"{held['value']!r} at {held['at']}: more than the machine can make, or "
                    "no count at all. It was held back, not booked as production, and the "
                    "counter counts on from its next reading. Check the PLC's counter and the "
                    "tag's address and type; acknowledge with `floorlink buffer alarms "
                    f"--clear counter.held_back.{asset}`"))
        return alarms

    def _failed(self, exc: BufferError) -> None:
        if self.last_error != str(exc):
            log.error("cannot commit to the buffer: %s", exc)
        self.last_error = str(exc)

    async def _commit_once(self, events: list[Event], writes: StateWrites,
                           adopt: Callable[[], None], shed: int = 0,
                           alarms: list[tuple[str, str, str]] | None = None,
                           marks: list[HistoryMark] | None = None) -> None:
        """One commit that a cancellation cannot abandon half-way.

        If the agent stops while a commit is on the connection's thread, the commit may
        land after all. The memory must then move on with it: otherwise the final
        confirmation would confirm the same parts a second time. So a cancellation
        waits for the outcome, adopts a landed commit, and only then propagates.
        """
        attempt = asyncio.ensure_future(self.outbox.commit(
            events, writes.documents, shed, alarms or (), marks or (), writes.memories))
        try:
            await asyncio.shield(attempt)
        except asyncio.CancelledError:
            if not attempt.done():
                await asyncio.wait([attempt])
            if attempt.done() and not attempt.cancelled() and attempt.exception() is None:
                adopt()
            raise
        adopt()


def _answer(choice: Classification, answer: str | ClassificationRefused) -> None:
    """Tell the line page what became of its input (it may have stopped waiting)."""
    outcome = choice.outcome
    if outcome is None or outcome.done():
        return
    if isinstance(answer, ClassificationRefused):
        outcome.set_exception(answer)
    else:
        outcome.set_result(answer)
