"""Non-INVITE transactions and the transaction layer (RFC 3261 §17.1.2, §17.1.3, §17.2.2, §17.2.3; RFC 4320).

Timers run on a fake clock: plain ``now`` values, or ``twisted.internet.task.Clock``
driving the layer through one delayed call as the Twisted edge will (STYLE.md G4).
"""

from __future__ import annotations

import itertools

import pytest
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import Clock

from plugins.sip.codec import SipRequest, parse_datagram, serialize
from plugins.sip.transaction import (
    CLIENT_TRANSITIONS,
    SERVER_TRANSITIONS,
    ClientState,
    ClientTransaction,
    Event,
    LayerEvent,
    RequestReceived,
    ResponseReceived,
    ServerState,
    ServerTransaction,
    Terminated,
    TimedOut,
    TimerConfig,
    TransactionLayer,
    Transmit,
    TransportFailed,
)
from tests.unit.sip.messages import message_request, response_to


def drain(transaction: ClientTransaction | ServerTransaction) -> list[Event]:
    events = []
    while (event := transaction.next_event()) is not None:
        events.append(event)
    return events


def run_timers(transaction: ClientTransaction, until: float) -> list[tuple[float, Event]]:
    """Fire the transaction's timers at each deadline up to ``until``; timestamp the events."""
    out = []
    while (deadline := transaction.next_deadline()) is not None and deadline <= until:
        transaction.timer(deadline)
        out += [(deadline, event) for event in drain(transaction)]
    return out


# --- client: RFC 3261 §17.1.2.2, Figure 6 ------------------------------------------------


def test_client_sends_request_at_once():
    """Entering Trying passes the request to the transport (§17.1.2.2 MUST)."""
    request = message_request()
    transaction = ClientTransaction(request, 0.0, reliable=False)
    assert drain(transaction) == [Transmit(serialize(request))]
    assert transaction.state is ClientState.TRYING
    assert transaction.next_deadline() == 0.5  # Timer E = T1


def test_udp_retransmission_schedule_and_timer_f():
    """Timer E: 0.5, 1, 2, 4, 4... s apart (§17.1.2.2); Timer F at 64*T1 times out."""
    transaction = ClientTransaction(message_request(), 0.0, reliable=False)
    drain(transaction)
    events = run_timers(transaction, until=100)
    sends = [t for t, e in events if isinstance(e, Transmit)]
    assert sends == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert [b - a for a, b in itertools.pairwise([0.0, *sends])][:6] == [0.5, 1, 2, 4, 4, 4]
    assert events[-2:] == [(32.0, TimedOut()), (32.0, Terminated())]
    assert transaction.state is ClientState.TERMINATED
    assert transaction.next_deadline() is None


def test_timer_values_are_configurable():
    """T1 and T2 come from the TimerConfig (RFC 3261 §17.1.1.1: configurable)."""
    transaction = ClientTransaction(message_request(), 10.0, reliable=False, timers=TimerConfig(t1=1, t2=2))
    drain(transaction)
    sends = [t for t, e in run_timers(transaction, until=20) if isinstance(e, Transmit)]
    assert sends == [11, 13, 15, 17, 19]


def test_reliable_transport_has_no_timer_e():
    """Over TCP/TLS nothing is retransmitted; Timer F still fires (§17.1.2.2)."""
    transaction = ClientTransaction(message_request(), 0.0, reliable=True)
    drain(transaction)
    assert transaction.next_deadline() == 32.0
    assert run_timers(transaction, until=100) == [(32.0, TimedOut()), (32.0, Terminated())]


def test_provisional_moves_to_proceeding_and_retransmits_every_t2():
    """After a 1xx: Proceeding, and Timer E resets to T2 each time (§17.1.2.2)."""
    request = message_request()
    transaction = ClientTransaction(request, 0.0, reliable=False)
    drain(transaction)
    trying = response_to(request, 100)
    transaction.receive(trying, 0.2)
    assert drain(transaction) == [ResponseReceived(trying)]
    assert transaction.state is ClientState.PROCEEDING
    sends = [t for t, e in run_timers(transaction, until=13) if isinstance(e, Transmit)]
    assert sends == [0.5, 4.5, 8.5, 12.5]


def test_final_response_completes_and_timer_k_absorbs_retransmissions():
    """A final response goes to the TU once; Completed absorbs copies until Timer K = T4."""
    request = message_request()
    transaction = ClientTransaction(request, 0.0, reliable=False)
    drain(transaction)
    ok = response_to(request, 200)
    transaction.receive(ok, 1.0)
    assert drain(transaction) == [ResponseReceived(ok)]
    assert transaction.state is ClientState.COMPLETED and transaction.final_response == ok
    assert transaction.next_deadline() == 6.0  # Timer K = T4, and no more Timer E
    transaction.receive(ok, 2.0)
    assert drain(transaction) == []
    assert run_timers(transaction, until=10) == [(6.0, Terminated())]


def test_reliable_final_response_terminates_at_once():
    """Timer K is zero on reliable transports (§17.1.2.2), so Completed ends at once."""
    request = message_request(transport="TCP")
    transaction = ClientTransaction(request, 0.0, reliable=True)
    drain(transaction)
    failure = response_to(request, 404)
    transaction.receive(failure, 0.3)
    assert drain(transaction) == [ResponseReceived(failure), Terminated()]
    assert transaction.next_deadline() is None


def test_final_after_provisional():
    """Proceeding → Completed on a final response (Figure 6)."""
    request = message_request()
    transaction = ClientTransaction(request, 0.0, reliable=True)
    transaction.receive(response_to(request, 100), 0.1)
    transaction.receive(response_to(request, 202), 0.2)
    assert [type(e) for e in drain(transaction)] == [Transmit, ResponseReceived, ResponseReceived, Terminated]


def test_client_transport_error():
    """A transport error informs the TU and terminates (§17.1.4)."""
    transaction = ClientTransaction(message_request(), 0.0, reliable=False)
    drain(transaction)
    transaction.transport_error("connection refused", 0.1)
    assert drain(transaction) == [TransportFailed("connection refused"), Terminated()]
    assert transaction.next_deadline() is None


def test_nothing_happens_after_termination():
    """Responses and timers after Terminated are ignored."""
    request = message_request()
    transaction = ClientTransaction(request, 0.0, reliable=True)
    transaction.transport_error("reset", 0.0)
    drain(transaction)
    transaction.receive(response_to(request, 200), 1.0)
    transaction.timer(100.0)
    assert drain(transaction) == []


def test_client_refuses_invite():
    """INVITE needs the INVITE client transaction, which we do not have (§17.1.1)."""
    with pytest.raises(ValueError):
        ClientTransaction(message_request(method="INVITE"), 0.0, reliable=True)


def test_client_table_follows_figure_6():
    """Every state of Figure 6 but Terminated has outgoing transitions; Terminated has none."""
    sources = {state for state, _ in CLIENT_TRANSITIONS}
    assert sources == {ClientState.TRYING, ClientState.PROCEEDING, ClientState.COMPLETED}


# --- server: RFC 3261 §17.2.2, Figure 8 --------------------------------------------------


def test_server_passes_request_up_and_absorbs_retransmission_in_trying():
    """The request goes to the TU once; retransmissions in Trying are discarded (§17.2.2)."""
    request = message_request()
    transaction = ServerTransaction(request, 0.0, reliable=False)
    assert drain(transaction) == [RequestReceived(request)]
    transaction.receive(request, 0.5)
    assert drain(transaction) == []
    assert transaction.state is ServerState.TRYING


def test_server_final_response_and_timer_j():
    """A final response is sent and resent on each retransmission until Timer J (64*T1)."""
    request = message_request()
    transaction = ServerTransaction(request, 0.0, reliable=False)
    drain(transaction)
    ok = response_to(request, 200)
    transaction.respond(ok, 0.1)
    assert drain(transaction) == [Transmit(serialize(ok))]
    assert transaction.state is ServerState.COMPLETED
    transaction.receive(request, 0.6)
    assert drain(transaction) == [Transmit(serialize(ok))]
    assert transaction.next_deadline() == pytest.approx(32.1)
    transaction.timer(32.0)
    assert drain(transaction) == []
    transaction.timer(32.1)
    assert drain(transaction) == [Terminated()]


def test_server_discards_a_second_final_response():
    """Other final responses from the TU in Completed MUST be discarded (§17.2.2)."""
    request = message_request()
    transaction = ServerTransaction(request, 0.0, reliable=False)
    transaction.respond(response_to(request, 200), 0.1)
    drain(transaction)
    transaction.respond(response_to(request, 500), 0.2)
    assert drain(transaction) == []


def test_server_reliable_terminates_after_final():
    """Timer J is zero on reliable transports (§17.2.2)."""
    request = message_request(transport="TCP")
    transaction = ServerTransaction(request, 0.0, reliable=True)
    drain(transaction)
    transaction.respond(response_to(request, 202), 0.1)
    assert [type(e) for e in drain(transaction)] == [Transmit, Terminated]


def test_server_proceeding_resends_last_provisional():
    """In Proceeding a retransmission gets the latest provisional response again (§17.2.2)."""
    request = message_request()
    transaction = ServerTransaction(request, 0.0, reliable=False)
    drain(transaction)
    trying = response_to(request, 100)
    transaction.respond(trying, 3.5)
    transaction.receive(request, 4.0)
    assert drain(transaction) == [Transmit(serialize(trying)), Transmit(serialize(trying))]
    assert transaction.state is ServerState.PROCEEDING


@pytest.mark.parametrize(
    ("status", "when", "reliable"),
    [
        (408, 1.0, True),  # RFC 4320 §4.2
        (180, 5.0, True),  # RFC 4320 §4.1: only 100
        (100, 3.4, False),  # RFC 4320 §4.1: too early over UDP
    ],
)
def test_rfc4320_forbidden_responses(status, when, reliable):
    """408, non-100 provisionals, and an early 100 over UDP are refused (RFC 4320 §4)."""
    request = message_request()
    transaction = ServerTransaction(request, 0.0, reliable=reliable)
    with pytest.raises(ValueError):
        transaction.respond(response_to(request, status), when)


def test_100_over_tcp_is_fine_at_once():
    """A 100 may go over a reliable transport at any time (RFC 4320 §4.1)."""
    request = message_request(transport="TCP")
    transaction = ServerTransaction(request, 0.0, reliable=True)
    transaction.respond(response_to(request, 100), 0.0)
    assert transaction.state is ServerState.PROCEEDING


def test_server_transport_error():
    """A transport error while Completed informs the TU and terminates (Figure 8)."""
    request = message_request()
    transaction = ServerTransaction(request, 0.0, reliable=False)
    transaction.respond(response_to(request, 200), 0.0)
    drain(transaction)
    transaction.transport_error("unreachable", 0.1)
    assert drain(transaction) == [TransportFailed("unreachable"), Terminated()]


def test_server_table_follows_figure_8():
    """Figure 8's Trying has no transport-error arrow; Proceeding and Completed do."""
    assert (ServerState.TRYING, ServerState.TERMINATED) not in {
        (state, target) for (state, _), (target, _) in SERVER_TRANSITIONS.items()
    }
    assert {state for state, _ in SERVER_TRANSITIONS} == {
        ServerState.TRYING,
        ServerState.PROCEEDING,
        ServerState.COMPLETED,
    }


# --- layer: matching (RFC 3261 §17.1.3, §17.2.3) -----------------------------------------


def layer_events(layer: TransactionLayer) -> list[LayerEvent]:
    events = []
    while (event := layer.next_event()) is not None:
        events.append(event)
    return events


def test_branches_have_the_magic_cookie_and_are_unique():
    """Generated branches start with z9hG4bK and do not repeat (§8.1.1.7)."""
    layer = TransactionLayer()
    branches = {layer.new_branch() for _ in range(100)}
    assert len(branches) == 100 and all(b.startswith("z9hG4bK") for b in branches)


def test_request_without_magic_cookie_is_refused():
    """Our own requests MUST carry a z9hG4bK branch (§8.1.1.7)."""
    with pytest.raises(ValueError):
        TransactionLayer().send_request(message_request(branch="old-style"), 0.0, reliable=True)


def test_response_matches_by_branch_and_cseq_method():
    """A response matches on top Via branch and CSeq method (§17.1.3)."""
    layer = TransactionLayer()
    request = message_request()
    client = layer.send_request(request, 0.0, reliable=False, context=("192.0.2.1", 5060))
    (first,) = layer_events(layer)
    assert first == LayerEvent(client, Transmit(serialize(request)))
    assert first.transaction.context == ("192.0.2.1", 5060)
    cancel_response = response_to(message_request(method="CANCEL"), 200)
    assert layer.receive(cancel_response, 0.1, reliable=False) is None  # same branch, other method
    ok = response_to(request, 200)
    assert layer.receive(ok, 0.2, reliable=False) is client
    assert layer_events(layer) == [LayerEvent(client, ResponseReceived(ok))]


def test_stray_response_is_dropped():
    """A response matching no transaction is discarded silently."""
    layer = TransactionLayer()
    assert layer.receive(response_to(message_request(), 200), 0.0, reliable=False) is None
    assert layer_events(layer) == []


def test_retransmitted_request_is_answered_without_the_tu():
    """A retransmission is answered from the server transaction; the TU sees one request (§17.2.3)."""
    layer = TransactionLayer()
    request = message_request()
    server = layer.receive(request, 0.0, reliable=False)
    assert isinstance(server, ServerTransaction)
    assert layer_events(layer) == [LayerEvent(server, RequestReceived(request))]
    ok = response_to(request, 200)
    server.respond(ok, 0.1)  # driven directly; the layer still sees its output
    assert layer_events(layer) == [LayerEvent(server, Transmit(serialize(ok)))]
    retransmission = parse_datagram(serialize(request))
    assert isinstance(retransmission, SipRequest)
    assert layer.receive(retransmission, 0.6, reliable=False) is server
    assert layer_events(layer) == [LayerEvent(server, Transmit(serialize(ok)))]


def test_same_branch_from_another_sent_by_is_another_transaction():
    """Branch, sent-by and method all have to match (§17.2.3 rules 1-3)."""
    layer = TransactionLayer()
    first = layer.receive(message_request(), 0.0, reliable=False)
    second = layer.receive(message_request(sent_by="evil.example.com"), 0.0, reliable=False)
    third = layer.receive(message_request(method="OPTIONS"), 0.0, reliable=False)
    assert len({id(first), id(second), id(third)}) == 3
    assert len(layer.server_transactions) == 3


def test_rfc2543_requests_match_without_the_cookie():
    """Without z9hG4bK, matching uses Request-URI, tags, Call-ID, CSeq and top Via (§17.2.3)."""
    layer = TransactionLayer()
    first = layer.receive(message_request(branch="1234"), 0.0, reliable=False)
    assert layer.receive(message_request(branch="1234"), 0.5, reliable=False) is first
    assert layer.receive(message_request(branch="1234", cseq=2), 0.5, reliable=False) is not first


def test_ack_is_absorbed():
    """An ACK never creates a server transaction."""
    layer = TransactionLayer()
    assert layer.receive(message_request(method="ACK"), 0.0, reliable=False) is None
    assert layer_events(layer) == [] and not layer.server_transactions


def test_layer_timers_and_cleanup():
    """The layer fires the earliest deadline and forgets terminated transactions."""
    layer = TransactionLayer()
    request = message_request()
    client = layer.send_request(request, 0.0, reliable=False)
    server = layer.receive(
        message_request(branch="z9hG4bKin", sent_by="peer.example.com"), 0.0, reliable=False
    )
    assert isinstance(server, ServerTransaction)
    server.respond(response_to(server.request, 200), 0.0)
    layer_events(layer)
    assert layer.next_deadline() == 0.5  # client Timer E
    layer.timer(0.5)
    assert layer_events(layer) == [LayerEvent(client, Transmit(serialize(request)))]
    layer.receive(response_to(request, 200), 0.7, reliable=False)
    layer.timer(40.0)  # past Timer K (5.7) and Timer J (32)
    events = layer_events(layer)
    assert [e.event for e in events] == [
        ResponseReceived(response_to(request, 200)),
        Terminated(),
        Terminated(),
    ]
    assert not layer.client_transactions and not layer.server_transactions
    assert layer.next_deadline() is None


def test_duplicate_client_transaction_is_refused():
    """Two live client transactions cannot share a branch and method."""
    layer = TransactionLayer()
    layer.send_request(message_request(), 0.0, reliable=True)
    with pytest.raises(ValueError):
        layer.send_request(message_request(), 0.0, reliable=True)


# --- the Twisted edge: one delayed call per layer (STYLE.md G4) ---------------------------


class ClockDriver:
    """What the Twisted transport will do: keep one IDelayedCall at next_deadline()."""

    def __init__(self, layer: TransactionLayer, clock: Clock) -> None:
        self.layer = layer
        self.clock = clock
        self.call: IDelayedCall | None = None
        self.sent: list[tuple[float, bytes]] = []
        self.tu: list[tuple[float, Event]] = []

    def pump(self) -> None:
        while (item := self.layer.next_event()) is not None:
            if isinstance(item.event, Transmit):
                self.sent.append((self.clock.seconds(), item.event.data))
            else:
                self.tu.append((self.clock.seconds(), item.event))
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = None
        deadline = self.layer.next_deadline()
        if deadline is not None:
            self.call = self.clock.callLater(max(0.0, deadline - self.clock.seconds()), self.fire)

    def fire(self) -> None:
        self.call = None
        self.layer.timer(self.clock.seconds())
        self.pump()


def test_clock_driven_timeout_leaves_no_delayed_call():
    """Driven by task.Clock, a silent peer gets 11 sends, then a timeout, and no timer stays."""
    clock = Clock()
    layer = TransactionLayer()
    driver = ClockDriver(layer, clock)
    layer.send_request(message_request(), clock.seconds(), reliable=False)
    driver.pump()
    clock.pump([0.25] * 200)
    assert [t for t, _ in driver.sent] == [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert [e for _, e in driver.tu] == [TimedOut(), Terminated()]
    assert driver.tu[0][0] == 32.0
    assert clock.getDelayedCalls() == []


def test_invite_can_be_rejected_through_the_layer():
    """An INVITE gets a server transaction so its rejection is resent on retransmission."""
    layer = TransactionLayer()
    invite = message_request(method="INVITE")
    server = layer.receive(invite, 0.0, reliable=False)
    assert isinstance(server, ServerTransaction)
    rejection = response_to(invite, 488)
    server.respond(rejection, 0.0)
    layer.receive(invite, 0.5, reliable=False)
    transmits = [e.event for e in layer_events(layer) if isinstance(e.event, Transmit)]
    assert transmits == [Transmit(serialize(rejection))] * 2
