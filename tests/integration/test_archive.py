"""The archive against real peers: ngircd on the IRC side, Prosody and slixmpp on the XMPP side.

Lines said on IRC are archived per user; a later join gets history limited by each
``<history/>`` attribute (XEP-0045 §7.2.15); MAM (XEP-0313) on the room pages through
them with the stanza-ids the live lines carried; MAM on a ``nick%network`` contact JID
returns the private conversation.
"""

from __future__ import annotations

import asyncio

import pytest
import pytest_twisted
from slixmpp import ClientXMPP

from tests.fixtures.gateway import running_gateway
from tests.fixtures.ircd import raw_irc_client
from tests.fixtures.steps import Recorder
from tests.fixtures.xmpp_client import as_deferred, connected_client
from tests.integration.test_irc_rooms import (
    GW,
    NETWORK,
    Room,
    irc_options,
    joined,
    status_codes,
    unique,
)

pytestmark = pytest.mark.integration

NS_MAM = "urn:xmpp:mam:2"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_MUC = "http://jabber.org/protocol/muc"
NS_SID = "urn:xmpp:sid:0"
NS_DELAY = "urn:xmpp:delay"


def stanza_id(stanza) -> str | None:
    element = stanza.xml.find(f"{{{NS_SID}}}stanza-id")
    return None if element is None else element.get("id")


async def join_with_history(client: ClientXMPP, jid: str, nick: str, **history: str) -> list:
    """Join (another resource) with <history/> attributes; the history lines, up to the subject."""
    room = Room(client, jid)
    presence = client.make_presence(pto=f"{jid}/{nick}")
    x = presence.xml.makeelement(f"{{{NS_MUC}}}x", {})
    if history:
        x.append(x.makeelement(f"{{{NS_MUC}}}history", history))
    presence.xml.append(x)
    presence.send()
    await room.wait(lambda s: s.name == "presence" and "110" in status_codes(s))
    await room.wait(lambda s: s.name == "message" and s.xml.find("{jabber:client}subject") is not None)
    stanzas = room.of_room()
    self_at = next(i for i, s in enumerate(stanzas) if s.name == "presence" and "110" in status_codes(s))
    lines = []
    for stanza in stanzas[self_at + 1:]:
        if stanza.xml.find("{jabber:client}subject") is not None:
            break
        lines.append(stanza)
    # Leave again: the other resource keeps the IRC presence.
    client.send_presence(pto=f"{jid}/{nick}", ptype="unavailable")
    await room.wait(lambda s: s.name == "presence" and s["type"] == "unavailable")
    return lines


async def mam_query(client: ClientXMPP, to: str, recorder: Recorder, *, max_: int | None = None,
                    after: str | None = None, before: str | None = None, with_: str | None = None):
    """A MAM query; the results (in order) and the fin element."""
    query_id = unique("q")
    iq = client.make_iq_set(ito=to)
    query = iq.xml.makeelement(f"{{{NS_MAM}}}query", {"queryid": query_id})
    if with_:
        form = query.makeelement("{jabber:x:data}x", {"type": "submit"})
        for var, value in (("FORM_TYPE", NS_MAM), ("with", with_)):
            field = form.makeelement("{jabber:x:data}field", {"var": var})
            field.append(field.makeelement("{jabber:x:data}value", {}))
            field[0].text = value
            form.append(field)
        query.append(form)
    if max_ is not None or after is not None or before is not None:
        rsm = query.makeelement(f"{{{NS_RSM}}}set", {})
        for name, value in (("max", max_), ("after", after), ("before", before)):
            if value is not None:
                child = rsm.makeelement(f"{{{NS_RSM}}}{name}", {})
                child.text = str(value) or None
                rsm.append(child)
        query.append(rsm)
    iq.xml.append(query)
    start = len(recorder.stanzas)
    answer = await iq.send(timeout=20)
    results = [s for s in recorder.stanzas[start:]
               if s.name == "message" and (r := s.xml.find(f"{{{NS_MAM}}}result")) is not None
               and r.get("queryid") == query_id]
    return results, answer.xml.find(f"{{{NS_MAM}}}fin")


def result_id(result) -> str:
    return result.xml.find(f"{{{NS_MAM}}}result").get("id")


def forwarded_message(result):
    return result.xml.find(f"{{{NS_MAM}}}result/{{urn:xmpp:forward:0}}forwarded/{{jabber:client}}message")


@pytest_twisted.ensureDeferred
async def test_irc_lines_archived_history_on_join_and_mam(prosody, ngircd, tmp_path):
    """Lines said on IRC reach the user live with stanza-ids; a second join gets history limited by
    maxstanzas, since, seconds and maxchars; MAM pages through the same lines with the same ids."""
    channel = unique("#arch")
    options = irc_options(ngircd)

    async def scenario() -> None:
        async with running_gateway(prosody, GW, tmp_path, plugin="irc", options=options,
                                   extra={"archive": {"flush_interval": 0.1, "history_length": 4}}):
            async with raw_irc_client(ngircd, unique("bob")) as bob:
                bob.send(f"JOIN {channel}")
                await bob.read_until(lambda line: " 366 " in line)
                jid, password = prosody.new_user("archive")
                async with connected_client(prosody, jid, password, send_presence=True) as phone, \
                        connected_client(prosody, jid, password, send_presence=True) as laptop:
                    alice = unique("alice")
                    async with joined(prosody, phone, channel, alice) as room:
                        await bob.read_until(lambda line: "JOIN" in line and alice in line)
                        live = []
                        for index in range(6):
                            bob.send(f"PRIVMSG {channel} :old line {index}")
                            live.append(await room.wait(lambda s, i=index: s.name == "message"
                                                        and s["body"] == f"old line {i}"))
                        phone.send_message(mto=room.jid, mbody="alice speaks", mtype="groupchat")
                        live.append(await room.wait(lambda s: s.name == "message" and s["body"] == "alice speaks"))
                        live_ids = [stanza_id(s) for s in live]
                        assert all(live_ids) and len(set(live_ids)) == 7
                        assert {s.xml.find(f"{{{NS_SID}}}stanza-id").get("by") for s in live} == {room.jid}
                        await asyncio.sleep(3)
                        bob.send(f"PRIVMSG {channel} :new line")
                        live.append(await room.wait(lambda s: s.name == "message" and s["body"] == "new line"))
                        said_new = asyncio.get_running_loop().time()
                        live_ids.append(stanza_id(live[-1]))

                        # Default history: history_length (4) lines, with delay, id and the live stanza-ids.
                        default = await join_with_history(laptop, room.jid, alice)
                        assert [s["body"] for s in default] == ["old line 4", "old line 5", "alice speaks",
                                                                 "new line"]
                        assert [stanza_id(s) for s in default] == live_ids[-4:]
                        assert all(s.xml.find(f"{{{NS_DELAY}}}delay").get("from") == room.jid for s in default)
                        assert all(s["id"] for s in default)
                        assert default[2]["from"].resource == alice

                        seconds = int(asyncio.get_running_loop().time() - said_new) + 2
                        recent = await join_with_history(laptop, room.jid, alice, seconds=str(seconds))
                        assert [s["body"] for s in recent] == ["new line"]

                        two = await join_with_history(laptop, room.jid, alice, maxstanzas="2")
                        assert [s["body"] for s in two] == ["alice speaks", "new line"]

                        stamp = default[1].xml.find(f"{{{NS_DELAY}}}delay").get("stamp")
                        since = await join_with_history(laptop, room.jid, alice, since=stamp, maxstanzas="10")
                        assert [s["body"] for s in since] == ["old line 5", "alice speaks", "new line"]

                        assert await join_with_history(laptop, room.jid, alice, maxchars="0") == []
                        size = len(str(default[-1]))
                        one = await join_with_history(laptop, room.jid, alice, maxchars=str(size * 3 // 2))
                        assert [s["body"] for s in one] == ["new line"]

                        # MAM on the room: the same lines, same ids, paged by three.
                        recorder = Recorder(phone, GW)
                        page, fin = await mam_query(phone, room.jid, recorder, max_=3)
                        assert [result_id(r) for r in page] == live_ids[:3]
                        assert fin.get("complete") != "true"
                        assert fin.find(f"{{{NS_RSM}}}set/{{{NS_RSM}}}count").text == "8"
                        first = forwarded_message(page[0])
                        assert first.get("from") == f"{room.jid}/{bob.nick}" and first.get("type") == "groupchat"
                        assert first.find("{jabber:client}body").text == "old line 0"
                        last_id = fin.find(f"{{{NS_RSM}}}set/{{{NS_RSM}}}last").text
                        page2, _ = await mam_query(phone, room.jid, recorder, max_=3, after=last_id)
                        assert [result_id(r) for r in page2] == live_ids[3:6]
                        end, fin = await mam_query(phone, room.jid, recorder, max_=3, before="")
                        assert [result_id(r) for r in end] == live_ids[5:]
                        mine, _ = await mam_query(phone, room.jid, recorder, with_=f"{room.jid}/{alice}")
                        assert [forwarded_message(r).find("{jabber:client}body").text for r in mine] == [
                            "alice speaks"]

                        from slixmpp.exceptions import IqError
                        with pytest.raises(IqError) as unknown:
                            await mam_query(phone, room.jid, recorder, after="no-such-id")
                        assert unknown.value.iq["error"]["condition"] == "item-not-found"
                        info = await phone.plugin["xep_0030"].get_info(jid=room.jid, timeout=10)
                        assert NS_MAM in info["disco_info"]["features"]

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_mam_on_a_private_conversation(prosody, ngircd, tmp_path):
    """Private messages with nick%network are archived both ways and queried at that contact JID."""
    channel = unique("#pmarch")

    async def scenario() -> None:
        async with running_gateway(prosody, GW, tmp_path, plugin="irc", options=irc_options(ngircd),
                                   extra={"archive": {"flush_interval": 0.1}}):
            async with raw_irc_client(ngircd, unique("fay")) as fay:
                jid, password = prosody.new_user("pmarch")
                async with connected_client(prosody, jid, password, send_presence=True) as client:
                    alice = unique("alice")
                    recorder = Recorder(client, GW)
                    async with joined(prosody, client, channel, alice):
                        contact = f"{fay.nick.lower()}%{NETWORK}@{GW}"
                        fay.send(f"PRIVMSG {alice} :psst alice")
                        incoming = await recorder.wait_for(lambda s: s.name == "message"
                                                           and s["body"] == "psst alice")
                        assert incoming["from"].bare == contact
                        client.send_message(mto=contact, mbody="hello fay", mtype="chat")
                        await fay.read_until(lambda line: f"PRIVMSG {fay.nick} :hello fay" in line)
                        results, fin = await mam_query(client, contact, recorder)
                        messages = [forwarded_message(r) for r in results]
                        assert [(m.get("from"), m.get("to"), m.find("{jabber:client}body").text)
                                for m in messages] == [(contact, jid, "psst alice"), (jid, contact, "hello fay")]
                        assert {m.get("type") for m in messages} == {"chat"}
                        assert fin.get("complete") == "true"
                        assert result_id(results[0]) == stanza_id(incoming)

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_lines_waiting_in_memory_are_written_at_stop(prosody, ngircd, tmp_path):
    """With a long flush interval, lines still in memory at a graceful stop are written: after a
    restart on the same database, the next join gets them as history with their stanza-ids."""
    channel = unique("#stop")
    archive = {"flush_interval": 600.0, "batch_size": 1000}

    async def scenario() -> None:
        async with raw_irc_client(ngircd, unique("kit")) as kit:
            kit.send(f"JOIN {channel}")
            await kit.read_until(lambda line: " 366 " in line)
            jid, password = prosody.new_user("archstop")
            alice = unique("alice")
            async with running_gateway(prosody, GW, tmp_path, plugin="irc", options=irc_options(ngircd),
                                       extra={"archive": archive}):
                async with connected_client(prosody, jid, password, send_presence=True) as client:
                    async with joined(prosody, client, channel, alice) as room:
                        await kit.read_until(lambda line: "JOIN" in line and alice in line)
                        kit.send(f"PRIVMSG {channel} :before the restart")
                        live = await room.wait(lambda s: s.name == "message"
                                               and s["body"] == "before the restart")
            async with running_gateway(prosody, GW, tmp_path, plugin="irc", options=irc_options(ngircd),
                                       extra={"archive": archive}):
                async with connected_client(prosody, jid, password, send_presence=True) as client:
                    room = Room(client, live["from"].bare)
                    presence = client.make_presence(pto=f"{room.jid}/{alice}")
                    presence.xml.append(presence.xml.makeelement(f"{{{NS_MUC}}}x", {}))
                    presence.send()
                    line = await room.wait(lambda s: s.name == "message" and s["body"] == "before the restart")
                    assert stanza_id(line) == stanza_id(live)
                    assert line.xml.find(f"{{{NS_DELAY}}}delay") is not None

    await as_deferred(scenario())
