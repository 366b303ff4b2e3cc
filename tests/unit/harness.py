"""Run a whole gateway on a fake reactor, socket-free (STYLE.md G6).

:class:`FakeServer` plays the XMPP server's side of XEP-0114 over a
``StringTransport``; :class:`SyncDatabase` runs store calls at once on an
in-memory SQLite database so Deferreds fire synchronously. Stanzas are fed as
XML text and the gateway's output is read back as parsed elements.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.words.xish import domish, xpath

from gateway.config import parse_config
from gateway.service import GatewayService
from gateway.store.crypto import CredentialCipher, generate_key
from gateway.store.db import create_engine_for, upgrade_to_head

STREAM_ID = "stream-1"


class SyncDatabase:
    """The :class:`~gateway.store.db.Database` interface, run inline (unit tests only)."""

    def __init__(self, url: str = "sqlite://") -> None:
        self.engine = create_engine_for(url)
        upgrade_to_head(self.engine)
        self.sessionmaker: sessionmaker[Session] = sessionmaker(self.engine, expire_on_commit=False)

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
        try:
            with self.sessionmaker.begin() as session:
                return succeed(fn(session, *args, **kwargs))
        except Exception as exc:
            return fail(exc)


class FakeEndpoint:
    """An endpoint whose connections land on fresh ``StringTransport``s."""

    def __init__(self) -> None:
        self.attempts = 0
        self.refuse = False
        self.protocol: Any = None
        self.transport: StringTransport | None = None

    def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
        self.attempts += 1
        if self.refuse:
            return fail(ConnectionRefusedError("refused"))
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.protocol, self.transport = protocol, transport
        return succeed(protocol)


class FakeServer:
    """Drives one gateway through the server side of the component protocol."""

    def __init__(self, service: GatewayService, endpoint: FakeEndpoint, clock: MemoryReactorClock,
                 secret: str) -> None:
        self.service = service
        self.endpoint = endpoint
        self.clock = clock
        self.secret = secret

    def handshake(self, accept: bool = True) -> None:
        """Answer the component's stream header and handshake (XEP-0114 §3)."""
        protocol = self.endpoint.protocol
        protocol.dataReceived(
            b"<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' "
            b"xmlns:stream='http://etherx.jabber.org/streams' "
            + f"from='{self.service.jid}' id='{STREAM_ID}'>".encode()
        )
        expected = hashlib.sha1((STREAM_ID + self.secret).encode()).hexdigest()
        assert f"<handshake>{expected}</handshake>".encode() in self.endpoint.transport.value()
        self.endpoint.transport.clear()
        if accept:
            protocol.dataReceived(b"<handshake/>")
        else:
            protocol.dataReceived(
                b"<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
                b"</stream:error></stream:stream>"
            )

    def feed(self, xml: str) -> None:
        self.endpoint.protocol.dataReceived(xml.encode())

    def sent(self) -> list[domish.Element]:
        """Stanzas the gateway wrote since the last call, parsed."""
        data = self.endpoint.transport.value().decode()
        self.endpoint.transport.clear()
        data = data.strip()
        if not data:
            return []
        elements: list[domish.Element] = []
        stream = domish.elementStream()
        stream.DocumentStartEvent = lambda root: None
        stream.ElementEvent = elements.append
        stream.DocumentEndEvent = lambda: None
        stream.parse(b"<stream xmlns='jabber:component:accept'>" + data.encode())
        return elements

    def drop_connection(self) -> None:
        from twisted.internet.error import ConnectionLost
        from twisted.python.failure import Failure

        self.endpoint.protocol.connectionLost(Failure(ConnectionLost()))


def matches(element: domish.Element, query: str) -> bool:
    return xpath.matches(query, element)


def build_gateway(plugin: str = "plugins.echo.plugin:EchoPlugin", *, options: dict[str, Any] | None = None,
                  extra: dict[str, Any] | None = None, security: dict[str, Any] | None = None
                  ) -> tuple[FakeServer, SyncDatabase]:
    """A gateway for ``gw.example.org`` on a fake reactor, not yet started."""
    gateway: dict[str, Any] = {"plugin": plugin, "jid": "gw.example.org", "secret": "s3cret",
                               "options": options or {}, **(extra or {})}
    config = parse_config({
        "gateways": {"test": gateway},
        "security": security if security is not None else {"credentials_key": generate_key(),
                                                             "admins": ["admin@example.org"]},
    }, "test.toml")
    clock = MemoryReactorClock()
    endpoint = FakeEndpoint()
    database = SyncDatabase()
    key = config.security.credentials_key
    service = GatewayService(config, config.gateways[0], _factory(plugin), database=database,  # type: ignore[arg-type]
                             cipher=CredentialCipher(key) if key else None, reactor=clock,
                             endpoint=endpoint)
    return FakeServer(service, endpoint, clock, "s3cret"), database


def _factory(reference: str) -> Any:
    from gateway.plugins import load_plugin_factory

    return load_plugin_factory(reference)
