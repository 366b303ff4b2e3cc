"""XEP-0045 §7.2.15 history on join from the user's archive, on a fake reactor.

Attributes follow https://xmpp.org/extensions/xep-0045.html#enter-managehistory.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from twisted.internet.defer import Deferred

from gateway.plugin import RoomLeft, RoomMessage
from gateway.store import archive_repository
from gateway.store.archive_repository import ArchiveRow
from gateway.xep.delay import format_stamp
from tests.unit.harness import build_gateway, matches

GW = "gw.example.org"
ALICE = "alice@example.org"
ROOM = f"#chan@{GW}"
OPTIONS = {"allows_unregistered": True, "rooms": {"#chan": {"occupants": ["bob"], "subject": "Welcome"}}}
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def make_server(archive: dict | None = None):
    server, database = build_gateway("tests.fakenet:FakeNetPlugin", options=OPTIONS,
                                     extra={"archive": {"history_length": 4, **(archive or {})}})
    server.database = database
    server.service.archive.now = lambda: NOW
    server.service.start()
    server.handshake()
    server.sent()
    return server


@pytest.fixture
def server():
    server = make_server()
    with server.database.sessionmaker.begin() as session:
        # Ten lines in Alice's archive, one a minute up to a minute ago; her own is line 9.
        archive_repository.insert_rows(session, [
            ArchiveRow(GW, ALICE, ROOM, f"sid{n}", "", NOW - timedelta(minutes=10 - n), "out" if n == 9 else "in",
                       "alice" if n == 9 else "bob", f"line {n}") for n in range(10)])
    yield server
    server.service.connection.stop()


def join(server, history: str = "", resource: str = "phone", user: str = ALICE):
    server.feed(f"<presence from='{user}/{resource}' to='{ROOM}/alice'>"
                f"<x xmlns='http://jabber.org/protocol/muc'>{history}</x></presence>")
    server.clock.advance(0)
    return server.sent()


def history_of(sent) -> list[str]:
    return [str(s.body) for s in sent if s.name == "message" and s.body is not None]


def test_default_history_between_self_presence_and_subject(server):
    """§7.2.15-16: without <history/>, history_length lines after the self-presence, before the subject,
    each with a delay from the room, an id and its archive stanza-id; the user's own line from their nick."""
    sent = join(server)
    kinds = [s.name for s in sent]
    assert kinds == ["presence", "presence", "message", "message", "message", "message", "message"]
    assert matches(sent[1], "/presence/x/status[@code='110']")
    assert history_of(sent) == ["line 6", "line 7", "line 8", "line 9"]
    first = sent[2]
    assert first["from"] == f"{ROOM}/bob" and first["type"] == "groupchat" and first["id"] == "sid6"
    assert matches(first, f"/message/delay[@xmlns='urn:xmpp:delay'][@from='{ROOM}']"
                          f"[@stamp='{format_stamp(NOW - timedelta(minutes=4))}']")
    assert matches(first, f"/message/stanza-id[@by='{ROOM}'][@id='sid6']")
    assert sent[5]["from"] == f"{ROOM}/alice"
    assert matches(sent[6], "/message/subject")


def test_maxstanzas(server):
    """maxstanzas limits the count, and may ask for more than the default."""
    assert history_of(join(server, "<history maxstanzas='2'/>")) == ["line 8", "line 9"]
    assert len(history_of(join(server, "<history maxstanzas='7'/>", resource="laptop"))) == 7


@pytest.mark.parametrize("history", ["<history maxstanzas='0'/>", "<history maxchars='0'/>"])
def test_zero_means_no_history(server, history):
    """maxstanzas=0 or maxchars=0: no history at all, the subject follows the self-presence."""
    sent = join(server, history)
    assert history_of(sent) == [] and matches(sent[-1], "/message/subject")


def test_maxchars_counts_whole_stanzas(server):
    """maxchars counts the characters of the complete stanzas as sent; the newest lines that fit."""
    full = [s for s in join(server, "<history maxstanzas='3'/>", resource="r1") if s.body is not None]
    # As written on the component stream (the parsed copy also declares the stream's namespace).
    sizes = [len(s.toXml().replace(" xmlns='jabber:component:accept'", "", 1)) for s in full]
    budget = sizes[1] + sizes[2]
    assert history_of(join(server, f"<history maxchars='{budget}'/>", resource="r2")) == ["line 8", "line 9"]
    assert history_of(join(server, f"<history maxchars='{budget - 1}'/>", resource="r3")) == ["line 9"]


def test_seconds(server):
    """seconds keeps the lines of the last that many seconds (at most the default count)."""
    assert history_of(join(server, "<history seconds='150'/>")) == ["line 8", "line 9"]


def test_since(server):
    """since (XEP-0082) keeps lines at or after that time; combined limits all apply."""
    since = format_stamp(NOW - timedelta(minutes=3))
    assert history_of(join(server, f"<history since='{since}'/>")) == ["line 7", "line 8", "line 9"]
    both = join(server, f"<history since='{since}' maxstanzas='1'/>", resource="laptop")
    assert history_of(both) == ["line 9"]
    zoned = join(server, "<history since='2026-05-01T13:57:30+02:00'/>", resource="r3")
    assert history_of(zoned) == ["line 8", "line 9"]


def test_malformed_attributes_are_ignored(server):
    """A malformed value counts as absent: the default history."""
    sent = join(server, "<history maxstanzas='many' seconds='-5' since='yesterday'/>")
    assert history_of(sent) == ["line 6", "line 7", "line 8", "line 9"]


def test_huge_seconds_means_everything(server):
    """A seconds value beyond what a date can hold is clamped, not an error: the default history."""
    sent = join(server, f"<history seconds='{10**30}'/>")
    assert history_of(sent) == ["line 6", "line 7", "line 8", "line 9"]


def test_history_is_per_user(server):
    """Another user joining gets only what reached them: nothing said before they were there."""
    sent = join(server, user="carol@example.org")
    assert history_of(sent) == [] and matches(sent[-1], "/message/subject")


def test_no_history_when_the_archive_is_off():
    """enabled = false: joins have no history."""
    server = make_server({"enabled": False})
    with server.database.sessionmaker.begin() as session:
        archive_repository.insert_rows(session, [ArchiveRow(GW, ALICE, ROOM, "s", "", NOW, "in", "bob", "x")])
    assert history_of(join(server)) == []
    server.service.connection.stop()


def test_live_lines_wait_for_the_history():
    """While the history is read, live lines for that resource wait, then follow the subject; a line
    already in the history is not shown twice."""
    server = make_server()
    pending = _slow_history(server)
    plugin = server.service.plugin
    sent = join(server)
    assert [s.name for s in sent] == ["presence", "presence"]  # history being read
    plugin.room_event(RoomMessage(user=ALICE, room="#chan", nick="bob", body="live one"))
    assert server.sent() == []
    [(later, result)] = pending
    later.callback(result.result)
    sent = server.sent()
    assert [s.name for s in sent][-2:] == ["message", "message"]
    assert matches(sent[-2], "/message/subject") and str(sent[-1].body) == "live one"
    server.service.connection.stop()


def _slow_history(server) -> list:
    """Hold every history read until the test releases it: [(deferred, result)]."""
    pending: list = []
    run = server.database.run

    def slow_run(fn, *args, **kwargs):
        if fn is archive_repository.recent:
            result = run(fn, *args, **kwargs)
            later: Deferred = Deferred()
            pending.append((later, result))
            return later
        return run(fn, *args, **kwargs)

    server.database.run = slow_run
    return pending


def test_no_history_after_the_room_is_gone():
    """The legacy side removes the user (RoomLeft) while the history is read: the exit is the
    last thing the resource gets from the room, no history or subject after it."""
    server = make_server()
    pending = _slow_history(server)
    join(server)
    server.service.plugin.room_event(RoomLeft(user=ALICE, room="#chan", reason="kicked", kicked_by="op"))
    [exit_] = server.sent()
    assert exit_["type"] == "unavailable"
    [(later, result)] = pending
    later.callback(result.result)
    assert server.sent() == []
    server.service.connection.stop()


def test_joining_again_during_the_history_keeps_the_waiting_lines():
    """A second join of the same resource while the first history is read: the live line that
    waited is delivered once, after the second history and subject."""
    server = make_server()
    pending = _slow_history(server)
    plugin = server.service.plugin
    join(server)
    plugin.room_event(RoomMessage(user=ALICE, room="#chan", nick="bob", body="live one"))
    join(server)  # the client lost track and joins again
    (first, first_result), (second, second_result) = pending
    first.callback(first_result.result)
    assert history_of(server.sent()) == []  # the first read gave way
    second.callback(second_result.result)
    sent = server.sent()
    assert history_of(sent).count("live one") == 1 and history_of(sent)[-1] == "live one"
    assert matches(sent[-2], "/message/subject")
    server.service.connection.stop()
