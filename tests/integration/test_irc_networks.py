"""Registered IRC networks (issue 5 item 1) against InspIRCd + Atheme: a per-network XEP-0077
registration at ``network@gateway`` (or at the gateway JID with ``network``) is checked by a
real connection (a wrong SASL password is refused and nothing is stored) and then used at
logon."""

from __future__ import annotations

import pytest
import pytest_twisted
from slixmpp import ClientXMPP
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET

from tests.fixtures.gateway import running_gateway
from tests.fixtures.steps import NS_REGISTER
from tests.fixtures.xmpp_client import as_deferred, connected_client
from tests.integration.test_irc_ircv3 import ircv3_options, nickserv_account, tagged_irc_client
from tests.integration.test_irc_rooms import GW, NETWORK, joined, unique

pytestmark = pytest.mark.integration

NS_DATA = "jabber:x:data"
NETWORK_JID = f"{NETWORK}@{GW}"


async def register_form(client: ClientXMPP, to: str, values: dict[str, str]):
    """XEP-0077 with a data form (XEP-0004 ``submit``), as the per-network form asks."""
    iq = client.make_iq_set(ito=to)
    query = ET.Element(f"{{{NS_REGISTER}}}query")
    form = ET.SubElement(query, f"{{{NS_DATA}}}x", {"type": "submit"})
    for var, value in {"FORM_TYPE": NS_REGISTER, **values}.items():
        field = ET.SubElement(form, f"{{{NS_DATA}}}field", {"var": var})
        ET.SubElement(field, f"{{{NS_DATA}}}value").text = value
    iq.append(query)
    return await iq.send(timeout=20)


async def registration_form(client: ClientXMPP, to: str):
    iq = client.make_iq_get(ito=to)
    iq.append(ET.Element(f"{{{NS_REGISTER}}}query"))
    return await iq.send(timeout=10)


def is_registered(result) -> bool:
    return result.xml.find(f"{{{NS_REGISTER}}}query/{{{NS_REGISTER}}}registered") is not None


async def whois_account(irc, nick: str) -> str:
    irc.send(f"WHOIS {nick}")
    line = await irc.read_until(lambda line: f" 330 {irc.nick} {nick} " in line or " 318 " in line)
    return line.split(f" 330 {irc.nick} {nick} ", 1)[1].split()[0] if " 330 " in line else ""


@pytest_twisted.ensureDeferred
async def test_network_registration_checks_sasl_by_a_real_connection(prosody, inspircd, tmp_path):
    """A wrong SASL password at network@gateway is refused (not-authorized) and stores
    nothing; the right one is accepted, and the next join logs in to IRC with it."""
    account, secret = unique("acct"), "Sesame-" + unique("pw")
    channel = unique("#netreg")

    async def scenario() -> None:
        await nickserv_account(inspircd, account, secret)
        async with running_gateway(prosody, GW, tmp_path, plugin="irc", options=ircv3_options(inspircd)) as service:
            jid, password = prosody.new_user("netreg")
            async with connected_client(prosody, jid, password, send_presence=True) as client:
                nick = unique("alice")
                form = await registration_form(client, NETWORK_JID)
                assert not is_registered(form)
                fields = {f.get("var") for f in form.xml.iter(f"{{{NS_DATA}}}field")}
                assert {"nick", "sasl_account", "sasl_password", "autojoin", "encoding_in"} <= fields

                with pytest.raises(IqError) as refused:
                    await register_form(client, NETWORK_JID, {"nick": nick, "sasl_account": account,
                                                              "sasl_password": "Wrong-" + secret})
                assert refused.value.iq["error"]["condition"] == "not-authorized"
                assert "Wrong-" not in str(refused.value.iq)
                assert not is_registered(await registration_form(client, NETWORK_JID))
                assert jid not in service.sessions.registered

                result = await register_form(client, NETWORK_JID, {"nick": nick, "sasl_account": account,
                                                                   "sasl_password": secret})
                assert result["type"] == "result"
                assert is_registered(await registration_form(client, NETWORK_JID))
                # The gateway JID's own registration is untouched: there is none.
                assert not is_registered(await registration_form(client, GW))

                async with tagged_irc_client(inspircd, unique("bob")) as bob:
                    # The registered nick wins over the join presence's nick (status 210).
                    async with joined(prosody, client, channel, unique("other")):
                        assert service.sessions.users[jid].session.connections[NETWORK].nick == nick
                        assert await whois_account(bob, nick) == account

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_gateway_form_with_a_network_field_registers_that_network(prosody, inspircd, tmp_path):
    """At the gateway JID, a form naming a network registers that network only (its SASL
    checked too), and <remove/> at network@gateway removes only that one."""
    account, secret = unique("acct"), "Sesame-" + unique("pw")

    async def scenario() -> None:
        await nickserv_account(inspircd, account, secret)
        async with running_gateway(prosody, GW, tmp_path, plugin="irc", options=ircv3_options(inspircd)):
            jid, password = prosody.new_user("netreggw")
            async with connected_client(prosody, jid, password, send_presence=True) as client:
                nick = unique("carol")
                with pytest.raises(IqError) as refused:
                    await register_form(client, GW, {"network": NETWORK, "username": nick,
                                                     "sasl_account": account, "password": "bad"})
                assert refused.value.iq["error"]["condition"] == "not-authorized"
                await register_form(client, GW, {"network": NETWORK, "username": nick,
                                                 "sasl_account": account, "password": secret})
                form = await registration_form(client, NETWORK_JID)
                assert is_registered(form)
                values = {f.get("var"): f.findtext(f"{{{NS_DATA}}}value")
                          for f in form.xml.iter(f"{{{NS_DATA}}}field")}
                assert values["nick"] == nick and values["sasl_account"] == account
                assert not values.get("sasl_password")  # secrets are never sent back
                assert not is_registered(await registration_form(client, GW))

                iq = client.make_iq_set(ito=NETWORK_JID)
                query = ET.Element(f"{{{NS_REGISTER}}}query")
                ET.SubElement(query, f"{{{NS_REGISTER}}}remove")
                iq.append(query)
                assert (await iq.send(timeout=10))["type"] == "result"
                assert not is_registered(await registration_form(client, NETWORK_JID))

    await as_deferred(scenario())
