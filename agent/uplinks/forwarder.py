"""One forwarder per uplink: reads the buffer past its own cursor, by lane priority,
keeps a bounded window of events in flight, and moves the cursor only over
events the uplink acknowledged (or that were dead-lettered with their reason).

Holds go before other business events, which go before telemetry. Within a lane
events are submitted in commit order, so each asset's order is kept. A pacer
caps the rate (holds excepted), so replay after an outage does not flood the
upstream. Dead letters queued for replay by an operator go out between holds
and the rest, outside the cursor: they were already passed once.
"""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence

from buffer import LANES, Outbox, StoredEvent

from ..errors import BufferError, UplinkRejected, UplinkUnavailable
from ..events import short_type
from ..redact import scrub
from ..shared import backoff_delay
from .base import Uplink
from .pacing import Pacer

log = logging.getLogger("floorlink.forwarder")

FETCH_SIZE = 500
CURSOR_FLUSH_INTERVAL = 0.2


class Forwarder:
    def __init__(self, uplink: Uplink, outbox: Outbox, window: int, rate: float = 0,
                 events: Sequence[str] = ("*",),
                 on_latency: Callable[[float], None] | None = None) -> None:
        self.uplink = uplink
        self.on_latency = on_latency  # seconds from submission to acknowledgement
        self.outbox = outbox
        self.window = window
        self._patterns = tuple(events)
        self._accepted: dict[str, bool] = {}
        self.pacer = Pacer(rate, burst=window)
        self._replays_wanted = True
        self._replaying: set[str] = set()
        self._kick = asyncio.Event()
        self._new_data = True
        self._read_to: dict[int, int] = {}
        self._acked_to: dict[int, int] = {}
        self._flushed: dict[int, int] = {}
        self._queued: dict[int, deque[StoredEvent]] = {lane: deque() for lane in LANES}
        self._exhausted: dict[int, bool] = dict.fromkeys(LANES, False)
        self._in_flight: dict[int, OrderedDict[int, bool]] = {lane: OrderedDict() for lane in LANES}

    @property
    def in_flight(self) -> int:
        return sum(len(lane) for lane in self._in_flight.values())

    @property
    def handed(self) -> dict[int, int]:
        """Per lane, the last position read from the buffer. An event up to there that is
        not acknowledged yet is in memory (fetched and queued here, in paho's queue, in a
        retry) and is delivered even if retention deletes its row: it is not lost."""
        return {lane: max(self._read_to.get(lane, 0),
                          queue[-1].position if queue else 0)
                for lane, queue in self._queued.items()}

    async def run(self) -> None:
        cursors = await self.outbox.cursors(self.uplink.id)
        self._read_to, self._acked_to, self._flushed = dict(cursors), dict(cursors), dict(cursors)
        self.outbox.listen(self._on_commit)
        try:
            await self._forward()
        finally:
            self.outbox.unlisten(self._on_commit)  # a reload may start a new forwarder

    async def _forward(self) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as group:
            group.create_task(self._flush_cursors_forever())
            while True:
                self._kick.clear()
                while self.in_flight < self.window:
                    try:
                        picked = await self._next_event()
                    except BufferError as exc:
                        # The buffer hiccuped (locked, disk trouble): the rows are still
                        # there, so wait and read again rather than take the agent down.
                        self._buffer_trouble(exc)
                        await asyncio.sleep(1.0)
                        self._kick.set()
                        break
                    if picked is None:
                        break
                    event, is_replay = picked
                    if not is_replay and not self._accepts(event.type):
                        # Not for this uplink: passed over at once, the cursor moves on.
                        self.uplink.health.skipped += 1
                        self._in_flight[event.lane][event.position] = False
                        self._read_to[event.lane] = event.position
                        self._mark_done(event)
                        continue
                    if event.lane == 0:
                        self.pacer.spend()
                    elif self.pacer.rate:
                        await self.pacer.take()
                    if is_replay:
                        group.create_task(self._deliver_replay(event))
                        continue
                    self._in_flight[event.lane][event.position] = False
                    self._read_to[event.lane] = event.position
                    ack = self.uplink.submit(event)
                    ack.add_done_callback(functools.partial(self._on_settled, group, event,
                                                            loop.time()))
                await self._kick.wait()

    async def flush(self) -> None:
        """Persist the cursor now (called on shutdown)."""
        if self._acked_to != self._flushed:
            snapshot = dict(self._acked_to)
            await self.outbox.advance(self.uplink.id, snapshot)
            self._flushed = snapshot

    def _accepts(self, event_type: str) -> bool:
        accepted = self._accepted.get(event_type)
        if accepted is None:
            short = short_type(event_type)
            accepted = any(fnmatch.fnmatchcase(short, p) for p in self._patterns)
            self._accepted[event_type] = accepted
        return accepted

    def _on_commit(self) -> None:
        self._new_data = True
        self._replays_wanted = True
        self._kick.set()

    async def _next_event(self) -> tuple[StoredEvent, bool] | None:
        """The next event to send, and whether it is an operator's replay."""
        if self._new_data:
            self._new_data = False
            self._exhausted = dict.fromkeys(LANES, False)
        for lane in LANES:  # priority order: hold, (replays), business, telemetry
            if lane == 1 and self._replays_wanted:
                replay = await self._next_replay()
                if replay is not None:
                    return replay, True
            queue = self._queued[lane]
            if not queue and not self._exhausted[lane]:
                fetched = await self.outbox.fetch(lane, self._read_to[lane], FETCH_SIZE)
                queue.extend(e for e in fetched if e.position > self._read_to[lane])
                self._exhausted[lane] = len(fetched) < FETCH_SIZE
            if queue:
                return queue.popleft(), False
        return None

    async def _next_replay(self) -> StoredEvent | None:
        queued = await self.outbox.queued_replays(self.uplink.id, self.window)
        for event in queued:
            if event.id not in self._replaying:
                self._replaying.add(event.id)
                return event
        self._replays_wanted = False
        return None

    def _on_settled(self, group: asyncio.TaskGroup, event: StoredEvent, submitted: float,
                    ack: asyncio.Future[None]) -> None:
        """The common case, an acknowledgement, is handled right here: no task per event.
        Refusals and transient failures take the slow path in a task of their own."""
        if not ack.cancelled() and ack.exception() is None:
            if self.on_latency is not None:
                self.on_latency(ack.get_loop().time() - submitted)
            self.uplink.health.delivered += 1
            self.uplink.health.last_delivered_at = time.time()
            self._mark_done(event)
        else:
            group.create_task(self._deliver(event, ack))

    async def _deliver(self, event: StoredEvent, ack: asyncio.Future[None]) -> None:
        await self._until_settled(event, ack)
        self._mark_done(event)

    async def _deliver_replay(self, event: StoredEvent) -> None:
        try:
            if await self._until_settled(event, self.uplink.submit(event)):
                log.info("uplink %s accepted replayed event %s", self.uplink.id, event.id,
                         extra={"event_id": event.id, "uplink": self.uplink.id})
                await self._until_written(functools.partial(
                    self.outbox.replay_delivered, self.uplink.id, event.id))
        finally:
            self._replaying.discard(event.id)
            self._replays_wanted = True
            self._kick.set()

    async def _until_settled(self, event: StoredEvent, ack: asyncio.Future[None]) -> bool:
        """Wait out transient failures; True if delivered, False if dead-lettered."""
        attempts = 1
        transient: str | None = None
        while True:
            try:
                await ack
                self.uplink.health.delivered += 1
                self.uplink.health.last_delivered_at = time.time()
                if transient is not None and self.uplink.health.last_error == transient:
                    self.uplink.health.last_error = None  # delivered: that trouble is over
                return True
            except UplinkRejected as exc:
                # The dead letter keeps the whole reason; the log gets it on one line.
                log.error("uplink %s rejected event %s (%s): %s; kept as a dead letter",
                          self.uplink.id, event.id, event.type, " ".join(str(exc).split()),
                          extra={"event_id": event.id, "uplink": self.uplink.id})
                # An upstream may echo a credential back: keep it out of the buffer too.
                answer = scrub(exc.answer) if exc.answer is not None else None
                await self._until_written(functools.partial(
                    self.outbox.dead_letter, self.uplink.id, event, scrub(str(exc)), answer,
                    attempts))
                self.uplink.health.dead_lettered += 1
                return False
            except UplinkUnavailable as exc:
                self.uplink.health.last_error = transient = str(exc)
                await asyncio.sleep(backoff_delay(attempts - 1))
                attempts += 1
                ack = self.uplink.submit(event)

    def _mark_done(self, event: StoredEvent) -> None:
        lane = self._in_flight[event.lane]
        lane[event.position] = True
        # The cursor moves only over a contiguous run of finished events.
        while lane and lane[next(iter(lane))]:
            position, _ = lane.popitem(last=False)
            self._acked_to[event.lane] = position
        self._kick.set()

    async def _flush_cursors_forever(self) -> None:
        while True:
            await asyncio.sleep(CURSOR_FLUSH_INTERVAL)
            try:
                await self.flush()
            except BufferError as exc:
                self._buffer_trouble(exc)  # a later flush writes the newer position anyway

    async def _until_written(self, write: Callable[[], Awaitable[None]]) -> None:
        attempt = 0
        while True:
            try:
                await write()
                return
            except BufferError as exc:
                self._buffer_trouble(exc)
                await asyncio.sleep(backoff_delay(attempt, cap=10.0))
                attempt += 1

    def _buffer_trouble(self, exc: BufferError) -> None:
        if self.uplink.health.last_error != str(exc):
            log.error("uplink %s: %s", self.uplink.id, exc)
        self.uplink.health.last_error = str(exc)
