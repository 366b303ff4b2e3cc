"""IRC addresses as JID localparts, the Biboumi way (DESIGN.md §4; reference/biboumi.md §1).

A legacy address here is exactly the unescaped JID localpart:

* ``#chan%irc.example.net``: a channel (its first character is a channel type
  of the network, ``#`` and ``&`` until ISUPPORT CHANTYPES says otherwise);
* ``nick%irc.example.net``: a user of that network;
* ``irc.example.net``: the network itself (server messages, raw commands).

The localpart is split at the *first* ``%``, as Biboumi does, so bookmarks carry
over. In fixed-network mode the network part is left out (``#chan``, ``nick``).
XEP-0106 escaping happens in the core; nodeprep lowercases, and IRC names are
compared with the network's CASEMAPPING anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

DEFAULT_CHANTYPES = "#&"
#: Addresses whose parse is remembered per Addressing: every line a user says parses its room.
PARSE_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class IrcAddress:
    network: str
    name: str
    """Channel or nick; empty for the network itself."""

    def is_network(self) -> bool:
        return not self.name


class Addressing:
    """Parses and formats addresses, for multi-network or fixed-network mode."""

    def __init__(self, fixed_network: str = "") -> None:
        self.fixed_network = fixed_network.lower()
        # A pure function of the address (IrcAddress is frozen): a bounded LRU per instance.
        # Refusals (ValueError) are not cached.
        self.parse = lru_cache(maxsize=PARSE_CACHE_SIZE)(self._parse)  # type: ignore[method-assign]

    def parse(self, address: str) -> IrcAddress:
        """Split an address; :class:`ValueError` for one that names no network."""
        return self._parse(address)

    def _parse(self, address: str) -> IrcAddress:
        if not address:
            raise ValueError("an empty IRC address")
        if self.fixed_network:
            return IrcAddress(network=self.fixed_network, name=address)
        name, percent, network = address.partition("%")
        if not percent:
            return IrcAddress(network=_check_network(address), name="")
        if not name:
            raise ValueError(f"{address!r} has no channel or nick before the %")
        return IrcAddress(network=_check_network(network), name=name)

    def format(self, network: str, name: str = "") -> str:
        if self.fixed_network:
            if not name:
                raise ValueError("in fixed-network mode the network has no address of its own")
            return name
        return f"{name}%{network}" if name else network

    def is_channel(self, address: str, chantypes: str = DEFAULT_CHANTYPES) -> bool:
        try:
            parsed = self.parse(address)
        except ValueError:
            return False
        return bool(parsed.name) and parsed.name[0] in chantypes


def _check_network(network: str) -> str:
    network = network.strip().lower()
    if not network or any(c in network for c in " /@%") or network.startswith(".") or ".." in network:
        raise ValueError(f"{network!r} is not an IRC server name")
    return network
