"""A test plugin with an in-process fake legacy network (issue 2 item 5).

It exercises the whole plugin API with no legacy server: accounts and contacts
come from the plugin options, every call the core makes is recorded in
:attr:`FakeNetwork.log` for assertions, and tests inject legacy events through
:meth:`FakeNetPlugin.deliver` and friends. Load it with
``plugin = "tests.fakenet:FakeNetPlugin"``.

Options: ``accounts`` (username -> password), ``contacts`` (username -> list of
addresses), ``offline`` (addresses whose messages are refused), ``unreachable``
(every login and credential check times out as if the service were down),
``message_during_login`` (a message from ``carol`` emitted before login returns),
``allows_unregistered`` (rooms without registration), ``rooms`` (room -> occupants and
subject), ``forced_nick`` (the network renames whoever joins).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.plugin import (
    ContactAdded,
    ContactList,
    ContactPresence,
    ContactRemoved,
    FormField,
    LegacyContact,
    LegacyError,
    LoginFailed,
    MessageReceived,
    Occupant,
    OccupantRenamed,
    OutgoingMessage,
    PluginContext,
    PresenceUpdate,
    Registration,
    RoomJoined,
    RoomJoinFailed,
    SentLine,
    SessionLost,
    SubjectChanged,
)


@dataclass
class FakeNetwork:
    accounts: dict[str, str]
    contacts: dict[str, list[str]]
    offline: set[str]
    unreachable: bool = False
    log: list[tuple[str, ...]] = field(default_factory=list)
    sessions: dict[str, FakeSession] = field(default_factory=dict)

    def check(self, values: Mapping[str, str]) -> None:
        if self.unreachable:
            raise LoginFailed("remote-server-timeout", "fake network unreachable")
        if self.accounts.get(values.get("username", "")) != values.get("password"):
            raise LoginFailed("not-authorized", "wrong username or password")


class FakeSession:
    def __init__(self, plugin: FakeNetPlugin, registration: Registration) -> None:
        self.plugin = plugin
        self.user = registration.user
        self.username = registration.values.get("username", "")
        self.nick = self.username

    @property
    def log(self) -> list[tuple[str, ...]]:
        return self.plugin.network.log

    async def send_message(self, message: OutgoingMessage) -> str:
        self.log.append(("send", self.user, message.contact, message.body))
        if message.contact in self.plugin.network.offline:
            raise LegacyError("service-unavailable", f"{message.contact} is offline")
        return f"legacy-{len(self.log)}"

    async def set_presence(self, presence: PresenceUpdate) -> None:
        self.log.append(("presence", self.user, presence.show or ("available" if presence.available
                                                                  else "unavailable")))

    async def add_contact(self, contact: str) -> bool:
        self.log.append(("add", self.user, contact))
        return contact not in self.plugin.network.offline

    async def remove_contact(self, contact: str) -> None:
        self.log.append(("remove", self.user, contact))

    async def logout(self) -> None:
        self.log.append(("logout", self.user))
        self.plugin.network.sessions.pop(self.user, None)

    # -- rooms: "#name" addresses; "#full", "#banned" refuse, "#secret" needs the key "key" --

    async def join_room(self, room: str, nick: str, password: str) -> None:
        self.log.append(("join", self.user, room, nick))
        events = self.plugin.context.events
        refusals = {"#full": ("service-unavailable", "channel is full"),
                    "#banned": ("forbidden", "you are banned")}
        if room in refusals:
            condition, text = refusals[room]
            events.emit(RoomJoinFailed(user=self.user, room=room, condition=condition, text=text))
            return
        if room == "#secret" and password != "key":
            events.emit(RoomJoinFailed(user=self.user, room=room, condition="not-authorized"))
            return
        self.nick = self.plugin.context.options.get("forced_nick", nick)
        spec = self.plugin.context.options.get("rooms", {}).get(room, {})
        occupants = tuple(Occupant(nick=n, role="moderator" if n.startswith("@") else "participant")
                          for n in spec.get("occupants", []))
        events.emit(RoomJoined(user=self.user, room=room, nick=self.nick, occupants=occupants,
                               subject=spec.get("subject", "")))

    async def leave_room(self, room: str, reason: str) -> None:
        self.log.append(("part", self.user, room, reason))

    async def send_room_message(self, room: str, body: str) -> list[SentLine]:
        lines = [line for line in body.splitlines() if line]
        for line in lines:
            self.log.append(("say", self.user, room, line))
        return [SentLine(line, f"line-{len(self.log)}-{i}") for i, line in enumerate(lines)]

    async def set_subject(self, room: str, subject: str) -> None:
        self.plugin.context.events.emit(SubjectChanged(user=self.user, room=room, subject=subject,
                                                       nick=self.nick))

    async def change_nick(self, room: str, nick: str) -> None:
        old, self.nick = self.nick, nick
        self.plugin.context.events.emit(OccupantRenamed(user=self.user, room=room, old_nick=old,
                                                        new_nick=nick))


class FakeNetPlugin:
    name = "Fake"
    identity_type = "fake"
    instructions = "Enter your fake-network username and password."
    prompt = "Enter the fake-network address of your contact."
    registration_fields = (
        FormField(var="username", label="Username", required=True),
        FormField(var="password", label="Password", type="text-private", required=True, secret=True),
    )
    settings_fields = (
        FormField(var="greeting", label="Greeting sent to contacts"),
    )

    def __init__(self, context: PluginContext) -> None:
        self.context = context
        options = context.options
        self.allows_unregistered = bool(options.get("allows_unregistered", False))
        self.network = FakeNetwork(
            accounts=dict(options.get("accounts", {})),
            contacts={k: list(v) for k, v in options.get("contacts", {}).items()},
            offline=set(options.get("offline", [])),
            unreachable=bool(options.get("unreachable", False)),
        )

    # -- addressing -----------------------------------------------------------------

    def legacy_to_localpart(self, address: str) -> str:
        if not address or address != address.strip():
            raise ValueError("not a fake-network address")
        return address

    def localpart_to_legacy(self, localpart: str) -> str:
        return self.legacy_to_localpart(localpart)

    def legacy_id_for(self, values: Mapping[str, str]) -> str:
        return values["username"]

    def is_room(self, address: str) -> bool:
        return address.startswith("#")

    # -- accounts ---------------------------------------------------------------------

    async def check_credentials(self, user: str, values: Mapping[str, str]) -> None:
        self.network.log.append(("check", user, values.get("username", "")))
        self.network.check(values)

    async def login(self, registration: Registration) -> FakeSession:
        self.network.log.append(("login", registration.user))
        if self.network.unreachable or registration.legacy_id:
            self.network.check(registration.values)
        session = FakeSession(self, registration)
        self.network.sessions[registration.user] = session
        if self.context.options.get("message_during_login"):
            # A legacy event that arrives before login completes (checklist R9).
            self.deliver(registration.user, "carol", self.context.options["message_during_login"])
        contacts = self.network.contacts.get(session.username, [])
        if contacts:
            self.context.clock.callLater(0, self.context.events.emit, ContactList(
                user=registration.user, contacts=tuple(LegacyContact(address=c) for c in contacts)))
        return session

    # -- what tests make the legacy network do ------------------------------------------

    def deliver(self, user: str, contact: str, body: str) -> None:
        self.context.events.emit(MessageReceived(user=user, contact=contact, body=body))

    def contact_presence(self, user: str, contact: str, available: bool = True, show: str | None = None) -> None:
        self.context.events.emit(ContactPresence(user=user, contact=contact, available=available,
                                                 show=show))  # type: ignore[arg-type]

    def contact_added(self, user: str, contact: str) -> None:
        self.context.events.emit(ContactAdded(user=user, contact=contact))

    def contact_removed(self, user: str, contact: str) -> None:
        self.context.events.emit(ContactRemoved(user=user, contact=contact))

    def room_event(self, event: object) -> None:
        self.context.events.emit(event)  # type: ignore[arg-type]

    def lose_session(self, user: str) -> None:
        self.network.sessions.pop(user, None)
        self.context.events.emit(SessionLost(user=user, reason="connection reset"))
