"""One gateway: a plugin attached to the XMPP server under its own component JID.

Wires the pieces together: the XEP-0114 connection, the router, the XEP
handlers, the user sessions and the plugin. Nothing here speaks a protocol
itself; each piece lives in its own module.
"""

from __future__ import annotations

import logging

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IReactorTime
from twisted.words.protocols.jabber import xmlstream

from gateway.access import UserPolicy
from gateway.archive import Archive
from gateway.component import ComponentConnection, ConnectionSettings
from gateway.config import Config, GatewayConfig
from gateway.plugin import PluginContext, PluginFactory
from gateway.router import Router
from gateway.session import Sessions
from gateway.store.crypto import CredentialCipher
from gateway.store.db import Database
from gateway.xep.commands import CommandsHandler
from gateway.xep.disco import DiscoHandler
from gateway.xep.gateway_identity import GatewayIdentity
from gateway.xep.iq_gateway import IqGatewayHandler
from gateway.xep.mam import MamHandler
from gateway.xep.muc import MucHandler
from gateway.xep.muc_admin import MucAdminHandler
from gateway.xep.muc_history import MucHistory
from gateway.xep.muc_owner import MucOwnerHandler
from gateway.xep.ping import PingHandler
from gateway.xep.register import RegisterHandler
from gateway.xep.service_commands import ServiceCommands
from gateway.xep.version import VersionHandler

log = logging.getLogger(__name__)


class GatewayService:
    """One plugin instance and everything it needs to serve its component JID."""

    def __init__(
        self,
        config: Config,
        gateway: GatewayConfig,
        plugin_factory: PluginFactory,
        *,
        database: Database,
        cipher: CredentialCipher | None,
        reactor: IReactorTime,
        endpoint: object | None = None,
    ) -> None:
        self.config = gateway
        self.jid = gateway.jid
        self.clock = reactor
        settings = ConnectionSettings(
            jid=gateway.jid,
            secret=gateway.secret,
            max_backoff=gateway.max_backoff,
            queue_size=gateway.queue_size,
            max_stanza_size=gateway.max_stanza_size,
            keepalive=gateway.keepalive,
        )
        if endpoint is None:
            endpoint = HostnameEndpoint(
                reactor, gateway.server.host, gateway.server.port  # type: ignore[arg-type]
            )
        self.connection = ComponentConnection(
            settings,
            endpoint,  # type: ignore[arg-type]
            reactor,
            on_stream=self._on_stream,
            on_authenticated=self._on_authenticated,
        )
        self.sessions = Sessions(
            gateway_jid=gateway.jid,
            send=self.connection.send,
            database=database,
            cipher=cipher,
            clock=reactor,
            policy=UserPolicy(gateway.allowed_users),
        )
        self.sessions.send_xml = self.connection.send_xml  # groupchat lines written as text
        self.plugin = plugin_factory(
            PluginContext(
                gateway_jid=gateway.jid,
                options=gateway.options,
                events=self.sessions,
                clock=reactor,
            )
        )
        self.sessions.attach_plugin(self.plugin)
        # The per-user archive, recording what each user's record_history setting allows.
        settings = self.sessions.room_settings
        settings.default_max_history_length = gateway.archive.history_length

        def should_record(user: str, address: str) -> bool:
            return gateway.archive.enabled and settings.record_history(user, address)

        self.archive = Archive(gateway_jid=gateway.jid, database=database, clock=reactor,
                               config=gateway.archive, should_record=should_record)
        self.sessions.archive = self.archive
        secret_fields = frozenset(f.var for f in self.plugin.registration_fields if f.secret)
        self.router = Router(self.connection.send, reactor, secret_fields=secret_fields)
        self.sessions.attach_router(self.router)
        name = gateway.display_name or f"{self.plugin.name} gateway"
        self.muc = MucHandler(sessions=self.sessions, identity_type=self.plugin.identity_type, name=name,
                              archive=self.archive,
                              history=MucHistory(self.archive, default_length=gateway.archive.history_length,
                                                 length_for=settings.max_history_length))
        register = RegisterHandler(gateway=gateway, plugin=self.plugin, sessions=self.sessions)
        # Commands of service and room JIDs, and the global configure (issue 5).
        targets = ServiceCommands(sessions=self.sessions, muc=self.muc, register=register,
                                  identity_type=self.plugin.identity_type)
        for handler in (
            DiscoHandler(lambda: self.router.handlers),
            GatewayIdentity(gateway.jid, self.plugin.identity_type, name),
            VersionHandler(gateway.jid),
            PingHandler(checks=[self.muc.check_ping]),
            register,
            IqGatewayHandler(gateway.jid, self.plugin),
            CommandsHandler(
                gateway_jid=gateway.jid, admins=config.security.admins, sessions=self.sessions,
                settings_fields=getattr(self.plugin, "settings_fields", ()), targets=targets,
            ),
            self.sessions.roster,
            self.muc,
            MucAdminHandler(self.muc),
            MamHandler(sessions=self.sessions, muc=self.muc, archive=self.archive),
            MucOwnerHandler(self.muc, targets),
            self.sessions,
        ):
            self.router.add_handler(handler)

    @property
    def fatal(self) -> Deferred:
        return self.connection.fatal

    def _on_stream(self, xs: xmlstream.XmlStream) -> None:
        # One observer for every top-level element: Twisted matches each observer's XPath
        # against each element (about 1 µs apiece); Router.dispatch ignores what is not a stanza.
        xs.addObserver("/*", self.router.dispatch)

    def _on_authenticated(self) -> None:
        self.sessions.stream_authenticated()

    def start(self) -> None:
        log.info("%s: starting the %s plugin", self.jid, self.plugin.name)
        self.archive.start()
        self.connection.start()

    async def stop(self) -> None:
        """Graceful stop: tell users, log legacy sessions out, then close the stream."""
        await self.sessions.shutdown()
        await self.archive.stop()  # every recorded line is written before the database stops
        self.router.cancel_requests()
        await self.connection.stop()
