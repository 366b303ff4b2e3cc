"""XEP-0077 In-Band Registration of legacy accounts, as XEP-0100 §4.1-§4.3 uses it.

Reference checklist rows R4-R12, E1-E4 and U1-U3 (reference/xep0100-and-transports.md §1).
Fields come from the plugin; secret ones are encrypted at rest, never echoed, never logged.

Plugins with per-service registrations (:class:`gateway.plugin.ServiceRegistrations`, IRC
networks) are also registered with at ``service@gateway``, or at the gateway JID with the
plugin's ``service_field`` (``network``) filled in: one row per service, checked by the plugin
(a real login) before anything is stored; ``<remove/>`` there removes only that service.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from gateway.access import UserPolicy
from gateway.config import GatewayConfig
from gateway.plugin import FormField, LegacyError, LoginFailed, Plugin
from gateway.router import IqAnswer, IqRequest, IqRoute
from gateway.session import Sessions
from gateway.stanzas import stanza
from gateway.store import repository
from gateway.xep.escaping import unescape_localpart
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
        self.service_fields: tuple[FormField, ...] = tuple(getattr(plugin, "service_registration_fields", ()))
        self.service_field: FormField | None = getattr(plugin, "service_field", None) \
            if self.service_fields else None
        if self.service_field is not None:
            self.fields += (self.service_field,)
        self.secret_vars = frozenset(f.var for f in self.fields + self.service_fields if f.secret)

    def iq_routes(self) -> Iterable[IqRoute]:
        return (
            IqRoute("get", NS_REGISTER, "query", self.get),
            IqRoute("set", NS_REGISTER, "query", self.set),
        )

    def disco_features(self, requestor: JID, target: JID, node: str) -> Iterable[str]:
        if node:
            return ()
        if target.full() == self.gateway_jid or self.service_address(target) is not None:
            return (NS_REGISTER,)
        return ()

    def service_address(self, jid: JID) -> str | None:
        """The service a JID names when the plugin registers per service, else None."""
        if not self.service_fields or jid.host != self.gateway_jid or not jid.user or jid.resource:
            return None
        try:
            address = self.plugin.localpart_to_legacy(unescape_localpart(jid.user))
        except ValueError:
            return None
        return address if self.plugin.is_service(address) else None

    # -- get (R4, E1) ----------------------------------------------------------------

    async def get(self, request: IqRequest) -> domish.Element:
        service = self._check_target(request)
        user = request.sender.userhost()
        if not self.policy.allows(user):
            raise StanzaError("forbidden", text="this gateway does not serve your domain")
        if service is not None:
            return await self.service_form(user, service)
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
        service = self._check_target(request)
        user = request.sender.userhost()
        children = list(request.payload.elements())
        if any(child.name == "remove" for child in children):
            if len(children) != 1:
                raise StanzaError("bad-request", text="<remove/> must be the only child (XEP-0077 §3.2)")
            if service is not None:
                return await self._service_remove(user, service)
            return await self._remove(user)
        if not self.policy.allows(user):
            raise StanzaError("not-allowed", text="this gateway does not serve your domain")
        if service is not None:
            submitted = self._submitted(request.payload, self.service_fields)
            return await self.save_service(user, service, submitted)
        submitted = self._submitted(request.payload)
        if self.service_field is not None and submitted.get(self.service_field.var):
            # The gateway JID's form naming a service: that service's registration.
            named = submitted.pop(self.service_field.var)
            try:
                service = self.plugin.localpart_to_legacy(named)
            except ValueError as exc:
                raise StanzaError("not-acceptable", text=f"{named!r}: {exc}") from exc
            if not self.plugin.is_service(service):
                raise StanzaError("not-acceptable", text=f"{named!r} is not a service of this gateway")
            values = self.plugin.service_values(submitted)  # type: ignore[attr-defined]
            return await self.save_service(user, service, values)
        submitted.pop(self.service_field.var if self.service_field is not None else "", None)
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
        try:
            await self._store(user, legacy_id, values)
        except IntegrityError as exc:  # a service registration already holds that legacy id
            raise StanzaError("conflict", text=f"{legacy_id!r} is also one of your services") from exc
        self.sessions.registered.add(user)
        log.info("%s registered legacy account %s", user, legacy_id)
        if existing is not None:
            return None
        # R10: subscribe to the user's bare JID right after the result.
        return IqAnswer(None, lambda: self.sessions.send(
            stanza("presence", sender=self.gateway_jid, recipient=user, type_="subscribe")))

    def _check_target(self, request: IqRequest) -> str | None:
        """None for the gateway JID, the service for a service JID; anything else is refused."""
        if request.recipient.full() == self.gateway_jid:
            return None
        service = self.service_address(request.recipient)
        if service is None:
            raise StanzaError("service-unavailable")
        return service

    # -- per-service registrations ------------------------------------------------------------

    async def service_form(self, user: str, service: str) -> domish.Element:
        record = await self.sessions.database.run(repository.get_registration, self.gateway_jid, user,
                                                  service, service=service)
        values = self.sessions.registration_values(record) if record is not None else {}
        query = domish.Element((NS_REGISTER, "query"))
        if record is not None:
            query.addElement("registered")
        instructions = f"Your settings for {service}."
        query.addElement("instructions", content=instructions)
        query.addChild(Form(
            type="form", title=f"Register with {service}", instructions=instructions,
            form_type=NS_REGISTER, fields=self.service_fields,
            values={k: v for k, v in values.items() if k not in self.secret_vars},
        ).to_element())
        return query

    async def save_service(self, user: str, service: str, submitted: Mapping[str, str]) -> IqAnswer | None:
        """Create or change the user's registration with one service: checked by the plugin
        first (nothing stored on refusal), then stored, then the live session told."""
        record = await self.sessions.database.run(repository.get_registration, self.gateway_jid, user,
                                                  service, service=service)
        if record is None:
            values = self._new_values(submitted, self.service_fields)
        else:
            if not self.allow_changes:
                raise StanzaError("not-allowed", text="registration changes are disabled")
            stored = self.sessions.registration_values(record)
            values = self._changed_values(stored, submitted, self.service_fields)
        if record is None or self.sessions.registration_values(record) != values:
            try:
                await self.plugin.check_service_credentials(user, service, values)  # type: ignore[attr-defined]
            except LegacyError as exc:
                condition = exc.condition if exc.condition in ("remote-server-timeout", "not-authorized",
                                                               "not-allowed", "remote-server-not-found") \
                    else "not-acceptable"
                raise StanzaError(condition, text=exc.text or "the network refused these settings") from exc
        try:
            await self._store(user, service, values, service=service)
        except IntegrityError as exc:
            raise StanzaError("conflict", text=f"{service!r} is also your gateway account name") from exc
        first = user not in self.sessions.registered
        self.sessions.registered.add(user)
        log.info("%s registered with service %s", user, service)
        await self.sessions.service_changed(user, service, values)
        if not first:
            return None
        # Logon by presence needs the user's presence: subscribe as for a new registration.
        return IqAnswer(None, lambda: self.sessions.send(
            stanza("presence", sender=self.gateway_jid, recipient=user, type_="subscribe")))

    async def _service_remove(self, user: str, service: str) -> None:
        deleted = await self.sessions.database.run(repository.delete_registration, self.gateway_jid, user,
                                                   service, service=service)
        if not deleted:
            raise StanzaError("registration-required")
        log.info("%s unregistered from service %s", user, service)
        await self.sessions.room_settings.forget_service(user, service)
        if not await self.sessions.database.run(repository.list_registrations, self.gateway_jid, user):
            self.sessions.registered.discard(user)
        await self.sessions.service_changed(user, service, {})
        return None

    def _submitted(self, query: domish.Element,
                   fields: tuple[FormField, ...] | None = None) -> dict[str, str]:
        """R6: an x:data form wins over the bare XEP-0077 fields (XEP-0077 §4 precedence)."""
        form = find_form(query)
        if form is not None:
            values = submitted_values(form)
            form_type = values.pop("FORM_TYPE", NS_REGISTER)
            if form_type != NS_REGISTER:
                raise StanzaError("bad-request", text=f"unexpected FORM_TYPE {form_type!r}")
        else:
            values = {child.name: str(child) for child in query.elements() if child.uri == NS_REGISTER}
        known = {spec.var for spec in (self.fields if fields is None else fields)}
        return {var: value.strip() if var not in self.secret_vars else value
                for var, value in values.items() if var in known}

    def _new_values(self, submitted: Mapping[str, str],
                    fields: tuple[FormField, ...] | None = None) -> dict[str, str]:
        values: dict[str, str] = {}
        for spec in self.fields if fields is None else fields:
            if spec is self.service_field:
                continue
            value = submitted.get(spec.var, "") or spec.default
            if spec.required and not value:
                # R8: a new registration with a missing field or an empty password.
                raise StanzaError("not-acceptable", text=f"{spec.label} is required")
            if spec.options and value and value not in spec.options:
                raise StanzaError("not-acceptable", text=f"{spec.label}: {value!r} is not a choice")
            if value:
                values[spec.var] = value
        return values

    def _changed_values(self, stored: Mapping[str, str], submitted: Mapping[str, str],
                        fields: tuple[FormField, ...] | None = None) -> dict[str, str]:
        values = dict(stored)
        for spec in self.fields if fields is None else fields:
            if spec.var not in submitted:
                continue
            value = submitted[spec.var]
            if spec.secret and not value:
                continue  # E3: an empty password never blanks the stored one
            if spec.required and not value:
                raise StanzaError("bad-request", text=f"{spec.label} is required")
            values[spec.var] = value
        return values

    async def _store(self, user: str, legacy_id: str, values: Mapping[str, str], *,
                     service: str = "") -> None:
        secrets = {k: v for k, v in values.items() if k in self.secret_vars}
        settings = {k: v for k, v in values.items() if k not in self.secret_vars}
        if secrets and self.sessions.cipher is None:
            raise RuntimeError("secret registration fields but no credentials key")
        credentials = self.sessions.cipher.encrypt(secrets) if secrets and self.sessions.cipher else None
        if service:
            await self.sessions.database.run(repository.save_registration, self.gateway_jid, user, legacy_id,
                                             credentials, settings, service=service)
            return
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
        repository.delete_registration(session, gateway, user, existing.legacy_id, service="")
    repository.save_registration(session, gateway, user, legacy_id, credentials, settings)
