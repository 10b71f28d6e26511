"""Telling a client-id clash from a flaky network.

A broker keeps one session per client id: when a second client connects with the same
id, the broker drops the first, which reconnects and drops the second, and so on (two
agents with one `agent.id` knocked each other off every 1.5 s, and the log gave no hint
why). MQTT 5 names it: the DISCONNECT carries "Session taken over". MQTT 3.1.1 just
closes the socket, so the sign is the pattern: connections that the broker accepts and
then drops within seconds, again and again, with no refusal in between.
"""

from __future__ import annotations

from collections import deque

SHORT_SECONDS = 10.0  # a session dropped sooner than this after its CONNACK is suspect
WINDOW_SECONDS = 60.0
SHORT_SESSIONS = 3  # ... and this many of them within the window make a clash


class TakeoverWatch:
    def __init__(self) -> None:
        self._short: deque[float] = deque()
        self.reported = False  # said once per clash, again only after a stable session

    def clash(self, reason: str, lasted: float, now: float) -> bool:
        """After a disconnect: `lasted` is how long the session had been up."""
        if "taken over" in reason.lower():
            return True
        if lasted >= SHORT_SECONDS:
            self.settled()
            return False
        self._short.append(now)
        while self._short and now - self._short[0] > WINDOW_SECONDS:
            self._short.popleft()
        return len(self._short) >= SHORT_SESSIONS

    def settled(self) -> None:
        """A session outlasted SHORT_SECONDS: whatever clashed has gone."""
        self._short.clear()
        self.reported = False

    @property
    def drops(self) -> int:
        return len(self._short)
