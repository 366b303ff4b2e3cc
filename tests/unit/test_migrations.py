"""The Alembic migrations build the models' schema on SQLite and PostgreSQL (STYLE.md G11).

Every migration is tested by upgrading an empty database to head on both
dialects, and the result is compared with the models, so a hand-written
migration that drifts from ``gateway/store/models.py`` fails here.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, make_url

from gateway.store.db import create_engine_for, current_revision, head_revision, upgrade_to_head
from gateway.store.models import Base

#: Constraint and index names the naming convention must produce, on both dialects.
EXPECTED_UNIQUE = {
    "registration": {"uq_registration_gateway_user_legacy_id"},
    "contact": {"uq_contact_registration_id_legacy_address"},
    "room": {"uq_room_gateway_user_legacy_id_channel"},
    "archive": {"uq_archive_stanza_id"},
}
EXPECTED_FOREIGN_KEYS = {"contact": {"fk_contact_registration_id_registration"}}
EXPECTED_CHECKS = {"contact": {"ck_contact_subscription"}, "archive": {"ck_archive_direction"}}
EXPECTED_INDEXES = {"archive": {"ix_archive_gateway_user_with_jid_timestamp"}}


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on an empty database: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'state' / 'gateway.sqlite3'}"
    else:
        url = request.getfixturevalue("fresh_postgres_url")
    engine = create_engine_for(url)
    try:
        yield engine
    finally:
        engine.dispose()


def test_empty_database_has_no_revision(empty_engine: Engine) -> None:
    """A database that was never migrated reports no revision."""
    assert current_revision(empty_engine) is None


def test_upgrade_reaches_head(empty_engine: Engine) -> None:
    """Upgrading an empty database reaches the newest shipped revision."""
    assert head_revision() == "0002"
    assert upgrade_to_head(empty_engine) == head_revision()
    assert current_revision(empty_engine) == head_revision()


def test_upgrade_is_idempotent(empty_engine: Engine) -> None:
    """A second upgrade at head changes nothing and stays at head."""
    upgrade_to_head(empty_engine)
    tables_before = set(inspect(empty_engine).get_table_names())
    assert upgrade_to_head(empty_engine) == head_revision()
    assert set(inspect(empty_engine).get_table_names()) == tables_before


def test_migrated_schema_matches_models(empty_engine: Engine) -> None:
    """Alembic's comparison of the migrated schema with the models finds no difference."""
    upgrade_to_head(empty_engine)
    with empty_engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_constraint_names_follow_the_convention(empty_engine: Engine) -> None:
    """Unique, foreign key, check and index names are the convention's, on both dialects."""
    upgrade_to_head(empty_engine)
    inspector = inspect(empty_engine)
    for table, names in EXPECTED_UNIQUE.items():
        assert {c["name"] for c in inspector.get_unique_constraints(table)} == names
    for table, names in EXPECTED_FOREIGN_KEYS.items():
        assert {c["name"] for c in inspector.get_foreign_keys(table)} == names
    for table, names in EXPECTED_CHECKS.items():
        assert {c["name"] for c in inspector.get_check_constraints(table)} == names
    for table, names in EXPECTED_INDEXES.items():
        # PostgreSQL reports the unique constraints' indexes too; keep plain indexes.
        plain = {i["name"] for i in inspector.get_indexes(table) if not i.get("unique")}
        assert plain == names


def test_models_use_the_naming_convention() -> None:
    """The convention is on the MetaData itself, where DeclarativeBase honours it."""
    names: set[str | None] = set()
    for table in Base.metadata.tables.values():
        names.update(str(constraint.name) for constraint in table.constraints)
        names.update(str(index.name) for index in table.indexes)
    for expected in (EXPECTED_UNIQUE, EXPECTED_FOREIGN_KEYS, EXPECTED_CHECKS, EXPECTED_INDEXES):
        for table_names in expected.values():
            assert table_names <= names


def test_sqlite_database_is_in_wal_mode(tmp_path: Path) -> None:
    """A migrated SQLite file database runs in WAL mode with foreign keys enforced."""
    engine = create_engine_for(f"sqlite:///{tmp_path / 'nested' / 'dir' / 'gateway.sqlite3'}")
    try:
        upgrade_to_head(engine)
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
    finally:
        engine.dispose()
    assert (tmp_path / "nested" / "dir" / "gateway.sqlite3").is_file()


def test_concurrent_upgrades_on_postgresql(fresh_postgres_url: str) -> None:
    """Instances starting together on one PostgreSQL database all reach head (advisory lock)."""
    # lock_timeout turns a regression (concurrent DDL waiting on each other, as
    # happens without the lock) into a failure instead of a hung test run.
    url = make_url(fresh_postgres_url).update_query_dict({"options": "-c lock_timeout=20000"})
    engines = [create_engine_for(url.render_as_string(hide_password=False)) for _ in range(3)]
    try:
        with ThreadPoolExecutor(max_workers=len(engines)) as executor:
            revisions = list(executor.map(upgrade_to_head, engines))
        assert revisions == [head_revision()] * len(engines)
    finally:
        for engine in engines:
            engine.dispose()
