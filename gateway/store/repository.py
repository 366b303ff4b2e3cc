"""Repository functions over the core's tables (DESIGN.md §5, reference/stack.md §5).

Plain functions that take a :class:`~sqlalchemy.orm.Session` first and return
frozen dataclasses, never ORM instances: they run on the database thread pool
through :meth:`gateway.store.db.Database.run`, and only plain values may travel
back to the reactor thread. The caller's transaction is the unit of work; these
functions flush but never commit.

Registrations follow XEP-0077 (in-band registration) as used by XEP-0100 §4.1:
one row per gateway, user bare JID and legacy account. A contact belongs to a
registration and goes with it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, delete, distinct, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway.store.models import SUBSCRIPTIONS, Contact, Registration, Room, utcnow

__all__ = [
    "ContactRecord",
    "RegistrationRecord",
    "RoomRecord",
    "any_credentials",
    "count_registered_users",
    "delete_contact",
    "delete_registration",
    "delete_rooms",
    "get_registration",
    "list_contacts",
    "list_registrations",
    "list_rooms",
    "registered_users",
    "save_registration",
    "save_room",
    "upsert_contact",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrationRecord:
    """A registration as read from the database."""

    id: int
    #: Component JID of the gateway.
    gateway: str
    #: The user's bare JID.
    user: str
    #: The legacy account (IRC network, SIP address of record).
    legacy_id: str
    #: Encrypted secret form values (:class:`gateway.store.crypto.CredentialCipher`).
    credentials: bytes | None
    #: Non-secret form values and plugin settings; a copy, changing it changes nothing stored.
    settings: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    #: Empty for the gateway-level registration; the service (IRC network) of a per-service one.
    service: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ContactRecord:
    """A legacy contact of a registration, as read from the database."""

    id: int
    registration_id: int
    legacy_address: str
    name: str | None
    #: Roster subscription state (RFC 6121): "none", "to", "from" or "both".
    subscription: str


def _registration_record(row: Registration) -> RegistrationRecord:
    return RegistrationRecord(
        id=row.id,
        gateway=row.gateway,
        user=row.user,
        legacy_id=row.legacy_id,
        credentials=None if row.credentials is None else bytes(row.credentials),
        # Deep copy: the record is immutable in spirit, and must share no nested
        # dict with a session that another thread may still be using.
        settings=copy.deepcopy(row.settings),
        created_at=row.created_at,
        updated_at=row.updated_at,
        service=row.service or "",
    )


def _contact_record(row: Contact) -> ContactRecord:
    return ContactRecord(
        id=row.id,
        registration_id=row.registration_id,
        legacy_address=row.legacy_address,
        name=row.name,
        subscription=row.subscription,
    )


def _registration_filter(gateway: str, user: str, legacy_id: str | None,
                         service: str | None = None) -> list[Any]:
    conditions: list[Any] = [Registration.gateway == gateway, Registration.user == user]
    if legacy_id is not None:
        conditions.append(Registration.legacy_id == legacy_id)
    if service is not None:
        conditions.append(Registration.service == service)
    return conditions


def _find_registration(
    session: Session, gateway: str, user: str, legacy_id: str | None, service: str | None = ""
) -> Registration | None:
    statement = (
        select(Registration)
        .where(*_registration_filter(gateway, user, legacy_id, service))
        .order_by(Registration.id)
        .limit(1)
    )
    return session.execute(statement).scalar_one_or_none()


def get_registration(
    session: Session, gateway: str, user: str, legacy_id: str | None = None, *, service: str = ""
) -> RegistrationRecord | None:
    """Return the user's registration with ``legacy_id`` on ``gateway``, or ``None``.

    With ``legacy_id=None``, return the user's registration on the gateway when
    it has exactly one legacy account (a SIP gateway, a fixed-network IRC
    gateway); if it has several, the oldest (lowest id) is returned.
    ``service`` selects a per-service registration; the default, empty, is the
    registration made at the gateway JID.
    """
    row = _find_registration(session, gateway, user, legacy_id, service)
    return None if row is None else _registration_record(row)


def list_registrations(session: Session, gateway: str, user: str) -> list[RegistrationRecord]:
    """Return all of the user's registrations on ``gateway``, oldest first."""
    statement = (
        select(Registration).where(*_registration_filter(gateway, user, None)).order_by(Registration.id)
    )
    return [_registration_record(row) for row in session.execute(statement).scalars()]


def save_registration(
    session: Session,
    gateway: str,
    user: str,
    legacy_id: str,
    credentials: bytes | None,
    settings: Mapping[str, Any],
    *,
    service: str = "",
) -> RegistrationRecord:
    """Create the registration, or replace its credentials and settings if it exists.

    XEP-0077 §3.2 lets a registered user submit the form again to change it, so
    saving an existing registration is an update: ``created_at`` is kept and
    ``updated_at`` moves to now. ``credentials=None`` removes stored secrets.
    """
    now = utcnow()
    row = _find_registration(session, gateway, user, legacy_id, service)
    if row is None:
        row = Registration(
            gateway=gateway,
            user=user,
            legacy_id=legacy_id,
            service=service,
            credentials=credentials,
            settings=copy.deepcopy(dict(settings)),
            created_at=now,
            updated_at=now,
        )
        try:
            # A savepoint, because another instance sharing a PostgreSQL database
            # (DESIGN.md §7) may insert the same registration between our SELECT
            # and INSERT; losing that race turns into an update below, and the
            # caller's transaction survives the unique violation.
            with session.begin_nested():
                session.add(row)
        except IntegrityError:
            row = _find_registration(session, gateway, user, legacy_id, service)
            if row is None:
                raise
        else:
            return _registration_record(row)
    row.credentials = credentials
    # A new dict object, so the JSON column is seen as changed (plain JSON
    # columns do not track in-place mutation).
    row.settings = copy.deepcopy(dict(settings))
    row.updated_at = now
    session.flush()
    return _registration_record(row)


def delete_registration(session: Session, gateway: str, user: str, legacy_id: str | None = None,
                        *, service: str | None = None) -> int:
    """Delete the user's registration with ``legacy_id``, or all of them on ``gateway``.

    ``legacy_id=None`` is XEP-0077 §3.3 cancellation of the whole gateway
    registration, per-service ones included. ``service`` limits the deletion to
    that service's registration. Contacts go with their registration
    (``ON DELETE CASCADE``). Returns the number of registrations deleted.
    """
    statement = delete(Registration).where(*_registration_filter(gateway, user, legacy_id, service))
    result = cast(CursorResult[Any], session.execute(statement))
    return result.rowcount


def registered_users(session: Session, gateway: str) -> list[str]:
    """Return the bare JIDs with at least one registration on ``gateway``, sorted.

    On every (re)authenticated stream the gateway sends these users its presence
    and probes them (XEP-0100 §4.1.1, DESIGN.md §6 "Restarts").
    """
    statement = (
        select(Registration.user)
        .where(Registration.gateway == gateway)
        .distinct()
        .order_by(Registration.user)
    )
    return list(session.execute(statement).scalars())


def count_registered_users(session: Session, gateway: str) -> int:
    """Return how many distinct bare JIDs are registered on ``gateway``."""
    statement = select(func.count(distinct(Registration.user))).where(Registration.gateway == gateway)
    return session.execute(statement).scalar_one()


def any_credentials(session: Session) -> bool:
    """Whether any registration, on any gateway, holds encrypted credentials.

    The gateway refuses to start without a credential key when this is true,
    rather than failing later at each login.
    """
    statement = select(exists().where(Registration.credentials.is_not(None)))
    return bool(session.execute(statement).scalar_one())


def _find_contact(session: Session, registration_id: int, legacy_address: str) -> Contact | None:
    statement = select(Contact).where(
        Contact.registration_id == registration_id,
        Contact.legacy_address == legacy_address,
    )
    return session.execute(statement).scalar_one_or_none()


def upsert_contact(
    session: Session,
    registration_id: int,
    legacy_address: str,
    name: str | None,
    subscription: str,
) -> ContactRecord:
    """Add the contact to the registration's roster, or update its name and subscription.

    :raises ValueError: if ``subscription`` is not an RFC 6121 state.
    """
    if subscription not in SUBSCRIPTIONS:
        raise ValueError(f"subscription must be one of {', '.join(SUBSCRIPTIONS)}")
    row = _find_contact(session, registration_id, legacy_address)
    if row is None:
        row = Contact(
            registration_id=registration_id,
            legacy_address=legacy_address,
            name=name,
            subscription=subscription,
        )
        try:
            # Same race as in save_registration; the savepoint keeps a foreign
            # key violation (unknown registration_id) from poisoning the
            # caller's transaction on PostgreSQL too.
            with session.begin_nested():
                session.add(row)
        except IntegrityError:
            row = _find_contact(session, registration_id, legacy_address)
            if row is None:
                raise
        else:
            return _contact_record(row)
    row.name = name
    row.subscription = subscription
    session.flush()
    return _contact_record(row)


def list_contacts(session: Session, registration_id: int) -> list[ContactRecord]:
    """Return the registration's contacts, ordered by legacy address."""
    statement = (
        select(Contact).where(Contact.registration_id == registration_id).order_by(Contact.legacy_address)
    )
    return [_contact_record(row) for row in session.execute(statement).scalars()]


def delete_contact(session: Session, registration_id: int, legacy_address: str) -> bool:
    """Remove a contact from the registration's roster; whether it was there."""
    statement = delete(Contact).where(
        Contact.registration_id == registration_id,
        Contact.legacy_address == legacy_address,
    )
    result = cast(CursorResult[Any], session.execute(statement))
    return result.rowcount > 0


# --------------------------------------------------------------------------
# Rooms: per-user room settings, persistent rooms, per-user room defaults
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomRecord:
    """A user's settings for one room (or, with empty ``legacy_id`` and ``channel``, the
    user's defaults for every room), as read from the database."""

    user: str
    #: The room's service (IRC network); empty for the user's defaults.
    legacy_id: str
    #: The room's legacy address; empty for the user's defaults.
    channel: str
    persistent: bool
    settings: dict[str, Any]


def list_rooms(session: Session, gateway: str) -> list[RoomRecord]:
    """Every room row of ``gateway`` (read once at start: the core keeps them in memory)."""
    statement = select(Room).where(Room.gateway == gateway).order_by(Room.id)
    return [RoomRecord(user=row.user, legacy_id=row.legacy_id, channel=row.channel,
                       persistent=bool(row.persistent), settings=copy.deepcopy(row.settings or {}))
            for row in session.execute(statement).scalars()]


def save_room(session: Session, gateway: str, user: str, legacy_id: str, channel: str, *,
              persistent: bool, settings: Mapping[str, Any]) -> None:
    """Create or replace a user's row for a room (or the user's defaults)."""
    statement = select(Room).where(Room.gateway == gateway, Room.user == user, Room.legacy_id == legacy_id,
                                   Room.channel == channel)
    row = session.execute(statement).scalar_one_or_none()
    if row is None:
        session.add(Room(gateway=gateway, user=user, legacy_id=legacy_id, channel=channel,
                         persistent=persistent, settings=copy.deepcopy(dict(settings))))
    else:
        row.persistent = persistent
        row.settings = copy.deepcopy(dict(settings))
    session.flush()


def delete_rooms(session: Session, gateway: str, user: str, service: str | None = None) -> int:
    """Forget every room setting of a user (unregistration), or those of one service."""
    where = [Room.gateway == gateway, Room.user == user]
    if service is not None:
        where.append(Room.legacy_id == service)
    result = cast(CursorResult[Any], session.execute(delete(Room).where(*where)))
    return result.rowcount
