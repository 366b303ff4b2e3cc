"""A private ngircd (Debian package ``ngircd``) on loopback: for the demo and the tests.

It listens on 127.0.0.1 and a free port, writes its log to a file, and is stopped
by PID. ngircd refuses to run as root and drops to ``nobody`` by itself.

Given a certificate and key (PEM files), it also accepts TLS on a second port
(ngircd's ``[SSL]`` section; Debian builds it with GnuTLS). ngircd loads them
before dropping privileges, but reloads them as ``nobody`` on REHASH, so
:func:`start_ngircd` copies them into a private directory of their own that the
server's user owns, and :func:`stop_ngircd` removes it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
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

NGIRCD_TLS_CONFIG = """\
[SSL]
	CertFile = {certificate}
	KeyFile = {key}
	Ports = {tls_port}
"""


@dataclass(frozen=True)
class IrcServer:
    name: str
    host: str
    port: int
    log_path: Path
    process: subprocess.Popen
    tls_port: int | None = None
    """The TLS port, when started with a certificate and key."""
    tls_directory: Path | None = None
    """Where the copies of the certificate and key live (removed by :func:`stop_ngircd`)."""


def _wait_for_port(port: int, process: subprocess.Popen, log_path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise IrcdError(f"ngircd exited: {log_path.read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise IrcdError(f"ngircd did not listen on {port}: {log_path.read_text()[-2000:]}")


def start_ngircd(directory: Path, name: str = "irc.localhost", port: int | None = None, *,
                 tls_port: int | None = None, certificate: Path | None = None,
                 key: Path | None = None) -> IrcServer:
    """Start ngircd on 127.0.0.1: plain on ``port``, and TLS on ``tls_port`` when given a
    ``certificate`` (PEM, with its chain) and ``key`` (PEM, unencrypted). Free ports are
    chosen for ports not given; returns once every port accepts connections."""
    binary = shutil.which("ngircd") or "/usr/sbin/ngircd"
    if not Path(binary).exists():
        raise IrcdError("ngircd is not installed (Debian package ngircd; ./dev installs it)")
    if (certificate is None) != (key is None):
        raise IrcdError("TLS needs both a certificate and a key")
    if tls_port is not None and certificate is None:
        raise IrcdError("a TLS port needs a certificate and a key")
    directory.mkdir(parents=True, exist_ok=True)
    fresh = iter([p for p in free_ports(3) if p not in (port, tls_port)])
    port = port or next(fresh)
    text = NGIRCD_CONFIG.format(name=name, port=port)
    tls_directory = None
    if certificate is not None and key is not None:
        tls_port = tls_port or next(fresh)
        tls_directory = _private_copies(certificate, key)
        text += NGIRCD_TLS_CONFIG.format(certificate=tls_directory / "cert.pem",
                                         key=tls_directory / "key.pem", tls_port=tls_port)
    config = directory / "ngircd.conf"
    config.write_text(text)
    log_path = directory / "ngircd.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen([binary, "--nodaemon", "--config", str(config)],
                                   stdout=log, stderr=subprocess.STDOUT)
    server = IrcServer(name=name, host="127.0.0.1", port=port, log_path=log_path, process=process,
                       tls_port=tls_port if tls_directory is not None else None, tls_directory=tls_directory)
    try:
        _wait_for_port(port, process, log_path)
        if server.tls_port is not None:
            _wait_for_port(server.tls_port, process, log_path)
    except BaseException:
        stop_ngircd(server)
        raise
    return server


def _private_copies(certificate: Path, key: Path) -> Path:
    """Copy the certificate and key into a new directory (mode 0700, files 0600) owned by
    the user ngircd runs as: ``nobody`` when started as root, else the current user."""
    directory = Path(tempfile.mkdtemp(prefix="ngircd-tls-"))
    shutil.copyfile(certificate, directory / "cert.pem")
    shutil.copyfile(key, directory / "key.pem")
    paths = (directory, directory / "cert.pem", directory / "key.pem")
    for path in paths[1:]:
        path.chmod(0o600)
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        for path in paths:
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
    return directory


def stop_ngircd(server: IrcServer) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
    if server.tls_directory is not None:
        shutil.rmtree(server.tls_directory, ignore_errors=True)


