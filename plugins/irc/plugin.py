"""The IRC plugin: IRC channels as MUC rooms and IRC users as contacts (issue 4).

One :class:`IrcSession` per XMPP user holds one :class:`~plugins.irc.connection.IrcConnection`
per IRC network, shared by all the user's resources (same nick, same rooms).
Addresses follow Biboumi (``#chan%irc.example.net``, ``nick%irc.example.net``),
so bookmarks carry over. Users need no registration to join rooms.

Options (``[gateways.NAME.options]``):

``networks``
    per-network settings:
    ``{ "irc.example.net" = { host, port, tls, password, charset, ca_file, address } }``;
    a network not listed connects to its own name on 6697 with verified TLS.
    ``tls`` (default true) is verified against ``host`` and never falls back to plain
    text; ``tls = false`` is the only way to a plain port. ``ca_file`` is a PEM bundle of
    CAs to trust instead of the system's (private networks). ``address`` is an IP to
    connect to instead of resolving ``host`` (still checked by ``allow_private``).
``allowed_networks`` / ``denied_networks``
    names; an empty allow list allows every network that is not denied.
``allow_private``
    allow networks on private or loopback addresses (off: never an open proxy).
``fixed_network``
    serve only this network, addressed as ``#chan@gateway`` and ``nick@gateway``.
``max_connections``
    IRC connections per user (default 10).
``throttle_burst`` / ``throttle_rate``
    outgoing flood control: lines sent at once, then seconds per line (default 10, 1.0,
    as Biboumi's defaults, which servers accept in practice).
``charset``
    fallback for lines that are not UTF-8 (default ``latin-1``).
``ctcp_version``
    the answer to CTCP VERSION (empty: no answer; default ``xmpp-gateway``).
``raw_commands``
    whether chat to ``network@gateway`` is sent as raw IRC commands (default true).
``keepalive`` / ``keepalive_timeout``
    seconds of server silence before a PING, and seconds to wait for its answer before the
    link counts as dead and is reconnected (default 120, 60).
``require_registration``
    refuse networks the user has not registered with (at ``network@gateway``, or with a
    registration at the gateway JID); default false: anyone may join rooms with the nick
    of their join presence.

Registered networks (issue 5): a user registers per network at ``network@gateway`` (the
``service_registration_fields`` below, Biboumi's server ``configure`` names), or at the
gateway JID with ``network`` filled in. The settings are checked by a real connection first.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from twisted.internet.defer import CancelledError, Deferred

from gateway.plugin import (
    FormField,
    LegacyError,
    LoginFailed,
    OutgoingMessage,
    PluginContext,
    PresenceUpdate,
    Registration,
    RoomLeft,
    RoomListing,
    SentLine,
)
from plugins.irc.addressing import DEFAULT_CHANTYPES, Addressing, IrcAddress
from plugins.irc.connection import (
    ConnectionSettings,
    Credentials,
    IrcConnection,
    NetworkSettings,
    NickIndex,
    load_client_certificate,
)
from plugins.irc.encoding import split_body
from plugins.irc.policy import NetworkPolicy, NetworkRefused

log = logging.getLogger(__name__)

#: Seconds to wait for a credential check's connection to close after its QUIT.
CHECK_CLOSE_TIMEOUT = 5.0

NICK_FIELD = FormField(var="username", label="Nickname", required=True,
                       description="Your IRC nickname on every network")
ACCOUNT_FIELD = FormField(var="sasl_account", label="Account (SASL or NickServ)",
                          description="Your services account; empty: the nickname")
PASSWORD_FIELD = FormField(var="password", label="Password (SASL or NickServ)", type="text-private",
                           secret=True, description="Sent with SASL PLAIN, or to NickServ without SASL")
CLIENT_CERTIFICATE_FIELD = FormField(
    var="client_certificate", label="Client certificate and key (PEM), for SASL EXTERNAL / CertFP",
    type="text-multi", secret=True,
    description="Shown to TLS networks only; used with SASL EXTERNAL instead of the password")

#: The gateway JID form's field that makes it a network registration.
NETWORK_FIELD = FormField(var="network", label="Network (optional)",
                          description="Fill in to register with this network only; then the nickname, "
                                      "account, password and certificate above apply to it")
#: The per-network form (registration at network@gateway and its ad-hoc ``configure``), with
#: Biboumi's field names (reference/biboumi.md §2.6) so that scripts carry over.
SERVICE_FIELDS = (
    FormField(var="nick", label="Nickname"),
    FormField(var="username", label="Username (ident)"),
    FormField(var="realname", label="Real name"),
    FormField(var="sasl_account", label="SASL or NickServ account", description="Empty: the nickname"),
    FormField(var="sasl_password", label="SASL or NickServ password", type="text-private", secret=True,
              description="SASL PLAIN, or NickServ IDENTIFY when the network has no SASL"),
    FormField(var="client_certificate", label="Client certificate and key (PEM), for SASL EXTERNAL",
              type="text-multi", secret=True),
    FormField(var="autojoin", label="Rooms joined when you log on", type="text-multi",
              description="One channel per line"),
    FormField(var="throttle_limit", label="Throttle limit", description="Lines sent at once (flood control)"),
    FormField(var="encoding_in", label="In encoding", description="Fallback charset of non-UTF-8 lines"),
    FormField(var="encoding_out", label="Out encoding", description="Charset of the lines sent (UTF-8)"),
)
#: The per-room settings the plugin applies (the core's room ``configure`` form holds them).
ROOM_ENCODINGS = ("encoding_in", "encoding_out")


def ascii_compatible(charset: str) -> bool:
    """Whether IRC's framing survives ``charset``: CR, LF, space and ``:`` stay single ASCII bytes
    (UTF-16 and UTF-32 would put NULs on the wire). False for unknown or non-text codecs."""
    try:
        return "\r\n :#".encode(charset) == b"\r\n :#"
    except (LookupError, UnicodeError):
        return False


def _check_charset(name: str, value: str) -> None:
    if value and not ascii_compatible(value):
        raise LegacyError("not-acceptable", f"{name}: {value!r} is not an ASCII-compatible charset")


def check_settings(values: Mapping[str, str]) -> None:
    """Refuse network or room settings that cannot work (before any connection)."""
    nick = values.get("nick", "")
    if nick and (any(c in nick for c in " ,*?!@#:") or nick[0].isdigit()):
        raise LoginFailed("not-acceptable", f"{nick!r} is not a valid IRC nickname")
    for name in ("encoding_in", "encoding_out"):
        _check_charset(name, values.get(name, ""))
    limit = values.get("throttle_limit", "")
    if limit and (not limit.isdigit() or int(limit) < 1):
        raise LoginFailed("not-acceptable", "throttle_limit: a number of lines, at least 1")
    if values.get("client_certificate", "").strip():
        try:
            load_client_certificate(values["client_certificate"])
        except ValueError as exc:
            raise LoginFailed("not-acceptable", str(exc)) from None


class IrcSession:
    """One XMPP user's IRC side: a connection per network, opened on first use."""

    def __init__(self, plugin: IrcPlugin, user: str, nick: str,
                 credentials: Credentials | None = None,
                 services: Mapping[str, Mapping[str, str]] | None = None,
                 rooms: Mapping[str, Mapping[str, str]] | None = None, registered: bool = False) -> None:
        self.plugin = plugin
        self.user = user
        self.nick = nick
        self.credentials = credentials or Credentials()
        self.services: dict[str, Mapping[str, str]] = dict(services or {})
        """Network -> the user's registration with it (SERVICE_FIELDS values)."""
        self.rooms: dict[str, Mapping[str, str]] = dict(rooms or {})
        """Room address -> its settings (encoding_in, encoding_out...)."""
        self.registered = registered
        self.connections: dict[str, IrcConnection] = {}

    async def connection(self, network: str, nick: str | None = None) -> IrcConnection:
        existing = self.connections.get(network)
        if existing is not None and not existing.closed and not existing.quitting:
            await existing.ready()
            return existing
        if len(self.connections) >= self.plugin.max_connections:
            raise LegacyError("resource-constraint", f"at most {self.plugin.max_connections} IRC networks")
        service = self.services.get(network)
        if self.plugin.require_registration and service is None and not self.registered:
            raise LegacyError("registration-required", f"register with {network} first")
        try:
            settings = await self.plugin.network_settings(network)
        except NetworkRefused as exc:
            raise LegacyError("not-allowed", str(exc)) from exc
        service = service or {}
        if service.get("encoding_in"):
            settings = replace(settings, charset=service["encoding_in"])
        credentials = self.credentials
        if service.get("sasl_password") or service.get("client_certificate"):
            credentials = Credentials(account=service.get("sasl_account", ""),
                                      password=service.get("sasl_password", ""),
                                      client_certificate=service.get("client_certificate", "").strip())
        limit = service.get("throttle_limit", "")
        connection = IrcConnection(
            user=self.user, nick=service.get("nick") or nick or self.nick or self.user.partition("@")[0],
            network=settings,
            settings=self.plugin.connection_settings, addressing=self.plugin.addressing,
            emit=self.plugin.context.events.emit, clock=self.plugin.context.clock,
            on_closed=lambda: self._closed(network, connection), credentials=credentials,
            nicks=self.plugin.nicks, username=service.get("username", ""),
            realname=service.get("realname", ""),
            throttle_burst=int(limit) if limit.isdigit() and int(limit) > 0 else None,
        )
        self.connections[network] = connection
        self._apply_network(connection, service)
        for room, values in self.rooms.items():
            self._apply_room(connection, room, values)
        connection.connect()
        await connection.ready()
        return connection

    @staticmethod
    def _apply_network(connection: IrcConnection, values: Mapping[str, str]) -> None:
        """The network's own charsets, under the key ``""`` of the per-channel tables."""
        for key, table in (("encoding_in", connection.encodings_in),
                           ("encoding_out", connection.encodings_out)):
            if values.get(key):
                table[""] = values[key]
            else:
                table.pop("", None)

    def _apply_room(self, connection: IrcConnection, room: str, values: Mapping[str, str]) -> None:
        address = self.plugin.addressing.parse(room)
        if address.network != connection.network.name:
            return
        folded = connection.channels.fold(address.name)
        for key, table in (("encoding_in", connection.encodings_in),
                           ("encoding_out", connection.encodings_out)):
            if values.get(key):
                table[folded] = values[key]
            else:
                table.pop(folded, None)

    # -- settings and service commands (issue 5) ------------------------------------------------

    async def settings_changed(self, address: str, values: Mapping[str, str]) -> None:
        if self.plugin.is_service(address):
            network = self._address(address).network
            if values:
                self.services[network] = values
            else:
                self.services.pop(network, None)
            connection = self.connections.get(network)
            if connection is None or connection.closed or connection.quitting:
                return
            nick = values.get("nick", "")
            if nick and connection.channels.fold(nick) != connection.channels.fold(connection.nick):
                connection.send("NICK", nick)
            limit = values.get("throttle_limit", "")
            connection.set_throttle(int(limit) if limit.isdigit() and int(limit) > 0
                                    else self.plugin.connection_settings.throttle_burst)
            self._apply_network(connection, values)
            return
        self.rooms[address] = values
        connection = self.connections.get(self._address(address).network)
        if connection is not None:
            self._apply_room(connection, address, values)

    async def service_info(self, service: str) -> str:
        network = self._address(service).network
        connection = self.connections.get(network)
        if connection is None:
            return f"You are not connected to the IRC server {network}"
        return connection.info()

    async def disconnect_service(self, service: str, message: str) -> bool:
        network = self._address(service).network
        connection = self.connections.get(network)
        if connection is None:
            return False
        connection.disconnect(message)
        return True

    def _closed(self, network: str, connection: IrcConnection) -> None:
        # A newer connection may have replaced this one while it was quitting.
        if self.connections.get(network) is connection:
            del self.connections[network]

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

    async def send_room_message(self, room: str, body: str) -> list[SentLine]:
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

    async def list_rooms(self, service: str) -> list[RoomListing]:
        network = self._address(service).network
        connection = await self.connection(network)
        return [RoomListing(address=self.plugin.addressing.format(network, name.lower()), name=name,
                            topic=topic, occupants=users)
                for name, users, topic in await connection.list_channels()]

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


class _CheckEvents:
    """Where a credential check's throw-away connection reports: nowhere (the user is in no
    room of it), so it never emits for the user."""

    @staticmethod
    def emit(event: object) -> None:
        if isinstance(event, RoomLeft):
            return


class _Options:
    """Typed reads of the plugin's options table; errors name the key (config.py does the rest)."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.options = options

    def _get(self, key: str, kinds: tuple[type, ...], default: Any, what: str) -> Any:
        value = self.options.get(key, default)
        if not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool)):
            raise ValueError(f"{key}: expected {what}, got {value!r}")
        return value

    def text(self, key: str, default: str) -> str:
        return self._get(key, (str,), default, "a string")  # type: ignore[no-any-return]

    def flag(self, key: str, default: bool) -> bool:
        return self._get(key, (bool,), default, "true or false")  # type: ignore[no-any-return]

    def number(self, key: str, default: float, *, minimum: float, kind: type = int) -> Any:
        value = self._get(key, (int, float) if kind is float else (int,), default, "a number")
        if value < minimum:
            raise ValueError(f"{key}: must be at least {minimum}, got {value}")
        return value

    def names(self, key: str) -> list[str]:
        value = self._get(key, (list, tuple), [], "an array of network names")
        if not all(isinstance(item, str) for item in value):
            raise ValueError(f"{key}: every item must be a string")
        return list(value)

    def table(self, key: str) -> Mapping[str, Any]:
        return self._get(key, (Mapping,), {}, "a table")  # type: ignore[no-any-return]


class IrcPlugin:
    name = "IRC"
    identity_type = "irc"
    instructions = "Choose the nickname the gateway uses on IRC networks."
    prompt = "Enter an IRC channel or nick with its network, e.g. #chan%irc.example.net"
    registration_fields = (NICK_FIELD, ACCOUNT_FIELD, PASSWORD_FIELD, CLIENT_CERTIFICATE_FIELD)
    allows_unregistered = True
    service_field = NETWORK_FIELD
    service_registration_fields = SERVICE_FIELDS

    def __init__(self, context: PluginContext) -> None:
        self.context = context
        options = _Options(context.options)
        self.addressing = Addressing(options.text("fixed_network", ""))
        self.policy = NetworkPolicy.build(options.names("allowed_networks"), options.names("denied_networks"),
                                          options.flag("allow_private", False))
        self.networks: Mapping[str, Mapping[str, Any]] = {
            str(k).lower(): v for k, v in options.table("networks").items()}
        self.max_connections = options.number("max_connections", 10, minimum=1)
        self.require_registration = options.flag("require_registration", False)
        self.nicks = NickIndex()
        self.connection_settings = ConnectionSettings(
            throttle_burst=options.number("throttle_burst", 10, minimum=1),
            throttle_rate=float(options.number("throttle_rate", 1.0, minimum=0.01, kind=float)),
            charset=options.text("charset", "latin-1"),
            ctcp_version=options.text("ctcp_version", "xmpp-gateway"),
            raw_commands=options.flag("raw_commands", True),
            keepalive=float(options.number("keepalive", 120.0, minimum=1, kind=float)),
            keepalive_timeout=float(options.number("keepalive_timeout", 60.0, minimum=1, kind=float)),
        )
        if not ascii_compatible(self.connection_settings.charset):
            charset = self.connection_settings.charset
            raise ValueError(f"charset: {charset!r} is not an ASCII-compatible charset")

    # -- addressing ---------------------------------------------------------------------------

    def legacy_to_localpart(self, address: str) -> str:
        self.addressing.parse(address)
        return address

    def localpart_to_legacy(self, localpart: str) -> str:
        parsed = self.addressing.parse(localpart)
        return self.addressing.format(parsed.network, parsed.name)

    def is_room(self, address: str) -> bool:
        return self.addressing.is_channel(address)

    def is_service(self, address: str) -> bool:
        try:
            return self.addressing.parse(address).is_network()
        except ValueError:
            return False

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
            ca_file=str(spec.get("ca_file", "")),
            channel_charsets=tuple((str(k), str(v)) for k, v in spec.get("channel_charsets", {}).items()),
        )
        for _channel, charset in settings.channel_charsets:
            if not ascii_compatible(charset):
                raise LegacyError("internal-server-error",
                                  f"{network}: {charset!r} is not an ASCII-compatible charset")
        if settings.tls:
            settings.trust_root()  # a bad ca_file fails here, before any connection
        if spec.get("address"):
            # Connect here, verify TLS against ``host``: for names DNS does not know.
            try:
                address = str(ipaddress.ip_address(str(spec["address"])))
            except ValueError as exc:
                raise LegacyError("internal-server-error",
                                  f"{network}: address must be an IP address") from exc
        else:
            address = await settings.resolve(self.context.clock)
        self.policy.check_address(network, address)
        return settings.with_address(address)

    # -- accounts -------------------------------------------------------------------------------

    async def check_credentials(self, user: str, values: Mapping[str, str]) -> None:
        nick = values.get("username", "")
        if not nick or any(c in nick for c in " ,*?!@#:") or nick[0].isdigit():
            raise LoginFailed("not-acceptable", f"{nick!r} is not a valid IRC nickname")
        if values.get("client_certificate", "").strip():
            try:
                load_client_certificate(values["client_certificate"])
            except ValueError as exc:
                raise LoginFailed("not-acceptable", str(exc)) from None

    async def login(self, registration: Registration) -> IrcSession:
        values = registration.values
        credentials = Credentials(account=values.get("sasl_account", ""), password=values.get("password", ""),
                                  client_certificate=values.get("client_certificate", "").strip())
        return IrcSession(self, registration.user, values.get("username", ""), credentials,
                          services=registration.services, rooms=registration.rooms,
                          registered=bool(registration.legacy_id))

    # -- per-network registrations (gateway.plugin.ServiceRegistrations) ------------------------

    def service_values(self, values: Mapping[str, str]) -> dict[str, str]:
        """The gateway JID's form, naming a network, as that network's form."""
        names = {"username": "nick", "sasl_account": "sasl_account", "password": "sasl_password",
                 "client_certificate": "client_certificate"}
        return {names[k]: v for k, v in values.items() if k in names}

    def service_of(self, room: str) -> str:
        return self.addressing.parse(room).network  # a network's address is its name

    def autojoin_rooms(self, registration: Registration) -> Sequence[tuple[str, str]]:
        rooms = []
        for network, values in sorted(registration.services.items()):
            nick = (values.get("nick") or registration.values.get("username")
                    or registration.user.partition("@")[0])
            for line in values.get("autojoin", "").splitlines():
                channel = line.strip()
                if channel and channel[0] in DEFAULT_CHANTYPES:
                    rooms.append((self.addressing.format(network, channel.lower()), nick))
        return rooms

    async def check_service_credentials(self, user: str, service: str, values: Mapping[str, str]) -> None:
        """A real connection with these settings: SASL refused, nick refused or network
        unreachable refuse the registration (nothing is stored)."""
        check_settings(values)
        network = self.addressing.parse(service).network
        try:
            settings = await self.network_settings(network)
        except NetworkRefused as exc:
            raise LoginFailed("not-allowed", str(exc)) from exc
        if values.get("encoding_in"):
            settings = replace(settings, charset=values["encoding_in"])
        nick = values.get("nick") or user.partition("@")[0]
        credentials = Credentials(account=values.get("sasl_account") or nick,
                                  password=values.get("sasl_password", ""),
                                  client_certificate=values.get("client_certificate", "").strip())
        closed: Deferred[None] = Deferred()
        # A throw-away nick: the user's own connection may hold the nick, or take it right after
        # this check (a nick change), and the server may not have seen this QUIT by then.
        connection = IrcConnection(
            user=user, nick=f"chk{secrets.token_hex(3)}", network=settings,
            settings=self.connection_settings, addressing=self.addressing, emit=_CheckEvents.emit,
            clock=self.context.clock, on_closed=lambda: None if closed.called else closed.callback(None),
            credentials=credentials, nicks=NickIndex(),
            username=values.get("username", ""), realname=values.get("realname", ""))
        connection.connect()
        try:
            await connection.ready()
        except LegacyError as exc:
            raise LoginFailed(exc.condition, exc.text) from exc
        finally:
            if not connection.closed and not connection.quitting:
                connection.quit("registration checked")
            # Wait for the server to close the link: the nick is free again for the user's own
            # connection (a nick change right after this check would otherwise collide).
            timer = self.context.clock.callLater(CHECK_CLOSE_TIMEOUT, closed.cancel)
            try:
                await closed
            except CancelledError:
                log.info("%s: the check connection to %s did not close in time", user, network)
            finally:
                if timer.active():
                    timer.cancel()
