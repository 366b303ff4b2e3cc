"""IRCv3 chathistory backfill and server-time (issue 5), over StringTransport and a fake reactor.

No IRC server in Debian 12 offers chathistory (InspIRCd 3.15 has no such module; Debian's
``ergo`` is a chemistry program), so the IRC side is tested here against scripted server
lines that follow https://ircv3.net/specs/extensions/chathistory and /batch."""

from __future__ import annotations

from datetime import UTC, datetime

from twisted.internet.error import ConnectionLost
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from gateway.plugin import RoomJoined, RoomMessage
from plugins.irc.addressing import Addressing
from plugins.irc.chathistory import History, server_time
from plugins.irc.connection import ConnectionSettings, IrcConnection, NetworkSettings
from plugins.irc.isupport import ISupport
from plugins.irc.lines import parse
from plugins.irc.rooms import Channels

ROOM = "#chan%irc.example.net"
CAPS = "batch draft/chathistory server-time message-tags"


def test_server_time_is_an_aware_utc_datetime() -> None:
    """The time tag becomes an aware datetime; a missing or malformed one is None."""
    assert server_time(parse("@time=2026-11-24T05:00:01.250Z PRIVMSG #c :hi")) == \
        datetime(2026, 11, 24, 5, 0, 1, 250000, tzinfo=UTC)
    assert server_time(parse("PRIVMSG #c :hi")) is None
    assert server_time(parse("@time=yesterday PRIVMSG #c :hi")) is None


def test_request_anchors_on_msgid_then_timestamp_and_never_guesses() -> None:
    """LATEST with msgid= when the last line had one, timestamp= otherwise, nothing before any."""
    history = History(str.lower)
    assert history.request("#Chan", 50) is None
    history.seen("#Chan", parse("@time=2026-11-24T05:00:00.000Z PRIVMSG #chan :a"))
    assert history.request("#chan", 50) == "CHATHISTORY LATEST #chan timestamp=2026-11-24T05:00:00.000Z 50"
    history.seen("#chan", parse("@msgid=abc;time=2026-11-24T05:00:01.000Z PRIVMSG #chan :b"))
    assert history.request("#CHAN", 50) == "CHATHISTORY LATEST #CHAN msgid=abc 50"


def test_available_needs_batch_and_the_capability_or_token() -> None:
    """Backfill needs batch (to tell history from live lines) and chathistory in CAP or ISUPPORT."""
    assert History.available({"batch", "draft/chathistory"}, None)
    assert History.available({"batch"}, "100")
    assert not History.available({"draft/chathistory"}, None)
    assert not History.available({"batch", "server-time"}, None)
    assert History.limit("50") == 50 and History.limit("0") == 100 and History.limit(None) == 100


def channels_with(events: list) -> Channels:
    isupport = ISupport()
    channels = Channels(user="u@example.org", network="irc.example.net", addressing=Addressing(),
                        isupport=isupport, emit=events.append, own_nick=lambda: "me")
    channels.expect(ROOM, "#chan")
    for line in (":me!m@h JOIN #chan", ":srv 366 me #chan :End of NAMES"):
        channels.handle(parse(line))
    return channels


def test_live_lines_carry_server_time_and_are_not_backfill() -> None:
    """A live PRIVMSG: timestamp from time, msgid as legacy_id, backfill false."""
    events: list = []
    channels = channels_with(events)
    channels.handle(parse("@msgid=m1;time=2026-11-24T05:00:00.000Z :bob!b@h PRIVMSG #chan :live"))
    message = events[-1]
    assert isinstance(message, RoomMessage)
    assert (message.body, message.legacy_id, message.backfill) == ("live", "m1", False)
    assert message.timestamp == datetime(2026, 11, 24, 5, 0, tzinfo=UTC)


def test_lines_of_a_chathistory_batch_are_backfill_and_other_batches_are_not() -> None:
    """Inside BATCH +ref chathistory: backfill; inside another batch type, or after -ref: live."""
    events: list = []
    channels = channels_with(events)
    history = channels.history
    for line in ("BATCH +h1 chathistory #chan", "BATCH +n1 netjoin"):
        history.on_batch(parse(f":srv {line}"))
    channels.handle(parse("@batch=h1;msgid=old;time=2026-11-24T04:00:00.000Z :bob!b@h PRIVMSG #chan :missed"))
    channels.handle(parse("@batch=n1;msgid=n :bob!b@h PRIVMSG #chan :netjoin line"))
    history.on_batch(parse(":srv BATCH -h1"))
    channels.handle(parse("@batch=h1;msgid=late :bob!b@h PRIVMSG #chan :after the batch"))
    flags = [(e.body, e.backfill) for e in events if isinstance(e, RoomMessage)]
    assert flags == [("missed", True), ("netjoin line", False), ("after the batch", False)]
    missed = next(e for e in events if isinstance(e, RoomMessage) and e.body == "missed")
    assert missed.legacy_id == "old" and missed.timestamp == datetime(2026, 11, 24, 4, tzinfo=UTC)
    # The newest line seen anchors the next request.
    assert history.request("#chan", 10) == "CHATHISTORY LATEST #chan msgid=late 10"


def test_a_server_that_never_closes_batches_cannot_grow_memory() -> None:
    """Open batches are bounded."""
    history = History(str.lower)
    for index in range(1000):
        history.on_batch(parse(f":srv BATCH +b{index} chathistory #chan"))
    assert len(history._batches) <= 64


class Server:
    """One scripted server side of an IrcConnection: each connection attempt gets a fresh
    StringTransport, and lines are fed to the connection's protocol."""

    def __init__(self, caps: str) -> None:
        self.caps = caps
        self.reactor = MemoryReactorClock()
        self.events: list = []
        network = NetworkSettings(name="irc.example.net", host="127.0.0.1", port=6667, tls=False,
                                  address="127.0.0.1")
        self.connection = IrcConnection(
            user="u@example.org", nick="me", network=network, settings=ConnectionSettings(throttle_burst=100),
            addressing=Addressing(""), emit=self.events.append, clock=self.reactor, on_closed=lambda: None)
        self.transport = StringTransport()

    def accept(self) -> None:
        """The TCP connection the last connect() asked for is up; register it."""
        self.transport = StringTransport()
        assert self.connection.protocol is not None
        self.connection.protocol.makeConnection(self.transport)
        self.feed(f":srv CAP * LS :{self.caps}")
        self.feed(f":srv CAP * ACK :{self.caps}")
        self.feed(":srv 001 me :Welcome")
        self.feed(":srv 005 me CHATHISTORY=25 :are supported")

    def feed(self, line: str) -> None:
        assert self.connection.protocol is not None
        self.connection.protocol.dataReceived(line.encode() + b"\r\n")

    def sent(self) -> list[str]:
        lines = self.transport.value().decode().split("\r\n")
        self.transport.clear()
        return [line for line in lines if line]


def test_rejoin_after_a_lost_connection_asks_for_what_was_missed_and_emits_it_as_backfill() -> None:
    """Live line seen (msgid m1); the link drops; after reconnecting and rejoining, CHATHISTORY
    LATEST #chan msgid=m1 25 (the ISUPPORT limit) goes out, and the batch that answers becomes
    RoomMessage(backfill=True) with the lines' msgid and time."""
    server = Server(CAPS)
    server.connection.connect()
    server.accept()
    server.connection.join(ROOM, "#chan", "")
    server.feed(":me!m@h JOIN #chan")
    server.feed(":srv 366 me #chan :End of NAMES")
    server.feed("@msgid=m1;time=2026-11-24T05:00:00.000Z :bob!b@h PRIVMSG #chan :before")
    server.sent()

    assert server.connection.protocol is not None
    server.connection.protocol.connectionLost(Failure(ConnectionLost("gone")))
    server.reactor.advance(200)  # the reconnection timer
    server.accept()
    assert "JOIN #chan" in server.sent()
    server.feed(":me!m@h JOIN #chan")
    server.feed(":srv 366 me #chan :End of NAMES")
    assert "CHATHISTORY LATEST #chan msgid=m1 25" in server.sent()

    server.feed(":srv BATCH +x chathistory #chan")
    server.feed("@batch=x;msgid=m2;time=2026-11-24T05:01:00.000Z :bob!b@h PRIVMSG #chan :while away")
    server.feed(":srv BATCH -x")
    server.feed("@msgid=m3;time=2026-11-24T05:02:00.000Z :bob!b@h PRIVMSG #chan :live again")
    messages = [e for e in server.events if isinstance(e, RoomMessage) and e.nick == "bob"]
    assert [(m.body, m.legacy_id, m.backfill) for m in messages] == [
        ("before", "m1", False), ("while away", "m2", True), ("live again", "m3", False)]
    assert messages[1].timestamp == datetime(2026, 11, 24, 5, 1, tzinfo=UTC)
    assert sum(isinstance(e, RoomJoined) for e in server.events) == 2
    server.connection.quit("")


def test_no_request_without_batch_or_chathistory() -> None:
    """A server with server-time but no chathistory (InspIRCd 3 here) gets no CHATHISTORY."""
    server = Server("server-time message-tags")
    server.connection.connect()
    server.accept()
    server.connection.join(ROOM, "#chan", "")
    server.feed(":me!m@h JOIN #chan")
    server.feed(":srv 366 me #chan :End of NAMES")
    server.feed("@msgid=m1 :bob!b@h PRIVMSG #chan :before")
    assert server.connection.protocol is not None
    server.connection.protocol.connectionLost(Failure(ConnectionLost("gone")))
    server.reactor.advance(200)
    server.accept()
    server.feed(":me!m@h JOIN #chan")
    server.feed(":srv 366 me #chan :End of NAMES")
    assert not [line for line in server.sent() if line.startswith("CHATHISTORY")]
    server.connection.quit("")
