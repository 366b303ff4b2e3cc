"""Ad-hoc commands of the IRC gateway (issue 5 item 4), each one's effect seen by a raw IRC
client on a real ngircd: nick (network configure), throttle_limit, encoding_out and
encoding_in (room configure), connection info, disconnect, and the room form through
muc#owner."""

from __future__ import annotations

import asyncio

import pytest
import pytest_twisted
from slixmpp.xmlstream import ET

from tests.fixtures.gateway import eventually, running_gateway
from tests.fixtures.ircd import raw_irc_client
from tests.fixtures.xmpp_client import as_deferred, connected_client
from tests.integration.test_irc_bouncer import names, note_of, run_command
from tests.integration.test_irc_networks import NETWORK_JID
from tests.integration.test_irc_rooms import GW, NETWORK, irc_options, joined, unique

pytestmark = pytest.mark.integration

NS_COMMANDS = "http://jabber.org/protocol/commands"
NS_DATA = "jabber:x:data"
NS_MUC_OWNER = "http://jabber.org/protocol/muc#owner"
RATE = 0.8


def fields_of(command) -> dict[str, str]:
    return {f.get("var"): "\n".join(v.text or "" for v in f.findall(f"{{{NS_DATA}}}value"))
            for f in command.iter(f"{{{NS_DATA}}}field")}


async def command_nodes(client, jid: str) -> set[str]:
    items = await client.plugin["xep_0030"].get_items(jid=jid, node=NS_COMMANDS, timeout=10)
    return {item[1] for item in items["disco_items"]["items"]}


@pytest_twisted.ensureDeferred
async def test_nodes_on_each_jid_are_biboumis(prosody, ngircd, tmp_path):
    """The gateway, network and room JIDs list Biboumi's node names."""
    async def scenario() -> None:
        async with running_gateway(prosody, GW, tmp_path, plugin="irc", options=irc_options(ngircd)):
            jid, password = prosody.new_user("nodes")
            async with connected_client(prosody, jid, password) as client:
                assert {"configure", "disconnect-from-irc-server"} <= await command_nodes(client, GW)
                assert await command_nodes(client, NETWORK_JID) == {"configure", "get-irc-connection-info"}
                assert await command_nodes(client, f"#x%{NETWORK}@{GW}") == {"configure"}

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_network_configure_nick_and_connection_info(prosody, ngircd, tmp_path):
    """configure on network@gateway with a new nick: NICK on IRC at once (and the setting is
    the user's registration with that network); get-irc-connection-info names the server,
    port and channels."""
    channel = unique("#cfgnick")

    async def scenario() -> None:
        async with raw_irc_client(ngircd, unique("bob")) as bob:
            bob.send(f"JOIN {channel}")
            await bob.read_until(lambda line: " 366 " in line)
            async with running_gateway(prosody, GW, tmp_path, plugin="irc", options=irc_options(ngircd)):
                jid, password = prosody.new_user("cfgnick")
                async with connected_client(prosody, jid, password, send_presence=True) as client:
                    nick, renamed = unique("alice"), unique("alicia")
                    async with joined(prosody, client, channel, nick) as room:
                        await bob.read_until(lambda line: " JOIN " in line and f":{nick}!" in line)
                        info = note_of(await run_command(client, NETWORK_JID, "get-irc-connection-info"))
                        assert f"Connected to IRC server {NETWORK} on port {ngircd.port}" in info, info
                        assert channel in info

                        form = await run_command(client, NETWORK_JID, "configure")
                        assert {"nick", "username", "realname", "sasl_password", "throttle_limit",
                                "encoding_in", "encoding_out", "autojoin"} <= set(fields_of(form))
                        done = await run_command(client, NETWORK_JID, "configure", {"nick": renamed})
                        assert note_of(done) == "Configuration successfully applied."
                        await bob.read_until(lambda line: (f":{nick}!" in line and f"NICK :{renamed}" in line)
                                             or (f":{nick}!" in line and f"NICK {renamed}" in line))
                        # The room shows the change as a 303 of the user's own nick.
                        await room.wait(lambda s: s.name == "presence" and s["from"].resource == renamed)
                        fields = fields_of(await run_command(client, NETWORK_JID, "configure"))
                        assert fields["nick"] == renamed

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_throttle_limit_paces_lines_on_the_wire(prosody, ngircd, tmp_path):
    """throttle_limit = 2 (network configure): of six lines, two go at once and the rest
    one per throttle_rate; without it the plugin's burst of 100 sends them together."""
    channel = unique("#throttle")
    options = {**irc_options(ngircd), "throttle_rate": RATE}

    async def scenario() -> None:
        async with raw_irc_client(ngircd, unique("bob")) as bob:
            bob.send(f"JOIN {channel}")
            await bob.read_until(lambda line: " 366 " in line)
            async with running_gateway(prosody, GW, tmp_path, plugin="irc", options=options):
                jid, password = prosody.new_user("throttle")
                async with connected_client(prosody, jid, password, send_presence=True) as client:
                    nick = unique("alice")
                    async with joined(prosody, client, channel, nick) as room:
                        await bob.read_until(lambda line: " JOIN " in line and f":{nick}!" in line)

                        async def paste(tag: str) -> float:
                            await asyncio.sleep(1.0)  # the bucket refills
                            body = "\n".join(f"{tag} {i}" for i in range(6))
                            client.send_message(mto=room.jid, mbody=body, mtype="groupchat")
                            first = await bob.read_until(lambda line: f":{tag} 0" in line)
                            assert first
                            start = asyncio.get_running_loop().time()
                            await bob.read_until(lambda line: f":{tag} 5" in line)
                            return asyncio.get_running_loop().time() - start

                        # ngircd paces clients itself a little (its penalty time): compare.
                        free = await paste("free")
                        await run_command(client, NETWORK_JID, "configure", {"throttle_limit": "2"})
                        paced = await paste("paced")
                        assert paced >= 4 * RATE - 0.2, (free, paced)
                        assert paced > free + 1.5, (free, paced)

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_room_encodings_are_the_bytes_on_the_wire(prosody, ngircd, tmp_path):
    """Room configure encoding_out=latin-1: "café" leaves as b"caf\\xe9"; encoding_in=cp1251:
    the byte \\xe9 from IRC reads as "й" in XMPP. muc#owner shows the same form."""
    channel = unique("#charset")

    async def scenario() -> None:
        async with raw_irc_client(ngircd, unique("bob")) as bob:
            bob.send(f"JOIN {channel}")
            await bob.read_until(lambda line: " 366 " in line)
            async with running_gateway(prosody, GW, tmp_path, plugin="irc", options=irc_options(ngircd)) as service:
                jid, password = prosody.new_user("charset")
                async with connected_client(prosody, jid, password, send_presence=True) as client:
                    nick = unique("alice")
                    async with joined(prosody, client, channel, nick) as room:
                        await bob.read_until(lambda line: " JOIN " in line and f":{nick}!" in line)
                        form = await run_command(client, room.jid, "configure")
                        assert set(fields_of(form)) >= {"record_history", "max_history_length", "encoding_in",
                                                        "encoding_out", "persistent"}
                        await run_command(client, room.jid, "configure",
                                          {"encoding_out": "latin-1", "encoding_in": "cp1251",
                                           "record_history": "false", "max_history_length": "5"})
                        client.send_message(mto=room.jid, mbody="café", mtype="groupchat")
                        # RawIrcClient decodes UTF-8 with replacement: a lone \xe9 shows as U+FFFD.
                        line = await bob.read_until(lambda line: f"PRIVMSG {channel} :caf" in line)
                        assert line.endswith("caf\ufffd"), line
                        bob.send(f"PRIVMSG {channel} :".encode() + b"\xe9")
                        message = await room.wait(lambda s: s.name == "message" and s["body"] == "й")
                        assert message["from"].resource == bob.nick

                        settings = service.sessions.room_settings
                        address = f"{channel}%{NETWORK}".lower()
                        assert settings.record_history(jid, address) is False
                        assert settings.max_history_length(jid, address) == 5

                        iq = client.make_iq_get(ito=room.jid)
                        iq.append(ET.Element(f"{{{NS_MUC_OWNER}}}query"))
                        owner = (await iq.send(timeout=10)).xml
                        values = fields_of(owner)
                        assert values["encoding_out"] == "latin-1" and values["record_history"] == "false"

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_muc_owner_persistent_and_disconnect_command(prosody, ngircd, tmp_path):
    """muc#owner submit persistent=1: leaving the room does not PART; then
    disconnect-from-irc-server on the gateway: QUIT with the message, and the room is left."""
    channel = unique("#owner")

    async def scenario() -> None:
        async with raw_irc_client(ngircd, unique("bob")) as bob:
            bob.send(f"JOIN {channel}")
            await bob.read_until(lambda line: " 366 " in line)
            async with running_gateway(prosody, GW, tmp_path, plugin="irc", options=irc_options(ngircd)) as service:
                jid, password = prosody.new_user("owner")
                async with connected_client(prosody, jid, password, send_presence=True) as client:
                    nick = unique("alice")
                    async with joined(prosody, client, channel, nick) as room:
                        await bob.read_until(lambda line: " JOIN " in line and f":{nick}!" in line)
                        iq = client.make_iq_set(ito=room.jid)
                        query = ET.SubElement(iq.xml, f"{{{NS_MUC_OWNER}}}query")
                        form = ET.SubElement(query, f"{{{NS_DATA}}}x", {"type": "submit"})
                        field = ET.SubElement(form, f"{{{NS_DATA}}}field", {"var": "persistent"})
                        ET.SubElement(field, f"{{{NS_DATA}}}value").text = "1"
                        assert (await iq.send(timeout=10))["type"] == "result"
                        client.make_presence(pto=f"{room.jid}/{nick}", ptype="unavailable").send()
                        address = f"{channel}%{NETWORK}".lower()
                        state = service.sessions.users[jid]
                        await eventually(lambda: not state.rooms[address].resources, what="left")
                    assert nick in await names(bob, channel)
                    done = await run_command(client, GW, "disconnect-from-irc-server",
                                             {"irc-servers": NETWORK, "quit-message": "bye from the test"})
                    assert note_of(done) == f"{jid} was disconnected from 1 IRC server(s)."
                    await bob.read_until(lambda line: f":{nick}!" in line and " QUIT " in line
                                         and "bye from the test" in line)
                    await eventually(lambda: address not in state.rooms, what="room left")

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_username_and_realname_from_network_configure(prosody, ngircd, tmp_path):
    """username and realname set by configure before connecting: WHOIS on IRC shows them."""
    channel = unique("#ident")

    async def scenario() -> None:
        async with raw_irc_client(ngircd, unique("bob")) as bob:
            async with running_gateway(prosody, GW, tmp_path, plugin="irc", options=irc_options(ngircd)):
                jid, password = prosody.new_user("ident")
                async with connected_client(prosody, jid, password, send_presence=True) as client:
                    nick = unique("erin")
                    await run_command(client, NETWORK_JID, "configure",
                                      {"nick": nick, "username": "erinid", "realname": "Erin Example"})
                    async with joined(prosody, client, channel, unique("ignored")):
                        bob.send(f"WHOIS {nick}")
                        line = await bob.read_until(lambda line: f" 311 {bob.nick} {nick} " in line)
                        assert "erinid" in line.split()[4] and line.endswith(":Erin Example"), line

    await as_deferred(scenario())
