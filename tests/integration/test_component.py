"""The component against a real Prosody, seen from a real client (issue 2, "done when")."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
import pytest_twisted
from slixmpp.exceptions import IqError

from gateway.stanzas import stanza
from tests.fixtures.gateway import eventually, running_gateway
from tests.fixtures.xmpp_client import as_deferred, connected_client

pytestmark = pytest.mark.integration
GW = "gw1.localhost"


@pytest_twisted.ensureDeferred
async def test_handshake_disco_and_unknown_iq(prosody, tmp_path):
    """After the handshake a client's disco#info gets the gateway identity, and an unknown
    iq gets service-unavailable."""
    async def scenario() -> None:
        jid, password = prosody.new_user("disco")
        async with running_gateway(prosody, GW, tmp_path) as service, \
                connected_client(prosody, jid, password) as client:
            assert service.connection.handshakes == 1
            info = await client.plugin["xep_0030"].get_info(jid=GW, timeout=5)
            # slixmpp gives (category, type, xml:lang, name).
            identities = {(i[0], i[1], i[3]) for i in info["disco_info"]["identities"]}
            assert identities == {("gateway", "fake", "Fake gateway")}
            features = info["disco_info"]["features"]
            assert "jabber:iq:register" in features and "jid\\20escaping" in features

            unknown = client.make_iq_get(queryxmlns="urn:example:nothing", ito=GW)
            with pytest.raises(IqError) as error:
                await unknown.send(timeout=5)
            assert error.value.iq["error"]["condition"] == "service-unavailable"

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_reconnects_after_server_restart_and_flushes_queue(prosody, tmp_path):
    """Prosody stopped and started again: the component is back within the backoff cap and a
    stanza produced meanwhile reaches the user."""
    async def scenario() -> None:
        jid, password = prosody.new_user("queue")
        async with running_gateway(prosody, GW, tmp_path) as service:
            prosody.instance.stop()
            await eventually(lambda: not service.connection.authenticated, what="stream loss")
            message = stanza("message", sender=f"bob@{GW}", recipient=jid, type_="chat")
            message.addElement("body", content="sent while the server was down")
            service.connection.send(message)
            assert len(service.connection.queue) == 1
            started = asyncio.get_running_loop().time()
            prosody.instance.start()
            await eventually(lambda: service.connection.authenticated, timeout=15, what="reconnection")
            # max_backoff is 2 s in these tests: back well within cap + jitter + start-up.
            assert asyncio.get_running_loop().time() - started < 8
            assert service.connection.handshakes == 2
            received: asyncio.Future = asyncio.get_running_loop().create_future()
            async with connected_client(prosody, jid, password) as client:
                client.add_event_handler("message", lambda m: received.done() or received.set_result(m))
                client.send_presence()  # offline storage delivers on initial presence
                got = await asyncio.wait_for(received, 10)
                assert got["body"] == "sent while the server was down"
                assert got["from"].bare == f"bob@{GW}"

    await as_deferred(scenario())


def test_wrong_secret_exits_with_a_clear_error(prosody, tmp_path):
    """A wrong component secret ends `xmpp-gateway run` with exit 1 and names the cause."""
    config = tmp_path / "gateway.toml"
    config.write_text(
        f"[server]\nport = {prosody.component_port}\n"
        f"[database]\nurl = 'sqlite:///{tmp_path / 'db.sqlite3'}'\n"
        "[security]\ncredentials_key_env = 'XGW_KEY'\n"
        f"[gateways.echo]\njid = '{GW}'\nsecret = 'not-the-secret'\n"
    )
    from gateway.store.crypto import generate_key

    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "run", "--config", str(config)],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "XGW_KEY": generate_key()},
    )
    assert result.returncode == 1, result.stderr
    assert "not-authorized" in result.stderr
    assert "secret" in result.stderr
    assert result.stderr.count("connected to the XMPP server") == 0


@pytest_twisted.ensureDeferred
async def test_version_and_ping_from_a_client(prosody, tmp_path):
    """XEP-0092 and XEP-0199 answered through the server."""
    async def scenario() -> None:
        jid, password = prosody.new_user("ping")
        async with running_gateway(prosody, GW, tmp_path), connected_client(prosody, jid, password) as client:
            version = await client.plugin["xep_0092"].get_version(GW, timeout=5)
            assert version["software_version"]["name"] == "xmpp-gateway"
            rtt = await client.plugin["xep_0199"].ping(GW, timeout=5)
            assert rtt >= 0

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_sigterm_says_goodbye_and_exits_zero(prosody, tmp_path):
    """`xmpp-gateway run` on SIGTERM: unavailable from contacts and the gateway reach an online
    user, the legacy session is logged out, the process exits 0."""
    import signal

    from gateway.store.crypto import generate_key
    from tests.fixtures.steps import Recorder, is_presence, register

    gateway = "gw2.localhost"
    config = tmp_path / "gateway.toml"
    config.write_text(
        f"[server]\nport = {prosody.component_port}\n"
        f"[database]\nurl = 'sqlite:///{tmp_path / 'db.sqlite3'}'\n"
        f"[security]\ncredentials_key = '{generate_key()}'\n"
        f"[gateways.echo]\njid = '{gateway}'\nsecret = '{prosody.secrets[gateway]}'\n"
    )

    async def scenario() -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "run", "--config", str(config),
            stderr=asyncio.subprocess.PIPE)
        try:
            jid, password = prosody.new_user("sigterm")
            async with connected_client(prosody, jid, password, send_presence=True) as client:
                await client.get_roster()
                recorder = Recorder(client, gateway)
                for _ in range(50):  # the process needs a moment to attach
                    try:
                        await register(client, gateway, "demo", "pw")
                        break
                    except IqError:
                        await asyncio.sleep(0.1)
                await recorder.wait_for(is_presence("available", gateway))
                await recorder.wait_for(is_presence("available", f"echo-bot@{gateway}"))
                start = len(recorder.stanzas)
                process.send_signal(signal.SIGTERM)
                await recorder.wait_for(is_presence("unavailable", f"echo-bot@{gateway}"), start=start)
                await recorder.wait_for(is_presence("unavailable", gateway), start=start)
                assert await asyncio.wait_for(process.wait(), 15) == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        stderr = (await process.stderr.read()).decode()
        assert "Traceback" not in stderr

    await as_deferred(scenario())
