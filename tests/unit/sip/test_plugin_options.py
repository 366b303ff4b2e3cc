"""SIP plugin options, registration values and addressing (plugins/sip/plugin.py, addressing.py)."""

from __future__ import annotations

import pytest

from gateway.plugin import PluginContext
from gateway.xep.escaping import escape_localpart, unescape_localpart
from plugins.sip.addressing import normalize
from plugins.sip.plugin import SipPlugin
from tests.unit.sip.fakes import SipTestReactor
from tests.unit.sip.plugin_harness import Events

BASE = {"listen_host": "127.0.0.1"}


def plugin(**options: object) -> SipPlugin:
    return SipPlugin(PluginContext(gateway_jid="sip.gw", options={**BASE, **options}, events=Events(),
                                   clock=SipTestReactor()))


@pytest.mark.parametrize(("options", "key"), [
    ({"udp_port": 70000}, "udp_port"),
    ({"tcp_port": "5060"}, "tcp_port"),
    ({"expires": 0}, "expires"),
    ({"receipts": "yes"}, "receipts"),
    ({"proxy": "http://example.com"}, "proxy"),
    ({"ca_file": "/nonexistent/ca.pem"}, "ca_file"),
    ({"listen_host": "0.0.0.0"}, "contact_host"),
    ({"offline": 480}, "offline"),
    ({"keepalive": -1}, "keepalive"),
    ({"offline_messages": "yes"}, "offline_messages"),
    ({"offline_messages": 1}, "offline_messages"),
    ({"contact_secret": "too short"}, "contact_secret"),
    ({"contact_secret": 1234567890123456789}, "contact_secret"),
    ({"contact_secret": "s" * 16, "contact_secret_env": "XGW_TEST_CONTACT_SECRET"}, "contact_secret"),
    ({"contact_secret_env": "XGW_TEST_NO_SUCH_VARIABLE"}, "contact_secret_env"),
])
def test_bad_options_name_their_key(options, key):
    """check-config builds the plugin: every mistake is a ValueError that starts with the key."""
    with pytest.raises(ValueError) as error:
        plugin(**options)
    assert str(error.value).startswith(f"{key}:")


def test_wildcard_listen_with_contact_host_is_fine():
    """Listening everywhere is fine once the advertised host is given; receipts follow their option."""
    assert plugin(listen_host="0.0.0.0", contact_host="gw.example.org").stack.contact_host == "gw.example.org"
    assert plugin().delivery_receipts is True and plugin(receipts=False).delivery_receipts is False


def test_offline_messages_keeps_sessions_only_when_set():
    """Default false: the core logs an offline user out (a MESSAGE then gets 480); true: the core's
    keeps_session_offline hook says yes for every user."""
    assert plugin().keeps_session_offline("alice@example.org") is False
    assert plugin(offline_messages=True).keeps_session_offline("alice@example.org") is True


def test_account_values():
    """The auth username defaults to the AOR's user part; the gateway proxy is the default."""
    sip = plugin(proxy="sip:proxy.example.org:5070")
    account = sip.account({"username": "sip:alice@example.org", "password": "pw"})
    assert (account.auth_username, str(account.proxy), account.transport) == \
        ("alice", "sip:proxy.example.org:5070", None)
    account = sip.account({"username": "alice@example.org", "auth_username": "a1", "password": "pw",
                           "proxy": "127.0.0.1:5080;transport=tcp", "transport": "tcp"})
    assert (account.auth_username, str(account.proxy), account.transport) == \
        ("a1", "sip:127.0.0.1:5080;transport=tcp", "tcp")
    assert sip.legacy_id_for({"username": "sips:Alice@Example.ORG"}) == "Alice@example.org"
    for bad in ({"username": "alice"}, {"username": "alice@example.org", "transport": "sctp"},
                {"username": "alice@example.org", "proxy": "tel:+1"}):
        with pytest.raises(ValueError):
            sip.account(bad)


def test_tokens_are_stable_and_distinct():
    """The Contact token of a user is the same for the life of the plugin and differs between
    users; with a configured secret it also survives restarts (the same binding is replaced)."""
    sip = plugin()
    assert sip.token_for("a@example.org") == sip.token_for("a@example.org")
    assert sip.token_for("a@example.org") != sip.token_for("b@example.org")
    secret = "s" * 16
    assert plugin(contact_secret=secret).token_for("a@example.org") == \
        plugin(contact_secret=secret).token_for("a@example.org")


@pytest.mark.parametrize(("given", "address"), [
    ("sip:alice@example.com", "alice@example.com"),
    ("sips:alice@Example.COM;transport=tcp", "alice@example.com"),
    ("alice@example.com", "alice@example.com"),
    ("alice%example.com", "alice@example.com"),
    ("sip:j%C3%BCrgen@example.com", "jürgen@example.com"),
    ("tel:+1-555-1234", "+15551234"),
    ("bob", "bob"),
])
def test_addresses_normalize(given, address):
    """sip:, sips:, tel:, user@domain and the % form all name the same contact."""
    assert normalize(given) == address


@pytest.mark.parametrize("bad", ["", "sip:example.com", "@example.com", "a b@example.com", "alice@bad host"])
def test_bad_addresses(bad):
    """No user part, a space, a bad host: not an address (the user gets item-not-found)."""
    with pytest.raises(ValueError):
        normalize(bad)


def test_address_to_jid_localpart_and_back():
    """XEP-0106: alice@example.com is alice\\40example.com; unescaping gives the address back."""
    sip = plugin()
    localpart = escape_localpart(sip.legacy_to_localpart("sip:alice@example.com"))
    assert localpart == "alice\\40example.com"
    assert sip.localpart_to_legacy(unescape_localpart(localpart)) == "alice@example.com"
    assert sip.localpart_to_legacy("alice%example.com") == "alice@example.com"


def test_contact_tokens_are_keyed_and_stable_only_with_a_configured_secret(monkeypatch):
    """Issue 6 review: a token anyone could compute (sha256 of public JIDs) lets anyone forge
    MESSAGEs to a user. The token is an HMAC: without a secret its key is random per process (two
    plugins differ), with ``contact_secret`` / ``contact_secret_env`` it is stable across restarts."""
    import hashlib

    user = "alice@example.org"
    unkeyed = hashlib.sha256(f"sip.gw\0{user}".encode()).hexdigest()
    first, second = plugin().token_for(user), plugin().token_for(user)
    assert first != second and unkeyed[:24] not in first and unkeyed[:24] not in second
    assert first.startswith("gw-") and len(first) == 3 + 32
    secret = "a long enough secret"
    stable = plugin(contact_secret=secret).token_for(user)
    assert stable == plugin(contact_secret=secret).token_for(user)
    assert stable != plugin(contact_secret=secret + "!").token_for(user)
    assert stable != plugin(contact_secret=secret).token_for("bob@example.org")
    monkeypatch.setenv("XGW_TEST_CONTACT_SECRET", secret)
    assert plugin(contact_secret_env="XGW_TEST_CONTACT_SECRET").token_for(user) == stable
