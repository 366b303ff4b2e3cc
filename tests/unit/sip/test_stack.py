"""The Twisted edge of the SIP core (plugins/sip/stack.py, transport.py) on a fake reactor.

Timers run on the reactor's clock (``MemoryReactorClock``): Timer E retransmissions and
Timer F on UDP (RFC 3261 §17.1.2.2), server retransmission absorption (§17.2.2), and
the exception barrier around every datagram and stream chunk (STYLE.md G9), fuzzed with
hypothesis.
"""

from __future__ import annotations

import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.testing import StringTransport

from plugins.sip.codec import SipRequest, SipResponse, make_response, parse_datagram, serialize
from plugins.sip.stack import SipStack, SipTimeout, SipTransportError, StackSettings
from plugins.sip.transport import Origin, Peer
from tests.unit.sip.fakes import PEER, SipTestReactor
from tests.unit.sip.messages import message_request, response_to

KAMAILIO = Peer("udp", "192.0.2.10", 5060)


class Recorder:
    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[tuple[SipRequest, Origin]] = []

    def __call__(self, request: SipRequest, origin: Origin) -> SipResponse:
        self.requests.append((request, origin))
        return make_response(request, self.status)


def make_stack() -> tuple[SipStack, SipTestReactor, Recorder]:
    reactor = SipTestReactor()
    handler = Recorder()
    stack = SipStack(reactor, StackSettings(listen_host="127.0.0.1", udp_port=5062, tcp_port=5062,
                                            contact_host="127.0.0.1"), handler)
    assert ensureDeferred(stack.acquire()).called
    return stack, reactor, handler


def outgoing() -> SipRequest:
    request = message_request()
    return SipRequest(request.method, request.uri, request.headers.remove("Via"), request.body)


def test_request_gets_a_via_and_resolves_with_the_final_response():
    """The stack adds our Via (branch with the magic cookie, rport) and matches the response by it."""
    stack, reactor, _ = make_stack()
    result = ensureDeferred(stack.request(outgoing(), KAMAILIO))
    [sent] = reactor.udp[0].take()
    via = sent.top_via
    assert (via.transport, via.sent_by) == ("UDP", "127.0.0.1:5062")
    assert via.branch.startswith("z9hG4bK") and via.params[-1] == ("rport", None)
    reactor.udp[0].receive(serialize(response_to(sent, 100)))
    assert not result.called
    reactor.udp[0].receive(serialize(response_to(sent, 202)))
    assert result.result.status == 202


def test_udp_retransmits_then_times_out():
    """Timer E: resent at 0.5, 1.5, 3.5, 7.5 s... (doubling up to T2); Timer F at 32 s is a SipTimeout."""
    stack, reactor, _ = make_stack()
    result = ensureDeferred(stack.request(outgoing(), KAMAILIO))
    times = []
    while not result.called:
        if reactor.udp[0].sent:
            times.append(reactor.seconds())
            reactor.udp[0].sent.clear()
        [call] = reactor.getDelayedCalls()  # one timer for the whole stack (STYLE.md G4)
        reactor.advance(call.getTime() - reactor.seconds())
    assert times[:6] == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5]
    assert reactor.seconds() == 32.0
    assert result.called and isinstance(result.result.value, SipTimeout)
    result.addErrback(lambda _: None)
    assert reactor.getDelayedCalls() == []  # nothing ticks once the transaction is gone


def test_incoming_request_is_answered_once_and_retransmissions_get_the_same_response():
    """RFC 3261 §17.2.2: the TU sees the request once; a retransmission gets the stored response."""
    stack, reactor, handler = make_stack()
    data = serialize(message_request())
    reactor.udp[0].receive(data)
    reactor.udp[0].receive(data)
    assert len(handler.requests) == 1
    first, second = reactor.udp[0].sent
    assert first == second and first[1] == PEER
    assert parse_datagram(first[0]).status == 200


@pytest.mark.parametrize(("sent_by", "params", "destination", "stamps"), [
    # RFC 3261 §18.2.2: the received address (the source IP) at the sent-by port, or 5060
    ("pc33.atlanta.example.com:5070", "", ("192.0.2.10", 5070), ";received=192.0.2.10"),
    ("pc33.atlanta.example.com", "", ("192.0.2.10", 5060), ";received=192.0.2.10"),
    ("192.0.2.10:5070", "", ("192.0.2.10", 5070), ""),  # sent-by is the source: no received
    # RFC 3581 §4: rport asks for the source port (received is added even when the same)
    ("pc33.atlanta.example.com:5070", ";rport", ("192.0.2.10", 40000), ";received=192.0.2.10;rport=40000"),
    ("192.0.2.10:5070", ";rport=1", ("192.0.2.10", 40000), ";received=192.0.2.10;rport=40000"),
    # §18.2.2: maddr first
    ("pc33.atlanta.example.com:5070", ";maddr=198.51.100.7", ("198.51.100.7", 5070), ";received=192.0.2.10"),
])
def test_udp_responses_go_where_the_via_says(sent_by, params, destination, stamps):
    """RFC 3261 §18.2.1-2 and RFC 3581 §4: the source is stamped into the top Via (received, rport)
    and the response goes to maddr, else the source IP at the rport or sent-by port (5060 by default),
    not blindly back to the packet's source port; a retransmission is answered at the same place."""
    stack, reactor, handler = make_stack()
    request = message_request(sent_by=sent_by)
    via = request.headers.get("Via") + params
    data = serialize(SipRequest(request.method, request.uri, request.headers.replace("Via", via), request.body))
    reactor.udp[0].receive(data, ("192.0.2.10", 40000))
    reactor.udp[0].receive(data, ("192.0.2.10", 40000))
    [(first, addr), (again, again_addr)] = reactor.udp[0].sent
    assert (addr, again_addr) == (destination, destination) and first == again
    response = parse_datagram(first)
    assert response.status == 200
    assert response.headers.get("Via") == f"SIP/2.0/UDP {sent_by};branch=z9hG4bK776asdhds" + \
        params.replace(";rport=1", "").replace(";rport", "") + stamps
    assert handler.requests[0][1].peer == Peer("udp", "192.0.2.10", 40000)  # the TU sees the real source


def test_malformed_request_answer_follows_the_via_too():
    """The stateless answer to a malformed request goes where its Via says, like any response."""
    stack, reactor, _ = make_stack()
    bad = message_request(sent_by="pc33.atlanta.example.com:5070")
    bad = SipRequest(bad.method, bad.uri, bad.headers.replace("CSeq", "1 OPTIONS"), bad.body)
    reactor.udp[0].receive(serialize(bad), ("192.0.2.10", 40000))
    [(data, addr)] = reactor.udp[0].sent
    assert parse_datagram(data).status == 400 and addr == ("192.0.2.10", 5070)


def test_malformed_answerable_request_gets_its_status_and_junk_is_dropped():
    """A request whose answer fields parse gets 400 (here: CSeq method mismatch); junk gets nothing."""
    stack, reactor, handler = make_stack()
    bad = message_request()
    bad = SipRequest(bad.method, bad.uri, bad.headers.replace("CSeq", "1 OPTIONS"), bad.body)
    reactor.udp[0].receive(serialize(bad))
    [(data, addr)] = reactor.udp[0].sent
    assert parse_datagram(data).status == 400 and addr == PEER
    reactor.udp[0].sent.clear()
    reactor.udp[0].receive(b"\x00\xffnot sip at all\r\n\r\n")
    reactor.udp[0].receive(b"\r\n\r\n")  # a keep-alive
    assert reactor.udp[0].sent == [] and handler.requests == []


def test_close_fails_pending_requests_and_leaves_no_timer():
    """Closing (the last account logged out) fails what is pending and stops every timer."""
    stack, reactor, _ = make_stack()
    result = ensureDeferred(stack.request(outgoing(), KAMAILIO))
    ensureDeferred(stack.release())
    assert isinstance(result.result.value, SipTransportError)
    result.addErrback(lambda _: None)
    assert reactor.getDelayedCalls() == [] and not stack.running
    assert not reactor.udp[0].listening and not reactor.tcp[0].listening


def test_reopening_waits_until_the_old_sockets_are_closed():
    """stopListening may finish later; a new account logging in meanwhile must not listen on the
    port before that (EADDRINUSE, which the fake reactor raises like a real one): it waits."""
    stack, reactor, _ = make_stack()
    closing = {"udp": Deferred(), "tcp": Deferred()}
    for kind, port in (("udp", reactor.udp[0]), ("tcp", reactor.tcp[0])):
        def stop(port=port, done=closing[kind]):
            return done.addCallback(lambda _: setattr(port, "listening", False))
        port.stopListening = stop
    released = ensureDeferred(stack.release())
    reopened = ensureDeferred(stack.acquire())
    again = ensureDeferred(stack.acquire())  # several waiters for one close
    assert not released.called and not reopened.called and len(reactor.udp) == 1
    closing["udp"].callback(None)
    assert not reopened.called
    closing["tcp"].callback(None)
    assert released.called and reopened.called and again.called
    assert reopened.result is None and again.result is None  # no CannotListenError
    assert stack.running and len(reactor.udp) == 2 and reactor.udp[1].listening
    assert stack._users == 2


def stream(stack: SipStack) -> tuple[object, StringTransport]:
    protocol = stack.tcp_port.factory.buildProtocol(None)  # type: ignore[union-attr]
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def test_tcp_request_in_pieces_is_answered_on_its_connection():
    """Content-Length framing across reads; the response goes back on the same connection (§18.2.2)."""
    stack, reactor, handler = make_stack()
    protocol, transport = stream(stack)
    data = serialize(message_request(transport="TCP"))
    for index in range(0, len(data), 7):
        protocol.dataReceived(data[index:index + 7])
    assert len(handler.requests) == 1 and handler.requests[0][1].peer.transport == "tcp"
    assert transport.value().startswith(b"SIP/2.0 200 OK\r\n")


def test_tcp_keepalive_ping_gets_a_pong():
    """RFC 5626 §3.5.1: a double CRLF is answered with a single CRLF."""
    stack, _, _ = make_stack()
    protocol, transport = stream(stack)
    protocol.dataReceived(b"\r\n\r\n")
    assert transport.value() == b"\r\n"


def test_tcp_unframeable_message_is_answered_then_the_connection_closed():
    """RFC 3261 §18.3: no Content-Length on a stream: 400 if answerable, then close."""
    stack, _, handler = make_stack()
    protocol, transport = stream(stack)
    data = serialize(message_request(transport="TCP")).replace(b"Content-Length: 18\r\n", b"")
    protocol.dataReceived(data)
    assert transport.value().startswith(b"SIP/2.0 400 ")
    assert transport.disconnecting and handler.requests == []


class _Errors(logging.Handler):
    """Collects ERROR records of the SIP plugin: the barrier logs what it catches, and hostile
    input must be handled (answered or dropped), not caught as a crash."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> _Errors:
        logging.getLogger("plugins.sip").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("plugins.sip").removeHandler(self)
        assert [r.getMessage() for r in self.records] == []


def _mutations() -> st.SearchStrategy[bytes]:
    valid = serialize(message_request())
    return st.one_of(
        st.binary(max_size=600),
        st.builds(lambda cut, junk: valid[:cut] + junk + valid[cut:],
                  st.integers(0, len(valid)), st.binary(max_size=40)),
        st.builds(lambda a, b: valid[:a] + valid[b:], st.integers(0, len(valid)), st.integers(0, len(valid))),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutations())
def test_hostile_datagrams_never_break_the_socket(data: bytes):
    """Whatever arrives, the datagram handler returns; anything we send back is a parseable response."""
    stack, reactor, _ = make_stack()
    with _Errors():
        reactor.udp[0].receive(data)
    for message in reactor.udp[0].messages():
        assert isinstance(message, SipResponse)
    reactor.udp[0].sent.clear()
    reactor.udp[0].receive(serialize(message_request(branch="z9hG4bKafter")))
    assert [m.status for m in reactor.udp[0].messages()] == [200]  # still serving


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutations(), st.integers(1, 50))
def test_hostile_streams_never_raise(data: bytes, chunk: int):
    """The stream handler never raises, whatever the bytes and however they are split."""
    stack, _, _ = make_stack()
    protocol, transport = stream(stack)
    with _Errors():
        for index in range(0, len(data), chunk):
            protocol.dataReceived(data[index:index + chunk])
    assert transport.value() == b"" or transport.value().startswith((b"SIP/2.0 ", b"\r\n"))


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_contact_and_sent_by(transport: str):
    """Contacts carry the opaque user and the transport; TLS is sips (RFC 3261 §19.1)."""
    stack, _, _ = make_stack()
    contact = stack.contact("gw-token", transport)
    assert contact == {"udp": "sip:gw-token@127.0.0.1:5062",
                       "tcp": "sip:gw-token@127.0.0.1:5062;transport=tcp",
                       "tls": "sips:gw-token@127.0.0.1:5062;transport=tls"}[transport]


def test_outbound_connections_get_keepalive_pings():
    """RFC 5626 §4.4.1: a CRLF CRLF ping every ``keepalive`` seconds on the connections our
    registrations depend on."""
    stack, reactor, _ = make_stack()
    stack.hold(Peer("tcp", "192.0.2.10", 5060))
    connected = ensureDeferred(stack.connect(Peer("tcp", "192.0.2.10", 5060)))
    host, port, factory, *_ = reactor.tcpClients[-1]
    transport = StringTransport()
    factory.buildProtocol(None).makeConnection(transport)
    assert connected.called and (host, port) == ("192.0.2.10", 5060)
    reactor.advance(59)
    assert transport.value() == b""
    reactor.advance(1)
    assert transport.value() == b"\r\n\r\n"
    ensureDeferred(stack.close())
    assert reactor.getDelayedCalls() == []


def _outbound(stack: SipStack, reactor: SipTestReactor, peer: Peer) -> StringTransport:
    connected = ensureDeferred(stack.connect(peer))
    transport = StringTransport()
    reactor.tcpClients[-1][2].buildProtocol(None).makeConnection(transport)
    assert connected.called
    return transport


def test_idle_outbound_connections_close_unless_a_registration_holds_them():
    """Our own TCP connections that no registration depends on (one opened for a large MESSAGE)
    close after ``idle_timeout`` without use and are not pinged; a held one stays and is pinged;
    once released it closes when idle too, and use (a request on it) postpones that."""
    stack, reactor, _ = make_stack()
    spare, registrar = Peer("tcp", "192.0.2.20", 5060), Peer("tcp", "192.0.2.10", 5060)
    stack.hold(registrar)
    spare_transport, registrar_transport = _outbound(stack, reactor, spare), _outbound(stack, reactor, registrar)
    reactor.advance(599)
    assert not spare_transport.disconnecting and spare_transport.value() == b""  # no pings: it may idle out
    reactor.advance(61)
    assert spare_transport.disconnecting and stack.outbound_peers == {registrar}
    assert not registrar_transport.disconnecting and registrar_transport.value().startswith(b"\r\n\r\n")
    stack.hold(registrar)  # two registrations on one connection
    stack.unhold(registrar)
    reactor.advance(900)
    assert not registrar_transport.disconnecting
    stack.unhold(registrar)
    pending = ensureDeferred(stack.request(outgoing(), registrar))  # used now: its idle time restarts
    reactor.advance(599)
    assert not registrar_transport.disconnecting  # in use (and a transaction pending until Timer F)
    reactor.advance(700)
    assert registrar_transport.disconnecting and stack.outbound_peers == frozenset()
    pending.addErrback(lambda _: None)
    ensureDeferred(stack.close())


def test_idle_accepted_connections_are_closed():
    """A peer that connects and stays silent does not hold a connection slot forever."""
    stack, reactor, _ = make_stack()
    quiet, quiet_transport = stream(stack)
    busy, busy_transport = stream(stack)
    for _ in range(10):
        reactor.advance(60)
        busy.dataReceived(b"\r\n\r\n")
    assert quiet_transport.disconnecting and not busy_transport.disconnecting


def test_close_cancels_connection_attempts():
    """A connection attempt in progress when the last account leaves is abandoned, its request failed."""
    stack, reactor, _ = make_stack()
    waiting = ensureDeferred(stack.request(outgoing(), Peer("tcp", "192.0.2.10", 5060)))
    assert reactor.tcpClients and not waiting.called
    ensureDeferred(stack.close())
    failure = waiting.result
    waiting.addErrback(lambda _: None)
    assert failure.check(SipTransportError)
    assert reactor.connectors[-1].stoppedConnecting


def test_requests_share_one_connection_attempt():
    """Two requests to one TCP peer wait for one connection and then both use it."""
    stack, reactor, _ = make_stack()
    first = ensureDeferred(stack.request(outgoing(), Peer("tcp", "192.0.2.10", 5060)))
    second = ensureDeferred(stack.request(outgoing(), Peer("tcp", "192.0.2.10", 5060)))
    assert len(reactor.tcpClients) == 1
    transport = StringTransport()
    reactor.tcpClients[0][2].buildProtocol(None).makeConnection(transport)
    assert transport.value().count(b"MESSAGE sip:bob@biloxi.example.com SIP/2.0") == 2
    ensureDeferred(stack.close())
    for result in (first, second):
        result.addErrback(lambda _: None)
