"""What one IRC connection keeps in memory (issue 7, docs/performance.md "RSS per session"):
shared where every connection would hold the same thing, and still correct per connection."""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock, StringTransport

from gateway.plugin import OccupantChanged, RoomJoined
from plugins.irc.addressing import Addressing
from plugins.irc.connection import ConnectionSettings, IrcConnection, NetworkSettings
from plugins.irc.isupport import ISupport
from plugins.irc.lines import parse
from plugins.irc.rooms import Channels

NGIRCD_005 = ["RFC2812", "IRCD=ngIRCd", "CASEMAPPING=ascii", "PREFIX=(qaohv)~&@%+", "CHANTYPES=#&+",
              "CHANMODES=beI,k,l,imMnOPQRstVz", "EXCEPTS=e", "NICKLEN=30", "TOPICLEN=490", "MODES=5"]


def connection(reactor: MemoryReactorClock, events: list) -> IrcConnection:
    network = NetworkSettings(name="irc.example.net", host="127.0.0.1", port=6667, tls=False, address="127.0.0.1")
    return IrcConnection(user="u@example.org", nick="me", network=network, settings=ConnectionSettings(),
                         addressing=Addressing(""), emit=events.append, clock=reactor, on_closed=lambda: None)


def test_a_joined_connection_keeps_its_attributes_inline() -> None:
    """CPython 3.11 stores up to 29 attributes inline (~0.3 kB); one more and the instance gets a
    dict of its own (~1.6 kB per connection)."""
    reactor = MemoryReactorClock()
    events: list = []
    conn = connection(reactor, events)
    conn.connect()
    assert conn.protocol is not None
    conn.protocol.makeConnection(StringTransport())
    for line in (":srv 001 me :Welcome", f":srv 005 me {' '.join(NGIRCD_005)} :are supported"):
        conn.protocol.dataReceived(line.encode() + b"\r\n")
    conn.join("#chan%irc.example.net", "#chan", "")
    for line in (":me!m@h JOIN #chan", ":srv 353 me = #chan :me @op", ":srv 366 me #chan :End of NAMES"):
        conn.protocol.dataReceived(line.encode() + b"\r\n")
    assert any(isinstance(event, RoomJoined) for event in events)
    assert conn.isupport.casemapping == "ascii"
    assert len(vars(conn)) <= 29, sorted(vars(conn))


def test_connections_share_one_factory_class() -> None:
    """Twisted's connectProtocol made a class (~2.5 kB) per connection; ours is one class."""
    reactor = MemoryReactorClock()
    for _ in range(2):
        connection(reactor, []).connect()
    factories = [client[2]._wrappedFactory for client in reactor.tcpClients]
    assert len(factories) == 2 and type(factories[0]) is type(factories[1])
    assert factories[0].buildProtocol(None) is not factories[1].buildProtocol(None)


def test_connections_told_the_same_tokens_share_them_and_stay_independent() -> None:
    first, second = ISupport(), ISupport()
    for isupport in (first, second):
        isupport.update(["me", *NGIRCD_005[:5], "are supported"])
        isupport.update(["me", *NGIRCD_005[5:], "are supported"])
    assert first.tokens is second.tokens
    first.update_tokens(["-EXCEPTS", "NICKLEN=9"])
    assert "EXCEPTS" not in first.tokens and first.nicklen == 9 and first.tokens["NICKLEN"] == "9"
    assert second.tokens["EXCEPTS"] == "e" and second.nicklen == 30 and second.tokens["NICKLEN"] == "30"
    assert first.chanmodes == second.chanmodes == ("beI", "k", "l", "imMnOPQRstVz")


def test_roles_follow_prefix_rank_and_mode_changes() -> None:
    """Members share one empty mode set; roles come from the highest PREFIX mode, per ISUPPORT."""
    isupport = ISupport()
    isupport.update(["me", "PREFIX=(qaohv)~&@%+", "are supported"])
    events: list = []
    channels = Channels(user="u@example.org", network="irc.example.net", addressing=Addressing(),
                        isupport=isupport, emit=events.append, own_nick=lambda: "me")
    channels.expect("#chan%irc.example.net", "#chan")
    for line in (":me!m@h JOIN #chan", ":srv 353 me = #chan :me ~owner @+op +voice plain %half",
                 ":srv 366 me #chan :End of NAMES"):
        channels.handle(parse(line))
    joined = next(event for event in events if isinstance(event, RoomJoined))
    roles = {o.nick: (o.role, o.affiliation) for o in joined.occupants}
    assert roles == {"owner": ("moderator", "owner"), "op": ("moderator", "admin"),
                     "voice": ("participant", "member"), "plain": ("participant", "none"),
                     "half": ("moderator", "member")}
    channels.handle(parse(":owner!o@h MODE #chan -o+v op plain"))
    channels.handle(parse(":owner!o@h MODE #chan -v op"))
    changed = [(e.occupant.nick, e.occupant.role, e.occupant.affiliation)
               for e in events if isinstance(e, OccupantChanged)]
    assert changed == [("op", "participant", "member"), ("plain", "participant", "member"),
                       ("op", "participant", "none")]
