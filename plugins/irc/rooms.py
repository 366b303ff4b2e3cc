"""IRC channel state for one connection, turned into the plugin API's room events.

Sans-I/O: :meth:`Channels.handle` takes one parsed :class:`IrcMessage` and emits
events; it never writes to a socket. Each message goes through a dispatch table
with argument-count bounds, and a bad message is logged and skipped (STYLE.md G9),
because one odd line from a server must not cost a user their rooms.

Names are compared under the server's CASEMAPPING (ISUPPORT), never ``str.lower``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

from twisted.internet.defer import Deferred

from gateway.plugin import (
    Affiliation,
    DeliveryFailed,
    LegacyError,
    MessageReceived,
    Occupant,
    OccupantChanged,
    OccupantJoined,
    OccupantLeft,
    OccupantRenamed,
    Role,
    RoomInvitation,
    RoomJoined,
    RoomJoinFailed,
    RoomLeft,
    RoomMessage,
    SubjectChanged,
)
from plugins.irc.addressing import Addressing
from plugins.irc.chathistory import History, server_time
from plugins.irc.formatting import ctcp, ctcp_split, to_plain, to_xep0393
from plugins.irc.isupport import ISupport
from plugins.irc.lines import IrcMessage

log = logging.getLogger(__name__)

#: Join errors (RFC 2812 §5.2) and the XEP-0045 §7.2 conditions they become.
JOIN_ERRORS: dict[str, str] = {
    "403": "item-not-found",          # ERR_NOSUCHCHANNEL
    "405": "resource-constraint",     # ERR_TOOMANYCHANNELS
    "471": "service-unavailable",     # ERR_CHANNELISFULL (§7.2.10 max users)
    "473": "registration-required",   # ERR_INVITEONLYCHAN (§7.2.7 members-only)
    "474": "forbidden",               # ERR_BANNEDFROMCHAN (§7.2.8 banned)
    "475": "not-authorized",          # ERR_BADCHANNELKEY (§7.2.6 password)
    "477": "registration-required",   # ERR_NEEDREGGEDNICK
}

#: Prefix mode -> (role, affiliation), as Biboumi maps them (reference/biboumi.md §2.2).
MODE_ROLES: dict[str, tuple[Role, Affiliation]] = {
    "q": ("moderator", "owner"),
    "a": ("moderator", "owner"),
    "o": ("moderator", "admin"),
    "h": ("moderator", "member"),
    "v": ("participant", "member"),
}


#: Numerics that refuse a moderation command, and the stanza error they become.
MODERATION_ERRORS: dict[str, str] = {
    "482": "not-allowed",      # ERR_CHANOPRIVSNEEDED
    "401": "item-not-found",   # ERR_NOSUCHNICK
    "441": "item-not-found",   # ERR_USERNOTINCHANNEL
    "472": "not-allowed",      # ERR_UNKNOWNMODE
    "478": "not-allowed",      # ERR_BANLISTFULL
}


@dataclass(slots=True)
class Waiter:
    """A moderation command waiting for its echo (or a refusal) from the server."""

    channel: str
    """Folded channel name."""
    done: Callable[[IrcMessage], bool]
    deferred: Deferred[None]
    refused: Callable[[IrcMessage], str | None] | None = None
    """Maps a refusal to a stanza error condition; by default the moderation numerics."""


#: Most members hold no membership mode: they share one empty set (a set each was 216 bytes
#: per member, 216 kB per user in a channel of 1000).
NO_MODES: frozenset[str] = frozenset()


@dataclass(slots=True)
class Member:
    nick: str
    modes: frozenset[str] = NO_MODES


@dataclass(slots=True)
class Channel:
    address: str
    """The room address the core knows this channel by."""
    name: str
    joined: bool = False
    members: dict[str, Member] = field(default_factory=dict)
    """Folded nick -> member (the user included)."""
    topic: str = ""
    topic_by: str = ""


Emit = Callable[[object], None]


@lru_cache(maxsize=256)
def role_for(membership_modes: str, modes: frozenset[str]) -> tuple[Role, Affiliation]:
    """The role and affiliation of a member holding ``modes``: its highest-ranked prefix mode
    (PREFIX order) that :data:`MODE_ROLES` knows. Cached: a channel has few distinct mode sets."""
    for mode in membership_modes:
        if mode in modes and mode in MODE_ROLES:
            return MODE_ROLES[mode]
    return "participant", "none"


class Channels:
    def __init__(self, *, user: str, network: str, addressing: Addressing, isupport: ISupport,
                 emit: Emit, own_nick: Callable[[], str],
                 reply: Callable[[str, str], None] = lambda nick, text: None,
                 ctcp_version: str = "",
                 nick_owner: Callable[[str, str], str] = lambda network, folded_nick: "",
                 history: History | None = None) -> None:
        self.user = user
        self.history = history or History(isupport.fold)
        """The last line seen per channel, and which batches are chathistory backfill."""
        self.nick_owner = nick_owner
        """(network, folded nick) -> the bare JID of the gateway user with that nick, or ""."""
        self.reply = reply
        """Sends a NOTICE (nick, text): CTCP answers."""
        self.ctcp_version = ctcp_version
        """The CTCP VERSION answer; empty: VERSION requests go unanswered."""
        self.network = network
        self.addressing = addressing
        self.isupport = isupport
        self.emit = emit
        self.own_nick = own_nick
        self.channels: dict[str, Channel] = {}
        self.waiters: list[Waiter] = []
        self.on_joined: dict[str, Callable[[], None]] = {}
        """Room address -> called once when that channel's join completes."""
        self.pending_pm: dict[str, list[str]] = {}
        """Folded nick -> ids of private messages sent to it, oldest first (for 401 errors)."""

    # -- helpers ------------------------------------------------------------------

    def fold(self, name: str) -> str:
        return self.isupport.fold(name)

    def is_me(self, nick: str | None) -> bool:
        return nick is not None and self.fold(nick) == self.fold(self.own_nick())

    def address_for(self, name: str) -> str:
        return self.addressing.format(self.network, name.lower())

    def expect(self, address: str, name: str) -> Channel:
        """Remember a JOIN the user asked for, so events use the address the core knows."""
        channel = self.channels.get(self.fold(name))
        if channel is None:
            channel = self.channels[self.fold(name)] = Channel(address=address, name=name)
        return channel

    def forget(self, name: str) -> None:
        self.channels.pop(self.fold(name), None)

    def occupant(self, member: Member, *, user_modes: bool = False, folded: str | None = None) -> Occupant:
        """The plugin API's view of ``member``; ``folded`` is its folded nick when the caller has it."""
        role, affiliation = role_for(self.isupport.membership_modes, member.modes)
        if user_modes:
            return Occupant(nick=member.nick, role=role, affiliation=affiliation)
        return Occupant(nick=member.nick, role=role, affiliation=affiliation,
                        real_jid=self.nick_owner(self.network, folded or self.fold(member.nick)),
                        contact=self.addressing.format(self.network, member.nick.lower()))

    # -- dispatch ---------------------------------------------------------------------

    def handle(self, message: IrcMessage) -> None:
        entry = _HANDLERS.get(message.command)
        if entry is not None:
            minimum, handler = entry
            if len(message.params) < minimum:
                log.info("%s: ignoring %s with %d params", self.network, message.command,
                         len(message.params))
                return
            try:
                handler(self, message)
            except Exception:
                # An exception barrier per line (G9): log and carry on with the next one.
                log.exception("%s: failed to handle %s", self.network, message.command)
        if self.waiters:
            self._settle_waiters(message)

    def wait_for(self, channel: str, done: Callable[[IrcMessage], bool],
                 refused: Callable[[IrcMessage], str | None] | None = None) -> Deferred[None]:
        """A Deferred that fires when ``done(message)`` holds, or fails on a refusal numeric."""
        waiter = Waiter(self.fold(channel), done, Deferred(), refused)
        self.waiters.append(waiter)
        waiter.deferred.addBoth(lambda outcome: (self.waiters.remove(waiter)
                                                 if waiter in self.waiters else None, outcome)[1])
        return waiter.deferred

    def _settle_waiters(self, message: IrcMessage) -> None:
        for waiter in list(self.waiters):
            if waiter.deferred.called:
                continue
            if waiter.refused is not None:
                condition = waiter.refused(message)
                if condition is not None:
                    waiter.deferred.errback(LegacyError(condition, message.params[-1]))  # type: ignore[arg-type]
                    return
                if waiter.done(message):
                    waiter.deferred.callback(None)
                continue
            if message.command in MODERATION_ERRORS:
                # The refusal names the channel (482, 441) or the nick (401): match the channel
                # when it is there, otherwise the oldest waiter takes it.
                names = {self.fold(p) for p in message.params[1:-1]}
                if waiter.channel in names or message.command == "401":
                    waiter.deferred.errback(LegacyError(MODERATION_ERRORS[message.command],  # type: ignore[arg-type]
                                                        message.params[-1]))
                    return
            elif waiter.done(message):
                waiter.deferred.callback(None)

    # -- membership ------------------------------------------------------------------------

    def _join(self, message: IrcMessage) -> None:
        name = message.params[0]
        nick = message.nick
        if nick is None:
            return
        if self.is_me(nick):
            channel = self.expect(self.address_for(name), name)
            channel.members[self.fold(nick)] = Member(nick)
            return
        channel = self.channels.get(self.fold(name))
        if channel is None:
            return
        member = channel.members[self.fold(nick)] = Member(nick)
        if channel.joined:
            self.emit(OccupantJoined(user=self.user, room=channel.address, occupant=self.occupant(member)))

    def _names(self, message: IrcMessage) -> None:
        channel = self.channels.get(self.fold(message.params[2]))
        if channel is None or channel.joined:
            return
        for entry in message.params[3].split():
            modes, rest = self.isupport.split_prefixes(entry)  # "@+nick" or "@nick!user@host"
            nick = rest.split("!", 1)[0]
            if nick:
                channel.members[self.fold(nick)] = Member(nick, frozenset(modes)) if modes else Member(nick)

    def _end_of_names(self, message: IrcMessage) -> None:
        channel = self.channels.get(self.fold(message.params[1]))
        if channel is None or channel.joined:
            return
        channel.joined = True
        me = channel.members.get(self.fold(self.own_nick())) or Member(self.own_nick())
        mine = self.occupant(me, user_modes=True)
        my_key = self.fold(me.nick)
        others = tuple(self.occupant(m, folded=key) for key, m in channel.members.items() if key != my_key)
        self.emit(RoomJoined(user=self.user, room=channel.address, nick=self.own_nick(), occupants=others,
                             role=mine.role, affiliation=mine.affiliation,
                             subject=channel.topic, subject_by=channel.topic_by))
        callback = self.on_joined.pop(channel.address, None)
        if callback is not None:
            callback()

    def _join_error(self, message: IrcMessage) -> None:
        channel = self.channels.get(self.fold(message.params[1]))
        if channel is None or channel.joined:
            return
        self.forget(channel.name)
        text = message.params[-1] if len(message.params) > 2 else ""
        self.emit(RoomJoinFailed(user=self.user, room=channel.address,
                                 condition=JOIN_ERRORS[message.command], text=text))  # type: ignore[arg-type]

    def _part(self, message: IrcMessage) -> None:
        channel = self.channels.get(self.fold(message.params[0]))
        nick = message.nick
        if channel is None or nick is None:
            return
        reason = message.params[1] if len(message.params) > 1 else ""
        if self.is_me(nick):
            self.forget(channel.name)  # the core asked for this part: nothing to report
            return
        if channel.members.pop(self.fold(nick), None) is not None and channel.joined:
            self.emit(OccupantLeft(user=self.user, room=channel.address, nick=nick, reason=reason))

    def _kick(self, message: IrcMessage) -> None:
        channel = self.channels.get(self.fold(message.params[0]))
        if channel is None:
            return
        target = message.params[1]
        reason = message.params[2] if len(message.params) > 2 else ""
        kicker = message.nick or self.network
        if self.is_me(target):
            self.forget(channel.name)
            self.emit(RoomLeft(user=self.user, room=channel.address, reason=reason, kicked_by=kicker))
            return
        member = channel.members.pop(self.fold(target), None)
        if member is not None and channel.joined:
            self.emit(OccupantLeft(user=self.user, room=channel.address, nick=member.nick, reason=reason,
                                   kicked_by=kicker))

    def _quit(self, message: IrcMessage) -> None:
        nick = message.nick
        if nick is None or self.is_me(nick):
            return
        reason = message.params[0] if message.params else ""
        for channel in self.channels.values():
            member = channel.members.pop(self.fold(nick), None)
            if member is not None and channel.joined:
                self.emit(OccupantLeft(user=self.user, room=channel.address, nick=member.nick, reason=reason))

    def _nick(self, message: IrcMessage) -> None:
        old = message.nick
        new = message.params[0]
        if old is None:
            return
        for channel in self.channels.values():
            member = channel.members.pop(self.fold(old), None)
            if member is None:
                continue
            member.nick = new
            channel.members[self.fold(new)] = member
            if channel.joined:
                self.emit(OccupantRenamed(user=self.user, room=channel.address, old_nick=old, new_nick=new))

    def _mode(self, message: IrcMessage) -> None:
        channel = self.channels.get(self.fold(message.params[0]))
        if channel is None or not channel.joined:
            return
        # Shown in the room as Biboumi does: "Mode #chan [+o nick] by op", from the room itself.
        setter = message.nick or message.source or self.network
        # Plain text: a mode parameter may hold formatting or control codes (found by hypothesis).
        text = f"Mode {channel.name} [{' '.join(message.params[1:])}] by {setter}"
        self.emit(RoomMessage(user=self.user, room=channel.address, nick="", body=to_plain(text)))
        changed: dict[str, Member] = {}
        for change in self.isupport.parse_mode_change(message.params[1], message.params[2:]):
            adding, mode, param = change
            if param is None or self.isupport.prefix_for_mode(mode) is None:
                continue
            member = channel.members.get(self.fold(param))
            if member is None:
                continue
            member.modes = (member.modes | {mode}) if adding else (member.modes - {mode})
            changed[self.fold(param)] = member
        for key, member in changed.items():
            if key != self.fold(self.own_nick()):
                self.emit(OccupantChanged(user=self.user, room=channel.address,
                                          occupant=self.occupant(member)))

    # -- topic ---------------------------------------------------------------------------------

    def _rpl_topic(self, message: IrcMessage) -> None:
        channel = self.channels.get(self.fold(message.params[1]))
        if channel is not None:
            channel.topic = to_xep0393(message.params[2])

    def _rpl_topic_who(self, message: IrcMessage) -> None:
        channel = self.channels.get(self.fold(message.params[1]))
        if channel is not None:
            channel.topic_by = message.params[2].split("!", 1)[0]

    def _topic(self, message: IrcMessage) -> None:
        channel = self.channels.get(self.fold(message.params[0]))
        if channel is None:
            return
        channel.topic, channel.topic_by = to_xep0393(message.params[1]), message.nick or ""
        if channel.joined:
            self.emit(SubjectChanged(user=self.user, room=channel.address, subject=channel.topic,
                                     nick=channel.topic_by))

    # -- messages -----------------------------------------------------------------------------

    def _privmsg(self, message: IrcMessage, notice: bool = False) -> None:
        target, text = message.params[0], message.params[1]
        nick = message.nick
        if nick is None or self.is_me(nick):
            return  # server messages are the connection's; echoes of ours are reflected already
        ctcp = ctcp_split(text)
        if ctcp is not None:
            command, args = ctcp
            if command != "ACTION":
                if not notice:
                    self._ctcp_request(nick, command, args)
                return
            text = f"/me {args}"
        body = to_xep0393(text)
        legacy_id = message.tags.get("msgid", "")
        if self.isupport.is_channel(target):
            channel = self.channels.get(self.fold(target))
            if channel is not None and channel.joined:
                backfill = self.history.is_backfill(message)
                self.history.seen(target, message)
                self.emit(RoomMessage(user=self.user, room=channel.address, nick=nick, body=body,
                                      legacy_id=legacy_id, notice=notice, timestamp=server_time(message),
                                      backfill=backfill))
            return
        if self.is_me(target):
            self.emit(MessageReceived(user=self.user, contact=self.addressing.format(self.network, nick),
                                      body=f"[notice] {body}" if notice else body, legacy_id=legacy_id))

    def _notice(self, message: IrcMessage) -> None:
        if message.nick is None:
            # From the server itself (or before registration): to the network JID.
            self.server_text(message.params[1])
            return
        self._privmsg(message, notice=True)

    def server_text(self, text: str) -> None:
        """Server notices and numerics, as chat messages from the network's JID."""
        try:
            contact = self.addressing.format(self.network)
        except ValueError:
            log.info("%s: %s", self.network, text)  # fixed-network mode: no JID for the server
            return
        self.emit(MessageReceived(user=self.user, contact=contact, body=to_xep0393(text)))

    def _ctcp_request(self, nick: str, command: str, args: str) -> None:
        # CTCP (https://modern.ircdocs.horse/ctcp): answers go back as NOTICEs.
        if command == "PING":
            self.reply(nick, ctcp("PING", args))
        elif command == "VERSION" and self.ctcp_version:
            self.reply(nick, ctcp("VERSION", self.ctcp_version))

    def _invite(self, message: IrcMessage) -> None:
        target, name = message.params[0], message.params[1]
        if message.nick is None or not self.is_me(target):
            return
        self.emit(RoomInvitation(user=self.user, room=self.address_for(name),
                                 inviter=self.addressing.format(self.network, message.nick)))

    def sent_private(self, nick: str, xmpp_id: str) -> None:
        ids = self.pending_pm.setdefault(self.fold(nick), [])
        ids.append(xmpp_id)
        del ids[:-20]  # bounded: only recent messages can still bounce

    def _no_such_nick(self, message: IrcMessage) -> None:
        nick = message.params[1]
        ids = self.pending_pm.get(self.fold(nick))
        if not ids or any(not w.deferred.called for w in self.waiters):
            return
        xmpp_id = ids.pop(0)
        # XEP-0100 §4.8.2: the contact is not on IRC: service-unavailable, with the original id.
        self.emit(DeliveryFailed(user=self.user, contact=self.addressing.format(self.network, nick.lower()),
                                 xmpp_id=xmpp_id, condition="service-unavailable",
                                 text=message.params[-1]))


#: IRC command -> (fewest parameters it must have, handler): one table for every connection.
_HANDLERS: dict[str, tuple[int, Callable[[Channels, IrcMessage], None]]] = {
    "JOIN": (1, Channels._join), "PART": (1, Channels._part), "KICK": (2, Channels._kick),
    "QUIT": (0, Channels._quit), "NICK": (1, Channels._nick), "MODE": (2, Channels._mode),
    "TOPIC": (2, Channels._topic), "PRIVMSG": (2, Channels._privmsg), "NOTICE": (2, Channels._notice),
    "332": (3, Channels._rpl_topic), "333": (3, Channels._rpl_topic_who), "353": (4, Channels._names),
    "366": (2, Channels._end_of_names), "401": (2, Channels._no_such_nick), "INVITE": (2, Channels._invite),
    **{code: (2, Channels._join_error) for code in JOIN_ERRORS},
}
