"""XEP-0045 §10.2 room configuration (``muc#owner``) on legacy rooms: the user's own
settings of the room, the same form as the room JID's ad-hoc ``configure``
(gateway.xep.service_commands), as Biboumi offers it (reference/biboumi.md §2.6).
Nothing is configured on the legacy side: these are the gateway's settings for that user.
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish

from gateway.router import IqRequest, IqRoute
from gateway.xep.forms import NS_DATA_FORMS, find_form, submitted_values
from gateway.xep.muc import MucHandler
from gateway.xep.service_commands import ServiceCommands

NS_MUC_OWNER = "http://jabber.org/protocol/muc#owner"
NS_ROOMCONFIG = "http://jabber.org/protocol/muc#roomconfig"


class MucOwnerHandler:
    def __init__(self, muc: MucHandler, commands: ServiceCommands) -> None:
        self.muc = muc
        self.commands = commands

    def iq_routes(self) -> Iterable[IqRoute]:
        return (
            IqRoute("get", NS_MUC_OWNER, "query", self.get),
            IqRoute("set", NS_MUC_OWNER, "query", self.set),
        )

    def _room(self, request: IqRequest) -> str:
        address = self.muc.room_address(request.recipient)
        if address is None or request.recipient.resource:
            raise StanzaError("service-unavailable")
        return address

    async def get(self, request: IqRequest) -> domish.Element:
        """§10.1.2: the configuration form."""
        room = self._room(request)
        self.commands.allowed(request.sender.userhost())
        await self.muc.sessions.room_settings.load()
        query = domish.Element((NS_MUC_OWNER, "query"))
        form = self.commands.room_form(request.sender.userhost(), room)
        element = form.to_element()
        hidden = domish.Element((NS_DATA_FORMS, "field"))
        hidden["var"], hidden["type"] = "FORM_TYPE", "hidden"
        hidden.addElement("value", content=NS_ROOMCONFIG)
        element.children.insert(0, hidden)
        query.addChild(element)
        return query

    async def set(self, request: IqRequest) -> None:
        """§10.1.3: a submitted form is applied; a cancelled one changes nothing; destroying a
        legacy room is not something the gateway can do."""
        room = self._room(request)
        if any(True for _ in request.payload.elements(NS_MUC_OWNER, "destroy")):
            raise StanzaError("not-allowed", text="a legacy room cannot be destroyed from here")
        form = find_form(request.payload)
        if form is None:
            raise StanzaError("bad-request", text="a data form is required")
        if form.getAttribute("type") == "cancel":
            return None
        if form.getAttribute("type") != "submit":
            raise StanzaError("bad-request", text="submit or cancel the form")
        values = submitted_values(form)
        values.pop("FORM_TYPE", None)
        await self.muc.sessions.room_settings.load()
        await self.commands.apply_room(request.sender.userhost(), room, values)
        return None
