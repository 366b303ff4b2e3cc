"""The SIP MESSAGE plugin: SIP accounts registered through the gateway, page-mode IM both ways.

Users register their SIP account (XEP-0077: address of record, auth username, password,
optional outbound proxy/registrar, transport). While any of their XMPP resources is
available the gateway keeps a SIP registration up for them (:mod:`.registration`), with
a Contact whose opaque user part identifies them; the registration state is the gateway's
presence for them. Chat messages to ``alice\\40example.com@gateway`` become MESSAGE requests
from the user's AOR (RFC 3428, RFC 7572 §4); the final response is the XMPP outcome
(a receipt, XEP-0184, or an error with the message's id). MESSAGEs for a user become
chat messages from the sender's escaped JID, answered at once (:mod:`.uas`).

Options (``[gateways.NAME.options]``, see docs/sip.md): ``listen_host``, ``udp_port``,
``tcp_port``, ``contact_host``, ``proxy``, ``expires``, ``receipts``, ``ca_file``,
``user_agent``, ``keepalive``, ``offline_messages`` (keep users registered while they are
offline: their MESSAGEs are answered 200 and go to the server's offline storage),
``contact_secret`` / ``contact_secret_env`` (the key of the Contact tokens, see
:meth:`SipPlugin.token_for`).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import logging
import os
import secrets
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.internet.defer import ensureDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.ssl import Certificate, trustRootFromCertificates

from gateway.plugin import (
    ERROR_CONDITIONS,
    ContactPresence,
    FormField,
    LegacyError,
    LoginFailed,
    OutgoingMessage,
    PluginContext,
    PresenceUpdate,
    Registration,
    SessionLost,
)
from plugins.sip.addressing import normalize, uri_for
from plugins.sip.codec import SipRequest
from plugins.sip.registration import RegistrationClient, RegistrationFailed
from plugins.sip.resolver import NoTargets, ServerLocator
from plugins.sip.stack import SipStack, SipTimeout, SipTransportError, StackSettings
from plugins.sip.status import xmpp_condition
from plugins.sip.transport import Peer
from plugins.sip.ua import (
    AccountSettings,
    UserAgent,
    new_call_id,
    new_tag,
    parse_aor,
    parse_proxy,
    too_large_for_udp,
)
from plugins.sip.uas import MessageService

__all__ = ["SipPlugin", "SipSession"]

log = logging.getLogger(__name__)

TRANSPORT_CHOICES = ("auto", "udp", "tcp", "tls")
#: Bodies over this many bytes are refused before any SIP is sent (no proxy takes more).
MAX_BODY_BYTES = 60000
#: The shortest ``contact_secret`` taken (the tokens' only protection against guessing).
MIN_SECRET_LENGTH = 16
#: Contacts remembered per user to show available while the registration is up.
MAX_CONTACTS = 500

ADDRESS_FIELD = FormField(var="username", label="SIP address (user@domain)", required=True,
                          description="Your address of record: alice@example.com or sip:alice@example.com")
AUTH_FIELD = FormField(var="auth_username", label="Authentication username",
                       description="Empty: the user part of the SIP address")
PASSWORD_FIELD = FormField(var="password", label="Password", type="text-private", required=True, secret=True)
PROXY_FIELD = FormField(var="proxy", label="Outbound proxy / registrar (optional)",
                        description="e.g. sip:proxy.example.com:5060; empty: the domain of your address")
TRANSPORT_FIELD = FormField(var="transport", label="Transport", type="list-single", options=TRANSPORT_CHOICES,
                            default="auto", description="auto: DNS (NAPTR/SRV) decides")


class _Options:
    """Typed reads of the options table; every error names its key."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        known = {"listen_host", "udp_port", "tcp_port", "contact_host", "proxy", "expires", "receipts",
                 "ca_file", "user_agent", "keepalive", "offline_messages", "contact_secret",
                 "contact_secret_env"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown SIP option (known: {', '.join(sorted(known))})")
        self.options = options

    def text(self, key: str, default: str) -> str:
        value = self.options.get(key, default)
        if not isinstance(value, str):
            raise ValueError(f"{key}: expected a string, got {value!r}")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.options.get(key, default)
        if not isinstance(value, bool):
            raise ValueError(f"{key}: expected true or false, got {value!r}")
        return value

    def contact_secret(self) -> bytes | None:
        """``contact_secret``, or the variable ``contact_secret_env`` names; ``None``: neither."""
        inline, variable = self.text("contact_secret", ""), self.text("contact_secret_env", "")
        if inline and variable:
            raise ValueError("contact_secret: give contact_secret or contact_secret_env, not both")
        if variable:
            inline = os.environ.get(variable, "")
            if not inline:
                raise ValueError(f"contact_secret_env: the environment variable {variable!r} is not set "
                                 "or empty")
        if not inline:
            return None
        if len(inline) < MIN_SECRET_LENGTH:
            key = "contact_secret_env" if variable else "contact_secret"
            raise ValueError(f"{key}: the secret must be at least {MIN_SECRET_LENGTH} characters long")
        return inline.encode()

    def integer(self, key: str, default: int, *, minimum: int, maximum: int) -> int:
        value = self.options.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
            raise ValueError(f"{key}: expected a whole number from {minimum} to {maximum}, got {value!r}")
        return value


def _trust_root(path: str) -> Any:
    try:
        with open(path, "rb") as file:
            certificates = x509.load_pem_x509_certificates(file.read())
    except (OSError, ValueError) as exc:
        raise ValueError(f"ca_file: cannot load CA certificates from {path!r}: {exc}") from None
    return trustRootFromCertificates(
        [Certificate.loadPEM(c.public_bytes(serialization.Encoding.PEM)) for c in certificates])


class SipSession:
    """One user's SIP side: the registration and the MESSAGE client."""

    def __init__(self, plugin: SipPlugin, user: str, settings: AccountSettings, token: str) -> None:
        self.plugin = plugin
        self.user = user
        self.settings = settings
        self.token = token
        self.ua = UserAgent(plugin.stack, plugin.locator, settings)
        self.registration = RegistrationClient(self.ua, plugin.context.clock, contact_user=token,
                                               expires=plugin.expires, on_lost=self._lost)
        self.contacts = plugin.contacts_of(user)
        self.active = False

    async def start(self) -> None:
        """Register; raises :class:`LoginFailed`."""
        await self.plugin.acquire_stack()
        try:
            granted = await self.registration.register()
        except RegistrationFailed as exc:
            await self.plugin.stack.release()
            raise _login_failed(exc) from None
        except BaseException:
            await self.plugin.stack.release()
            raise
        self.active = True
        self.registration.start_refreshing(granted)
        log.info("%s registered as %s for %d s", self.user, self.settings.aor, granted)
        # Held by the core until the login completes (docs/plugins.md, Timing).
        for contact in self.contacts:
            self._show(contact)

    def _lost(self, condition: str, text: str) -> None:
        log.info("SIP registration of %s lost: %s", self.user, text)
        self.plugin.context.events.emit(SessionLost(user=self.user, reason=text, condition=condition))  # type: ignore[arg-type]
        self._deactivate()

    def retire(self) -> None:
        """Stop without unregistering (another session now owns the binding)."""
        self._deactivate()

    def _deactivate(self) -> None:
        if not self.active:
            return
        self.active = False
        self.registration.stop()
        self.plugin.forget(self)
        # Not from inside the stack's own callback: close on the next turn.
        self.plugin.context.clock.callLater(0, lambda: ensureDeferred(self.plugin.stack.release()))

    # -- LegacySession ----------------------------------------------------------------------------

    async def send_message(self, message: OutgoingMessage) -> str:
        if not self.active:
            raise LegacyError("service-unavailable", "your SIP registration is not active")
        if not message.body:
            return ""  # nothing sent: the core sends no receipt and archives nothing for it
        body = message.body.encode("utf-8")
        if len(body) > MAX_BODY_BYTES:
            raise LegacyError("not-acceptable", f"message too long for SIP (over {MAX_BODY_BYTES} bytes)")
        uri = uri_for(message.contact, self.settings.aor.host)
        call_id, tag, cseqs = new_call_id(self.settings.aor.host), new_tag(), itertools.count(1)
        large = False

        def build(peer: Peer, cseq: int) -> SipRequest:
            nonlocal large
            headers = self.ua.headers(to=f"<{uri}>", call_id=call_id, cseq=cseq, method="MESSAGE",
                                      from_tag=tag, extra=[("Content-Type", "text/plain;charset=UTF-8")])
            request = SipRequest("MESSAGE", str(uri), headers, body)
            large = large or (peer.transport == "udp" and too_large_for_udp(request))
            return request

        try:
            response = await self.ua.send(build, lambda: next(cseqs))
        except SipTimeout:
            raise LegacyError("remote-server-timeout", "SIP: no answer from the proxy (408)") from None
        except (SipTransportError, NoTargets) as exc:
            if large:
                raise LegacyError("not-acceptable", "message too large for UDP (RFC 3261 §18.1.1: over 1300 "
                                  f"bytes) and TCP to the proxy failed: {exc}") from None
            raise LegacyError("remote-server-not-found", f"SIP: cannot reach the proxy: {exc}") from None
        if response.status == 200:
            return call_id  # RFC 3428 §7: 200 means delivered; the core may answer a receipt
        if 200 < response.status < 300:
            # RFC 3428 §7: a 202 only says a store-and-forward element took it, not that it was
            # delivered: sent, but no receipt (the core sends one only for a non-empty id).
            return ""
        raise LegacyError(_condition(response.status), f"SIP {response.status} {response.reason}".strip())

    async def set_presence(self, presence: PresenceUpdate) -> None:
        return None  # SIMPLE presence (PUBLISH) is not done yet

    async def add_contact(self, contact: str) -> bool:
        normalize(contact)
        self._remember(contact)
        # No SIP presence yet: a contact shows available while the user's registration is up.
        self.plugin.context.clock.callLater(0, self._show, contact)
        return True

    async def remove_contact(self, contact: str) -> None:
        self.contacts.pop(contact, None)

    async def logout(self) -> None:
        if not self.active:
            return
        self.active = False
        self.plugin.forget(self)
        try:
            await self.registration.unregister()
        finally:
            await self.plugin.stack.release()

    # -- helpers --------------------------------------------------------------------------------------

    def _remember(self, contact: str) -> None:
        self.contacts.pop(contact, None)
        self.contacts[contact] = None
        while len(self.contacts) > MAX_CONTACTS:
            self.contacts.popitem(last=False)

    def _show(self, contact: str) -> None:
        if self.active:
            self.plugin.context.events.emit(ContactPresence(user=self.user, contact=contact, available=True))


def _condition(status: int) -> str:
    """RFC 7572 / reference/sip.md §2.13 mapping, limited to conditions Twisted can send."""
    condition = xmpp_condition(status)
    if condition == "policy-violation":
        condition = "not-acceptable"  # COMPAT: Twisted 26.10's StanzaError has no policy-violation
    return condition if condition in ERROR_CONDITIONS else "undefined-condition"


def _login_failed(exc: RegistrationFailed) -> LoginFailed:
    if exc.permanent:
        return LoginFailed("not-authorized", f"the SIP registrar refused the registration: {exc.text}")
    return LoginFailed("remote-server-timeout", exc.text)


class SipPlugin:
    name = "SIP"
    identity_type = "sip"
    instructions = ("Enter your SIP address (user@domain), password and, if your provider needs them, "
                    "the authentication username and outbound proxy.")
    prompt = "Enter a SIP address, e.g. sip:alice@example.com"
    registration_fields = (ADDRESS_FIELD, AUTH_FIELD, PASSWORD_FIELD, PROXY_FIELD, TRANSPORT_FIELD)

    def __init__(self, context: PluginContext) -> None:
        self.context = context
        options = _Options(context.options)
        listen_host = options.text("listen_host", "0.0.0.0")
        contact_host = options.text("contact_host", "")
        if not contact_host and listen_host in ("0.0.0.0", "::", ""):
            raise ValueError("contact_host: required when listen_host is a wildcard address "
                             "(the address SIP servers reach the gateway at)")
        ca_file = options.text("ca_file", "")
        self.default_proxy = options.text("proxy", "")
        try:
            parse_proxy(self.default_proxy)
        except ValueError as exc:
            raise ValueError(f"proxy: {exc}") from None
        self.expires = options.integer("expires", 600, minimum=1, maximum=86400)
        self.delivery_receipts = options.flag("receipts", True)
        self.offline_messages = options.flag("offline_messages", False)
        # A random key per process unless configured: see token_for and docs/sip.md.
        self.contact_key = options.contact_secret() or secrets.token_bytes(32)
        settings = StackSettings(
            listen_host=listen_host or "0.0.0.0",
            udp_port=options.integer("udp_port", 5060, minimum=0, maximum=65535),
            tcp_port=options.integer("tcp_port", 5060, minimum=0, maximum=65535),
            contact_host=contact_host,
            user_agent=options.text("user_agent", "xmpp-gateway"),
            trust_root=_trust_root(ca_file) if ca_file else None,
            keepalive=float(options.integer("keepalive", 60, minimum=0, maximum=3600)),
        )
        self.locator = ServerLocator()
        self.service = MessageService(self)
        self.stack = SipStack(context.clock, settings, self.service.handle)
        self.sessions: dict[str, SipSession] = {}
        """Contact token -> the logged-in session it reaches."""
        self.known_tokens: OrderedDict[str, str] = OrderedDict()
        self._contacts: OrderedDict[str, OrderedDict[str, None]] = OrderedDict()
        """Contact token -> user, kept after logout: a MESSAGE for it then gets 480, not 404."""

    # -- addressing --------------------------------------------------------------------------------------

    def legacy_to_localpart(self, address: str) -> str:
        return normalize(address)

    def localpart_to_legacy(self, localpart: str) -> str:
        return normalize(localpart)

    def legacy_id_for(self, values: Mapping[str, str]) -> str:
        aor = parse_aor(values.get("username", ""))
        return f"{aor.user}@{aor.host}"

    def is_room(self, address: str) -> bool:
        return False

    def keeps_session_offline(self, user: str) -> bool:
        """The core's optional hook: with ``offline_messages`` the registration stays up while
        the user is offline, so a MESSAGE then gets 200 and reaches the user's bare JID, which
        the XMPP server stores until they log on (RFC 6121 §8.5.2.1.1), instead of 480."""
        return self.offline_messages

    def is_service(self, address: str) -> bool:
        return False

    # -- accounts ----------------------------------------------------------------------------------------

    def account(self, values: Mapping[str, str]) -> AccountSettings:
        """The SIP account a registration describes; :class:`ValueError` when it cannot be one."""
        aor = parse_aor(values.get("username", ""))
        proxy = parse_proxy(values.get("proxy", "") or self.default_proxy)
        transport = values.get("transport", "auto") or "auto"
        if transport not in TRANSPORT_CHOICES:
            raise ValueError(f"transport: {transport!r} is not one of {', '.join(TRANSPORT_CHOICES)}")
        return AccountSettings(aor=aor, auth_username=values.get("auth_username", "") or str(aor.user),
                               password=values.get("password", ""), proxy=proxy,
                               transport=None if transport == "auto" else transport)

    def token_for(self, user: str) -> str:
        """The Contact user part for ``user``: HMAC-SHA256 of the gateway JID and the user's JID
        under :attr:`contact_key`, so only the registrar (which stores the binding) learns it:
        nobody else can forge a MESSAGE to ``sip:gw-…@gateway`` or probe which JIDs use the
        gateway (an unknown token is always 404). With a configured ``contact_secret`` the token
        is stable across restarts (a new REGISTER replaces the old binding); with the default
        random key it changes, which costs only a stale binding after a crash (docs/sip.md)."""
        message = f"{self.context.gateway_jid}\0{user}".encode()
        return f"gw-{hmac.new(self.contact_key, message, hashlib.sha256).hexdigest()[:32]}"

    async def acquire_stack(self) -> None:
        try:
            await self.stack.acquire()
        except CannotListenError as exc:
            log.error("the SIP gateway cannot listen: %s", exc)
            raise LoginFailed("internal-server-error", "the gateway cannot open its SIP port") from None

    async def check_credentials(self, user: str, values: Mapping[str, str]) -> None:
        """A real REGISTER with a throw-away Contact, removed at once (XEP-0100 §4.1.1 step 6)."""
        try:
            settings = self.account(values)
        except ValueError as exc:
            raise LoginFailed("not-acceptable", str(exc)) from None
        await self.acquire_stack()
        try:
            client = RegistrationClient(UserAgent(self.stack, self.locator, settings), self.context.clock,
                                        contact_user=f"chk-{secrets.token_hex(8)}",
                                        expires=min(self.expires, 60))
            try:
                await client.register()
            except RegistrationFailed as exc:
                raise _login_failed(exc) from None
            await client.unregister()
        finally:
            await self.stack.release()

    async def login(self, registration: Registration) -> SipSession:
        try:
            settings = self.account(registration.values)
        except ValueError as exc:
            raise LoginFailed("not-acceptable", str(exc)) from None
        token = self.token_for(registration.user)
        session = SipSession(self, registration.user, settings, token)
        await session.start()
        previous = self.sessions.get(token)
        if previous is not None and previous is not session:
            # Same Contact: the new REGISTER already replaced its binding; only stop it.
            previous.retire()
        self.sessions[token] = session
        self.known_tokens.pop(token, None)
        self.known_tokens[token] = registration.user
        while len(self.known_tokens) > 10000:
            self.known_tokens.popitem(last=False)
        return session

    def contacts_of(self, user: str) -> OrderedDict[str, None]:
        """The contacts of ``user`` shown available while registered (in memory, bounded)."""
        contacts = self._contacts.pop(user, None) or OrderedDict()
        self._contacts[user] = contacts
        while len(self._contacts) > 10000:
            self._contacts.popitem(last=False)
        return contacts

    def forget(self, session: SipSession) -> None:
        if self.sessions.get(session.token) is session:
            del self.sessions[session.token]
