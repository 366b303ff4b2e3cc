"""Network policy: never an open proxy into the admin's network (issue 4 item 5)."""

from __future__ import annotations

import pytest

from plugins.irc.policy import NetworkPolicy, NetworkRefused


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "192.168.0.5", "172.16.0.1", "::1",
                                     "fe80::1", "169.254.1.1", "100.64.0.1", "0.0.0.0", "224.0.0.1"])
def test_private_and_special_addresses_are_refused_by_default(address):
    """Loopback, private, link-local, shared, unspecified and multicast addresses are refused."""
    with pytest.raises(NetworkRefused):
        NetworkPolicy.build((), (), allow_private=False).check_address("irc.example.net", address)


def test_public_addresses_pass_and_private_ones_when_allowed():
    """A public address passes; allow_private lets the admin reach a local ircd."""
    NetworkPolicy.build((), (), allow_private=False).check_address("irc.example.net", "8.8.8.8")
    NetworkPolicy.build((), (), allow_private=True).check_address("local", "127.0.0.1")


def test_allow_and_deny_lists():
    """Denied names (and their subdomains) are refused; a non-empty allow list is exclusive."""
    policy = NetworkPolicy.build((), ["evil.example"], allow_private=False)
    for name in ("evil.example", "irc.evil.example"):
        with pytest.raises(NetworkRefused):
            policy.check_name(name)
    policy.check_name("irc.libera.chat")
    only = NetworkPolicy.build(["irc.libera.chat"], (), allow_private=False)
    only.check_name("IRC.Libera.Chat")
    with pytest.raises(NetworkRefused):
        only.check_name("irc.oftc.net")
