"""The private Prosody and ngircd of a bench run, tuned so that neither throttles the load.

Settings follow the Biboumi baseline (shared reference ``baseline-biboumi.md``):

* Prosody: no ``mod_limits``, ``nagle = false`` (TCP_NODELAY), plain c2s without TLS on
  loopback (no TLS cost in the clients or the server), ``internal_plain`` accounts written
  as files (1200 ``prosodyctl register`` calls would take minutes), and logging at ``warn``:
  the debug log of :class:`gateway.prosody.PrivateProsody` formats every stanza and would
  make Prosody the bottleneck.
* ngircd: ``MaxPenaltyTime = 0`` (no command penalties), no per-IP, connection or join limits,
  and an operator block so the bench's own IRC clients can set ``+F`` (no flood protection).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.prosody import ComponentSpec, PrivateProsody, ProsodyError, free_ports

OPER_NAME = "bench"
OPER_PASSWORD = "bench"


def wait_for_port(port: int, process: subprocess.Popen, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode} while starting")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} does not listen on port {port} after {timeout} s")


class BenchProsody(PrivateProsody):
    """:class:`PrivateProsody` with the bench's settings (see the module docstring)."""

    def __init__(self, *, directory: Path, components: list[ComponentSpec]) -> None:
        super().__init__(directory=directory, components=components, require_encryption=False)

    def render_config(self) -> str:
        text = super().render_config()
        text = text.replace("log = { debug = ", "log = { warn = ")
        text = text.replace('authentication = "internal_hashed"', 'authentication = "internal_plain"')
        return text + "\nnetwork_settings = { nagle = false }\n"

    def _wait_ready(self, *, timeout: float, log_offset: int) -> None:
        # The parent waits for debug lines that a warn-level log no longer has: wait for the ports.
        assert self._process is not None
        try:
            wait_for_port(self.c2s_port, self._process, "prosody", timeout)
            wait_for_port(self.component_port, self._process, "prosody", timeout)
        except RuntimeError as exc:
            raise ProsodyError(self._describe(str(exc))) from exc

    def write_accounts(self, users: list[str], password: str) -> None:
        """Create accounts as ``internal_plain`` data files (read at each login, no restart)."""
        self._prepare()
        accounts = self.data_path / self.domain.replace(".", "%2e") / "accounts"
        accounts.mkdir(parents=True, exist_ok=True)
        record = f'return {{\n\t["password"] = "{password}";\n}};\n'
        for user in users:
            # Bench user names are [a-z0-9] only, which Prosody stores unencoded.
            (accounts / f"{user}.dat").write_text(record)


NGIRCD_CONFIG = """\
[Global]
	Name = irc.bench
	Info = xmpp-gateway bench ircd
	AdminInfo1 = bench
	AdminInfo2 = bench
	AdminEMail = bench@localhost
	Listen = 127.0.0.1
	Ports = {port}
	MotdPhrase = "bench"
[Limits]
	MaxConnections = 0
	MaxConnectionsIP = 0
	MaxJoins = 0
	MaxNickLength = 30
	MaxPenaltyTime = 0
	PingTimeout = 600
	PongTimeout = 120
[Options]
	PAM = no
	Ident = no
	DNS = no
	MorePrivacy = no
[Operator]
	Name = {oper}
	Password = {password}
"""


@dataclass
class Ngircd:
    port: int
    process: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        stop_process(self.process)


def start_ngircd(directory: Path) -> Ngircd:
    binary = shutil.which("ngircd") or "/usr/sbin/ngircd"
    directory.mkdir(parents=True, exist_ok=True)
    port = free_ports(1)[0]
    config = directory / "ngircd.conf"
    config.write_text(NGIRCD_CONFIG.format(port=port, oper=OPER_NAME, password=OPER_PASSWORD))
    log_path = directory / "ngircd.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen([binary, "--nodaemon", "--config", str(config)],
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = Ngircd(port=port, process=process, log_path=log_path)
    try:
        wait_for_port(port, process, "ngircd")
    except BaseException:
        server.stop()
        raise
    return server


def stop_process(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM exactly this child, SIGKILL it if it lingers."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, 15)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, 9)
            process.wait()
