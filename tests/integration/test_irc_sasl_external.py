"""SASL EXTERNAL with a client certificate (CertFP), against InspIRCd 3 and Atheme (issue 4 item 2).

This module's own InspIRCd also listens with TLS (ssl_gnutls, a server certificate from a
throwaway CA for ``irc.localhost``), asks clients for a certificate and hands its SHA-256
fingerprint to Atheme (sslinfo). A raw client on the plain port registers a NickServ
account and adds the fingerprint of the user's client certificate (``CERT ADD``); the XMPP
user registers with the gateway with only a nickname and that certificate, and joins over
TLS: SaslServ logs the connection in by certificate, and WHOIS shows the account (330).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from slixmpp import ClientXMPP
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET

from tests.fixtures.gateway import running_gateway
from tests.fixtures.ircd import (
    IrcdError,
    IrcServerWithServices,
    TestCertificates,
    raw_irc_client,
    start_inspircd,
    stop_inspircd,
)
from tests.fixtures.steps import NS_REGISTER
from tests.fixtures.xmpp_client import as_deferred, connected_client
from tests.integration.test_irc_rooms import GW, NETWORK, joined, unique

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tls_inspircd(tmp_path_factory: pytest.TempPathFactory,
                 certificates: TestCertificates) -> Iterator[IrcServerWithServices]:
    try:
        server = start_inspircd(tmp_path_factory.mktemp("inspircd-tls"), certificate=certificates.certificate,
                                key=certificates.key)
    except IrcdError as exc:
        pytest.fail(str(exc))
    assert server.tls_port is not None
    try:
        yield server
    finally:
        stop_inspircd(server)


def client_certificate(name: str) -> tuple[str, str]:
    """A self-signed client certificate and its key as one PEM, and its CertFP: the SHA-256
    of the DER certificate in lowercase hex (InspIRCd's ``hash="sha256"``, as Atheme stores it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (x509.CertificateBuilder()
                   .subject_name(subject).issuer_name(subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(hours=1))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .sign(key, hashes.SHA256()))
    pem = (certificate.public_bytes(serialization.Encoding.PEM)
           + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())).decode()
    return pem, certificate.fingerprint(hashes.SHA256()).hex()


def tls_options(server: IrcServerWithServices, ca_file: str) -> dict:
    network = {"host": "irc.localhost", "address": "127.0.0.1", "port": server.tls_port, "tls": True,
               "ca_file": ca_file}
    return {"networks": {NETWORK: network}, "allow_private": True, "throttle_burst": 100,
            "throttle_rate": 0.01}


async def register(client: ClientXMPP, values: dict[str, str]):
    """XEP-0077 registration with the IRC plugin (legacy elements)."""
    iq = client.make_iq_set(ito=GW)
    query = ET.Element(f"{{{NS_REGISTER}}}query")
    for name, value in values.items():
        ET.SubElement(query, f"{{{NS_REGISTER}}}{name}").text = value
    iq.append(query)
    return await iq.send(timeout=10)


async def nickserv_certfp_account(server: IrcServerWithServices, account: str, fingerprint: str) -> None:
    """Register ``account`` with NickServ from a raw client, and add ``fingerprint`` to it."""
    async with raw_irc_client(server, account) as owner:
        owner.send(f"PRIVMSG NickServ :REGISTER {'Sesame-' + unique('pw')} {account}@example.com")
        await owner.read_until(lambda line: "NickServ" in line and "is now registered" in line)
        owner.send(f"PRIVMSG NickServ :CERT ADD {fingerprint}")
        added = await owner.read_until(lambda line: "NickServ" in line and fingerprint in line)
        assert "added" in added.lower(), added


@pytest_twisted.ensureDeferred
async def test_sasl_external_with_client_certificate(prosody, tls_inspircd, certificates, tmp_path):
    """A malformed PEM is refused at registration; with the right certificate the user joins
    over TLS logged in by SASL EXTERNAL, and WHOIS shows the account (330)."""
    account = unique("cert")
    pem, fingerprint = client_certificate(account)
    channel = unique("#external")

    async def scenario() -> None:
        await nickserv_certfp_account(tls_inspircd, account, fingerprint)
        options = tls_options(tls_inspircd, str(certificates.ca))
        async with running_gateway(prosody, GW, tmp_path, plugin="irc", options=options) as service:
            async with raw_irc_client(tls_inspircd, unique("bob")) as bob:
                jid, password = prosody.new_user("ircexternal")
                async with connected_client(prosody, jid, password, send_presence=True) as client:
                    nick = unique("alice")
                    key_block = pem[pem.index("-----BEGIN PRIVATE KEY-----"):]
                    with pytest.raises(IqError) as refused:
                        await register(client, {"username": nick, "client_certificate": key_block})
                    error = refused.value.iq["error"]
                    assert error["condition"] == "not-acceptable"
                    assert "client certificate" in error["text"]
                    assert "PRIVATE KEY" not in error["text"]

                    result = await register(client, {"username": nick, "client_certificate": pem})
                    assert result["type"] == "result"
                    async with joined(prosody, client, channel, nick):
                        connection = service.sessions.users[jid].session.connections[NETWORK]
                        assert connection.registration.sasl_result == "success"
                        assert connection.registration.account == account
                        seen = len(bob.lines)
                        bob.send(f"WHOIS {nick}")
                        await bob.read_until(lambda line: f" 318 {bob.nick} {nick} " in line)
                        whois = bob.lines[seen:]
                        assert any(f" 330 {bob.nick} {nick} {account} " in line for line in whois), whois
                        # sslinfo (276): the gateway's connection is the TLS one, with this certificate.
                        assert any(f" 276 {bob.nick} {nick} " in line and fingerprint in line
                                   for line in whois), whois

    await as_deferred(scenario())
