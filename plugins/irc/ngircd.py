"""A private ngircd (Debian package ``ngircd``) on loopback: for the demo and the tests.

It listens on 127.0.0.1 and a free port, writes its log to a file, and is stopped
by PID. ngircd refuses to run as root and drops to ``nobody`` by itself.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.prosody import free_ports


class IrcdError(RuntimeError):
    """ngircd is missing or did not start; the message says why."""


NGIRCD_CONFIG = """\
[Global]
	Name = {name}
	Info = xmpp-gateway test ircd
	AdminInfo1 = tests
	AdminInfo2 = tests
	AdminEMail = tests@localhost
	Listen = 127.0.0.1
	Ports = {port}
	MotdPhrase = "Welcome to the test network"
[Limits]
	MaxConnectionsIP = 0
	MaxJoins = 0
	MaxNickLength = 30
	PingTimeout = 120
	PongTimeout = 20
[Options]
	PAM = no
	Ident = no
	DNS = no
	MorePrivacy = no
"""


@dataclass(frozen=True)
class IrcServer:
    name: str
    host: str
    port: int
    log_path: Path
    process: subprocess.Popen


def _wait_for_port(port: int, process: subprocess.Popen, log_path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise IrcdError(f"ngircd exited: {log_path.read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise IrcdError(f"ngircd did not listen on {port}: {log_path.read_text()[-2000:]}")


def start_ngircd(directory: Path, name: str = "irc.localhost", port: int | None = None) -> IrcServer:
    binary = shutil.which("ngircd") or "/usr/sbin/ngircd"
    if not Path(binary).exists():
        raise IrcdError("ngircd is not installed (Debian package ngircd; ./dev installs it)")
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_ports(1)[0]
    config = directory / "ngircd.conf"
    config.write_text(NGIRCD_CONFIG.format(name=name, port=port))
    log_path = directory / "ngircd.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen([binary, "--nodaemon", "--config", str(config)],
                                   stdout=log, stderr=subprocess.STDOUT)
    _wait_for_port(port, process, log_path)
    return IrcServer(name=name, host="127.0.0.1", port=port, log_path=log_path, process=process)


def stop_ngircd(server: IrcServer) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


