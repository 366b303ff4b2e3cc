"""SIP over verified TLS (RFC 3261 §26.2, RFC 5922): the plugin's credential check against a
scripted TLS registrar on loopback, with a throwaway CA.

The Kamailio rig has no TLS (Debian's ``kamailio-tls-modules`` is not part of the test
machine), so the far end here is a small registrar on Twisted's TLS, which answers every
REGISTER with 200. What is under test is the gateway's side: the TLS handshake, the
certificate checked against the SIP domain (not the address connected to), and no
plain-text fallback when verification fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions

from gateway.plugin import LoginFailed, PluginContext
from plugins.sip.codec import NEED_DATA, SipRequest, StreamParser, make_response, serialize
from plugins.sip.plugin import SipPlugin
from tests.fixtures.ircd import make_test_certificates

pytestmark = pytest.mark.integration

DOMAIN = "sip.tls.test"


class ScriptedRegistrar(Protocol):
    """Answers every REGISTER with 200 (echoing its Contact) over the TLS stream."""

    def connectionMade(self) -> None:
        self.parser = StreamParser()
        self.factory.requests.append(self)

    def dataReceived(self, data: bytes) -> None:
        self.parser.receive_data(data)
        while (event := self.parser.next_event()) is not NEED_DATA:
            if isinstance(event, SipRequest):
                self.factory.seen.append(event)
                contact = [("Contact", event.headers.get("Contact"))] if event.headers.get("Contact") else []
                self.transport.write(serialize(make_response(event, 200, headers=contact)))


class Events:
    def emit(self, event: object) -> None:
        pass


def listen_tls(directory: Path):
    certificates = make_test_certificates(directory, host=DOMAIN)
    key = serialization.load_pem_private_key(certificates.key.read_bytes(), password=None)
    certificate = x509.load_pem_x509_certificate(certificates.certificate.read_bytes())
    factory = Factory.forProtocol(ScriptedRegistrar)
    factory.requests, factory.seen = [], []
    options = CertificateOptions(privateKey=key, certificate=certificate)
    port = reactor.listenSSL(0, factory, options, interface="127.0.0.1")
    return port, factory, certificates


def sip_plugin(ca_file: Path) -> SipPlugin:
    return SipPlugin(PluginContext(
        gateway_jid="sip.gw", events=Events(), clock=reactor,
        options={"listen_host": "127.0.0.1", "udp_port": 0, "tcp_port": 0, "ca_file": str(ca_file)}))


def values(port: int, name: str = DOMAIN) -> dict[str, str]:
    # maddr: connect to the loopback address, verify the certificate against the domain.
    return {"username": f"alice@{DOMAIN}", "password": "pw", "transport": "tls",
            "proxy": f"sip:{name}:{port};maddr=127.0.0.1"}


@pytest_twisted.ensureDeferred
async def test_registration_over_verified_tls(tmp_path):
    """The REGISTER and its expires=0 go over TLS to a server whose certificate names the domain."""
    port, factory, certificates = listen_tls(tmp_path)
    plugin = sip_plugin(certificates.ca)
    try:
        await plugin.check_credentials("alice@example.org", values(port.getHost().port))
        assert [r.method for r in factory.seen] == ["REGISTER", "REGISTER"]
        assert factory.seen[0].top_via.transport == "TLS"
        assert factory.seen[0].headers.get("Contact").startswith("<sips:chk-")
        assert factory.seen[1].headers.get("Expires") == "0"
        assert not plugin.stack.running
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_certificate_for_another_name_is_refused_without_fallback(tmp_path):
    """RFC 5922 §7.3: a certificate that does not match the expected name fails the connection;
    nothing is sent in plain text."""
    port, factory, certificates = listen_tls(tmp_path)
    plugin = sip_plugin(certificates.ca)
    try:
        with pytest.raises(LoginFailed) as refused:
            await plugin.check_credentials("alice@example.org", values(port.getHost().port, "other.test"))
        assert refused.value.condition == "remote-server-timeout"
        assert factory.seen == []
        assert not plugin.stack.running
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_untrusted_ca_is_refused(tmp_path):
    """A server certificate from a CA we do not trust fails the connection."""
    port, factory, _ = listen_tls(tmp_path / "server")
    other = make_test_certificates(tmp_path / "other", host=DOMAIN)
    plugin = sip_plugin(other.ca)
    try:
        with pytest.raises(LoginFailed):
            await plugin.check_credentials("alice@example.org", values(port.getHost().port))
        assert factory.seen == []
    finally:
        await port.stopListening()
