"""Outgoing flood control: token bucket timing, priority, bounds, and no deadline when idle."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from plugins.irc.throttle import QueueFull, Throttle


def test_burst_then_one_line_per_rate():
    """The first `burst` lines go at once, then one per `rate` seconds."""
    clock = Clock()
    throttle = Throttle(clock.seconds, burst=3, rate=2.0)
    for n in range(6):
        throttle.send(f"L{n}")
    assert throttle.pop_ready() == ["L0", "L1", "L2"]
    assert throttle.next_deadline() == pytest.approx(2.0)
    clock.advance(1.9)
    assert throttle.pop_ready() == []
    clock.advance(0.1)
    assert throttle.pop_ready() == ["L3"]
    assert throttle.next_deadline() == pytest.approx(4.0)
    clock.advance(10)
    assert throttle.pop_ready() == ["L4", "L5"]


def test_no_deadline_when_queue_is_empty():
    """An empty queue has no deadline, so the caller arms no timer."""
    clock = Clock()
    throttle = Throttle(clock.seconds)
    assert throttle.next_deadline() is None
    throttle.send("x")
    assert throttle.next_deadline() == 0.0
    throttle.pop_ready()
    assert throttle.next_deadline() is None


def test_tokens_refill_up_to_burst_only():
    """A long idle period refills at most `burst` tokens."""
    clock = Clock()
    throttle = Throttle(clock.seconds, burst=2, rate=1.0)
    clock.advance(1000)
    for n in range(4):
        throttle.send(f"L{n}")
    assert throttle.pop_ready() == ["L0", "L1"]


def test_priority_line_goes_first():
    """Priority lines (PONG, registration) go ahead of queued lines, first come first served."""
    clock = Clock()
    throttle = Throttle(clock.seconds, burst=1, rate=1.0)
    throttle.send("a")
    throttle.send("b")
    throttle.pop_ready()
    throttle.send("PONG :x", priority=True)
    throttle.send("AUTHENTICATE PLAIN", priority=True)
    clock.advance(1)
    assert throttle.pop_ready() == ["PONG :x"]
    clock.advance(1)
    assert throttle.pop_ready() == ["AUTHENTICATE PLAIN"]  # priority lines keep their order
    clock.advance(1)
    assert throttle.pop_ready() == ["b"]


def test_queue_is_bounded():
    """Past max_queue, send raises QueueFull; priority lines still get in."""
    throttle = Throttle(Clock().seconds, max_queue=2)
    throttle.send("a")
    throttle.send("b")
    with pytest.raises(QueueFull):
        throttle.send("c")
    throttle.send("QUIT", priority=True)
    assert len(throttle) == 3


def test_clock_going_backwards_takes_no_tokens():
    """A clock stepped back does not drain the bucket."""
    clock = Clock()
    clock.advance(100)
    throttle = Throttle(clock.seconds, burst=2, rate=1.0)
    clock.rightNow = 50.0
    throttle.send("a")
    throttle.send("b")
    assert throttle.pop_ready() == ["a", "b"]


def test_invalid_parameters_are_refused():
    """A burst under 1 or a non-positive rate is refused."""
    with pytest.raises(ValueError):
        Throttle(Clock().seconds, burst=0)
    with pytest.raises(ValueError):
        Throttle(Clock().seconds, rate=0)


def test_queues_are_released_when_empty_and_work_again():
    """An idle throttle holds no queue; lines queued after a drain (or a clear) keep their order."""
    clock = Clock()
    throttle = Throttle(clock.seconds, burst=1, rate=1.0)
    assert (throttle._queue, throttle._priority) == (None, None)
    throttle.send("a")
    throttle.send("p", priority=True)
    assert throttle.pop_ready() == ["p"]
    assert throttle._priority is None and len(throttle) == 1
    clock.advance(1)
    assert throttle.pop_ready() == ["a"]
    assert (throttle._queue, throttle._priority) == (None, None)
    assert throttle.next_deadline() is None
    throttle.send("b")
    throttle.send("c")
    throttle.clear()
    assert len(throttle) == 0 and throttle.pop_ready() == []
    throttle.send("d")
    clock.advance(1)
    assert throttle.pop_ready() == ["d"]
