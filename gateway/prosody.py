"""Launch a private, throw-away Prosody XMPP server.

Used by the demo mode of the CLI (``xmpp-gateway run`` without a config
starts one of these next to the gateway) and by the test suite (one per
session).  Everything the server owns (config, certificate, data, pidfile,
log) lives in one directory, it listens on 127.0.0.1 only, on ports chosen
by :func:`free_ports` unless given, so several instances (a test session and a
demo, or two test sessions) can run side by side.

Written against Debian's Prosody 0.12 and the ``prosody-modules`` package.
Things that were found out for that version and are relied on here:

* ``prosody -F`` (long form ``--no-daemonize``) runs in the foreground;
  ``--foreground`` is *not* understood by 0.12's argument parser and would
  be silently ignored.  ``daemonize = false`` in the config is deprecated
  (a warning is logged when it is read without -F), so the flag is what counts.
* As root, both ``prosody`` (mod_posix) and ``prosodyctl`` refuse to run or
  try to switch to the ``prosody`` user unless ``run_as_root = true``.
* Host-level ``modules_enabled`` is *added* to the global list, and a
  ``Component`` only inherits a few global modules, so mod_privilege has to
  be listed in both the VirtualHost and each privileged Component section;
  ``privileged_entities`` is read from the VirtualHost section.
* Prosody keeps running when it cannot bind a port (it only logs an error),
  so readiness is checked both by connecting and by reading its log.

No pytest imports here: this module ships with the package.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import ipaddress
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "ComponentSpec",
    "PrivateProsody",
    "ProsodyError",
    "free_ports",
    "random_secret",
]

LOOPBACK = "127.0.0.1"
CONFIG_NAME = "prosody.cfg.lua"
LOG_NAME = "prosody.log"
#: Prosody's own stdout/stderr: normally empty (everything goes to the log
#: file), but Lua errors before logging is set up end up here.
CONSOLE_NAME = "prosody.console"
PID_NAME = "prosody.pid"

# Prosody writes these debug lines once a listener is really bound; connecting
# alone is not proof, because a foreign process could own a port that Prosody
# failed to bind (it logs an error and keeps running without it).
_LISTENING = "Added listening service {service} to [{interface}]:{port}"
_BIND_FAILED = "Failed to open server port"


class ProsodyError(RuntimeError):
    """Prosody could not be started, stopped or administered."""


def free_ports(n: int) -> list[int]:
    """Return ``n`` distinct TCP ports that are free on 127.0.0.1 right now.

    All sockets are held open at the same time so the kernel cannot hand out
    the same port twice, then released together.  There is an unavoidable
    window between releasing them and the caller binding them.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    sockets: list[socket.socket] = []
    try:
        for _ in range(n):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((LOOPBACK, 0))
            # listen() so the port is really in use, exactly as Prosody will use it.
            sock.listen(1)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass(frozen=True)
class ComponentSpec:
    """An XEP-0114 external component the private server accepts.

    ``privileged`` grants XEP-0356 (``urn:xmpp:privilege:2``) rights over the
    VirtualHost's users: ``roster = "both"`` and ``message = "outgoing"``.
    """

    jid: str
    secret: str
    privileged: bool = False


def _lua(value: str) -> str:
    """Quote ``value`` as a Lua string literal (paths and secrets are arbitrary)."""
    out = ['"']
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            # Lua's \ddd escape is decimal; three digits so a following digit is not swallowed.
            out.append(f"\\{ord(ch):03d}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _lua_list(values: Sequence[str | int]) -> str:
    items = [_lua(v) if isinstance(v, str) else str(v) for v in values]
    return "{ " + ", ".join(items) + " }" if items else "{}"


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


def _generate_certificate(*, cert_path: Path, key_path: Path, domain: str, names: Sequence[str]) -> None:
    """Write a self-signed certificate valid for ``domain`` and ``names``.

    It is its own CA (basicConstraints CA:TRUE) so a client can pass the
    ``.crt`` file as its only trust root and still verify the chain and the
    hostname, which is how the test suite exercises verified STARTTLS.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    now = datetime.datetime.now(datetime.UTC)
    sans: list[x509.GeneralName] = []
    for name in dict.fromkeys([domain, *names]):  # ordered de-duplication
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # Backdated a little: clocks of test containers are not always in sync.
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Prosody runs as the same user as us (run_as_root or not), so 0600 is
    # readable by it and by nobody else.
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key_bytes)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


class PrivateProsody:
    """A Prosody process owned by this object, configured in ``directory``.

    The ports are fixed at construction (picked with :func:`free_ports` if not
    given), so :meth:`restart` comes back on the same ports with the same data
    and certificate, and clients or components can reconnect.
    """

    def __init__(
        self,
        *,
        directory: Path,
        domain: str = "localhost",
        components: Sequence[ComponentSpec],
        c2s_port: int | None = None,
        component_port: int | None = None,
        require_encryption: bool = True,
    ) -> None:
        jids = [c.jid for c in components]
        if len(set(jids)) != len(jids):
            raise ValueError(f"duplicate component JIDs: {jids}")
        if domain in jids:
            raise ValueError(f"a component cannot use the VirtualHost's domain {domain!r}")
        self._directory = Path(directory).resolve()
        self._domain = domain
        self._components = tuple(components)
        self._require_encryption = require_encryption
        if c2s_port is None or component_port is None:
            picked = iter(free_ports(2))
            c2s_port = c2s_port if c2s_port is not None else next(picked)
            component_port = component_port if component_port is not None else next(picked)
        if c2s_port == component_port:
            raise ValueError(f"c2s and component ports must differ (both {c2s_port})")
        self._c2s_port = c2s_port
        self._component_port = component_port
        self._process: subprocess.Popen[bytes] | None = None
        self._console: IO[bytes] | None = None

    # -- properties -------------------------------------------------------------------------------

    @property
    def domain(self) -> str:
        return self._domain

    @property
    def components(self) -> tuple[ComponentSpec, ...]:
        return self._components

    @property
    def c2s_port(self) -> int:
        return self._c2s_port

    @property
    def component_port(self) -> int:
        return self._component_port

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def config_path(self) -> Path:
        return self._directory / CONFIG_NAME

    @property
    def log_path(self) -> Path:
        return self._directory / LOG_NAME

    @property
    def console_path(self) -> Path:
        return self._directory / CONSOLE_NAME

    @property
    def certificate_path(self) -> Path:
        """The self-signed certificate; usable as a client's only trust root."""
        return self._directory / "certs" / f"{self._domain}.crt"

    @property
    def key_path(self) -> Path:
        return self._directory / "certs" / f"{self._domain}.key"

    @property
    def data_path(self) -> Path:
        return self._directory / "data"

    @property
    def pid(self) -> int | None:
        """PID of the running Prosody, or None."""
        return self._process.pid if self.running and self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- configuration ----------------------------------------------------------------------------

    def render_config(self) -> str:
        """The ``prosody.cfg.lua`` text for this instance."""
        d = self._directory
        privileged = [c for c in self._components if c.privileged]
        modules = [
            "roster",
            "saslauth",
            "tls",
            "disco",
            "presence",
            "ping",
            "register",  # loaded for XEP-0077 discovery/password change; allow_registration stays false
            "version",
            "offline",  # a chat message to an offline user waits for them, as on a real server
            "posix",  # pidfile and SIGTERM handling; autoloaded on POSIX anyway
        ]
        lines = [
            "-- Generated by gateway.prosody; rewritten on every start, do not edit.",
            "",
            # Without this, mod_posix aborts and prosodyctl tries to setuid to 'prosody'.
            "run_as_root = true",
            # Documents intent only: -F on the command line wins and this is then not read
            # (read without -F, 0.12 would log a deprecation warning for it).
            "daemonize = false",
            f"pidfile = {_lua(str(d / PID_NAME))}",
            f"data_path = {_lua(str(self.data_path))}",
            # Where certmanager indexes certificates (default is relative to the config dir anyway).
            f"certificates = {_lua(str(d / 'certs'))}",
            f"log = {{ debug = {_lua(str(self.log_path))} }}",
            "",
            "-- Loopback only, on our own ports, so instances do not collide.",
            f"interfaces = {_lua_list([LOOPBACK])}",
            f"local_interfaces = {_lua_list([LOOPBACK])}",
            f"c2s_ports = {_lua_list([self._c2s_port])}",
            f"c2s_interfaces = {_lua_list([LOOPBACK])}",
            f"component_ports = {_lua_list([self._component_port])}",
            f"component_interfaces = {_lua_list([LOOPBACK])}",
            f"component_interface = {_lua(LOOPBACK)}  -- pre-0.9 spelling, harmless",
            "s2s_ports = {}",
            "c2s_direct_tls_ports = {}",
            "legacy_ssl_ports = {}",
            "http_ports = {}",
            "https_ports = {}",
            "",
            f"modules_enabled = {_lua_list(modules)}",
            # s2s is autoloaded; a private server must never federate.
            f"modules_disabled = {_lua_list(['s2s', 's2s_auth_certs'])}",
            "allow_registration = false",
            'authentication = "internal_hashed"',
            'storage = "internal"',
        ]
        if not self._require_encryption:
            lines += [
                "",
                "-- Test clients log in without STARTTLS (self-signed certificate).",
                "c2s_require_encryption = false",
                "allow_unencrypted_plain_auth = true",
            ]
        else:
            lines += ["c2s_require_encryption = true"]
        lines += [
            "",
            f"VirtualHost {_lua(self._domain)}",
            f"    ssl = {{ certificate = {_lua(str(self.certificate_path))},",
            f"            key = {_lua(str(self.key_path))} }}",
        ]
        if privileged:
            lines += [
                # Added to the global list, not replacing it.
                f"    modules_enabled = {_lua_list(['privilege'])}",
                "    privileged_entities = {",
            ]
            for comp in privileged:
                lines.append(f'        [{_lua(comp.jid)}] = {{ roster = "both"; message = "outgoing"; }};')
            lines.append("    }")
        for comp in self._components:
            lines += ["", f"Component {_lua(comp.jid)}", f"    component_secret = {_lua(comp.secret)}"]
            if comp.privileged:
                # mod_privilege must also run on the component host: it fires the
                # advertisement (<message><privilege/>) when the component authenticates.
                lines.append(f"    modules_enabled = {_lua_list(['privilege'])}")
        return "\n".join(lines) + "\n"

    def _prepare(self) -> None:
        """Create the directory layout, certificate (once) and config file."""
        self._directory.mkdir(parents=True, exist_ok=True)
        (self._directory / "certs").mkdir(mode=0o700, exist_ok=True)
        self.data_path.mkdir(mode=0o700, exist_ok=True)
        if not (self.certificate_path.exists() and self.key_path.exists()):
            # Kept across restarts so clients that pinned it keep working.
            _generate_certificate(
                cert_path=self.certificate_path,
                key_path=self.key_path,
                domain=self._domain,
                names=[f"*.{self._domain}", *(c.jid for c in self._components)],
            )
        self.config_path.write_text(self.render_config())

    @staticmethod
    def _executable(name: str) -> str:
        path = shutil.which(name)
        if path is None:
            raise ProsodyError(f"{name!r} not found on PATH; install Prosody (apt-get install prosody)")
        return path

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> None:
        """Write the config, start Prosody and wait until both ports are served."""
        if self.running:
            raise ProsodyError(f"Prosody already running (pid {self.pid})")
        executable = self._executable("prosody")
        self._prepare()
        # Prosody appends to its log; remember where this run starts so an old
        # run's "listening" lines do not count as readiness for this one.
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        console = open(self.console_path, "ab")  # noqa: SIM115 - owned until the process is stopped
        try:
            self._process = subprocess.Popen(
                [executable, "--config", str(self.config_path), "-F"],
                cwd=self._directory,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
            )
        except BaseException:
            console.close()
            raise
        self._console = console
        # A crashed test run or a demo exiting via sys.exit must not leave Prosody behind.
        atexit.register(self._stop_at_exit)
        try:
            self._wait_ready(timeout=timeout, log_offset=log_offset)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, *, timeout: float, log_offset: int) -> None:
        wanted = {
            _LISTENING.format(service="c2s", interface=LOOPBACK, port=self._c2s_port),
            _LISTENING.format(service="component", interface=LOOPBACK, port=self._component_port),
        }
        deadline = time.monotonic() + timeout
        assert self._process is not None
        while True:
            rc = self._process.poll()
            if rc is not None:
                raise ProsodyError(self._describe(f"Prosody exited with status {rc} during startup"))
            log_text = self._read_log(log_offset)
            if _BIND_FAILED in log_text:
                raise ProsodyError(self._describe("Prosody could not bind its ports (in use?)"))
            if all(line in log_text for line in wanted) and all(
                _port_open(p) for p in (self._c2s_port, self._component_port)
            ):
                return
            if time.monotonic() >= deadline:
                raise ProsodyError(self._describe(f"Prosody not ready after {timeout:.1f}s"))
            time.sleep(0.05)

    def _read_log(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(offset)
                return fh.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def _describe(self, problem: str) -> str:
        parts = [
            f"{problem} (config {self.config_path}, ports c2s={self._c2s_port} "
            f"component={self._component_port})",
            f"--- tail of {self.log_path} ---",
            _tail(self.log_path),
        ]
        console = _tail(self.console_path).strip()
        if console:
            parts += [f"--- tail of {self.console_path} ---", console]
        return "\n".join(parts)

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM our Prosody, wait, SIGKILL if it does not exit. Idempotent."""
        process, self._process = self._process, None
        atexit.unregister(self._stop_at_exit)
        try:
            if process is not None and process.poll() is None:
                # Signal exactly the PID we started, never anything found by name.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(process.pid, signal.SIGKILL)
                    process.wait(timeout=5)
        finally:
            console, self._console = self._console, None
            if console is not None:
                console.close()

    def _stop_at_exit(self) -> None:
        self.stop(timeout=5)

    def restart(self, timeout: float = 15.0) -> None:
        """Stop and start again on the same ports with the same data."""
        self.stop()
        self.start(timeout=timeout)

    # -- administration ---------------------------------------------------------------------------

    def register_user(self, user: str, password: str) -> str:
        """Create (or reset the password of) ``user@domain``; returns the bare JID.

        Goes through ``prosodyctl`` on the data directory, so it works whether
        or not the server is running (internal storage is read on each login).
        """
        executable = self._executable("prosodyctl")
        if not self.config_path.exists():
            self._prepare()
        result = subprocess.run(
            [executable, "--config", str(self.config_path), "register", user, self._domain, password],
            cwd=self._directory,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise ProsodyError(
                f"prosodyctl register {user} {self._domain} failed with status {result.returncode}:\n"
                f"{result.stdout}{result.stderr}"
            )
        return f"{user}@{self._domain}"

    # -- context manager --------------------------------------------------------------------------

    def __enter__(self) -> PrivateProsody:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return (
            f"<PrivateProsody {self._domain} c2s={self._c2s_port} "
            f"component={self._component_port} {state} dir={self._directory}>"
        )


def random_secret() -> str:
    """A component secret that is safe to put anywhere (hex, 128 bits)."""
    return secrets.token_hex(16)
