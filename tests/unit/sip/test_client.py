"""Registration and outgoing MESSAGEs of the SIP plugin against a scripted registrar/proxy.

RFC 3261 §10.2 (REGISTER, refresh, unregister), §10.2.8 (423 and Min-Expires), §22.2
(digest retry: same Call-ID, CSeq + 1, new branch), §18.1.1 (large requests over TCP),
and the RFC 7572 error mapping, all on a fake reactor with timers driven by its clock.
"""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from gateway.plugin import LegacyError, LoginFailed, OutgoingMessage, Registration, SessionLost
from plugins.sip.codec import Headers, make_response
from plugins.sip.registration import RegistrationClient
from plugins.sip.transport import Peer
from plugins.sip.ua import AccountSettings, parse_aor
from plugins.sip.uri import parse_address
from tests.unit.sip.plugin_harness import AOR, CHALLENGE, USER, Harness

VALUES = {"username": AOR, "password": "pw", "transport": "udp"}


def contact_of(request) -> str:
    return str(parse_address(request.headers.get("Contact")).uri)


def login(harness: Harness, **values: str):
    registration = Registration(user=USER, legacy_id=AOR, values={**VALUES, **values})
    return ensureDeferred(harness.plugin.login(registration))


def registered(harness: Harness, granted: int = 600):
    """Log in through one digest challenge; return the session."""
    result = login(harness)
    first = harness.last()
    harness.reply(first, 401, [("WWW-Authenticate", CHALLENGE)])
    second = harness.last()
    harness.reply(second, 200, [("Contact", f"<{contact_of(second)}>;expires={granted}")])
    return result.result


def test_register_answers_the_challenge_with_a_new_transaction():
    """§10.2: Request-URI is the domain, To/From the AOR, our Contact; §22.2: the retry keeps the
    Call-ID, raises CSeq by one and has a new branch; §8.1.2: the outbound proxy is pre-loaded."""
    harness = Harness()
    result = login(harness)
    first = harness.last()
    assert first.method == "REGISTER" and first.uri == "sip:sip.test"
    assert str(first.to_address.uri) == "sip:alice@sip.test" and first.from_tag
    assert contact_of(first) == f"sip:{harness.plugin.token_for(USER)}@127.0.0.1:5062"
    assert first.headers.get("Expires") == "600"
    assert first.headers.get("Route") == "<sip:192.0.2.10:5060;lr>"
    assert "Authorization" not in first.headers
    harness.reply(first, 401, [("WWW-Authenticate", CHALLENGE)])
    second = harness.last()
    assert second.call_id == first.call_id and second.cseq.number == first.cseq.number + 1
    assert second.branch != first.branch
    assert 'username="alice"' in second.headers.get("Authorization")
    harness.reply(second, 200, [("Contact", f"<{contact_of(second)}>;expires=300"),
                                ("Contact", "<sip:phone@192.0.2.50>;expires=3600")])
    session = result.result
    assert session.active and harness.plugin.sessions[session.token] is session
    assert session.registration.registered_until == pytest.approx(300)


def test_interval_too_brief_retries_with_min_expires():
    """§10.2.8: after 423 the REGISTER asks for the Min-Expires value."""
    harness = Harness(expires=30)
    result = login(harness)
    first = harness.last()
    harness.reply(first, 423, [("Min-Expires", "120")])
    second = harness.last()
    assert second.headers.get("Expires") == "120" and second.cseq.number == first.cseq.number + 1
    harness.reply(second, 200, [("Expires", "120")])
    assert result.result.registration.expires == 120


def test_refresh_before_expiry_with_backoff_and_loss_on_a_permanent_refusal():
    """The binding is refreshed at half its life; a 500 is retried after a backoff; a 403 ends the
    session with a SessionLost (not-authorized) and closes the sockets."""
    harness = Harness()
    session = registered(harness, granted=100)
    harness.reactor.advance(49)
    assert harness.sent() == []
    harness.reactor.advance(1)
    refresh = harness.last()
    assert refresh.method == "REGISTER" and refresh.headers.get("Expires") == "600"
    harness.reply(refresh, 500)
    assert harness.sent() == []
    harness.reactor.advance(2)
    retry = harness.last()
    assert retry.cseq.number > refresh.cseq.number
    harness.reply(retry, 403)
    harness.reactor.advance(0)
    [lost] = harness.events.events
    assert isinstance(lost, SessionLost) and lost.condition == "not-authorized" and "403" in lost.reason
    assert not session.active and not harness.plugin.stack.running


def test_logout_removes_only_our_binding():
    """§10.2.2: our Contact with expires=0 (never Contact: *), then the sockets close."""
    harness = Harness()
    session = registered(harness)
    done = ensureDeferred(session.logout())
    request = harness.last()
    assert request.headers.get("Expires") == "0"
    assert request.headers.get("Contact").endswith(";expires=0") and "*" not in request.headers.get("Contact")
    harness.reply(request, 200)
    assert done.called and not harness.plugin.stack.running
    assert harness.reactor.getDelayedCalls() == []


@pytest.mark.parametrize(("status", "condition"), [(403, "not-authorized"), (404, "not-authorized")])
def test_refused_login(status: int, condition: str):
    """A permanent refusal is LoginFailed(not-authorized) with the SIP status in the text."""
    harness = Harness()
    result = login(harness)
    harness.reply(harness.last(), status)
    failure = result.result
    result.addErrback(lambda _: None)
    assert failure.check(LoginFailed) and failure.value.condition == condition
    assert str(status) in failure.value.text and not harness.plugin.stack.running


def test_silent_registrar_is_a_timeout():
    """Timer F (32 s) without an answer: LoginFailed(remote-server-timeout)."""
    harness = Harness()
    result = login(harness)
    harness.reactor.advance(33)
    while not result.called:
        harness.reactor.advance(1)
    failure = result.result
    result.addErrback(lambda _: None)
    assert failure.value.condition == "remote-server-timeout"


def test_check_credentials_registers_and_unregisters_a_throwaway_contact():
    """The registration check leaves nothing behind: a REGISTER, then the same Contact with expires=0."""
    harness = Harness()
    result = ensureDeferred(harness.plugin.check_credentials(USER, VALUES))
    register = harness.last()
    assert contact_of(register).startswith("sip:chk-")
    harness.reply(register, 200, [("Expires", "60")])
    unregister = harness.last()
    assert contact_of(unregister) == contact_of(register) and unregister.headers.get("Expires") == "0"
    harness.reply(unregister, 200)
    assert result.called and result.result is None and not harness.plugin.stack.running


def test_wrong_password_after_the_challenge_is_refused():
    """A second challenge for the realm we answered (not stale) is a wrong password: no loop."""
    harness = Harness()
    result = ensureDeferred(harness.plugin.check_credentials(USER, VALUES))
    harness.reply(harness.last(), 401, [("WWW-Authenticate", CHALLENGE)])
    harness.reply(harness.last(), 401, [("WWW-Authenticate", CHALLENGE)])
    assert harness.sent() == []
    failure = result.result
    result.addErrback(lambda _: None)
    assert failure.value.condition == "not-authorized"


def send(session, body: str = "hé ✓", contact: str = "bob@sip.test"):
    return ensureDeferred(session.send_message(OutgoingMessage(contact=contact, body=body, xmpp_id="m1")))


def test_message_goes_out_with_proxy_auth_and_utf8():
    """RFC 3428 / RFC 7572: text/plain;charset=UTF-8 from the AOR; a 407 is answered (§22.2)."""
    harness = Harness()
    session = registered(harness)
    result = send(session)
    message = harness.last()
    assert (message.method, message.uri) == ("MESSAGE", "sip:bob@sip.test")
    assert message.headers.get("Content-Type") == "text/plain;charset=UTF-8"
    assert message.body == "hé ✓".encode() and str(message.from_address.uri) == "sip:alice@sip.test"
    harness.reply(message, 407, [("Proxy-Authenticate", CHALLENGE)])
    retry = harness.last()
    assert "Proxy-Authorization" in retry.headers and retry.cseq.number == 2
    harness.reply(retry, 200)
    assert result.result == message.call_id


@pytest.mark.parametrize("status", [202, 204])
def test_only_a_200_confirms_delivery(status: int):
    """RFC 3428 §7: a 202 means a store-and-forward element accepted it, not delivery: the message
    is sent (no error) but no legacy id comes back, so the core answers no XEP-0184 receipt."""
    harness = Harness()
    session = registered(harness)
    result = send(session)
    harness.reply(harness.last(), status)
    assert result.result == ""


def test_empty_body_sends_nothing():
    """An empty <body/> is nothing to carry: no MESSAGE, and "" so the core sends no receipt."""
    harness = Harness()
    session = registered(harness)
    assert send(session, body="").result == "" and harness.sent() == []


def test_hostless_contacts_are_on_the_users_domain():
    """``bob@gateway`` (no SIP domain) is sip:bob@<the AOR's domain>."""
    harness = Harness()
    session = registered(harness)
    send(session, contact="bob")
    assert harness.last().uri == "sip:bob@sip.test"


@pytest.mark.parametrize(("status", "condition"), [
    (404, "item-not-found"), (480, "recipient-unavailable"), (403, "forbidden"), (415, "bad-request"),
    (488, "not-acceptable"), (500, "internal-server-error"), (503, "service-unavailable"),
    (513, "not-acceptable"), (599, "undefined-condition"),
])
def test_final_responses_map_to_stanza_errors(status: int, condition: str):
    """reference/sip.md §2.13 (RFC 7572): the condition, and the SIP status in the text."""
    harness = Harness()
    session = registered(harness)
    result = send(session)
    harness.reply(harness.last(), status)
    failure = result.result
    result.addErrback(lambda _: None)
    assert failure.check(LegacyError)
    assert failure.value.condition == condition and failure.value.text.startswith(f"SIP {status}")


def test_unanswered_message_is_remote_server_timeout():
    """Timer F: remote-server-timeout (RFC 3261 §8.1.3.1 treats it as 408)."""
    harness = Harness()
    session = registered(harness)
    result = send(session)
    for _ in range(40):
        harness.reactor.advance(1)
    failure = result.result
    result.addErrback(lambda _: None)
    assert failure.value.condition == "remote-server-timeout"


def test_body_too_large_for_udp_goes_over_tcp_or_is_refused_clearly():
    """RFC 3261 §18.1.1: over 1300 bytes goes over TCP to the same proxy; if TCP fails, a clear error."""
    harness = Harness()
    session = registered(harness)
    result = send(session, body="x" * 1400)
    assert harness.sent() == []
    host, port, factory, *_ = harness.reactor.tcpClients[-1]
    assert (host, port) == ("192.0.2.10", 5060)
    factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
    failure = result.result
    result.addErrback(lambda _: None)
    assert failure.value.condition == "not-acceptable" and "1300" in failure.value.text


def test_over_long_bodies_are_refused_before_sending():
    """Bodies no proxy would take are refused at once, with nothing sent."""
    harness = Harness()
    session = registered(harness)
    result = send(session, body="x" * 70000)
    failure = result.result
    result.addErrback(lambda _: None)
    assert failure.value.condition == "not-acceptable" and harness.sent() == []


def test_added_contacts_show_available_while_registered():
    """No SIP presence yet: an added contact is available at once and again at the next logon."""
    from gateway.plugin import ContactPresence

    harness = Harness()
    session = registered(harness)
    assert ensureDeferred(session.add_contact("bob@sip.test")).result is True
    harness.reactor.advance(0)
    assert harness.events.events == [ContactPresence(user=USER, contact="bob@sip.test", available=True)]
    done = ensureDeferred(session.logout())
    harness.reply(harness.last(), 200)
    assert done.called
    harness.events.events.clear()
    registered(harness)
    assert harness.events.events == [ContactPresence(user=USER, contact="bob@sip.test", available=True)]


def test_failover_to_the_next_target_on_503():
    """RFC 3263 §4.3: a 503 from the first server sends the request to the next one."""
    from itertools import count

    from plugins.sip.codec import SipRequest
    from plugins.sip.transport import Peer
    from plugins.sip.ua import AccountSettings, UserAgent, parse_aor

    class TwoTargets:
        async def locate(self, uri, transport):
            return [Peer("udp", "192.0.2.10", 5060), Peer("udp", "192.0.2.11", 5060)]

    harness = Harness()
    assert ensureDeferred(harness.plugin.acquire_stack()).called
    ua = UserAgent(harness.plugin.stack, TwoTargets(),  # type: ignore[arg-type]
                   AccountSettings(aor=parse_aor(AOR), auth_username="alice", password="pw"))
    numbers = count(1)

    def build(peer, cseq):
        return SipRequest("OPTIONS", "sip:sip.test", ua.headers(to="<sip:sip.test>", call_id="c1", cseq=cseq,
                                                                 method="OPTIONS", from_tag="t"), b"")

    result = ensureDeferred(ua.send(build, lambda: next(numbers)))
    [(data, first)] = harness.udp.sent
    harness.reply(harness.last(), 503)
    [(data, second)] = harness.udp.sent
    assert (first, second) == (("192.0.2.10", 5060), ("192.0.2.11", 5060))
    harness.reply(harness.last(), 200)
    assert result.result.status == 200


def test_refresh_honours_retry_after():
    """A 503 with Retry-After to a refresh is retried after that many seconds (RFC 3261 §21.5.4)."""
    harness = Harness()
    registered(harness, granted=600)
    harness.reactor.advance(300)
    harness.reply(harness.last(), 503, [("Retry-After", "20")])
    harness.reactor.advance(19)
    assert harness.sent() == []
    harness.reactor.advance(1)
    assert harness.last().method == "REGISTER"


def test_a_refresh_and_an_unregistration_in_flight_never_share_a_cseq():
    """One CSeq counter per Call-ID: an authenticated retry of a refresh that races with the
    unregistration takes the next number, not previous + 1 (RFC 3261 §10.2: CSeq rises by one
    per REGISTER of the Call-ID)."""
    harness = Harness()
    session = registered(harness, granted=100)
    harness.reactor.advance(50)
    refresh = harness.last()
    done = ensureDeferred(session.logout())
    unregister = harness.last()
    harness.reply(refresh, 401, [("WWW-Authenticate", CHALLENGE)])
    numbers = [refresh.cseq.number, unregister.cseq.number] + [r.cseq.number for r in harness.sent()]
    assert len(numbers) == len(set(numbers))
    harness.reply(unregister, 200)
    assert done.called


class _HoldingStack:
    """The stack surface a registration uses, recording which peers it holds."""

    settings = type("Settings", (), {"user_agent": "test"})()

    def __init__(self) -> None:
        self.held: list[Peer] = []

    def contact(self, user: str, transport: str) -> str:
        return f"sip:{user}@127.0.0.1:5062;transport={transport}"

    def hold(self, peer: Peer) -> None:
        self.held.append(peer)

    def unhold(self, peer: Peer) -> None:
        self.held.remove(peer)


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_a_registration_holds_its_connection_while_it_lasts(transport: str):
    """The stack closes idle outbound connections unless a registration depends on them: a TCP/TLS
    binding holds its peer from the 200 until it stops (logout, loss); a refresh answered after
    the stop does not hold it again; UDP holds nothing."""
    peer = Peer(transport, "192.0.2.10", 5060)
    stack = _HoldingStack()
    answers: list = []

    class Agent:
        settings = AccountSettings(aor=parse_aor(AOR), auth_username="alice", password="pw")

        def __init__(self) -> None:
            self.stack = stack

        def headers(self, **kwargs):
            return Headers([("To", kwargs["to"]), ("From", f"<sip:{AOR}>;tag={kwargs['from_tag']}"),
                            ("Call-ID", kwargs["call_id"]), ("CSeq", f"{kwargs['cseq']} REGISTER"),
                            ("Via", "SIP/2.0/TCP 127.0.0.1:5062;branch=z9hG4bKx"), *kwargs["extra"]])

        async def send(self, build, next_cseq):
            request = build(peer, next_cseq())
            answer = Deferred()
            answers.append(answer)
            await answer
            return make_response(request, 200)

    client = RegistrationClient(Agent(), Clock(), contact_user="gw-x", expires=600)  # type: ignore[arg-type]
    first = ensureDeferred(client.register())
    answers.pop().callback(None)
    assert first.result == 600
    expected = [peer] if transport == "tcp" else []
    assert stack.held == expected
    refresh = ensureDeferred(client.register())  # a refresh keeps one hold
    answers.pop().callback(None)
    assert refresh.called and stack.held == expected
    late = ensureDeferred(client.register())
    client.stop()
    assert stack.held == []
    answers.pop().callback(None)
    assert late.called and stack.held == []  # answered after the stop: not held again
