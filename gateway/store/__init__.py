"""Persistent state of the gateway: models, migrations, credentials at rest (DESIGN.md §5).

- :mod:`gateway.store.models`: SQLAlchemy 2 declarative models.
- :mod:`gateway.store.db`: engine set-up, Alembic upgrades, and :class:`Database`,
  which runs repository functions on a dedicated thread pool, off the reactor.
- :mod:`gateway.store.repository`: functions of a ``Session`` returning frozen dataclasses.
- :mod:`gateway.store.crypto`: Fernet encryption of registration credentials.
"""

from __future__ import annotations

from gateway.store.crypto import CredentialCipher, CredentialKeyError, generate_key
from gateway.store.db import (
    Database,
    DatabaseStoppedError,
    create_engine_for,
    current_revision,
    head_revision,
    upgrade_to_head,
)
from gateway.store.repository import ContactRecord, RegistrationRecord

__all__ = [
    "ContactRecord",
    "CredentialCipher",
    "CredentialKeyError",
    "Database",
    "DatabaseStoppedError",
    "RegistrationRecord",
    "create_engine_for",
    "current_revision",
    "generate_key",
    "head_revision",
    "upgrade_to_head",
]
