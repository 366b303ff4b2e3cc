"""XEP-0077 In-Band Registration of legacy accounts, as XEP-0100 §4.1-§4.3 uses it.

Reference checklist rows R4-R12, E1-E4 and U1-U3 (reference/xep0100-and-transports.md §1).
Fields come from the plugin; secret ones are encrypted at rest, never echoed, never logged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from sqlalchemy.orm import Session
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from gateway.access import UserPolicy
from gateway.config import GatewayConfig
from gateway.plugin import FormField, LoginFailed, Plugin
from gateway.router import IqAnswer, IqRequest, IqRoute
from gateway.session import Sessions
from gateway.stanzas import stanza
from gateway.store import repository
from gateway.xep.forms import Form, find_form, submitted_values

log = logging.getLogger(__name__)

NS_REGISTER = "jabber:iq:register"
#: XEP-0077 §14.1 field elements that a plugin field may map to (R5: map onto standard fields).
STANDARD_FIELDS = frozenset({
    "username", "nick", "password", "name", "first", "last", "email", "address", "city",
    "state", "zip", "phone", "url", "date", "misc", "text", "key",
})


class RegisterHandler:
    def __init__(self, *, gateway: GatewayConfig, plugin: Plugin, sessions: Sessions) -> None:
        self.gateway_jid = gateway.jid
        self.allow_changes = gateway.registration_changes
        self.policy = UserPolicy(gateway.allowed_users)
        self.plugin = plugin
        self.sessions = sessions
        self.fields: tuple[FormField, ...] = tuple(plugin.registration_fields)
        self.secret_vars = frozenset(f.var for f in self.fields if f.secret)

    def iq_routes(self) -> Iterable[IqRoute]:
        return (
            IqRoute("get", NS_REGISTER, "query", self.get),
            IqRoute("set", NS_REGISTER, "query", self.set),
        )

    def disco_features(self, requestor: JID, target: JID, node: str) -> Iterable[str]:
        return (NS_REGISTER,) if target.full() == self.gateway_jid and not node else ()

    # -- get (R4, E1) ----------------------------------------------------------------

    async def get(self, request: IqRequest) -> domish.Element:
        self._check_target(request)
        user = request.sender.userhost()
        if not self.policy.allows(user):
            raise StanzaError("forbidden", text="this gateway does not serve your domain")
        registration = await self.sessions.load_registration(user)
        values: Mapping[str, str] = registration.values if registration is not None else {}
        query = domish.Element((NS_REGISTER, "query"))
        if registration is not None:
            query.addElement("registered")
        query.addElement("instructions", content=self.plugin.instructions)
        for spec in self.fields:
            if spec.var in STANDARD_FIELDS:
                # E1: current values, but never the password.
                value = "" if spec.secret else values.get(spec.var, "")
                query.addElement(spec.var, content=value)
        query.addChild(Form(
            type="form", title=f"Register with {self.plugin.name}", instructions=self.plugin.instructions,
            form_type=NS_REGISTER, fields=self.fields,
            values={k: v for k, v in values.items() if k not in self.secret_vars},
        ).to_element())
        return query

    # -- set (R6-R12, E2-E4, U1-U3) -------------------------------------------------------

    async def set(self, request: IqRequest) -> IqAnswer | None:
        self._check_target(request)
        user = request.sender.userhost()
        children = list(request.payload.elements())
        if any(child.name == "remove" for child in children):
            if len(children) != 1:
                raise StanzaError("bad-request", text="<remove/> must be the only child (XEP-0077 §3.2)")
            return await self._remove(user)
        if not self.policy.allows(user):
            raise StanzaError("not-allowed", text="this gateway does not serve your domain")
        submitted = self._submitted(request.payload)
        existing = await self.sessions.load_registration(user)
        if existing is None:
            values = self._new_values(submitted)
        else:
            if not self.allow_changes:
                raise StanzaError("not-allowed", text="registration changes are disabled")
            values = self._changed_values(existing.values, submitted)
        try:
            legacy_id = self.plugin.legacy_id_for(values)
        except ValueError as exc:
            raise StanzaError("not-acceptable", text=str(exc)) from exc
        if existing is None or dict(existing.values) != values:
            try:
                await self.plugin.check_credentials(user, values)
            except LoginFailed as exc:
                # R7 / E2: refused by the legacy network; nothing stored or changed.
                timeout = exc.condition == "remote-server-timeout"
                text = exc.text or "the legacy network refused these credentials"
                condition = "remote-server-timeout" if timeout else "not-acceptable"
                raise StanzaError(condition, text=text) from exc
        await self._store(user, legacy_id, values)
        self.sessions.registered.add(user)
        log.info("%s registered legacy account %s", user, legacy_id)
        if existing is not None:
            return None
        # R10: subscribe to the user's bare JID right after the result.
        return IqAnswer(None, lambda: self.sessions.send(
            stanza("presence", sender=self.gateway_jid, recipient=user, type_="subscribe")))

    def _check_target(self, request: IqRequest) -> None:
        if request.recipient.full() != self.gateway_jid:
            raise StanzaError("service-unavailable")

    def _submitted(self, query: domish.Element) -> dict[str, str]:
        """R6: an x:data form wins over the bare XEP-0077 fields (XEP-0077 §4 precedence)."""
        form = find_form(query)
        if form is not None:
            values = submitted_values(form)
            form_type = values.pop("FORM_TYPE", NS_REGISTER)
            if form_type != NS_REGISTER:
                raise StanzaError("bad-request", text=f"unexpected FORM_TYPE {form_type!r}")
        else:
            values = {child.name: str(child) for child in query.elements() if child.uri == NS_REGISTER}
        known = {spec.var for spec in self.fields}
        return {var: value.strip() if var not in self.secret_vars else value
                for var, value in values.items() if var in known}

    def _new_values(self, submitted: Mapping[str, str]) -> dict[str, str]:
        values: dict[str, str] = {}
        for spec in self.fields:
            value = submitted.get(spec.var, "") or spec.default
            if spec.required and not value:
                # R8: a new registration with a missing field or an empty password.
                raise StanzaError("not-acceptable", text=f"{spec.label} is required")
            if spec.options and value and value not in spec.options:
                raise StanzaError("not-acceptable", text=f"{spec.label}: {value!r} is not a choice")
            if value:
                values[spec.var] = value
        return values

    def _changed_values(self, stored: Mapping[str, str], submitted: Mapping[str, str]) -> dict[str, str]:
        values = dict(stored)
        for spec in self.fields:
            if spec.var not in submitted:
                continue
            value = submitted[spec.var]
            if spec.secret and not value:
                continue  # E3: an empty password never blanks the stored one
            if spec.required and not value:
                raise StanzaError("bad-request", text=f"{spec.label} is required")
            values[spec.var] = value
        return values

    async def _store(self, user: str, legacy_id: str, values: Mapping[str, str]) -> None:
        secrets = {k: v for k, v in values.items() if k in self.secret_vars}
        settings = {k: v for k, v in values.items() if k not in self.secret_vars}
        if secrets and self.sessions.cipher is None:
            raise RuntimeError("secret registration fields but no credentials key")
        credentials = self.sessions.cipher.encrypt(secrets) if secrets and self.sessions.cipher else None
        await self.sessions.database.run(_replace_registration, self.gateway_jid, user, legacy_id,
                                         credentials, settings)

    async def _remove(self, user: str) -> IqAnswer:
        """XEP-0100 §4.3.1 in order: legacy logout, data deleted, result, unsubscribe,
        unsubscribed, unavailable (checklist U1)."""
        if user not in self.sessions.registered and await self.sessions.load_registration(user) is None:
            raise StanzaError("registration-required")
        await self.sessions.unregistered(user)
        contacts = await self.sessions.roster.known_contacts(user)
        await self.sessions.database.run(repository.delete_registration, self.gateway_jid, user)
        log.info("%s unregistered", user)

        def farewell() -> None:
            for type_ in ("unsubscribe", "unsubscribed", "unavailable"):
                self.sessions.send(stanza("presence", sender=self.gateway_jid, recipient=user, type_=type_))
            # Checklist U4 (our extension): with roster privilege, clean the roster ourselves.
            self.sessions.roster.remove_items(user, [self.sessions.contact_jid(a) for a in contacts])

        return IqAnswer(None, farewell)


def _replace_registration(session: Session, gateway: str, user: str, legacy_id: str,
                          credentials: bytes | None, settings: dict[str, str]) -> None:
    """One registration per user and gateway: a changed legacy id replaces the old row."""
    existing = repository.get_registration(session, gateway, user)
    if existing is not None and existing.legacy_id != legacy_id:
        repository.delete_registration(session, gateway, user, existing.legacy_id)
    repository.save_registration(session, gateway, user, legacy_id, credentials, settings)
