"""A socket-free reactor for the SIP stack's unit tests (STYLE.md G6).

``MemoryReactorClock`` has no UDP: :class:`SipTestReactor` adds ``listenUDP`` with a
:class:`FakeUdpPort` that records what the stack sends, and a ``listenTCP`` whose port
knows its number; like a real reactor, both refuse a port still listening (EADDRINUSE). Received datagrams are fed with :meth:`FakeUdpPort.receive`.
"""

from __future__ import annotations

import errno
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorUDP
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.testing import MemoryReactorClock
from zope.interface import implementer

from plugins.sip.codec import SipMessage, parse_datagram

PEER = ("192.0.2.10", 5060)


class FakeUdpPort:
    def __init__(self, protocol: DatagramProtocol, interface: str, port: int) -> None:
        self.protocol = protocol
        self.host = IPv4Address("UDP", interface or "0.0.0.0", port)
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.listening = True
        protocol.makeConnection(self)  # type: ignore[arg-type]

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))

    def getHost(self) -> IPv4Address:
        return self.host

    def stopListening(self) -> None:
        self.listening = False
        self.protocol.doStop()

    def receive(self, data: bytes, addr: tuple[str, int] = PEER) -> None:
        self.protocol.datagramReceived(data, addr)

    def messages(self) -> list[SipMessage]:
        """Every datagram sent so far, parsed (each must parse: we never send garbage)."""
        out = []
        for data, _ in self.sent:
            message = parse_datagram(data)
            assert message is not None
            out.append(message)
        return out

    def take(self) -> list[SipMessage]:
        messages = self.messages()
        self.sent.clear()
        return messages


class FakeTcpPort:
    def __init__(self, factory: Any, interface: str, port: int) -> None:
        self.factory = factory
        self.host = IPv4Address("TCP", interface or "0.0.0.0", port)
        self.listening = True

    def getHost(self) -> IPv4Address:
        return self.host

    def stopListening(self) -> None:
        self.listening = False


@implementer(IReactorUDP)
class SipTestReactor(MemoryReactorClock):
    def __init__(self) -> None:
        super().__init__()
        self.udp: list[FakeUdpPort] = []
        self.tcp: list[FakeTcpPort] = []

    def listenUDP(self, port: int, protocol: DatagramProtocol, interface: str = "",
                  maxPacketSize: int = 8192) -> FakeUdpPort:
        if port and any(p.listening and p.host.port == port for p in self.udp):
            raise CannotListenError(interface, port, OSError(errno.EADDRINUSE, "Address already in use"))
        fake = FakeUdpPort(protocol, interface, port or 5062)
        self.udp.append(fake)
        return fake

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> FakeTcpPort:
        if port and any(p.listening and p.host.port == port for p in self.tcp):
            raise CannotListenError(interface, port, OSError(errno.EADDRINUSE, "Address already in use"))
        fake = FakeTcpPort(factory, interface, port or 5062)
        self.tcp.append(fake)
        return fake
