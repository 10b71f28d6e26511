"""A paho client driven by the event loop instead of its own network thread.

With paho's thread (`loop_start`), every PUBACK was handled on that thread and handed
to the loop, and the two threads fought for the GIL: under a drain, paho's thread held
it 71% of the time. Here the loop watches paho's socket (`add_reader`/`add_writer`),
calls `loop_misc` once a second for keepalives, and paho's callbacks run on the loop.

Only connecting blocks (name lookup, TCP connect, TLS handshake, up to paho's connect
timeout), so each attempt runs in a worker thread; paho's callbacks from that thread
are handed to the loop. Reconnecting is ours: after a lost connection or a failed
attempt the link waits, doubling up to `max_delay`, and starts over once a broker
accepted the session (`accepted`) - paho's own policy. Each link starts its doubling from
its own random 0.5-1.5 s, so a fleet does not reconnect in lockstep after the broker
restarts.

With several servers (the nodes of a cluster), a lost connection or a failed attempt
moves to the next one, after a random pause under half a second; only a round in which
no server accepted the session waits the doubling delay. The link stays on the server
that accepted it until that one fails: the nodes serve the same namespace, and moving
back would cost every agent a second session move for nothing.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from ..settings.brokers import BrokerConnection

log = logging.getLogger("floorlink.mqtt")

# How often paho's keepalive bookkeeping runs; paho's own loop wakes once a second too.
MISC_INTERVAL = 1.0
# Moving to the next server waits a random pause up to this, so the agents of a plant,
# all dropped by one node at once, do not reach the next one in the same instant.
SWITCH_JITTER = 0.5


def new_client(settings: BrokerConnection, client_id: str, protocol: MQTTProtocolVersion,
               clean_session: bool | None, context: ssl.SSLContext | None) -> paho.Client:
    """A paho client for a loop-driven uplink: no limits of paho's own, TLS and the login
    from the settings. The caller sets its callbacks, will and first server."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol,
                         clean_session=clean_session)
    # No limit in paho: the forwarder's window keeps max_inflight. paho's own limit
    # scans every message it holds on each PUBACK.
    client.max_inflight_messages_set(0)
    # No queue limit either: paho must never refuse what the forwarder submits.
    client.max_queued_messages_set(0)
    if context is not None:
        client.tls_set_context(context)
    if settings.username:
        password = settings.password.get_secret_value() if settings.password else None
        client.username_pw_set(settings.username, password)
    return client


class LoopDrivenClient:
    def __init__(self, client: paho.Client, max_delay: float,
                 on_attempt_failed: Callable[[BaseException], None],
                 on_waiting: Callable[[float], None],
                 servers: int = 1, aim: Callable[[int], None] | None = None) -> None:
        """`client` must have had `connect_async` called; `on_attempt_failed` hears why
        an attempt to connect failed, `on_waiting` how long until the next one. `aim`,
        if given, is called with the index (0 to `servers` - 1) of the server to try
        before each attempt, and points the client there (with `connect_async`)."""
        self.client = client
        self._servers, self._aim = servers, aim
        self.server = 0  # the index of the server this attempt or connection is with
        self._untried = servers  # servers left to try in this round
        self._accepted_now = False
        self._min_delay, self._max_delay = random.uniform(0.5, 1.5), max_delay
        self._on_attempt_failed = on_attempt_failed
        self._on_waiting = on_waiting
        self._delay: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._task: asyncio.Task[None] | None = None
        self._misc: asyncio.TimerHandle | None = None
        self._watched: Any = None  # the socket the loop watches, if any
        self._closed = asyncio.Event()
        self._stopped = False
        client.on_socket_open = self._paho_socket_open
        client.on_socket_close = self._paho_socket_close
        client.on_socket_register_write = self._paho_register_write
        client.on_socket_unregister_write = self._paho_unregister_write

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._task = self._loop.create_task(self._run(), name="mqtt-link")
        self._misc = self._loop.call_later(MISC_INTERVAL, self._keepalive)

    def accepted(self) -> None:
        """A broker accepted the session: the next wait starts over from the shortest."""
        self._delay = None
        self._accepted_now = True

    async def disconnect(self, within: float) -> None:
        """Send DISCONNECT and wait, at most `within` seconds, until the socket is closed,
        as it is once paho has written it (a clean DISCONNECT: the broker drops the will)."""
        self.client.disconnect()
        if self._watched is None:
            return
        try:
            await asyncio.wait_for(self._closed.wait(), max(within, 0.0))
        except TimeoutError:
            log.debug("the MQTT connection did not close within %g s", within)

    async def stop(self) -> None:
        self._stopped = True
        if self._misc is not None:
            self._misc.cancel()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._unwatch()
        sock = self.client.socket()
        if sock is not None:
            sock.close()  # paho's own close would call back into a loop that stopped

    # ------------------------------------------------ connecting

    async def _run(self) -> None:
        while not self._stopped:
            self._closed.clear()
            self._accepted_now = False
            if self._aim is not None:
                self._aim(self.server)
            try:
                await asyncio.to_thread(self.client.reconnect)
            except (OSError, ValueError) as exc:  # ssl.SSLError and CertificateError too
                if self._stopped:
                    return
                self._on_attempt_failed(exc)
            else:
                await self._closed.wait()
            if self._stopped:
                return
            await asyncio.sleep(self._next_wait())

    def _next_wait(self) -> float:
        """Move on to the next server, and say how long to wait before trying it."""
        # A session that was accepted starts a new round: the server that dropped it
        # counts as tried. Otherwise this attempt used up one server of the round.
        self._untried = self._servers - 1 if self._accepted_now else self._untried - 1
        self.server = (self.server + 1) % self._servers
        if self._untried > 0:
            pause = random.uniform(0, SWITCH_JITTER)  # the next server, promptly
            self._on_waiting(pause)
            return pause
        self._untried = self._servers
        self._delay = (self._min_delay if self._delay is None
                       else min(self._delay * 2, self._max_delay))
        self._on_waiting(self._delay)
        return self._delay

    # ------------------------------------------------ the socket, watched by the loop

    def _on_loop(self, fn: Callable[..., None], *args: Any) -> None:
        """Run `fn` on the loop: now if called there, else handed over (a connect's thread)."""
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        elif self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn, *args)

    def _paho_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._watch, sock)

    def _paho_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        # On the loop: paho closes the socket from loop_read, loop_write or loop_misc (a
        # connect's thread closes one only if a failed attempt left it open).
        self._on_loop(self._socket_closed)

    def _socket_closed(self) -> None:
        self._unwatch()
        self._closed.set()

    def _paho_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._want_write, sock)

    def _paho_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._no_write, sock)

    def _watch(self, sock: Any) -> None:
        if self._loop is None or self._stopped or self.client.socket() is not sock:
            if self._stopped:
                sock.close()  # a connect that finished after stop()
            return
        self._watched = sock
        self._loop.add_reader(self._watched, self._readable)

    def _want_write(self, sock: Any) -> None:
        # No want_write() test here: paho registers once and then waits for its
        # unregistration, so a registration skipped here would stall its writes.
        if self._loop is not None and self._watched is sock:
            self._loop.add_writer(sock, self._writable)

    def _no_write(self, sock: Any) -> None:
        if self._loop is not None and self._watched is sock:
            self._loop.remove_writer(sock)

    def _unwatch(self) -> None:
        sock, self._watched = self._watched, None
        if sock is not None and self._loop is not None and not self._loop.is_closed():
            try:
                self._loop.remove_reader(sock)
                self._loop.remove_writer(sock)
            except ValueError:  # already closed: epoll forgot it with the descriptor
                pass

    def _readable(self) -> None:
        try:
            self.client.loop_read()
        except Exception:  # a bug in a callback must not end the uplink's reading
            log.exception("MQTT: handling what the broker sent failed")
        sock = self.client.socket()
        if isinstance(sock, ssl.SSLSocket) and sock.pending() and self._loop is not None:
            # Decrypted bytes wait in the TLS layer, where epoll does not see them.
            self._loop.call_soon(self._readable)

    def _writable(self) -> None:
        try:
            self.client.loop_write()
        except Exception:
            log.exception("MQTT: sending to the broker failed")

    def _keepalive(self) -> None:
        if self._stopped or self._loop is None:
            return
        try:
            self.client.loop_misc()
        except Exception:
            log.exception("MQTT: keepalive bookkeeping failed")
        self._misc = self._loop.call_later(MISC_INTERVAL, self._keepalive)
