"""TLS to IRC networks, verified, with no fallback to plain text (issue 4 item 2).

An ngircd of this module's own listens on a plain port and, with a certificate for
``irc.localhost`` from a throwaway CA, on a TLS port. ``irc.localhost`` is not in
DNS here, so the network is configured with ``host = "irc.localhost"`` (the name
the certificate is verified against) and ``address = "127.0.0.1"`` (where to
connect). Raw IRC clients watch from the plain port.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import pytest_twisted

from plugins.irc import connection as irc_connection
from tests.fixtures.gateway import running_gateway
from tests.fixtures.ircd import (
    IrcdError,
    IrcServer,
    TestCertificates,
    raw_irc_client,
    start_ngircd,
    stop_ngircd,
)
from tests.fixtures.xmpp_client import as_deferred, connected_client
from tests.integration.test_irc_rooms import GW, NETWORK, Room, join_presence, room_jid, status_codes, unique

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tls_ircd(tmp_path_factory: pytest.TempPathFactory, certificates: TestCertificates) -> Iterator[IrcServer]:
    try:
        server = start_ngircd(tmp_path_factory.mktemp("ngircd-tls"), certificate=certificates.certificate,
                              key=certificates.key)
    except IrcdError as exc:
        pytest.fail(str(exc))
    assert server.tls_port is not None
    try:
        yield server
    finally:
        stop_ngircd(server)


def tls_options(port: int, ca_file: str = "") -> dict:
    network = {"host": "irc.localhost", "address": "127.0.0.1", "port": port, "tls": True}
    if ca_file:
        network["ca_file"] = ca_file
    return {"networks": {NETWORK: network}, "allow_private": True, "throttle_burst": 100,
            "throttle_rate": 0.01}


def registered_in_log(ircd: IrcServer, nick: str) -> bool:
    """Whether ngircd logged a registration of ``nick`` (``User "nick!user@host" registered``)."""
    return f'"{nick}!' in ircd.log_path.read_text(errors="replace")


async def refused_join(prosody, ircd: IrcServer, tmp_path, options: dict, prefix: str, why: str) -> None:
    """An XMPP user's join fails with a presence error, and the gateway's nick never
    registers on the ircd (a watcher on the plain port does not see it; nor does the log)."""
    channel = unique("#refused")
    async with running_gateway(prosody, GW, tmp_path, plugin="irc", options=options):
        async with raw_irc_client(ircd, unique("watch")) as watcher:
            watcher.send(f"JOIN {channel}")
            await watcher.read_until(lambda line: " 366 " in line)
            jid, password = prosody.new_user(prefix)
            async with connected_client(prosody, jid, password, send_presence=True) as client:
                alice = unique("alice")
                room = Room(client, room_jid(channel))
                join_presence(client, room.jid, alice)
                error = await room.wait(lambda s: s.name == "presence" and s["type"] == "error", timeout=12)
                assert error["error"]["condition"] == "remote-server-timeout"
                assert why in error["error"]["text"]
                assert not any(s.name == "presence" and "110" in status_codes(s) for s in room.of_room())
                watcher.send(f"ISON {alice}")
                ison = await watcher.read_until(lambda line: " 303 " in line)
                assert alice not in ison
                assert not any(alice in line for line in watcher.lines)
                assert not registered_in_log(ircd, alice)


@pytest_twisted.ensureDeferred
async def test_verified_tls_join_and_talk(prosody, tls_ircd, certificates, tmp_path):
    """tls with the test CA: the join works over TLS (the ircd's WHOIS says so), and a
    groupchat message reaches a raw client on the plain port; a reply comes back."""
    channel = unique("#tls")
    options = tls_options(tls_ircd.tls_port, str(certificates.ca))

    async def scenario() -> None:
        async with running_gateway(prosody, GW, tmp_path, plugin="irc", options=options):
            async with raw_irc_client(tls_ircd, unique("bob")) as bob:
                bob.send(f"JOIN {channel}")
                await bob.read_until(lambda line: " 366 " in line)
                jid, password = prosody.new_user("irctls")
                async with connected_client(prosody, jid, password, send_presence=True) as client:
                    alice = unique("alice")
                    room = Room(client, room_jid(channel))
                    join_presence(client, room.jid, alice)
                    await room.wait(lambda s: s.name == "presence" and "110" in status_codes(s))
                    await bob.read_until(lambda line: "JOIN" in line and alice in line)
                    bob.send(f"WHOIS {alice}")
                    # ngircd's RPL_WHOISSSL (275): the gateway's connection is the TLS one.
                    await bob.read_until(lambda line: " 275 " in line and alice in line
                                         and "is connected via SSL" in line)

                    client.send_message(mto=room.jid, mbody="hello over tls", mtype="groupchat")
                    await bob.read_until(lambda line: f"PRIVMSG {channel} :hello over tls" in line)
                    bob.send(f"PRIVMSG {channel} :hello back")
                    await room.wait(lambda s: s.name == "message" and s["body"] == "hello back")

    await as_deferred(scenario())


@pytest_twisted.ensureDeferred
async def test_untrusted_certificate_fails_without_fallback(prosody, tls_ircd, tmp_path):
    """tls without ca_file: the system roots do not trust the test CA, so the join fails with a
    presence error, and the gateway never registers, neither over TLS nor in plain text."""
    await as_deferred(refused_join(prosody, tls_ircd, tmp_path, tls_options(tls_ircd.tls_port), "ircuntrusted",
                                   "certificate verify failed"))
    assert "SSL accept error" in tls_ircd.log_path.read_text(errors="replace")


@pytest_twisted.ensureDeferred
async def test_tls_to_a_plain_port_fails_without_fallback(prosody, tls_ircd, certificates, tmp_path,
                                                          monkeypatch):
    """tls pointed at the plain port: the handshake never completes (ngircd waits for a line),
    the join fails once registration times out, and no NICK ever reaches the ircd."""
    monkeypatch.setattr(irc_connection, "REGISTRATION_TIMEOUT", 3.0)
    options = tls_options(tls_ircd.port, str(certificates.ca))
    await as_deferred(refused_join(prosody, tls_ircd, tmp_path, options, "ircplainport", "did not let us in"))
