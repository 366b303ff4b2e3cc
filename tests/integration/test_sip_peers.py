"""The SIP test rig itself (tests/fixtures/sip_peers.py): Kamailio as registrar and
proxy with digest auth, baresip as real user agents, all on loopback.

These tests prove the rig works, so the SIP plugin's tests can build on it:
registration with the right and a wrong password, a user added while Kamailio runs,
and a MESSAGE with non-ASCII text from one baresip to another through Kamailio, over
UDP and over TCP. :class:`BaresipAgent` is asyncio code: a test driven by
pytest-twisted runs it through :func:`as_deferred`.
"""

from __future__ import annotations

import pytest
import pytest_twisted

from tests.fixtures.sip_peers import BaresipAgent, KamailioServer
from tests.fixtures.xmpp_client import as_deferred

pytestmark = pytest.mark.integration

TEXT = "héllo ✓"


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest_twisted.ensureDeferred
async def test_message_between_registered_agents(kamailio: KamailioServer, tmp_path, transport: str) -> None:
    alice, alice_password = kamailio.new_user("alice")
    bob, bob_password = kamailio.new_user("bob")
    bob_uri = f"sip:{bob}@{kamailio.domain}"

    async def scenario() -> None:
        async with BaresipAgent(tmp_path / "bob", kamailio, bob, bob_password, transport=transport) as bob_agent, \
                BaresipAgent(tmp_path / "alice", kamailio, alice, alice_password, transport=transport,
                             contacts=[bob_uri]) as alice_agent:
            bindings = kamailio.contacts(bob)
            assert len(bindings) == 1
            assert (";transport=tcp" in bindings[0]) == (transport == "tcp")

            await alice_agent.send_message(bob_uri, TEXT)

            received = await bob_agent.wait_message()
            assert received.sender == alice_agent.uri
            assert received.body == TEXT
            assert bob_agent.received() == [received]

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_wrong_password_is_refused(kamailio: KamailioServer, tmp_path) -> None:
    user, _ = kamailio.new_user("carol")

    async def scenario() -> None:
        async with BaresipAgent(tmp_path / "carol", kamailio, user, "not-the-password",
                                wait_registered=False) as agent:
            assert await agent.wait_registration_failed() in (401, 403)
            assert kamailio.contacts(user) == []

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_user_added_while_running_can_register(kamailio: KamailioServer, tmp_path) -> None:
    kamailio.add_user("dave-late", "pässwörd")

    async def scenario() -> None:
        async with BaresipAgent(tmp_path / "dave", kamailio, "dave-late", "pässwörd") as agent:
            assert kamailio.contacts("dave-late") == await agent.wait_registered()

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_proxy_answers_for_unknown_offline_and_foreign_users(kamailio: KamailioServer, tmp_path) -> None:
    """404 for an unknown user, 480 for a known one with no binding, 403 off the domain
    (the errors the gateway will map to XMPP errors)."""
    alice, alice_password = kamailio.new_user("alice")
    offline, _ = kamailio.new_user("offline")
    unknown = f"sip:nobody-here@{kamailio.domain}"
    offline_uri = f"sip:{offline}@{kamailio.domain}"
    foreign = "sip:someone@example.com"

    async def scenario() -> None:
        async with BaresipAgent(tmp_path / "alice", kamailio, alice, alice_password,
                                contacts=[unknown, offline_uri, foreign]) as agent:
            await agent.send_message(unknown, TEXT)
            assert (await agent.wait_message_failure(1))[0] == 404
            await agent.send_message(offline_uri, TEXT)
            assert (await agent.wait_message_failure(2))[0] == 480
            await agent.send_message(foreign, TEXT)
            assert (await agent.wait_message_failure(3))[0] == 403

    await as_deferred(scenario())
