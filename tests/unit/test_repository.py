"""Contract suite of gateway.store.repository, run on SQLite and on PostgreSQL (STYLE.md G8).

Most tests call the repository functions synchronously inside a transaction,
as a pool thread would; the ``Database`` tests go through the real thread pool
and the reactor, awaited under pytest-twisted.
"""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_twisted
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from twisted.internet.defer import gatherResults
from twisted.internet.testing import MemoryReactor

from gateway.store import repository as repo
from gateway.store.db import Database, DatabaseStoppedError
from gateway.store.models import ArchivedMessage, Contact, Registration
from tests.fixtures.store import call

T = TypeVar("T")

GW = "irc.example.org"
OTHER_GW = "sip.example.org"
ALICE = "alice@example.com"
BOB = "bob@example.net"


def test_save_then_get_registration(database: Database) -> None:
    """A saved registration reads back with all its fields and UTC timestamps."""
    saved = call(database, repo.save_registration, GW, ALICE, "libera", b"secret-blob", {"nick": "al"})
    got = call(database, repo.get_registration, GW, ALICE, "libera")
    assert got == saved
    assert got is not None
    assert (got.gateway, got.user, got.legacy_id) == (GW, ALICE, "libera")
    assert got.credentials == b"secret-blob"
    assert got.settings == {"nick": "al"}
    assert got.created_at.tzinfo is not None
    assert got.created_at.utcoffset() == timedelta(0)
    assert got.created_at == got.updated_at


def test_get_unknown_registration_is_none(database: Database) -> None:
    """Looking up a registration that does not exist gives None."""
    call(database, repo.save_registration, GW, ALICE, "libera", None, {})
    assert call(database, repo.get_registration, GW, ALICE, "oftc") is None
    assert call(database, repo.get_registration, GW, BOB) is None
    assert call(database, repo.get_registration, OTHER_GW, ALICE) is None


def test_get_without_legacy_id_returns_the_oldest(database: Database) -> None:
    """Without a legacy id, the user's first registration on that gateway is returned."""
    first = call(database, repo.save_registration, GW, ALICE, "libera", None, {})
    call(database, repo.save_registration, GW, ALICE, "oftc", None, {})
    assert call(database, repo.get_registration, GW, ALICE) == first


def test_save_existing_registration_updates_it(database: Database) -> None:
    """Saving the same key again replaces secrets and settings, keeps id and created_at."""
    first = call(database, repo.save_registration, GW, ALICE, "libera", b"old", {"nick": "al"})
    second = call(database, repo.save_registration, GW, ALICE, "libera", None, {"nick": "alice"})
    assert second.id == first.id
    assert second.credentials is None
    assert second.settings == {"nick": "alice"}
    assert second.created_at == first.created_at
    assert second.updated_at > first.updated_at
    assert call(database, repo.get_registration, GW, ALICE, "libera") == second
    assert len(call(database, repo.list_registrations, GW, ALICE)) == 1


def test_registration_key_is_unique(database: Database) -> None:
    """The database itself refuses a second row for the same gateway, user and legacy id."""
    call(database, repo.save_registration, GW, ALICE, "libera", None, {})
    now = datetime.now(UTC)
    with pytest.raises(IntegrityError), database.sessionmaker.begin() as session:
        session.add(
            Registration(
                gateway=GW, user=ALICE, legacy_id="libera", settings={}, created_at=now, updated_at=now
            )
        )


def test_registrations_are_separate_per_gateway_and_account(database: Database) -> None:
    """The same user may register several accounts and on several gateways."""
    a = call(database, repo.save_registration, GW, ALICE, "libera", None, {})
    b = call(database, repo.save_registration, GW, ALICE, "oftc", None, {})
    c = call(database, repo.save_registration, OTHER_GW, ALICE, "libera", None, {})
    assert len({a.id, b.id, c.id}) == 3
    assert call(database, repo.list_registrations, GW, ALICE) == [a, b]
    assert call(database, repo.list_registrations, OTHER_GW, ALICE) == [c]
    assert call(database, repo.list_registrations, GW, BOB) == []


def test_record_settings_are_a_copy(database: Database) -> None:
    """Changing a record's settings changes nothing stored, and records are frozen."""
    saved = call(database, repo.save_registration, GW, ALICE, "libera", None, {"irc": {"nick": "al"}})
    saved.settings["irc"]["nick"] = "mallory"
    with pytest.raises(dataclasses.FrozenInstanceError):
        saved.user = BOB  # type: ignore[misc]
    got = call(database, repo.get_registration, GW, ALICE, "libera")
    assert got is not None
    assert got.settings == {"irc": {"nick": "al"}}


def test_delete_registration(database: Database) -> None:
    """Deleting by legacy id removes one row; without it, all of the user's rows on that gateway."""
    call(database, repo.save_registration, GW, ALICE, "libera", None, {})
    call(database, repo.save_registration, GW, ALICE, "oftc", None, {})
    call(database, repo.save_registration, GW, ALICE, "rizon", None, {})
    call(database, repo.save_registration, OTHER_GW, ALICE, "libera", None, {})
    assert call(database, repo.delete_registration, GW, ALICE, "libera") == 1
    assert call(database, repo.delete_registration, GW, ALICE, "libera") == 0
    assert call(database, repo.delete_registration, GW, ALICE) == 2
    assert call(database, repo.list_registrations, GW, ALICE) == []
    assert call(database, repo.get_registration, OTHER_GW, ALICE, "libera") is not None


def test_deleting_registration_cascades_to_contacts(database: Database) -> None:
    """A registration's contacts go with it (ON DELETE CASCADE), others stay."""
    gone = call(database, repo.save_registration, GW, ALICE, "libera", None, {})
    kept = call(database, repo.save_registration, GW, BOB, "libera", None, {})
    call(database, repo.upsert_contact, gone.id, "carol", "Carol", "both")
    call(database, repo.upsert_contact, gone.id, "dave", None, "to")
    call(database, repo.upsert_contact, kept.id, "erin", None, "from")
    call(database, repo.delete_registration, GW, ALICE, "libera")

    def contact_owners(session: Session) -> list[int]:
        return list(session.execute(select(Contact.registration_id)).scalars())

    assert call(database, contact_owners) == [kept.id]
    assert call(database, repo.list_contacts, gone.id) == []


def test_upsert_list_and_delete_contacts(database: Database) -> None:
    """Contacts are added, updated in place, listed by address and removed."""
    reg = call(database, repo.save_registration, GW, ALICE, "libera", None, {})
    zed = call(database, repo.upsert_contact, reg.id, "zed", None, "none")
    amy = call(database, repo.upsert_contact, reg.id, "amy", "Amy", "to")
    updated = call(database, repo.upsert_contact, reg.id, "zed", "Zed", "both")
    assert updated.id == zed.id
    assert (updated.name, updated.subscription) == ("Zed", "both")
    assert call(database, repo.list_contacts, reg.id) == [amy, updated]
    assert call(database, repo.delete_contact, reg.id, "amy") is True
    assert call(database, repo.delete_contact, reg.id, "amy") is False
    assert call(database, repo.list_contacts, reg.id) == [updated]


def test_contact_subscription_is_validated(database: Database) -> None:
    """Only RFC 6121 subscription states are accepted, by the code and by the schema."""
    reg = call(database, repo.save_registration, GW, ALICE, "libera", None, {})
    with pytest.raises(ValueError, match="subscription"):
        call(database, repo.upsert_contact, reg.id, "amy", None, "pending")
    with pytest.raises(IntegrityError), database.sessionmaker.begin() as session:
        # Four characters, so that the CHECK constraint, not the column length, refuses it.
        session.add(Contact(registration_id=reg.id, legacy_address="amy", subscription="nope"))


def test_contact_of_unknown_registration_keeps_transaction_usable(database: Database) -> None:
    """A foreign key violation raises, and the rest of the caller's transaction still commits."""
    reg = call(database, repo.save_registration, GW, ALICE, "libera", None, {})
    with database.sessionmaker.begin() as session:
        with pytest.raises(IntegrityError):
            repo.upsert_contact(session, reg.id + 1000, "amy", None, "none")
        repo.upsert_contact(session, reg.id, "bob", None, "none")
    assert [c.legacy_address for c in call(database, repo.list_contacts, reg.id)] == ["bob"]


def test_registered_users_and_count(database: Database) -> None:
    """Registered users are distinct bare JIDs, sorted, counted per gateway."""
    assert call(database, repo.registered_users, GW) == []
    assert call(database, repo.count_registered_users, GW) == 0
    call(database, repo.save_registration, GW, BOB, "libera", None, {})
    call(database, repo.save_registration, GW, ALICE, "libera", None, {})
    call(database, repo.save_registration, GW, ALICE, "oftc", None, {})
    call(database, repo.save_registration, OTHER_GW, "carol@example.org", "sip:carol@x", None, {})
    assert call(database, repo.registered_users, GW) == [ALICE, BOB]
    assert call(database, repo.count_registered_users, GW) == 2
    assert call(database, repo.registered_users, OTHER_GW) == ["carol@example.org"]


def test_any_credentials(database: Database) -> None:
    """any_credentials is true only while some registration, on any gateway, holds a blob."""
    assert call(database, repo.any_credentials) is False
    call(database, repo.save_registration, GW, ALICE, "libera", None, {})
    assert call(database, repo.any_credentials) is False
    call(database, repo.save_registration, OTHER_GW, BOB, "sip:bob@x", b"blob", {})
    assert call(database, repo.any_credentials) is True
    call(database, repo.delete_registration, OTHER_GW, BOB)
    assert call(database, repo.any_credentials) is False


def test_timestamps_are_stored_as_utc(database: Database) -> None:
    """An aware datetime in any zone reads back as the same instant in UTC; naive is refused."""
    plus_two = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    with database.sessionmaker.begin() as session:
        session.add(
            ArchivedMessage(
                gateway=GW,
                user=ALICE,
                with_jid="#chan%libera@irc.example.org",
                stanza_id="s1",
                timestamp=plus_two,
                direction="in",
                sender="bob",
                body="hi",
            )
        )

    def read(session: Session) -> datetime:
        return session.execute(select(ArchivedMessage.timestamp)).scalar_one()

    stored = call(database, read)
    assert stored == plus_two
    assert stored.tzinfo is UTC
    assert stored.hour == 10
    with pytest.raises(Exception, match="timezone-aware"), database.sessionmaker.begin() as session:
        session.add(
            ArchivedMessage(
                gateway=GW,
                user=ALICE,
                with_jid="bob%libera@irc.example.org",
                stanza_id="s2",
                timestamp=datetime(2026, 3, 1, 12, 0),
                direction="out",
                sender=ALICE,
                body="naive",
            )
        )


@pytest_twisted.ensureDeferred
async def test_database_run_goes_through_the_pool(database: Database) -> None:
    """Database.run executes on the pool thread, commits, and fires on the reactor thread."""
    database.start()
    try:
        seen_threads: list[str] = []

        def save(session: Session) -> repo.RegistrationRecord:
            seen_threads.append(threading.current_thread().name)
            return repo.save_registration(session, GW, ALICE, "libera", b"x", {"nick": "al"})

        saved = await database.run(save)
        assert threading.current_thread() is threading.main_thread()
        assert seen_threads and "xmpp-gateway-db" in seen_threads[0]
        got = await database.run(repo.get_registration, GW, ALICE, legacy_id="libera")
        assert got == saved
        users = await gatherResults([database.run(repo.registered_users, GW) for _ in range(20)])
        assert users == [[ALICE]] * 20
    finally:
        database.stop()
        database.stop()
    assert not database.running


@pytest_twisted.ensureDeferred
async def test_database_run_rolls_back_and_refuses_orm_objects(database: Database) -> None:
    """An exception rolls the transaction back; returning an ORM instance is refused."""
    database.start()
    try:

        def save_then_fail(session: Session) -> None:
            repo.save_registration(session, GW, ALICE, "libera", None, {})
            raise LookupError("boom")

        with pytest.raises(LookupError):
            await database.run(save_then_fail)
        assert await database.run(repo.get_registration, GW, ALICE) is None

        def leak(session: Session) -> Registration:
            repo.save_registration(session, GW, BOB, "libera", None, {})
            return session.execute(select(Registration)).scalar_one()

        with pytest.raises(TypeError, match="ORM instance"):
            await database.run(leak)
        assert await database.run(repo.count_registered_users, GW) == 0
    finally:
        database.stop()


@pytest_twisted.ensureDeferred
async def test_database_bounds_calls_in_flight(database: Database) -> None:
    """No more than max_in_flight calls are handed to the pool at once."""
    from twisted.internet import reactor

    url = database.engine.url.render_as_string(hide_password=False)
    bounded = Database(url, reactor, pool_size=2, max_in_flight=2)
    bounded.start()
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}
    try:

        def count(session: Session) -> int:
            with lock:
                state["now"] += 1
                state["peak"] = max(state["peak"], state["now"])
            result = session.execute(select(func.count()).select_from(Registration)).scalar_one()
            with lock:
                state["now"] -= 1
            return result

        results = await gatherResults([bounded.run(count) for _ in range(30)])
        assert results == [0] * 30
        assert 1 <= state["peak"] <= 2
    finally:
        bounded.stop()


def test_run_after_stop_fails(database: Database) -> None:
    """A stopped Database refuses calls with DatabaseStoppedError instead of hanging."""
    database.start()
    database.stop()
    failure = None

    def record(f: Any) -> None:
        nonlocal failure
        failure = f

    database.run(repo.any_credentials).addErrback(record)
    assert failure is not None
    assert failure.check(DatabaseStoppedError)
    with pytest.raises(DatabaseStoppedError):
        database.start()


def test_pool_stops_at_reactor_shutdown(tmp_path: Path) -> None:
    """start() registers a shutdown trigger that stops the pool, so no thread outlives the reactor."""
    reactor = MemoryReactor()
    db = Database(f"sqlite:///{tmp_path / 'gateway.sqlite3'}", reactor)  # type: ignore[arg-type]
    db.start()
    (trigger, args, kwargs) = reactor.triggers["during"]["shutdown"][0]
    assert db.running
    trigger(*args, **kwargs)
    assert not db.running
    db.stop()  # a second stop, e.g. from the application, is harmless
