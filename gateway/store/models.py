"""SQLAlchemy 2 declarative models for the gateway's persistent state (DESIGN.md §5).

Four tables: ``registration`` (XEP-0077 / XEP-0100 §4.1 registrations, one per
gateway, user and legacy account), ``contact`` (the legacy roster of a
registration, XEP-0100 §4.1.2 / §5), ``room`` (per-user channels, including
persistent ones restored on restart), and ``archive`` (XEP-0313 message history).

Constraint and index names come from :data:`NAMING_CONVENTION`, set on the
:class:`~sqlalchemy.MetaData` that the declarative base uses. A
``naming_convention`` class attribute on the base would be silently ignored, and
unnamed constraints get backend-chosen names that later migrations cannot drop
portably (STYLE.md G11). ``migrations/versions/0001_initial.py`` spells out the
same names; ``tests/unit/test_migrations.py`` checks the two agree.

These classes never leave the database thread: :mod:`gateway.store.repository`
turns rows into frozen dataclasses before they cross to the reactor.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "DIRECTIONS",
    "NAMING_CONVENTION",
    "SUBSCRIPTIONS",
    "ArchivedMessage",
    "Base",
    "Contact",
    "Registration",
    "Room",
    "UtcDateTime",
    "utcnow",
]

#: Deterministic names for every constraint and index, so that migrations can
#: refer to them by name on every backend (SQLite, PostgreSQL).
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Roster subscription states (RFC 6121 §3.1 / Appendix A).
SUBSCRIPTIONS: tuple[str, ...] = ("none", "to", "from", "both")

#: Archive directions, seen from the XMPP user: "in" reached the user, "out" was sent by them.
DIRECTIONS: tuple[str, ...] = ("in", "out")

# Lengths: RFC 7622 §3.1 caps each JID part at 1023 octets, so a bare JID
# (local@domain) fits in 2047 characters. Legacy identifiers (IRC network names,
# SIP addresses of record, nicks, channels) are far shorter in practice; 1023 is
# generous and still keeps PostgreSQL btree entries well under their size limit.
_DOMAIN = 1023
_BARE_JID = 2047
_FULL_JID = 3071
_LEGACY = 1023


def utcnow() -> datetime:
    """Return the current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime, stored the same way on SQLite and PostgreSQL.

    PostgreSQL gets ``TIMESTAMP WITH TIME ZONE``. SQLite has no time zones and
    SQLAlchemy's SQLite ``DATETIME`` silently drops ``tzinfo``, so the value is
    converted to UTC first and stored naive; it is read back as UTC. Naive
    datetimes are refused on the way in: their zone is a guess, and a wrong
    guess corrupts ordering in the archive.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert an aware datetime to UTC (naive UTC on SQLite); refuse naive ones."""
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("UtcDateTime needs a timezone-aware datetime, got a naive one")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return an aware UTC datetime whatever the backend handed back."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of the core's models; carries the naming convention."""

    # The convention must live on the MetaData object: DeclarativeBase ignores a
    # ``naming_convention`` class attribute (Slidge paid for that in a migration).
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Registration(Base):
    """One user's registration with one legacy account on one gateway (XEP-0077)."""

    __tablename__ = "registration"
    __table_args__ = (
        # This unique index also serves lookups by (gateway) and (gateway, user),
        # its leading columns, so no separate index on (gateway, user) is kept:
        # it would only cost writes.
        UniqueConstraint("gateway", "user", "legacy_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: The component JID that holds the registration, e.g. ``irc.example.org``.
    gateway: Mapped[str] = mapped_column(String(_DOMAIN))
    #: The registered user's bare JID.
    user: Mapped[str] = mapped_column(String(_BARE_JID))
    #: The legacy account: an IRC network, a SIP address of record.
    legacy_id: Mapped[str] = mapped_column(String(_LEGACY))
    #: Empty for the registration at the gateway JID; the service (IRC network) address for
    #: a per-service registration made at ``service@gateway`` (migration 0002).
    service: Mapped[str] = mapped_column(String(_LEGACY), default="", server_default="")
    #: Secret form values, encrypted by :class:`gateway.store.crypto.CredentialCipher`.
    credentials: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    #: Non-secret form values and plugin settings (plugins use namespaced keys).
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class Contact(Base):
    """A legacy contact on a registration's roster."""

    __tablename__ = "contact"
    __table_args__ = (
        # Also the index for "all contacts of a registration" (leading column).
        UniqueConstraint("registration_id", "legacy_address"),
        CheckConstraint(
            "subscription IN ('none', 'to', 'from', 'both')",
            name="subscription",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # ON DELETE CASCADE in the database, so that unregistering (a bulk DELETE)
    # removes the roster without loading it; SQLite enforces it only with
    # PRAGMA foreign_keys=ON, which gateway.store.db sets on every connection.
    registration_id: Mapped[int] = mapped_column(
        ForeignKey("registration.id", ondelete="CASCADE"),
    )
    legacy_address: Mapped[str] = mapped_column(String(_LEGACY))
    name: Mapped[str | None] = mapped_column(String(_LEGACY), nullable=True)
    subscription: Mapped[str] = mapped_column(String(4), default="none")


class Room(Base):
    """A channel a user is in or wants back after a restart (XEP-0045 on the gateway)."""

    __tablename__ = "room"
    __table_args__ = (UniqueConstraint("gateway", "user", "legacy_id", "channel"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    gateway: Mapped[str] = mapped_column(String(_DOMAIN))
    user: Mapped[str] = mapped_column(String(_BARE_JID))
    #: The legacy network the channel is on.
    legacy_id: Mapped[str] = mapped_column(String(_LEGACY))
    channel: Mapped[str] = mapped_column(String(_LEGACY))
    #: Rejoined on restart (DESIGN.md §6, "Restarts").
    persistent: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Per-room settings such as encoding and autojoin.
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ArchivedMessage(Base):
    """One archived message of a room or a 1:1 conversation (XEP-0313)."""

    __tablename__ = "archive"
    __table_args__ = (
        # The XEP-0313 query shape: one user's history with one JID, by time.
        Index(None, "gateway", "user", "with_jid", "timestamp"),
        CheckConstraint("direction IN ('in', 'out')", name="direction"),
    )

    # BIGINT on PostgreSQL because the archive is the one table that grows
    # without bound; on SQLite only INTEGER PRIMARY KEY aliases the rowid and
    # autoincrements (a BIGINT primary key would need explicit values).
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    )
    gateway: Mapped[str] = mapped_column(String(_DOMAIN))
    user: Mapped[str] = mapped_column(String(_BARE_JID))
    #: The room or contact JID the conversation is with.
    with_jid: Mapped[str] = mapped_column(String(_FULL_JID))
    #: The XEP-0359 stanza id the archive hands out; MAM queries page by it.
    stanza_id: Mapped[str] = mapped_column(String(255), unique=True)
    #: The legacy network's own message id, when it has one.
    legacy_id: Mapped[str | None] = mapped_column(String(_LEGACY), nullable=True)
    timestamp: Mapped[datetime] = mapped_column(UtcDateTime)
    direction: Mapped[str] = mapped_column(String(3))
    #: A nick in a room, a JID in a 1:1 conversation.
    sender: Mapped[str] = mapped_column(String(_FULL_JID))
    body: Mapped[str] = mapped_column(Text)
