"""A private InspIRCd 3 (Debian package ``inspircd``) with IRCv3 modules on loopback, for tests.

Optionally linked to Atheme services (Debian package ``atheme-services``: NickServ
with CERT, and SaslServ with PLAIN and EXTERNAL) over a server link on a second loopback
port, so that SASL, account-tag, account-notify and extended-join carry real accounts.
Given a server certificate it also listens with TLS (ssl_gnutls + sslinfo: client
certificate fingerprints reach services, for CertFP / SASL EXTERNAL).

Both daemons refuse to run as root: when started by root they run as ``nobody``
from a private directory (mode 0700) that ``nobody`` owns, holding their
configuration, data and logs. Everything listens on 127.0.0.1 and free ports;
both are stopped by PID, and :func:`stop_inspircd` copies the logs into the
directory given to :func:`start_inspircd` before removing the private one.

Flood limits are off: the connect class has a huge ``commandrate``, no fake lag
and no connection limits, and Atheme's registration rate limit is raised.
NickServ registers without e-mail confirmation (``auth = none``).
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
from plugins.irc.ngircd import IrcdError

__all__ = ["IrcServerWithServices", "IrcdError", "start_inspircd", "stop_inspircd"]

MODULES = ("cap", "ircv3", "ircv3_servertime", "ircv3_msgid", "ircv3_echomessage", "ircv3_accounttag",
           "ircv3_ctctags", "ircv3_chghost", "ircv3_capnotify", "ircv3_batch", "namesx", "uhnames",
           "sasl", "services_account", "spanningtree", "hidechans")

INSPIRCD_CONFIG = """\
<config format="xml">
<server name="{name}" description="xmpp-gateway test ircd" network="TestNet" id="0AA">
<admin name="tests" nick="tests" email="tests@localhost">
<path configdir="{directory}" datadir="{directory}" logdir="{directory}" runtimedir="{directory}"
      moduledir="/usr/lib/inspircd/modules">
<pid file="{directory}/inspircd.pid">
<bind address="127.0.0.1" port="{port}" type="clients">
{server_bind}
<connect name="main" allow="*" maxchans="1000" localmax="100000" globalmax="100000" limit="100000"
         maxconnwarn="no" commandrate="1000000" fakelag="no" threshold="1000000" penaltythreshold="1000000"
         sendq="10M" softsendq="10M" hardsendq="10M" recvq="1M" pingfreq="120" timeout="60"
         useident="no" resolvehostnames="no" usednsbl="no" modes="">
<dns server="127.0.0.1" timeout="1">
<options defaultmodes="nt" allowzerolimit="no" syntaxhints="no" announcets="yes" hostintopic="yes"
         cyclehosts="no" exemptchanops="">
<performance clonesonconnect="no" nouserdns="yes" netbuffersize="10240" somaxconn="128" timeskipwarn="0">
<security hidesplits="no" hideulines="no" announceinvites="dynamic" runasuser="" runasgroup=""
          restrictbannedusers="no" genericoper="no" userstats="Pu" customversion="">
<limits maxnick="30" maxchan="64" maxmodes="20" maxident="11" maxhost="64" maxquit="255" maxtopic="307"
        maxkick="255" maxreal="128" maxaway="200">
<log method="file" type="* -USERINPUT -USEROUTPUT" level="default" target="{directory}/inspircd.log">
<cidr ipv4clone="32" ipv6clone="128">
<disabled commands="" usermodes="" chanmodes="" fakenonexistant="no">
{modules}
{tls}
{services}
"""

TLS_CONFIG = """\
<module name="ssl_gnutls">
<module name="sslinfo">
<sslinfo operonly="no">
<sslprofile name="Clients" provider="gnutls" certfile="{directory}/tls-cert.pem"
            keyfile="{directory}/tls-key.pem" hash="sha256" requestclientcert="yes" priority="NORMAL">
<bind address="127.0.0.1" port="{tls_port}" type="clients" sslprofile="Clients">
"""

SERVICES_LINK = """\
<link name="{services_name}" ipaddr="127.0.0.1" port="{link_port}" allowmask="127.0.0.1/32"
      sendpass="{link_password}" recvpass="{link_password}" hidden="no">
<uline server="{services_name}" silent="yes">
<sasl target="{services_name}" requiressl="no">
"""

def _services_link(values: dict[str, object], sasl: bool) -> str:
    link = SERVICES_LINK.format(**values)
    # <sasl> needs the sasl module, which a server without SASL does not load.
    return link if sasl else "\n".join(line for line in link.splitlines() if not line.startswith("<sasl "))


ATHEME_CONFIG = """\
loadmodule "modules/protocol/inspircd";
loadmodule "modules/backend/opensex";
loadmodule "modules/crypto/pbkdf2v2";
loadmodule "modules/nickserv/main";
loadmodule "modules/nickserv/identify";
loadmodule "modules/nickserv/register";
loadmodule "modules/nickserv/info";
loadmodule "modules/nickserv/logout";
loadmodule "modules/nickserv/help";
loadmodule "modules/saslserv/main";
loadmodule "modules/saslserv/plain";
loadmodule "modules/nickserv/cert";
loadmodule "modules/saslserv/external";

pbkdf2v2 {{ rounds = 1000; }};

serverinfo {{
	name = "{services_name}";
	desc = "Atheme test services";
	numeric = "00A";
	recontime = 1;
	netname = "TestNet";
	hidehostsuffix = "users.test";
	adminname = "tests";
	adminemail = "tests@localhost";
	registeremail = "noreply@localhost";
	mta = "/bin/true";
	loglevel = {{ all; }};
	maxlogins = 100;
	maxusers = 1000;
	mdlimit = 30;
	emaillimit = 1000;
	emailtime = 300;
	auth = none;
	casemapping = rfc1459;
}};

uplink "{name}" {{
	host = "127.0.0.1";
	password = "{link_password}";
	port = {link_port};
}};

nickserv {{
	nick = "NickServ";
	user = "NickServ";
	host = "{services_name}";
	real = "Nickname Services";
	maxnicks = 5;
	expire = 30;
}};

saslserv {{
	nick = "SaslServ";
	user = "SaslServ";
	host = "{services_name}";
	real = "SASL Authentication Agent";
}};

general {{
	flood_msgs = 0;
	flood_time = 10;
	ratelimit_uses = 100000;
	ratelimit_period = 1;
	kline_time = 7;
	clone_time = 0;
	commit_interval = 5;
	default_clone_allowed = 100000;
	default_clone_warn = 100000;
	uplink_sendq_limit = 1048576;
	language = "en";
	immune_level = immune;
}};
"""


@dataclass(frozen=True)
class IrcServerWithServices:
    name: str
    host: str
    port: int
    log_path: Path
    """InspIRCd's log (in the private directory while running, then copied to ``directory``)."""
    process: subprocess.Popen
    directory: Path
    private: Path
    """The private working directory (owned by the daemons' user), removed on stop."""
    services: subprocess.Popen | None = None
    services_log_path: Path | None = None
    services_name: str = "services.localhost"
    tls_port: int | None = None

    def logs(self) -> str:
        """The tails of both logs, for error messages."""
        parts = []
        for path in (self.log_path, self.services_log_path):
            if path is not None:
                with contextlib.suppress(OSError):
                    parts.append(f"--- {path}:\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)


def _run_as() -> pwd.struct_passwd | None:
    return pwd.getpwnam("nobody") if os.geteuid() == 0 else None


def _private_directory() -> Path:
    directory = Path(tempfile.mkdtemp(prefix="inspircd-"))
    account = _run_as()
    if account is not None:
        os.chown(directory, account.pw_uid, account.pw_gid)
    return directory


def _write(path: Path, text: str) -> None:
    path.write_text(text)
    account = _run_as()
    if account is not None:
        os.chown(path, account.pw_uid, account.pw_gid)


def _popen(argv: list[str], log_path: Path, cwd: Path) -> subprocess.Popen:
    account = _run_as()
    extra: dict = {}
    if account is not None:
        extra = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    with log_path.open("ab") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=cwd, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, **extra)


def _wait_for_port(server: IrcServerWithServices, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise IrcdError(f"inspircd exited:\n{server.logs()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise IrcdError(f"inspircd did not listen on {port}:\n{server.logs()}")


def _wait_for_services(server: IrcServerWithServices, timeout: float = 15.0) -> None:
    """Until Atheme has linked and burst: its end-of-burst shows in InspIRCd's log, then
    NickServ answers a WHOIS."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.services is not None
        if server.services.poll() is not None:
            raise IrcdError(f"atheme-services exited:\n{server.logs()}")
        if _nickserv_online(server):
            return
        time.sleep(0.2)
    raise IrcdError(f"atheme-services did not link to inspircd:\n{server.logs()}")


def _nickserv_online(server: IrcServerWithServices) -> bool:
    """Whether NickServ answers a WHOIS, asked by a short-lived client once registered."""
    address = ("127.0.0.1", server.port)
    with contextlib.suppress(OSError), socket.create_connection(address, timeout=2) as sock:
        sock.settimeout(2)
        sock.sendall(b"NICK probe\r\nUSER probe 0 * :probe\r\n")
        data = b""
        asked = False
        while chunk := sock.recv(4096):
            data += chunk
            if not asked and b" 001 probe " in data:
                sock.sendall(b"WHOIS NickServ\r\nQUIT\r\n")
                asked = True
        return b" 311 probe NickServ " in data
    return False


def start_inspircd(directory: Path, name: str = "irc.localhost", port: int | None = None, *,
                   services: bool = True, certificate: Path | None = None,
                   key: Path | None = None, sasl: bool = True) -> IrcServerWithServices:
    """Start InspIRCd on 127.0.0.1 (``port``, else a free one) and, with ``services``,
    Atheme linked to it; returns once clients can connect and NickServ is online.

    Given a server ``certificate`` and ``key`` (PEM), it also listens with TLS on a free
    ``tls_port`` (ssl_gnutls), asks clients for a certificate and passes its SHA-256
    fingerprint to services (sslinfo), for CertFP and SASL EXTERNAL (Atheme's
    nickserv/cert and saslserv/external). With ``sasl=False`` the server offers no SASL
    (NickServ only), as older networks do."""
    binary = shutil.which("inspircd") or "/usr/sbin/inspircd"
    if not Path(binary).exists():
        raise IrcdError("inspircd is not installed (Debian package inspircd; ./dev installs it)")
    atheme = shutil.which("atheme-services") or "/usr/bin/atheme-services"
    if services and not Path(atheme).exists():
        raise IrcdError("atheme-services is not installed "
                        "(Debian package atheme-services; ./dev installs it)")
    if (certificate is None) != (key is None):
        raise IrcdError("TLS needs both a certificate and a key")
    directory.mkdir(parents=True, exist_ok=True)
    fresh = iter([p for p in free_ports(4) if p != port])
    port = port or next(fresh)
    link_port = next(fresh)
    tls_port = next(fresh) if certificate is not None else None
    private = _private_directory()
    services_name = "services.localhost"
    link_password = os.urandom(12).hex()
    values = {"name": name, "port": port, "directory": private, "services_name": services_name,
              "link_port": link_port, "link_password": link_password}
    modules = "\n".join(f'<module name="{module}">' for module in MODULES if sasl or module != "sasl")
    tls = ""
    if certificate is not None and key is not None:
        _write(private / "tls-cert.pem", certificate.read_text())
        (private / "tls-key.pem").touch(mode=0o600)
        _write(private / "tls-key.pem", key.read_text())
        tls = TLS_CONFIG.format(directory=private, tls_port=tls_port)
    text = INSPIRCD_CONFIG.format(
        **values, modules=modules, tls=tls,
        server_bind=f'<bind address="127.0.0.1" port="{link_port}" type="servers">' if services else "",
        services=_services_link(values, sasl) if services else "")
    _write(private / "inspircd.conf", text)
    log_path = private / "inspircd.log"
    _write(log_path, "")
    stdout_path = private / "inspircd.out"
    _write(stdout_path, "")
    process = _popen([binary, "--nofork", "--config", str(private / "inspircd.conf")], stdout_path, private)
    server = IrcServerWithServices(name=name, host="127.0.0.1", port=port, log_path=log_path,
                                   process=process, directory=directory, private=private,
                                   services_name=services_name, tls_port=tls_port)
    try:
        _wait_for_port(server, port)
        if tls_port is not None:
            _wait_for_port(server, tls_port)
        if services:
            _write(private / "atheme.conf", ATHEME_CONFIG.format(**values))
            services_log = private / "atheme.log"
            _write(services_log, "")
            _write(private / "atheme.out", "")
            (private / "data").mkdir()
            account = _run_as()
            if account is not None:
                os.chown(private / "data", account.pw_uid, account.pw_gid)
            argv = [atheme, "-n", "-c", str(private / "atheme.conf"), "-l", str(services_log),
                    "-p", str(private / "atheme.pid"), "-D", str(private / "data")]
            services_process = _popen(argv, private / "atheme.out", private)
            server = IrcServerWithServices(**{**server.__dict__, "services": services_process,
                                              "services_log_path": services_log})
            _wait_for_services(server)
    except BaseException:
        stop_inspircd(server)
        raise
    return server


def _stop(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def stop_inspircd(server: IrcServerWithServices) -> None:
    """Stop Atheme, then InspIRCd (by PID); keep their logs in ``server.directory``."""
    _stop(server.services)
    _stop(server.process)
    for path in sorted(server.private.glob("*.log")) + sorted(server.private.glob("*.out")):
        with contextlib.suppress(OSError):
            shutil.copyfile(path, server.directory / path.name)
    shutil.rmtree(server.private, ignore_errors=True)
