"""The two gateways under test, attached in turn to the same Prosody component ``irc.localhost``.

Both are separate processes started and stopped by PID, so their CPU and RSS come from /proc.
Each addresses the bench's ngircd as network ``127.0.0.1``: rooms are ``#chan%127.0.0.1@irc.localhost``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench.servers import stop_process
from bench.xmpp import XmppClient

COMPONENT = "irc.localhost"
NETWORK = "127.0.0.1"


def room(channel: str) -> str:
    return f"{channel}%{NETWORK}@{COMPONENT}"


@dataclass
class Gateway:
    """What a phase needs from a gateway: start, stop, its PID, and per-user preparation."""

    name: str
    directory: Path
    component_port: int
    secret: str
    irc_port: int
    process: subprocess.Popen | None = None
    archive: bool = True
    configured: set[str] = field(default_factory=set)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def command(self, archive: bool) -> list[str]:
        raise NotImplementedError

    def supports_archive_switch(self) -> bool:
        return True

    def start(self, archive: bool) -> None:
        self.stop()
        self.archive = archive
        self.directory.mkdir(parents=True, exist_ok=True)
        log = (self.directory / "stdout.log").open("ab")
        # The checkout on the path, so ``-m bench.traced_gateway`` works from the run directory.
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
               "BENCH_TRACEMALLOC_DIR": str(self.directory)}
        self.process = subprocess.Popen(self.command(archive), stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, cwd=self.directory, env=env)
        log.close()

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    async def prepare_user(self, client: XmppClient) -> None:
        """Per-user set-up needed before the user can reach the bench ngircd (nothing by default)."""

    async def set_user_archive(self, client: XmppClient, archive: bool) -> None:
        """Per-user archive switch, for gateways where it is a user setting."""


class Ours(Gateway):
    """xmpp-gateway with its IRC plugin: flood control out of reach, loopback allowed."""

    traced: bool = False
    """Run under ``bench.traced_gateway`` (tracemalloc snapshots on SIGUSR1): profiling only."""

    def config_text(self, archive: bool | None) -> str:
        key = self.directory / "credentials.key"
        if not key.exists():
            from gateway.store.crypto import generate_key
            key.write_text(generate_key())
        lines = [
            "[server]", 'host = "127.0.0.1"', f"port = {self.component_port}",
            "[database]", f'url = "sqlite:///{self.directory / "gateway.sqlite3"}"',
            "[logging]", 'level = "info"', f'file = "{self.directory / "gateway.log"}"',
            "[security]", f'credentials_key = "{key.read_text().strip()}"',
            "[gateways.irc]", 'plugin = "irc"', f'jid = "{COMPONENT}"', f'secret = "{self.secret}"',
            "[gateways.irc.options]", "allow_private = true", f'allowed_networks = ["{NETWORK}"]',
            # Biboumi's throttle is off in the bench (throttle_limit = -1); ours has no "off",
            # so a bucket that never empties.
            "throttle_burst = 1000000000", "throttle_rate = 0.01",
            f'[gateways.irc.options.networks."{NETWORK}"]', f'host = "{NETWORK}"',
            f"port = {self.irc_port}", "tls = false",
        ]
        if archive is not None:
            lines += ["[gateways.irc.archive]", f"enabled = {'true' if archive else 'false'}"]
        return "\n".join(lines) + "\n"

    def _executable(self) -> str:
        venv = Path(sys.executable).parent / "xmpp-gateway"
        return str(venv) if venv.exists() else (shutil.which("xmpp-gateway") or "xmpp-gateway")

    def supports_archive_switch(self) -> bool:
        """Whether this checkout knows ``[gateways.NAME.archive]`` (check-config accepts it)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        probe = self.directory / "probe.toml"
        probe.write_text(self.config_text(True))
        result = subprocess.run([self._executable(), "check-config", str(probe)],
                                capture_output=True, text=True, timeout=60, check=False)
        return result.returncode == 0

    def command(self, archive: bool) -> list[str]:
        config = self.directory / "gateway.toml"
        # Without the archive switch, the archive-off figures are the gateway as it is.
        switch = archive if self.supports_archive_switch() else None
        config.write_text(self.config_text(switch))
        if self.traced:
            return [sys.executable, "-m", "bench.traced_gateway", "run", "--config", str(config)]
        return [self._executable(), "run", "--config", str(config)]


class Biboumi(Gateway):
    """Biboumi 9.0 (Debian): SQLite on the run directory, identd off, log level 1 (as the baseline)."""

    def command(self, archive: bool) -> list[str]:
        policy = self.directory / "policy"
        policy.mkdir(parents=True, exist_ok=True)
        config = self.directory / "biboumi.cfg"
        config.write_text("\n".join([
            f"hostname={COMPONENT}", f"password={self.secret}", "xmpp_server_ip=127.0.0.1",
            f"port={self.component_port}", f"db_name={self.directory / 'biboumi.sqlite'}",
            "identd_port=0", "log_level=1", f"log_file={self.directory / 'biboumi.log'}",
            f"policy_directory={policy}", "realname_customization=true", "",
        ]))
        return [shutil.which("biboumi") or "/usr/bin/biboumi", str(config)]

    async def prepare_user(self, client: XmppClient) -> None:
        # Biboumi cannot be told the IRC port in its config: each user configures the server
        # (ports, no TLS ports, throttle off). Kept in its database, so once per user and run.
        if client.user in self.configured:
            return
        await client.run_command(f"{NETWORK}@{COMPONENT}", "configure", {
            "ports": [str(self.irc_port)], "tls_ports": [], "verify_cert": ["false"],
            "throttle_limit": ["-1"], "max_history_length": ["20"],
        })
        await self.set_user_archive(client, self.archive)
        self.configured.add(client.user)

    async def set_user_archive(self, client: XmppClient, archive: bool) -> None:
        await client.run_command(COMPONENT, "configure", {
            "record_history": ["true" if archive else "false"], "max_history_length": ["20"],
            "persistent": ["false"],
        })
