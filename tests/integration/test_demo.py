"""`xmpp-gateway run` without a config: the newcomer's demo, tried as a newcomer would."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from types import SimpleNamespace

import pytest
import pytest_twisted
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from tests.fixtures.ircd import raw_irc_client
from tests.fixtures.xmpp_client import as_deferred, connected_client

pytestmark = pytest.mark.integration


@pytest_twisted.ensureDeferred
async def test_demo_lets_a_newcomer_join_an_irc_room(tmp_path):
    """The banner's account logs in over verified TLS, joins the demo IRC room, talks with an
    IRC client, and Ctrl-C stops everything with exit 0."""
    async def scenario() -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "run", "--directory", str(tmp_path / "demo"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=dict(os.environ))
        try:
            banner = ""
            while "Press Ctrl-C" not in banner:
                line = await asyncio.wait_for(process.stdout.readline(), 30)
                assert line, f"demo ended early: {(await process.stderr.read()).decode()[-2000:]}"
                banner += line.decode()
            account = re.search(r"account\s+(\S+)", banner).group(1)
            password = re.search(r"password\s+(\S+)", banner).group(1)
            c2s_port = int(re.search(r"server\s+127\.0\.0\.1, port (\d+)", banner).group(1))
            certificate = re.search(r"accept it once: (\S+)", banner).group(1)
            room = re.search(r"join the room (\S+)", banner).group(1)
            irc_port = int(re.search(r"port (\d+), channel #demo", banner).group(1))
            server = SimpleNamespace(c2s_port=c2s_port, certificate_path=certificate,
                                     log_path=tmp_path / "demo" / "prosody" / "prosody.log")
            async with connected_client(server, account, password, send_presence=True, tls=True) as client:
                received: asyncio.Queue = asyncio.Queue()
                client.register_handler(Callback("room messages", MatchXPath("{jabber:client}message"),
                                                 received.put_nowait))
                async with raw_irc_client(SimpleNamespace(host="127.0.0.1", port=irc_port), "ircfan") as fan:
                    fan.send("JOIN #demo")
                    await fan.read_until(lambda text: " 366 " in text)
                    for _ in range(100):  # the gateway attaches a moment after the banner
                        presence = client.make_presence(pto=f"{room}/newcomer")
                        presence.xml.append(presence.xml.makeelement("{http://jabber.org/protocol/muc}x", {}))
                        presence.send()
                        try:
                            await fan.read_until(lambda text: "JOIN" in text and "newcomer" in text, timeout=1)
                            break
                        except TimeoutError:
                            continue
                    client.send_message(mto=room, mbody="hello IRC", mtype="groupchat")
                    await fan.read_until(lambda text: "PRIVMSG #demo :hello IRC" in text)
                    fan.send("PRIVMSG #demo :hello XMPP")
                    while True:
                        message = await asyncio.wait_for(received.get(), 10)
                        if message["body"] == "hello XMPP":
                            break
            process.send_signal(signal.SIGINT)
            assert await asyncio.wait_for(process.wait(), 20) == 0
            return [c2s_port, irc_port]
        finally:
            if process.returncode is None:
                # SIGTERM lets the demo stop its Prosody and ngircd; SIGKILL would orphan them.
                process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), 20)
                except TimeoutError:
                    process.kill()
                    await process.wait()

    ports = await as_deferred(scenario())
    # Everything the demo started is gone: nothing listens on its Prosody and ngircd ports.
    for port in ports:
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
