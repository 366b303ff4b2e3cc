"""User sessions: presence-driven logon and logoff, contacts and messages (XEP-0100 §4.4-§5.3).

One :class:`UserState` per user bare JID. The legacy session lives while any
resource of the user is available (RFC 6121 semantics; Spectrum regression
SpectrumIM/spectrum2#78): the first available presence logs in, the last
unavailable logs out. This module is also the core's :class:`GatewayEvents`:
plugins emit typed events and it turns them into stanzas.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.protocols.jabber.jid import JID, InvalidFormat
from twisted.words.xish import domish

from gateway.access import UserPolicy
from gateway.ids import new_id
from gateway.jids import parse_jid
from gateway.plugin import (
    ContactAdded,
    ContactList,
    ContactPresence,
    ContactRemoved,
    DeliveryFailed,
    LegacyError,
    LegacyEvent,
    LegacySession,
    LoginFailed,
    MessageReceived,
    OutgoingMessage,
    Plugin,
    PresenceUpdate,
    Registration,
    RoomEvent,
    SessionLost,
)
from gateway.room_settings import RoomSettings
from gateway.roster import RosterManager
from gateway.router import Router, Stanza
from gateway.stanzas import child_text, error_reply, stanza, xml_safe
from gateway.store import repository
from gateway.store.crypto import CredentialCipher
from gateway.store.db import Database
from gateway.timeouts import with_timeout
from gateway.xep.escaping import escape_localpart, unescape_localpart

log = logging.getLogger(__name__)

ROOM_EVENTS = RoomEvent.__args__  # type: ignore[attr-defined]

T = TypeVar("T")

LOGIN_TIMEOUT = 60.0
#: Legacy events held while a login is in progress (XEP-0100 §4.1.1 step 7, 14); bounded.
PENDING_EVENTS_LIMIT = 500
#: Outgoing message ids remembered for legacy-side delivery errors.
SENDERS_LIMIT = 2000
NS_CONFERENCE = "jabber:x:conference"
NS_RECEIPTS = "urn:xmpp:receipts"


@dataclass(slots=True)
class ResourcePresence:
    show: str | None
    status: str
    priority: int


@dataclass(slots=True)
class UserState:
    user: str
    resources: dict[str, ResourcePresence] = field(default_factory=dict)
    session: LegacySession | None = None
    login_waiters: list[Deferred[LegacySession]] = field(default_factory=list)
    """Callers waiting for the login in progress (they share one attempt)."""
    logging_in: bool = False
    rooms: dict[str, Any] = field(default_factory=dict)
    """Room address -> the MUC handler's state for that room."""
    pending: list[LegacyEvent] = field(default_factory=list)
    online_contacts: set[str] = field(default_factory=set)
    """Contact JIDs we told the user are available (so we can send unavailable for them)."""

    def presence(self) -> PresenceUpdate:
        """The user's presence for the legacy side: that of the highest-priority resource."""
        if not self.resources:
            return PresenceUpdate(available=False)
        best = max(self.resources.values(), key=lambda r: r.priority)
        return PresenceUpdate(available=True, show=best.show, status=best.status)  # type: ignore[arg-type]


class Sessions:
    """Logon/logoff by presence, messages and subscriptions, and the plugin's event sink."""

    def __init__(
        self,
        *,
        gateway_jid: str,
        send: Callable[[domish.Element], None],
        database: Database,
        cipher: CredentialCipher | None,
        clock: IReactorTime,
        policy: UserPolicy | None = None,
    ) -> None:
        self.gateway_jid = gateway_jid
        self.policy = policy or UserPolicy(())
        self.send = send
        self.send_xml: Callable[[str], bool] = lambda xml: False
        """Write an already serialised stanza if the stream is up (wired to the component's
        ``send_xml`` by the service); by default nothing, so senders build elements."""
        self.database = database
        self.cipher = cipher
        self.clock = clock
        self.plugin: Plugin = None  # type: ignore[assignment]
        self.roster: RosterManager = None  # type: ignore[assignment]
        self.users: dict[str, UserState] = {}
        self.muc: Any = None
        self.archive: Any = None
        """The user archive (gateway.archive.Archive): 1:1 chats are recorded here too."""
        self.senders: OrderedDict[tuple[str, str], str] = OrderedDict()
        """(user, stanza id) -> the full JID that sent it: errors go back to that resource,
        because a server drops a message error addressed to a bare JID (RFC 6121 §8.5.2.1.1)."""
        self.registered: set[str] = set()
        """Bare JIDs with a registration, cached so the message path needs no database call."""
        self._registered_loaded = False
        self._logouts: set[Deferred[None]] = set()
        """Legacy logouts under way (fired when each ends): shutdown waits for them, or the
        plugin would still be talking to its network after the gateway stopped."""
        self.room_settings = RoomSettings(gateway_jid, database)
        """Persistent rooms, history settings and room options of every user (in memory)."""
        self._rooms_restored = False

    def attach_plugin(self, plugin: Plugin) -> None:
        self.plugin = plugin

    def attach_muc(self, muc: Any) -> None:
        """The MUC handler, which gets the room events (gateway.xep.muc)."""
        self.muc = muc

    def attach_router(self, router: Router) -> None:
        self.roster = RosterManager(
            gateway_jid=self.gateway_jid, send=self.send, request=router.request,
            database=self.database, plugin_name=self.plugin.name,
        )

    # -- addressing (XEP-0106 escaped localparts) -------------------------------

    def contact_jid(self, address: str) -> str:
        """The JID of a legacy address; :class:`ValueError` when it cannot be one."""
        localpart = escape_localpart(self.plugin.legacy_to_localpart(address))
        try:
            return parse_jid(f"{localpart}@{self.gateway_jid}").full()
        except InvalidFormat as exc:
            raise ValueError(f"{address!r} cannot be a JID: {exc}") from exc

    def legacy_address(self, jid: JID) -> str:
        """The legacy address of a contact JID; :class:`ValueError` if it is not one."""
        if not jid.user or jid.host != self.gateway_jid:
            raise ValueError(f"{jid.full()} is not a contact of this gateway")
        return self.plugin.localpart_to_legacy(unescape_localpart(jid.user))

    # -- helpers ------------------------------------------------------------------

    def state(self, user: str) -> UserState:
        state = self.users.get(user)
        if state is None:
            state = self.users[user] = UserState(user)
        return state

    def _presence(self, recipient: str, *, sender: str | None = None, type_: str | None = None,
                  show: str | None = None, status: str = "") -> None:
        element = stanza("presence", sender=sender or self.gateway_jid, recipient=recipient, type_=type_)
        if show:
            element.addElement("show", content=show)
        if status:
            element.addElement("status", content=xml_safe(status))
        self.send(element)

    def _presence_error(self, recipient: str, condition: str, text: str = "") -> None:
        element = stanza("presence", sender=self.gateway_jid, recipient=recipient, type_="error")
        element.addChild(StanzaError(condition, text=text or None).getElement())
        self.send(element)

    def registration_values(self, record: repository.RegistrationRecord) -> dict[str, str]:
        values = {str(k): str(v) for k, v in (record.settings or {}).items()}
        if record.credentials:
            if self.cipher is None:
                raise RuntimeError("stored credentials but no credentials key configured")
            values.update(self.cipher.decrypt(record.credentials))
        return values

    async def load_registration(self, user: str) -> Registration | None:
        """The user's registration at the gateway JID (``None`` without one), with the
        per-service registrations and the room settings."""
        records = await self.database.run(repository.list_registrations, self.gateway_jid, user)
        main = next((r for r in records if not r.service), None)
        if main is None:
            return None
        return self._registration(user, main, records)

    async def login_registration(self, user: str) -> Registration | None:
        """What :meth:`Plugin.login` gets: the gateway-JID registration, or, without one, an
        empty one carrying the per-service registrations (``None`` when there is neither)."""
        records = await self.database.run(repository.list_registrations, self.gateway_jid, user)
        main = next((r for r in records if not r.service), None)
        if main is None and not records:
            return None
        return self._registration(user, main, records)

    def _registration(self, user: str, main: repository.RegistrationRecord | None,
                      records: list[repository.RegistrationRecord]) -> Registration:
        services = {r.service: self.registration_values(r) for r in records if r.service}
        return Registration(user=user, legacy_id=main.legacy_id if main is not None else "",
                            values=self.registration_values(main) if main is not None else {},
                            services=services,
                            rooms=self.room_settings.rooms_of(user))

    # -- stream lifecycle ---------------------------------------------------------

    def stream_authenticated(self) -> None:
        """XEP-0100 §8 rule 6 and DESIGN §6: on every (re)authenticated stream, send our
        presence to every registered user and probe them; their answers log them in."""
        ensureDeferred(self._announce()).addErrback(
            lambda f: log.error("announcing to registered users failed: %s", f.getErrorMessage())
        )

    async def load_registered(self) -> None:
        """Fill the registered-user cache (once; stanzas arriving meanwhile wait for it)."""
        if self._registered_loaded:
            return
        users = await self.database.run(repository.registered_users, self.gateway_jid)
        await self.room_settings.load()
        # Users of domains the admin no longer allows are treated as unregistered.
        self.registered |= {user for user in users if self.policy.allows(user)}
        self._registered_loaded = True

    async def _announce(self) -> None:
        await self.load_registered()
        users = sorted(self.registered)
        for user in users:
            self._presence(user)
            self._presence(user, type_="probe")
        for user in users:
            # A session the plugin keeps while the user is offline comes back now, not at the
            # user's next presence (only online users answer the probe). Concurrently, like rooms.
            state = self.users.get(user)
            if (state is None or state.session is None) and self.keeps_offline(user):
                ensureDeferred(self._resume_offline(self.state(user)))
        if not self._rooms_restored and self.muc is not None:
            # Once per process: persistent rooms come back after a restart, with no user action.
            self._rooms_restored = True
            for user, room in self.room_settings.persistent_rooms():
                if self.policy.allows(user):
                    # Concurrently: one unreachable network must not hold up everyone else's rooms.
                    ensureDeferred(self.muc.join_in_background(self.state(user), room)).addErrback(
                        lambda f, user=user: log.error("rejoining rooms of %s failed: %s", user,
                                                       f.getErrorMessage()))

    async def _resume_offline(self, state: UserState) -> None:
        try:
            session = await self.open_session(state)
        except LoginFailed as exc:
            # Nobody to tell (no resource); the user's next available presence tries again.
            log.info("offline session of %s not resumed: %s %s", state.user, exc.condition, exc.text)
            return
        except Exception:
            log.exception("offline session of %s not resumed", state.user)
            return
        if not state.resources:
            await self.call(session.set_presence(state.presence()))

    async def shutdown(self) -> None:
        """SIGTERM (XEP-0100 §8 rule 6, checklist B1): unavailable from every contact, legacy
        logout, and unavailable from the gateway to every registered user."""
        for state in list(self.users.values()):
            for contact in sorted(state.online_contacts):
                self._presence(state.user, sender=contact, type_="unavailable")
            state.online_contacts.clear()
            if self.muc is not None:
                self.muc.goodbye(state)
            await self._logout(state, notify=False)
        # A logout begun before the shutdown (the last resource just left) already took its
        # session out of the user's state: wait for it too.
        while self._logouts:
            await DeferredList(list(self._logouts))
        for user in sorted(self.registered | set(self.users)):
            self._presence(user, type_="unavailable")

    # -- presence -------------------------------------------------------------------

    def on_presence(self, presence: Stanza) -> bool | Awaitable[bool]:
        if presence.recipient.host != self.gateway_jid:
            return False
        return ensureDeferred(self._on_presence(presence))

    async def _on_presence(self, presence: Stanza) -> bool:
        await self.load_registered()
        user = presence.sender.userhost()
        type_ = presence.type
        to_gateway = presence.recipient.user is None
        if type_ in ("subscribe", "subscribed", "unsubscribe", "unsubscribed"):
            if to_gateway:
                await self._gateway_subscription(user, type_)
            else:
                await self._contact_subscription(user, presence.recipient, type_)
            return True
        if type_ == "probe":
            self._answer_probe(user, presence)
            return True
        if user not in self.registered:
            return True
        if type_ in ("unavailable", "error") and presence.sender.resource is None:
            # From the bare JID (e.g. the server answering our probe for an offline
            # user): no resource of the user is available any more.
            state = self.users.get(user)
            if state is not None and state.resources:
                last = next(reversed(state.resources))
                for resource in list(state.resources)[:-1]:
                    state.resources.pop(resource)
                await self._availability(user, Stanza(presence.element, parse_jid(last),
                                                      presence.recipient), available=False)
            return True
        if type_ in (None, "unavailable", "error"):
            await self._availability(user, presence, available=type_ is None)
        return True

    async def _gateway_subscription(self, user: str, type_: str) -> None:
        if type_ == "subscribe":
            # XEP-0100 §4.1.1 step 11-12: approve registered users, refuse others.
            if user in self.registered:
                self._presence(user, type_="subscribed")
                state = self.users.get(user)
                if state is not None and state.session is not None:
                    self._presence(user)
            else:
                self._presence(user, type_="unsubscribed")
        elif type_ == "unsubscribe":
            # Reference checklist U5: the user removed the gateway. We log the legacy
            # session out and confirm, but keep the registration: a roster mishap must
            # not destroy the user's settings (unregistration is explicit, XEP-0077 <remove/>).
            state = self.users.get(user)
            if state is not None:
                await self._logout(state)
            self._presence(user, type_="unsubscribed")

    def _answer_probe(self, user: str, probe: Stanza) -> None:
        state = self.users.get(user)
        if probe.recipient.user is None:
            available = state is not None and state.session is not None
            self._presence(probe.sender.full(), type_=None if available else "unavailable")
            return
        contact = probe.recipient.userhost()
        if state is not None and contact in state.online_contacts:
            self._presence(probe.sender.full(), sender=contact)
        else:
            self._presence(probe.sender.full(), sender=contact, type_="unavailable")

    async def _availability(self, user: str, presence: Stanza, *, available: bool) -> None:
        state = self.state(user)
        resource = presence.sender.full()
        if available:
            element = presence.element
            show = child_text(element, "show")
            try:
                priority = int(child_text(element, "priority") or 0)
            except ValueError:
                priority = 0
            first = not state.resources
            state.resources[resource] = ResourcePresence(
                show=show if show in ("away", "chat", "dnd", "xa") else None,
                status=child_text(element, "status") or "",
                priority=priority,
            )
            if state.session is None and not state.logging_in:
                await self._login(state)
            elif state.session is not None:
                if first or presence.recipient.user is None:
                    self._presence(resource)
                await self.call(state.session.set_presence(state.presence()))
            if first and state.session is not None and self.muc is not None:
                # The user logs on: autojoin rooms (documented choice), without holding up presence.
                ensureDeferred(self.muc.autojoin(state)).addErrback(
                    lambda f: log.error("autojoin for %s failed: %s", user, f.getErrorMessage()))
            return
        if state.resources.pop(resource, None) is None:
            return
        if state.resources:
            if state.session is not None:
                await self.call(state.session.set_presence(state.presence()))
            return
        # The last resource left: XEP-0100 §4.5.1 log out, then unavailable from the gateway;
        # but a session that still serves joined rooms stays (the rooms end it), and so does one
        # the plugin keeps for an offline user (it is told the user is unavailable). Rooms
        # joined for nobody (autojoin) are left now, unless persistent.
        if self.muc is not None:
            await self.muc.leave_unattended(state)
        if self.keeps_offline(user):
            if state.session is not None:
                await self.call(state.session.set_presence(state.presence()))
        elif not state.rooms:
            await self._logout(state)
        self._presence(resource, type_="unavailable")

    async def service_changed(self, user: str, address: str, values: Mapping[str, str]) -> None:
        """A service registration or room settings changed (empty ``values``: removed): the live
        legacy session applies what it can now (``settings_changed``, optional)."""
        state = self.users.get(user)
        hook = getattr(state.session, "settings_changed", None) if state is not None else None
        if hook is not None:
            await self.call(hook(address, values))

    async def call(self, operation: Awaitable[T]) -> T | None:
        """Await a legacy operation; unimplemented or refused ones are logged, not raised."""
        try:
            return await operation
        except NotImplementedError:
            return None
        except LegacyError as exc:
            log.info("legacy side refused: %s", exc)
            return None

    # -- login / logout ----------------------------------------------------------------

    async def open_session(self, state: UserState) -> LegacySession:
        """The user's legacy session, logging in if needed; concurrent callers share one
        attempt. Raises :class:`LoginFailed` (``registration-required`` when the user has no
        registration and the plugin needs one)."""
        if state.session is not None:
            return state.session
        waiter: Deferred[LegacySession] = Deferred()
        state.login_waiters.append(waiter)
        if len(state.login_waiters) == 1:
            ensureDeferred(self._log_in(state)).addBoth(self._login_done, state)
        return await waiter

    def _login_done(self, outcome: object, state: UserState) -> None:
        waiters, state.login_waiters = state.login_waiters, []
        for waiter in waiters:
            if isinstance(outcome, Failure):
                waiter.errback(outcome)
            else:
                waiter.callback(outcome)

    async def _log_in(self, state: UserState) -> LegacySession:
        if not self.policy.allows(state.user):
            # allowed_users applies to every use of the gateway, registered or not (rooms too).
            raise LoginFailed("forbidden", "this gateway does not serve your domain")
        registration = await self.login_registration(state.user)
        if registration is None:
            self.registered.discard(state.user)
        if registration is None or not (registration.legacy_id or registration.values
                                        or registration.services):
            if not getattr(self.plugin, "allows_unregistered", False):
                raise LoginFailed("registration-required", "register with the gateway first")
            # Plugins that allow it (IRC rooms) serve unregistered users with defaults.
            registration = registration or Registration(user=state.user, legacy_id="", values={},
                                                        rooms=self.room_settings.rooms_of(state.user))
        try:
            session = await with_timeout(self.clock, self.plugin.login(registration), LOGIN_TIMEOUT)
        except TimeoutError as exc:
            raise LoginFailed("remote-server-timeout", "the legacy service did not answer") from exc
        state.session = session
        log.info("%s logged in", state.user)
        return session

    async def _login(self, state: UserState) -> None:
        """Logon by presence (XEP-0100 §4.4.1)."""
        state.logging_in = True
        try:
            session = await self.open_session(state)
        except LoginFailed as exc:
            self._login_failed(state, exc.condition, exc.text)
            return
        except Exception:
            log.exception("login of %s failed", state.user)
            self._login_failed(state, "internal-server-error", "")
            return
        finally:
            state.logging_in = False
        if not state.resources and not state.rooms:
            # Every resource left while we were logging in.
            if self.keeps_offline(state.user):
                await self.call(session.set_presence(state.presence()))
                self.flush_pending(state)
            else:
                await self._logout(state)
            return
        self._presence(state.user)  # XEP-0100 §4.4.1 step 3
        await self.call(session.set_presence(state.presence()))
        self.flush_pending(state)

    def keeps_offline(self, user: str) -> bool:
        """Whether the plugin keeps this user's session while no resource is available
        (optional plugin hook ``keeps_session_offline(user)``; SIP ``offline_messages``)."""
        hook = getattr(self.plugin, "keeps_session_offline", None)
        return hook is not None and bool(hook(user))

    def session_maybe_done(self, state: UserState) -> None:
        """End the legacy session once nothing uses it: no available resource, no room, and
        the plugin does not keep it for the offline user."""
        if (state.session is not None and not state.resources and not state.rooms
                and not self.keeps_offline(state.user)):
            ensureDeferred(self._logout(state)).addErrback(
                lambda f: log.error("logout of %s failed: %s", state.user, f.getErrorMessage())
            )

    def flush_pending(self, state: UserState) -> None:
        pending, state.pending = state.pending, []
        for event in pending:
            self.emit(event)

    def _login_failed(self, state: UserState, condition: str, text: str) -> None:
        # XEP-0100 §4.4.2 (with its erratum): the error goes from the gateway to the user.
        log.info("login of %s refused: %s %s", state.user, condition, text)
        for resource in list(state.resources):
            self._presence_error(resource, condition, text)
        state.resources.clear()
        state.pending.clear()

    async def _logout(self, state: UserState, *, notify: bool = True) -> None:
        session, state.session = state.session, None
        state.resources.clear()
        if state.rooms and self.muc is not None:
            self.muc.goodbye(state)  # the legacy side is gone: so are its rooms (status 332)
        if notify:
            for contact in sorted(state.online_contacts):
                self._presence(state.user, sender=contact, type_="unavailable")
        state.online_contacts.clear()
        if session is not None:
            finished: Deferred[None] = Deferred()
            self._logouts.add(finished)
            try:
                await session.logout()
            except Exception:
                log.exception("legacy logout of %s failed", state.user)
            finally:
                self._logouts.discard(finished)
                finished.callback(None)
            log.info("%s logged out", state.user)

    async def end_session(self, user: str) -> bool:
        """Log a user out (admin end-user-session, user reconnect); ``True`` if one was open."""
        state = self.users.get(user)
        if state is None or state.session is None:
            return False
        resources = list(state.resources)
        await self._logout(state)
        for resource in resources or [user]:
            self._presence(resource, type_="unavailable")
        return True

    async def unregistered(self, user: str) -> None:
        """XEP-0100 §4.3.1 step 2: contacts unavailable and legacy logout, before data is deleted."""
        state = self.users.pop(user, None)
        self.registered.discard(user)
        if state is not None:
            await self._logout(state)
        await self.room_settings.forget_user(user)  # persistent rooms and room settings go too
        if self.archive is not None:
            await self.archive.forget_user(user)  # and what was archived for them

    def online_users(self) -> list[str]:
        return sorted(user for user, state in self.users.items() if state.session is not None)

    # -- contacts: subscriptions (XEP-0100 §4.6, §4.7, §5.1, §5.2) ---------------------

    async def _contact_subscription(self, user: str, contact_jid: JID, type_: str) -> None:
        contact = contact_jid.userhost()
        if user not in self.registered:
            if type_ == "subscribe":
                self._presence(user, sender=contact, type_="unsubscribed")
            return
        try:
            address = self.legacy_address(contact_jid)
        except ValueError:
            if type_ == "subscribe":
                self._presence(user, sender=contact, type_="unsubscribed")
            return
        state = self.users.get(user)
        session = state.session if state is not None else None
        if type_ == "subscribe":
            approved = session is not None and bool(await self.call(session.add_contact(address)))
            if not approved:
                self._presence(user, sender=contact, type_="unsubscribed")  # §4.6.2
                return
            await self.roster.remember_contact(user, address, "to")
            self._presence(user, sender=contact, type_="subscribed")
            if state is not None and contact in state.online_contacts:
                self._presence(user, sender=contact)
            self._presence(user, sender=contact, type_="subscribe")
        elif type_ == "subscribed":
            await self.roster.remember_contact(user, address, "both")
        else:
            # unsubscribe / unsubscribed (§4.7.1, §5.1.2): remove on both sides, and never
            # again tell that contact about the user.
            if session is not None:
                await self.call(session.remove_contact(address))
            await self.roster.forget_contact(user, address)
            if state is not None:
                state.online_contacts.discard(contact)

    # -- messages (XEP-0100 §4.8) ----------------------------------------------------------

    def on_message(self, message: Stanza) -> bool | Awaitable[bool]:
        if message.recipient.host != self.gateway_jid or message.recipient.user is None:
            return False
        if message.type == "error":
            return True
        return ensureDeferred(self._on_message(message))

    async def _on_message(self, message: Stanza) -> bool:
        await self.load_registered()
        element = message.element
        user = message.sender.userhost()
        if user not in self.registered and not getattr(self.plugin, "allows_unregistered", False):
            self.send(error_reply(element, "registration-required"))
            return True
        direct = next(element.elements(NS_CONFERENCE, "x"), None)
        if direct is not None and self.muc is not None:
            # XEP-0249 direct invitation to a legacy contact.
            try:
                room_address = self.muc.room_address(parse_jid(direct.getAttribute("jid", "")))
            except InvalidFormat:
                room_address = None
            if room_address is None:
                self.send(error_reply(element, "bad-request", "invitations only to rooms of this gateway"))
                return True
            await self.muc.invite(message, room_address, self.users.get(user), message.recipient.userhost(),
                                  direct.getAttribute("reason", ""))
            return True
        body = child_text(element, "body")
        if body is None:
            return True  # chat states and receipts only: nothing the legacy side can carry
        try:
            address = self.legacy_address(message.recipient)
        except ValueError:
            self.send(error_reply(element, "item-not-found", "not a valid legacy address"))
            return True
        await self.send_to_contact(message, address)
        return True

    async def send_to_contact(self, message: Stanza, address: str) -> None:
        """A chat message to a legacy contact (XEP-0100 §4.8), errors echoing the original id."""
        element = message.element
        user = message.sender.userhost()
        body = child_text(element, "body")
        if body is None:
            return
        state = self.users.get(user)
        if (state is None or state.session is None) and getattr(self.plugin, "allows_unregistered", False):
            state = self.state(user)
            try:
                await self.open_session(state)
            except LoginFailed as exc:
                self.send(error_reply(element, exc.condition, exc.text or None))
                return
        if state is None or state.session is None:
            self.send(error_reply(element, "service-unavailable",
                                  "you are not logged in to the legacy network: go online first"))
            return
        if message.id:
            self.senders[(user, message.id)] = message.sender.full()
            while len(self.senders) > SENDERS_LIMIT:
                self.senders.popitem(last=False)
        outgoing = OutgoingMessage(contact=address, body=body, xmpp_id=message.id or "")
        try:
            legacy_id = await state.session.send_message(outgoing)
        except LegacyError as exc:
            self.send(error_reply(element, exc.condition, exc.text or None))
        except NotImplementedError:
            self.send(error_reply(element, "feature-not-implemented"))
        else:
            self._record_out(user, address, body, legacy_id)
            self._receipt(message, legacy_id)

    def _record_out(self, user: str, address: str, body: str, legacy_id: object) -> None:
        if self.archive is None or not body:
            return  # an empty <body/> is nothing the legacy side got (plugins send nothing for it)
        try:
            contact = self.contact_jid(address)
        except ValueError:
            return
        self.archive.record(user, address, contact, sender=user, body=body, direction="out",
                            legacy_id=legacy_id if isinstance(legacy_id, str) else "")

    def _receipt(self, message: Stanza, legacy_id: object) -> None:
        """XEP-0184 §5.1: a receipt only for a request, with the message's id, and only from a
        plugin whose ``send_message`` returns once the legacy side confirmed delivery. An empty
        legacy id means accepted but not confirmed delivered (SIP 202), or nothing sent."""
        if not getattr(self.plugin, "delivery_receipts", False) or not message.id or not legacy_id:
            return
        if not child_text(message.element, "body"):
            return  # an empty <body/> was not sent anywhere: nothing to confirm
        if next(message.element.elements(NS_RECEIPTS, "request"), None) is None:
            return
        receipt = stanza("message", sender=message.recipient.userhost(), recipient=message.sender.full(),
                         id_=new_id())
        receipt.addElement((NS_RECEIPTS, "received"))["id"] = message.id
        self.send(receipt)

    def disco_features(self, requestor: JID, target: JID, node: str) -> list[str]:
        """XEP-0184 §6: advertise receipts where the plugin confirms delivery."""
        if getattr(self.plugin, "delivery_receipts", False) and not node and target.host == self.gateway_jid:
            return [NS_RECEIPTS]
        return []

    # -- legacy -> XMPP (GatewayEvents) ------------------------------------------------------

    def emit(self, event: LegacyEvent) -> None:
        state = self.users.get(event.user)
        if isinstance(event, ROOM_EVENTS):
            if self.muc is not None:
                self.muc.deliver(state, event)  # a room line is archived even for an unknown user
            return
        if state is None or (state.session is None and not isinstance(event, SessionLost)):
            if state is not None and state.logging_in:
                if len(state.pending) < PENDING_EVENTS_LIMIT:
                    state.pending.append(event)
                return
            log.debug("dropping %s for %s: not logged in", type(event).__name__, event.user)
            return
        try:
            self._deliver(state, event)
        except ValueError as exc:
            log.warning("plugin event %s for %s not deliverable: %s", type(event).__name__,
                        event.user, exc)

    def _deliver(self, state: UserState, event: LegacyEvent) -> None:
        user = state.user
        match event:
            case MessageReceived():
                contact = self.contact_jid(event.contact)
                stanza_id = None
                if self.archive is not None:
                    stanza_id = self.archive.record(user, event.contact, contact, sender=contact,
                                                    body=event.body, direction="in",
                                                    legacy_id=event.legacy_id)
                message = stanza("message", sender=contact, recipient=user,
                                 type_="chat", id_=event.legacy_id or stanza_id or new_id())
                message.addElement("body", content=xml_safe(event.body))
                if stanza_id:
                    # XEP-0359: its id in the archive MAM serves on the contact JID.
                    sid = message.addElement(("urn:xmpp:sid:0", "stanza-id"))
                    sid["by"], sid["id"] = contact, stanza_id
                self.send(message)
            case ContactPresence():
                contact = self.contact_jid(event.contact)
                if event.available:
                    state.online_contacts.add(contact)
                    self._presence(user, sender=contact, show=event.show, status=event.status)
                else:
                    state.online_contacts.discard(contact)
                    self._presence(user, sender=contact, type_="unavailable", status=event.status)
            case ContactList():
                items = [(self.contact_jid(c.address), c) for c in event.contacts]
                resources = list(state.resources)
                ensureDeferred(self.roster.populate(user, resources, items)).addErrback(
                    lambda f: log.error("roster population for %s failed: %s", user, f.getErrorMessage())
                )
            case ContactAdded():
                # XEP-0100 §5.1.1 step 2: a subscribe, never an unsolicited subscribed.
                self._presence(user, sender=self.contact_jid(event.contact), type_="subscribe")
            case ContactRemoved():
                contact = self.contact_jid(event.contact)
                state.online_contacts.discard(contact)
                for type_ in ("unsubscribe", "unsubscribed", "unavailable"):  # §5.2.1
                    self._presence(user, sender=contact, type_=type_)
                ensureDeferred(self.roster.forget_contact(user, event.contact)).addErrback(
                    lambda f: log.error("forgetting contact of %s failed: %s", user, f.getErrorMessage())
                )
            case DeliveryFailed():
                recipient = self.senders.pop((user, event.xmpp_id), user)
                failed = stanza("message", sender=self.contact_jid(event.contact), recipient=recipient,
                                type_="error", id_=event.xmpp_id)
                failed.addChild(StanzaError(event.condition, text=event.text or None).getElement())
                self.send(failed)
            case SessionLost():
                ensureDeferred(self._session_lost(state, event)).addErrback(
                    lambda f: log.error("session loss of %s: %s", user, f.getErrorMessage())
                )

    async def _session_lost(self, state: UserState, event: SessionLost) -> None:
        resources = list(state.resources)
        state.session = None
        if self.muc is not None:
            self.muc.goodbye(state)
        for contact in sorted(state.online_contacts):
            self._presence(state.user, sender=contact, type_="unavailable")
        state.online_contacts.clear()
        for resource in resources:
            self._presence_error(resource, event.condition, event.reason)
        state.resources.clear()


__all__ = ["Sessions", "UserState"]
