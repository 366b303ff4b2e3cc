"""The IRC plugin: IRC channels as MUC rooms and IRC users as contacts (issue 4).

One :class:`IrcSession` per XMPP user holds one :class:`~plugins.irc.connection.IrcConnection`
per IRC network, shared by all the user's resources (same nick, same rooms).
Addresses follow Biboumi (``#chan%irc.example.net``, ``nick%irc.example.net``),
so bookmarks carry over. Users need no registration to join rooms.

Options (``[gateways.NAME.options]``):

``networks``
    per-network settings: ``{ "irc.example.net" = { host, port, tls, password, charset } }``;
    a network not listed connects to its own name on 6697 with verified TLS.
``allowed_networks`` / ``denied_networks``
    names; an empty allow list allows every network that is not denied.
``allow_private``
    allow networks on private or loopback addresses (off: never an open proxy).
``fixed_network``
    serve only this network, addressed as ``#chan@gateway`` and ``nick@gateway``.
``max_connections``
    IRC connections per user (default 10).
``throttle_burst`` / ``throttle_rate``
    outgoing flood control: lines sent at once, then seconds per line (default 5, 1.0).
``charset``
    fallback for lines that are not UTF-8 (default ``latin-1``).
``ctcp_version``
    the answer to CTCP VERSION (empty: no answer; default ``xmpp-gateway``).
``raw_commands``
    whether chat to ``network@gateway`` is sent as raw IRC commands (default true).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from gateway.plugin import (
    FormField,
    LegacyError,
    OutgoingMessage,
    PluginContext,
    PresenceUpdate,
    Registration,
)
from plugins.irc.addressing import Addressing, IrcAddress
from plugins.irc.connection import ConnectionSettings, IrcConnection, NetworkSettings
from plugins.irc.encoding import split_body
from plugins.irc.policy import NetworkPolicy, NetworkRefused

log = logging.getLogger(__name__)

NICK_FIELD = FormField(var="username", label="Nickname", required=True,
                       description="Your IRC nickname on every network")


class IrcSession:
    """One XMPP user's IRC side: a connection per network, opened on first use."""

    def __init__(self, plugin: IrcPlugin, user: str, nick: str) -> None:
        self.plugin = plugin
        self.user = user
        self.nick = nick
        self.connections: dict[str, IrcConnection] = {}

    async def connection(self, network: str, nick: str | None = None) -> IrcConnection:
        existing = self.connections.get(network)
        if existing is not None and not existing.closed:
            await existing.ready()
            return existing
        if len(self.connections) >= self.plugin.max_connections:
            raise LegacyError("resource-constraint", f"at most {self.plugin.max_connections} IRC networks")
        try:
            settings = await self.plugin.network_settings(network)
        except NetworkRefused as exc:
            raise LegacyError("not-allowed", str(exc)) from exc
        connection = IrcConnection(
            user=self.user, nick=nick or self.nick or self.user.partition("@")[0], network=settings,
            settings=self.plugin.connection_settings, addressing=self.plugin.addressing,
            emit=self.plugin.context.events.emit, clock=self.plugin.context.clock,
            on_closed=lambda: self.connections.pop(network, None),
        )
        self.connections[network] = connection
        connection.connect()
        await connection.ready()
        return connection

    def _address(self, address: str) -> IrcAddress:
        try:
            return self.plugin.addressing.parse(address)
        except ValueError as exc:
            raise LegacyError("item-not-found", str(exc)) from exc

    # -- rooms ----------------------------------------------------------------------------

    async def join_room(self, room: str, nick: str, password: str) -> None:
        address = self._address(room)
        connection = await self.connection(address.network, nick)
        connection.join(room, address.name, password)

    async def leave_room(self, room: str, reason: str) -> None:
        address = self._address(room)
        connection = self.connections.get(address.network)
        if connection is not None:
            connection.part(address.name, reason)

    async def send_room_message(self, room: str, body: str) -> list[str]:
        address = self._address(room)
        connection = self.connections.get(address.network)
        if connection is None:
            raise LegacyError("not-acceptable", "not connected to that network")
        return connection.say(address.name, body)

    async def set_subject(self, room: str, subject: str) -> None:
        address = self._address(room)
        connection = self.connections.get(address.network)
        if connection is None:
            raise LegacyError("not-acceptable", "not connected to that network")
        connection.topic(address.name, subject)

    async def change_nick(self, room: str, nick: str) -> None:
        address = self._address(room)
        await self._connected(address.network).change_nick(nick)

    async def invite(self, room: str, contact: str, reason: str) -> None:
        address, invitee = self._address(room), self._address(contact)
        if invitee.network != address.network or invitee.is_network():
            raise LegacyError("not-acceptable", "invite someone from the room's network")
        self._connected(address.network).send("INVITE", invitee.name, address.name)

    async def set_role(self, room: str, nick: str, role: str, reason: str) -> None:
        address = self._address(room)
        connection = self._connected(address.network)
        await connection.moderate(address.name, nick, role=role, reason=reason)

    async def set_affiliation(self, room: str, nick: str, affiliation: str, reason: str) -> None:
        address = self._address(room)
        connection = self._connected(address.network)
        await connection.moderate(address.name, nick, affiliation=affiliation, reason=reason)

    def _connected(self, network: str) -> IrcConnection:
        connection = self.connections.get(network)
        if connection is None:
            raise LegacyError("not-acceptable", "not connected to that network")
        return connection

    # -- contacts -----------------------------------------------------------------------------

    async def send_message(self, message: OutgoingMessage) -> str:
        address = self._address(message.contact)
        connection = await self.connection(address.network)
        if address.is_network():
            # Raw IRC commands, one per line, as Biboumi allows (the admin may forbid it).
            if not self.plugin.connection_settings.raw_commands:
                raise LegacyError("not-allowed", "raw IRC commands are disabled on this gateway")
            for line in split_body(message.body):
                try:
                    connection.send_raw(line)
                except ValueError as exc:
                    raise LegacyError("bad-request", f"not an IRC command: {exc}") from exc
            return ""
        connection.say(address.name, message.body, xmpp_id=message.xmpp_id)
        return ""

    async def set_presence(self, presence: PresenceUpdate) -> None:
        for connection in self.connections.values():
            connection.set_away(presence.show if presence.available else None, presence.status)

    async def add_contact(self, contact: str) -> bool:
        self._address(contact)
        return True  # IRC has no contact lists: the JID works as soon as it is in the roster

    async def remove_contact(self, contact: str) -> None:
        return None

    async def logout(self) -> None:
        for connection in list(self.connections.values()):
            connection.quit("Leaving the XMPP gateway")
        self.connections.clear()


class IrcPlugin:
    name = "IRC"
    identity_type = "irc"
    instructions = "Choose the nickname the gateway uses on IRC networks."
    prompt = "Enter an IRC channel or nick with its network, e.g. #chan%irc.example.net"
    registration_fields = (NICK_FIELD,)
    allows_unregistered = True

    def __init__(self, context: PluginContext) -> None:
        self.context = context
        options: Mapping[str, Any] = context.options
        self.addressing = Addressing(str(options.get("fixed_network", "")))
        self.policy = NetworkPolicy.build(options.get("allowed_networks", ()),
                                          options.get("denied_networks", ()),
                                          bool(options.get("allow_private", False)))
        self.networks: Mapping[str, Mapping[str, Any]] = {
            str(k).lower(): v for k, v in options.get("networks", {}).items()}
        self.max_connections = int(options.get("max_connections", 10))
        self.connection_settings = ConnectionSettings(
            throttle_burst=int(options.get("throttle_burst", 5)),
            throttle_rate=float(options.get("throttle_rate", 1.0)),
            charset=str(options.get("charset", "latin-1")),
            ctcp_version=str(options.get("ctcp_version", "xmpp-gateway")),
            raw_commands=bool(options.get("raw_commands", True)),
        )

    # -- addressing ---------------------------------------------------------------------------

    def legacy_to_localpart(self, address: str) -> str:
        self.addressing.parse(address)
        return address

    def localpart_to_legacy(self, localpart: str) -> str:
        parsed = self.addressing.parse(localpart)
        return self.addressing.format(parsed.network, parsed.name)

    def is_room(self, address: str) -> bool:
        return self.addressing.is_channel(address)

    def occupant_contact(self, room: str, nick: str) -> str:
        """The contact address of a room occupant: IRC private messages are network-wide."""
        return self.addressing.format(self.addressing.parse(room).network, nick)

    def legacy_id_for(self, values: Mapping[str, str]) -> str:
        return values["username"]

    async def network_settings(self, network: str) -> NetworkSettings:
        self.policy.check_name(network)
        spec = self.networks.get(network, {})
        settings = NetworkSettings(
            name=network,
            host=str(spec.get("host", network)),
            port=int(spec.get("port", 6697)),
            tls=bool(spec.get("tls", True)),
            password=str(spec.get("password", "")),
            charset=str(spec.get("charset", self.connection_settings.charset)),
        )
        address = await settings.resolve(self.context.clock)
        self.policy.check_address(network, address)
        return settings.with_address(address)

    # -- accounts -------------------------------------------------------------------------------

    async def check_credentials(self, user: str, values: Mapping[str, str]) -> None:
        nick = values.get("username", "")
        if not nick or any(c in nick for c in " ,*?!@#:") or nick[0].isdigit():
            from gateway.plugin import LoginFailed

            raise LoginFailed("not-acceptable", f"{nick!r} is not a valid IRC nickname")

    async def login(self, registration: Registration) -> IrcSession:
        return IrcSession(self, registration.user, registration.values.get("username", ""))
