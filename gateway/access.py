"""Who may use a gateway: the ``allowed_users`` patterns of its configuration.

A pattern is a domain (``example.org``: every user of that domain), ``*@example.org``
(the same, spelled out) or a bare JID (``alice@example.org``). No pattern allows everyone.
"""

from __future__ import annotations

from collections.abc import Iterable


class UserPolicy:
    def __init__(self, patterns: Iterable[str]) -> None:
        self.domains: frozenset[str] = frozenset()
        self.users: frozenset[str] = frozenset()
        domains, users = set(), set()
        for pattern in patterns:
            pattern = pattern.lower()
            if pattern.startswith("*@"):
                domains.add(pattern[2:])
            elif "@" in pattern:
                users.add(pattern)
            else:
                domains.add(pattern)
        self.domains, self.users = frozenset(domains), frozenset(users)
        self.open = not domains and not users

    def allows(self, bare_jid: str) -> bool:
        if self.open:
            return True
        bare_jid = bare_jid.lower()
        return bare_jid in self.users or bare_jid.partition("@")[2] in self.domains
