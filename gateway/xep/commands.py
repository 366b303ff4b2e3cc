"""XEP-0050 Ad-Hoc Commands on the gateway JID, with the XEP-0133 admin nodes.

User commands: unregister, settings (the plugin's own fields), reconnect.
Admin commands (for the ``security.admins`` JIDs): get-registered-users-num,
get-online-users-num, delete-user, announce, end-user-session (XEP-0133 §4).
Other JIDs of the gateway (services, rooms) get their commands from a
:class:`TargetCommands` (gateway.xep.service_commands), which also adds some to the
gateway JID (the global ``configure``).
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.orm import Session
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.protocols.jabber.jid import JID, InvalidFormat
from twisted.words.xish import domish

from gateway.jids import parse_jid
from gateway.plugin import FormField
from gateway.router import IqAnswer, IqRequest, IqRoute
from gateway.session import Sessions
from gateway.stanzas import stanza
from gateway.store import repository
from gateway.xep.disco import DiscoItem, Identity
from gateway.xep.forms import NS_DATA_FORMS, Form, find_form, result_form, submitted_values

NS_COMMANDS = "http://jabber.org/protocol/commands"
NS_ADMIN = "http://jabber.org/protocol/admin"
MAX_OPEN_SESSIONS = 1000

#: A step gets the submitted values (None on the first call) and returns either a
#: form to fill in (status executing) or a completed answer.
Step = Callable[[str, Mapping[str, str] | None], Awaitable["Outcome"]]


@dataclass(frozen=True, slots=True)
class Outcome:
    form: domish.Element | None = None
    note: str = ""
    done: bool = True
    after: Callable[[], object] | None = None
    """Run right after the command's result is sent."""


@dataclass(frozen=True, slots=True)
class Command:
    node: str
    name: str
    run: Step
    admin: bool = False


class TargetCommands(Protocol):
    """Commands of JIDs other than the gateway's, and extra ones for the gateway JID."""

    def gateway_commands(self) -> list[Command]: ...

    def commands_for(self, target: JID) -> dict[str, Command]: ...


class CommandsHandler:
    def __init__(self, *, gateway_jid: str, admins: Iterable[str], sessions: Sessions,
                 settings_fields: Iterable[FormField] = (), targets: TargetCommands | None = None) -> None:
        self.gateway_jid = gateway_jid
        self.admins = frozenset(a.lower() for a in admins)
        self.sessions = sessions
        self.settings_fields = tuple(settings_fields)
        self.targets = targets
        self._open: OrderedDict[str, tuple[str, str, str]] = OrderedDict()
        commands = [
            Command("unregister", "Unregister from this gateway", self._unregister),
            Command("reconnect", "Reconnect to the legacy network", self._reconnect),
        ]
        if self.settings_fields:
            commands.append(Command("settings", "Settings", self._settings))
        if targets is not None:
            commands += targets.gateway_commands()
        commands += [
            Command(f"{NS_ADMIN}#get-registered-users-num", "Get number of registered users",
                    self._registered_count, admin=True),
            Command(f"{NS_ADMIN}#get-online-users-num", "Get number of online users",
                    self._online_count, admin=True),
            Command(f"{NS_ADMIN}#delete-user", "Delete user", self._delete_user, admin=True),
            Command(f"{NS_ADMIN}#announce", "Send announcement to online users", self._announce,
                    admin=True),
            Command(f"{NS_ADMIN}#end-user-session", "End user session", self._end_session, admin=True),
        ]
        self.commands = {command.node: command for command in commands}

    def iq_routes(self) -> Iterable[IqRoute]:
        return (IqRoute("set", NS_COMMANDS, "command", self.execute),)

    # -- discovery (XEP-0050 §3) -------------------------------------------------------

    def _commands(self, target: JID) -> dict[str, Command]:
        if target.full() == self.gateway_jid:
            return self.commands
        return self.targets.commands_for(target) if self.targets is not None else {}

    def _visible(self, requestor: JID, target: JID) -> list[Command]:
        admin = requestor.userhost().lower() in self.admins
        return [c for c in self._commands(target).values() if admin or not c.admin]

    def disco_features(self, requestor: JID, target: JID, node: str) -> Iterable[str]:
        commands = self._commands(target)
        if not commands:
            return ()
        if not node:
            return (NS_COMMANDS,)
        if node in commands:
            return (NS_COMMANDS, NS_DATA_FORMS)
        return ()

    def disco_identities(self, requestor: JID, target: JID, node: str) -> Iterable[Identity]:
        commands = self._commands(target)
        if not commands:
            return ()
        if node == NS_COMMANDS:
            return (Identity(category="automation", type="command-list"),)
        if (command := commands.get(node)) and command in self._visible(requestor, target):
            return (Identity(category="automation", type="command-node", name=command.name),)
        return ()

    def disco_items(self, requestor: JID, target: JID, node: str) -> Iterable[DiscoItem]:
        if node != NS_COMMANDS or not self._commands(target):
            return ()
        return [DiscoItem(jid=target.full(), node=c.node, name=c.name)
                for c in self._visible(requestor, target)]

    # -- execution (XEP-0050 §4) ------------------------------------------------------------

    async def execute(self, request: IqRequest) -> domish.Element | IqAnswer:
        commands = self._commands(request.recipient)
        if not commands:
            raise StanzaError("service-unavailable")
        payload = request.payload
        node = payload.getAttribute("node", "")
        command = commands.get(node)
        if command is None:
            raise StanzaError("item-not-found")
        user = request.sender.userhost()
        if command.admin and user.lower() not in self.admins:
            raise StanzaError("forbidden")
        action = payload.getAttribute("action", "execute")
        session_id = payload.getAttribute("sessionid")
        if session_id is not None:
            opened = self._open.get(session_id)
            if opened is None or opened != (request.recipient.full(), node, request.sender.full()):
                raise StanzaError("bad-request", text="unknown or expired session")
            if action == "cancel":
                del self._open[session_id]
                return _command(node, session_id, "canceled")
            form = find_form(payload)
            values = submitted_values(form) if form is not None else {}
            del self._open[session_id]
        else:
            if action not in ("execute", "next", "complete"):
                raise StanzaError("bad-request")
            values = None
            session_id = uuid.uuid4().hex
        outcome = await command.run(user, values)
        status = "completed" if outcome.done else "executing"
        if not outcome.done:
            self._open[session_id] = (request.recipient.full(), node, request.sender.full())
            while len(self._open) > MAX_OPEN_SESSIONS:
                self._open.popitem(last=False)
        reply = _command(node, session_id, status)
        if not outcome.done:
            actions = reply.addElement("actions")
            actions["execute"] = "complete"
            actions.addElement("complete")
        if outcome.note:
            note = reply.addElement("note", content=outcome.note)
            note["type"] = "info"
        if outcome.form is not None:
            reply.addChild(outcome.form)
        return IqAnswer(reply, outcome.after) if outcome.after is not None else reply

    # -- user commands ------------------------------------------------------------------------

    async def _require_registered(self, user: str) -> None:
        if await self.sessions.load_registration(user) is None:
            raise StanzaError("registration-required")

    async def _unregister(self, user: str, values: Mapping[str, str] | None) -> Outcome:
        await self._require_registered(user)
        if values is None:
            return Outcome(form=Form(
                title="Unregister", instructions="Remove your registration and all your data?",
                fields=(FormField(var="confirm", label="Yes, unregister", type="boolean", required=True),),
            ).to_element(), done=False)
        if values.get("confirm") not in ("1", "true"):
            return Outcome(note="Nothing was changed.")
        await self.sessions.unregistered(user)
        await self.sessions.database.run(repository.delete_registration, self.gateway_jid, user)

        def farewell() -> None:  # XEP-0100 §4.3.1: after the result
            for type_ in ("unsubscribe", "unsubscribed", "unavailable"):
                self.sessions.send(stanza("presence", sender=self.gateway_jid, recipient=user, type_=type_))

        return Outcome(note="You are unregistered.", after=farewell)

    async def _reconnect(self, user: str, values: Mapping[str, str] | None) -> Outcome:
        await self._require_registered(user)
        await self.sessions.end_session(user)
        # The user's clients answer the probe with their presence, which logs in again.
        self.sessions.send(stanza("presence", sender=self.gateway_jid, recipient=user, type_="probe"))
        return Outcome(note="Reconnecting to the legacy network.")

    async def _settings(self, user: str, values: Mapping[str, str] | None) -> Outcome:
        registration = await self.sessions.load_registration(user)
        if registration is None:
            raise StanzaError("registration-required")
        if values is None:
            return Outcome(form=Form(title="Settings", fields=self.settings_fields,
                                     values=registration.values).to_element(), done=False)
        updated = {spec.var: values[spec.var] for spec in self.settings_fields if spec.var in values}
        await self.sessions.database.run(_update_settings, self.gateway_jid, user, updated)
        return Outcome(note="Settings saved.")

    # -- XEP-0133 admin commands ----------------------------------------------------------------

    async def _registered_count(self, user: str, values: Mapping[str, str] | None) -> Outcome:
        count = await self.sessions.database.run(repository.count_registered_users, self.gateway_jid)
        return Outcome(form=result_form([("registeredusersnum", "Number of registered users", str(count))],
                                        form_type=NS_ADMIN))

    async def _online_count(self, user: str, values: Mapping[str, str] | None) -> Outcome:
        count = len(self.sessions.online_users())
        return Outcome(form=result_form([("onlineusersnum", "Number of online users", str(count))],
                                        form_type=NS_ADMIN))

    def _jid_form(self, title: str, var: str, label: str) -> Outcome:
        return Outcome(form=Form(title=title, form_type=NS_ADMIN, fields=(
            FormField(var=var, label=label, type="text-single", required=True),
        )).to_element(), done=False)

    async def _delete_user(self, user: str, values: Mapping[str, str] | None) -> Outcome:
        if values is None:
            return self._jid_form("Delete user", "accountjids", "The Jabber ID(s) to delete")
        deleted = []
        for target in _jids(values.get("accountjids", "")):
            await self.sessions.unregistered(target)
            if await self.sessions.database.run(repository.delete_registration, self.gateway_jid, target):
                deleted.append(target)
                for type_ in ("unsubscribe", "unsubscribed", "unavailable"):
                    self.sessions.send(stanza("presence", sender=self.gateway_jid, recipient=target,
                                              type_=type_))
        return Outcome(note=f"Deleted: {', '.join(deleted) or 'nobody'}")

    async def _end_session(self, user: str, values: Mapping[str, str] | None) -> Outcome:
        if values is None:
            return self._jid_form("End user session", "accountjids", "The Jabber ID(s) whose session to end")
        ended = [t for t in _jids(values.get("accountjids", "")) if await self.sessions.end_session(t)]
        return Outcome(note=f"Ended: {', '.join(ended) or 'no session'}")

    async def _announce(self, user: str, values: Mapping[str, str] | None) -> Outcome:
        if values is None:
            return Outcome(form=Form(title="Send announcement", form_type=NS_ADMIN, fields=(
                FormField(var="subject", label="Subject"),
                FormField(var="announcement", label="Announcement", type="text-multi", required=True),
            )).to_element(), done=False)
        text = values.get("announcement", "")
        if not text:
            raise StanzaError("bad-request", text="the announcement is empty")
        online = self.sessions.online_users()
        for target in online:
            message = stanza("message", sender=self.gateway_jid, recipient=target, type_="headline")
            if values.get("subject"):
                message.addElement("subject", content=values["subject"])
            message.addElement("body", content=text)
            self.sessions.send(message)
        return Outcome(note=f"Sent to {len(online)} online users.")


def _command(node: str, session_id: str, status: str) -> domish.Element:
    element = domish.Element((NS_COMMANDS, "command"))
    element["node"] = node
    element["sessionid"] = session_id
    element["status"] = status
    return element


def _jids(text: str) -> list[str]:
    out = []
    for line in text.replace(",", "\n").split():
        try:
            out.append(parse_jid(line).userhost())
        except InvalidFormat as exc:
            raise StanzaError("bad-request", text=f"{line!r} is not a JID") from exc
    return out


def _update_settings(session: Session, gateway: str, user: str, updated: Mapping[str, str]) -> None:
    record = repository.get_registration(session, gateway, user)
    if record is not None:
        repository.save_registration(session, gateway, user, record.legacy_id,
                                     record.credentials, {**record.settings, **updated})
