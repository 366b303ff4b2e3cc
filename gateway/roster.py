"""Roster population for legacy contacts (XEP-0100 §7; reference §3.3).

Strategy, best first:

1. XEP-0356 privileged roster, when the server granted ``roster`` ``set``/``both``
   (announced by a ``<privilege/>`` message after the handshake, §4.2): the
   contacts are written into the user's roster, one item per roster set
   (RFC 6121 §2.1.5 allows exactly one item per set).
2. XEP-0144 roster item exchange, to each resource that advertises ``rosterx``.
3. One ``subscribe`` per contact not yet subscribed, never an unsolicited ``subscribed``.

Contacts and their subscription state are kept in the ``contact`` table.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from sqlalchemy.orm import Session
from twisted.internet.defer import Deferred
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish

from gateway.plugin import LegacyContact
from gateway.router import Stanza
from gateway.stanzas import stanza
from gateway.store import repository
from gateway.store.db import Database

log = logging.getLogger(__name__)

NS_PRIVILEGE = "urn:xmpp:privilege:2"
NS_ROSTER = "jabber:iq:roster"
NS_ROSTERX = "http://jabber.org/protocol/rosterx"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"

Request = Callable[[domish.Element], Deferred[domish.Element]]


class RosterManager:
    def __init__(self, *, gateway_jid: str, send: Callable[[domish.Element], None], request: Request,
                 database: Database, plugin_name: str) -> None:
        self.gateway_jid = gateway_jid
        self.send = send
        self.request = request
        self.database = database
        self.group = plugin_name
        self.roster_access: dict[str, str] = {}
        """Server domain -> granted roster permission (``get``, ``set``, ``both``)."""

    # -- XEP-0356 §4.2 privilege announcement --------------------------------------

    def on_message(self, message: Stanza) -> bool:
        privilege = _child(message.element, NS_PRIVILEGE, "privilege")
        if privilege is None or message.recipient.full() != self.gateway_jid or message.sender.user:
            return False
        domain = message.sender.host
        self.roster_access.pop(domain, None)
        for perm in privilege.elements(NS_PRIVILEGE, "perm"):
            if perm.getAttribute("access") == "roster" and perm.getAttribute("type") != "none":
                self.roster_access[domain] = perm.getAttribute("type", "none")
        log.info("%s granted roster privilege: %s", domain, self.roster_access.get(domain, "none"))
        return True

    def may_set_roster(self, user: str) -> bool:
        return self.roster_access.get(user.partition("@")[2]) in ("set", "both")

    # -- contact table ---------------------------------------------------------------------

    async def remember_contact(self, user: str, address: str, subscription: str, name: str = "") -> None:
        await self.database.run(_remember, self.gateway_jid, user, address, name, subscription)

    async def forget_contact(self, user: str, address: str) -> None:
        await self.database.run(_forget, self.gateway_jid, user, address)

    async def known_contacts(self, user: str) -> list[str]:
        return sorted(await self.database.run(_known_contacts, self.gateway_jid, user))

    def remove_items(self, user: str, jids: Sequence[str]) -> None:
        """Remove contacts from the user's roster, when the server lets us (XEP-0356)."""
        if not self.may_set_roster(user):
            return
        for jid in jids:
            iq = stanza("iq", sender=self.gateway_jid, recipient=user, type_="set")
            item = iq.addElement((NS_ROSTER, "query")).addElement("item")
            item["jid"] = jid
            item["subscription"] = "remove"
            self.request(iq).addErrback(
                lambda f, jid=jid: log.info("roster removal of %s refused: %s", jid, f.getErrorMessage())
            )

    # -- population ----------------------------------------------------------------------

    async def populate(self, user: str, resources: Sequence[str],
                       items: Sequence[tuple[str, LegacyContact]]) -> str:
        """Put the legacy contacts into the user's roster; return the strategy used."""
        if not items:
            return "none"
        known = await self.database.run(_known_contacts, self.gateway_jid, user)
        if self.may_set_roster(user):
            for jid, contact in items:
                iq = stanza("iq", sender=self.gateway_jid, recipient=user, type_="set")
                item = iq.addElement((NS_ROSTER, "query")).addElement("item")
                item["jid"] = jid
                item["subscription"] = "both"
                if contact.name:
                    item["name"] = contact.name
                item.addElement("group", content=self.group)
                try:
                    await self.request(iq)
                except StanzaError as exc:
                    log.warning("privileged roster set for %s refused (%s); falling back",
                                user, exc.condition)
                    break
                await self.remember_contact(user, contact.address, "both", contact.name)
            else:
                return "privilege"
        rosterx = [resource for resource in resources if await self._supports_rosterx(resource)]
        if rosterx:
            for resource in rosterx:
                message = stanza("message", sender=self.gateway_jid, recipient=resource)
                exchange = message.addElement((NS_ROSTERX, "x"))
                for jid, contact in items:
                    item = exchange.addElement("item")
                    item["action"] = "add"
                    item["jid"] = jid
                    if contact.name:
                        item["name"] = contact.name
                    item.addElement("group", content=self.group)
                self.send(message)
            return "rosterx"
        for jid, contact in items:
            if known.get(contact.address) in ("to", "both"):
                continue
            self.send(stanza("presence", sender=jid, recipient=user, type_="subscribe"))
            await self.remember_contact(user, contact.address, known.get(contact.address, "none"),
                                        contact.name)
        return "subscribe"

    async def _supports_rosterx(self, resource: str) -> bool:
        iq = stanza("iq", sender=self.gateway_jid, recipient=resource, type_="get")
        iq.addElement((NS_DISCO_INFO, "query"))
        try:
            answer = await self.request(iq)
        except StanzaError:
            return False
        query = _child(answer, NS_DISCO_INFO, "query")
        return query is not None and any(
            feature.getAttribute("var") == NS_ROSTERX for feature in query.elements(NS_DISCO_INFO, "feature")
        )


def _child(element: domish.Element, uri: str, name: str) -> domish.Element | None:
    for child in element.elements(uri, name):
        return child
    return None


def _remember(session: Session, gateway: str, user: str, address: str, name: str,
              subscription: str) -> None:
    record = repository.get_registration(session, gateway, user)
    if record is not None:
        repository.upsert_contact(session, record.id, address, name, subscription)


def _forget(session: Session, gateway: str, user: str, address: str) -> None:
    record = repository.get_registration(session, gateway, user)
    if record is not None:
        repository.delete_contact(session, record.id, address)


def _known_contacts(session: Session, gateway: str, user: str) -> dict[str, str]:
    record = repository.get_registration(session, gateway, user)
    if record is None:
        return {}
    return {c.legacy_address: c.subscription for c in repository.list_contacts(session, record.id)}
