"""Per-service registrations: ``registration.service``.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24

A user may register at the gateway JID (one row, ``service = ''``) and also per
service, e.g. per IRC network at ``network@gateway`` (one row per network,
``service`` and ``legacy_id`` = the network). The unique constraint on
(gateway, user, legacy_id) stays: changing it would make SQLite recreate the
table, and dropping ``registration`` there cascades to ``contact``. A network
named like the user's gateway-level legacy id (an IRC nick) is refused instead
(``conflict``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``service``, empty (gateway-level) for every existing row."""
    op.add_column("registration",
                  sa.Column("service", sa.String(length=1023), nullable=False, server_default=""))


def downgrade() -> None:
    """Drop per-service registrations, then the column."""
    op.execute("DELETE FROM registration WHERE service <> ''")
    # Plain ALTER TABLE (SQLite >= 3.35 has DROP COLUMN): a batch copy would drop the table,
    # and on SQLite that cascades to ``contact``.
    op.execute("ALTER TABLE registration DROP COLUMN service")
