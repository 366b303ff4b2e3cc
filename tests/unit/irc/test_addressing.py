"""Biboumi-compatible IRC addressing (reference/biboumi.md §1.1, §1.4)."""

from __future__ import annotations

import pytest

from plugins.irc.addressing import Addressing, IrcAddress


@pytest.mark.parametrize(("address", "parsed"), [
    ("#chan%irc.example.net", IrcAddress("irc.example.net", "#chan")),
    ("nick%irc.example.net", IrcAddress("irc.example.net", "nick")),
    ("irc.example.net", IrcAddress("irc.example.net", "")),
    ("#a%b%irc.example.net", None),  # "%" in a channel name cannot be addressed (Biboumi §1.2)
])
def test_parse_multi_network(address, parsed):
    """The localpart splits at the first %: name, then network; no % is the network; None: refused."""
    if parsed is None:
        with pytest.raises(ValueError):
            Addressing().parse(address)
        return
    assert Addressing().parse(address) == parsed


def test_fixed_network_mode():
    """In fixed mode the whole localpart is the IRC name, % included."""
    addressing = Addressing("irc.example.net")
    assert addressing.parse("#a%b") == IrcAddress("irc.example.net", "#a%b")
    assert addressing.format("irc.example.net", "#chan") == "#chan"


@pytest.mark.parametrize("bad", ["", "%irc.example.net", "#chan%", "#chan%bad host"])
def test_bad_addresses(bad):
    """Addresses without a usable network are refused."""
    with pytest.raises(ValueError):
        Addressing().parse(bad)


def test_channel_detection_uses_chantypes():
    """A name is a channel when it starts with one of the network's CHANTYPES."""
    addressing = Addressing()
    assert addressing.is_channel("#chan%irc.example.net")
    assert addressing.is_channel("&local%irc.example.net")
    assert not addressing.is_channel("nick%irc.example.net")
    assert addressing.is_channel("!safe%irc.example.net", chantypes="#!")
    assert not addressing.is_channel("irc.example.net")
