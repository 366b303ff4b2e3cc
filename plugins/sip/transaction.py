"""Non-INVITE SIP transactions and the transaction layer, sans-I/O (STYLE.md G4).

* Client: RFC 3261 §17.1.2 (Figure 6, "non-INVITE client transaction"): states
  Trying, Proceeding, Completed, Terminated; Timer E retransmits over unreliable
  transports from T1 doubling up to T2, Timer F (64*T1) times out, Timer K (T4 on
  unreliable transports, zero on reliable ones) absorbs retransmitted responses.
  §17.1.4: a transport error informs the TU and terminates.
* Server: RFC 3261 §17.2.2 (Figure 8, "non-INVITE server transaction"): states Trying,
  Proceeding, Completed, Terminated; request retransmissions are absorbed in Trying and
  answered with the last response afterwards; Timer J (64*T1 unreliable, zero reliable).
  RFC 4320 §4.1-§4.2 limits which responses the TU may send.
* Matching: RFC 3261 §17.1.3 (responses by top Via branch + CSeq method) and §17.2.3
  (requests by branch + sent-by + method, with the RFC 2543 fallback).
* Timer values: RFC 3261 §17.1.1.1 and Table 4 (T1 = 500 ms, T2 = 4 s, T4 = 5 s).

Design: every object takes ``now`` (seconds, any monotonic origin) in each call,
exposes :meth:`next_deadline` and :meth:`timer`, and queues its outputs for
:meth:`next_event`: :class:`Transmit` (bytes for the transport), and the TU's events
:class:`ResponseReceived`, :class:`RequestReceived`, :class:`TimedOut`,
:class:`TransportFailed` and :class:`Terminated`. Transitions are the literal tables
:data:`CLIENT_TRANSITIONS` and :data:`SERVER_TRANSITIONS`, read off the figures.
A Twisted driver keeps one ``IDelayedCall`` at :meth:`TransactionLayer.next_deadline`.
"""

from __future__ import annotations

import heapq
import itertools
import secrets
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType
from typing import Final

from plugins.sip.codec import MAGIC_COOKIE, SipRequest, SipResponse, serialize

__all__ = [
    "CLIENT_TRANSITIONS",
    "SERVER_TRANSITIONS",
    "ClientAction",
    "ClientInput",
    "ClientState",
    "ClientTransaction",
    "Event",
    "LayerEvent",
    "RequestReceived",
    "ResponseReceived",
    "ServerAction",
    "ServerInput",
    "ServerState",
    "ServerTransaction",
    "Terminated",
    "TimedOut",
    "TimerConfig",
    "TransactionLayer",
    "Transmit",
    "TransportFailed",
    "client_key",
    "server_key",
]


@dataclass(frozen=True)
class TimerConfig:
    """RFC 3261 §17.1.1.1 / Table 4 timer values, in seconds."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0

    @property
    def timer_f(self) -> float:
        """Timer F: 64*T1, the non-INVITE transaction timeout (RFC 3261 Table 4)."""
        return 64 * self.t1

    @property
    def timer_j(self) -> float:
        """Timer J on unreliable transports: 64*T1 (RFC 3261 Table 4)."""
        return 64 * self.t1

    @property
    def e_reaches_t2(self) -> float:
        """When a client's Timer E is first reset to T2: T1 + 2*T1 + ... below T2.

        RFC 4320 §4.1 forbids a 100 to a non-INVITE request over an unreliable
        transport before this much time has passed (3.5 s with the defaults).
        """
        total, interval = 0.0, self.t1
        while interval < self.t2:
            total += interval
            interval *= 2
        return total


DEFAULT_TIMERS: Final = TimerConfig()


# --- events ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Transmit:
    """Bytes for the transport to send to the transaction's peer."""

    data: bytes


@dataclass(frozen=True)
class ResponseReceived:
    """A response for the TU of a client transaction (1xx or final, first copy only)."""

    response: SipResponse


@dataclass(frozen=True)
class RequestReceived:
    """A new request for the TU, which answers through the server transaction."""

    request: SipRequest


@dataclass(frozen=True)
class TimedOut:
    """Timer F fired: no final response. RFC 3261 §8.1.3.1: treat it as a 408."""


@dataclass(frozen=True)
class TransportFailed:
    """The transport could not send. RFC 3261 §8.1.3.1: treat it as a 503."""

    reason: str


@dataclass(frozen=True)
class Terminated:
    """The transaction reached Terminated and must be destroyed (RFC 3261 §17.1.2.2)."""


Event = Transmit | ResponseReceived | RequestReceived | TimedOut | TransportFailed | Terminated


# --- client transaction (RFC 3261 §17.1.2, Figure 6) -------------------------------------


class ClientState(Enum):
    """States of Figure 6."""

    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    TERMINATED = "Terminated"


class ClientInput(Enum):
    """Events labelling the arrows of Figure 6."""

    PROVISIONAL = "1xx"
    FINAL = "200-699"
    TIMER_E = "Timer E"
    TIMER_F = "Timer F"
    TIMER_K = "Timer K"
    TRANSPORT_ERROR = "Transport Err."


class ClientAction(Enum):
    """Actions written under the arrows of Figure 6."""

    SEND_REQUEST = "send request"
    RESPONSE_TO_TU = "resp. to TU"
    INFORM_TU_TIMEOUT = "inform TU"
    INFORM_TU_TRANSPORT_ERROR = "inform TU (transport)"


_CS, _CI, _CA = ClientState, ClientInput, ClientAction

#: RFC 3261 Figure 6, "non-INVITE client transaction": (state, event) -> (next state,
#: actions). Pairs not listed are ignored (stale timers, responses after termination).
ClientTable = Mapping[tuple[ClientState, ClientInput], tuple[ClientState, tuple[ClientAction, ...]]]
CLIENT_TRANSITIONS: Final[ClientTable] = MappingProxyType(
    {
        (_CS.TRYING, _CI.TIMER_E): (_CS.TRYING, (_CA.SEND_REQUEST,)),
        (_CS.TRYING, _CI.PROVISIONAL): (_CS.PROCEEDING, (_CA.RESPONSE_TO_TU,)),
        (_CS.TRYING, _CI.FINAL): (_CS.COMPLETED, (_CA.RESPONSE_TO_TU,)),
        (_CS.TRYING, _CI.TIMER_F): (_CS.TERMINATED, (_CA.INFORM_TU_TIMEOUT,)),
        (_CS.TRYING, _CI.TRANSPORT_ERROR): (_CS.TERMINATED, (_CA.INFORM_TU_TRANSPORT_ERROR,)),
        (_CS.PROCEEDING, _CI.TIMER_E): (_CS.PROCEEDING, (_CA.SEND_REQUEST,)),
        (_CS.PROCEEDING, _CI.PROVISIONAL): (_CS.PROCEEDING, (_CA.RESPONSE_TO_TU,)),
        (_CS.PROCEEDING, _CI.FINAL): (_CS.COMPLETED, (_CA.RESPONSE_TO_TU,)),
        (_CS.PROCEEDING, _CI.TIMER_F): (_CS.TERMINATED, (_CA.INFORM_TU_TIMEOUT,)),
        (_CS.PROCEEDING, _CI.TRANSPORT_ERROR): (_CS.TERMINATED, (_CA.INFORM_TU_TRANSPORT_ERROR,)),
        # §17.1.2.2: Completed "exists to buffer any additional response retransmissions".
        (_CS.COMPLETED, _CI.PROVISIONAL): (_CS.COMPLETED, ()),
        (_CS.COMPLETED, _CI.FINAL): (_CS.COMPLETED, ()),
        (_CS.COMPLETED, _CI.TIMER_K): (_CS.TERMINATED, ()),
    }
)

# When two timers are due at once, the one that ends the transaction goes first:
# retransmitting a request in the instant we give up on it is pointless.
_CLIENT_TIMER_ORDER: Final = {_CI.TIMER_F: 0, _CI.TIMER_K: 1, _CI.TIMER_E: 2}


def client_key(message: SipRequest | SipResponse) -> tuple[str, str]:
    """RFC 3261 §17.1.3: top Via branch and CSeq method ("a CANCEL request constitutes
    a different transaction, but shares the same value of the branch parameter")."""
    return (message.branch or "", message.cseq.method)


class ClientTransaction:
    """A non-INVITE client transaction (RFC 3261 §17.1.2.2).

    Created with the request to send; queues the first :class:`Transmit` at once.

    :param reliable: the transport is reliable (TCP, TLS): no Timer E, Timer K = 0.
    :param context: opaque to the transaction (e.g. where the transport sends).
    """

    def __init__(
        self,
        request: SipRequest,
        now: float,
        *,
        reliable: bool,
        timers: TimerConfig = DEFAULT_TIMERS,
        context: object = None,
        listener: Callable[[ClientTransaction], None] | None = None,
    ) -> None:
        if request.method in ("INVITE", "ACK"):
            raise ValueError("INVITE and ACK use the INVITE client transaction (RFC 3261 §17.1.1)")
        self.request = request
        self.reliable = reliable
        self.timers = timers
        self.context = context
        self.key = client_key(request)
        self.state = ClientState.TRYING
        self.final_response: SipResponse | None = None
        self._listener = listener
        self._data = serialize(request)
        self._events: deque[Event] = deque()
        self._deadlines: dict[ClientInput, float] = {}
        self._interval_e = timers.t1
        # §17.1.2.2: "When entering this state, the client transaction SHOULD set timer
        # F to fire in 64*T1 seconds. The request MUST be passed to the transport layer
        # for transmission. If an unreliable transport is in use, the client transaction
        # MUST set timer E to fire in T1 seconds."
        self._deadlines[ClientInput.TIMER_F] = now + timers.timer_f
        if not reliable:
            self._deadlines[ClientInput.TIMER_E] = now + timers.t1
        self._emit(Transmit(self._data))

    @property
    def terminated(self) -> bool:
        """Whether the transaction is over and must be dropped."""
        return self.state is ClientState.TERMINATED

    def receive(self, response: SipResponse, now: float) -> None:
        """Feed a response that matched this transaction (RFC 3261 §17.1.3)."""
        self._handle(ClientInput.PROVISIONAL if response.provisional else ClientInput.FINAL, now, response)

    def transport_error(self, reason: str, now: float) -> None:
        """The transport failed to send our request (RFC 3261 §17.1.4)."""
        self._handle(ClientInput.TRANSPORT_ERROR, now, reason=reason)

    def next_deadline(self) -> float | None:
        """When :meth:`timer` must next be called, or ``None``."""
        return min(self._deadlines.values(), default=None)

    def timer(self, now: float) -> None:
        """Fire every timer due at ``now``, earliest first."""
        while not self.terminated:
            due = [(d, _CLIENT_TIMER_ORDER[t], t) for t, d in self._deadlines.items() if d <= now]
            if not due:
                return
            _, _, which = min(due)
            del self._deadlines[which]
            self._handle(which, now)

    def next_event(self) -> Event | None:
        """The next queued output, or ``None``."""
        return self._events.popleft() if self._events else None

    def _emit(self, event: Event) -> None:
        self._events.append(event)
        if self._listener is not None:
            self._listener(self)

    def _handle(
        self, event: ClientInput, now: float, response: SipResponse | None = None, reason: str = ""
    ) -> None:
        transition = CLIENT_TRANSITIONS.get((self.state, event))
        if transition is None:
            return
        old, (new, actions) = self.state, transition
        self.state = new
        for action in actions:
            if action is ClientAction.SEND_REQUEST:
                self._emit(Transmit(self._data))
            elif action is ClientAction.RESPONSE_TO_TU:
                assert response is not None
                if response.final:
                    self.final_response = response
                self._emit(ResponseReceived(response))
            elif action is ClientAction.INFORM_TU_TIMEOUT:
                self._emit(TimedOut())
            elif action is ClientAction.INFORM_TU_TRANSPORT_ERROR:
                self._emit(TransportFailed(reason))
        if event is ClientInput.TIMER_E and new is not ClientState.TERMINATED:
            if old is ClientState.TRYING:
                # §17.1.2.2: reset "with a value of MIN(2*T1, T2) ... MIN(4*T1, T2)" and so on.
                self._interval_e = min(2 * self._interval_e, self.timers.t2)
            else:
                # §17.1.2.2: in Proceeding "Timer E MUST be reset with a value of T2 seconds".
                self._interval_e = self.timers.t2
            self._deadlines[ClientInput.TIMER_E] = now + self._interval_e
        if new is not old:
            self._enter(new, now)

    def _enter(self, state: ClientState, now: float) -> None:
        if state is ClientState.COMPLETED:
            self._deadlines.clear()
            # §17.1.2.2: "it MUST set Timer K to fire in T4 seconds for unreliable
            # transports, and zero seconds for reliable transports." Zero fires now.
            if self.reliable:
                self._handle(ClientInput.TIMER_K, now)
            else:
                self._deadlines[ClientInput.TIMER_K] = now + self.timers.t4
        elif state is ClientState.TERMINATED:
            # §17.1.2.2: "Once the transaction is in the terminated state, it MUST be
            # destroyed immediately": no timer may outlive it.
            self._deadlines.clear()
            self._emit(Terminated())


# --- server transaction (RFC 3261 §17.2.2, Figure 8) -------------------------------------


class ServerState(Enum):
    """States of Figure 8."""

    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    TERMINATED = "Terminated"


class ServerInput(Enum):
    """Events labelling the arrows of Figure 8."""

    REQUEST = "Request"
    PROVISIONAL_FROM_TU = "1xx from TU"
    FINAL_FROM_TU = "200-699 from TU"
    TIMER_J = "Timer J fires"
    TRANSPORT_ERROR = "Trnsprt Err"


class ServerAction(Enum):
    """Actions written under the arrows of Figure 8."""

    SEND_RESPONSE = "send response"
    RESEND_LAST_RESPONSE = "send response (retransmission)"
    INFORM_TU = "Inform TU"


_SS, _SI, _SA = ServerState, ServerInput, ServerAction

#: RFC 3261 Figure 8, "non-INVITE server transaction": (state, event) -> (next state,
#: actions). Pairs not listed are ignored.
ServerTable = Mapping[tuple[ServerState, ServerInput], tuple[ServerState, tuple[ServerAction, ...]]]
SERVER_TRANSITIONS: Final[ServerTable] = MappingProxyType(
    {
        # §17.2.2: "Once in the 'Trying' state, any further request retransmissions are
        # discarded."
        (_SS.TRYING, _SI.REQUEST): (_SS.TRYING, ()),
        (_SS.TRYING, _SI.PROVISIONAL_FROM_TU): (_SS.PROCEEDING, (_SA.SEND_RESPONSE,)),
        (_SS.TRYING, _SI.FINAL_FROM_TU): (_SS.COMPLETED, (_SA.SEND_RESPONSE,)),
        (_SS.PROCEEDING, _SI.REQUEST): (_SS.PROCEEDING, (_SA.RESEND_LAST_RESPONSE,)),
        (_SS.PROCEEDING, _SI.PROVISIONAL_FROM_TU): (_SS.PROCEEDING, (_SA.SEND_RESPONSE,)),
        (_SS.PROCEEDING, _SI.FINAL_FROM_TU): (_SS.COMPLETED, (_SA.SEND_RESPONSE,)),
        (_SS.PROCEEDING, _SI.TRANSPORT_ERROR): (_SS.TERMINATED, (_SA.INFORM_TU,)),
        (_SS.COMPLETED, _SI.REQUEST): (_SS.COMPLETED, (_SA.RESEND_LAST_RESPONSE,)),
        # §17.2.2: "Any other final responses passed by the TU to the server transaction
        # MUST be discarded while in the 'Completed' state."
        (_SS.COMPLETED, _SI.FINAL_FROM_TU): (_SS.COMPLETED, ()),
        (_SS.COMPLETED, _SI.PROVISIONAL_FROM_TU): (_SS.COMPLETED, ()),
        (_SS.COMPLETED, _SI.TIMER_J): (_SS.TERMINATED, ()),
        (_SS.COMPLETED, _SI.TRANSPORT_ERROR): (_SS.TERMINATED, (_SA.INFORM_TU,)),
    }
)


def server_key(request: SipRequest) -> tuple[str, ...]:
    """The key matching a request to its server transaction (RFC 3261 §17.2.3).

    With the magic cookie: branch, sent-by and method (ACK matches its INVITE).
    Without (RFC 2543 peers): Request-URI, To tag, From tag, Call-ID, CSeq and top Via.
    """
    via = request.top_via
    branch = via.branch or ""
    method = "INVITE" if request.method == "ACK" else request.method
    if branch.startswith(MAGIC_COOKIE):
        return ("3261", branch, via.sent_by, method)
    cseq = request.cseq
    return (
        "2543",
        request.uri,
        request.to_tag or "",
        request.from_tag or "",
        request.call_id,
        f"{cseq.number} {method}",
        str(via),
    )


class ServerTransaction:
    """A non-INVITE server transaction (RFC 3261 §17.2.2).

    Created with the received request; queues :class:`RequestReceived` for the TU,
    which answers with :meth:`respond`.
    """

    def __init__(
        self,
        request: SipRequest,
        now: float,
        *,
        reliable: bool,
        timers: TimerConfig = DEFAULT_TIMERS,
        context: object = None,
        listener: Callable[[ServerTransaction], None] | None = None,
    ) -> None:
        self.request = request
        self.reliable = reliable
        self.timers = timers
        self.context = context
        self.key = server_key(request)
        self.state = ServerState.TRYING
        self.created = now
        self._listener = listener
        self._events: deque[Event] = deque()
        self._last_response: bytes | None = None
        self._deadline_j: float | None = None
        # §17.2.2: "This request is passed up to the TU."
        self._emit(RequestReceived(request))

    @property
    def terminated(self) -> bool:
        """Whether the transaction is over and must be dropped."""
        return self.state is ServerState.TERMINATED

    def receive(self, request: SipRequest, now: float) -> None:
        """Feed a retransmission of the request (matched by RFC 3261 §17.2.3)."""
        self._handle(ServerInput.REQUEST, now)

    def respond(self, response: SipResponse, now: float) -> None:
        """Send the TU's response.

        :raises ValueError: for responses RFC 4320 forbids on non-INVITE requests.
        """
        # COMPAT: an INVITE borrows this machine only to be rejected (see
        # TransactionLayer.receive); RFC 4320 governs non-INVITE requests alone.
        if self.request.method != "INVITE":
            self._check_rfc4320(response, now)
        event = ServerInput.PROVISIONAL_FROM_TU if response.provisional else ServerInput.FINAL_FROM_TU
        self._handle(event, now, serialize(response))

    def _check_rfc4320(self, response: SipResponse, now: float) -> None:
        if response.status == 408:
            # RFC 4320 §4.2: "A transaction-stateful SIP element MUST NOT send a response
            # with Status-Code of 408 to a non-INVITE request."
            raise ValueError("RFC 4320 §4.2: no 408 to a non-INVITE request")
        if 100 < response.status < 200:
            # RFC 4320 §4.1: "A SIP element MUST NOT send any provisional response with a
            # Status-Code other than 100 to a non-INVITE request."
            raise ValueError("RFC 4320 §4.1: no 1xx other than 100 to a non-INVITE request")
        if response.status == 100 and not self.reliable and now - self.created < self.timers.e_reaches_t2:
            # RFC 4320 §4.1: no 100 over an unreliable transport "before the amount of
            # time it takes a client transaction's Timer E to be reset to T2".
            raise ValueError("RFC 4320 §4.1: too early for a 100 over an unreliable transport")

    def transport_error(self, reason: str, now: float) -> None:
        """The transport failed to send our response (Figure 8, "Trnsprt Err")."""
        self._handle(ServerInput.TRANSPORT_ERROR, now, reason=reason)

    def next_deadline(self) -> float | None:
        """When :meth:`timer` must next be called, or ``None``."""
        return self._deadline_j

    def timer(self, now: float) -> None:
        """Fire Timer J if it is due."""
        if self._deadline_j is not None and self._deadline_j <= now:
            self._deadline_j = None
            self._handle(ServerInput.TIMER_J, now)

    def next_event(self) -> Event | None:
        """The next queued output, or ``None``."""
        return self._events.popleft() if self._events else None

    def _emit(self, event: Event) -> None:
        self._events.append(event)
        if self._listener is not None:
            self._listener(self)

    def _handle(self, event: ServerInput, now: float, data: bytes | None = None, reason: str = "") -> None:
        transition = SERVER_TRANSITIONS.get((self.state, event))
        if transition is None:
            return
        old, (new, actions) = self.state, transition
        self.state = new
        for action in actions:
            if action is ServerAction.SEND_RESPONSE:
                assert data is not None
                self._last_response = data
                self._emit(Transmit(data))
            elif action is ServerAction.RESEND_LAST_RESPONSE:
                # §17.2.2: "the most recently sent provisional response MUST be passed to
                # the transport layer for retransmission" (Proceeding); "MUST pass the
                # final response ... whenever a retransmission of the request is
                # received" (Completed).
                assert self._last_response is not None
                self._emit(Transmit(self._last_response))
            elif action is ServerAction.INFORM_TU:
                self._emit(TransportFailed(reason))
        if new is not old:
            self._enter(new, now)

    def _enter(self, state: ServerState, now: float) -> None:
        if state is ServerState.COMPLETED:
            # §17.2.2: "it MUST set Timer J to fire in 64*T1 seconds for unreliable
            # transports, and zero seconds for reliable transports." Zero fires now.
            if self.reliable:
                self._handle(ServerInput.TIMER_J, now)
            else:
                self._deadline_j = now + self.timers.timer_j
        elif state is ServerState.TERMINATED:
            # §17.2.2: "The server transaction MUST be destroyed the instant it enters the
            # 'Terminated' state."
            self._deadline_j = None
            self._emit(Terminated())


# --- transaction layer -------------------------------------------------------------------

Transaction = ClientTransaction | ServerTransaction


@dataclass(frozen=True)
class LayerEvent:
    """An output of one of the layer's transactions."""

    transaction: Transaction
    event: Event


def _random_branch() -> str:
    # RFC 3261 §8.1.1.7: unique "across space and time", beginning with the magic cookie.
    return MAGIC_COOKIE + secrets.token_hex(12)


class TransactionLayer:
    """Holds the live transactions, matches messages to them and runs their timers.

    Drive it with :meth:`send_request`, :meth:`receive`, :meth:`timer`; read outputs
    with :meth:`next_event` (each tagged with its transaction; ``Transmit`` goes to the
    transport using ``transaction.context``). Transactions created here may be driven
    directly too (``respond``, ``transport_error``): the layer notices their outputs.
    Do not call ``next_event`` on them yourself.
    """

    def __init__(
        self,
        *,
        timers: TimerConfig = DEFAULT_TIMERS,
        branch_factory: Callable[[], str] = _random_branch,
    ) -> None:
        self.timers = timers
        self._branch_factory = branch_factory
        self._clients: dict[tuple[str, ...], ClientTransaction] = {}
        self._servers: dict[tuple[str, ...], ServerTransaction] = {}
        self._events: deque[LayerEvent] = deque()
        self._dirty: deque[Transaction] = deque()
        self._heap: list[tuple[float, int, Transaction]] = []
        self._sequence = itertools.count()

    def new_branch(self) -> str:
        """A fresh top-Via branch with the RFC 3261 magic cookie (§8.1.1.7)."""
        branch = self._branch_factory()
        if not branch.startswith(MAGIC_COOKIE):
            raise ValueError("branch factory must produce branches starting with z9hG4bK")
        return branch

    @property
    def client_transactions(self) -> Mapping[tuple[str, ...], ClientTransaction]:
        """Live client transactions by key (read-only view)."""
        return MappingProxyType(self._clients)

    @property
    def server_transactions(self) -> Mapping[tuple[str, ...], ServerTransaction]:
        """Live server transactions by key (read-only view)."""
        return MappingProxyType(self._servers)

    def send_request(
        self, request: SipRequest, now: float, *, reliable: bool, context: object = None
    ) -> ClientTransaction:
        """Start a client transaction for ``request``; its first Transmit is queued."""
        branch = request.branch or ""
        if not branch.startswith(MAGIC_COOKIE):
            # RFC 3261 §8.1.1.7: the branch "MUST always begin with the characters z9hG4bK".
            raise ValueError("the top Via branch must start with z9hG4bK (RFC 3261 §8.1.1.7)")
        if request.cseq.method != request.method:
            # RFC 3261 §8.1.1.5: the CSeq method "MUST match that of the request".
            raise ValueError("CSeq method differs from the request method")
        key = client_key(request)
        if key in self._clients:
            raise ValueError(f"a client transaction with branch {branch!r} already exists")
        transaction = ClientTransaction(
            request, now, reliable=reliable, timers=self.timers, context=context, listener=self._touched
        )
        self._clients[key] = transaction
        return transaction

    def receive(
        self, message: SipRequest | SipResponse, now: float, *, reliable: bool, context: object = None
    ) -> Transaction | None:
        """Route a parsed message to its transaction, creating server transactions.

        :returns: the transaction it went to, or ``None`` when it was dropped: a
            response matching no client transaction (RFC 3261 §17.1.3; a UAC core has
            nothing to do with it), or an ACK (we run no INVITE transactions).
        """
        if isinstance(message, SipResponse):
            client = self._clients.get(client_key(message))
            if client is not None:
                client.receive(message, now)
            return client
        key = server_key(message)
        server = self._servers.get(key)
        if message.method == "ACK":
            # An ACK matching a transaction is absorbed by it (§17.2.3 rule 3); others
            # belong to 2xx-to-INVITE dialogs, which a page-mode gateway never has.
            return server
        if server is not None:
            server.receive(message, now)
            return server
        # COMPAT: an INVITE also gets a non-INVITE server transaction, which is enough
        # to reject it and answer its retransmissions (no Timer G/H: we never accept).
        server = ServerTransaction(
            message, now, reliable=reliable, timers=self.timers, context=context, listener=self._touched
        )
        self._servers[key] = server
        return server

    def timer(self, now: float) -> None:
        """Fire every transaction timer due at ``now``."""
        self._flush()
        while self._heap and self._heap[0][0] <= now:
            deadline, _, transaction = heapq.heappop(self._heap)
            if not transaction.terminated and transaction.next_deadline() == deadline:
                transaction.timer(now)
            self._flush()

    def next_deadline(self) -> float | None:
        """The earliest timer of any transaction, or ``None`` when nothing is pending."""
        self._flush()
        while self._heap:
            deadline, _, transaction = self._heap[0]
            if not transaction.terminated and transaction.next_deadline() == deadline:
                return deadline
            heapq.heappop(self._heap)  # stale entry: the timer moved or was cancelled
        return None

    def next_event(self) -> LayerEvent | None:
        """The next output of any transaction, or ``None``."""
        self._flush()
        return self._events.popleft() if self._events else None

    def _touched(self, transaction: Transaction) -> None:
        self._dirty.append(transaction)

    def _flush(self) -> None:
        while self._dirty:
            transaction = self._dirty.popleft()
            while (event := transaction.next_event()) is not None:
                self._events.append(LayerEvent(transaction, event))
            if transaction.terminated:
                self._forget(transaction)
            elif (deadline := transaction.next_deadline()) is not None:
                heapq.heappush(self._heap, (deadline, next(self._sequence), transaction))

    def _forget(self, transaction: Transaction) -> None:
        if isinstance(transaction, ClientTransaction):
            if self._clients.get(transaction.key) is transaction:
                del self._clients[transaction.key]
        elif self._servers.get(transaction.key) is transaction:
            del self._servers[transaction.key]
