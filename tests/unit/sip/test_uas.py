"""Incoming requests (plugins/sip/uas.py): MESSAGE to XMPP, OPTIONS, and every refusal."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.plugin import MessageReceived
from plugins.sip.codec import Headers, SipRequest, SipResponse, serialize
from tests.unit.sip.plugin_harness import USER, Harness


@pytest.fixture
def harness() -> Harness:
    return Harness()


def request(harness: Harness, *, method: str = "MESSAGE", user: str | None = None, body: bytes = "hé ✓".encode(),
            content_type: str | None = "text/plain", extra: list[tuple[str, str]] | None = None,
            max_forwards: str = "69", branch: str = "z9hG4bKproxy1", uri: str | None = None) -> bytes:
    token = user if user is not None else harness.plugin.token_for(USER)
    rows = [("Via", f"SIP/2.0/UDP 192.0.2.10:5060;branch={branch}"),
            ("Via", "SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bKbob;rport=5060"),
            ("Max-Forwards", max_forwards), ("To", "<sip:alice@sip.test>"),
            ("From", "<sip:bob@sip.test>;tag=b1"), ("Call-ID", "c1@bob"), ("CSeq", f"7 {method}")]
    if content_type is not None:
        rows.append(("Content-Type", content_type))
    rows += extra or []
    return serialize(SipRequest(method, uri or f"sip:{token}@127.0.0.1:5062", Headers(rows), body))


def answer(harness: Harness, data: bytes) -> SipResponse:
    [response] = harness.receive(data)
    assert isinstance(response, SipResponse)
    return response


def test_message_becomes_a_chat_message_and_gets_200(harness):
    """RFC 3428 §7: 200 at once; the body (UTF-8 without charset, as baresip sends) goes to the user."""
    harness.active_session()
    response = answer(harness, request(harness))
    assert response.status == 200
    assert response.headers.get_all("Via")[1].startswith("SIP/2.0/UDP 192.0.2.99")  # every Via copied
    assert harness.events.events == [MessageReceived(user=USER, contact="bob@sip.test", body="hé ✓")]


def test_charset_parameter_is_honoured(harness):
    """RFC 3261 §7.4.1: the charset parameter says how to read the body."""
    harness.active_session()
    body = "grüße".encode("iso-8859-1")
    assert answer(harness, request(harness, body=body, content_type="text/plain; charset=ISO-8859-1")).status == 200
    assert harness.events.events[0].body == "grüße"


@pytest.mark.parametrize(("content_type", "body", "status"), [
    ("text/html", b"<b>hi</b>", 415),
    ("message/cpim", b"From: x\r\n\r\nhi", 415),
    ("text/plain; charset=no-such-charset", b"hi", 415),
    ("text/plain; charset=hex", b"6869", 415),  # codecs.lookup knows these; they are not text encodings
    ("text/plain; charset=base64", b"aGk=", 415),
    ("text/plain; charset=rot13", b"hi", 415),
    ("text/plain; charset=utf-8", b"\xff\xfe bad", 400),
    (None, b"", 400),
])
def test_content_we_cannot_carry_is_refused(harness, content_type, body, status):
    """415 with Accept for other media types and charsets (RFC 3261 §8.2.3); 400 for broken bodies."""
    harness.active_session()
    response = answer(harness, request(harness, body=body, content_type=content_type))
    assert response.status == status
    if status == 415:
        assert response.headers.get("Accept", "").startswith("text/plain")
    assert harness.events.events == []


def test_unknown_user_is_404_and_logged_out_user_is_480(harness):
    """A Contact token we never gave out: 404; a user of ours who is not logged in: 480."""
    session = harness.active_session()
    assert answer(harness, request(harness, user="gw-nobody")).status == 404
    session.active = False
    harness.plugin.forget(session)
    response = answer(harness, request(harness, branch="z9hG4bKproxy2"))
    assert response.status == 480 and response.headers.get("Retry-After")
    assert harness.events.events == []


def test_tokens_cannot_be_forged_or_used_to_probe_users(harness):
    """A token computed the old unkeyed way (sha256 of the gateway and user JIDs) reaches nobody,
    whether that user is logged in, logged out or unknown: always the same 404, nothing emitted."""
    import hashlib

    def unkeyed(user: str) -> str:
        return "gw-" + hashlib.sha256(f"sip.gw.example\0{user}".encode()).hexdigest()[:24]

    session = harness.active_session()
    forged = [request(harness, user=unkeyed(USER), branch="z9hG4bKf1"),
              request(harness, user=unkeyed("nobody@example.org"), branch="z9hG4bKf2")]
    assert [answer(harness, data).status for data in forged] == [404, 404]
    session.active = False
    harness.plugin.forget(session)
    answers = [answer(harness, data.replace(b"z9hG4bKf", b"z9hG4bKg")) for data in forged]
    assert [(r.status, r.reason, r.headers.get("Retry-After")) for r in answers] == [(404, "Not Found", None)] * 2
    assert answer(harness, request(harness, branch="z9hG4bKreal")).status == 480  # the real token
    assert harness.events.events == []


def test_loops_and_hop_limits(harness):
    """Max-Forwards 0: 483; a request carrying one of our own live branches came back: 482."""
    from twisted.internet.defer import ensureDeferred

    from plugins.sip.transport import Peer

    harness.active_session()
    assert answer(harness, request(harness, max_forwards="0")).status == 483
    pending = ensureDeferred(harness.plugin.stack.request(
        SipRequest("MESSAGE", "sip:x@sip.test", Headers([("Max-Forwards", "70"), ("To", "<sip:x@sip.test>"),
                                                        ("From", "<sip:alice@sip.test>;tag=1"),
                                                        ("Call-ID", "loop"), ("CSeq", "1 MESSAGE")]), b"x"),
        Peer("udp", "192.0.2.10", 5060)))
    [ours] = harness.sent()
    assert answer(harness, request(harness, branch=ours.branch)).status == 482
    ensureDeferred(harness.plugin.stack.close())
    pending.addErrback(lambda _: None)


def test_options_and_other_methods(harness):
    """OPTIONS: 200 with Allow and Accept; a known method: 405 with Allow; an unknown one: 501."""
    harness.active_session()
    options = answer(harness, request(harness, method="OPTIONS", content_type=None, body=b""))
    assert options.status == 200 and options.headers.get("Allow") == "MESSAGE"
    assert options.headers.get_all("Allow") == ("MESSAGE", "OPTIONS")
    invite = answer(harness, request(harness, method="INVITE", content_type=None, body=b"", branch="z9hG4bKp2"))
    assert invite.status == 405 and "MESSAGE" in invite.headers.get_all("Allow")
    assert answer(harness, request(harness, method="FROBNICATE", content_type=None, body=b"",
                                   branch="z9hG4bKproxy3")).status == 501


def test_require_and_uri_schemes(harness):
    """RFC 3261 §8.2.2.3: Require of any extension is 420 with Unsupported; a tel: Request-URI is no
    Contact of ours: 404."""
    harness.active_session()
    response = answer(harness, request(harness, extra=[("Require", "100rel")]))
    assert response.status == 420 and response.headers.get("Unsupported") == "100rel"
    assert answer(harness, request(harness, uri="tel:+15551234", branch="z9hG4bKp2")).status == 404


def test_unsupported_request_uri_scheme_is_416(harness):
    """RFC 3261 §8.2.2.1: a Request-URI scheme we do not understand gets 416."""
    harness.active_session()
    assert answer(harness, request(harness, uri="im:bob@example.com")).status == 416


def test_tel_sender_is_relative_to_the_domain(harness):
    """A tel: From becomes a hostless address (resolved against the user's SIP domain on reply)."""
    harness.active_session()
    data = request(harness).replace(b"From: <sip:bob@sip.test>;tag=b1", b"From: <tel:+1-555-1234>;tag=b1")
    assert answer(harness, data).status == 200
    assert harness.events.events[0].contact == "+15551234"


def test_malformed_lower_via_is_400(harness):
    """Only the top Via is checked by the parser; a broken lower one is still a 400, not a crash."""
    harness.active_session()
    data = request(harness).replace(b"SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bKbob;rport=5060", b"garbage")
    assert answer(harness, data).status == 400


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=30), st.sampled_from([b"From", b"To", b"Via", b"Content-Type", b"Max-Forwards",
                                                b"CSeq", b"Call-ID", b"Require", b"MESSAGE sip:"]))
def test_hostile_requests_get_an_answer_or_nothing_never_a_crash(junk: bytes, where: bytes):
    """Hypothesis: bytes spliced into a MESSAGE after a header name: every outcome is a SIP response
    (or nothing), and the UAS never fails with an exception (it would be logged and answered 500)."""
    harness = Harness()
    harness.active_session()
    data = request(harness)
    index = data.find(where) + len(where)
    responses = harness.receive(data[:index] + junk + data[index:])
    assert all(isinstance(r, SipResponse) and r.status != 500 for r in responses)
