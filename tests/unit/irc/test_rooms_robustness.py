"""Hostile IRC input through the whole IRC side of one connection (G9): whatever a server
sends, line after line, no exception escapes, the connection stays up, the text the plugin
formats is XML-safe, and nothing the core writes carries a character XML cannot hold."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from gateway.stanzas import xml_safe
from plugins.irc.addressing import Addressing
from plugins.irc.isupport import ISupport
from plugins.irc.protocol import IrcLineProtocol
from plugins.irc.rooms import Channels

COMMANDS = ["PRIVMSG", "NOTICE", "JOIN", "PART", "KICK", "QUIT", "NICK", "MODE", "TOPIC", "INVITE",
            "353", "366", "332", "333", "401", "471", "473", "474", "475", "005", "PING"]
texts = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=60)
params = st.lists(st.sampled_from(["#chan", "alice", "me", "*", ":", "", "@+bob", "+o", "-b", "x"]) | texts,
                  max_size=6)


def build(line_parts: tuple[str, str, list[str]]) -> bytes:
    source, command, args = line_parts
    middle = [a.replace(" ", "_").lstrip(":") or "x" for a in args[:-1]]
    trailing = [":" + args[-1]] if args else []
    return (f":{source} {command} " + " ".join([*middle, *trailing])).encode("utf-8", "replace")


lines = st.tuples(st.sampled_from(["bob!b@h", "me!m@h", "irc.example.net", "a!@", "!!", "b\x02o\x03b!u@h", "\x01x\x7f!u@h"]),
                  st.sampled_from(COMMANDS), params).map(build) | st.binary(max_size=80).filter(
                      lambda b: b"\n" not in b and b"\r" not in b)


@settings(max_examples=200, deadline=None)
@given(st.lists(lines, max_size=25))
def test_any_server_lines_keep_the_connection_and_emit_xml_safe_text(raw_lines):
    """Random and malformed lines: no exception, the connection answers PING afterwards,
    and every body, subject, reason and text the plugin emits is XML-safe."""
    events: list[object] = []
    isupport = ISupport()
    channels = Channels(user="u@example.org", network="irc.example.net", addressing=Addressing(),
                        isupport=isupport, emit=events.append, own_nick=lambda: "me")
    channels.expect("#chan%irc.example.net", "#chan")
    clock = Clock()
    protocol = IrcLineProtocol(channels.handle, clock=clock, keepalive=None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b":me!m@h JOIN #chan\r\n:irc.example.net 366 me #chan :End of NAMES\r\n")
    for raw in raw_lines:
        protocol.dataReceived(raw + b"\r\n")
    protocol.dataReceived(b"PING :still-there\r\n")
    assert b"PONG" in transport.value() and b"still-there" in transport.value()
    assert not transport.disconnecting
    # Text the plugin formats is XML-safe already; names (nicks, channels) stay as the network
    # spells them, so they can be addressed back, and the core cleans them on the way out
    # (test_hostile_nicks_never_reach_the_xmpp_stream_unsafe).
    for event in events:
        for field in ("body", "subject", "reason", "text"):
            value = getattr(event, field, None)
            if isinstance(value, str):
                assert value == xml_safe(value), (event, value)


def test_hostile_nicks_never_reach_the_xmpp_stream_unsafe():
    """Nicks with control codes (legal on some servers) are stripped from every stanza the
    core writes: addresses, MUC items and bodies."""
    from tests.unit.harness import build_gateway

    server, _ = build_gateway("plugins.irc.plugin:IrcPlugin")
    server.service.start()
    server.handshake()
    server.sent()
    sessions = server.service.sessions
    from gateway.plugin import Occupant, OccupantJoined, RoomMessage
    from gateway.xep.muc import RoomState

    state = sessions.state("alice@example.org")
    room = RoomState(address="#chan%irc.example.net", jid="#chan%irc.example.net@gw.example.org",
                     nick="alice", joined=True, resources={"alice@example.org/phone"})
    state.rooms[room.address] = room
    state.session = object()  # type: ignore[assignment]
    sessions.emit(RoomMessage(user="alice@example.org", room=room.address, nick="b\x02o\x03b", body="hi\x07"))
    sessions.emit(OccupantJoined(user="alice@example.org", room=room.address,
                                 occupant=Occupant(nick="e\x01ve", contact="e\x01ve%irc.example.net")))
    raw = server.endpoint.transport.value().decode()
    assert raw and not any(ch in raw for ch in "\x01\x02\x03\x07")
    server.service.connection.stop()
