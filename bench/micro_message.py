"""CPU per relayed groupchat message through our whole gateway, socket-free and repeatable.

The real IRC plugin on the unit tests' fake reactor (tests/unit/harness.py): the component
stream and the IRC connection are ``StringTransport``s, so what is measured is the gateway's
own work per message (parse, route, relay, reflect, serialise, write), none of Prosody's or
ngircd's, and none of the kernel's. One user joins ``#bench`` with one resource, then:

* XMPP→IRC: N groupchat stanzas fed to the component stream (each is relayed as a PRIVMSG
  and reflected to the sender);
* IRC→XMPP: N PRIVMSG lines fed to the IRC connection (each becomes a groupchat message).

Prints µs of process CPU per message for each direction (the best of ``--rounds``)::

    .venv/bin/python -m bench.micro_message [--messages 20000] [--rounds 3] [--archive]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from tests.unit.harness import build_gateway

USER = "alice@example.org"
RESOURCE = f"{USER}/bench"
NETWORK = "127.0.0.1"  # an address: no name resolution on the fake reactor
ROOM = f"#bench%{NETWORK}@gw.example.org"
BODY = "a plain line of chat, about as long as one people type in a channel"


def _gateway(archive: bool) -> tuple[Any, Any]:
    extra: dict[str, Any] = {"archive": {"enabled": archive}}
    server, _ = build_gateway("plugins.irc.plugin:IrcPlugin", extra=extra, options={
        "allow_private": True, "allowed_networks": [NETWORK],
        "throttle_burst": 1_000_000_000, "throttle_rate": 0.01,
        "networks": {NETWORK: {"host": NETWORK, "port": 6667, "tls": False}},
    })
    server.service.start()
    server.handshake()
    server.sent()
    server.feed(f"<presence from='{RESOURCE}' to='{ROOM}/alice'>"
                "<x xmlns='http://jabber.org/protocol/muc'/></presence>")
    server.clock.advance(0)
    # The IRC connection went to the fake reactor: connect it to a string transport.
    from twisted.internet.testing import StringTransport

    _host, _port, factory, *_ = server.clock.tcpClients[-1]
    irc = factory.buildProtocol(None)
    irc_transport = StringTransport()
    irc.makeConnection(irc_transport)
    irc.dataReceived(f":{NETWORK} 001 alice :Welcome\r\n"
                     f":{NETWORK} 005 alice CHANTYPES=# PREFIX=(ov)@+ :are supported\r\n"
                     f":{NETWORK} 376 alice :End of MOTD\r\n".encode())
    server.clock.advance(0)
    irc.dataReceived(f":alice!a@h JOIN #bench\r\n:{NETWORK} 353 alice = #bench :alice bob\r\n"
                     f":{NETWORK} 366 alice #bench :End of NAMES\r\n".encode())
    server.clock.advance(0)
    sent = server.sent()
    assert any(s.name == "message" for s in sent), [s.toXml() for s in sent]
    irc_transport.clear()
    return server, (irc, irc_transport)


def _cpu() -> float:
    return time.process_time()


def run(messages: int, archive: bool) -> tuple[float, float]:
    server, (irc, irc_transport) = _gateway(archive)
    protocol = server.endpoint.protocol
    out = server.endpoint.transport
    stanzas = [(f"<message from='{RESOURCE}' to='{ROOM}' type='groupchat' id='m{i}'>"
                f"<body>{BODY} {i}</body></message>").encode() for i in range(messages)]
    relayed = reflected = 0
    start = _cpu()
    for data in stanzas:
        protocol.dataReceived(data)
        if out.io.tell() > 1 << 20:
            reflected += out.value().count(b"<message")
            relayed += irc_transport.value().count(b"PRIVMSG")
            out.clear()
            irc_transport.clear()
    server.clock.advance(0)
    x2i = (_cpu() - start) / messages * 1e6
    reflected += out.value().count(b"<message")
    relayed += irc_transport.value().count(b"PRIVMSG")
    assert relayed == reflected == messages, (relayed, reflected)
    out.clear()
    irc_transport.clear()
    lines = [f":bob!b@h PRIVMSG #bench :{BODY} {i}\r\n".encode() for i in range(messages)]
    shown = 0
    start = _cpu()
    for data in lines:
        irc.dataReceived(data)
        if out.io.tell() > 1 << 20:
            shown += out.value().count(b"<message")
            out.clear()
    server.clock.advance(0)
    i2x = (_cpu() - start) / messages * 1e6
    shown += out.value().count(b"<message")
    assert shown == messages, shown
    server.service.connection.stop()
    return x2i, i2x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--archive", action="store_true", help="with the room archive on")
    args = parser.parse_args()
    results = [run(args.messages, args.archive) for _ in range(args.rounds)]
    x2i = min(r[0] for r in results)
    i2x = min(r[1] for r in results)
    print(f"archive {'on' if args.archive else 'off'}: XMPP→IRC {x2i:.1f} µs/msg, IRC→XMPP {i2x:.1f} µs/msg "
          f"(best of {args.rounds} x {args.messages})")


if __name__ == "__main__":
    main()
