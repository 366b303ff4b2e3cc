"""``xmpp-gateway run`` without ``--config``: a self-contained demo.

Starts a private Prosody and a private IRC server (ngircd) on 127.0.0.1 (free
ports, data in the demo directory), attaches two gateways, the IRC plugin and
the echo plugin, prints the account to log in with and the room to join, and
runs until Ctrl-C, then stops everything it started. The account, the
keys and the database live in the demo directory, so a second run keeps what
the first one registered.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

from gateway.config import parse_config
from gateway.prosody import ComponentSpec, PrivateProsody, ProsodyError, free_ports
from plugins.irc.ngircd import IrcdError, start_ngircd, stop_ngircd

DOMAIN = "localhost"
GATEWAY = f"echo.{DOMAIN}"
IRC_GATEWAY = f"irc.{DOMAIN}"
IRC_NETWORK = "local"
USER = "demo"


def _persistent(path: Path, make: str) -> str:
    """A value generated on the first run and kept for the next ones."""
    if path.exists():
        return path.read_text().strip()
    path.write_text(make + "\n")
    path.chmod(0o600)
    return make


def run_demo(directory: Path) -> int:
    from gateway.store.crypto import generate_key

    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    password = _persistent(directory / "demo-password", secrets.token_urlsafe(9))
    component_secret = _persistent(directory / "component-secret", secrets.token_urlsafe(24))
    irc_secret = _persistent(directory / "irc-component-secret", secrets.token_urlsafe(24))
    credentials_key = _persistent(directory / "credentials-key", generate_key())

    prosody = PrivateProsody(
        directory=directory / "prosody",
        domain=DOMAIN,
        components=[ComponentSpec(jid=GATEWAY, secret=component_secret),
                    ComponentSpec(jid=IRC_GATEWAY, secret=irc_secret)],
    )
    ircd_port = free_ports(1)[0]
    config = parse_config({
        "server": {"host": "127.0.0.1", "port": prosody.component_port},
        "database": {"url": f"sqlite:///{directory / 'gateway.sqlite3'}"},
        "logging": {"level": "info"},
        "security": {"credentials_key": credentials_key, "admins": [f"{USER}@{DOMAIN}"]},
        "gateways": {
            "echo": {"plugin": "echo", "jid": GATEWAY, "secret": component_secret},
            "irc": {"plugin": "irc", "jid": IRC_GATEWAY, "secret": irc_secret, "options": {
                # The demo's own ircd is on loopback: allowed here, and only that network.
                "networks": {IRC_NETWORK: {"host": "127.0.0.1", "port": ircd_port, "tls": False}},
                "allowed_networks": [IRC_NETWORK], "allow_private": True,
            }},
        },
    }, f"<demo in {directory}>")

    from gateway.app import StartupError, configure_logging, run
    from gateway.cli import _install_reactor

    configure_logging(config.logging)
    _install_reactor()
    from twisted.internet import reactor

    ircd = None
    try:
        ircd = start_ngircd(directory / "ngircd", name="irc.local", port=ircd_port)
        prosody.start()
        prosody.register_user(USER, password)
        print(_banner(prosody, ircd.port, password, directory), flush=True)
        return run(config, reactor)  # type: ignore[arg-type]
    except (StartupError, IrcdError, ProsodyError) as exc:
        print(f"xmpp-gateway: {exc}", file=sys.stderr)
        return 2
    finally:
        # Stop only what this demo started, by PID.
        prosody.stop()
        if ircd is not None:
            stop_ngircd(ircd)


def _banner(prosody: PrivateProsody, irc_port: int, password: str, directory: Path) -> str:
    return f"""
  xmpp-gateway demo is running (state in {directory}).

  Log in with any XMPP client (Gajim, Dino, Conversations, poezio, profanity):
    account   {USER}@{DOMAIN}
    password  {password}
    server    127.0.0.1, port {prosody.c2s_port}   (set host and port by hand: "{DOMAIN}" has no DNS)
    TLS       self-signed certificate, accept it once: {prosody.certificate_path}

  IRC: join the room #demo%{IRC_NETWORK}@{IRC_GATEWAY} (any nick). An IRC client can
  join too: server 127.0.0.1, port {irc_port}, channel #demo.
  Echo: open service discovery on {GATEWAY}, register with any username and
  password, and chat with anyone@{GATEWAY}: they answer with an echo.
  Press Ctrl-C to stop; everything started here stops with it.
"""
