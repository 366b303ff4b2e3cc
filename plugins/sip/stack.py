"""The SIP stack: the sans-I/O transaction layer driven by Twisted (STYLE.md G4).

It owns the UDP socket, the TCP listener, the outbound TCP/TLS connections and one
:class:`~plugins.sip.transaction.TransactionLayer`, whose timers run on *one*
``IDelayedCall`` re-armed after every event. The transaction user (the plugin) sees:

* :meth:`SipStack.request`: send a request to a :class:`~plugins.sip.transport.Peer`
  as a new non-INVITE client transaction (RFC 3261 §17.1.2; the stack adds the top Via
  with a fresh branch, §8.1.1.7, and ``rport``, RFC 3581) and await its final response,
  a :class:`SipTimeout` (Timer F, §8.1.3.1: a 408) or a :class:`SipTransportError`
  (§8.1.3.1: a 503);
* the ``handler`` it was built with, called once per new request (RFC 3261 §17.2.2
  "passed up to the TU") and returning the response to send at once (decision 3 of
  reference/sip.md: SIP→XMPP is fire-and-acknowledge).

Malformed requests that can still be answered get the status their
:class:`~plugins.sip.errors.SipParseError` names (400, 413, 505...), statelessly;
everything else malformed is dropped (RFC 3261 §18.3 for responses).

Sockets are opened by :meth:`acquire` and closed by the matching last :meth:`release`,
so a gateway with no active SIP account holds no port and no timer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReactorTCP, IReactorTime, IReactorUDP
from twisted.internet.ssl import optionsForClientTLS, platformTrust
from twisted.python.failure import Failure

from plugins.sip.codec import SipMessage, SipParseError, SipRequest, SipResponse, make_response, serialize
from plugins.sip.response_route import response_peer, stamp_source
from plugins.sip.transaction import (
    ClientTransaction,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    TimedOut,
    TimerConfig,
    TransactionLayer,
    Transmit,
    TransportFailed,
)
from plugins.sip.transport import Origin, Peer, SipDatagramProtocol, SipStreamFactory, SipStreamProtocol

__all__ = ["SipStack", "SipTimeout", "SipTransportError", "StackSettings"]

log = logging.getLogger(__name__)

RequestHandler = Callable[[SipRequest, Origin], SipResponse | None]


class SipTimeout(Exception):
    """Timer F fired: no final response (RFC 3261 §8.1.3.1: treat as 408)."""


class SipTransportError(Exception):
    """The request could not be sent (RFC 3261 §8.1.3.1: treat as 503)."""


@dataclass(frozen=True, slots=True)
class StackSettings:
    """Where the stack listens and what it advertises."""

    listen_host: str = "0.0.0.0"
    udp_port: int = 5060
    """0 picks a free port (tests)."""
    tcp_port: int = 5060
    contact_host: str = ""
    """The host put in Via sent-by and Contact; empty: ``listen_host``."""
    user_agent: str = "xmpp-gateway"
    timers: TimerConfig = field(default_factory=TimerConfig)
    max_connections: int = 256
    """Accepted TCP connections at once; more are closed at once."""
    connect_timeout: float = 10.0
    keepalive: float = 60.0
    """Seconds between CRLF keep-alive pings on our TCP/TLS connections (RFC 5626 §4.4.1),
    so the proxy keeps the registration's connection, the only way to reach a TLS account;
    0 disables them."""
    idle_timeout: float = 600.0
    """Connections unused this long are closed: accepted ones (a peer cannot hold slots
    forever) and our own that no registration holds (:meth:`SipStack.hold`)."""
    trust_root: Any = None
    """What verifies TLS servers (``IOpenSSLTrustRoot``); ``None``: the platform's CAs."""


@dataclass(slots=True)
class _Destination:
    """A transaction's transport context: where its Transmits go."""

    peer: Peer
    connection: SipStreamProtocol | None = None
    source: Peer | None = None
    """For a server transaction: where the request came from (``peer`` is where the
    responses go, from its Via: RFC 3261 §18.2.2, RFC 3581)."""


def _when_done(deferred: Deferred[Any]) -> Deferred[None]:
    """A new Deferred fired when ``deferred`` fires, leaving its result to its own chain
    (several callers may wait for one close)."""
    waiter: Deferred[None] = Deferred()

    def done(result: object) -> object:
        waiter.callback(None)
        return result

    deferred.addBoth(done)
    return waiter


class SipStack:
    """One gateway's SIP endpoint (all its users share it)."""

    def __init__(self, reactor: IReactorTime, settings: StackSettings, handler: RequestHandler) -> None:
        self.reactor = reactor
        self.settings = settings
        self.handler = handler
        self.layer = TransactionLayer(timers=settings.timers)
        self.udp: SipDatagramProtocol | None = None
        self.udp_port: IListeningPort | None = None
        self.tcp_port: IListeningPort | None = None
        self._users = 0
        self._timer: IDelayedCall | None = None
        self._timer_at: float | None = None
        self._pending: dict[ClientTransaction, Deferred[SipResponse]] = {}
        self._outbound: dict[Peer, SipStreamProtocol] = {}
        self._connecting: dict[Peer, list[Deferred[SipStreamProtocol]]] = {}
        """Requests waiting for a connection attempt, per peer."""
        self._attempts: dict[Peer, Deferred[SipStreamProtocol]] = {}
        self._accepted: set[SipStreamProtocol] = set()
        self._held: dict[Peer, int] = {}
        """Peers a live registration depends on (its binding is reached over that connection),
        with how many: their connections are kept open and pinged; others close when idle."""
        self._housekeeping: IDelayedCall | None = None
        self._pumping = False
        self._closing: Deferred[Any] | None = None
        """The sockets of the last :meth:`close` until ``stopListening`` finished."""

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.udp_port is not None

    async def acquire(self) -> None:
        """Open the sockets if this is the first user; one :meth:`release` per call.

        Waits for sockets still closing (``stopListening`` may finish later: listening on
        the same port before that fails with EADDRINUSE). Raises ``CannotListenError``
        when a port is taken."""
        while self._closing is not None and not self.running:
            await _when_done(self._closing)
        if not self.running:
            self._listen()
        self._users += 1

    def _listen(self) -> None:
        settings = self.settings
        self.udp = SipDatagramProtocol(self)
        self.layer = TransactionLayer(timers=settings.timers)
        udp = cast(IReactorUDP, self.reactor).listenUDP(settings.udp_port, self.udp,
                                                        interface=settings.listen_host)
        try:
            self.tcp_port = cast(IReactorTCP, self.reactor).listenTCP(
                settings.tcp_port, SipStreamFactory(self, "tcp"), interface=settings.listen_host)
        except Exception:
            self._track_closing([maybeDeferred(udp.stopListening)])
            self.udp = None
            raise
        self.udp_port = udp
        log.info("SIP listening on %s (UDP %d, TCP %d)", settings.listen_host, self.port("udp"),
                 self.port("tcp"))

    async def release(self) -> None:
        """Drop one user; the last one closes every socket and forgets every transaction."""
        self._users = max(0, self._users - 1)
        if self._users or not self.running:
            return
        await self.close()

    async def close(self) -> None:
        """Close everything now (pending requests fail with a transport error)."""
        self._users = 0
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self._timer_at = None
        if self._housekeeping is not None and self._housekeeping.active():
            self._housekeeping.cancel()
        self._housekeeping = None
        pending, self._pending = self._pending, {}
        for deferred in pending.values():
            deferred.errback(SipTransportError("the SIP stack stopped"))
        for attempt in list(self._attempts.values()):
            attempt.cancel()  # stops the connector and its timeout; waiters get a transport error
        # Timers K and J only absorb retransmissions, which a closed socket cannot get.
        self.layer = TransactionLayer(timers=self.settings.timers)
        for connection in [*self._outbound.values(), *self._accepted]:
            connection.close()
        self._outbound.clear()
        self._accepted.clear()
        ports = [port for port in (self.udp_port, self.tcp_port) if port is not None]
        stops = [maybeDeferred(port.stopListening) for port in ports]
        self.udp_port = self.tcp_port = None
        self.udp = None
        if stops:
            await _when_done(self._track_closing(stops))

    def _track_closing(self, stops: list[Deferred[Any]]) -> Deferred[Any]:
        """Remember sockets being closed until they are, so :meth:`acquire` can wait."""
        closing: Deferred[Any] = DeferredList(stops, consumeErrors=True)
        self._closing = closing

        def closed(result: object) -> object:
            if self._closing is closing:
                self._closing = None
            return result

        closing.addBoth(closed)
        return closing

    # -- addressing -----------------------------------------------------------------------------

    def port(self, transport: str) -> int:
        """The local port requests over ``transport`` are sent from / answered at."""
        listening = self.udp_port if transport == "udp" else self.tcp_port
        if listening is None:
            raise RuntimeError("the SIP stack is not running")
        return int(listening.getHost().port)

    @property
    def contact_host(self) -> str:
        host = self.settings.contact_host or self.settings.listen_host
        return f"[{host}]" if ":" in host else host

    def sent_by(self, transport: str) -> str:
        """The Via sent-by for ``transport`` (RFC 3261 §18.1.1)."""
        # TLS requests leave over an outbound connection and their answers come back on it;
        # the port named is the TCP listener's (we have no TLS listener: no certificate).
        return f"{self.contact_host}:{self.port('tcp' if transport == 'tls' else transport)}"

    def contact(self, user: str, transport: str) -> str:
        """A Contact URI reaching this stack for the user part ``user`` (an opaque token)."""
        scheme = "sips" if transport == "tls" else "sip"
        suffix = "" if transport == "udp" else f";transport={'tcp' if transport == 'tcp' else 'tls'}"
        return f"{scheme}:{user}@{self.sent_by(transport)}{suffix}"

    @property
    def outbound_peers(self) -> frozenset[Peer]:
        """The peers we hold an open TCP/TLS connection to."""
        return frozenset(peer for peer, connection in self._outbound.items() if connection.connected_)

    def hold(self, peer: Peer) -> None:
        """A registration now depends on the connection to ``peer``: keep it (and ping it)."""
        if peer.reliable:
            self._held[peer] = self._held.get(peer, 0) + 1

    def unhold(self, peer: Peer) -> None:
        """Undo one :meth:`hold`; the connection then closes once idle."""
        count = self._held.get(peer, 0) - 1
        if count > 0:
            self._held[peer] = count
        else:
            self._held.pop(peer, None)

    def is_own_branch(self, branch: str | None) -> bool:
        """Whether a Via branch is one of our live client transactions (a loop, §8.2.2.2)."""
        if not branch:
            return False
        return any(key[0] == branch for key in self.layer.client_transactions)

    # -- client transactions --------------------------------------------------------------------

    async def request(self, request: SipRequest, peer: Peer) -> SipResponse:
        """Send ``request`` (without Via) to ``peer``; the final response, or raise
        :class:`SipTimeout` / :class:`SipTransportError`."""
        if not self.running:
            raise SipTransportError("the SIP stack is not running")
        connection = None
        if peer.reliable:
            connection = await self.connect(peer)
        branch = self.layer.new_branch()
        via = f"SIP/2.0/{peer.transport.upper()} {self.sent_by(peer.transport)};branch={branch};rport"
        if peer.reliable:
            via += ";alias"  # RFC 5923: the proxy may reuse this connection towards us
        request = SipRequest(request.method, request.uri, request.headers.remove("Via").prepend("Via", via),
                             request.body)
        result: Deferred[SipResponse] = Deferred()
        transaction = self.layer.send_request(request, self.reactor.seconds(), reliable=peer.reliable,
                                              context=_Destination(peer, connection))
        self._pending[transaction] = result
        self._pump()
        return await result

    async def connect(self, peer: Peer) -> SipStreamProtocol:
        """The open connection to ``peer``, connecting first if needed (one attempt per
        peer, shared by every request waiting for it)."""
        existing = self._outbound.get(peer)
        if existing is not None and existing.connected_:
            return existing
        waiter: Deferred[SipStreamProtocol] = Deferred()
        waiters = self._connecting.get(peer)
        if waiters is None:
            waiters = self._connecting[peer] = [waiter]
            attempt = self._open(peer)
            self._attempts[peer] = attempt
            attempt.addBoth(self._connect_done, peer)
        else:
            waiters.append(waiter)
        return await waiter

    def _connect_done(self, outcome: object, peer: Peer) -> None:
        self._attempts.pop(peer, None)
        waiters = self._connecting.pop(peer, [])
        if isinstance(outcome, SipStreamProtocol) and not self.running:
            outcome.close()  # connected just as the stack closed
            outcome = Failure(SipTransportError("the SIP stack stopped"))
        if isinstance(outcome, SipStreamProtocol):
            self._outbound[peer] = outcome
            self.touched(outcome)
            self._start_housekeeping()
            for waiter in waiters:
                waiter.callback(outcome)
            return
        reason = outcome.getErrorMessage() if isinstance(outcome, Failure) else outcome
        log.info("SIP connection to %s failed: %s", peer, reason)
        text = f"cannot connect to {peer.host}:{peer.port} over {peer.transport}"
        for waiter in waiters:
            waiter.errback(SipTransportError(text))

    def _open(self, peer: Peer) -> Deferred[SipStreamProtocol]:
        endpoint_class = TCP6ClientEndpoint if ":" in peer.host else TCP4ClientEndpoint
        endpoint: Any = endpoint_class(self.reactor, peer.host, peer.port,
                                       timeout=self.settings.connect_timeout)
        if peer.transport == "tls":
            # RFC 5922 §7.3: the certificate must match the SIP domain (or proxy host);
            # optionsForClientTLS checks the DNS-ID with service_identity. No fallback.
            name = peer.tls_name or peer.host
            trust = self.settings.trust_root or platformTrust()
            endpoint = wrapClientTLS(optionsForClientTLS(name, trustRoot=trust), endpoint)
        protocol = SipStreamProtocol(self, peer.transport, tls_name=peer.tls_name)
        protocol.peer = peer
        protocol.outbound = True
        return connectProtocol(endpoint, protocol)

    # -- MessageSink ------------------------------------------------------------------------------

    def message_received(self, message: SipMessage, origin: Origin) -> None:
        if self.udp is None:
            return
        now = self.reactor.seconds()
        if isinstance(message, SipResponse):
            self.layer.receive(message, now, reliable=origin.peer.reliable)
        else:
            message = stamp_source(message, origin.peer)
            self.layer.receive(message, now, reliable=origin.peer.reliable,
                               context=self._reply_destination(message, origin))
        self._pump()

    @staticmethod
    def _reply_destination(request: SipRequest, origin: Origin) -> _Destination:
        """Responses over a stream go back on its connection; over UDP where the Via says."""
        if origin.connection is not None:
            return _Destination(origin.peer, origin.connection, origin.peer)
        return _Destination(response_peer(request, origin.peer), None, origin.peer)

    def malformed(self, error: SipParseError, origin: Origin) -> None:
        if error.request is None:
            log.debug("dropping a malformed SIP message from %s: %s", origin.peer, error.reason)
            return
        log.info("answering a malformed SIP request from %s with %d: %s", origin.peer, error.status,
                 error.reason)
        try:
            request = stamp_source(error.request, origin.peer)
            response = make_response(request, error.status, headers=self._server_headers())
        except (SipParseError, ValueError):
            return
        # Stateless (RFC 3261 §8.2: the request is refused before it reaches the TU).
        self._transmit(serialize(response), self._reply_destination(request, origin))

    def connection_made(self, connection: SipStreamProtocol) -> None:
        if connection.outbound:
            return
        if len(self._accepted) >= self.settings.max_connections or not self.running:
            log.warning("closing SIP connection from %s: too many connections", connection.peer)
            connection.close()
            return
        self._accepted.add(connection)
        self.touched(connection)
        self._start_housekeeping()

    def touched(self, connection: SipStreamProtocol) -> None:
        connection.last_activity = self.reactor.seconds()

    # -- connection housekeeping: keep-alives out, idle connections in -------------------------

    def _housekeeping_interval(self) -> float:
        intervals = [self.settings.idle_timeout / 2]
        if self.settings.keepalive > 0:
            intervals.append(self.settings.keepalive)
        return max(1.0, min(intervals))

    def _start_housekeeping(self) -> None:
        if self._housekeeping is None and self.running:
            self._housekeeping = self.reactor.callLater(self._housekeeping_interval(), self._housekeep)

    def _housekeep(self) -> None:
        self._housekeeping = None
        now = self.reactor.seconds()
        for peer, connection in list(self._outbound.items()):
            if not connection.connected_:
                continue
            if self._held.get(peer):
                if self.settings.keepalive > 0:
                    # RFC 5626 §3.5.1: a ping is a double CRLF; the pong (CRLF) is read and dropped.
                    connection.send(b"\r\n\r\n")
            elif now - connection.last_activity >= self.settings.idle_timeout and not self._busy(connection):
                # No registration needs it (e.g. opened for one large MESSAGE, RFC 3261 §18.1.1).
                log.info("closing idle SIP connection to %s", peer)
                connection.close()
                del self._outbound[peer]
        for connection in list(self._accepted):
            if now - connection.last_activity >= self.settings.idle_timeout:
                log.info("closing idle SIP connection from %s", connection.peer)
                connection.close()
                self._accepted.discard(connection)
        if self._outbound or self._accepted:
            self._start_housekeeping()

    def _busy(self, connection: SipStreamProtocol) -> bool:
        """Whether a pending client transaction still waits for an answer on ``connection``."""
        return any(isinstance(t.context, _Destination) and t.context.connection is connection
                   for t in self._pending)

    def connection_lost(self, connection: SipStreamProtocol) -> None:
        self._accepted.discard(connection)
        for peer, known in list(self._outbound.items()):
            if known is connection:
                del self._outbound[peer]
        now = self.reactor.seconds()
        for transaction in list(self._pending):
            context = transaction.context
            if isinstance(context, _Destination) and context.connection is connection:
                transaction.transport_error("connection lost", now)
        self._pump()

    # -- the event pump -----------------------------------------------------------------------------

    def _server_headers(self) -> list[tuple[str, str]]:
        return [("Server", self.settings.user_agent)]

    def _pump(self) -> None:
        if self._pumping:
            return  # the outer loop will see the new events
        self._pumping = True
        try:
            while (item := self.layer.next_event()) is not None:
                try:
                    self._handle(item.transaction, item.event)
                except Exception:
                    log.exception("SIP transaction event %r failed", item.event)
        finally:
            self._pumping = False
        self._arm()

    def _handle(self, transaction: ClientTransaction | ServerTransaction, event: object) -> None:
        now = self.reactor.seconds()
        if isinstance(event, Transmit):
            context = transaction.context
            assert isinstance(context, _Destination)
            try:
                self._transmit(event.data, context)
            except OSError as exc:
                transaction.transport_error(str(exc), now)
        elif isinstance(event, ResponseReceived):
            if event.response.final and isinstance(transaction, ClientTransaction):
                deferred = self._pending.pop(transaction, None)
                if deferred is not None:
                    deferred.callback(event.response)
        elif isinstance(event, TimedOut):
            deferred = self._pending.pop(transaction, None)  # type: ignore[arg-type]
            if deferred is not None:
                deferred.errback(SipTimeout("no final response (Timer F)"))
        elif isinstance(event, TransportFailed):
            deferred = self._pending.pop(transaction, None)  # type: ignore[arg-type]
            if deferred is not None:
                deferred.errback(SipTransportError(event.reason or "transport error"))
        elif isinstance(event, RequestReceived) and isinstance(transaction, ServerTransaction):
            self._answer(transaction, event.request, now)

    def _answer(self, transaction: ServerTransaction, request: SipRequest, now: float) -> None:
        context = transaction.context
        assert isinstance(context, _Destination)
        try:
            response = self.handler(request, Origin(context.source or context.peer, context.connection))
        except Exception:
            log.exception("the SIP request handler failed on %s", request.method)
            response = make_response(request, 500, headers=self._server_headers())
        if response is not None:
            transaction.respond(response, now)

    def _transmit(self, data: bytes, destination: _Destination) -> None:
        if destination.connection is not None:
            destination.connection.send(data)
            self.touched(destination.connection)
        elif self.udp is not None:
            self.udp.send(data, destination.peer)
        else:
            raise OSError("the SIP stack is closed")

    def _arm(self) -> None:
        deadline = self.layer.next_deadline()
        if deadline == self._timer_at and self._timer is not None and self._timer.active():
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self._timer_at = None
        if deadline is not None and self.running:
            self._timer_at = deadline
            self._timer = self.reactor.callLater(max(0.0, deadline - self.reactor.seconds()), self._fire)

    def _fire(self) -> None:
        self._timer = self._timer_at = None
        self.layer.timer(self.reactor.seconds())
        self._pump()

