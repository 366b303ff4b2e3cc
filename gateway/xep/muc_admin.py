"""XEP-0045 §8-§9 moderation and administration (``muc#admin``) on legacy rooms.

A role or affiliation change becomes the plugin's :meth:`set_role` /
:meth:`set_affiliation`; every request is answered, with a result once the
legacy side did it, the plugin's error, or ``remote-server-timeout`` when the
legacy side says nothing in time (Biboumi leaves bans unanswered). A ``get``
lists the occupants with a given role or affiliation, as the room shows them.
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish

from gateway.plugin import AFFILIATIONS, ROLES, LegacyError
from gateway.router import IqRequest, IqRoute
from gateway.session import LOGIN_TIMEOUT
from gateway.timeouts import with_timeout
from gateway.xep.muc import MucHandler

NS_MUC_ADMIN = "http://jabber.org/protocol/muc#admin"
ADMIN_TIMEOUT = min(20.0, LOGIN_TIMEOUT)


class MucAdminHandler:
    def __init__(self, muc: MucHandler) -> None:
        self.muc = muc
        self.sessions = muc.sessions

    def iq_routes(self) -> Iterable[IqRoute]:
        return (
            IqRoute("set", NS_MUC_ADMIN, "query", self.set),
            IqRoute("get", NS_MUC_ADMIN, "query", self.get),
        )

    def _room(self, request: IqRequest):  # type: ignore[no-untyped-def]
        address = self.muc.room_address(request.recipient)
        if address is None or request.recipient.resource:
            raise StanzaError("service-unavailable")
        state = self.sessions.users.get(request.sender.userhost())
        room = state.rooms.get(address) if state is not None else None
        if room is None or request.sender.full() not in room.resources or state.session is None:
            raise StanzaError("not-acceptable", text="you are not in this room")
        return state, room

    async def set(self, request: IqRequest) -> None:
        state, room = self._room(request)
        items = list(request.payload.elements(NS_MUC_ADMIN, "item"))
        if not items:
            raise StanzaError("bad-request", text="no item")
        for item in items:
            nick = item.getAttribute("nick") or self._nick_for_jid(room, item.getAttribute("jid", ""))
            if not nick:
                raise StanzaError("bad-request", text="an item needs a nick (or the JID of an occupant)")
            reason = next((str(r) for r in item.elements(NS_MUC_ADMIN, "reason")), "")
            role, affiliation = item.getAttribute("role"), item.getAttribute("affiliation")
            if (role is None) == (affiliation is None):
                raise StanzaError("bad-request", text="give either a role or an affiliation")
            try:
                if role is not None:
                    if role not in ROLES:
                        raise StanzaError("bad-request", text=f"unknown role {role!r}")
                    operation = state.session.set_role(room.address, nick, role, reason)
                else:
                    if affiliation not in AFFILIATIONS:
                        raise StanzaError("bad-request", text=f"unknown affiliation {affiliation!r}")
                    operation = state.session.set_affiliation(room.address, nick, affiliation, reason)
                await with_timeout(self.sessions.clock, operation, ADMIN_TIMEOUT)
            except LegacyError as exc:
                raise StanzaError(exc.condition, text=exc.text or None) from exc
            except TimeoutError as exc:
                raise StanzaError("remote-server-timeout", text="the legacy side did not answer") from exc

    def _nick_for_jid(self, room, jid: str) -> str:  # type: ignore[no-untyped-def]
        for occupant in room.occupants.values():
            if jid and occupant.real_jid == jid:
                return occupant.nick
        return ""

    def get(self, request: IqRequest) -> domish.Element:
        _, room = self._room(request)
        wanted = [(i.getAttribute("role"), i.getAttribute("affiliation"))
                  for i in request.payload.elements(NS_MUC_ADMIN, "item")]
        if not wanted:
            raise StanzaError("bad-request", text="ask for a role or an affiliation")
        query = domish.Element((NS_MUC_ADMIN, "query"))
        for occupant in room.occupants.values():
            if any((role and occupant.role == role) or (affiliation and occupant.affiliation == affiliation)
                   for role, affiliation in wanted):
                item = query.addElement("item")
                item["nick"], item["role"], item["affiliation"] = (occupant.nick, occupant.role,
                                                                  occupant.affiliation)
                if occupant.real_jid:
                    item["jid"] = occupant.real_jid
        return query
