"""XEP-0050 commands on service and room JIDs, and the user's global ``configure``.

Node and field names follow Biboumi (reference/biboumi.md §2.6) so that scripts carry over:

* on the gateway JID: ``configure`` (the user's defaults: ``max_history_length``,
  ``record_history``, ``persistent``) and ``disconnect-from-<type>-server``;
* on a service JID (``irc.example.net@gateway``): ``configure`` (the plugin's per-service
  registration form, saved as that registration) and ``get-<type>-connection-info``;
* on a room JID (``#chan%irc.example.net@gateway``): ``configure`` (``record_history``,
  ``max_history_length``, ``encoding_in``, ``encoding_out``, ``persistent``), the same form as
  ``muc#owner`` (gateway.xep.muc_owner).

``<type>`` is the plugin's identity type (``irc``). The room and global settings live in
:class:`gateway.room_settings.RoomSettings`; the plugin hears of changes through its
session's ``settings_changed``.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.protocols.jabber.jid import JID

from gateway.plugin import FormField, LegacyError
from gateway.session import Sessions
from gateway.xep.commands import Command, Outcome
from gateway.xep.forms import Form
from gateway.xep.muc import MucHandler
from gateway.xep.register import RegisterHandler

TRUE = ("1", "true")

GLOBAL_FIELDS = (
    FormField(var="max_history_length", label="Max history length", default="20",
              description="Lines of history sent when you join a room"),
    FormField(var="record_history", label="Record history", type="boolean", default="true"),
    FormField(var="persistent", label="Make all channels persistent", type="boolean", default="false"),
)

ROOM_FIELDS = (
    FormField(var="record_history", label="Record history for this channel", type="list-single",
              options=("unset", "true", "false"), default="unset"),
    FormField(var="max_history_length", label="Max history length",
              description="Empty: your global setting"),
    FormField(var="encoding_out", label="Out encoding", description="Empty: UTF-8"),
    FormField(var="encoding_in", label="In encoding", description="Empty: the network's"),
    FormField(var="persistent", label="Persistent", type="boolean", default="false",
              description="Stay in this channel while you are offline"),
)


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in TRUE


def _line_charset(charset: str) -> bool:
    """A charset legacy lines can use: known, a text codec, ASCII-compatible (no UTF-16/32)."""
    try:
        return "\r\n :".encode(charset) == b"\r\n :"
    except (LookupError, UnicodeError):
        return False


def _history_length(value: str) -> str:
    value = value.strip()
    if value and not value.isdigit():
        raise StanzaError("not-acceptable", text="max_history_length: a number of lines")
    return value


class ServiceCommands:
    """The commands of service and room JIDs (given to :class:`CommandsHandler`)."""

    def __init__(self, *, sessions: Sessions, muc: MucHandler, register: RegisterHandler,
                 identity_type: str) -> None:
        self.sessions = sessions
        self.muc = muc
        self.register = register
        self.identity_type = identity_type

    # -- which commands a JID has ------------------------------------------------------------

    def gateway_commands(self) -> list[Command]:
        """Only for plugins with per-service registrations (IRC): the Biboumi-like bouncer."""
        if not self.register.service_fields:
            return []
        return [
            Command("configure", "Configure some global default settings", self._global),
            Command(f"disconnect-from-{self.identity_type}-server",
                    f"Disconnect from an {self.identity_type.upper()} server", self._disconnect),
        ]

    def allowed(self, user: str) -> None:
        """allowed_users applies here too: nobody else may store settings on this gateway."""
        if not self.sessions.policy.allows(user):
            raise StanzaError("forbidden", text="this gateway does not serve your domain")

    def commands_for(self, target: JID) -> dict[str, Command]:
        if target.resource:
            return {}
        room = self.muc.room_address(target)
        if room is not None:
            return {"configure": Command("configure", f"Configure {room}", partial(self._room, room))}
        service = self.register.service_address(target)
        if service is not None:
            return {
                "configure": Command("configure", f"Configure {service}", partial(self._service, service)),
                f"get-{self.identity_type}-connection-info": Command(
                    f"get-{self.identity_type}-connection-info", "Get connection information",
                    partial(self._info, service)),
            }
        return {}

    # -- gateway JID -----------------------------------------------------------------------------

    async def _global(self, user: str, values: Mapping[str, str] | None) -> Outcome:
        self.allowed(user)
        await self.sessions.room_settings.load()
        current = self.sessions.room_settings.defaults(user)
        if values is None:
            # The admin's default (``history_length``) unless the user set their own.
            shown = {"persistent": "true" if current.persistent else "false",
                     "max_history_length": str(self.sessions.room_settings.default_max_history_length),
                     **current.settings}
            return Outcome(form=Form(title="Configure some global default settings.",
                                     instructions="Your defaults for every room.", fields=GLOBAL_FIELDS,
                                     values=shown).to_element(), done=False)
        settings = dict(current.settings)
        if "max_history_length" in values:
            settings["max_history_length"] = _history_length(values["max_history_length"])
        if "record_history" in values:
            settings["record_history"] = "true" if _flag(values["record_history"]) else "false"
        persistent = _flag(values["persistent"]) if "persistent" in values else current.persistent
        await self.sessions.room_settings.save(user, "", "", persistent=persistent, settings=settings)
        state = self.sessions.users.get(user)
        if state is not None and persistent:
            # The rooms the user is in now are persistent from now on: rejoined after a restart.
            for room in list(state.rooms.values()):
                if room.joined:
                    self.muc.remember(state, room)
        elif state is not None:
            for address in list(state.rooms):  # rooms kept only by the old default: left now
                await self.muc.leave_unattended_room(state, address)
        return Outcome(note="Configuration successfully applied.")

    async def _disconnect(self, user: str, values: Mapping[str, str] | None) -> Outcome:
        state = self.sessions.users.get(user)
        if values is None:
            return Outcome(form=Form(title="Disconnect from servers", fields=(
                FormField(var=f"{self.identity_type}-servers", label="Servers to leave, one per line",
                          type="text-multi", required=True),
                FormField(var="quit-message", label="Quit message", default="Disconnected by user"),
            )).to_element(), done=False)
        names = values.get(f"{self.identity_type}-servers", "").split()
        message = values.get("quit-message", "") or "Disconnected by user"
        hook = getattr(state.session, "disconnect_service", None) if state is not None else None
        count = 0
        for name in names:
            if hook is None:
                break
            try:
                count += bool(await hook(name, message))
            except (LegacyError, NotImplementedError):
                continue
        return Outcome(note=f"{user} was disconnected from {count} {self.identity_type.upper()} server(s).")

    # -- service JID -----------------------------------------------------------------------------

    async def _service(self, service: str, user: str, values: Mapping[str, str] | None) -> Outcome:
        self.allowed(user)
        if values is None:
            form = await self.register.service_form(user, service)
            return Outcome(form=next(form.elements("jabber:x:data", "x")), done=False)
        known = {spec.var for spec in self.register.service_fields}
        submitted = {k: v for k, v in values.items() if k in known}
        answer = await self.register.save_service(user, service, submitted)
        after = answer.after if answer is not None else None
        return Outcome(note="Configuration successfully applied.", after=after)

    async def _info(self, service: str, user: str, values: Mapping[str, str] | None) -> Outcome:
        state = self.sessions.users.get(user)
        hook = getattr(state.session, "service_info", None) if state is not None else None
        if hook is None:
            return Outcome(note=f"You are not connected to the {self.identity_type.upper()} server {service}")
        try:
            return Outcome(note=await hook(service))
        except NotImplementedError as exc:
            raise StanzaError("feature-not-implemented") from exc

    # -- room JID --------------------------------------------------------------------------------

    def room_form(self, user: str, room: str) -> Form:
        config = self.sessions.room_settings.get(user, room)
        shown = {**config.settings, "persistent": "true" if config.persistent else "false"}
        shown.setdefault("record_history", "unset")
        return Form(title=f"Configure the channel {room}", fields=ROOM_FIELDS, values=shown)

    async def apply_room(self, user: str, room: str, values: Mapping[str, str]) -> None:
        """Store a room's form and apply it: to the legacy session (encodings) and to the room
        itself (no longer persistent and nobody in it: left now)."""
        self.allowed(user)
        config = self.sessions.room_settings.get(user, room)
        settings = dict(config.settings)
        if "record_history" in values:
            choice = values["record_history"].strip().lower()
            if choice not in ("unset", "true", "false", "1", "0", ""):
                raise StanzaError("not-acceptable", text="record_history: unset, true or false")
            settings["record_history"] = {"1": "true", "0": "false", "unset": ""}.get(choice, choice)
        if "max_history_length" in values:
            settings["max_history_length"] = _history_length(values["max_history_length"])
        for key in ("encoding_in", "encoding_out"):
            if key in values:
                charset = values[key].strip()
                if charset and not _line_charset(charset):
                    raise StanzaError("not-acceptable",
                                      text=f"{key}: {charset!r} is not an ASCII-compatible charset")
                settings[key] = charset
        persistent = _flag(values["persistent"]) if "persistent" in values else config.persistent
        state = self.sessions.users.get(user)
        joined = state.rooms.get(room) if state is not None else None
        if joined is not None:
            settings["nick"] = joined.nick  # the nick to rejoin with after a restart
        service_of = getattr(self.sessions.plugin, "service_of", None)
        service = service_of(room) if service_of is not None else ""
        await self.sessions.room_settings.save(user, room, service, persistent=persistent, settings=settings)
        await self.sessions.service_changed(user, room, self.sessions.room_settings.get(user, room).settings)
        if state is not None and not persistent:
            await self.muc.leave_unattended_room(state, room)

    async def _room(self, room: str, user: str, values: Mapping[str, str] | None) -> Outcome:
        self.allowed(user)
        await self.sessions.room_settings.load()
        if values is None:
            return Outcome(form=self.room_form(user, room).to_element(), done=False)
        await self.apply_room(user, room, values)
        return Outcome(note="Configuration successfully applied.")


__all__ = ["GLOBAL_FIELDS", "ROOM_FIELDS", "ServiceCommands"]
