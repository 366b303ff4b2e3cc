"""The gateway's own disco identity (XEP-0100 §4.1.1, §8 rules 1-2) and the
``jid\\20escaping`` feature (XEP-0106 §6): contact localparts are XEP-0106 escaped."""

from __future__ import annotations

from collections.abc import Iterable

from twisted.words.protocols.jabber.jid import JID

from gateway.xep.disco import Identity
from gateway.xep.escaping import NS_JID_ESCAPING


class GatewayIdentity:
    def __init__(self, gateway_jid: str, identity_type: str, name: str) -> None:
        self.gateway_jid = gateway_jid
        self.identity = Identity(category="gateway", type=identity_type, name=name)

    def disco_identities(self, requestor: JID, target: JID, node: str) -> Iterable[Identity]:
        return (self.identity,) if target.full() == self.gateway_jid and not node else ()

    def disco_features(self, requestor: JID, target: JID, node: str) -> Iterable[str]:
        return (NS_JID_ESCAPING,) if target.full() == self.gateway_jid and not node else ()
