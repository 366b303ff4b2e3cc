"""XEP-0092: Software Version of the gateway itself (the operating system is not disclosed)."""

from __future__ import annotations

from collections.abc import Iterable

from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from gateway import __version__
from gateway.router import IqRequest, IqRoute

NS_VERSION = "jabber:iq:version"


class VersionHandler:
    def __init__(self, gateway_jid: str) -> None:
        self.gateway_jid = gateway_jid

    def iq_routes(self) -> Iterable[IqRoute]:
        return (IqRoute("get", NS_VERSION, "query", self.version),)

    def disco_features(self, requestor: JID, target: JID, node: str) -> Iterable[str]:
        return (NS_VERSION,) if target.full() == self.gateway_jid and not node else ()

    def version(self, request: IqRequest) -> domish.Element:
        query = domish.Element((NS_VERSION, "query"))
        query.addElement("name", content="xmpp-gateway")
        query.addElement("version", content=__version__)
        return query
