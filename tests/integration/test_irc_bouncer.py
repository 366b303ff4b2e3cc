"""The IRC gateway as a bouncer (issue 5 item 2) against a real ngircd: a persistent room stays
joined on IRC while its user is offline, and after a gateway restart (same database) the
persistent rooms and the autojoin rooms of registered networks are joined again with no user
action."""

from __future__ import annotations

import asyncio

import pytest
import pytest_twisted
from slixmpp import ClientXMPP
from slixmpp.xmlstream import ET

from gateway.store.crypto import generate_key
from tests.fixtures.gateway import eventually, running_gateway
from tests.fixtures.ircd import RawIrcClient, raw_irc_client
from tests.fixtures.xmpp_client import as_deferred, connected_client
from tests.integration.test_irc_networks import NETWORK_JID, register_form
from tests.integration.test_irc_rooms import GW, NETWORK, irc_options, joined, unique

pytestmark = pytest.mark.integration

NS_COMMANDS = "http://jabber.org/protocol/commands"
NS_DATA = "jabber:x:data"


async def run_command(client: ClientXMPP, to: str, node: str, values: dict[str, str] | None = None):
    """XEP-0050: execute ``node`` at ``to``; with ``values``, submit them in the second step.
    Returns the last <command/> answer (its notes and forms)."""
    iq = client.make_iq_set(ito=to)
    iq.append(ET.Element(f"{{{NS_COMMANDS}}}command", {"node": node, "action": "execute"}))
    answer = (await iq.send(timeout=20)).xml.find(f"{{{NS_COMMANDS}}}command")
    if values is None or answer.get("status") == "completed":
        return answer
    iq = client.make_iq_set(ito=to)
    command = ET.SubElement(iq.xml, f"{{{NS_COMMANDS}}}command",
                            {"node": node, "sessionid": answer.get("sessionid"), "action": "complete"})
    form = ET.SubElement(command, f"{{{NS_DATA}}}x", {"type": "submit"})
    for var, value in values.items():
        field = ET.SubElement(form, f"{{{NS_DATA}}}field", {"var": var})
        for line in value.split("\n"):
            ET.SubElement(field, f"{{{NS_DATA}}}value").text = line
    return (await iq.send(timeout=30)).xml.find(f"{{{NS_COMMANDS}}}command")


def note_of(command) -> str:
    return command.findtext(f"{{{NS_COMMANDS}}}note") or ""


def leave(client: ClientXMPP, room: str, nick: str) -> None:
    client.make_presence(pto=f"{room}/{nick}", ptype="unavailable").send()


async def names(irc: RawIrcClient, channel: str) -> set[str]:
    irc.send(f"NAMES {channel}")
    listed: set[str] = set()
    while True:
        line = await irc.read_until(lambda line: f" 353 {irc.nick} " in line or f" 366 {irc.nick} " in line)
        if " 366 " in line:
            return listed
        listed |= {name.lstrip("@+") for name in line.rsplit(" :", 1)[1].split()}


async def offline(irc: RawIrcClient, nick: str, timeout: float = 10.0) -> None:
    """Wait until ``nick`` is on no connection (ISON answers without it)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        irc.send(f"ISON {nick}")
        line = await irc.read_until(lambda line: f" 303 {irc.nick} " in line)
        if nick.lower() not in line.rsplit(":", 1)[1].lower().split():
            return
        assert asyncio.get_running_loop().time() < deadline, f"{nick} still on IRC"
        await asyncio.sleep(0.1)


async def quiet_for(irc: RawIrcClient, seconds: float, bad) -> None:
    """Read for ``seconds``; fail on any line ``bad`` matches."""
    with pytest.raises(TimeoutError):
        line = await irc.read_until(bad, timeout=seconds)
        raise AssertionError(f"unexpected IRC line: {line}")


@pytest_twisted.ensureDeferred
async def test_persistent_room_stays_joined_offline_and_after_a_restart(prosody, ngircd, tmp_path):
    """configure persistent=true on the room JID; the user leaves and goes offline: no PART or
    QUIT on IRC, the nick stays in NAMES and IRC talks on. After a restart with the same
    database the room is joined again though the user never comes back."""
    channel = unique("#persist")
    key = generate_key()
    options = irc_options(ngircd)

    async def scenario() -> None:
        async with raw_irc_client(ngircd, unique("bob")) as bob:
            bob.send(f"JOIN {channel}")
            await bob.read_until(lambda line: " 366 " in line)
            nick = unique("alice")
            jid, password = prosody.new_user("persist")
            async with running_gateway(prosody, GW, tmp_path, plugin="irc", options=options, key=key) as service:
                async with connected_client(prosody, jid, password, send_presence=True) as client:
                    async with joined(prosody, client, channel, nick) as room:
                        await bob.read_until(lambda line: " JOIN " in line and f":{nick}!" in line)
                        done = await run_command(client, room.jid, "configure", {"persistent": "true"})
                        assert note_of(done) == "Configuration successfully applied."
                        start = len(room.recorder.stanzas)
                        leave(client, room.jid, nick)
                        # The leaving resource still gets its own unavailable (XEP-0045 §7.14).
                        await room.wait(lambda s: s.name == "presence" and s["type"] == "unavailable"
                                        and s["from"].resource == nick, start=start)
                # The XMPP user is offline now: still on IRC, and the legacy session lives.
                await quiet_for(bob, 2.0, lambda line: f":{nick}!" in line and (" PART " in line
                                                                                 or " QUIT " in line))
                assert nick in await names(bob, channel)
                state = service.sessions.users[jid]
                assert not state.resources and state.session is not None
                bob.send(f"PRIVMSG {channel} :while you were away")
                await eventually(lambda: state.rooms[f"{channel}%{NETWORK}".lower()].joined, what="room kept")
            # The gateway stopped (QUIT); it comes back with the same database.
            await bob.read_until(lambda line: f":{nick}!" in line and " QUIT " in line)
            async with running_gateway(prosody, GW, tmp_path, plugin="irc", options=options, key=key):
                await bob.read_until(lambda line: (f":{nick}!" in line and f" JOIN :{channel}" in line)
                                     or (f":{nick}!" in line and f" JOIN {channel}" in line), timeout=20)
                assert nick in await names(bob, channel)

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_non_persistent_room_is_left_when_the_user_goes_offline(prosody, ngircd, tmp_path):
    """Without persistence nothing changes: the last resource going offline PARTs the channel."""
    channel = unique("#transient")

    async def scenario() -> None:
        async with raw_irc_client(ngircd, unique("bob")) as bob:
            bob.send(f"JOIN {channel}")
            await bob.read_until(lambda line: " 366 " in line)
            nick = unique("alice")
            jid, password = prosody.new_user("transient")
            async with running_gateway(prosody, GW, tmp_path, plugin="irc", options=irc_options(ngircd)):
                async with connected_client(prosody, jid, password, send_presence=True) as client:
                    async with joined(prosody, client, channel, nick):
                        await bob.read_until(lambda line: " JOIN " in line and f":{nick}!" in line)
                await bob.read_until(lambda line: f":{nick}!" in line and (" PART " in line or " QUIT " in line))

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_registered_network_autojoins_at_logon_and_after_a_restart(prosody, ngircd, tmp_path):
    """A network registered with autojoin rooms: at logon the gateway joins them on IRC with
    the registered nick (no join presence from the user); the user's client can then join the
    room and sees it at once; after a restart the online user's rooms are joined again."""
    channel = unique("#auto")
    key = generate_key()
    options = irc_options(ngircd)

    async def scenario() -> None:
        async with raw_irc_client(ngircd, unique("bob")) as bob:
            bob.send(f"JOIN {channel}")
            await bob.read_until(lambda line: " 366 " in line)
            nick = unique("dave")
            jid, password = prosody.new_user("autojoin")
            async with connected_client(prosody, jid, password, send_presence=True) as client:
                await client.get_roster()
                async with running_gateway(prosody, GW, tmp_path, plugin="irc", options=options, key=key) as service:
                    result = await register_form(client, NETWORK_JID, {"nick": nick})
                    assert result["type"] == "result"
                    # The autojoin list set by the network JID's ad-hoc configure (same settings).
                    done = await run_command(client, NETWORK_JID, "configure", {"autojoin": channel})
                    assert note_of(done) == "Configuration successfully applied."
                    await eventually(lambda: client.client_roster[GW]["subscription"] == "both",
                                     what="mutual subscription with the gateway")
                    # Log off (the nick leaves IRC, if the subscription already logged on) and on:
                    # the logon joins the autojoin rooms with the registered nick.
                    client.send_presence(ptype="unavailable")
                    await eventually(lambda: jid not in service.sessions.online_users(), what="logoff")
                    await offline(bob, nick)
                    client.send_presence()
                    await bob.read_until(lambda line: f":{nick}!" in line and " JOIN " in line, timeout=20)
                    state = service.sessions.users[jid]
                    address = f"{channel}%{NETWORK}".lower()
                    await eventually(lambda: address in state.rooms and state.rooms[address].joined,
                                     what="autojoined room")
                    # The client joins the room the gateway is already in: the full state at once.
                    async with joined(prosody, client, channel, unique("whatever")):
                        assert state.rooms[address].nick == nick
                await bob.read_until(lambda line: f":{nick}!" in line and " QUIT " in line)
                async with running_gateway(prosody, GW, tmp_path, plugin="irc", options=options, key=key):
                    # The new stream probes the registered user, whose presence logs on: autojoin.
                    await bob.read_until(lambda line: f":{nick}!" in line and " JOIN " in line, timeout=20)

    await as_deferred(scenario())
