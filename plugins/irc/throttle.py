"""Outgoing flood control: a token bucket over a bounded queue, with an injected clock.

Servers disconnect clients that send too fast ("Excess Flood"). RFC 1459 §8.10
("Flood control of clients") describes the classic server rule: each message
costs the client 2 seconds of a timer that may run at most 10 seconds ahead,
i.e. a burst of 5 lines, then one line every 2 seconds. Those are the defaults
here, so a pasted paragraph is never the reason a user is kicked; networks
known to be more lenient can be given a larger burst or a shorter rate.

Sans-I/O (STYLE.md G4): :meth:`Throttle.send` only queues; the caller takes
:meth:`Throttle.pop_ready` lines, and arms one delayed call for
:meth:`Throttle.next_deadline`, which is ``None`` when the queue is empty, so
an idle connection has no timer on our account. Tokens are refilled lazily from
the clock, not by a ticking timer (compare Biboumi's 1-second timer per
connection, forever: reference/biboumi.md §7.1).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

__all__ = ["QueueFull", "Throttle"]

# Float time: a deadline computed as t may come back as t - 1e-12 tokens short.
_EPSILON = 1e-9


class QueueFull(Exception):
    """The outgoing queue is at its bound: refuse the message (XMPP ``resource-constraint``)."""


class Throttle:
    """Token bucket: ``burst`` lines at once, then one line every ``rate`` seconds.

    :param clock: returns the current time in seconds (``reactor.seconds``).
    :param max_queue: lines waiting at most; :meth:`send` raises :class:`QueueFull`
        beyond it, except for ``priority`` lines, which are few (PONG, QUIT).
    """

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        burst: int = 5,
        rate: float = 2.0,
        max_queue: int = 1000,
    ) -> None:
        if burst < 1 or rate <= 0:
            raise ValueError("burst must be at least 1 and rate positive")
        self._clock = clock
        self._burst = burst
        self._rate = rate
        self._max_queue = max_queue
        self._tokens = float(burst)
        self._updated = clock()
        # Both queues exist only while lines wait: an empty deque holds a 64-slot block
        # (~760 bytes), and most of 1000 idle connections have nothing queued.
        self._queue: deque[str] | None = None
        # A lane of its own, not appendleft: several priority lines in a row (the
        # AUTHENTICATE chunks, CAP REQ then CAP END) must keep their order.
        self._priority: deque[str] | None = None

    def set_burst(self, burst: int) -> None:
        """A new bucket size (the user's ``throttle_limit``), applied from now on."""
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self._refill()
        self._burst = burst
        self._tokens = min(self._tokens, float(burst))

    def __len__(self) -> int:
        return (len(self._priority) if self._priority else 0) + (len(self._queue) if self._queue else 0)

    def send(self, line: str, *, priority: bool = False) -> None:
        """Queue ``line``; ``priority`` lines go before all others, in their own order.

        For what must not wait behind a paste: PONG, registration, QUIT.
        """
        if priority:
            if self._priority is None:
                self._priority = deque()
            self._priority.append(line)
            return
        if self._queue is None:
            self._queue = deque()
        if len(self._queue) >= self._max_queue:
            raise QueueFull(f"{len(self._queue)} IRC lines already waiting")
        self._queue.append(line)

    def pop_ready(self) -> list[str]:
        """The lines that may go now, in order, each paid with a token."""
        self._refill()
        ready: list[str] = []
        while (self._priority or self._queue) and self._tokens >= 1 - _EPSILON:
            self._tokens -= 1
            ready.append((self._priority or self._queue).popleft())  # type: ignore[union-attr]
        if not self._priority:
            self._priority = None
        if not self._queue:
            self._queue = None
        return ready

    def next_deadline(self) -> float | None:
        """When the next queued line may go (now if it may go now); ``None`` if nothing waits."""
        if not len(self):
            return None
        now = self._refill()
        if self._tokens >= 1 - _EPSILON:
            return now
        return now + (1 - self._tokens) * self._rate

    def clear(self) -> None:
        """Drop everything queued (the connection is gone)."""
        self._priority = self._queue = None

    def _refill(self) -> float:
        now = self._clock()
        # max(0, …): a clock stepped backwards must not take tokens away.
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(float(self._burst), self._tokens + elapsed / self._rate)
        self._updated = now
        return now
