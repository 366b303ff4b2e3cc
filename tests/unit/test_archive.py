"""The per-user archive on a fake reactor: batching, live stanza-ids, backfill dedupe, pruning, 1:1 chats."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import Clock

from gateway.archive import ArchiveWriter
from gateway.plugin import RoomMessage
from gateway.store import archive_repository
from gateway.store.archive_repository import ArchiveRow
from gateway.store.models import ArchivedMessage
from tests.unit.harness import build_gateway, matches

GW = "gw.example.org"
ALICE = "alice@example.org"
ROOM = f"#chan@{GW}"
OPTIONS = {"accounts": {"alice": "pw1"}, "allows_unregistered": True,
           "rooms": {"#chan": {"occupants": ["bob"], "subject": "Welcome"}}}
MUC = "<x xmlns='http://jabber.org/protocol/muc'/>"
NS_SID = "urn:xmpp:sid:0"


def make_server(archive: dict | None = None, options: dict | None = None):
    extra = {"archive": archive} if archive is not None else {}
    server, database = build_gateway("tests.fakenet:FakeNetPlugin", options=options or OPTIONS, extra=extra)
    server.database = database
    writes: list[int] = []
    run = database.run

    def counting_run(fn, *args, **kwargs):
        if fn is archive_repository.insert_rows:
            writes.append(len(args[0]))
        return run(fn, *args, **kwargs)

    database.run = counting_run  # type: ignore[method-assign]
    server.writes = writes
    server.service.start()
    server.handshake()
    server.sent()
    return server


@pytest.fixture
def server():
    server = make_server()
    yield server
    server.service.connection.stop()


def send(server, xml):
    server.feed(xml)
    server.clock.advance(0)
    return server.sent()


def join(server, resource="phone", nick="alice", extra=MUC):
    return send(server, f"<presence from='{ALICE}/{resource}' to='{ROOM}/{nick}'>{extra}</presence>")


def rows(server) -> list[ArchivedMessage]:
    with server.database.sessionmaker() as session:
        return list(session.execute(select(ArchivedMessage).order_by(ArchivedMessage.id)).scalars())


def say(server, body, nick="bob", **kwargs):
    server.service.plugin.room_event(RoomMessage(user=ALICE, room="#chan", nick=nick, body=body, **kwargs))
    return server.sent()


def stanza_id(element) -> str | None:
    return next((s["id"] for s in element.elements(NS_SID, "stanza-id")), None)


def test_lines_are_written_in_batches_off_the_event():
    """Recording only queues: a full batch is written at once, a partial one after the interval."""
    server = make_server({"batch_size": 3, "flush_interval": 2.0})
    join(server)
    for index in range(7):
        say(server, f"line {index}")
    assert server.writes == [3, 3]
    assert len(rows(server)) == 6
    server.clock.advance(1.9)
    assert server.writes == [3, 3]
    server.clock.advance(0.2)
    assert server.writes == [3, 3, 1]
    assert [r.body for r in rows(server)] == [f"line {i}" for i in range(7)]
    server.service.connection.stop()


def test_stop_flushes_what_is_queued():
    """A graceful stop writes the partial batch before the database goes."""
    server = make_server({"batch_size": 100, "flush_interval": 60.0})
    join(server)
    say(server, "one")
    say(server, "two")
    assert rows(server) == []
    ensureDeferred(server.service.stop())
    server.clock.advance(0)
    assert [r.body for r in rows(server)] == ["one", "two"]
    assert not [c for c in server.clock.getDelayedCalls() if c.active() and "_on_timer" in repr(c.func)]


def test_live_stanza_id_is_the_archive_id(server):
    """XEP-0359: the stanza-id by the room on a live line and on a reflection is its archive id."""
    join(server)
    [live] = say(server, "hello", legacy_id="m1")
    assert live["id"] == "m1"
    [reflection] = send(server, f"<message type='groupchat' id='c1' from='{ALICE}/phone' to='{ROOM}'>"
                                "<body>mine</body></message>")
    server.clock.advance(1)
    archived = rows(server)
    assert [(r.direction, r.sender, r.body, r.legacy_id) for r in archived] == [
        ("in", "bob", "hello", "m1"), ("out", "alice", "mine", archived[1].legacy_id)]
    assert stanza_id(live) == archived[0].stanza_id
    assert stanza_id(reflection) == archived[1].stanza_id
    assert matches(live, f"/message/stanza-id[@by='{ROOM}']")
    assert {r.user for r in archived} == {ALICE} and {r.with_jid for r in archived} == {ROOM}


def test_lines_are_archived_with_no_resource_online(server):
    """A room the legacy side keeps the user in (persistent room, user offline): lines are archived
    at event time though no stanza goes out, and even with no core state for the user."""
    join(server)
    state = server.service.sessions.users[ALICE]
    state.rooms["#chan"].resources.clear()
    state.resources.clear()
    assert say(server, "while away") == []
    server.service.sessions.users.clear()
    assert say(server, "unknown to the core") == []
    server.clock.advance(1)
    assert [r.body for r in rows(server)] == ["while away", "unknown to the core"]


def test_room_system_lines_are_not_archived_and_have_no_stanza_id(server):
    """Lines from the room itself (no nick: modes, gateway notices) are shown but not archived."""
    join(server)
    [notice] = say(server, "Mode #chan [+o bob]", nick="")
    assert stanza_id(notice) is None
    server.clock.advance(1)
    assert rows(server) == []


def test_should_record_hook_and_disabled_archive():
    """The should_record hook turns recording off per room: no row and no stanza-id; so does enabled=false."""
    server = make_server()
    server.service.archive.should_record = lambda user, address: address != "#chan"
    join(server)
    [line] = say(server, "not recorded")
    assert stanza_id(line) is None and line["id"]
    server.clock.advance(1)
    assert rows(server) == []
    server.service.connection.stop()

    server = make_server({"enabled": False})
    join(server)
    [line] = say(server, "not recorded either")
    assert stanza_id(line) is None
    server.clock.advance(1)
    assert rows(server) == []
    server.service.connection.stop()


def test_timestamped_lines_carry_a_delay(server):
    """A line with an old legacy timestamp (a server's replay) is shown with XEP-0203 <delay/>
    from the room; a live line stamped just now (IRCv3 server-time) is not delayed, but its
    timestamp is what is archived."""
    join(server)
    now = datetime.now(UTC) - timedelta(seconds=2)
    [live] = say(server, "live", timestamp=now)
    assert not matches(live, "/message/delay")
    when = datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)
    [line] = say(server, "stamped", timestamp=when)
    assert matches(line, f"/message/delay[@xmlns='urn:xmpp:delay'][@from='{ROOM}']"
                         "[@stamp='2026-01-02T03:04:05.600000Z']")
    server.clock.advance(1)
    assert [r.timestamp for r in rows(server)] == [now, when]


def test_backfill_is_deduplicated_by_legacy_id(server):
    """Backfilled lines already seen (live, earlier backfill or in the database) are dropped; new ones
    are archived and shown once with their time."""
    join(server)
    say(server, "live", legacy_id="m1")
    server.clock.advance(1)
    old = datetime.now(UTC) - timedelta(hours=1)
    with server.database.sessionmaker.begin() as session:  # archived by an earlier run of the gateway
        archive_repository.insert_rows(session, [ArchiveRow(GW, ALICE, ROOM, "sid-m0", "m0", old, "in",
                                                            "bob", "older")])
    for legacy_id in ("m0", "m1", "m2", "m2", "m3"):
        say(server, f"backfilled {legacy_id}", legacy_id=legacy_id, timestamp=old, backfill=True)
    server.clock.advance(0)
    shown = server.sent()
    assert [str(s.body) for s in shown] == ["backfilled m2", "backfilled m3"]
    assert all(matches(s, "/message/delay") for s in shown)
    say(server, "again", legacy_id="m3", timestamp=old, backfill=True)
    server.clock.advance(1)
    assert server.sent() == []
    assert sorted(r.legacy_id for r in rows(server)) == ["m0", "m1", "m2", "m3"]
    assert stanza_id(shown[0]) == next(r.stanza_id for r in rows(server) if r.legacy_id == "m2")


def test_pruning_by_age():
    """Lines older than max_age_days are pruned at start, then again once an hour has passed and
    a batch is written; younger ones stay; no timer waits for it."""
    server, database = build_gateway("tests.fakenet:FakeNetPlugin", options=OPTIONS,
                                     extra={"archive": {"max_age_days": 7}})
    server.database = database
    now = datetime.now(UTC)
    with database.sessionmaker.begin() as session:
        archive_repository.insert_rows(session, [
            ArchiveRow(GW, ALICE, ROOM, f"s{days}", "", now - timedelta(days=days), "in", "bob", f"{days} days")
            for days in (1, 6, 8, 30)])
    server.service.start()
    server.handshake()
    server.sent()
    assert sorted(r.body for r in rows(server)) == ["1 days", "6 days"]
    with database.sessionmaker.begin() as session:
        archive_repository.insert_rows(session, [ArchiveRow(GW, ALICE, ROOM, "s9", "", now - timedelta(days=9),
                                                            "in", "bob", "9 days")])
    join(server)
    say(server, "soon after start")
    server.clock.advance(1)
    assert "9 days" in [r.body for r in rows(server)]  # not yet an hour since the last pruning
    server.clock.advance(3600)
    assert not [c for c in server.clock.getDelayedCalls() if c.active() and "prune" in repr(c.func)]
    say(server, "an hour later")
    server.clock.advance(1)
    assert sorted(r.body for r in rows(server)) == ["1 days", "6 days", "an hour later", "soon after start"]
    server.service.connection.stop()


def test_keep_forever_never_prunes():
    """max_age_days = 0 keeps everything."""
    server, database = build_gateway("tests.fakenet:FakeNetPlugin", options=OPTIONS,
                                     extra={"archive": {"max_age_days": 0}})
    server.database = database
    with database.sessionmaker.begin() as session:
        archive_repository.insert_rows(session, [
            ArchiveRow(GW, ALICE, ROOM, "ancient", "", datetime(2001, 1, 1, tzinfo=UTC), "in", "bob", "x")])
    server.service.start()
    server.handshake()
    join(server)
    say(server, "new")
    server.clock.advance(100000)
    say(server, "newer")
    server.clock.advance(1)
    assert len(rows(server)) == 3
    server.service.connection.stop()


def test_private_chats_are_archived_both_ways():
    """1:1 chats: the contact's messages (in, with a stanza-id by the contact JID) and the user's."""
    server = make_server(options={**OPTIONS, "contacts": {"alice": ["carol"]}})
    send(server, f"<iq type='set' id='r' from='{ALICE}/phone' to='{GW}'><query xmlns='jabber:iq:register'>"
                 "<username>alice</username><password>pw1</password></query></iq>")
    send(server, f"<presence from='{ALICE}/phone' to='{GW}'/>")
    send(server, f"<message type='chat' id='m1' from='{ALICE}/phone' to='carol@{GW}'><body>hi carol</body></message>")
    server.service.plugin.deliver(ALICE, "carol", "hi alice")
    [message] = [s for s in server.sent() if s.name == "message"]
    server.clock.advance(1)
    archived = rows(server)
    assert [(r.with_jid, r.direction, r.sender, r.body) for r in archived] == [
        (f"carol@{GW}", "out", ALICE, "hi carol"), (f"carol@{GW}", "in", f"carol@{GW}", "hi alice")]
    assert archived[0].legacy_id  # the id the legacy side gave
    assert matches(message, f"/message/stanza-id[@by='carol@{GW}']")
    assert stanza_id(message) == archived[1].stanza_id
    server.service.connection.stop()


def test_backfilled_room_lines_are_deduplicated_but_not_archived(server):
    """A backfilled line from the room itself (no nick) is shown once, with no stanza-id, never archived."""
    join(server)
    for _ in range(2):
        say(server, "Mode +o bob", nick="", legacy_id="sys1", backfill=True,
            timestamp=datetime.now(UTC) - timedelta(minutes=5))
    server.clock.advance(0)
    [shown] = server.sent()
    assert stanza_id(shown) is None and matches(shown, "/message/delay")
    server.clock.advance(1)
    assert rows(server) == []


def test_backfill_for_a_room_left_meanwhile_is_archived_not_shown(server):
    """A backfilled line whose room is gone by the time it is checked is archived only."""
    join(server)
    say(server, "late", legacy_id="b1", backfill=True, timestamp=datetime.now(UTC))
    sent = send(server, f"<presence type='unavailable' from='{ALICE}/phone' to='{ROOM}/alice'/>")
    server.clock.advance(1)
    assert not [s for s in sent + server.sent() if s.name == "message"]
    assert [r.legacy_id for r in rows(server)] == ["b1"]


class ManualDatabase:
    """Database.run whose calls complete only when the test says so."""

    def __init__(self) -> None:
        self.calls: list[tuple[list, Deferred]] = []

    def run(self, fn, rows):
        done: Deferred = Deferred()
        self.calls.append((list(rows), done))
        return done


def row(n: int) -> ArchiveRow:
    return ArchiveRow(GW, ALICE, ROOM, f"s{n}", "", datetime.now(UTC), "in", "bob", f"line {n}")


def test_writer_keeps_one_batch_in_flight_and_flush_waits_only_for_earlier_rows():
    """One batch at a time (so they commit in order); flush() fires once the rows queued before it
    are written, without waiting for rows added later."""
    database = ManualDatabase()
    writer = ArchiveWriter(database, Clock(), batch_size=2, interval=1.0)
    for n in range(3):
        writer.add(row(n))
    assert [len(rows) for rows, _ in database.calls] == [2]
    flushed = writer.flush()
    writer.add(row(3))
    writer.add(row(4))
    assert len(database.calls) == 1 and not flushed.called
    database.calls[0][1].callback(2)
    assert [len(rows) for rows, _ in database.calls] == [2, 2]  # rows 2-3, in order
    database.calls[1][1].callback(2)
    assert flushed.called
    assert [r.body for r in database.calls[1][0]] == ["line 2", "line 3"]


def test_writer_memory_is_bounded_when_the_database_stalls():
    """A stalled database: the queue stops growing at its bound, dropping the oldest rows."""
    database = ManualDatabase()
    writer = ArchiveWriter(database, Clock(), batch_size=2, interval=1.0)
    for n in range(writer.max_pending + 50):
        writer.add(row(n))
    assert len(writer._queue) == writer.max_pending
    assert writer.dropped == 50 - 2  # the first batch is in flight, not queued
    assert writer._queue[-1].body == f"line {writer.max_pending + 49}"


def test_unregistration_forgets_the_users_archive(server):
    """XEP-0077 <remove/>: what was archived for the user goes, lines still in memory included;
    other users' lines stay."""
    reply = send(server, f"<iq type='set' id='r' from='{ALICE}/phone' to='{GW}'>"
                         "<query xmlns='jabber:iq:register'><username>alice</username>"
                         "<password>pw1</password></query></iq>")
    assert matches(reply[0], "/iq[@type='result']")
    join(server)
    say(server, "written")
    server.clock.advance(5)
    server.service.plugin.room_event(RoomMessage(user="carol@example.org", room="#chan", nick="bob",
                                                 body="for carol"))
    say(server, "still in memory")
    assert [r.body for r in rows(server)] == ["written"]
    reply = send(server, f"<iq type='set' id='u' from='{ALICE}/phone' to='{GW}'>"
                         "<query xmlns='jabber:iq:register'><remove/></query></iq>")
    assert any(matches(r, "/iq[@type='result']") for r in reply)
    server.clock.advance(5)
    assert [(r.user, r.body) for r in rows(server)] == [("carol@example.org", "for carol")]
