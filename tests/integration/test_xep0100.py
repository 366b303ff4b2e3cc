"""XEP-0100 against a real Prosody with slixmpp users and the fake-network plugin (issue 3).

Row ids (R4, U1, L6 ...) are those of the checklist in reference/xep0100-and-transports.md §1;
docs/xep0100.md maps every row to its tests.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

import pytest
import pytest_twisted
from slixmpp import ClientXMPP
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET

from gateway.store.crypto import generate_key
from tests.fixtures.gateway import eventually, running_gateway
from tests.fixtures.steps import Recorder, is_presence, register, unregister
from tests.fixtures.xmpp_client import as_deferred, connected_client

pytestmark = pytest.mark.integration


@asynccontextmanager
async def registered_user(prosody, service, gateway: str, prefix: str, username: str = "alice",
                          password: str = "pw1"):
    """Shared opening: an online user who registered and approved the gateway's subscription
    (which also sends the user's presence to the gateway: the legacy login follows)."""
    jid, xmpp_password = prosody.new_user(prefix)
    async with connected_client(prosody, jid, xmpp_password, send_presence=True) as client:
        await client.get_roster()  # as real clients do: roster pushes and subscriptions reach us
        recorder = Recorder(client, gateway)
        await register(client, gateway, username, password)
        # R10: the gateway subscribes; slixmpp approves and subscribes back (auto_authorize/subscribe).
        await recorder.wait_for(is_presence("subscribe", gateway))
        await eventually(lambda: client.client_roster[gateway]["subscription"] == "both",
                         what="mutual subscription with the gateway")
        yield jid, xmpp_password, client, recorder


@pytest_twisted.ensureDeferred
async def test_full_lifecycle_in_order(prosody, tmp_path, caplog):
    """Registration -> subscription -> logon -> message both ways -> logoff -> unregistration,
    with the exact stanza order of XEP-0100 §4.1-§4.5 (R4, R7, R10-R12, L1, L2, M1, LM1, O1, U1)."""
    caplog.set_level(logging.DEBUG)
    gateway = "gw2.localhost"
    options = {"accounts": {"alice": "Secret-Legacy-pw1"}}

    async def scenario() -> None:
        async with running_gateway(prosody, gateway, tmp_path, options=options) as service:
            network = service.plugin.network
            jid, password = prosody.new_user("life")
            async with connected_client(prosody, jid, password, send_presence=True) as client:
                await client.get_roster()
                recorder = Recorder(client, gateway)
                form = await client.plugin["xep_0077"].get_registration(jid=gateway, timeout=5)
                assert form["register"]["instructions"]
                assert "password" in [f["var"] for f in form["register"]["form"]["fields"]]
                result = await register(client, gateway, "alice", "Secret-Legacy-pw1")
                assert result["type"] == "result"
                assert ("check", jid, "alice") in network.log
                await recorder.wait_for(is_presence("subscribe", gateway))
                await eventually(lambda: client.client_roster[gateway]["subscription"] == "both",
                                 what="mutual subscription")
                # R12, L1, L2: approving the subscription shares our presence: login follows.
                await recorder.wait_for(is_presence("available", gateway))
                assert ("login", jid) in network.log

                received: asyncio.Future = asyncio.get_running_loop().create_future()
                client.add_event_handler("message", lambda m: received.done() or received.set_result(m))
                client.send_message(mto=f"carol@{gateway}", mbody="hello carol", mtype="chat")
                await eventually(lambda: ("send", jid, "carol", "hello carol") in network.log,
                                 what="legacy delivery")
                service.plugin.deliver(jid, "carol", "hi alice")
                message = await asyncio.wait_for(received, 10)
                assert (message["from"].full, message["body"]) == (f"carol@{gateway}", "hi alice")

                start = len(recorder.stanzas)
                client.send_presence(ptype="unavailable")  # O1
                await recorder.wait_for(is_presence("unavailable", gateway), start=start)
                assert network.log[-1] == ("logout", jid)

                start = len(recorder.stanzas)
                client.send_presence()  # L1: a broadcast presence reaches the gateway again
                await recorder.wait_for(is_presence("available", gateway), start=start)
                assert network.log.count(("login", jid)) == 2

                start = len(recorder.stanzas)
                await unregister(client, gateway)
                await recorder.wait_for(is_presence("unavailable", gateway), start=start)
                presences = [(k, t) for k, t, f in recorder.kinds(start) if f == gateway]
                assert presences == [("iq", "result"), ("presence", "unsubscribe"),
                                     ("presence", "unsubscribed"), ("presence", "unavailable")]

        # The legacy password appears neither in the logs nor in clear in the database file.
        # (slixmpp logs the client's own stanzas in clear: only the gateway's records count.)
        ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith(("gateway", "twisted")))
        assert "<password>***</password>" in ours  # stanzas were logged at debug, redacted
        assert "Secret-Legacy-pw1" not in ours
        assert b"Secret-Legacy-pw1" not in (tmp_path / "gateway.sqlite3").read_bytes()

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_two_resources_logout_after_the_last(prosody, tmp_path):
    """L6: the legacy session lives while any resource is available."""
    gateway = "gw3.localhost"

    async def scenario() -> None:
        async with running_gateway(prosody, gateway, tmp_path,
                                   options={"accounts": {"alice": "pw1"}}) as service:
            network = service.plugin.network
            async with registered_user(prosody, service, gateway, "two") as (jid, password, phone, recorder):
                await recorder.wait_for(is_presence("available", gateway))
                async with connected_client(prosody, jid, password) as laptop:
                    laptop.send_presence()
                    await eventually(lambda: len(service.sessions.users[jid].resources) == 2,
                                     what="second resource")
                    phone.send_presence(ptype="unavailable")
                    await eventually(lambda: len(service.sessions.users[jid].resources) == 1,
                                     what="first resource gone")
                    assert ("logout", jid) not in network.log
                    assert network.log.count(("login", jid)) == 1
                await eventually(lambda: ("logout", jid) in network.log, what="logout after the last")

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_gateway_restart_logs_the_user_back_in(prosody, tmp_path):
    """Item 8: after a gateway restart an online user is logged back in with no action."""
    gateway = "gw4.localhost"
    key = generate_key()
    options = {"accounts": {"alice": "pw1"}}

    async def scenario() -> None:
        jid, password = prosody.new_user("restart")
        async with connected_client(prosody, jid, password, send_presence=True) as client:
            await client.get_roster()
            recorder = Recorder(client, gateway)
            async with running_gateway(prosody, gateway, tmp_path, key=key, options=options):
                await register(client, gateway, "alice", "pw1")
                await eventually(lambda: client.client_roster[gateway]["subscription"] == "both",
                                 what="mutual subscription")
                await recorder.wait_for(is_presence("available", gateway))
                # Counted before the stop: its goodbye may arrive before the stop returns.
                start = len(recorder.stanzas)
            # The stop said goodbye: unavailable from the gateway.
            await recorder.wait_for(is_presence("unavailable", gateway), start=start)
            start = len(recorder.stanzas)
            async with running_gateway(prosody, gateway, tmp_path, key=key, options=options) as second:
                # B1: the new stream announces the gateway and probes; the server answers the
                # probe with the user's presence, which logs the user in: no user action.
                await recorder.wait_for(is_presence("available", gateway), start=start)
                await eventually(lambda: jid in second.sessions.online_users(), what="automatic login")
                assert second.plugin.network.log.count(("login", jid)) == 1

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_wrong_legacy_password_at_registration(prosody, tmp_path):
    """R7: the legacy network refuses the credentials: not-acceptable, nothing stored."""
    gateway = "gw6.localhost"

    async def scenario() -> None:
        async with running_gateway(prosody, gateway, tmp_path, options={"accounts": {"alice": "pw1"}}) as service:
            jid, password = prosody.new_user("wrongpw")
            async with connected_client(prosody, jid, password) as client:
                with pytest.raises(IqError) as error:
                    await register(client, gateway, "alice", "not-it")
                assert error.value.iq["error"]["condition"] == "not-acceptable"
                assert jid not in service.sessions.registered

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_user_from_a_disallowed_domain(prosody, tmp_path):
    """Item 9: a user outside allowed_users cannot register (not-allowed) or see the form (forbidden)."""
    gateway = "gw6.localhost"

    async def scenario() -> None:
        async with running_gateway(prosody, gateway, tmp_path, options={"accounts": {"alice": "pw1"}},
                                   extra={"allowed_users": ["example.org"]}):
            jid, password = prosody.new_user("stranger")
            async with connected_client(prosody, jid, password) as client:
                with pytest.raises(IqError) as error:
                    await client.plugin["xep_0077"].get_registration(jid=gateway, timeout=5)
                assert error.value.iq["error"]["condition"] == "forbidden"
                with pytest.raises(IqError) as error:
                    await register(client, gateway, "alice", "pw1")
                assert error.value.iq["error"]["condition"] == "not-allowed"

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_privileged_roster_population(prosody, tmp_path):
    """CL1: with mod_privilege granting roster access, legacy contacts land in the roster."""
    gateway = "gw5.localhost"
    options = {"accounts": {"alice": "pw1"}, "contacts": {"alice": ["carol", "dave"]}}

    async def scenario() -> None:
        async with running_gateway(prosody, gateway, tmp_path, options=options) as service:
            await eventually(lambda: service.sessions.roster.roster_access.get("localhost") == "both",
                             what="privilege announcement")
            async with registered_user(prosody, service, gateway, "priv") as (jid, _, client, recorder):
                await eventually(lambda: f"carol@{gateway}" in client.client_roster
                                 and f"dave@{gateway}" in client.client_roster, what="roster push")
                assert client.client_roster[f"carol@{gateway}"]["subscription"] == "both"
                assert not [s for s in recorder.stanzas
                            if s.name == "presence" and s["type"] == "subscribe" and s["from"].user]

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_subscription_fallback_without_privilege(prosody, tmp_path):
    """CL1: without privilege or rosterx support, one subscribe per legacy contact."""
    gateway = "gw3.localhost"
    options = {"accounts": {"alice": "pw1"}, "contacts": {"alice": ["carol"]}}

    async def scenario() -> None:
        async with running_gateway(prosody, gateway, tmp_path, options=options) as service:
            async with registered_user(prosody, service, gateway, "fallback") as (jid, _, client, recorder):
                await recorder.wait_for(is_presence("subscribe", f"carol@{gateway}"))

    await as_deferred(scenario())


async def run_command(client: ClientXMPP, gateway: str, node: str):
    iq = client.make_iq_set(ito=gateway)
    command = ET.Element("{http://jabber.org/protocol/commands}command", node=node, action="execute")
    iq.append(command)
    return await iq.send(timeout=10)


@pytest_twisted.ensureDeferred
async def test_ad_hoc_commands_for_users_and_admins(prosody, tmp_path):
    """Item 10: users list their commands; an admin reads the XEP-0133 counters."""
    gateway = "gw1.localhost"

    async def scenario() -> None:
        admin, admin_password = prosody.new_user("admin")
        async with running_gateway(prosody, gateway, tmp_path, options={"accounts": {"alice": "pw1"}},
                                   admins=(admin,)) as service:
            async with registered_user(prosody, service, gateway, "cmd") as (jid, _, client, recorder):
                await recorder.wait_for(is_presence("available", gateway))
                items = await client.plugin["xep_0030"].get_items(
                    jid=gateway, node="http://jabber.org/protocol/commands", timeout=5)
                nodes = {item[1] for item in items["disco_items"]["items"]}
                assert {"unregister", "reconnect", "settings"} <= nodes
                assert not any("admin#" in node for node in nodes)
                async with connected_client(prosody, admin, admin_password) as admin_client:
                    for node, var in (("get-registered-users-num", "registeredusersnum"),
                                      ("get-online-users-num", "onlineusersnum")):
                        result = await run_command(admin_client, gateway,
                                                   f"http://jabber.org/protocol/admin#{node}")
                        form = result["command"]["form"]
                        assert result["command"]["status"] == "completed"
                        assert form["values"][var] == "1"

    await as_deferred(scenario())
