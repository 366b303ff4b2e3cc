"""Initial schema: registration, contact, room, archive.

Revision ID: 0001
Revises:
Create Date: 2026-11-24

Written by hand to match gateway/store/models.py; every constraint and index is
named explicitly with op.f(), as the naming convention in models.py would name
it, so the names do not depend on how the models evolve later.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the four tables of DESIGN.md §5."""
    op.create_table(
        "registration",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("gateway", sa.String(length=1023), nullable=False),
        sa.Column("user", sa.String(length=2047), nullable=False),
        sa.Column("legacy_id", sa.String(length=1023), nullable=False),
        sa.Column("credentials", sa.LargeBinary(), nullable=True),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registration")),
        sa.UniqueConstraint(
            "gateway", "user", "legacy_id", name=op.f("uq_registration_gateway_user_legacy_id")
        ),
    )
    op.create_table(
        "contact",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("registration_id", sa.Integer(), nullable=False),
        sa.Column("legacy_address", sa.String(length=1023), nullable=False),
        sa.Column("name", sa.String(length=1023), nullable=True),
        sa.Column("subscription", sa.String(length=4), nullable=False),
        sa.CheckConstraint(
            "subscription IN ('none', 'to', 'from', 'both')",
            name=op.f("ck_contact_subscription"),
        ),
        sa.ForeignKeyConstraint(
            ["registration_id"],
            ["registration.id"],
            name=op.f("fk_contact_registration_id_registration"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contact")),
        sa.UniqueConstraint(
            "registration_id",
            "legacy_address",
            name=op.f("uq_contact_registration_id_legacy_address"),
        ),
    )
    op.create_table(
        "room",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("gateway", sa.String(length=1023), nullable=False),
        sa.Column("user", sa.String(length=2047), nullable=False),
        sa.Column("legacy_id", sa.String(length=1023), nullable=False),
        sa.Column("channel", sa.String(length=1023), nullable=False),
        sa.Column("persistent", sa.Boolean(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_room")),
        sa.UniqueConstraint(
            "gateway",
            "user",
            "legacy_id",
            "channel",
            name=op.f("uq_room_gateway_user_legacy_id_channel"),
        ),
    )
    op.create_table(
        "archive",
        # BIGINT on PostgreSQL; INTEGER on SQLite, where only INTEGER PRIMARY KEY
        # is the autoincrementing rowid.
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("gateway", sa.String(length=1023), nullable=False),
        sa.Column("user", sa.String(length=2047), nullable=False),
        sa.Column("with_jid", sa.String(length=3071), nullable=False),
        sa.Column("stanza_id", sa.String(length=255), nullable=False),
        sa.Column("legacy_id", sa.String(length=1023), nullable=True),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("direction", sa.String(length=3), nullable=False),
        sa.Column("sender", sa.String(length=3071), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.CheckConstraint("direction IN ('in', 'out')", name=op.f("ck_archive_direction")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_archive")),
        sa.UniqueConstraint("stanza_id", name=op.f("uq_archive_stanza_id")),
    )
    op.create_index(
        op.f("ix_archive_gateway_user_with_jid_timestamp"),
        "archive",
        ["gateway", "user", "with_jid", "timestamp"],
        unique=False,
    )


def downgrade() -> None:
    """Drop everything the upgrade created, dependants first."""
    op.drop_index(op.f("ix_archive_gateway_user_with_jid_timestamp"), table_name="archive")
    op.drop_table("archive")
    op.drop_table("room")
    op.drop_table("contact")
    op.drop_table("registration")
