"""jabber:iq:gateway: legacy address to JID translation (XEP-0100 §6.3, checklist AD3)."""

from __future__ import annotations

from collections.abc import Iterable

from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.protocols.jabber.jid import JID, InvalidFormat
from twisted.words.xish import domish

from gateway.jids import parse_jid
from gateway.plugin import Plugin
from gateway.router import IqRequest, IqRoute
from gateway.xep.escaping import escape_localpart

NS_GATEWAY = "jabber:iq:gateway"


class IqGatewayHandler:
    def __init__(self, gateway_jid: str, plugin: Plugin) -> None:
        self.gateway_jid = gateway_jid
        self.plugin = plugin

    def iq_routes(self) -> Iterable[IqRoute]:
        return (
            IqRoute("get", NS_GATEWAY, "query", self.get),
            IqRoute("set", NS_GATEWAY, "query", self.set),
        )

    def disco_features(self, requestor: JID, target: JID, node: str) -> Iterable[str]:
        return (NS_GATEWAY,) if target.full() == self.gateway_jid and not node else ()

    def get(self, request: IqRequest) -> domish.Element:
        query = domish.Element((NS_GATEWAY, "query"))
        query.addElement("desc", content=self.plugin.prompt)
        query.addElement("prompt", content=self.plugin.name)
        return query

    def set(self, request: IqRequest) -> domish.Element:
        prompt = next((str(c) for c in request.payload.elements(NS_GATEWAY, "prompt")), "").strip()
        if not prompt:
            raise StanzaError("bad-request", text="a <prompt/> with the legacy address is required")
        try:
            localpart = escape_localpart(self.plugin.legacy_to_localpart(prompt))
            # MUST be a well-formed JID: it has to survive the JID parser (stringprep).
            jid = parse_jid(f"{localpart}@{self.gateway_jid}").full()
        except (ValueError, InvalidFormat) as exc:
            raise StanzaError("not-acceptable", text=f"not a valid address: {exc}") from exc
        query = domish.Element((NS_GATEWAY, "query"))
        query.addElement("jid", content=jid)
        return query
