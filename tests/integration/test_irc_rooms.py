"""IRC channels as MUC rooms against a real ngircd, slixmpp on the XMPP side and raw IRC
clients on the IRC side (issue 4)."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from contextlib import asynccontextmanager

import pytest
import pytest_twisted
from slixmpp import ClientXMPP

from tests.fixtures.gateway import running_gateway
from tests.fixtures.ircd import raw_irc_client
from tests.fixtures.steps import Recorder
from tests.fixtures.xmpp_client import as_deferred, connected_client

pytestmark = pytest.mark.integration

GW = "gw3.localhost"
NETWORK = "irc.localhost"
_counter = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}{next(_counter)}{uuid.uuid4().hex[:4]}"


def irc_options(ngircd) -> dict:
    return {"networks": {NETWORK: {"host": "127.0.0.1", "port": ngircd.port, "tls": False}},
            "allow_private": True, "throttle_burst": 100, "throttle_rate": 0.01}


def room_jid(channel: str) -> str:
    return f"{channel}%{NETWORK}@{GW}"


class Room:
    """A user's view of one room: what arrived, and helpers to wait for it."""

    def __init__(self, client: ClientXMPP, jid: str) -> None:
        self.client = client
        self.jid = jid
        self.recorder = Recorder(client, GW)

    def of_room(self, start: int = 0):
        return [s for s in self.recorder.stanzas[start:] if s["from"].bare == self.jid]

    async def wait(self, predicate, start: int = 0, timeout: float = 10.0):
        return await self.recorder.wait_for(lambda s: s["from"].bare == self.jid and predicate(s),
                                            start=start, timeout=timeout)


def join_presence(client: ClientXMPP, jid: str, nick: str, password: str | None = None) -> None:
    presence = client.make_presence(pto=f"{jid}/{nick}")
    x = presence.xml.makeelement("{http://jabber.org/protocol/muc}x", {})
    if password:
        child = x.makeelement("{http://jabber.org/protocol/muc}password", {})
        child.text = password
        x.append(child)
    presence.xml.append(x)
    presence.send()


def status_codes(stanza) -> set[str]:
    return {s.get("code") for s in stanza.xml.iter("{http://jabber.org/protocol/muc#user}status")}


@asynccontextmanager
async def joined(prosody, client: ClientXMPP, channel: str, nick: str):
    room = Room(client, room_jid(channel))
    join_presence(client, room.jid, nick)
    await room.wait(lambda s: s.name == "presence" and "110" in status_codes(s))
    await room.wait(lambda s: s.name == "message" and s.xml.find("{jabber:client}subject") is not None)
    yield room


@pytest_twisted.ensureDeferred
async def test_join_talk_both_ways_and_leave(prosody, ngircd, tmp_path):
    """Join order (occupants, self 110, subject), groupchat both ways, leave with 110 and PART."""
    channel = unique("#room")

    async def scenario() -> None:
        async with running_gateway(prosody, GW, tmp_path, plugin="irc", options=irc_options(ngircd)):
            async with raw_irc_client(ngircd, unique("bob")) as bob:
                bob.send(f"JOIN {channel}")
                await bob.read_until(lambda line: " 366 " in line)
                bob.send(f"TOPIC {channel} :Our topic")
                jid, password = prosody.new_user("irc")
                async with connected_client(prosody, jid, password, send_presence=True) as client:
                    alice = unique("alice")
                    room = Room(client, room_jid(channel))
                    join_presence(client, room.jid, alice)
                    subject = await room.wait(lambda s: s.name == "message"
                                              and s.xml.find("{jabber:client}subject") is not None)
                    stanzas = room.of_room()
                    kinds = [(s.name, s["from"].resource) for s in stanzas]
                    # Occupants first (bob, as channel operator), then self with 110, then subject.
                    assert kinds == [("presence", bob.nick), ("presence", alice), ("message", bob.nick)]
                    item = stanzas[0].xml.find("{http://jabber.org/protocol/muc#user}x/"
                                               "{http://jabber.org/protocol/muc#user}item")
                    assert item.get("role") == "moderator"  # bob created the channel: operator
                    assert "110" in status_codes(stanzas[-2])
                    assert subject["subject"] == "Our topic"
                    await bob.read_until(lambda line: "JOIN" in line and alice in line)

                    client.send_message(mto=room.jid, mbody="hello from xmpp", mtype="groupchat")
                    await bob.read_until(lambda line: f"PRIVMSG {channel} :hello from xmpp" in line)
                    bob.send(f"PRIVMSG {channel} :hello from irc")
                    message = await room.wait(lambda s: s.name == "message" and s["body"] == "hello from irc")
                    assert message["from"].resource == bob.nick

                    # Topic set from XMPP: TOPIC on IRC, and the change comes back as a subject.
                    subject_change = client.make_message(mto=room.jid, mtype="groupchat")
                    subject_change["subject"] = "New topic"
                    subject_change.send()
                    await bob.read_until(lambda line: f"TOPIC {channel} :New topic" in line)
                    changed = await room.wait(lambda s: s.name == "message" and s["subject"] == "New topic")
                    assert changed["from"].resource == alice

                    start = len(room.recorder.stanzas)
                    client.send_presence(pto=f"{room.jid}/{alice}", ptype="unavailable")
                    out = await room.wait(lambda s: s.name == "presence" and s["type"] == "unavailable",
                                          start=start)
                    assert "110" in status_codes(out)
                    await bob.read_until(lambda line: ("PART" in line or "QUIT" in line) and alice in line)

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_hostile_and_long_text(prosody, ngircd, tmp_path):
    """A 2000-byte message becomes several PRIVMSGs of at most 512 bytes that join back;
    'hello\\rJOIN #x' never joins #x; latin-1 and control codes arrive as valid XMPP."""
    channel = unique("#text")
    trap = unique("#trap")

    cyrillic_room = unique("#cyr")
    options = irc_options(ngircd)
    options["networks"][NETWORK]["channel_charsets"] = {cyrillic_room: "cp1251"}

    async def scenario() -> None:
        async with running_gateway(prosody, GW, tmp_path, plugin="irc", options=options):
            async with raw_irc_client(ngircd, unique("carl")) as carl:
                carl.send(f"JOIN {channel}")
                await carl.read_until(lambda line: " 366 " in line)
                jid, password = prosody.new_user("irctext")
                async with connected_client(prosody, jid, password, send_presence=True) as client:
                    alice = unique("alice")
                    async with joined(prosody, client, channel, alice) as room:
                        await carl.read_until(lambda line: "JOIN" in line and alice in line)
                        words = " ".join(f"word{i:04d}é" for i in range(200))  # > 2000 bytes of UTF-8
                        assert len(words.encode()) > 2000
                        client.send_message(mto=room.jid, mbody=words, mtype="groupchat")
                        received = []
                        while " ".join(received) != words:
                            line = await carl.read_until(lambda text: f"PRIVMSG {channel} :" in text)
                            assert len(line.encode()) + 2 <= 512
                            received.append(line.split(f"PRIVMSG {channel} :", 1)[1])
                        assert len(received) >= 4

                        client.send_message(mto=room.jid, mbody="hello\rJOIN " + trap, mtype="groupchat")
                        await carl.read_until(lambda text: f"PRIVMSG {channel} :JOIN {trap}" in text)
                        carl.send(f"NAMES {trap}")
                        names = await carl.read_until(lambda text: " 366 " in text or " 353 " in text)
                        assert alice not in names

                        carl.writer.write(f"PRIVMSG {channel} :caf\xe9 cr\xe8me\r\n".encode("latin-1"))
                        latin = await room.wait(lambda s: s.name == "message" and s["body"].startswith("caf"))
                        assert latin["body"] == "café crème"
                        # Another room has its own fallback charset (cp1251) in the network options.
                        carl.send(f"JOIN {cyrillic_room}")
                        await carl.read_until(lambda text: " 366 " in text and cyrillic_room in text)
                        async with joined(prosody, client, cyrillic_room, alice) as cyr:
                            carl.writer.write(f"PRIVMSG {cyrillic_room} :привет\r\n".encode("cp1251"))
                            await cyr.wait(lambda s: s.name == "message" and s["body"] == "привет")
                        carl.send(f"PRIVMSG {channel} :\x02bold\x02 \x0304red\x03 \x1ditalic\x1d \x07bell\x16")
                        styled = await room.wait(lambda s: s.name == "message" and "bold" in s["body"])
                        assert styled["body"] == "*bold* red _italic_ bell"

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_join_errors(prosody, ngircd, tmp_path):
    """Full, invite-only, banned and keyed channels refuse the join with the MUC condition."""
    full, invite, banned, keyed = (unique(p) for p in ("#full", "#invite", "#banned", "#keyed"))

    async def scenario() -> None:
        async with running_gateway(prosody, GW, tmp_path, plugin="irc", options=irc_options(ngircd)):
            async with raw_irc_client(ngircd, unique("op")) as op:
                for channel in (full, invite, banned, keyed):
                    op.send(f"JOIN {channel}")
                    await op.read_until(lambda line, c=channel: " 366 " in line and c in line)
                op.send(f"MODE {full} +l 1")
                op.send(f"MODE {invite} +i")
                op.send(f"MODE {banned} +b *!*@*")
                op.send(f"MODE {keyed} +k sesame")
                await op.read_until(lambda line: "MODE" in line and keyed in line)
                jid, password = prosody.new_user("ircerr")
                async with connected_client(prosody, jid, password, send_presence=True) as client:
                    expected = {full: "service-unavailable", invite: "registration-required",
                                banned: "forbidden", keyed: "not-authorized"}
                    for channel, condition in expected.items():
                        room = Room(client, room_jid(channel))
                        join_presence(client, room.jid, unique("alice"))
                        error = await room.wait(lambda s: s.name == "presence" and s["type"] == "error")
                        assert error["error"]["condition"] == condition, channel
                    room = Room(client, room_jid(keyed))
                    join_presence(client, room.jid, unique("alice"), password="sesame")
                    await room.wait(lambda s: s.name == "presence" and "110" in status_codes(s))

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_two_resources_share_one_irc_presence(prosody, ngircd, tmp_path):
    """Two resources of one user in one room: one IRC nick, both get every line."""
    channel = unique("#pair")

    async def scenario() -> None:
        async with running_gateway(prosody, GW, tmp_path, plugin="irc", options=irc_options(ngircd)):
            async with raw_irc_client(ngircd, unique("dan")) as dan:
                dan.send(f"JOIN {channel}")
                await dan.read_until(lambda line: " 366 " in line)
                jid, password = prosody.new_user("ircpair")
                nick = unique("alice")
                async with connected_client(prosody, jid, password, send_presence=True) as phone, \
                        connected_client(prosody, jid, password, send_presence=True) as laptop:
                    async with joined(prosody, phone, channel, nick) as on_phone, \
                            joined(prosody, laptop, channel, nick) as on_laptop:
                        dan.send(f"PRIVMSG {channel} :to both")
                        for room in (on_phone, on_laptop):
                            await room.wait(lambda s: s.name == "message" and s["body"] == "to both")
                        dan.send(f"NAMES {channel}")
                        names = await dan.read_until(lambda line: " 353 " in line)
                        assert names.count(nick) == 1

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_ircd_restart_rejoins_without_exit(prosody, tmp_path):
    """The ircd restarts: the gateway reconnects and rejoins, the room shows notices, never an exit."""
    from tests.fixtures.ircd import start_ngircd, stop_ngircd

    ircd = await as_deferred(asyncio.to_thread(start_ngircd, tmp_path / "ircd"))
    channel = unique("#phoenix")

    async def scenario() -> None:
        nonlocal ircd
        options = irc_options(ircd)
        async with running_gateway(prosody, GW, tmp_path / "gw", plugin="irc", options=options):
            jid, password = prosody.new_user("ircrestart")
            async with connected_client(prosody, jid, password, send_presence=True) as client:
                alice = unique("alice")
                async with joined(prosody, client, channel, alice) as room:
                    start = len(room.recorder.stanzas)
                    await asyncio.to_thread(stop_ngircd, ircd)
                    await room.wait(lambda s: s.name == "message" and "lost" in (s["body"] or ""),
                                    start=start)
                    ircd = await asyncio.to_thread(start_ngircd, tmp_path / "ircd", port=ircd.port)
                    back = await room.wait(lambda s: s.name == "message" and "Reconnected" in (s["body"] or ""),
                                           start=start, timeout=30)
                    # The gateway's own notices come from the room itself and are not archived.
                    assert back["from"].resource == ""
                    assert back.xml.find("{urn:xmpp:sid:0}stanza-id") is None
                    exits = [s for s in room.of_room(start) if s.name == "presence" and s["type"] == "unavailable"]
                    assert exits == []
                    async with raw_irc_client(ircd, unique("eve")) as eve:
                        eve.send(f"JOIN {channel}")
                        names = await eve.read_until(lambda line: " 353 " in line)
                        assert alice in names
                        eve.send(f"PRIVMSG {channel} :welcome back")
                        await room.wait(lambda s: s.name == "message" and s["body"] == "welcome back",
                                        start=start)

    try:
        await as_deferred(scenario())
    finally:
        stop_ngircd(ircd)


@pytest_twisted.ensureDeferred
async def test_private_messages_ctcp_raw_commands_and_motd(prosody, ngircd, tmp_path):
    """PMs through nick%network and occupant JIDs, both ways; an absent nick bounces with the
    original id; CTCP VERSION and PING answered; raw lines and the MOTD via the network JID."""
    channel = unique("#pm")

    async def scenario() -> None:
        async with running_gateway(prosody, GW, tmp_path, plugin="irc", options=irc_options(ngircd)):
            async with raw_irc_client(ngircd, unique("fay")) as fay:
                fay.send(f"JOIN {channel}")
                await fay.read_until(lambda line: " 366 " in line)
                jid, password = prosody.new_user("ircpm")
                async with connected_client(prosody, jid, password, send_presence=True) as client:
                    alice = unique("alice")
                    network = Recorder(client, GW)
                    async with joined(prosody, client, channel, alice) as room:
                        motd = await network.wait_for(lambda s: s.name == "message" and s["from"].bare
                                                      == f"{NETWORK}@{GW}" and "Welcome to the test" in s["body"])
                        assert motd["type"] == "chat"
                        client.send_message(mto=f"{room.jid}/{fay.nick}", mbody="psst", mtype="chat")
                        await fay.read_until(lambda line: f"PRIVMSG {fay.nick} :psst" in line)
                        client.send_message(mto=f"{fay.nick.lower()}%{NETWORK}@{GW}", mbody="direct",
                                            mtype="chat")
                        await fay.read_until(lambda line: f"PRIVMSG {fay.nick} :direct" in line)
                        fay.send(f"PRIVMSG {alice} :hi alice")
                        reply = await network.wait_for(lambda s: s.name == "message" and s["body"] == "hi alice")
                        assert reply["from"].bare == f"{fay.nick.lower()}%{NETWORK}@{GW}"
                        assert reply["type"] == "chat"

                        fay.send(f"PRIVMSG {alice} :\x01VERSION\x01")
                        await fay.read_until(lambda line: "NOTICE" in line and "\x01VERSION xmpp-gateway" in line)
                        fay.send(f"PRIVMSG {alice} :\x01PING 12345\x01")
                        await fay.read_until(lambda line: "NOTICE" in line and "\x01PING 12345\x01" in line)

                        ghost = unique("ghost")
                        message = client.make_message(mto=f"{ghost}%{NETWORK}@{GW}", mbody="anyone?", mtype="chat")
                        message["id"] = "lost-1"
                        message.send()
                        bounce = await network.wait_for(lambda s: s.name == "message" and s["type"] == "error")
                        assert bounce["id"] == "lost-1"
                        assert bounce["error"]["condition"] == "service-unavailable"

                        client.send_message(mto=f"{NETWORK}@{GW}", mbody=f"PRIVMSG {fay.nick} :raw hello",
                                            mtype="chat")
                        await fay.read_until(lambda line: f"PRIVMSG {fay.nick} :raw hello" in line)

    await as_deferred(scenario())


async def admin(client: ClientXMPP, room: str, **attributes: str):
    iq = client.make_iq_set(ito=room)
    query = iq.xml.makeelement("{http://jabber.org/protocol/muc#admin}query", {})
    item = query.makeelement("{http://jabber.org/protocol/muc#admin}item", {})
    reason = attributes.pop("reason", "")
    for name, value in attributes.items():
        item.set(name, value)
    if reason:
        child = item.makeelement("{http://jabber.org/protocol/muc#admin}reason", {})
        child.text = reason
        item.append(child)
    query.append(item)
    iq.xml.append(query)
    return await iq.send(timeout=30)


@pytest_twisted.ensureDeferred
async def test_moderation_through_muc_admin(prosody, ngircd, tmp_path):
    """muc#admin: moderator -> +o, kick -> KICK (307 shown), outcast -> +b and KICK; refusals
    from a non-operator come back as errors, never unanswered."""
    from slixmpp.exceptions import IqError

    channel = unique("#mod")

    async def scenario() -> None:
        async with running_gateway(prosody, GW, tmp_path, plugin="irc", options=irc_options(ngircd)):
            jid, password = prosody.new_user("ircmod")
            async with connected_client(prosody, jid, password, send_presence=True) as client:
                alice = unique("alice")
                async with joined(prosody, client, channel, alice) as room:  # first in: operator
                    async with raw_irc_client(ngircd, unique("gus")) as gus, \
                            raw_irc_client(ngircd, unique("hal")) as hal:
                        for irc in (gus, hal):
                            irc.send(f"JOIN {channel}")
                            await irc.read_until(lambda line: " 366 " in line)
                            await room.wait(lambda s, n=irc.nick: s.name == "presence" and s["from"].resource == n)
                        await admin(client, room.jid, nick=gus.nick, role="moderator")
                        await gus.read_until(lambda line: f"MODE {channel} +o {gus.nick}" in line)
                        shown = await room.wait(lambda s: s.name == "message" and "Mode" in (s["body"] or ""))
                        assert shown["from"].full == room.jid  # from the room itself
                        assert f"[+o {gus.nick}] by {alice}" in shown["body"]
                        promoted = await room.wait(lambda s: s.name == "presence" and s["from"].resource == gus.nick
                                                   and 'role="moderator"' in str(s))
                        assert promoted is not None

                        with pytest.raises(IqError) as refused:  # hal is no operator
                            async with connected_client(prosody, *prosody.new_user("ircmod2"),
                                                        send_presence=True) as other:
                                async with joined(prosody, other, channel, unique("ivy")):
                                    await admin(other, room.jid, nick=hal.nick, role="none")
                        assert refused.value.iq["error"]["condition"] == "not-allowed"

                        start = len(room.recorder.stanzas)
                        await admin(client, room.jid, nick=hal.nick, role="none", reason="out")
                        await hal.read_until(lambda line: f"KICK {channel} {hal.nick}" in line)
                        kicked = await room.wait(lambda s: s.name == "presence" and s["type"] == "unavailable"
                                                 and s["from"].resource == hal.nick, start=start)
                        assert "307" in status_codes(kicked)

                        await admin(client, room.jid, nick=gus.nick, affiliation="outcast", reason="bye")
                        await gus.read_until(lambda line: f"MODE {channel} +b {gus.nick}!*@*" in line)
                        await gus.read_until(lambda line: f"KICK {channel} {gus.nick}" in line)

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_nick_changes_and_conflicts(prosody, ngircd, tmp_path):
    """A taken nick at join gets 210 with the nick the network gave; a nick change shows 303;
    a change to a taken nick is a conflict presence error."""
    channel = unique("#nicks")

    async def scenario() -> None:
        async with running_gateway(prosody, GW, tmp_path, plugin="irc", options=irc_options(ngircd)):
            async with raw_irc_client(ngircd, unique("taken")) as holder:
                jid, password = prosody.new_user("ircnick")
                async with connected_client(prosody, jid, password, send_presence=True) as client:
                    room = Room(client, room_jid(channel))
                    join_presence(client, room.jid, holder.nick)
                    me = await room.wait(lambda s: s.name == "presence" and "110" in status_codes(s))
                    assert "210" in status_codes(me)
                    assert me["from"].resource == holder.nick + "_"

                    new = unique("renamed")
                    client.send_presence(pto=f"{room.jid}/{new}")
                    changed = await room.wait(lambda s: s.name == "presence" and "303" in status_codes(s))
                    assert changed["type"] == "unavailable"
                    await room.wait(lambda s: s.name == "presence" and s["from"].resource == new
                                    and s["type"] == "available")

                    start = len(room.recorder.stanzas)
                    client.send_presence(pto=f"{room.jid}/{holder.nick}")
                    error = await room.wait(lambda s: s.name == "presence" and s["type"] == "error", start=start)
                    assert error["error"]["condition"] == "conflict"

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_invitations_both_ways(prosody, ngircd, tmp_path):
    """A mediated invitation and a XEP-0249 one become IRC INVITEs; an IRC INVITE arrives as a
    mediated invitation from the room."""
    channel, other = unique("#inv"), unique("#invited")

    async def scenario() -> None:
        async with running_gateway(prosody, GW, tmp_path, plugin="irc", options=irc_options(ngircd)):
            async with raw_irc_client(ngircd, unique("jo")) as jo:
                jid, password = prosody.new_user("ircinv")
                async with connected_client(prosody, jid, password, send_presence=True) as client:
                    alice = unique("alice")
                    async with joined(prosody, client, channel, alice) as room:
                        contact = f"{jo.nick.lower()}%{NETWORK}@{GW}"
                        message = client.make_message(mto=room.jid)
                        x = message.xml.makeelement("{http://jabber.org/protocol/muc#user}x", {})
                        x.append(x.makeelement("{http://jabber.org/protocol/muc#user}invite", {"to": contact}))
                        message.xml.append(x)
                        message.send()
                        await jo.read_until(lambda line: f"INVITE {jo.nick} {channel}" in line
                                            or f"INVITE {jo.nick} :{channel}" in line)
                        direct = client.make_message(mto=contact)
                        direct.xml.append(direct.xml.makeelement("{jabber:x:conference}x", {"jid": room.jid}))
                        direct.send()
                        await jo.read_until(lambda line: "INVITE" in line and channel in line)

                        jo.send(f"JOIN {other}")
                        await jo.read_until(lambda line: " 366 " in line and other in line)
                        invitations = Recorder(client, GW)
                        jo.send(f"INVITE {alice} {other}")
                        invitation = await invitations.wait_for(
                            lambda s: s.name == "message" and s.xml.find(
                                "{http://jabber.org/protocol/muc#user}x/{http://jabber.org/protocol/muc#user}invite")
                            is not None)
                        assert invitation["from"].bare == room_jid(other)
                        invite = invitation.xml.find("{http://jabber.org/protocol/muc#user}x/"
                                                     "{http://jabber.org/protocol/muc#user}invite")
                        assert invite.get("from") == contact

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_channel_list_with_paging(prosody, ngircd, tmp_path):
    """disco#items on network@gateway lists channels with occupants and topics, paged (XEP-0059)."""
    channels = [unique("#list") for _ in range(3)]

    async def scenario() -> None:
        async with running_gateway(prosody, GW, tmp_path, plugin="irc", options=irc_options(ngircd)):
            async with raw_irc_client(ngircd, unique("kim")) as kim:
                for channel in channels:
                    kim.send(f"JOIN {channel}")
                    kim.send(f"TOPIC {channel} :topic of {channel}")
                    await kim.read_until(lambda line, c=channel: "TOPIC" in line and c in line)
                jid, password = prosody.new_user("irclist")
                async with connected_client(prosody, jid, password, send_presence=True) as client:
                    network = f"{NETWORK}@{GW}"
                    info = await client.plugin["xep_0030"].get_info(jid=network, timeout=10)
                    assert ("conference", "irc") in {(i[0], i[1]) for i in info["disco_info"]["identities"]}
                    iq = client.make_iq_get(queryxmlns="http://jabber.org/protocol/disco#items", ito=network)
                    rsm = iq.xml.find("{http://jabber.org/protocol/disco#items}query").makeelement(
                        "{http://jabber.org/protocol/rsm}set", {})
                    maximum = rsm.makeelement("{http://jabber.org/protocol/rsm}max", {})
                    maximum.text = "2"
                    rsm.append(maximum)
                    iq.xml.find("{http://jabber.org/protocol/disco#items}query").append(rsm)
                    result = await iq.send(timeout=20)
                    query = result.xml.find("{http://jabber.org/protocol/disco#items}query")
                    items = query.findall("{http://jabber.org/protocol/disco#items}item")
                    assert len(items) == 2
                    count = int(query.find("{http://jabber.org/protocol/rsm}set/{http://jabber.org/protocol/rsm}count").text)
                    assert count >= 3
                    everything = await client.plugin["xep_0030"].get_items(jid=network, timeout=20)
                    listed = {item[0]: item[2] for item in everything["disco_items"]["items"]}
                    for channel in channels:
                        assert listed[room_jid(channel)] == f"{channel} (1): topic of {channel}"

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_occupants_show_real_jids(prosody, ngircd, tmp_path):
    """Non-anonymous rooms: an occupant who is a gateway user shows their real JID, an IRC user
    their contact JID (nick%network@gateway), through which a private chat works."""
    channel = unique("#jids")

    async def scenario() -> None:
        async with running_gateway(prosody, GW, tmp_path, plugin="irc", options=irc_options(ngircd)):
            async with raw_irc_client(ngircd, unique("lee")) as lee:
                lee.send(f"JOIN {channel}")
                await lee.read_until(lambda line: " 366 " in line)
                first_jid, first_password = prosody.new_user("ircjid")
                second_jid, second_password = prosody.new_user("ircjid")
                async with connected_client(prosody, first_jid, first_password, send_presence=True) as first, \
                        connected_client(prosody, second_jid, second_password, send_presence=True) as second:
                    first_nick = unique("first")
                    async with joined(prosody, first, channel, first_nick):
                        room = Room(second, room_jid(channel))
                        join_presence(second, room.jid, unique("second"))
                        await room.wait(lambda s: s.name == "presence" and "110" in status_codes(s))

                        def item_jid(nick: str) -> str | None:
                            for s in room.of_room():
                                if s.name == "presence" and s["from"].resource == nick:
                                    item = s.xml.find("{http://jabber.org/protocol/muc#user}x/"
                                                      "{http://jabber.org/protocol/muc#user}item")
                                    return item.get("jid")
                            return None

                        assert item_jid(first_nick) == first_jid
                        assert item_jid(lee.nick) == f"{lee.nick.lower()}%{NETWORK}@{GW}"

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_dead_link_is_detected_and_repaired(prosody, tmp_path):
    """A server that stops answering (SIGSTOP) is detected by the keepalive PING; once it
    answers again the gateway reconnects and rejoins, telling the room."""
    import os
    import signal as signals

    from tests.fixtures.ircd import start_ngircd, stop_ngircd

    ircd = await as_deferred(asyncio.to_thread(start_ngircd, tmp_path / "ircd"))
    channel = unique("#alive")
    options = {**irc_options(ircd), "keepalive": 1.0, "keepalive_timeout": 1.0}

    async def scenario() -> None:
        async with running_gateway(prosody, GW, tmp_path / "gw", plugin="irc", options=options):
            jid, password = prosody.new_user("irckeep")
            async with connected_client(prosody, jid, password, send_presence=True) as client:
                async with joined(prosody, client, channel, unique("alice")) as room:
                    start = len(room.recorder.stanzas)
                    os.kill(ircd.process.pid, signals.SIGSTOP)
                    try:
                        await room.wait(lambda s: s.name == "message" and "lost" in (s["body"] or ""),
                                        start=start, timeout=15)
                    finally:
                        os.kill(ircd.process.pid, signals.SIGCONT)
                    back = await room.wait(lambda s: s.name == "message" and "Reconnected" in (s["body"] or ""),
                                           start=start, timeout=30)
                    # The gateway's own notices come from the room itself and are not archived.
                    assert back["from"].resource == ""
                    assert back.xml.find("{urn:xmpp:sid:0}stanza-id") is None

    try:
        await as_deferred(scenario())
    finally:
        stop_ngircd(ircd)


@pytest_twisted.ensureDeferred
async def test_flood_control_paces_lines_after_the_burst(prosody, ngircd, tmp_path):
    """With a burst of 2 and one line per 0.3 s, a 6-line message reaches IRC paced."""
    channel = unique("#pace")
    options = {**irc_options(ngircd), "throttle_burst": 2, "throttle_rate": 0.3}

    async def scenario() -> None:
        async with running_gateway(prosody, GW, tmp_path, plugin="irc", options=options):
            async with raw_irc_client(ngircd, unique("mo")) as mo:
                mo.send(f"JOIN {channel}")
                await mo.read_until(lambda line: " 366 " in line)
                jid, password = prosody.new_user("ircpace")
                async with connected_client(prosody, jid, password, send_presence=True) as client:
                    async with joined(prosody, client, channel, unique("alice")) as room:
                        await asyncio.sleep(1)  # let the bucket refill after the join
                        client.send_message(mto=room.jid, mbody="\n".join(f"line {i}" for i in range(6)),
                                            mtype="groupchat")
                        loop = asyncio.get_running_loop()
                        arrivals = []
                        for i in range(6):
                            await mo.read_until(lambda line, i=i: f":line {i}" in line)
                            arrivals.append(loop.time())
                        # Lines after the burst wait for tokens: the last four take >= 3 x 0.3 s.
                        assert arrivals[-1] - arrivals[1] >= 0.8

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_fixed_network_and_connection_limit(prosody, ngircd, tmp_path):
    """Fixed-network mode addresses rooms as #chan@gateway; a per-user connection limit holds."""
    channel = unique("#fixed")
    fixed = {**irc_options(ngircd), "fixed_network": NETWORK}
    limited = {**irc_options(ngircd), "max_connections": 1}
    limited["networks"] = {**limited["networks"], "other": dict(limited["networks"][NETWORK])}

    async def scenario() -> None:
        jid, password = prosody.new_user("ircfixed")
        async with running_gateway(prosody, GW, tmp_path / "fixed", plugin="irc", options=fixed):
            async with connected_client(prosody, jid, password, send_presence=True) as client:
                room = Room(client, f"{channel}@{GW}")
                join_presence(client, room.jid, unique("alice"))
                await room.wait(lambda s: s.name == "presence" and "110" in status_codes(s))
        async with running_gateway(prosody, GW, tmp_path / "limited", plugin="irc", options=limited):
            async with connected_client(prosody, jid, password, send_presence=True) as client:
                async with joined(prosody, client, channel, unique("alice")):
                    room = Room(client, f"{channel}%other@{GW}")
                    join_presence(client, room.jid, unique("alice"))
                    error = await room.wait(lambda s: s.name == "presence" and s["type"] == "error")
                    assert error["error"]["condition"] == "resource-constraint"

    await as_deferred(scenario())
