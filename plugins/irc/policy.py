"""Which IRC networks a gateway may reach (issue 4 item 5; DESIGN.md §6 "Access").

The gateway must never be an open proxy into the admin's network: private,
loopback, link-local and other special addresses are refused unless the admin
allows them, and the check runs on the *resolved* address, which is then the one
connected to (no second lookup a DNS rebinding could change).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass


class NetworkRefused(Exception):
    """The admin's policy forbids this network; the message says why."""


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    allowed: frozenset[str] = frozenset()
    """Network names allowed; empty allows any network not denied."""
    denied: frozenset[str] = frozenset()
    allow_private: bool = False

    @classmethod
    def build(cls, allowed: Iterable[str], denied: Iterable[str], allow_private: bool) -> NetworkPolicy:
        return cls(frozenset(n.lower() for n in allowed), frozenset(n.lower() for n in denied), allow_private)

    def check_name(self, network: str) -> None:
        network = network.lower()
        if network in self.denied or any(network.endswith("." + d) for d in self.denied):
            raise NetworkRefused(f"the gateway does not connect to {network}")
        if self.allowed and network not in self.allowed:
            raise NetworkRefused(f"the gateway only connects to: {', '.join(sorted(self.allowed))}")

    def check_address(self, network: str, address: str) -> None:
        ip = ipaddress.ip_address(address)
        if self.allow_private:
            return
        if not ip.is_global or ip.is_multicast:
            raise NetworkRefused(f"{network} resolves to a non-public address ({ip}), which is not allowed")
