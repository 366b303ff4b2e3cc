"""Contract suite of gateway.store.archive_repository, on SQLite and on PostgreSQL (STYLE.md G8)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.store import archive_repository as repo
from gateway.store.archive_repository import ArchiveQuery, ArchiveRow
from gateway.store.db import Database
from tests.fixtures.store import call

GW = "irc.example.org"
ALICE = "alice@example.com"
BOB = "bob@example.net"
ROOM = f"#chan%net@{GW}"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def line(n: int, *, user: str = ALICE, with_jid: str = ROOM, sender: str = "bob", legacy_id: str = "",
         at: datetime | None = None) -> ArchiveRow:
    return ArchiveRow(GW, user, with_jid, f"id{n:02d}", legacy_id, at or T0 + timedelta(minutes=n), "in",
                      sender, f"line {n}")


@pytest.fixture
def archive(database: Database) -> Database:
    """Ten lines of ALICE in ROOM (id00..id09, one a minute, bob and carol in turn), plus others' lines."""
    rows = [line(n, sender="bob" if n % 2 == 0 else "carol") for n in range(10)]
    rows += [line(50, user=BOB), line(51, with_jid=f"other@{GW}")]
    assert call(database, repo.insert_rows, rows) == 12
    return database


def ids(page: repo.Page) -> list[str]:
    return [r.stanza_id for r in page.records]


def q(**kwargs) -> ArchiveQuery:
    return ArchiveQuery(gateway=GW, user=ALICE, with_jid=ROOM, **kwargs)


def test_forward_paging_with_after(archive: Database) -> None:
    """Pages in chronological order; complete only on the last one; count ignores the position."""
    first = call(archive, repo.query, q(limit=4))
    assert ids(first) == ["id00", "id01", "id02", "id03"] and not first.complete and first.count == 10
    second = call(archive, repo.query, q(limit=4, after="id03"))
    assert ids(second) == ["id04", "id05", "id06", "id07"] and not second.complete
    last = call(archive, repo.query, q(limit=4, after="id07"))
    assert ids(last) == ["id08", "id09"] and last.complete and last.count == 10


def test_backward_paging_and_last_page(archive: Database) -> None:
    """An empty <before/> is the last page; before=id pages back; both chronological within the page."""
    last = call(archive, repo.query, q(limit=3, before=""))
    assert ids(last) == ["id07", "id08", "id09"] and not last.complete
    earlier = call(archive, repo.query, q(limit=3, before="id07"))
    assert ids(earlier) == ["id04", "id05", "id06"]
    start = call(archive, repo.query, q(limit=5, before="id03"))
    assert ids(start) == ["id00", "id01", "id02"] and start.complete


def test_filters(archive: Database) -> None:
    """start/end are inclusive; sender filters a room archive by nick; ids fetch given lines."""
    page = call(archive, repo.query, q(start=T0 + timedelta(minutes=2), end=T0 + timedelta(minutes=5)))
    assert ids(page) == ["id02", "id03", "id04", "id05"] and page.complete and page.count == 4
    assert ids(call(archive, repo.query, q(sender="carol", limit=2))) == ["id01", "id03"]
    assert ids(call(archive, repo.query, q(ids=("id07", "id02")))) == ["id02", "id07"]
    assert ids(call(archive, repo.query, q(after_id="id05", before_id="id08"))) == ["id06", "id07"]
    assert call(archive, repo.query, q(after_id="id05")).count == 4


def test_unknown_or_foreign_ids_are_refused(archive: Database) -> None:
    """An id that is not in this user's archive with this JID is unknown, even if another user has it."""
    for request in (q(after="nope"), q(before="id50"), q(after_id="id51"), q(ids=("id01", "id50"))):
        with pytest.raises(repo.UnknownArchiveId):
            call(archive, repo.query, request)


def test_users_never_see_each_other(archive: Database) -> None:
    """Bob's archive holds only his line; Alice's other conversation stays apart."""
    bob = call(archive, repo.query, ArchiveQuery(gateway=GW, user=BOB, with_jid=ROOM))
    assert ids(bob) == ["id50"]
    assert call(archive, repo.query, q()).count == 10


def test_same_timestamp_keeps_insertion_order(database: Database) -> None:
    """Lines of the same instant are ordered by insertion, and paging does not skip any."""
    call(database, repo.insert_rows, [line(n, at=T0) for n in range(5)])
    first = call(database, repo.query, q(limit=2))
    rest = call(database, repo.query, q(limit=10, after=ids(first)[-1]))
    assert ids(first) + ids(rest) == [f"id{n:02d}" for n in range(5)]


def test_recent_for_history(archive: Database) -> None:
    """The newest N lines at or after a time, oldest first."""
    assert [r.stanza_id for r in call(archive, repo.recent, GW, ALICE, ROOM, None, 3)] == ["id07", "id08", "id09"]
    since = call(archive, repo.recent, GW, ALICE, ROOM, T0 + timedelta(minutes=8), 5)
    assert [r.stanza_id for r in since] == ["id08", "id09"]
    assert since[0].timestamp == T0 + timedelta(minutes=8) and since[0].body == "line 8"


def test_existing_legacy_ids(database: Database) -> None:
    """Backfill dedupe: which legacy ids this user already has with this JID."""
    call(database, repo.insert_rows, [line(1, legacy_id="a"), line(2, legacy_id="b"),
                                      line(3, legacy_id="c", user=BOB)])
    assert call(database, repo.existing_legacy_ids, GW, ALICE, ROOM, ["a", "c", "d"]) == {"a"}
    many = [f"x{n}" for n in range(1200)] + ["b"]
    assert call(database, repo.existing_legacy_ids, GW, ALICE, ROOM, many) == {"b"}


def test_prune_in_chunks(database: Database) -> None:
    """Lines older than the cut are deleted a chunk at a time; others and other gateways stay."""
    old = [line(n, at=T0 - timedelta(days=100 + n)) for n in range(5)]
    other = ArchiveRow("sip.example.org", ALICE, ROOM, "sip", "", T0 - timedelta(days=200), "in", "x", "y")
    call(database, repo.insert_rows, [*old, line(10), other])
    assert call(database, repo.prune, GW, T0 - timedelta(days=90), 3) == 3
    assert call(database, repo.prune, GW, T0 - timedelta(days=90), 3) == 2
    assert call(database, repo.prune, GW, T0 - timedelta(days=90), 3) == 0
    assert ids(call(database, repo.query, q())) == ["id10"]
    assert call(database, repo.query, ArchiveQuery(gateway="sip.example.org", user=ALICE, with_jid=ROOM)).count == 1


def test_archive_keeps_what_xml_can_carry(database: Database) -> None:
    """Lines with NUL and control codes are stored cleaned, on PostgreSQL too (its text refuses NUL)."""
    from twisted.internet.task import Clock

    from gateway.archive import Archive
    from gateway.config import ArchiveConfig

    class Inline:
        def run(self, fn, *args):
            from twisted.internet.defer import succeed

            return succeed(call(database, fn, *args))

    archive = Archive(gateway_jid=GW, database=Inline(), clock=Clock(), config=ArchiveConfig(batch_size=1))
    archive.record(ALICE, "#chan%net", ROOM, sender="b\x00ob", body="a\x00b\x02c", direction="in")
    [record] = call(database, repo.query, q()).records
    assert (record.sender, record.body) == ("bob", "abc")
