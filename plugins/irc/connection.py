"""One IRC connection of one XMPP user to one network (issue 4 items 1-4).

Glue between the sans-I/O pieces and Twisted: the line protocol
(:mod:`plugins.irc.protocol`: throttling, keepalive, decoding, one bad line never
drops the connection), IRCv3 registration (:mod:`plugins.irc.cap`), ISUPPORT
(:mod:`plugins.irc.isupport`) and channel state (:mod:`plugins.irc.rooms`).

TLS is verified (``optionsForClientTLS``) and there is no fallback to plain text:
a network is plain only where the admin configured ``tls = false``. The address
connected to is the one the policy checked (no second DNS lookup).

After a lost connection it reconnects with capped backoff and rejoins its
channels, telling the user in each room with a notice instead of ejecting them
(Biboumi ejects with 332 and never comes back).
"""

from __future__ import annotations

import ipaddress
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorCore, IReactorTime
from twisted.internet.protocol import Factory
from twisted.internet.ssl import Certificate, optionsForClientTLS, platformTrust, trustRootFromCertificates
from twisted.python.failure import Failure

from gateway.plugin import LegacyError, RoomLeft, RoomMessage, SentLine
from plugins.irc.addressing import Addressing
from plugins.irc.cap import Registration, Sasl, SaslExternal, SaslPlain
from plugins.irc.chathistory import History
from plugins.irc.encoding import encode_and_split, relay_overhead, split_body
from plugins.irc.formatting import ctcp, to_plain
from plugins.irc.isupport import ISupport
from plugins.irc.lines import IrcMessage, parse, serialize
from plugins.irc.protocol import IrcLineProtocol
from plugins.irc.rooms import JOIN_ERRORS, Channels
from plugins.irc.throttle import QueueFull, Throttle

if TYPE_CHECKING:
    from twisted.internet._sslverify import IOpenSSLTrustRoot  # not re-exported by twisted.internet.ssl

log = logging.getLogger(__name__)

RECONNECT_INITIAL = 2.0
RECONNECT_CAP = 120.0
REGISTRATION_TIMEOUT = 30.0
LIST_CACHE_SECONDS = 60.0
#: Lines held until registration completes.
QUEUE_LIMIT = 200
#: Channels kept from one LIST: big networks have tens of thousands.
LIST_LIMIT = 10000


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    throttle_burst: int = 5
    throttle_rate: float = 1.0
    charset: str = "latin-1"
    ctcp_version: str = "xmpp-gateway"
    raw_commands: bool = True
    keepalive: float = 120.0
    """Seconds of silence from the server before we PING it."""
    keepalive_timeout: float = 60.0
    """Seconds to wait for an answer to that PING before the link counts as dead."""


class NickIndex:
    """Which gateway user holds which nick on which network, so rooms can show occupants who
    are XMPP users with their real JID (XEP-0045 §7.2.3)."""

    def __init__(self) -> None:
        self._owners: dict[tuple[str, str], str] = {}

    def owner(self, network: str, folded_nick: str) -> str:
        return self._owners.get((network, folded_nick), "")

    def set(self, network: str, old: str | None, new: str | None, user: str) -> None:
        if old is not None and self._owners.get((network, old)) == user:
            del self._owners[(network, old)]
        if new is not None:
            self._owners[(network, new)] = user


@dataclass(frozen=True, slots=True)
class Credentials:
    """The user's IRC account: SASL EXTERNAL with a client certificate (CertFP), else SASL
    PLAIN with the password when the server offers it, NickServ otherwise."""

    account: str = ""
    """SASL authcid / NickServ account; empty: the nick."""
    password: str = field(default="", repr=False)
    client_certificate: str = field(default="", repr=False)
    """PEM holding the TLS client certificate and its unencrypted private key."""


ClientKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey

BAD_CLIENT_CERTIFICATE = ("the client certificate must be PEM with one certificate and its unencrypted "
                          "private key (RSA, EC or EdDSA)")


def load_client_certificate(pem: str) -> tuple[x509.Certificate, ClientKey]:
    """The certificate and private key in ``pem`` (either order), as ``cryptography`` objects.

    Raises ValueError with a fixed text (never the key, nor the parser's message) when either
    is missing or malformed, the key is encrypted or of a kind TLS cannot use, or the two do
    not match. Lines are stripped first: data forms send a text-multi field line by line."""
    data = "\n".join(line.strip() for line in pem.strip().splitlines()).encode("ascii", "replace") + b"\n"
    try:
        certificate = x509.load_pem_x509_certificate(data)
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError(BAD_CLIENT_CERTIFICATE) from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey,
                            ed448.Ed448PrivateKey)):
        raise ValueError(BAD_CLIENT_CERTIFICATE)
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        matches = certificate.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)
    except (ValueError, UnsupportedAlgorithm):
        matches = False
    if not matches:
        raise ValueError("the client certificate does not match its private key")
    return certificate, key


@dataclass(frozen=True, slots=True)
class NetworkSettings:
    name: str
    host: str
    port: int
    tls: bool = True
    password: str = ""
    charset: str = "latin-1"
    address: str = ""
    """The resolved IP address, checked by the network policy."""
    ca_file: str = ""
    """A PEM bundle of CA certificates to trust instead of the system's (private networks, tests)."""
    channel_charsets: tuple[tuple[str, str], ...] = ()
    """(channel, charset) pairs: a room's own fallback charset, overriding ``charset``."""

    def trust_root(self) -> IOpenSSLTrustRoot:
        """What verifies the server's certificate: the CAs of ``ca_file``, else the platform's.

        Raises a LegacyError if ``ca_file`` cannot be read or holds no certificate: a TLS
        network is never reached without verification, nor in plain text."""
        if not self.ca_file:
            return platformTrust()
        try:
            with open(self.ca_file, "rb") as file:
                pem = file.read()
            certificates = x509.load_pem_x509_certificates(pem)
        except (OSError, ValueError) as exc:
            log.error("%s: cannot load ca_file %s: %s", self.name, self.ca_file, exc)
            raise LegacyError("internal-server-error",
                              f"the gateway cannot verify {self.name} (bad ca_file)") from exc
        return trustRootFromCertificates(
            [Certificate.loadPEM(c.public_bytes(serialization.Encoding.PEM)) for c in certificates])

    async def resolve(self, clock: IReactorTime) -> str:
        try:
            return str(ipaddress.ip_address(self.host))
        except ValueError:
            pass
        reactor = IReactorCore(clock)
        try:
            return await reactor.resolve(self.host)  # type: ignore[no-any-return]
        except Exception as exc:
            raise LegacyError("remote-server-not-found", f"cannot resolve {self.host}") from exc

    def with_address(self, address: str) -> NetworkSettings:
        return replace(self, address=address)


class _OneShotFactory(Factory):
    """Builds the one protocol it was given. Twisted's ``connectProtocol`` does the same with a
    new class per call (~2.5 kB each, kept for the connection's life); this is one class."""

    noisy = False  # no "Starting factory" log line per IRC connection

    def __init__(self, protocol: IrcLineProtocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: IAddress) -> IrcLineProtocol:
        return self._protocol


class IrcConnection:
    def __init__(self, *, user: str, nick: str, network: NetworkSettings, settings: ConnectionSettings,
                 addressing: Addressing, emit: Callable[[object], None], clock: IReactorTime,
                 on_closed: Callable[[], None], credentials: Credentials | None = None,
                 nicks: NickIndex | None = None, username: str = "", realname: str = "",
                 throttle_burst: int | None = None) -> None:
        self.user = user
        self.username = username
        self.realname = realname
        self.throttle_burst = throttle_burst or settings.throttle_burst
        self.encodings_in: dict[str, str] = {}
        """Folded channel -> the fallback charset of its non-UTF-8 lines (room ``encoding_in``);
        the key ``""`` (never a channel) holds the network's own ``encoding_in``."""
        self.encodings_out: dict[str, str] = {}
        """Folded channel -> the charset of the lines sent there (room ``encoding_out``); the
        key ``""`` holds the network's ``encoding_out``, for every other line."""
        self.connected_since: float | None = None
        self.nicks = nicks or NickIndex()
        self.credentials = credentials or Credentials()
        self.nick = nick
        self.network = network
        self.settings = settings
        self.addressing = addressing
        self.emit = emit
        self.clock = clock
        self.on_closed = on_closed
        isupport = ISupport()
        self.channels = Channels(user=user, network=network.name, addressing=addressing,
                                 history=History(isupport.fold),
                                 isupport=isupport, emit=emit, own_nick=self._own_nick, reply=self._notice,
                                 ctcp_version=settings.ctcp_version, nick_owner=self.nicks.owner)
        self._motd: list[str] = []
        self._channel_list: tuple[float, list[tuple[str, int, str]]] | None = None
        self.protocol: IrcLineProtocol | None = None
        self.registration: Registration | None = None
        self.closed = False
        self._quitting = False
        self._waiters: list[Deferred[None]] = []
        self._queued: list[str] = []
        self._attempt = 0
        self._retry: IDelayedCall | None = None
        self._registration_timer: IDelayedCall | None = None
        self.rejoin: dict[str, tuple[str, str]] = {}
        """Folded channel -> (room address, key): what to rejoin after a reconnection."""

    # At most 29 instance attributes: past that, CPython 3.11 gives each instance a dict of its own
    # (~1.6 kB per connection instead of ~0.3 kB of inline values; tests/unit/irc/test_memory.py).
    # So what the channel state already holds is read from there.

    @property
    def isupport(self) -> ISupport:
        return self.channels.isupport

    @property
    def history(self) -> History:
        return self.channels.history

    # Methods rather than lambdas for the channel state's callbacks: a bound method is a third
    # of a closure's size.
    def _own_nick(self) -> str:
        return self.nick

    def _notice(self, nick: str, text: str) -> None:
        self.send("NOTICE", nick, text)

    # -- lifecycle ---------------------------------------------------------------------------

    def connect(self) -> None:
        client_tls: dict[str, object] = {}
        sasl: Sasl | None = None
        if self.credentials.client_certificate:
            # CertFP: the certificate is the login (SASL EXTERNAL, preferred over PLAIN), so it
            # is only ever shown over TLS, never offered to a plain-text network.
            if not self.network.tls:
                self._fail(LegacyError("not-acceptable", f"{self.network.name} is not reached over TLS, "
                                       "so the client certificate cannot be used"))
                return
            try:
                certificate, key = load_client_certificate(self.credentials.client_certificate)
            except ValueError as exc:
                self._fail(LegacyError("not-acceptable", str(exc)))
                return
            # cryptography objects, which pyOpenSSL takes without the deprecation warnings that
            # PrivateCertificate (pyOpenSSL X509 / PKey) causes (twisted/twisted#12664).
            client_tls = {"certificate": certificate, "privateKey": key}
            sasl = SaslExternal()
        elif self.credentials.password:
            account = self.credentials.account or self.nick
            sasl = SaslPlain(authcid=account, password=self.credentials.password)
        # The real name is the nick: a bare JID in WHOIS would expose the user (privacy).
        self.registration = Registration(nick=self.nick, user=self.username or _username(self.nick),
                                         realname=self.realname or self.nick,
                                         password=self.network.password or None, sasl=sasl)
        protocol = IrcLineProtocol(
            self._received, clock=self.clock,
            throttle=Throttle(self.clock.seconds, burst=self.throttle_burst,
                              rate=self.settings.throttle_rate),
            fallback_encoding=self.network.charset, charset_for=self._charset_for,
            keepalive=self.settings.keepalive, timeout=self.settings.keepalive_timeout,
            on_connect=self._connected, on_disconnect=self._disconnected,
        )
        protocol.encode_line = self._encode_line
        self.protocol = protocol
        endpoint_class = TCP6ClientEndpoint if ":" in self.network.address else TCP4ClientEndpoint
        endpoint = endpoint_class(self.clock, self.network.address, self.network.port, timeout=15)
        if self.network.tls:
            # Verified against the configured host name (not the address connected to), and
            # no plain-text fallback: a failed handshake or verification fails the connection.
            try:
                trust = self.network.trust_root()
            except LegacyError as exc:
                self.clock.callLater(0, self._connect_failed, Failure(exc))
                return
            options = optionsForClientTLS(self.network.host, trustRoot=trust,
                                          extraCertificateOptions=client_tls)
            endpoint = wrapClientTLS(options, endpoint)

        def registration_timeout() -> None:
            # Abort rather than close: a TLS handshake that never finishes (a plain port, a
            # silent server) holds the queued registration lines, and a clean TLS close
            # would wait for that handshake forever.
            if protocol.transport is not None:
                protocol.transport.abortConnection()
            self._registration_timeout()

        self._registration_timer = self.clock.callLater(REGISTRATION_TIMEOUT, registration_timeout)
        endpoint.connect(_OneShotFactory(protocol)).addErrback(self._connect_failed)

    def _charset_for(self, message: IrcMessage) -> str | None:
        """A non-UTF-8 line in a channel with its own charset is decoded with that one."""
        if not message.params:
            return None
        target = self.channels.fold(message.params[0])
        if target in self.encodings_in:
            return self.encodings_in[target]
        for channel, charset in self.network.channel_charsets:
            if self.channels.fold(channel) == target:
                return charset
        return self.encodings_in.get("")

    def _encode_line(self, line: str) -> bytes:
        """UTF-8, unless the channel's ``encoding_out`` or the network's says otherwise (Biboumi)."""
        if self.encodings_out:
            charset = None
            parts = line.split(" ", 2)
            if len(parts) > 1 and parts[0] in ("PRIVMSG", "NOTICE", "TOPIC", "PART"):
                charset = self.encodings_out.get(self.channels.fold(parts[1]))
            charset = charset or self.encodings_out.get("")
            if charset:
                return line.encode(charset, "replace")
        return line.encode("utf-8")

    def set_throttle(self, burst: int) -> None:
        """Apply a new ``throttle_limit`` to the live connection."""
        self.throttle_burst = burst
        if self.protocol is not None:
            self.protocol.throttle.set_burst(burst)

    def info(self) -> str:
        """Biboumi's get-irc-connection-info text."""
        if self.registration is None or not self.registration.registered or self.connected_since is None:
            return f"You are not connected to the IRC server {self.network.name}"
        ago = int(self.clock.seconds() - self.connected_since)
        since = datetime.fromtimestamp(self.connected_since, UTC).strftime("%Y-%m-%d %H:%M:%S")
        tls = " (using TLS)" if self.network.tls else ""
        lines = [f"Connected to IRC server {self.network.name} on port {self.network.port}{tls} "
                 f"as {self.nick} since {since} UTC ({ago} seconds ago)."]
        for channel in sorted(self.channels.channels.values(), key=lambda c: c.name):
            if channel.joined:
                lines.append(f"{channel.name}")
        return "\n".join(lines)

    def disconnect(self, message: str) -> None:
        """Leave the network at the user's request: every room is left (332), then QUIT."""
        addresses = [c.address for c in self.channels.channels.values()]
        addresses += [address for address, _key in self.rejoin.values()]
        self.channels.channels.clear()
        self.rejoin.clear()
        # QUIT first: the last room left may end the whole legacy session (another QUIT).
        self.quit(message)
        for address in addresses:
            self.emit(RoomLeft(user=self.user, room=address, reason=f"disconnected from {self.network.name}"))

    @property
    def quitting(self) -> bool:
        """QUIT was sent: the connection is going away and takes no new work."""
        return self._quitting

    def ready(self) -> Deferred[None]:
        """Fires once registered (001); fails with a LegacyError if the network refuses us."""
        waiter: Deferred[None] = Deferred()
        if self.registration is not None and self.registration.registered:
            waiter.callback(None)
        else:
            self._waiters.append(waiter)
        return waiter

    def _settle(self, error: LegacyError | None) -> None:
        if self._registration_timer is not None and self._registration_timer.active():
            self._registration_timer.cancel()
        self._registration_timer = None
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if error is None:
                waiter.callback(None)
            else:
                waiter.errback(Failure(error))

    def _connected(self) -> None:
        assert self.registration is not None and self.protocol is not None
        for line in self.registration.start():
            self.protocol.send_line(line, priority=True)

    def _fail(self, error: LegacyError) -> None:
        """Give up before connecting (the user's settings cannot work): once ``ready()`` waits."""
        self.clock.callLater(0, self._close, error)

    def _connect_failed(self, failure: Failure) -> None:
        log.info("%s: cannot connect to %s: %s", self.user, self.network.name, failure.getErrorMessage())
        if self.rejoin and not self._quitting:
            self._schedule_reconnect()
            return
        self._close(LegacyError("remote-server-timeout",
                                f"cannot connect to {self.network.name}: {failure.getErrorMessage()}"))

    def _registration_timeout(self) -> None:
        self._registration_timer = None
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.transport.loseConnection()
        self._settle(LegacyError("remote-server-timeout", f"{self.network.name} did not let us in"))

    def _disconnected(self, reason: Failure) -> None:
        registered = self.registration is not None and self.registration.registered
        if self._quitting or self.closed:
            self._close(None)
            return
        error = self.registration.error if self.registration is not None else None
        if not registered:
            text = error.text if error is not None else reason.getErrorMessage()
            self._close(LegacyError("remote-server-timeout", f"{self.network.name}: {text}"))
            return
        # Lost after registration: keep the rooms, tell the user, come back.
        self._notice_rooms(f"Connection to {self.network.name} lost ({reason.getErrorMessage()}); "
                           "reconnecting")
        for channel in self.channels.channels.values():
            self.rejoin.setdefault(self.channels.fold(channel.name), (channel.address, ""))
        self.channels.channels.clear()
        self._schedule_reconnect()

    def _schedule_reconnect(self) -> None:
        delay = min(RECONNECT_CAP, RECONNECT_INITIAL * 2 ** self._attempt) * (0.8 + 0.4 * random.random())
        self._attempt += 1
        self._retry = self.clock.callLater(delay, self._reconnect)

    def _reconnect(self) -> None:
        self._retry = None
        self.connect()

    def _close(self, error: LegacyError | None) -> None:
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        self.closed = True
        self.nicks.set(self.network.name, self.channels.fold(self.nick), None, self.user)
        # Rooms waiting to be rejoined can no longer be: the user is out of them.
        for address, _key in self.rejoin.values():
            self.emit(RoomLeft(user=self.user, room=address,
                               reason=f"lost the connection to {self.network.name}"))
        self.rejoin.clear()
        self._settle(error or LegacyError("remote-server-timeout", "connection closed"))
        self.on_closed()

    def _notice_rooms(self, text: str) -> None:
        for channel in self.channels.channels.values():
            if channel.joined:
                # From the room itself (no nick): the gateway speaking, never archived as a user's line.
                self.emit(RoomMessage(user=self.user, room=channel.address, nick="", body=text, notice=True))

    # -- incoming --------------------------------------------------------------------------

    def _received(self, message: IrcMessage) -> None:
        registration = self.registration
        assert registration is not None and self.protocol is not None
        was_registered = registration.registered
        for line in registration.receive(message):
            self.protocol.send_line(line, priority=True)
        if message.command == "005":
            self.isupport.update(message.params)
        if message.command == "BATCH":
            self.history.on_batch(message)
        if not was_registered and registration.registered:
            self.nicks.set(self.network.name, None, self.channels.fold(registration.nick), self.user)
            self.nick = registration.nick
            self._attempt = 0
            self.connected_since = self.clock.seconds()
            if registration.error is not None and registration.error.kind.startswith("sasl"):
                if registration.error.kind == "sasl-failed":
                    # Wrong account or password: refuse rather than carry on unauthenticated.
                    self._settle(LegacyError("not-authorized", registration.error.text))
                    self.quit("")
                    return
                if self.credentials.password:
                    self._nickserv_identify()  # no SASL on this server: NickServ is the fallback
            self._settle(None)
            for line in self._queued:
                self.protocol.send_line(line)
            self._queued.clear()
            for address, key in list(self.rejoin.values()):
                name = self.addressing.parse(address).name
                self.join(address, name, key)
                self._notice_rooms_later(address)
            self.rejoin.clear()
        elif (not registration.registered and registration.error is not None
              and registration.error.kind != "sasl-unavailable"):  # NickServ takes over after 001
            kind = registration.error.kind
            if kind.startswith("nick-"):
                # XEP-0045 §7.2.9: the nick is taken (after our retries) or invalid.
                condition = "conflict" if kind == "nick-unavailable" else "jid-malformed"
                self._settle(LegacyError(condition, registration.error.text))  # type: ignore[arg-type]
                self.quit("")
            else:
                self._settle(LegacyError("not-authorized" if "sasl" in kind else "remote-server-timeout",
                                         registration.error.text))
        if message.command == "NICK" and self.channels.is_me(message.nick):
            fold = self.channels.fold
            self.nicks.set(self.network.name, fold(self.nick), fold(message.params[0]), self.user)
            self.nick = message.params[0]
        if message.command == "ERROR":
            log.info("%s: %s says ERROR %s", self.user, self.network.name, message.params)
        self._server_message(message)
        self.channels.handle(message)

    def _nickserv_identify(self) -> None:
        account = self.credentials.account or self.nick
        self.send("PRIVMSG", "NickServ", f"IDENTIFY {account} {self.credentials.password}")

    def _server_message(self, message: IrcMessage) -> None:
        """MOTD (collated), welcome lines and errors nobody else handles: to the network JID."""
        command, params = message.command, message.params
        if command == "375":
            self._motd = []
        elif command == "372" and len(params) > 1:
            self._motd.append(params[-1])
            del self._motd[:-500]  # bounded
        elif command in ("376", "422"):
            text = "\n".join(self._motd) if command == "376" else params[-1]
            self._motd = []
            self.channels.server_text(text)
        elif command in ("002", "003") and len(params) > 1:
            self.channels.server_text(params[-1])
        elif (command.isdigit() and command[0] in "45" and command not in JOIN_ERRORS
              and command not in ("401", "433") and len(params) > 1):
            self.channels.server_text(": ".join(params[1:]))

    def send_raw(self, line: str) -> None:
        """A raw command from the user (chat to the network JID); one line, checked."""
        parse(line)  # raises IrcParseError for anything that is not one IRC message
        if self.protocol is None or self.registration is None or not self.registration.registered:
            self._queued.append(line)
            return
        self.protocol.send_line(line)

    def _notice_rooms_later(self, address: str) -> None:
        # The notice goes out once the channel is joined again, and then the backfill request.
        def announce() -> None:
            channel = next((c for c in self.channels.channels.values() if c.address == address), None)
            if channel is not None and channel.joined:
                self.emit(RoomMessage(user=self.user, room=address, nick="",
                                      body=f"Reconnected to {self.network.name}", notice=True))
                self._backfill(channel.name)
        self.channels.on_joined[address] = announce

    def _backfill(self, channel: str) -> None:
        """IRCv3 chathistory: ask for what was said in ``channel`` while we were away."""
        assert self.registration is not None
        token = self.isupport.tokens.get("CHATHISTORY")
        if not History.available(self.registration.enabled, token):
            return
        line = self.history.request(channel, History.limit(token))
        if line is not None:
            self.send_raw(line)

    # -- outgoing ---------------------------------------------------------------------------

    def send(self, command: str, *params: str) -> None:
        line = serialize(command, *params)  # refuses CR, LF and NUL in any part
        if self.protocol is None or self.registration is None or not self.registration.registered:
            if len(self._queued) >= QUEUE_LIMIT:
                raise LegacyError("resource-constraint", "too much waiting for the IRC connection")
            self._queued.append(line)
            return
        try:
            self.protocol.send_line(line)
        except QueueFull as exc:
            raise LegacyError("resource-constraint", "sending too fast: flood-control queue full") from exc

    def join(self, address: str, channel: str, key: str) -> None:
        self.channels.expect(address, channel)
        self.rejoin.pop(self.channels.fold(channel), None)
        if key:
            self.send("JOIN", channel, key)
        else:
            self.send("JOIN", channel)

    def part(self, channel: str, reason: str) -> None:
        self.channels.forget(channel)
        self.send("PART", channel, *([reason] if reason else []))
        if not self.channels.channels and not self.rejoin:
            # Like Biboumi: the last channel left ends the connection.
            self.quit("")

    def say(self, target: str, body: str, *, xmpp_id: str = "") -> list[SentLine]:
        """PRIVMSG each line of ``body``, split to fit 512 bytes; ``/me`` becomes CTCP ACTION."""
        sent: list[SentLine] = []
        for line in split_body(body):
            action = line.startswith("/me ")
            text = line[4:] if action else line
            overhead = relay_overhead("PRIVMSG", target, self.nick)
            if action:
                overhead += len("\x01ACTION \x01")
            for chunk in encode_and_split(overhead, text):
                self.send("PRIVMSG", target, ctcp("ACTION", chunk) if action else chunk)
                sent.append(SentLine(f"/me {chunk}" if action else chunk))
        if xmpp_id and not self.isupport.is_channel(target):
            self.channels.sent_private(target, xmpp_id)
        return sent

    async def moderate(self, channel: str, nick: str, *, role: str | None = None,
                       affiliation: str | None = None, reason: str = "") -> None:
        """XEP-0045 §8-§9 on IRC: KICK, +o/-o, +v/-v, +b; returns when the server echoed it."""
        fold = self.channels.fold
        if role == "none":
            done = self.channels.wait_for(channel, lambda m: m.command == "KICK" and len(m.params) > 1
                                          and fold(m.params[0]) == fold(channel)
                                          and fold(m.params[1]) == fold(nick))
            self.send("KICK", channel, nick, *([reason] if reason else []))
            await done
            return
        changes = {
            ("role", "moderator"): "+o", ("role", "participant"): "-o", ("role", "visitor"): "-ov",
            ("affiliation", "owner"): "+o", ("affiliation", "admin"): "+o",
            ("affiliation", "member"): "+v", ("affiliation", "none"): "-ov",
            ("affiliation", "outcast"): "+b",
        }
        key = ("role", role) if role is not None else ("affiliation", affiliation)
        modes = changes.get(key)  # type: ignore[arg-type]
        if modes is None:
            raise LegacyError("not-allowed", f"IRC has no equivalent of {key[0]} {key[1]}")
        if modes.startswith("-"):
            # Only what the occupant holds: the server echoes nothing for a no-op change.
            channel_state = self.channels.channels.get(fold(channel))
            member = channel_state.members.get(fold(nick)) if channel_state is not None else None
            if member is None:
                raise LegacyError("item-not-found", f"{nick} is not in {channel}")
            held = "".join(mode for mode in modes[1:] if mode in member.modes)
            if not held:
                return
            modes = "-" + held
        target = f"{nick}!*@*" if modes == "+b" else nick
        params = [target] * (len(modes) - 1)
        done = self.channels.wait_for(channel, lambda m: m.command == "MODE" and len(m.params) > 1
                                      and fold(m.params[0]) == fold(channel)
                                      and any(fold(p) == fold(target) for p in m.params[2:]))
        self.send("MODE", channel, modes, *params)
        await done
        if modes == "+b":
            # §9.1: a banned occupant is also removed from the room.
            await self.moderate(channel, nick, role="none", reason=reason)

    async def list_channels(self) -> list[tuple[str, int, str]]:
        """The network's channel list (LIST: 322 lines until 323), as (name, users, topic),
        cached for a minute: LIST is heavy for the server and clients page through it."""
        now = self.clock.seconds()
        if self._channel_list is not None and now - self._channel_list[0] < LIST_CACHE_SECONDS:
            return self._channel_list[1]
        found: list[tuple[str, int, str]] = []

        def collect(message: IrcMessage) -> bool:
            if message.command == "322" and len(message.params) >= 3 and len(found) < LIST_LIMIT:
                users = int(message.params[2]) if message.params[2].isdigit() else 0
                topic = message.params[3] if len(message.params) > 3 else ""
                found.append((message.params[1], users, to_plain(topic)))
            return message.command == "323"

        done = self.channels.wait_for("", collect, refused=lambda m: None)
        self.send("LIST")
        timeout = self.clock.callLater(30, done.cancel)
        try:
            await done
        finally:
            if timeout.active():
                timeout.cancel()
        self._channel_list = (now, found)
        return found

    def topic(self, channel: str, text: str) -> None:
        self.send("TOPIC", channel, " ".join(split_body(text)))

    async def change_nick(self, nick: str) -> None:
        """NICK, answered once the server confirms it; 433 and friends become ``conflict``."""
        fold = self.channels.fold
        nick_errors = {"433": "conflict", "436": "conflict", "437": "conflict", "432": "not-acceptable",
                       "438": "not-acceptable"}

        def refused(message: IrcMessage) -> str | None:
            if message.command in nick_errors and len(message.params) > 1 \
                    and fold(message.params[1]) == fold(nick):
                return nick_errors[message.command]
            return None

        done = self.channels.wait_for("", lambda m: m.command == "NICK" and bool(m.params)
                                      and fold(m.params[0]) == fold(nick), refused)
        self.send("NICK", nick)
        await done

    def set_away(self, show: str | None, status: str) -> None:
        if show in ("away", "xa", "dnd"):
            self.send("AWAY", status or show)
        else:
            self.send("AWAY")

    def quit(self, reason: str) -> None:
        self._quitting = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
            self._retry = None
        if self.protocol is not None and self.protocol.transport is not None and self.protocol.connected:
            self.protocol.send_line(serialize("QUIT", reason or "Leaving"), priority=True)
            self.protocol.transport.loseConnection()
        else:
            self._close(None)


def _username(nick: str) -> str:
    cleaned = "".join(c for c in nick if c.isalnum()) or "xmpp"
    return cleaned[:10]
