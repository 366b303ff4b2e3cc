"""No SIP timer outlives a logout: a refresh still in flight when the unregistration starts
gets its answer late, and neither that answer nor the stack's close leaves a DelayedCall
(the autouse hygiene fixture's check, on the fake reactor)."""

from __future__ import annotations

import pytest
from twisted.internet.defer import ensureDeferred

from tests.unit.sip.plugin_harness import CHALLENGE, Harness
from tests.unit.sip.test_client import contact_of, registered

LATE_ANSWERS = {
    "challenge": (401, [("WWW-Authenticate", CHALLENGE)]),
    "interval-too-brief": (423, [("Min-Expires", "3600")]),
    "unavailable": (503, [("Retry-After", "20")]),
    "ok": (200, []),
}


def active_calls(harness: Harness) -> list:
    return [call for call in harness.reactor.getDelayedCalls() if call.active()]


def refresh_in_flight(harness: Harness):
    """A registered session whose refresh REGISTER is sent and not answered yet."""
    session = registered(harness, granted=100)
    harness.reactor.advance(50)
    refresh = harness.last()
    assert refresh.headers.get("Expires") != "0"
    return session, refresh


def late_answer(harness: Harness, refresh, kind: str) -> None:
    status, headers = LATE_ANSWERS[kind]
    if status == 200:
        headers = [("Contact", f"<{contact_of(refresh)}>;expires=100")]
    harness.reply(refresh, status, headers)


@pytest.mark.parametrize("kind", list(LATE_ANSWERS))
def test_a_refresh_answered_during_the_unregistration_sends_nothing_more(kind: str):
    """§10.2.8 / §22.2 retries are for a live registration: once logout began, a late 423 or 401
    to the refresh is not retried (that REGISTER would race the Expires: 0 and could leave our
    binding behind), a late 2xx or 503 schedules nothing; then the stack closes idle."""
    harness = Harness()
    session, refresh = refresh_in_flight(harness)
    done = ensureDeferred(session.logout())
    unregister = harness.last()
    assert unregister.headers.get("Expires") == "0"
    late_answer(harness, refresh, kind)
    assert harness.sent() == []
    assert session.registration._timer is None
    harness.reply(unregister, 200)
    assert done.called and not harness.plugin.stack.running
    harness.reactor.advance(0)
    assert active_calls(harness) == []
    harness.reactor.advance(600)
    assert harness.sent() == [] and harness.events.events == []


@pytest.mark.parametrize("kind", list(LATE_ANSWERS))
def test_a_refresh_answered_after_logout_on_a_shared_stack_schedules_nothing(kind: str):
    """Another user keeps the stack open: the refresh's answer arriving after the logout ended
    is absorbed by its transaction only (Timer K), and the last release leaves no timer."""
    harness = Harness()
    other = harness.active_session("bob@example.org")
    session, refresh = refresh_in_flight(harness)
    done = ensureDeferred(session.logout())
    harness.reply(harness.last(), 200)
    assert done.called and harness.plugin.stack.running
    late_answer(harness, refresh, kind)
    assert harness.sent() == []
    assert session.registration._timer is None
    harness.reactor.advance(600)  # Timer K and any backoff would have fired by now
    assert harness.sent() == []
    assert ensureDeferred(harness.plugin.stack.release()).called and not harness.plugin.stack.running
    assert active_calls(harness) == []
    assert other.active  # untouched: its own logout is not this test's business


def test_an_unanswered_unregistration_leaves_no_timer_once_the_stack_closes():
    """The registrar never answers the Expires: 0: the logout ends on its own timeout (not
    Timer F's 32 s), the stack closes and every timer with it (Timers E/F, the timeout)."""
    harness = Harness()
    session = registered(harness)
    done = ensureDeferred(session.logout())
    assert harness.last().headers.get("Expires") == "0"
    harness.reactor.advance(5)
    assert done.called and not harness.plugin.stack.running
    assert active_calls(harness) == []
