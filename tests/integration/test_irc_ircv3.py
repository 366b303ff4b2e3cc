"""IRCv3 against a real server: InspIRCd 3 with its IRCv3 modules, linked to Atheme services
(NickServ, SaslServ PLAIN). Capability negotiation, SASL PLAIN success and failure, msgid
tags as stanza ids, and echo-message reflected once per resource.

The issue asked for Ergo; Debian 12 has no Ergo IRC server (its ``ergo`` package is a
chemistry program), so InspIRCd and Atheme from Debian stand in (plugins/irc/inspircd.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import pytest_twisted
from slixmpp import ClientXMPP
from slixmpp.xmlstream import ET

from tests.fixtures.gateway import running_gateway
from tests.fixtures.ircd import RawIrcClient, raw_irc_client
from tests.fixtures.steps import NS_REGISTER
from tests.fixtures.xmpp_client import as_deferred, connected_client
from tests.integration.test_irc_rooms import (
    GW,
    NETWORK,
    Room,
    join_presence,
    joined,
    room_jid,
    status_codes,
    unique,
)

pytestmark = pytest.mark.integration

#: What the gateway asks for that InspIRCd with the modules of plugins/irc/inspircd.py offers.
EXPECTED_CAPS = frozenset({"multi-prefix", "server-time", "message-tags", "echo-message", "away-notify",
                           "account-notify", "extended-join", "chghost", "userhost-in-names"})


def ircv3_options(server) -> dict:
    return {"networks": {NETWORK: {"host": "127.0.0.1", "port": server.port, "tls": False}},
            "allow_private": True, "throttle_burst": 100, "throttle_rate": 0.01}


async def register(client: ClientXMPP, nick: str, account: str, password: str):
    """XEP-0077 registration with the IRC plugin: nick, services account, password."""
    iq = client.make_iq_set(ito=GW)
    query = ET.Element(f"{{{NS_REGISTER}}}query")
    for name, value in (("username", nick), ("sasl_account", account), ("password", password)):
        ET.SubElement(query, f"{{{NS_REGISTER}}}{name}").text = value
    iq.append(query)
    return await iq.send(timeout=10)


async def nickserv_account(server, account: str, password: str) -> None:
    """Register ``account`` with NickServ (no e-mail confirmation), from a raw client."""
    async with raw_irc_client(server, account) as owner:
        owner.send(f"PRIVMSG NickServ :REGISTER {password} {account}@example.com")
        await owner.read_until(lambda line: "NickServ" in line and "is now registered" in line)


@contextlib.asynccontextmanager
async def tagged_irc_client(server, nick: str, caps: str = "message-tags") -> AsyncIterator[RawIrcClient]:
    """A raw client that negotiates ``caps`` (IRCv3) before registering."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    client = RawIrcClient(reader, writer, nick)
    try:
        client.send("CAP LS 302")
        client.send(f"NICK {nick}")
        client.send(f"USER {nick} 0 * :{nick}")
        await client.read_until(lambda line: " CAP * LS " in line)
        client.send(f"CAP REQ :{caps}")
        await client.read_until(lambda line: " CAP " in line and " ACK " in line)
        client.send("CAP END")
        await client.read_until(lambda line: f" 001 {nick} " in line)
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.send("QUIT :bye")
            await writer.drain()
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def tags_of(line: str) -> dict[str, str]:
    if not line.startswith("@"):
        return {}
    tags = {}
    for item in line[1:].split(" ", 1)[0].split(";"):
        key, _, value = item.partition("=")
        tags[key] = value
    return tags


@pytest_twisted.ensureDeferred
async def test_caps_negotiated(prosody, inspircd, tmp_path):
    """The gateway's connection enables every offered cap it wants (CAP LS 302 / REQ / ACK)."""
    channel = unique("#caps")

    async def scenario() -> None:
        async with running_gateway(prosody, GW, tmp_path, plugin="irc", options=ircv3_options(inspircd)) as service:
            jid, password = prosody.new_user("ircv3caps")
            async with connected_client(prosody, jid, password, send_presence=True) as client:
                async with joined(prosody, client, channel, unique("alice")):
                    registration = service.sessions.users[jid].session.connections[NETWORK].registration
                    assert registration.registered
                    assert set(registration.available) >= EXPECTED_CAPS, registration.available
                    assert registration.enabled >= EXPECTED_CAPS, registration.enabled
                    assert "sasl" not in registration.enabled  # no credentials: no SASL asked

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_sasl_plain_logs_in(prosody, inspircd, tmp_path):
    """A registered user connects with SASL PLAIN: IRC sees the account (WHOIS 330, extended-join)."""
    account, secret = unique("acct"), "Sesame-" + unique("pw")
    channel = unique("#sasl")

    async def scenario() -> None:
        await nickserv_account(inspircd, account, secret)
        async with running_gateway(prosody, GW, tmp_path, plugin="irc", options=ircv3_options(inspircd)) as service:
            async with tagged_irc_client(inspircd, unique("bob"), "extended-join account-tag") as bob:
                bob.send(f"JOIN {channel}")
                await bob.read_until(lambda line: " 366 " in line)
                jid, password = prosody.new_user("ircv3sasl")
                async with connected_client(prosody, jid, password, send_presence=True) as client:
                    nick = unique("alice")
                    result = await register(client, nick, account, secret)
                    assert result["type"] == "result"
                    async with joined(prosody, client, channel, nick):
                        join = await bob.read_until(lambda line: " JOIN " in line and f":{nick}!" in line)
                        # extended-join: JOIN <channel> <account> :<realname>
                        assert join.split(" JOIN ", 1)[1].split()[1] == account, join
                        bob.send(f"WHOIS {nick}")
                        logged_in = await bob.read_until(lambda line: f" 330 {bob.nick} {nick} " in line
                                                         or " 318 " in line)
                        assert f" 330 {bob.nick} {nick} {account} " in logged_in, logged_in
                        registration = service.sessions.users[jid].session.connections[NETWORK].registration
                        assert registration.sasl_result == "success"
                        assert registration.account == account

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_sasl_wrong_password_refuses_join(prosody, inspircd, tmp_path):
    """SASL PLAIN with a wrong password: the join is refused with not-authorized."""
    account, secret = unique("acct"), "Sesame-" + unique("pw")
    channel = unique("#nosasl")

    async def scenario() -> None:
        await nickserv_account(inspircd, account, secret)
        async with running_gateway(prosody, GW, tmp_path, plugin="irc", options=ircv3_options(inspircd)):
            jid, password = prosody.new_user("ircv3bad")
            async with connected_client(prosody, jid, password, send_presence=True) as client:
                nick = unique("alice")
                result = await register(client, nick, account, "Wrong-" + secret)
                assert result["type"] == "result"
                room = Room(client, room_jid(channel))
                join_presence(client, room.jid, nick)
                error = await room.wait(lambda s: s.name == "presence" and s["type"] == "error")
                assert error["error"]["condition"] == "not-authorized"
                assert not [s for s in room.of_room() if s.name == "presence" and "110" in status_codes(s)]

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_msgid_is_stanza_id_and_echo_reflected_once(prosody, inspircd, tmp_path):
    """An IRC line's msgid tag becomes the XMPP message id; with echo-message the user's own
    line reaches each of its resources exactly once."""
    channel = unique("#msgid")

    async def scenario() -> None:
        async with running_gateway(prosody, GW, tmp_path, plugin="irc", options=ircv3_options(inspircd)) as service:
            async with raw_irc_client(inspircd, unique("bob")) as bob, \
                    tagged_irc_client(inspircd, unique("carl")) as carl:
                for raw in (bob, carl):
                    raw.send(f"JOIN {channel}")
                    await raw.read_until(lambda line: " 366 " in line)
                jid, password = prosody.new_user("ircv3id")
                nick = unique("alice")
                async with connected_client(prosody, jid, password, send_presence=True) as phone, \
                        connected_client(prosody, jid, password, send_presence=True) as laptop:
                    async with joined(prosody, phone, channel, nick) as on_phone, \
                            joined(prosody, laptop, channel, nick) as on_laptop:
                        registration = service.sessions.users[jid].session.connections[NETWORK].registration
                        assert {"echo-message", "message-tags"} <= registration.enabled
                        await carl.read_until(lambda line: " JOIN " in line and f":{nick}!" in line)

                        bob.send(f"PRIVMSG {channel} :tagged hello")
                        seen = await carl.read_until(lambda line: f"PRIVMSG {channel} :tagged hello" in line)
                        msgid = tags_of(seen).get("msgid")
                        assert msgid, seen
                        for room in (on_phone, on_laptop):
                            message = await room.wait(lambda s: s.name == "message"
                                                      and s["body"] == "tagged hello")
                            assert message["id"] == msgid
                            assert message["from"].resource == bob.nick

                        phone.send_message(mto=on_phone.jid, mbody="said once", mtype="groupchat")
                        await carl.read_until(lambda line: f"PRIVMSG {channel} :said once" in line)
                        # The server echoed "said once" to the gateway before it relays this line.
                        bob.send(f"PRIVMSG {channel} :after the echo")
                        for room in (on_phone, on_laptop):
                            await room.wait(lambda s: s.name == "message" and s["body"] == "after the echo")
                            echoes = [s for s in room.of_room() if s.name == "message" and s["body"] == "said once"]
                            assert len(echoes) == 1, [s["from"] for s in echoes]
                            assert echoes[0]["from"].resource == nick

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_nickserv_identify_without_sasl(prosody, tmp_path):
    """A network without SASL: the registered user is identified with NickServ IDENTIFY."""
    from plugins.irc.inspircd import start_inspircd, stop_inspircd

    server = await as_deferred(asyncio.to_thread(start_inspircd, tmp_path / "nosasl", sasl=False))
    account, secret = unique("ns"), "Sesame-" + unique("pw")
    channel = unique("#ns")

    async def scenario() -> None:
        await nickserv_account(server, account, secret)
        async with running_gateway(prosody, GW, tmp_path / "gw", plugin="irc",
                                   options=ircv3_options(server)) as service:
            jid, password = prosody.new_user("ircns")
            async with connected_client(prosody, jid, password, send_presence=True) as client:
                await register(client, account, account, secret)
                async with joined(prosody, client, channel, account):
                    registration = service.sessions.users[jid].session.connections[NETWORK].registration
                    assert "sasl" not in registration.available
                    async with raw_irc_client(server, unique("who")) as who:
                        for _ in range(50):  # IDENTIFY is a PM to NickServ: give services a moment
                            who.send(f"WHOIS {account}")
                            line = await who.read_until(lambda text: " 318 " in text or " 330 " in text)
                            if " 330 " in line:
                                assert account in line
                                break
                            await asyncio.sleep(0.1)
                        else:
                            raise AssertionError("NickServ never identified the gateway user")

    try:
        await as_deferred(scenario())
    finally:
        stop_inspircd(server)
