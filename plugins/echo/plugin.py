"""Echo: a legacy network that lives in the process.

Every contact answers what you send it, prefixed with ``echo:``. It exists to
show the whole plugin API in a few lines (STYLE.md G10) and to give the demo
(``xmpp-gateway run`` without a config) something to talk to. Any non-empty
username and password register; the password ``wrong`` is refused, so the
failure path can be tried from a client too.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.plugin import (
    ContactList,
    ContactPresence,
    FormField,
    LegacyContact,
    LoginFailed,
    MessageReceived,
    OutgoingMessage,
    PluginContext,
    PresenceUpdate,
    Registration,
)

BOT = "echo-bot"


class EchoSession:
    def __init__(self, context: PluginContext, user: str) -> None:
        self.context = context
        self.user = user

    async def send_message(self, message: OutgoingMessage) -> str:
        self.context.events.emit(
            MessageReceived(user=self.user, contact=message.contact, body=f"echo: {message.body}")
        )
        return ""

    async def set_presence(self, presence: PresenceUpdate) -> None:
        return None

    async def add_contact(self, contact: str) -> bool:
        self.context.events.emit(ContactPresence(user=self.user, contact=contact, available=True))
        return True

    async def remove_contact(self, contact: str) -> None:
        return None

    async def logout(self) -> None:
        return None


class EchoPlugin:
    name = "Echo"
    identity_type = "echo"
    instructions = "Choose any username and password (the password 'wrong' is refused)."
    prompt = "Enter any name: it will echo what you send."
    registration_fields = (
        FormField(var="username", label="Username", required=True),
        FormField(var="password", label="Password", type="text-private", required=True, secret=True),
    )

    def __init__(self, context: PluginContext) -> None:
        self.context = context

    def legacy_to_localpart(self, address: str) -> str:
        if not address.strip():
            raise ValueError("an empty name")
        return address.strip()

    def localpart_to_legacy(self, localpart: str) -> str:
        return localpart

    def legacy_id_for(self, values: Mapping[str, str]) -> str:
        return values["username"]

    async def check_credentials(self, user: str, values: Mapping[str, str]) -> None:
        if values.get("password") == "wrong":
            raise LoginFailed("not-authorized", "wrong password")

    async def login(self, registration: Registration) -> EchoSession:
        await self.check_credentials(registration.user, registration.values)
        session = EchoSession(self.context, registration.user)
        events = self.context.events
        # Published once the core has marked the session logged in.
        self.context.clock.callLater(0, events.emit, ContactList(
            user=registration.user, contacts=(LegacyContact(address=BOT, name="Echo bot"),)))
        self.context.clock.callLater(0, events.emit, ContactPresence(
            user=registration.user, contact=BOT, available=True, status="I repeat everything"))
        return session
