"""XEP-0030: Service Discovery, answered from what every handler declares.

There is no central feature list: each handler may provide
``disco_identities``, ``disco_features`` and ``disco_items`` for a target JID
and node, and this module merges their answers (STYLE.md G1). A target for
which no handler declares an identity does not exist: ``item-not-found``
(XEP-0030 §3.1).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from gateway.router import IqRequest, IqRoute
from gateway.xep.rsm import paginate

NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    category: str
    type: str
    name: str = ""

    def to_element(self) -> domish.Element:
        element = domish.Element((NS_DISCO_INFO, "identity"))
        element["category"] = self.category
        element["type"] = self.type
        if self.name:
            element["name"] = self.name
        return element


@dataclass(frozen=True, slots=True, kw_only=True)
class DiscoItem:
    jid: str
    name: str = ""
    node: str = ""

    def to_element(self) -> domish.Element:
        element = domish.Element((NS_DISCO_ITEMS, "item"))
        element["jid"] = self.jid
        if self.name:
            element["name"] = self.name
        if self.node:
            element["node"] = self.node
        return element


class DiscoHandler:
    """Answers disco#info and disco#items by asking every registered handler."""

    def __init__(self, handlers: Callable[[], Iterable[object]]) -> None:
        self._handlers = handlers

    def iq_routes(self) -> Iterable[IqRoute]:
        return (
            IqRoute("get", NS_DISCO_INFO, "query", self.info),
            IqRoute("get", NS_DISCO_ITEMS, "query", self.items),
        )

    def disco_features(self, requestor: JID, target: JID, node: str) -> Iterable[str]:
        return (NS_DISCO_INFO, NS_DISCO_ITEMS)

    def _collect(self, method: str, request: IqRequest, node: str) -> list:
        found: list = []
        for handler in self._handlers():
            provider = getattr(handler, method, None)
            if provider is not None:
                found.extend(provider(request.sender, request.recipient, node))
        return found

    def info(self, request: IqRequest) -> domish.Element:
        node = request.payload.getAttribute("node", "")
        identities: list[Identity] = self._collect("disco_identities", request, node)
        if not identities:
            raise StanzaError("item-not-found")
        query = domish.Element((NS_DISCO_INFO, "query"))
        if node:
            query["node"] = node
        for identity in dict.fromkeys(identities):
            query.addChild(identity.to_element())
        for feature in sorted(set(self._collect("disco_features", request, node))):
            query.addElement("feature")["var"] = feature
        return query

    async def items(self, request: IqRequest) -> domish.Element:
        """Items may come from a legacy network (an IRC channel list), so providers may be
        asynchronous; the list is paged with XEP-0059 when the request asks for it."""
        node = request.payload.getAttribute("node", "")
        if not self._collect("disco_identities", request, node):
            raise StanzaError("item-not-found")
        items: list[DiscoItem] = []
        for handler in self._handlers():
            provider = getattr(handler, "disco_items", None)
            if provider is not None:
                found = provider(request.sender, request.recipient, node)
                if isinstance(found, Awaitable):
                    found = await found
                items.extend(found)
        query = domish.Element((NS_DISCO_ITEMS, "query"))
        if node:
            query["node"] = node
        page, result_set = paginate(items, request.payload, key=lambda item: item.jid + "/" + item.node)
        for item in page:
            query.addChild(item.to_element())
        if result_set is not None:
            query.addChild(result_set)
        return query
