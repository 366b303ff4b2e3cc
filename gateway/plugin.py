"""The plugin API: what a legacy-network plugin implements and what the core offers it.

A plugin owns only its legacy protocol. It never sees XML: the core turns stanzas
into the typed calls and events below, and turns the events a plugin emits back
into stanzas (DESIGN.md §3). Plugins are found through the entry point group
``xmpp_gateway.plugins``; each entry point names a class that is called with a
:class:`PluginContext` and returns an object satisfying :class:`Plugin`.

Every event is a frozen, slotted, keyword-only dataclass that validates itself
on construction, so a plugin bug surfaces where it is made, not inside the core.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

from twisted.internet.interfaces import IReactorTime

ENTRY_POINT_GROUP = "xmpp_gateway.plugins"

#: Presence "show" values of RFC 6121 §4.7.2.1; ``None`` is plain available.
Show = Literal["away", "chat", "dnd", "xa"]
SHOW_VALUES: frozenset[str] = frozenset({"away", "chat", "dnd", "xa"})

#: Stanza error conditions a plugin may report (RFC 6120 §8.3.3; XEP-0100 §4.4.2, §4.8.2).
ErrorCondition = Literal[
    "bad-request",
    "conflict",
    "feature-not-implemented",
    "forbidden",
    "gone",
    "internal-server-error",
    "item-not-found",
    "jid-malformed",
    "not-acceptable",
    "not-allowed",
    "not-authorized",
    "recipient-unavailable",
    "redirect",
    "registration-required",
    "remote-server-not-found",
    "remote-server-timeout",
    "resource-constraint",
    "service-unavailable",
    "undefined-condition",
    "unexpected-request",
]
ERROR_CONDITIONS: frozenset[str] = frozenset(ErrorCondition.__args__)  # type: ignore[attr-defined]

FieldType = Literal["text-single", "text-private", "boolean", "list-single", "text-multi"]


def _require_text(name: str, value: object, *, allow_empty: bool = False) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if not allow_empty and not value:
        raise ValueError(f"{name} must not be empty")


def _check_condition(condition: str) -> None:
    if condition not in ERROR_CONDITIONS:
        raise ValueError(f"unknown stanza error condition {condition!r}")


# --------------------------------------------------------------------------
# What a plugin declares
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class FormField:
    """One field of the plugin's registration form (XEP-0004, XEP-0077)."""

    var: str
    """Field name; ``username`` and ``password`` also map to the bare XEP-0077 elements."""
    label: str
    type: FieldType = "text-single"
    required: bool = False
    secret: bool = False
    """Stored encrypted, never echoed back to the user, never logged."""
    options: tuple[str, ...] = ()
    default: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        _require_text("FormField.var", self.var)
        _require_text("FormField.label", self.label)
        if self.type == "list-single" and not self.options:
            raise ValueError(f"list-single field {self.var!r} needs options")


@dataclass(frozen=True, slots=True, kw_only=True)
class Registration:
    """A user's registered legacy account, as the core hands it to the plugin."""

    user: str
    """The user's bare JID."""
    legacy_id: str
    """The legacy account the registration is for (IRC network, SIP address of record);
    empty for an unregistered user of a plugin that ``allows_unregistered`` (IRC rooms)."""
    values: Mapping[str, str]
    """Every form value, secrets decrypted."""
    services: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """Per-service registrations (:class:`ServiceRegistrations`), by service address: each
    one's form values, secrets decrypted. An unregistered user may have some too."""
    rooms: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """The user's room settings (ad-hoc ``configure`` on a room JID), by room address."""

    def __post_init__(self) -> None:
        _require_text("Registration.user", self.user)
        _require_text("Registration.legacy_id", self.legacy_id, allow_empty=True)


# --------------------------------------------------------------------------
# Errors a plugin raises
# --------------------------------------------------------------------------


class LegacyError(Exception):
    """A legacy-side failure, carrying the stanza error condition to answer with."""

    def __init__(self, condition: ErrorCondition, text: str = "") -> None:
        _check_condition(condition)
        super().__init__(text or condition)
        self.condition: ErrorCondition = condition
        self.text = text


class LoginFailed(LegacyError):
    """Login or credential check refused: ``not-authorized`` for bad credentials,
    ``remote-server-timeout`` when the legacy service cannot be reached (XEP-0100 §4.4.2)."""


# --------------------------------------------------------------------------
# XMPP -> legacy: requests the core makes of a session
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class OutgoingMessage:
    """A chat message from the user to a legacy contact."""

    contact: str
    """Legacy address of the recipient (already unescaped by the plugin's address mapper)."""
    body: str
    xmpp_id: str = ""
    """The stanza id, echoed in any later :class:`DeliveryFailed`."""

    def __post_init__(self) -> None:
        _require_text("OutgoingMessage.contact", self.contact)
        _require_text("OutgoingMessage.body", self.body, allow_empty=True)


@dataclass(frozen=True, slots=True)
class SentLine:
    """One legacy line a room message became (a long or multi-line body becomes several)."""

    text: str
    legacy_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class PresenceUpdate:
    """The user's aggregated presence, for the legacy side."""

    available: bool
    show: Show | None = None
    status: str = ""

    def __post_init__(self) -> None:
        if self.show is not None and self.show not in SHOW_VALUES:
            raise ValueError(f"invalid show {self.show!r}")


# --------------------------------------------------------------------------
# Legacy -> XMPP: events a plugin emits through GatewayEvents.emit()
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageReceived:
    """A message from a legacy contact to the user (XEP-0100 §5.3)."""

    user: str
    contact: str
    body: str
    legacy_id: str = ""

    def __post_init__(self) -> None:
        _require_text("MessageReceived.user", self.user)
        _require_text("MessageReceived.contact", self.contact)
        _require_text("MessageReceived.body", self.body, allow_empty=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class ContactPresence:
    """A legacy contact's presence changed (XEP-0100 §4.4.1 step 5)."""

    user: str
    contact: str
    available: bool
    show: Show | None = None
    status: str = ""

    def __post_init__(self) -> None:
        _require_text("ContactPresence.user", self.user)
        _require_text("ContactPresence.contact", self.contact)
        if self.show is not None and self.show not in SHOW_VALUES:
            raise ValueError(f"invalid show {self.show!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class LegacyContact:
    address: str
    name: str = ""

    def __post_init__(self) -> None:
        _require_text("LegacyContact.address", self.address)


@dataclass(frozen=True, slots=True, kw_only=True)
class ContactList:
    """The user's legacy contact list, after login; the core populates the roster (XEP-0100 §7)."""

    user: str
    contacts: tuple[LegacyContact, ...]

    def __post_init__(self) -> None:
        _require_text("ContactList.user", self.user)


@dataclass(frozen=True, slots=True, kw_only=True)
class ContactAdded:
    """A legacy user added the user (XEP-0100 §5.1): becomes a ``subscribe``, never ``subscribed``."""

    user: str
    contact: str
    name: str = ""

    def __post_init__(self) -> None:
        _require_text("ContactAdded.user", self.user)
        _require_text("ContactAdded.contact", self.contact)


@dataclass(frozen=True, slots=True, kw_only=True)
class ContactRemoved:
    """A legacy user removed the user (XEP-0100 §5.2)."""

    user: str
    contact: str

    def __post_init__(self) -> None:
        _require_text("ContactRemoved.user", self.user)
        _require_text("ContactRemoved.contact", self.contact)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryFailed:
    """An earlier :class:`OutgoingMessage` was refused by the legacy side (XEP-0100 §4.8.2)."""

    user: str
    contact: str
    xmpp_id: str
    condition: ErrorCondition
    text: str = ""

    def __post_init__(self) -> None:
        _require_text("DeliveryFailed.user", self.user)
        _require_text("DeliveryFailed.contact", self.contact)
        _check_condition(self.condition)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionLost:
    """The legacy session ended without the user asking (network failure, kill)."""

    user: str
    reason: str = ""
    condition: ErrorCondition = "remote-server-timeout"

    def __post_init__(self) -> None:
        _require_text("SessionLost.user", self.user)
        _check_condition(self.condition)



# --------------------------------------------------------------------------
# Rooms (XEP-0045 on the XMPP side): legacy -> XMPP events
# --------------------------------------------------------------------------

Role = Literal["moderator", "participant", "visitor", "none"]
Affiliation = Literal["owner", "admin", "member", "outcast", "none"]
ROLES: frozenset[str] = frozenset(Role.__args__)  # type: ignore[attr-defined]
AFFILIATIONS: frozenset[str] = frozenset(Affiliation.__args__)  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True, kw_only=True)
class Occupant:
    """Someone in a legacy room, as the room shows them."""

    nick: str
    role: Role = "participant"
    affiliation: Affiliation = "none"
    real_jid: str = ""
    """The occupant's own JID when they are an XMPP user (of this gateway, say)."""
    contact: str = ""
    """The occupant's legacy address as a contact; its JID is shown when ``real_jid`` is empty."""

    def __post_init__(self) -> None:
        _require_text("Occupant.nick", self.nick)
        if self.role not in ROLES:
            raise ValueError(f"invalid role {self.role!r}")
        if self.affiliation not in AFFILIATIONS:
            raise ValueError(f"invalid affiliation {self.affiliation!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomJoined:
    """The user is in the room: the full state, sent to every joining resource (XEP-0045 §7.2)."""

    user: str
    room: str
    nick: str
    """The user's own nick in the room (may differ from the one asked for: status 210)."""
    occupants: tuple[Occupant, ...] = ()
    """Everyone else in the room."""
    role: Role = "participant"
    affiliation: Affiliation = "none"
    subject: str = ""
    subject_by: str = ""

    def __post_init__(self) -> None:
        for name in ("user", "room", "nick"):
            _require_text(f"RoomJoined.{name}", getattr(self, name))


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomJoinFailed:
    """A join was refused (XEP-0045 §7.2.6-§7.2.9): a presence error to the joining resources."""

    user: str
    room: str
    condition: ErrorCondition | Literal["conflict", "registration-required"]
    text: str = ""

    def __post_init__(self) -> None:
        _require_text("RoomJoinFailed.user", self.user)
        _require_text("RoomJoinFailed.room", self.room)
        if self.condition not in ERROR_CONDITIONS | {"conflict", "registration-required"}:
            raise ValueError(f"unknown condition {self.condition!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomLeft:
    """The user is out of the room without asking (kicked, or the legacy side removed them)."""

    user: str
    room: str
    reason: str = ""
    kicked_by: str = ""
    """The nick that kicked the user (status 307), empty when not a kick."""

    def __post_init__(self) -> None:
        _require_text("RoomLeft.user", self.user)
        _require_text("RoomLeft.room", self.room)


@dataclass(frozen=True, slots=True, kw_only=True)
class OccupantJoined:
    user: str
    room: str
    occupant: Occupant


@dataclass(frozen=True, slots=True, kw_only=True)
class OccupantChanged:
    """An occupant's role or affiliation changed (a presence update)."""

    user: str
    room: str
    occupant: Occupant


@dataclass(frozen=True, slots=True, kw_only=True)
class OccupantLeft:
    user: str
    room: str
    nick: str
    reason: str = ""
    kicked_by: str = ""
    """Set when the occupant was kicked (status 307 with the actor)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OccupantRenamed:
    """A nick change (status 303); ``old_nick`` may be the user's own nick."""

    user: str
    room: str
    old_nick: str
    new_nick: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomMessage:
    """A line said in the room (by someone else: the core reflects the user's own lines)."""

    user: str
    room: str
    nick: str
    """Who said it; empty for the room itself (mode changes and other room notices)."""
    body: str
    legacy_id: str = ""
    """The legacy message id (IRCv3 msgid), used as the stanza id for every resource."""
    notice: bool = False
    timestamp: datetime | None = None
    """When the legacy side says the line was said (IRCv3 ``server-time``); ``None``: now."""
    backfill: bool = False
    """A line fetched after the fact (IRCv3 ``chathistory`` after an outage): archived, and
    shown to joined resources with its original time (XEP-0203), never twice for one
    ``legacy_id``."""

    def __post_init__(self) -> None:
        # One per room line: the common case (non-empty str user and room, str nick) is
        # checked in one expression; anything else goes through the checks that explain.
        if not (type(self.user) is str and type(self.room) is str and type(self.nick) is str
                and self.user and self.room):
            for name in ("user", "room"):
                _require_text(f"RoomMessage.{name}", getattr(self, name))
            _require_text("RoomMessage.nick", self.nick, allow_empty=True)
        if self.timestamp is not None and self.timestamp.tzinfo is None:
            raise ValueError("RoomMessage.timestamp must be timezone-aware")


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomListing:
    """One entry of a legacy room list (an IRC LIST line)."""

    address: str
    name: str
    topic: str = ""
    occupants: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomInvitation:
    """Someone on the legacy side invites the user to a room (sent as XEP-0045 §7.8.2)."""

    user: str
    room: str
    inviter: str
    """The inviter's legacy (contact) address."""
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class SubjectChanged:
    user: str
    room: str
    subject: str
    nick: str = ""


RoomEvent = (
    RoomJoined
    | RoomJoinFailed
    | RoomLeft
    | OccupantJoined
    | OccupantChanged
    | OccupantLeft
    | OccupantRenamed
    | RoomMessage
    | RoomInvitation
    | SubjectChanged
)

LegacyEvent = (
    RoomEvent
    | MessageReceived
    | ContactPresence
    | ContactList
    | ContactAdded
    | ContactRemoved
    | DeliveryFailed
    | SessionLost
)


class GatewayEvents(Protocol):
    """The core's side of the API, handed to every plugin through its context."""

    def emit(self, event: LegacyEvent) -> None:
        """Deliver a legacy event to the user; the core builds and sends the stanzas."""


# --------------------------------------------------------------------------
# What a plugin implements
# --------------------------------------------------------------------------


class LegacySession(Protocol):
    """One user's logged-in legacy account.

    A coroutine left unimplemented (raising :class:`NotImplementedError`) is
    answered with ``feature-not-implemented``.
    """

    async def send_message(self, message: OutgoingMessage) -> str:
        """Send a chat message; return the legacy message id (may be empty).

        Raise :class:`LegacyError` to refuse it at once; report later refusals
        with :class:`DeliveryFailed`. A plugin whose ``delivery_receipts`` attribute is
        true returns a non-empty id only once the legacy side confirmed delivery: the
        core then answers a XEP-0184 receipt request itself ("" gets no receipt).
        """

    async def set_presence(self, presence: PresenceUpdate) -> None:
        """Reflect the user's presence on the legacy side where the network supports it."""

    async def add_contact(self, contact: str) -> bool:
        """Ask the legacy network to add ``contact``; return ``True`` when it approved."""

    async def remove_contact(self, contact: str) -> None:
        """Remove ``contact`` from the legacy contact list."""

    async def logout(self) -> None:
        """Log out cleanly; called once, after which the session is dropped."""

    # Rooms (plugins whose ``is_room`` can say yes). Results come back as room events.

    async def join_room(self, room: str, nick: str, password: str) -> None:
        """Join ``room`` as ``nick``; answer with :class:`RoomJoined` or :class:`RoomJoinFailed`."""

    async def leave_room(self, room: str, reason: str) -> None:
        """Leave ``room`` (the last resource of the user left it)."""

    async def send_room_message(self, room: str, body: str) -> list[SentLine]:
        """Say ``body`` in ``room``; return the legacy lines it became, in order.

        Raise :class:`LegacyError` to refuse it; the core reflects each line itself.
        """

    async def set_subject(self, room: str, subject: str) -> None:
        """Change the room's subject; the change shows when :class:`SubjectChanged` comes back."""

    async def change_nick(self, room: str, nick: str) -> None:
        """Change the user's nick; it shows when :class:`OccupantRenamed` comes back."""

    async def list_rooms(self, service: str) -> list[RoomListing]:
        """The rooms of a legacy service (``is_service`` address), for disco#items."""

    async def invite(self, room: str, contact: str, reason: str) -> None:
        """Invite a legacy contact (an address) to ``room``."""

    async def set_role(self, room: str, nick: str, role: Role, reason: str) -> None:
        """Moderation (XEP-0045 §8): ``none`` kicks. Return once the legacy side did it;
        raise :class:`LegacyError` (``not-allowed``, ``item-not-found``...) otherwise."""

    async def set_affiliation(self, room: str, nick: str, affiliation: Affiliation, reason: str) -> None:
        """Administration (XEP-0045 §9): ``outcast`` bans. Same contract as :meth:`set_role`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PluginContext:
    """Everything the core gives a plugin when it is created."""

    gateway_jid: str
    options: Mapping[str, Any]
    """The plugin's own ``[gateways.NAME.options]`` table."""
    events: GatewayEvents
    clock: IReactorTime


@runtime_checkable
class Plugin(Protocol):
    """A legacy-network plugin (DESIGN.md §3).

    Optional, read with ``getattr`` (see docs/plugins.md): ``delivery_receipts``,
    ``allows_unregistered``, and ``keeps_session_offline(user) -> bool``: when it returns
    true, the user's legacy session is kept while they have no available resource (the
    session gets ``set_presence(PresenceUpdate(available=False))`` instead of ``logout``;
    its :class:`MessageReceived` then goes to the user's bare JID, for the server's offline
    storage), and is logged in at start for a registered user who is offline.
    """

    name: str
    """Human readable name, e.g. ``"IRC"``."""
    identity_type: str
    """XEP-0030 ``gateway`` identity type, e.g. ``irc`` or ``sip``."""
    registration_fields: Sequence[FormField]
    instructions: str
    """Shown in the XEP-0077 registration form."""
    prompt: str
    """The jabber:iq:gateway ``<desc/>`` text and ``<prompt/>`` label (XEP-0100 §6.3)."""

    def legacy_to_localpart(self, address: str) -> str:
        """Map a legacy address to the (unescaped) localpart of its contact JID.

        Raise :class:`ValueError` for an address this network cannot reach.
        """

    def localpart_to_legacy(self, localpart: str) -> str:
        """Map an (unescaped) contact localpart back to its legacy address; :class:`ValueError` if invalid."""

    def legacy_id_for(self, values: Mapping[str, str]) -> str:
        """The legacy account id a registration form describes (e.g. the username)."""

    async def check_credentials(self, user: str, values: Mapping[str, str]) -> None:
        """Verify the credentials against the legacy network; raise :class:`LoginFailed`."""

    async def login(self, registration: Registration) -> LegacySession:
        """Open the user's legacy session; raise :class:`LoginFailed` on failure."""

    def is_room(self, address: str) -> bool:
        """Whether a legacy address names a room (XEP-0045) rather than a contact."""

    def is_service(self, address: str) -> bool:
        """Whether a legacy address names a room service (an IRC network): it is browsed
        like a MUC service, its rooms listed by :meth:`LegacySession.list_rooms`."""


class ServiceRegistrations(Protocol):
    """Optional part of a :class:`Plugin` whose services (``is_service``: IRC networks) each
    take their own registration, at ``service@gateway`` (XEP-0077 there, or at the gateway JID
    with the ``service_field`` filled in). The core stores one registration row per service and
    hands them to :meth:`Plugin.login` in :attr:`Registration.services`."""

    service_field: FormField
    """The field of the gateway JID's form that names the service (IRC: ``network``)."""
    service_registration_fields: Sequence[FormField]
    """The per-service form; the same form is the service's ad-hoc ``configure`` command."""

    async def check_service_credentials(self, user: str, service: str, values: Mapping[str, str]) -> None:
        """Verify the values against the service (a real login); raise :class:`LoginFailed`.
        Nothing is stored unless this returns."""

    def autojoin_rooms(self, registration: Registration) -> Sequence[tuple[str, str]]:
        """(room address, nick) pairs the core joins when the user logs on (first available
        resource), without any join presence from the user."""

    def service_of(self, room: str) -> str:
        """The service address a room address belongs to (IRC: its network)."""


class ServiceSession(Protocol):
    """Optional :class:`LegacySession` coroutines for per-service and per-room settings and the
    service ad-hoc commands. Each may raise :class:`NotImplementedError`."""

    async def settings_changed(self, address: str, values: Mapping[str, str]) -> None:
        """A service's registration (``address`` is a service) or a room's settings (a room)
        changed while the session is open: apply what can be applied now."""

    async def service_info(self, service: str) -> str:
        """A human-readable account of the connection to ``service`` (``get-…-connection-info``)."""

    async def disconnect_service(self, service: str, message: str) -> bool:
        """Leave ``service`` (its rooms are left, with status 332); ``False`` if not connected."""


PluginFactory = Callable[[PluginContext], Plugin]

__all__ = [
    "ENTRY_POINT_GROUP",
    "Affiliation",
    "ContactAdded",
    "ContactList",
    "ContactPresence",
    "ContactRemoved",
    "DeliveryFailed",
    "ErrorCondition",
    "FormField",
    "GatewayEvents",
    "LegacyContact",
    "LegacyError",
    "LegacyEvent",
    "LegacySession",
    "LoginFailed",
    "MessageReceived",
    "Occupant",
    "OccupantChanged",
    "OccupantJoined",
    "OccupantLeft",
    "OccupantRenamed",
    "OutgoingMessage",
    "Plugin",
    "PluginContext",
    "PluginFactory",
    "PresenceUpdate",
    "Registration",
    "Role",
    "RoomEvent",
    "RoomInvitation",
    "RoomJoinFailed",
    "RoomJoined",
    "RoomLeft",
    "RoomListing",
    "RoomMessage",
    "SentLine",
    "ServiceRegistrations",
    "ServiceSession",
    "SessionLost",
    "Show",
    "SubjectChanged",
]
