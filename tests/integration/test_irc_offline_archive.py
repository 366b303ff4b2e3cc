"""Issue 5's bouncer promise end to end, against ngircd, Prosody and slixmpp: a persistent room
keeps archiving while its user is offline, and the user gets the missed lines back with MAM
(and as history on join) after logging on again; the room's ``record_history`` setting, set by
its ``configure`` command, decides what is archived."""

from __future__ import annotations

import asyncio

import pytest
import pytest_twisted

from tests.fixtures.gateway import eventually, running_gateway
from tests.fixtures.ircd import raw_irc_client
from tests.fixtures.steps import Recorder
from tests.fixtures.xmpp_client import as_deferred, connected_client
from tests.integration.test_archive import forwarded_message, join_with_history, mam_query
from tests.integration.test_irc_bouncer import leave, note_of, run_command
from tests.integration.test_irc_rooms import GW, NETWORK, irc_options, joined, unique

pytestmark = pytest.mark.integration

FAST_ARCHIVE = {"archive": {"flush_interval": 0.1}}


def bodies(results) -> list[str]:
    return [forwarded_message(r).find("{jabber:client}body").text for r in results]


@pytest_twisted.ensureDeferred
async def test_persistent_room_archives_while_offline_and_mam_returns_the_missed_lines(
        prosody, ngircd, tmp_path):
    channel = unique("#away")
    room_jid = f"{channel}%{NETWORK}@{GW}".lower()

    async def scenario() -> None:
        async with raw_irc_client(ngircd, unique("bob")) as bob:
            bob.send(f"JOIN {channel}")
            await bob.read_until(lambda line: " 366 " in line)
            nick = unique("alice")
            jid, password = prosody.new_user("away")
            async with running_gateway(prosody, GW, tmp_path, plugin="irc", options=irc_options(ngircd),
                                       extra=FAST_ARCHIVE) as service:
                async with connected_client(prosody, jid, password, send_presence=True) as client:
                    async with joined(prosody, client, channel, nick) as room:
                        await bob.read_until(lambda line: " JOIN " in line and f":{nick}!" in line)
                        bob.send(f"PRIVMSG {channel} :before you left")
                        await room.wait(lambda s: s.name == "message" and s["body"] == "before you left")
                        done = await run_command(client, room.jid, "configure", {"persistent": "true"})
                        assert note_of(done) == "Configuration successfully applied."
                        leave(client, room.jid, nick)
                state = service.sessions.users[jid]
                await eventually(lambda: not state.resources, what="the user offline")
                missed = [f"missed line {i} é" for i in range(3)]
                for line in missed:
                    bob.send(f"PRIVMSG {channel} :{line}")
                # The lines reach the gateway while nobody is online, and are archived.
                bob.send(f"PRIVMSG {channel} :last")
                address = f"{channel}%{NETWORK}".lower()
                await eventually(lambda: address in state.rooms and state.rooms[address].joined,
                                 what="the room still joined")
                async with connected_client(prosody, jid, password, send_presence=True) as client:
                    recorder = Recorder(client, GW)

                    # MAM reads flush the archive first; poll until ngircd relayed "last".
                    for _ in range(100):
                        results, fin = await mam_query(client, room_jid, recorder)
                        if "last" in bodies(results):
                            break
                        await asyncio.sleep(0.1)
                    assert bodies(results) == ["before you left", *missed, "last"]
                    assert {forwarded_message(r).get("from") for r in results} == {f"{room_jid}/{bob.nick}"}
                    assert fin.get("complete") == "true"
                    # The last page of two, as a client catching up would ask for it.
                    page, fin = await mam_query(client, room_jid, recorder, max_=2, before="")
                    assert bodies(page) == [missed[-1], "last"]
                    # Joining again replays them as history too (the room never left IRC).
                    history = await join_with_history(client, room_jid, nick, maxstanzas="3")
                    assert [s["body"] for s in history] == [*missed[1:], "last"]

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_record_history_off_for_a_room_stops_its_archive(prosody, ngircd, tmp_path):
    """configure record_history=false on the room JID: later lines are shown live, with no
    stanza-id, and MAM does not return them; true again archives again."""
    channel = unique("#norec")

    async def scenario() -> None:
        async with raw_irc_client(ngircd, unique("bob")) as bob:
            bob.send(f"JOIN {channel}")
            await bob.read_until(lambda line: " 366 " in line)
            jid, password = prosody.new_user("norec")
            async with running_gateway(prosody, GW, tmp_path, plugin="irc", options=irc_options(ngircd),
                                       extra=FAST_ARCHIVE):
                async with connected_client(prosody, jid, password, send_presence=True) as client:
                    recorder = Recorder(client, GW)
                    nick = unique("carol")
                    async with joined(prosody, client, channel, nick) as room:
                        await bob.read_until(lambda line: " JOIN " in line and f":{nick}!" in line)
                        for setting, text in (("true", "kept one"), ("false", "not kept"), ("true", "kept two")):
                            done = await run_command(client, room.jid, "configure", {"record_history": setting})
                            assert note_of(done) == "Configuration successfully applied."
                            bob.send(f"PRIVMSG {channel} :{text}")
                            live = await room.wait(lambda s, text=text: s.name == "message" and s["body"] == text)
                            has_id = live.xml.find("{urn:xmpp:sid:0}stanza-id") is not None
                            assert has_id == (setting == "true"), text
                        results, _ = await mam_query(client, room.jid, recorder)
                        assert bodies(results) == ["kept one", "kept two"]

    await as_deferred(scenario())
