"""XEP-0199: XMPP Ping. Any JID this component serves answers a ping (§4.2 / §4.3)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from twisted.words.protocols.jabber.jid import JID

from gateway.router import IqRequest, IqRoute

NS_PING = "urn:xmpp:ping"


class PingHandler:
    def __init__(self, checks: Iterable[Callable[[IqRequest], None]] = ()) -> None:
        self.checks = tuple(checks)
        """Each may raise a StanzaError to refuse a ping (XEP-0410 self-ping of a room)."""

    def iq_routes(self) -> Iterable[IqRoute]:
        return (IqRoute("get", NS_PING, "ping", self.ping),)

    def disco_features(self, requestor: JID, target: JID, node: str) -> Iterable[str]:
        return () if node else (NS_PING,)

    def ping(self, request: IqRequest) -> None:
        for check in self.checks:
            check(request)
        return None
