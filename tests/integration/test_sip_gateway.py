"""The SIP MESSAGE gateway (issue 6) against real peers: Kamailio as registrar and proxy
with digest auth, baresip as the far SIP user, slixmpp users through Prosody.

Each test runs its own gateway (``plugin = "sip"``) on ``gw6.localhost`` listening on free
loopback ports, with the session's Kamailio as the default outbound proxy.
"""

from __future__ import annotations

import asyncio
import re
from contextlib import asynccontextmanager

import pytest
import pytest_twisted
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET

from gateway.store.crypto import generate_key
from tests.fixtures.gateway import eventually, running_gateway
from tests.fixtures.sip_peers import MIN_EXPIRES, BaresipAgent, KamailioServer
from tests.fixtures.steps import Recorder, is_presence, unregister
from tests.fixtures.xmpp_client import as_deferred, connected_client

pytestmark = pytest.mark.integration

GW = "gw6.localhost"
TEXT = "héllo wörld ✓ 日本"
NS_REGISTER = "jabber:iq:register"
NS_DATA = "jabber:x:data"
NS_RECEIPTS = "urn:xmpp:receipts"
TOKEN = re.compile(r"gw-[0-9a-f]{32}")


def gateway_options(kamailio: KamailioServer, **extra: object) -> dict[str, object]:
    return {"listen_host": "127.0.0.1", "udp_port": 0, "tcp_port": 0,
            "proxy": f"sip:{kamailio.host}:{kamailio.port}", **extra}


async def register_form(client, gateway: str, values: dict[str, str]):
    """XEP-0077 §4 registration with a data form (the SIP fields are not all standard)."""
    iq = client.make_iq_set(ito=gateway)
    query = ET.Element(f"{{{NS_REGISTER}}}query")
    form = ET.SubElement(query, f"{{{NS_DATA}}}x", type="submit")
    for var, value in {"FORM_TYPE": NS_REGISTER, **values}.items():
        field = ET.SubElement(form, f"{{{NS_DATA}}}field", var=var)
        ET.SubElement(field, f"{{{NS_DATA}}}value").text = value
    iq.append(query)
    return await iq.send(timeout=15)


def send_chat(client, to: str, body: str, message_id: str, *, receipt: bool = False) -> None:
    message = client.make_message(mto=to, mbody=body, mtype="chat")
    message["id"] = message_id
    if receipt:
        message.xml.append(ET.Element(f"{{{NS_RECEIPTS}}}request"))
    message.send()


def contact_jid(user: str, domain: str) -> str:
    return f"{user}\\40{domain}@{GW}"


def is_receipt(message_id: str):
    def check(stanza) -> bool:
        received = stanza.xml.find(f"{{{NS_RECEIPTS}}}received")
        return stanza.name == "message" and received is not None and received.get("id") == message_id
    return check


def is_error(message_id: str):
    return lambda s: s.name == "message" and s["type"] == "error" and s["id"] == message_id


@asynccontextmanager
async def sip_user(prosody, kamailio: KamailioServer, *, transport: str = "auto", password: str | None = None):
    """An XMPP user online with the gateway who registered a fresh Kamailio account."""
    sip_name, sip_password = kamailio.new_user("xmpp")
    jid, xmpp_password = prosody.new_user("sip")
    async with connected_client(prosody, jid, xmpp_password, send_presence=True) as client:
        await client.get_roster()
        recorder = Recorder(client, GW)
        await register_form(client, GW, {"username": f"{sip_name}@{kamailio.domain}",
                                         "password": password or sip_password, "transport": transport})
        yield sip_name, client, recorder


async def logged_in(client, recorder: Recorder) -> None:
    """Approve the gateway's subscription; our presence then logs us in (a SIP REGISTER)."""
    await recorder.wait_for(is_presence("subscribe", GW))
    await eventually(lambda: client.client_roster[GW]["subscription"] == "both", what="mutual subscription")
    await recorder.wait_for(is_presence("available", GW))


@pytest_twisted.ensureDeferred
async def test_wrong_password_is_refused_with_not_acceptable(prosody, kamailio, tmp_path) -> None:
    """XEP-0077 registration does a real REGISTER: Kamailio's 403 becomes not-acceptable and
    nothing is registered or stored."""
    async def scenario() -> None:
        async with running_gateway(prosody, GW, tmp_path, plugin="sip", options=gateway_options(kamailio)) \
                as service:
            sip_name, _ = kamailio.new_user("wrong")
            jid, password = prosody.new_user("sipwrong")
            async with connected_client(prosody, jid, password) as client:
                with pytest.raises(IqError) as refused:
                    await register_form(client, GW, {"username": f"{sip_name}@{kamailio.domain}",
                                                     "password": "not-the-password"})
                assert refused.value.condition == "not-acceptable"
                assert "403" in refused.value.text
                assert kamailio.contacts(sip_name) == []
                assert jid not in service.sessions.registered
                assert not service.plugin.stack.running  # the check's sockets are closed again

    await as_deferred(scenario())


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest_twisted.ensureDeferred
async def test_messages_both_ways(prosody, kamailio, tmp_path, transport: str) -> None:
    """Register (right password), log on = a binding in Kamailio; a message to baresip with a
    receipt (an empty <body/> before it sends nothing and gets none), one from baresip, a message to an unknown user returning item-not-found with its
    id; logoff leaves no binding. Non-ASCII text, over UDP and over TCP."""
    async def scenario() -> None:
        async with running_gateway(prosody, GW, tmp_path, plugin="sip", options=gateway_options(kamailio)):
            async with sip_user(prosody, kamailio, transport=transport) as (sip_name, client, recorder):
                assert kamailio.contacts(sip_name) == []  # the credential check unregistered itself
                await logged_in(client, recorder)
                bindings = kamailio.contacts(sip_name)
                assert len(bindings) == 1
                assert (";transport=tcp" in bindings[0]) == (transport == "tcp")
                aor = f"sip:{sip_name}@{kamailio.domain}"

                bob, bob_password = kamailio.new_user("bob")
                async with BaresipAgent(tmp_path / "bob", kamailio, bob, bob_password, transport=transport,
                                        contacts=[aor]) as bob_agent:
                    empty = client.make_message(mto=contact_jid(bob, kamailio.domain), mtype="chat")
                    empty["id"] = "to-bob-0"  # an empty <body/>: nothing is sent, so no receipt
                    empty.xml.append(ET.Element("{jabber:client}body"))
                    empty.xml.append(ET.Element(f"{{{NS_RECEIPTS}}}request"))
                    empty.send()
                    send_chat(client, contact_jid(bob, kamailio.domain), TEXT, "to-bob-1", receipt=True)
                    received = await bob_agent.wait_message()
                    assert (received.sender, received.body) == (aor, TEXT)
                    receipt = await recorder.wait_for(is_receipt("to-bob-1"))
                    assert receipt["from"].bare == contact_jid(bob, kamailio.domain)
                    assert not any(is_receipt("to-bob-0")(s) for s in recorder.stanzas)
                    assert len(bob_agent.received()) == 1

                    start = len(recorder.stanzas)
                    await bob_agent.send_message(aor, f"back: {TEXT}")
                    reply = await recorder.wait_for(
                        lambda s: s.name == "message" and s["body"] == f"back: {TEXT}", start=start)
                    assert reply["type"] == "chat"
                    assert reply["from"].bare == contact_jid(bob, kamailio.domain)
                    assert bob_agent.message_failures() == []

                send_chat(client, contact_jid("nobody-here", kamailio.domain), TEXT, "to-nobody")
                error = await recorder.wait_for(is_error("to-nobody"))
                assert error["error"]["condition"] == "item-not-found"
                assert "404" in error["error"]["text"]

                start = len(recorder.stanzas)
                client.send_presence(ptype="unavailable")
                await recorder.wait_for(is_presence("unavailable", GW), start=start)
                await eventually(lambda: kamailio.contacts(sip_name) == [], what="binding removed at logoff")

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_refresh_before_expiry_after_interval_too_brief(prosody, kamailio, tmp_path) -> None:
    """Asking for 1 s gets 423 with Min-Expires from Kamailio; the gateway retries with it and
    refreshes before each expiry, so the binding outlives several intervals."""
    async def scenario() -> None:
        options = gateway_options(kamailio, expires=1)
        async with running_gateway(prosody, GW, tmp_path, plugin="sip", options=options) as service:
            async with sip_user(prosody, kamailio) as (sip_name, client, recorder):
                await logged_in(client, recorder)
                session = next(iter(service.plugin.sessions.values()))
                assert session.registration.expires == MIN_EXPIRES
                await asyncio.sleep(MIN_EXPIRES * 2 + 1)
                assert session.registration.refreshes >= 3
                assert len(kamailio.contacts(sip_name)) == 1

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_large_message_goes_over_tcp(prosody, kamailio, tmp_path) -> None:
    """RFC 3261 §18.1.1: a MESSAGE over 1300 bytes from a UDP-registered user goes over TCP."""
    async def scenario() -> None:
        async with running_gateway(prosody, GW, tmp_path, plugin="sip", options=gateway_options(kamailio)) \
                as service:
            async with sip_user(prosody, kamailio, transport="udp") as (sip_name, client, recorder):
                await logged_in(client, recorder)
                bob, bob_password = kamailio.new_user("bob")
                # COMPAT: baresip 1.0.0 accepts long MESSAGEs but its UI prints none over a few
                # hundred bytes, so the body is checked in its SIP trace.
                async with BaresipAgent(tmp_path / "bob", kamailio, bob, bob_password, sip_trace=True) as bob_agent:
                    long_text = "ü" * 1000  # 2000 bytes of UTF-8
                    send_chat(client, contact_jid(bob, kamailio.domain), long_text, "long-1", receipt=True)
                    await recorder.wait_for(is_receipt("long-1"))
                    await eventually(lambda: long_text in bob_agent.output, what="the body in baresip's trace")
                    assert {peer.transport for peer in service.plugin.stack.outbound_peers} == {"tcp"}

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_lost_registration_is_a_presence_error_and_login_failure_too(prosody, kamailio, tmp_path) -> None:
    """XEP-0100 §4.4.2: when Kamailio refuses the refresh (the password changed), the user gets a
    presence error from the gateway (SessionLost); the next logon fails the same way (LoginFailed)."""
    async def scenario() -> None:
        options = gateway_options(kamailio, expires=MIN_EXPIRES)
        async with running_gateway(prosody, GW, tmp_path, plugin="sip", options=options):
            async with sip_user(prosody, kamailio) as (sip_name, client, recorder):
                await logged_in(client, recorder)
                start = len(recorder.stanzas)
                kamailio.add_user(sip_name, "changed-elsewhere")
                error = await recorder.wait_for(is_presence("error", GW), start=start, timeout=15)
                assert error["error"]["condition"] == "not-authorized"
                assert "403" in error["error"]["text"]

                start = len(recorder.stanzas)
                client.send_presence()
                error = await recorder.wait_for(is_presence("error", GW), start=start)
                assert error["error"]["condition"] == "not-authorized"
                assert "403" in error["error"]["text"]

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_address_translation_and_unregistration(prosody, kamailio, tmp_path) -> None:
    """jabber:iq:gateway turns sip:/sips:/plain addresses into escaped JIDs (XEP-0100 §6.3); removing
    the registration while online unregisters the SIP binding (XEP-0100 §4.3)."""
    async def scenario() -> None:
        async with running_gateway(prosody, GW, tmp_path, plugin="sip", options=gateway_options(kamailio)):
            async with sip_user(prosody, kamailio) as (sip_name, client, recorder):
                for prompt in ("sip:bob@example.com", "sips:bob@Example.com", "bob@example.com"):
                    iq = client.make_iq_set(ito=GW)
                    query = ET.Element("{jabber:iq:gateway}query")
                    ET.SubElement(query, "{jabber:iq:gateway}prompt").text = prompt
                    iq.append(query)
                    answer = await iq.send(timeout=10)
                    assert answer.xml.find("{jabber:iq:gateway}query/{jabber:iq:gateway}jid").text == \
                        f"bob\\40example.com@{GW}"

                await logged_in(client, recorder)
                assert len(kamailio.contacts(sip_name)) == 1
                # XEP-0100 §4.6: a contact the user adds is approved, subscribed back, and shown
                # available while the SIP registration is up (no SIP presence yet).
                bob_jid = f"bob\\40example.com@{GW}"
                client.send_presence(pto=bob_jid, ptype="subscribe")
                await recorder.wait_for(is_presence("subscribed", bob_jid))
                await recorder.wait_for(is_presence("available", bob_jid))
                start = len(recorder.stanzas)
                iq = client.make_iq_set(ito=GW)
                query = ET.Element(f"{{{NS_REGISTER}}}query")
                ET.SubElement(query, f"{{{NS_REGISTER}}}remove")
                iq.append(query)
                await iq.send(timeout=10)
                await eventually(lambda: kamailio.contacts(sip_name) == [], what="binding removed")
                await recorder.wait_for(is_presence("unavailable", bob_jid), start=start)

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_offline_messages_wait_in_the_servers_offline_storage(prosody, kamailio, tmp_path) -> None:
    """``offline_messages = true`` (issue 6 item 5, "unless configured otherwise"): when the user
    goes offline the gateway keeps (and refreshes) the SIP binding, so baresip's MESSAGE gets 200,
    not 480; the gateway sends it to the user's bare JID and Prosody's mod_offline keeps it until
    the user logs on again (RFC 6121 §8.5.2.1.1). Logging on again reuses the same registration;
    unregistering removes the binding."""
    async def scenario() -> None:
        options = gateway_options(kamailio, offline_messages=True, expires=MIN_EXPIRES)
        async with running_gateway(prosody, GW, tmp_path, plugin="sip", options=options) as service:
            sip_name, sip_password = kamailio.new_user("xmpp")
            jid, xmpp_password = prosody.new_user("sipoff")
            aor = f"sip:{sip_name}@{kamailio.domain}"
            async with connected_client(prosody, jid, xmpp_password, send_presence=True) as client:
                await client.get_roster()
                recorder = Recorder(client, GW)
                await register_form(client, GW, {"username": f"{sip_name}@{kamailio.domain}",
                                                 "password": sip_password})
                await logged_in(client, recorder)
                [binding] = kamailio.contacts(sip_name)
                [session] = service.plugin.sessions.values()
            # The client is gone: Prosody tells the gateway its last resource is unavailable.
            await eventually(lambda: not service.sessions.users[jid].resources, what="the user offline")
            refreshed = session.registration.refreshes
            await eventually(lambda: session.registration.refreshes >= refreshed + 2, timeout=MIN_EXPIRES * 3,
                             what="refreshes while offline")
            assert kamailio.contacts(sip_name) == [binding]

            bob, bob_password = kamailio.new_user("bob")
            async with BaresipAgent(tmp_path / "bob", kamailio, bob, bob_password, contacts=[aor],
                                    sip_trace=True) as bob_agent:
                await bob_agent.send_message(aor, f"offline: {TEXT}")
                assert await bob_agent.wait_message_answer() == 200
                assert bob_agent.message_failures() == []

            async with connected_client(prosody, jid, xmpp_password) as client:
                recorder = Recorder(client, GW)
                client.send_presence()
                stored = await recorder.wait_for(lambda s: s.name == "message" and s["body"] == f"offline: {TEXT}")
                assert stored["type"] == "chat"
                assert stored["from"].bare == contact_jid(bob, kamailio.domain)
                # Delivered from offline storage: Prosody stamps it (XEP-0203).
                assert stored.xml.find("{urn:xmpp:delay}delay") is not None
                await recorder.wait_for(is_presence("available", GW))
                assert list(service.plugin.sessions.values()) == [session]  # no second login
                assert kamailio.contacts(sip_name) == [binding]

                await unregister(client, GW)
                await eventually(lambda: kamailio.contacts(sip_name) == [], what="binding removed")
                assert service.plugin.sessions == {}

    await as_deferred(scenario())



@pytest_twisted.ensureDeferred
async def test_offline_messages_survive_a_gateway_restart(prosody, kamailio, tmp_path) -> None:
    """Stopping the gateway unregisters everyone (no binding left); with ``offline_messages`` the
    next start registers a user who is offline again (only online users answer the start probe,
    so the core logs the others in itself), and a MESSAGE then still reaches offline storage.
    With ``contact_secret`` the Contact token is the same after the restart."""
    async def scenario() -> None:
        key = generate_key()
        options = gateway_options(kamailio, offline_messages=True, contact_secret="restart-test-secret")
        sip_name, sip_password = kamailio.new_user("xmpp")
        jid, xmpp_password = prosody.new_user("siprestart")
        aor = f"sip:{sip_name}@{kamailio.domain}"
        async with running_gateway(prosody, GW, tmp_path, plugin="sip", options=options, key=key) as service:
            async with connected_client(prosody, jid, xmpp_password, send_presence=True) as client:
                await client.get_roster()
                recorder = Recorder(client, GW)
                await register_form(client, GW, {"username": f"{sip_name}@{kamailio.domain}",
                                                 "password": sip_password})
                await logged_in(client, recorder)
            await eventually(lambda: not service.sessions.users[jid].resources, what="the user offline")
            [before] = kamailio.contacts(sip_name)
        assert kamailio.contacts(sip_name) == []  # SIGTERM logged the kept session out too

        async with running_gateway(prosody, GW, tmp_path, plugin="sip", options=options, key=key) as service:
            await eventually(lambda: len(kamailio.contacts(sip_name)) == 1, what="registered again at start")
            [after] = kamailio.contacts(sip_name)
            assert TOKEN.search(after).group() == TOKEN.search(before).group()  # the stable secret's token
            assert service.sessions.users[jid].resources == {}
            bob, bob_password = kamailio.new_user("bob")
            async with BaresipAgent(tmp_path / "bob", kamailio, bob, bob_password, contacts=[aor],
                                    sip_trace=True) as bob_agent:
                await bob_agent.send_message(aor, f"after the restart: {TEXT}")
                assert await bob_agent.wait_message_answer() == 200
            async with connected_client(prosody, jid, xmpp_password) as client:
                recorder = Recorder(client, GW)
                client.send_presence()
                stored = await recorder.wait_for(
                    lambda s: s.name == "message" and s["body"] == f"after the restart: {TEXT}")
                assert stored["from"].bare == contact_jid(bob, kamailio.domain)
                assert stored.xml.find("{urn:xmpp:delay}delay") is not None

    await as_deferred(scenario())
