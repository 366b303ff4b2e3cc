"""XEP-0045 Multi-User Chat, service side: legacy rooms (IRC channels) as MUC rooms.

The plugin joins, leaves and talks in legacy rooms and reports what happens as
room events (gateway.plugin); this module owns every MUC rule on the XMPP side:

* join (§7.2): occupant presences, then the self-presence with status 110 (and
  210 when the nick differs from the one asked for), then the subject (§7.2.15,
  an empty ``<subject/>`` when there is none); joining again re-sends the full
  state (Biboumi's "desync repair"); errors are presence errors from the room;
* all resources of a user share one legacy presence in the room: every joined
  resource gets every event, and the legacy room is left when the last one leaves;
* groupchat (§7.4): the user's lines are reflected to every joined resource with
  the client's id (first line) and origin-id, one id per legacy line, the same for
  every resource, and a stanza-id by the room (XEP-0359) that is the line's id in
  the user's archive (gateway.archive), as on lines from others;
* history on join (§7.2.15, gateway.xep.muc_history) between the self-presence and
  the subject; live events for that resource wait until the history is out;
* nick changes (§7.6, status 303), exits (§7.14, 110), kicks (§8.2, 307);
* XEP-0410 self-ping and room disco#info (§6.4).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.protocols.jabber.jid import JID, InvalidFormat
from twisted.words.xish import domish

from gateway.ids import new_id
from gateway.jids import parse_jid
from gateway.plugin import (
    LegacyError,
    LoginFailed,
    Occupant,
    OccupantChanged,
    OccupantJoined,
    OccupantLeft,
    OccupantRenamed,
    RoomEvent,
    RoomInvitation,
    RoomJoined,
    RoomJoinFailed,
    RoomLeft,
    RoomMessage,
    SubjectChanged,
)
from gateway.router import IqRequest, Stanza, eagerly
from gateway.session import Sessions, UserState
from gateway.stanzas import (
    NS_MUC_USER,
    NS_STANZA_ID,
    add_child,
    child_text,
    error_reply,
    groupchat_xml,
    occupant_presence_xml,
    stanza,
    xml_safe,
)
from gateway.xep.delay import add_delay
from gateway.xep.disco import DiscoItem, Identity
from gateway.xep.escaping import escape_localpart, unescape_localpart
from gateway.xep.muc_history import HistoryRequest, MucHistory

if TYPE_CHECKING:
    from gateway.archive import Archive

log = logging.getLogger(__name__)

#: A line whose legacy timestamp is older than this is shown as delayed (clocks differ a little).
LIVE_LINE_AGE = timedelta(seconds=30)

NS_MUC = "http://jabber.org/protocol/muc"
NS_SELF_PING = "http://jabber.org/protocol/muc#self-ping-optimization"
NS_STABLE_ID = "http://jabber.org/protocol/muc#stable_id"

# XEP-0045 §15.6 status codes.
SELF = "110"
NICK_MODIFIED = "210"
NICK_CHANGED = "303"
KICKED = "307"
NON_ANONYMOUS = "100"
SERVICE_SHUTDOWN = "332"

#: Room localparts whose legacy address is remembered (bounded: localparts come from anyone).
ROOM_ADDRESS_CACHE_SIZE = 4096


@dataclass(slots=True)
class RoomState:
    address: str
    jid: str
    """The room's bare JID."""
    nick: str
    requested: dict[str, str] = field(default_factory=dict)
    """Resource waiting for the join -> the nick it asked for."""
    resources: set[str] = field(default_factory=set)
    joined: bool = False
    role: str = "participant"
    affiliation: str = "none"
    occupants: dict[str, Occupant] = field(default_factory=dict)
    subject: str = ""
    subject_by: str = ""
    history: dict[str, HistoryRequest] = field(default_factory=dict)
    """Resource waiting for the join -> the history it asked for (§7.2.15)."""
    held: dict[str, list[domish.Element]] = field(default_factory=dict)
    """Resource getting its history -> live stanzas that wait for it to finish."""


class MucHandler:
    """Presences, groupchat and disco for room JIDs of one gateway."""

    def __init__(self, *, sessions: Sessions, identity_type: str, name: str,
                 archive: Archive | None = None, history: MucHistory | None = None) -> None:
        self.sessions = sessions
        self.gateway_jid = sessions.gateway_jid
        self.identity_type = identity_type
        self.name = name
        self.archive = archive
        self.history = history
        self._room_of = lru_cache(maxsize=ROOM_ADDRESS_CACHE_SIZE)(self._room_of_localpart)
        sessions.attach_muc(self)

    # -- addressing -------------------------------------------------------------------

    def room_address(self, jid: JID) -> str | None:
        """The legacy room a JID names, or None when it is not a room JID of ours."""
        if jid.host != self.gateway_jid or not jid.user:
            return None
        return self._room_of(jid.user)

    def _room_of_localpart(self, localpart: str) -> str | None:
        # Behind a bounded LRU (set up in __init__): every groupchat line names its room, and
        # the plugin's addressing (unescape, parse, format, is_room) is a pure function of it.
        is_room = getattr(self.sessions.plugin, "is_room", None)
        if is_room is None:
            return None
        try:
            address = self.sessions.plugin.localpart_to_legacy(unescape_localpart(localpart))
        except ValueError:
            return None
        return address if is_room(address) else None

    def room_jid(self, address: str) -> str:
        localpart = escape_localpart(self.sessions.plugin.legacy_to_localpart(address))
        try:
            return parse_jid(f"{localpart}@{self.gateway_jid}").full()
        except InvalidFormat as exc:
            raise ValueError(f"{address!r} cannot be a room JID: {exc}") from exc

    # -- presence to rooms: join, nick change, leave -------------------------------------

    def on_presence(self, presence: Stanza) -> bool | Deferred[bool]:
        address = self.room_address(presence.recipient)
        if address is None:
            return False
        return ensureDeferred(self._presence(presence, address))

    async def _presence(self, presence: Stanza, address: str) -> bool:
        user = presence.sender.userhost()
        resource = presence.sender.full()
        state = self.sessions.state(user)
        room = state.rooms.get(address)
        type_ = presence.type
        if type_ in ("unavailable", "error"):
            if room is not None:
                await self._leave(state, room, resource, child_text(presence.element, "status") or "")
            return True
        if type_ is not None:
            return True  # subscriptions and probes to rooms mean nothing here
        nick = presence.recipient.resource
        joining = any(True for _ in presence.element.elements(NS_MUC, "x"))
        if room is not None and resource in room.resources and not joining:
            if nick and nick != room.nick:
                await self._change_nick(state, room, presence, nick)
            return True
        if not nick:
            # §7.2.1: a join without a nick is jid-malformed.
            self.sessions.send(self._presence_error(presence, "jid-malformed", "a nickname is required"))
            return True
        await self._join(state, presence, address, nick)
        return True

    async def _join(self, state: UserState, presence: Stanza, address: str, nick: str) -> None:
        resource = presence.sender.full()
        room = state.rooms.get(address)
        history = HistoryRequest.from_presence(presence.element)
        if room is not None and room.joined:
            # Already in the room (another resource, or a client that lost track): full state.
            room.resources.add(resource)
            self._send_state(room, resource, requested=nick, history=history)
            return
        if room is not None:
            room.requested[resource] = nick
            room.history[resource] = history
            return
        room = RoomState(address=address, jid=self.room_jid(address), nick=nick)
        room.requested[resource] = nick
        room.history[resource] = history
        state.rooms[address] = room
        password = ""
        for x in presence.element.elements(NS_MUC, "x"):
            password = child_text(x, "password") or ""
        try:
            session = await self.sessions.open_session(state)
            await session.join_room(address, nick, password)
        except (LoginFailed, LegacyError) as exc:
            self._join_failed(state, room, exc.condition, exc.text)
        except NotImplementedError:
            self._join_failed(state, room, "feature-not-implemented", "this gateway has no rooms")

    async def join_in_background(self, state: UserState, address: str, nick: str = "") -> None:
        """Join a room on the legacy side with no resource in it (a persistent room after a
        restart, an autojoin room at logon); resources join it later like any joined room."""
        if address in state.rooms:
            return
        nick = nick or self.sessions.room_settings.get(state.user, address).settings.get("nick", "") \
            or state.user.partition("@")[0]
        try:
            jid = self.room_jid(address)
        except ValueError:
            log.warning("cannot rejoin %s for %s: not a room address", address, state.user)
            return
        room = RoomState(address=address, jid=jid, nick=nick)
        state.rooms[address] = room
        try:
            session = await self.sessions.open_session(state)
            if state.rooms.get(address) is not room:
                # Dropped while the session opened (the user went offline during autojoin):
                # no JOIN, and a session opened only for it ends again.
                self.sessions.session_maybe_done(state)
                return
            await session.join_room(address, nick, "")
        except (LoginFailed, LegacyError) as exc:
            log.info("background join of %s for %s failed: %s", address, state.user, exc)
            self._join_failed(state, room, exc.condition, exc.text)
        except NotImplementedError:
            self._join_failed(state, room, "feature-not-implemented", "this gateway has no rooms")

    async def autojoin(self, state: UserState) -> None:
        """The user logs on: join the plugin's autojoin rooms (per-service registrations)."""
        autojoin_rooms = getattr(self.sessions.plugin, "autojoin_rooms", None)
        if autojoin_rooms is None:
            return
        registration = await self.sessions.login_registration(state.user)
        if registration is None:
            return
        for address, nick in autojoin_rooms(registration):
            if not state.resources:
                return  # the user went offline meanwhile: the rest waits for the next logon
            await self.join_in_background(state, address, nick)

    async def leave_unattended(self, state: UserState) -> None:
        """The user went offline: leave the rooms no resource is in, unless persistent."""
        for address in list(state.rooms):
            await self.leave_unattended_room(state, address, settle=False)

    async def leave_unattended_room(self, state: UserState, address: str, *, settle: bool = True) -> None:
        """Leave one room on the legacy side if no resource is in it and it is not persistent."""
        room = state.rooms.get(address)
        if room is None or room.resources or room.requested or \
                self.sessions.room_settings.persistent(state.user, address):
            return
        state.rooms.pop(address, None)
        self.remember(state, room, joined=False)
        if state.session is not None:
            await self.sessions.call(state.session.leave_room(address, ""))
        if settle:
            self.sessions.session_maybe_done(state)

    def _join_failed(self, state: UserState, room: RoomState, condition: str, text: str) -> None:
        for resource, nick in room.requested.items():
            element = stanza("presence", sender=f"{room.jid}/{nick}", recipient=resource, type_="error")
            element.addElement((NS_MUC, "x"))
            error = StanzaError(condition, text=text or None).getElement()
            error["by"] = room.jid
            element.addChild(error)
            self.sessions.send(element)
        room.requested.clear()
        if not room.joined:
            state.rooms.pop(room.address, None)
            self.sessions.session_maybe_done(state)

    async def _leave(self, state: UserState, room: RoomState, resource: str, status: str) -> None:
        room.requested.pop(resource, None)
        room.history.pop(resource, None)
        room.held.pop(resource, None)
        if resource not in room.resources:
            return
        room.resources.discard(resource)
        self._self_presence(room, resource, type_="unavailable")  # §7.14
        if room.resources or room.requested:
            return
        if self.sessions.room_settings.persistent(state.user, room.address):
            return  # a persistent room stays joined on the legacy side, for nobody (issue 5)
        state.rooms.pop(room.address, None)
        self.remember(state, room, joined=False)
        if state.session is not None:
            await self.sessions.call(state.session.leave_room(room.address, status))
        self.sessions.session_maybe_done(state)

    async def _change_nick(self, state: UserState, room: RoomState, presence: Stanza, nick: str) -> None:
        if state.session is None:
            return
        try:
            await state.session.change_nick(room.address, nick)
        except LegacyError as exc:
            self.sessions.send(self._presence_error(presence, exc.condition, exc.text))
        except NotImplementedError:
            self.sessions.send(self._presence_error(presence, "not-allowed", "nick changes unsupported"))

    def _presence_error(self, presence: Stanza, condition: str, text: str) -> domish.Element:
        reply = error_reply(presence.element, condition, text or None, echo=False)
        reply.addElement((NS_MUC, "x"))
        return reply

    # -- presence builders -------------------------------------------------------------

    def _real_jid(self, occupant: Occupant) -> str:
        """Non-anonymous rooms (§7.2.3): the real JID of XMPP users, the contact JID of others."""
        if occupant.real_jid or not occupant.contact:
            return occupant.real_jid
        try:
            return self.sessions.contact_jid(occupant.contact)
        except ValueError:
            return ""

    def _occupant_presence(self, room: RoomState, occupant: Occupant, resource: str, *,
                           type_: str | None = None, codes: Iterable[str] = (),
                           nick: str | None = None, actor: str = "", reason: str = "") -> domish.Element:
        element = stanza("presence", sender=f"{room.jid}/{occupant.nick}", recipient=resource, type_=type_)
        x = element.addElement((NS_MUC_USER, "x"))
        item = x.addElement("item")
        item["affiliation"] = occupant.affiliation if type_ is None else "none"
        item["role"] = occupant.role if type_ is None else "none"
        real_jid = self._real_jid(occupant)
        if real_jid:
            item["jid"] = real_jid
        if nick:
            item["nick"] = xml_safe(nick)
        if actor:
            item.addElement("actor")["nick"] = xml_safe(actor)
        if reason:
            item.addElement("reason", content=xml_safe(reason))
        for code in codes:
            x.addElement("status")["code"] = code
        return element

    def _self_occupant(self, room: RoomState) -> Occupant:
        return Occupant(nick=room.nick, role=room.role, affiliation=room.affiliation,  # type: ignore[arg-type]
                        real_jid="")

    def _self_presence(self, room: RoomState, resource: str, *, type_: str | None = None,
                       codes: Iterable[str] = (), nick: str | None = None, actor: str = "",
                       reason: str = "") -> None:
        occupant = self._self_occupant(room)
        element = self._occupant_presence(room, occupant, resource, type_=type_,
                                          codes=(SELF, *codes), nick=nick, actor=actor, reason=reason)
        # The user's own item carries their real JID (non-anonymous room, §7.2.3).
        for x in element.elements(NS_MUC_USER, "x"):
            for item in x.elements(NS_MUC_USER, "item"):
                item["jid"] = resource
        self.sessions.send(element)

    def _send_state(self, room: RoomState, resource: str, *, requested: str,
                    history: HistoryRequest | None = None) -> None:
        """§7.2.3-§7.2.16: others, then self (110, 210 if renamed), then history, then the subject."""
        send_xml = self.sessions.send_xml
        for occupant in room.occupants.values():
            # As text (a big channel's join sends one per occupant), unless the stream is down.
            text = occupant_presence_xml(f"{room.jid}/{occupant.nick}", resource, occupant.affiliation,
                                         occupant.role, self._real_jid(occupant))
            if not send_xml(text):
                self.sessions.send(self._occupant_presence(room, occupant, resource))
        codes = [NON_ANONYMOUS]
        if requested != room.nick:
            codes.append(NICK_MODIFIED)
        self._self_presence(room, resource, codes=codes)
        subject = stanza("message", sender=f"{room.jid}/{room.subject_by}" if room.subject_by else room.jid,
                         recipient=resource, type_="groupchat", id_=new_id())
        subject.addElement("subject", content=xml_safe(room.subject))
        if self.history is None or not self.history.archive.enabled:
            self.sessions.send(subject)
            return
        # The history is read off the reactor; live stanzas for this resource wait meanwhile.
        # A join again while an earlier history is read: that read gives way, its waiting lines move here.
        held: list[domish.Element] = list(room.held.get(resource, ()))
        room.held[resource] = held
        user = parse_jid(resource).userhost()
        reading = ensureDeferred(self.history.stanzas(user, room.jid, resource, history or HistoryRequest(),
                                                         address=room.address))

        def send(lines: list[domish.Element]) -> None:
            if room.held.get(resource) is not held:
                return  # the resource left (or the room went) meanwhile
            del room.held[resource]
            live = {sid.getAttribute("id") for element in held
                    for sid in element.elements(NS_STANZA_ID, "stanza-id")}
            for line in lines:
                ids = {sid.getAttribute("id") for sid in line.elements(NS_STANZA_ID, "stanza-id")}
                if not ids & live:  # also shown live, after the subject
                    self.sessions.send(line)
            self.sessions.send(subject)
            for element in held:
                self.sessions.send(element)

        def failed(failure) -> None:
            log.error("history for %s in %s failed: %s", resource, room.jid, failure.getErrorMessage())
            send([])

        reading.addCallbacks(send, failed)

    def _to_all(self, room: RoomState, build, text=None) -> None:
        """Send ``build(resource)`` to every joined resource (held while its history is read).
        ``text(resource)``, when given, writes the same stanza as a string (groupchat lines,
        the hot path), used whenever the element itself is not needed."""
        for resource in sorted(room.resources):
            held = room.held.get(resource)
            if held is not None:
                held.append(build(resource))
            elif text is None or not self.sessions.send_xml(text(resource)):
                self.sessions.send(build(resource))

    # -- legacy events -----------------------------------------------------------------

    def deliver(self, state: UserState | None, event: RoomEvent) -> None:
        """A room event for a user; ``state`` is ``None`` for a user unknown to the core (the
        line is still archived: the legacy side keeps the user in the room)."""
        if isinstance(event, RoomMessage):
            self._room_message(state, event)
            return
        if state is None:
            return
        if isinstance(event, RoomInvitation):
            self._invited(state, event)
            return
        room = state.rooms.get(event.room)
        if room is None:
            log.debug("%s for %s in %s: not in that room", type(event).__name__, state.user, event.room)
            return
        match event:
            case RoomJoined():
                room.joined = True
                room.nick = event.nick
                self.remember(state, room)
                room.role, room.affiliation = event.role, event.affiliation
                room.occupants = {o.nick: o for o in event.occupants if o.nick != event.nick}
                room.subject, room.subject_by = event.subject, event.subject_by
                requested, room.requested = room.requested, {}
                for resource, nick in requested.items():
                    room.resources.add(resource)
                    self._send_state(room, resource, requested=nick, history=room.history.pop(resource, None))
            case RoomJoinFailed():
                self._join_failed(state, room, event.condition, event.text)
            case RoomLeft():
                codes = [KICKED] if event.kicked_by else [SERVICE_SHUTDOWN]
                for resource in sorted(room.resources):
                    self._self_presence(room, resource, type_="unavailable", codes=codes,
                                        actor=event.kicked_by, reason=event.reason)
                room.held.clear()  # a history still being read is not sent after this exit
                state.rooms.pop(room.address, None)
                self.sessions.session_maybe_done(state)
            case OccupantJoined() | OccupantChanged():
                room.occupants[event.occupant.nick] = event.occupant
                self._to_all(room, lambda r: self._occupant_presence(room, event.occupant, r))
            case OccupantLeft():
                occupant = room.occupants.pop(event.nick, None) or Occupant(nick=event.nick)
                codes = [KICKED] if event.kicked_by else []
                self._to_all(room, lambda r: self._occupant_presence(
                    room, occupant, r, type_="unavailable", codes=codes, actor=event.kicked_by,
                    reason=event.reason))
            case OccupantRenamed():
                self._renamed(room, event)
            case RoomInvitation():
                pass  # handled before the room lookup: the user is not in that room
            case RoomMessage():
                pass  # handled before the room lookup: archived even with no room state
            case SubjectChanged():
                room.subject, room.subject_by = event.subject, event.nick
                message_id = new_id()
                sender = f"{room.jid}/{event.nick}" if event.nick else room.jid

                def subject(resource: str) -> domish.Element:
                    element = stanza("message", sender=sender, recipient=resource, type_="groupchat",
                                     id_=message_id)
                    element.addElement("subject", content=xml_safe(event.subject))
                    return element

                self._to_all(room, subject)

    def remember(self, state: UserState, room: RoomState, *, joined: bool = True) -> None:
        """Keep the room table in step for the restart (persistent rooms; no-op otherwise)."""
        settings = self.sessions.room_settings
        if joined:
            service_of = getattr(self.sessions.plugin, "service_of", None)
            service = service_of(room.address) if service_of is not None else ""
            work = settings.remember_join(state.user, room.address, service, room.nick)
        else:
            work = settings.forget_join(state.user, room.address)
        ensureDeferred(work).addErrback(
            lambda f: log.error("room settings of %s: %s", state.user, f.getErrorMessage()))

    def _renamed(self, room: RoomState, event: OccupantRenamed) -> None:
        if event.old_nick == room.nick:
            old = room.nick
            for resource in sorted(room.resources):
                room.nick = old
                self._self_presence(room, resource, type_="unavailable", codes=[NICK_CHANGED],
                                    nick=event.new_nick)
            room.nick = event.new_nick
            for resource in sorted(room.resources):
                self._self_presence(room, resource)
            return
        occupant = room.occupants.pop(event.old_nick, None) or Occupant(nick=event.old_nick)
        renamed = Occupant(nick=event.new_nick, role=occupant.role, affiliation=occupant.affiliation,
                           real_jid=occupant.real_jid, contact=occupant.contact)
        room.occupants[event.new_nick] = renamed
        self._to_all(room, lambda r: self._occupant_presence(
            room, occupant, r, type_="unavailable", codes=[NICK_CHANGED], nick=event.new_nick))
        self._to_all(room, lambda r: self._occupant_presence(room, renamed, r))

    def _room_message(self, state: UserState | None, event: RoomMessage) -> None:
        """A line in a room: archived for the user at once, whether or not a resource is
        online (a persistent room keeps recording), then shown to the joined resources."""
        room = state.rooms.get(event.room) if state is not None else None
        body = f"[notice] {event.body}" if event.notice else event.body
        try:
            room_jid = room.jid if room is not None else self.room_jid(event.room)
        except ValueError:
            log.debug("line for %s in %r: not a room JID", event.user, event.room)
            return
        if event.backfill:
            if self.archive is None:
                return  # nothing to tell a backfilled line from one already shown
            # Room system lines (no nick) are not archived, as in Biboumi: no stanza-id either.
            self.archive.backfill(event.user, event.room, room_jid, sender=event.nick, body=body,
                                  legacy_id=event.legacy_id, timestamp=event.timestamp,
                                  record=bool(event.nick)).addCallback(
                lambda stanza_id: None if stanza_id is None else self._show_line(event, body, stanza_id))
            return
        stanza_id = None
        if self.archive is not None and event.nick:
            stanza_id = self.archive.record(event.user, event.room, room_jid, sender=event.nick, body=body,
                                            direction="in", legacy_id=event.legacy_id,
                                            timestamp=event.timestamp)
        if room is None:
            log.debug("RoomMessage for %s in %s: archived only, not in that room", event.user, event.room)
            return
        self._show_line(event, body, stanza_id)

    def _show_line(self, event: RoomMessage, body: str, stanza_id: str | None) -> None:
        """Show a line to the user's joined resources (looked up now: a backfilled line
        comes back after a database round trip)."""
        state = self.sessions.users.get(event.user)
        room = state.rooms.get(event.room) if state is not None else None
        if room is None:
            return
        message_id = event.legacy_id or stanza_id or new_id()
        sender = f"{room.jid}/{event.nick}" if event.nick else room.jid
        # XEP-0203 marks *delayed* delivery, and clients treat such lines as history (no
        # notification): only backfilled lines and lines the server says are old (a replay on
        # join) get it, not every live line that carries IRCv3 server-time.
        delayed = event.backfill or (event.timestamp is not None
                                     and datetime.now(UTC) - event.timestamp > LIVE_LINE_AGE)

        def build(resource: str) -> domish.Element:
            element = stanza("message", sender=sender, recipient=resource,
                             type_="groupchat", id_=message_id)
            add_child(element, "body", xml_safe(body))
            if delayed:
                add_delay(element, event.timestamp or datetime.now(UTC), room.jid)
            if stanza_id:
                add_child(element, (NS_STANZA_ID, "stanza-id"), attributes={"by": room.jid, "id": stanza_id})
            return element

        def build_xml(resource: str) -> str:
            return groupchat_xml(sender, resource, message_id, body, stanza_id=stanza_id, by=room.jid)

        self._to_all(room, build, None if delayed else build_xml)

    # -- invitations (§7.8) -----------------------------------------------------------------

    def _invited(self, state: UserState, event: RoomInvitation) -> None:
        """A legacy invitation: a mediated invitation from the room (§7.8.2) to the user."""
        message = stanza("message", sender=self.room_jid(event.room), recipient=state.user,
                         id_=new_id())
        invite = message.addElement((NS_MUC_USER, "x")).addElement("invite")
        invite["from"] = self.sessions.contact_jid(event.inviter)
        if event.reason:
            invite.addElement("reason", content=xml_safe(event.reason))
        self.sessions.send(message)

    async def _invite(self, message: Stanza, address: str, state: UserState | None) -> None:
        """A user's invitation, mediated (§7.8.2) or direct (XEP-0249): legacy contacts get a
        legacy invitation; other JIDs get a mediated invitation from the room."""
        for x in message.element.elements(NS_MUC_USER, "x"):
            for invite in x.elements(NS_MUC_USER, "invite"):
                reason = child_text(invite, "reason") or ""
                await self.invite(message, address, state, invite.getAttribute("to", ""), reason)

    async def invite(self, message: Stanza, address: str, state: UserState | None, target: str,
                     reason: str) -> None:
        try:
            invitee = parse_jid(target)
        except InvalidFormat:
            self.sessions.send(error_reply(message.element, "jid-malformed", "not a JID to invite"))
            return
        if state is None or state.session is None or address not in state.rooms:
            self.sessions.send(error_reply(message.element, "not-acceptable", "you are not in this room"))
            return
        if invitee.host == self.gateway_jid and invitee.user:
            try:
                contact = self.sessions.legacy_address(invitee)
                await state.session.invite(address, contact, reason)
            except LegacyError as exc:
                self.sessions.send(error_reply(message.element, exc.condition, exc.text or None))
            except (ValueError, NotImplementedError):
                self.sessions.send(error_reply(message.element, "feature-not-implemented"))
            return
        forwarded = stanza("message", sender=self.room_jid(address), recipient=invitee.full(),
                           id_=message.id or new_id())
        invite = forwarded.addElement((NS_MUC_USER, "x")).addElement("invite")
        invite["from"] = message.sender.userhost()
        if reason:
            invite.addElement("reason", content=xml_safe(reason))
        self.sessions.send(forwarded)

    # -- groupchat from the user (§7.4) --------------------------------------------------

    def on_message(self, message: Stanza) -> bool | Deferred[bool]:
        address = self.room_address(message.recipient)
        if address is None or message.type == "error":
            return address is not None
        # Run at once: a plain line to a connected room finishes without waiting (no Deferred).
        return eagerly(self._message(message, address))

    async def _message(self, message: Stanza, address: str) -> bool:
        element = message.element
        user = message.sender.userhost()
        state = self.sessions.users.get(user)
        room = state.rooms.get(address) if state is not None else None
        resource = message.sender.full()
        if message.recipient.resource:
            # A private message to an occupant: the plugin maps it to a contact (XEP-0045 §7.5).
            occupant_contact = getattr(self.sessions.plugin, "occupant_contact", None)
            if occupant_contact is None or message.type == "groupchat":
                self.sessions.send(error_reply(element, "feature-not-implemented" if occupant_contact is None
                                               else "bad-request"))
                return True
            contact = occupant_contact(address, message.recipient.resource)
            await self.sessions.send_to_contact(message, contact)
            return True
        invites, subject, body, origin_id = _message_parts(element)
        if invites:
            await self._invite(message, address, state)
            return True
        if message.type != "groupchat":
            self.sessions.send(error_reply(element, "bad-request", "send groupchat messages to a room"))
            return True
        if state is None or room is None or resource not in room.resources or state.session is None:
            self.sessions.send(error_reply(element, "not-acceptable", "you are not in this room"))
            return True
        if subject is not None:
            try:
                await state.session.set_subject(address, subject)
            except LegacyError as exc:
                self.sessions.send(error_reply(element, exc.condition, exc.text or None))
            except NotImplementedError:
                self.sessions.send(error_reply(element, "feature-not-implemented"))
            return True
        if not body:
            return True
        try:
            lines = await state.session.send_room_message(address, body)
        except LegacyError as exc:
            self.sessions.send(error_reply(element, exc.condition, exc.text or None))
            return True
        except NotImplementedError:
            self.sessions.send(error_reply(element, "feature-not-implemented"))
            return True
        for index, line in enumerate(lines):
            stanza_id = None
            if self.archive is not None:
                stanza_id = self.archive.record(user, address, room.jid, sender=room.nick, body=line.text,
                                                direction="out", legacy_id=line.legacy_id)
            # One id per legacy line, the same for every resource; the client's id on the first.
            message_id = ((message.id if index == 0 and message.id else line.legacy_id) or stanza_id
                          or new_id())

            def reflection(target: str, text: str = line.text, message_id: str = message_id,
                           stanza_id: str | None = stanza_id, first: bool = index == 0) -> domish.Element:
                reflected = stanza("message", sender=f"{room.jid}/{room.nick}", recipient=target,
                                   type_="groupchat", id_=message_id)
                add_child(reflected, "body", xml_safe(text))
                if origin_id and first:
                    add_child(reflected, (NS_STANZA_ID, "origin-id"), attributes={"id": origin_id})
                if stanza_id:
                    add_child(reflected, (NS_STANZA_ID, "stanza-id"),
                              attributes={"by": room.jid, "id": stanza_id})
                return reflected

            def reflection_xml(target: str, text: str = line.text, message_id: str = message_id,
                               stanza_id: str | None = stanza_id, first: bool = index == 0) -> str:
                return groupchat_xml(f"{room.jid}/{room.nick}", target, message_id, text,
                                     origin_id=origin_id if first else None, stanza_id=stanza_id, by=room.jid)

            self._to_all(room, reflection, reflection_xml)
        return True

    # -- disco and self-ping ---------------------------------------------------------------

    def service_address(self, jid: JID) -> str | None:
        """The legacy room service (IRC network) a JID names, or None."""
        is_service = getattr(self.sessions.plugin, "is_service", None)
        if is_service is None or jid.host != self.gateway_jid or not jid.user or jid.resource:
            return None
        try:
            address = self.sessions.plugin.localpart_to_legacy(unescape_localpart(jid.user))
        except ValueError:
            return None
        return address if is_service(address) else None

    def disco_identities(self, requestor: JID, target: JID, node: str) -> Iterable[Identity]:
        if node or target.resource:
            return ()
        if self.room_address(target) is not None:
            return (Identity(category="conference", type=self.identity_type, name=target.user or ""),)
        service = self.service_address(target)
        if service is not None:
            # Browsable like a MUC service, as Biboumi's server JIDs are (DESIGN.md §4).
            return (Identity(category="conference", type=self.identity_type, name=service),
                    Identity(category="gateway", type=self.identity_type, name=service))
        return ()

    def disco_features(self, requestor: JID, target: JID, node: str) -> Iterable[str]:
        if node:
            return ()
        if target.full() == self.gateway_jid or self.service_address(target) is not None:
            return (NS_MUC,)
        if self.room_address(target) is not None and not target.resource:
            return (NS_MUC, NS_SELF_PING, NS_STABLE_ID, "muc_nonanonymous", NS_STANZA_ID)
        return ()

    async def disco_items(self, requestor: JID, target: JID, node: str) -> list[DiscoItem]:
        """The channel list of a network (IRC LIST), names with occupants and topics."""
        service = self.service_address(target)
        if service is None or node:
            return []
        state = self.sessions.state(requestor.userhost())
        try:
            session = await self.sessions.open_session(state)
            listing = await session.list_rooms(service)
        except (LoginFailed, LegacyError) as exc:
            raise StanzaError(exc.condition, text=exc.text or None) from exc
        except NotImplementedError as exc:
            raise StanzaError("feature-not-implemented") from exc
        finally:
            # Browsing alone does not keep a legacy session (and its connections) open.
            self.sessions.session_maybe_done(state)
        items = []
        for room in sorted(listing, key=lambda r: r.address):
            name = f"{room.name} ({room.occupants})"
            if room.topic:
                name += f": {room.topic}"
            items.append(DiscoItem(jid=self.room_jid(room.address), name=xml_safe(name)))
        return items

    def check_ping(self, request: IqRequest) -> None:
        """XEP-0410 §3.2: a ping to an occupant JID succeeds only for a joined resource."""
        address = self.room_address(request.recipient)
        if address is None or not request.recipient.resource:
            return
        state = self.sessions.users.get(request.sender.userhost())
        room = state.rooms.get(address) if state is not None else None
        if room is None or request.sender.full() not in room.resources:
            raise StanzaError("not-acceptable", text="you are not in this room")

    # -- shutdown ---------------------------------------------------------------------------

    def goodbye(self, state: UserState) -> None:
        """The gateway goes away: every occupant and the user leave every room (status 332)."""
        for room in list(state.rooms.values()):
            for occupant in room.occupants.values():
                for resource in sorted(room.resources):
                    self.sessions.send(self._occupant_presence(room, occupant, resource, type_="unavailable"))
            for resource in sorted(room.resources):
                self._self_presence(room, resource, type_="unavailable", codes=[SERVICE_SHUTDOWN])
            room.held.clear()
        state.rooms.clear()


def _message_parts(element: domish.Element) -> tuple[bool, str | None, str | None, str | None]:
    """One pass over a groupchat message's children: whether it carries a mediated invitation
    (§7.8.2), the text of its first ``<subject/>`` and first ``<body/>`` (None when absent),
    and the id of its first XEP-0359 ``<origin-id/>``."""
    invites = False
    subject = body = origin_id = None
    seen_origin = False
    for child in element.children:
        if not isinstance(child, domish.Element):
            continue
        name = child.name
        if name == "body":
            if body is None:
                body = str(child)
        elif name == "subject":
            if subject is None:
                subject = str(child)
        elif name == "x":
            if not invites and child.uri == NS_MUC_USER:
                invites = any(True for _ in child.elements(NS_MUC_USER, "invite"))
        elif name == "origin-id" and child.uri == NS_STANZA_ID and not seen_origin:
            seen_origin = True
            origin_id = child.getAttribute("id")
    return invites, subject, body, origin_id
