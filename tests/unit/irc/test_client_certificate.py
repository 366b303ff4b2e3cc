"""SASL EXTERNAL with a TLS client certificate (CertFP): loading the PEM, choosing the
mechanism, TLS only, and the registration form's check (issue 4 item 2)."""

from __future__ import annotations

import datetime
import warnings

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from twisted.internet import ssl
from twisted.internet.testing import MemoryReactorClock

from gateway.plugin import LegacyError, LoginFailed
from plugins.irc import connection as irc_connection
from plugins.irc.addressing import Addressing
from plugins.irc.cap import SaslExternal, SaslPlain
from plugins.irc.connection import (
    ConnectionSettings,
    Credentials,
    IrcConnection,
    NetworkSettings,
    load_client_certificate,
)
from plugins.irc.plugin import IrcPlugin


def certificate_pem(key=None) -> tuple[str, str, str]:
    """(certificate PEM, key PEM, certificate PEM of another key)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "me")])
    now = datetime.datetime.now(datetime.UTC)

    def build(public_key, signer) -> str:
        certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(public_key)
                       .serial_number(x509.random_serial_number())
                       .not_valid_before(now - datetime.timedelta(hours=1))
                       .not_valid_after(now + datetime.timedelta(days=1))
                       .sign(signer, hashes.SHA256()))
        return certificate.public_bytes(serialization.Encoding.PEM).decode()

    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return build(key.public_key(), key), key_pem, build(other.public_key(), other)


def test_load_client_certificate_either_order_and_indented() -> None:
    cert, key, _ = certificate_pem()
    for pem in (cert + key, key + cert, "\n".join("  " + line for line in (cert + key).splitlines())):
        certificate, private_key = load_client_certificate(pem)
        assert certificate.public_bytes(serialization.Encoding.PEM).decode() == cert
        assert isinstance(private_key, ec.EllipticCurvePrivateKey)
    rsa_cert, rsa_key, _ = certificate_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    assert isinstance(load_client_certificate(rsa_cert + rsa_key)[1], rsa.RSAPrivateKey)


@pytest.mark.parametrize("case", ["key only", "certificate only", "garbage", "mismatch", "encrypted"])
def test_load_client_certificate_refuses_without_echoing_the_key(case: str) -> None:
    cert, key, other = certificate_pem()
    encrypted = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")).decode()
    pem = {"key only": key, "certificate only": cert, "garbage": "-----BEGIN CERTIFICATE-----\nxx\n" + key,
           "mismatch": other + key, "encrypted": cert + encrypted}[case]
    with pytest.raises(ValueError, match=r"^the client certificate") as refused:
        load_client_certificate(pem)
    body = key.splitlines()[1]
    assert body not in str(refused.value)
    assert refused.value.__cause__ is None  # the parser's message (which might quote it) is dropped


def test_credentials_repr_hides_secrets() -> None:
    cert, key, _ = certificate_pem()
    credentials = Credentials(account="me", password="hunter2", client_certificate=cert + key)
    assert "hunter2" not in repr(credentials)
    assert "PRIVATE" not in repr(credentials) and "CERTIFICATE" not in repr(credentials)


def make_connection(reactor: MemoryReactorClock, *, tls: bool, credentials: Credentials) -> IrcConnection:
    network = NetworkSettings(name="irc.example.net", host="irc.example.net", port=6697, tls=tls,
                              address="127.0.0.1")
    return IrcConnection(user="u@example.org", nick="alice", network=network, settings=ConnectionSettings(),
                         addressing=Addressing(""), emit=lambda event: None, clock=reactor,
                         on_closed=lambda: None, credentials=credentials)


@pytest.fixture
def tls_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """The keyword arguments of every optionsForClientTLS call (the real one still runs)."""
    calls: list[dict] = []

    def spy(hostname, **kwargs):
        calls.append(kwargs)
        return ssl.optionsForClientTLS(hostname, **kwargs)

    monkeypatch.setattr(irc_connection, "optionsForClientTLS", spy)
    return calls


def test_client_certificate_means_sasl_external_and_a_tls_client_certificate(tls_calls: list[dict]) -> None:
    cert, key, _ = certificate_pem()
    reactor = MemoryReactorClock()
    connection = make_connection(reactor, tls=True,
                                 credentials=Credentials(password="pw", client_certificate=cert + key))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no pyOpenSSL X509/PKey deprecation on the way
        connection.connect()
    assert connection.registration is not None
    assert connection.registration._sasl == SaslExternal()  # EXTERNAL preferred over PLAIN
    (call,) = tls_calls
    options = call["extraCertificateOptions"]
    assert isinstance(options["certificate"], x509.Certificate)
    assert isinstance(options["privateKey"], ec.EllipticCurvePrivateKey)
    assert options["certificate"].public_bytes(serialization.Encoding.PEM).decode() == cert
    assert len(reactor.tcpClients) == 1
    connection._close(None)


def test_password_only_means_sasl_plain_without_client_certificate(tls_calls: list[dict]) -> None:
    reactor = MemoryReactorClock()
    connection = make_connection(reactor, tls=True, credentials=Credentials(account="acct", password="pw"))
    connection.connect()
    assert connection.registration is not None
    assert connection.registration._sasl == SaslPlain(authcid="acct", password="pw")
    assert tls_calls[0]["extraCertificateOptions"] == {}
    connection._close(None)


def failure_of(connection: IrcConnection, reactor: MemoryReactorClock) -> LegacyError:
    errors: list[LegacyError] = []
    connection.connect()
    connection.ready().addErrback(lambda failure: errors.append(failure.value))
    reactor.advance(0)
    (error,) = errors
    assert isinstance(error, LegacyError)
    assert reactor.tcpClients == []  # nothing was sent anywhere
    return error


def test_client_certificate_needs_tls() -> None:
    cert, key, _ = certificate_pem()
    reactor = MemoryReactorClock()
    connection = make_connection(reactor, tls=False, credentials=Credentials(client_certificate=cert + key))
    error = failure_of(connection, reactor)
    assert error.condition == "not-acceptable"
    assert "TLS" in (error.text or "")
    assert connection.closed


def test_malformed_client_certificate_fails_the_join() -> None:
    _, key, _ = certificate_pem()
    reactor = MemoryReactorClock()
    connection = make_connection(reactor, tls=True, credentials=Credentials(client_certificate=key))
    error = failure_of(connection, reactor)
    assert error.condition == "not-acceptable"
    assert (error.text or "").startswith("the client certificate")
    assert key.splitlines()[1] not in (error.text or "")


def run(coroutine):
    """Run a coroutine that never waits (no event loop needed)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    raise AssertionError("the coroutine waited")


def test_registration_form_has_the_field_and_checks_it() -> None:
    field = next(f for f in IrcPlugin.registration_fields if f.var == "client_certificate")
    assert field.type == "text-multi" and field.secret
    plugin = IrcPlugin.__new__(IrcPlugin)  # check_credentials needs no configuration
    cert, key, _ = certificate_pem()
    run(plugin.check_credentials("u@example.org", {"username": "alice", "client_certificate": cert + key}))
    run(plugin.check_credentials("u@example.org", {"username": "alice"}))
    with pytest.raises(LoginFailed) as refused:
        run(plugin.check_credentials("u@example.org", {"username": "alice", "client_certificate": key}))
    assert refused.value.condition == "not-acceptable"
    assert key.splitlines()[1] not in (refused.value.text or "")
