"""The session Prosody and the slixmpp test client work together.

These pin the test infrastructure itself (``tests/fixtures/prosody.py``,
``tests/fixtures/xmpp_client.py``, ``gateway/prosody.py``): a registered user
logs in and can query the server (XEP-0030 disco#info, RFC 6120 session), and
accounts survive a server restart, which reconnection tests rely on.
"""

from __future__ import annotations

import asyncio

import pytest
import pytest_twisted

from tests.fixtures.prosody import ProsodyServer
from tests.fixtures.xmpp_client import as_deferred, connected_client

pytestmark = pytest.mark.integration

DISCO_INFO = "http://jabber.org/protocol/disco#info"


def _background_tasks() -> set[asyncio.Task[object]]:
    current = asyncio.current_task()
    return {t for t in asyncio.all_tasks() if t is not current and not t.done()}


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "starttls-verified"])
@pytest_twisted.ensureDeferred
async def test_user_logs_in_and_discovers_server(prosody: ProsodyServer, tls: bool) -> None:
    """A registered user gets a session and a disco#info answer from the server domain."""
    jid, password = prosody.new_user("disco")

    async def scenario() -> None:
        before = _background_tasks()
        async with connected_client(prosody, jid, password, tls=tls) as client:
            assert client.boundjid.bare == jid
            info = await client.plugin["xep_0030"].get_info(jid=prosody.domain, timeout=5)
            features = set(info["disco_info"]["features"])
            identities = {(cat, typ) for cat, typ, _lang, _name in info["disco_info"]["identities"]}
        assert DISCO_INFO in features
        assert ("server", "im") in identities
        # Nothing of slixmpp may keep running into the next test.
        await asyncio.sleep(0)
        assert _background_tasks() <= before

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_restart_keeps_registered_users(prosody: ProsodyServer) -> None:
    """After restart() on the same ports and data, an existing account can log in again."""
    jid, password = prosody.new_user("restart")
    instance = prosody.instance
    old_pid = instance.pid

    # Blocking for ~0.5 s is fine here: nothing else runs on the loop during this test.
    instance.restart()

    assert instance.running
    assert instance.pid != old_pid
    assert (instance.c2s_port, instance.component_port) == (prosody.c2s_port, prosody.component_port)

    async def scenario() -> None:
        async with connected_client(prosody, jid, password) as client:
            assert client.boundjid.bare == jid

    await as_deferred(scenario())
