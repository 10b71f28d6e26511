"""HTTPS uplink: CloudEvents POSTed to middleware or a webhook, one request at a time.

Events are sent in submission order, singly (`application/cloudevents+json`) or in
batches (`application/cloudevents-batch+json`) of up to `batch.max_events` events
or `batch.max_bytes`. Every request carries `Idempotency-Key` (the event id, or a
hash of the batch's ids) and, with a signing secret, Standard Webhooks headers.

The answer decides:

* 2xx: delivered.
* 408, 429, 5xx, timeouts and network errors: the same request again, with
  exponential backoff and jitter (tenacity), or after `Retry-After` if given.
* any other status: refused. A single event becomes a dead letter with the status
  and an excerpt of the body; a batch is split in halves and each half sent again,
  so the bad events are isolated and the good ones still arrive.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_never,
    wait_exponential,
    wait_random,
)

from buffer import StoredEvent

from .. import __version__
from ..errors import UplinkRejected
from ..settings.base import TlsSettings
from ..settings.models import Config, HttpsUplink
from . import certificates, signing
from .base import UplinkHealth
from .tls import client_context, explain, ssl_cause

log = logging.getLogger("floorlink.https")

SINGLE = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
EXCERPT = 300
RETRY_AFTER_CAP = 600.0
TRANSIENT_STATUS = frozenset({408, 429})


class Transient(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class Refusal:
    status: int
    excerpt: str


class HttpsPoster:
    def __init__(self, settings: HttpsUplink, config: Config) -> None:
        self.id = settings.id
        self.settings = settings
        self.health = UplinkHealth(settings.id, "https", settings.url)
        self._agent = config.agent.id
        self._pending: deque[tuple[StoredEvent, asyncio.Future[None]]] = deque()
        self._wakeup = asyncio.Event()
        self._client: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._key = (signing.secret_key(settings.signing_secret.get_secret_value())
                     if settings.signing_secret else None)
        self._certificates = [status for which, path in
                              (settings.tls.files().items() if settings.tls else ())
                              for status in certificates.from_file(path, settings.id, which)]
        self._server_checked_at = 0.0
        self._down_logged = False
        # Doubling from backoff.initial, plus up to one initial of jitter so that
        # several agents do not retry in lockstep after the middleware comes back.
        self._backoff = (wait_exponential(multiplier=settings.backoff.initial,
                                          max=settings.backoff.max)
                         + wait_random(0, settings.backoff.initial))

    async def start(self) -> None:
        settings = self.settings
        verify: Any = True
        if settings.tls is not None:
            verify = client_context(settings.tls)
            if settings.tls.insecure:
                log.warning("uplink %s: TLS certificate verification is OFF (tls.insecure)",
                            self.id)
        if settings.url.startswith("http://"):
            log.warning("uplink %s posts to %s without TLS; use https:// outside a lab",
                        self.id, settings.url)
        auth: httpx.Auth | None = None
        headers = {"User-Agent": f"floorlink/{__version__}"}
        if settings.auth is not None and settings.auth.type == "basic":
            auth = httpx.BasicAuth(settings.auth.username,
                                   settings.auth.password.get_secret_value())
        elif settings.auth is not None:
            headers["Authorization"] = f"Bearer {settings.auth.token.get_secret_value()}"
        self._client = httpx.AsyncClient(
            verify=verify, auth=auth, headers=headers, follow_redirects=False,
            timeout=httpx.Timeout(settings.timeouts.read, connect=settings.timeouts.connect))
        certificates.warn_if_expiring(self._certificates)
        self.health.certificates = [c.view() for c in self._certificates]
        self._task = asyncio.get_running_loop().create_task(self._send_forever(),
                                                            name=f"https {self.id}")

    def submit(self, event: StoredEvent) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((event, future))
        self._wakeup.set()
        return future

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    # ------------------------------------------------------------ sending

    async def _send_forever(self) -> None:
        batch_size, linger = self.settings.batch.max_events, self.settings.batch.linger
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                if batch_size > 1 and len(self._pending) < batch_size and linger:
                    await asyncio.sleep(linger)  # let the batch fill
                batch = self._take_batch()
                await self._deliver(batch)

    def _take_batch(self) -> list[tuple[StoredEvent, asyncio.Future[None]]]:
        limit, budget = self.settings.batch.max_events, int(self.settings.batch.max_bytes)
        batch: list[tuple[StoredEvent, asyncio.Future[None]]] = []
        size = 2
        while self._pending and len(batch) < limit:
            event = self._pending[0][0]
            if batch and size + len(event.body) + 1 > budget:
                break
            size += len(event.body) + 1
            batch.append(self._pending.popleft())
        return batch

    async def _deliver(self, batch: list[tuple[StoredEvent, asyncio.Future[None]]]) -> None:
        refusal = await self._post_until_answered([event for event, _ in batch])
        if refusal is None:
            for _, future in batch:
                if not future.done():
                    future.set_result(None)
        elif len(batch) == 1:
            future = batch[0][1]
            if not future.done():
                future.set_exception(UplinkRejected(
                    f"{self.settings.url} refused the event with HTTP {refusal.status}",
                    answer=f"HTTP {refusal.status}: {refusal.excerpt}"))
        else:
            # Isolate the bad events: each half on its own, until single events remain.
            middle = len(batch) // 2
            log.info("uplink %s: batch of %d refused (HTTP %d); sending it in halves",
                     self.id, len(batch), refusal.status)
            await self._deliver(batch[:middle])
            await self._deliver(batch[middle:])

    async def _post_until_answered(self, events: list[StoredEvent]) -> Refusal | None:
        retrying = AsyncRetrying(retry=retry_if_exception_type(Transient), wait=self._wait,
                                 stop=stop_never, reraise=True, before_sleep=self._on_retry)
        async for attempt in retrying:
            with attempt:
                return await self._post(events)
        raise AssertionError("unreachable: tenacity retries forever")  # pragma: no cover

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, Transient) and error.retry_after is not None:
            return min(error.retry_after, RETRY_AFTER_CAP)
        return float(self._backoff(state))

    def _on_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        self.health.last_error = str(error)
        if self.health.connected or not self._down_logged:
            log.warning("uplink %s: %s; retrying (events stay buffered)", self.id, error)
            self._down_logged = True
        if self.health.connected:
            self.health.connected, self.health.since = False, time.time()
            self.health.disconnects += 1

    async def _post(self, events: list[StoredEvent]) -> Refusal | None:
        assert self._client is not None
        single = self.settings.batch.max_events == 1
        ids = [event.id for event in events]
        key = ids[0] if single else signing.batch_key(ids)
        body = (events[0].body if single else "[" + ",".join(e.body for e in events) + "]").encode()
        headers = {"Content-Type": SINGLE if single else BATCH, "Idempotency-Key": key}
        if self._key is not None:
            timestamp = int(time.time())
            headers |= {"webhook-id": key, "webhook-timestamp": str(timestamp),
                        "webhook-signature": signing.signature(self._key, key, timestamp, body)}
        try:
            response = await self._client.post(self.settings.url, content=body, headers=headers)
        except httpx.TransportError as exc:
            tls_error = ssl_cause(exc)
            if tls_error is not None:
                host = httpx.URL(self.settings.url).host
                raise Transient(f"{self.settings.url}: "
                                + explain(tls_error, host, self.settings.tls or TlsSettings())
                                ) from exc
            raise Transient(f"{self.settings.url} not reachable: "
                            f"{type(exc).__name__} {exc}".rstrip()) from exc
        status = response.status_code
        if 200 <= status < 300:
            self._on_success(response)
            return None
        excerpt = response.text[:EXCERPT].strip()
        if status in TRANSIENT_STATUS or status >= 500:
            raise Transient(f"{self.settings.url} answered HTTP {status}: {excerpt}",
                            retry_after(response.headers.get("Retry-After")))
        self._on_success(response)  # the server is there and answering; it refused these
        return Refusal(status, excerpt)

    def _on_success(self, response: httpx.Response) -> None:
        if not self.health.connected:
            if self._down_logged:
                log.info("uplink %s: %s answering again", self.id, self.settings.url)
            self.health.connected, self.health.since = True, time.time()
            self.health.last_error = None  # what kept it away is over
            self._down_logged = False
        if time.time() - self._server_checked_at > 3600:
            self._server_checked_at = time.time()
            self._record_server_certificate(response)

    def _record_server_certificate(self, response: httpx.Response) -> None:
        stream = response.extensions.get("network_stream")
        ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        server = certificates.from_der(der, self.id, self.settings.url) if der else None
        if server is not None:
            certificates.warn_if_expiring([server])
            self.health.certificates = [c.view() for c in [*self._certificates, server]]


def retry_after(value: str | None) -> float | None:
    """Retry-After is seconds or an HTTP date."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())
