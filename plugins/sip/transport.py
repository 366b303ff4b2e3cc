"""SIP transports on Twisted: UDP datagrams and TCP/TLS streams (RFC 3261 §18).

Bytes only: these protocols frame and parse (with :mod:`plugins.sip.codec`) and hand
every message, or every parse failure, to a :class:`MessageSink` (the stack). Each
received datagram or stream event runs behind an exception barrier (STYLE.md G9):
hostile input is answered with a 4xx by the sink or dropped, and never stops a
transport.

* UDP: one message per datagram (RFC 3261 §18.3); CRLF-only datagrams are keep-alives.
* TCP/TLS: Content-Length framing; a double CRLF is a ping answered with a CRLF pong
  (RFC 5626 §3.5.1); a message that cannot be framed closes the connection after its
  error response (RFC 3261 §18.3).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol as TypingProtocol

from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.python.failure import Failure

from plugins.sip.codec import (
    NEED_DATA,
    KeepAlivePing,
    KeepAlivePong,
    SipMessage,
    SipParseError,
    StreamParser,
    parse_datagram,
)

__all__ = ["MessageSink", "Origin", "Peer", "SipDatagramProtocol", "SipStreamFactory", "SipStreamProtocol"]

log = logging.getLogger(__name__)

TRANSPORTS = ("udp", "tcp", "tls")
#: More messages than this in one read is a flood: the connection is closed, so one peer
#: cannot keep the reactor busy with thousands of tiny messages (a read is at most 64 KiB).
MAX_EVENTS_PER_READ = 1024


@dataclass(frozen=True, slots=True)
class Peer:
    """Where a message goes or came from: transport, IP address and port.

    :ivar tls_name: for TLS, the name the server certificate must match (RFC 5922:
        the SIP domain or the proxy's host name); empty otherwise.
    """

    transport: str
    host: str
    port: int
    tls_name: str = ""

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ValueError(f"unknown SIP transport {self.transport!r}")

    @property
    def reliable(self) -> bool:
        """TCP and TLS are reliable: no retransmissions (RFC 3261 §17.1.2.2)."""
        return self.transport != "udp"


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a received message came from: the peer, and the connection for streams
    (responses to a request go back on the connection it came in on, §18.2.2)."""

    peer: Peer
    connection: SipStreamProtocol | None = None


class MessageSink(TypingProtocol):
    """What the transports deliver to (the stack)."""

    def message_received(self, message: SipMessage, origin: Origin) -> None: ...

    def malformed(self, error: SipParseError, origin: Origin) -> None: ...

    def connection_made(self, connection: SipStreamProtocol) -> None: ...

    def connection_lost(self, connection: SipStreamProtocol) -> None: ...

    def touched(self, connection: SipStreamProtocol) -> None: ...


def _peer_of(address: IAddress | tuple[str, int] | None, transport: str, tls_name: str = "") -> Peer:
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is None and isinstance(address, tuple):
        host, port = address[0], address[1]
    return Peer(transport, str(host or "0.0.0.0"), int(port or 0), tls_name)


class SipDatagramProtocol(DatagramProtocol):
    """The UDP socket: every datagram is one message (RFC 3261 §18.3)."""

    def __init__(self, sink: MessageSink, *, max_size: int = 65535) -> None:
        self.sink = sink
        self.max_size = max_size

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        origin = Origin(_peer_of(addr, "udp"))
        try:
            try:
                message = parse_datagram(datagram, max_size=self.max_size)
            except SipParseError as exc:
                self.sink.malformed(exc, origin)
                return
            if message is not None:  # None: a CRLF keep-alive, nothing to do
                self.sink.message_received(message, origin)
        except Exception:
            # The barrier: one bad datagram (or a bug it triggers) never stops the socket.
            log.exception("SIP datagram from %s:%s could not be handled", *addr)

    def send(self, data: bytes, peer: Peer) -> None:
        """Send ``data`` to ``peer``; :class:`OSError` when the socket refuses it."""
        if self.transport is None:
            raise OSError("the SIP UDP socket is closed")
        self.transport.write(data, (peer.host, peer.port))


class SipStreamProtocol(Protocol):
    """One TCP or TLS connection, outbound or accepted; Content-Length framing."""

    def __init__(self, sink: MessageSink, transport_name: str, *, tls_name: str = "",
                 max_header_size: int = 16 * 1024, max_body_size: int = 64 * 1024) -> None:
        self.sink = sink
        self.transport_name = transport_name
        self.tls_name = tls_name
        self.parser = StreamParser(max_header_size=max_header_size, max_body_size=max_body_size)
        self.peer: Peer | None = None
        self.connected_ = False
        self.outbound = False
        """Opened by us (a client connection) rather than accepted by our listener."""
        self.last_activity = 0.0
        """When data last arrived, on the stack's clock (idle connections are closed)."""

    def connectionMade(self) -> None:
        if self.peer is None:  # an outbound connection already knows its peer (and TLS name)
            self.peer = _peer_of(self.transport.getPeer(), self.transport_name, self.tls_name)
        self.connected_ = True
        self.sink.connection_made(self)

    def dataReceived(self, data: bytes) -> None:
        self.sink.touched(self)
        self.parser.receive_data(data)
        assert self.peer is not None
        origin = Origin(self.peer, self)
        for _ in range(MAX_EVENTS_PER_READ):
            try:
                event = self.parser.next_event()
            except SipParseError as exc:
                try:
                    self.sink.malformed(exc, origin)
                except Exception:
                    log.exception("answering a malformed SIP message failed")
                if exc.fatal:
                    # RFC 3261 §18.3: the message boundary is lost; nothing after it can be read.
                    self.transport.loseConnection()
                    return
                continue
            if event is NEED_DATA:
                return
            try:
                if isinstance(event, KeepAlivePing):
                    self.transport.write(b"\r\n")  # RFC 5626 §3.5.1: pong
                elif isinstance(event, KeepAlivePong):
                    continue
                else:
                    self.sink.message_received(event, origin)  # type: ignore[arg-type]
            except Exception:
                log.exception("SIP message from %s could not be handled", self.peer)
        # A peer flooding one chunk with thousands of tiny messages: stop reading it.
        log.warning("SIP peer %s sent too many messages at once; closing", self.peer)
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = None) -> None:
        self.connected_ = False
        self.sink.connection_lost(self)

    def send(self, data: bytes) -> None:
        if not self.connected_ or self.transport is None:
            raise OSError(f"the SIP connection to {self.peer} is closed")
        self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()


class SipStreamFactory(Factory):
    """Builds stream protocols for accepted (server) or outbound (client) connections; the
    sink sees each one in ``connection_made`` and may close it (connection limits)."""

    def __init__(self, sink: MessageSink, transport_name: str, *, tls_name: str = "") -> None:
        self.sink = sink
        self.transport_name = transport_name
        self.tls_name = tls_name

    def buildProtocol(self, addr: IAddress) -> SipStreamProtocol:
        protocol = SipStreamProtocol(self.sink, self.transport_name, tls_name=self.tls_name)
        protocol.factory = self
        return protocol
