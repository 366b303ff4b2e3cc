"""JID parsing for hot paths: Twisted's :class:`~twisted.words.protocols.jabber.jid.JID`
behind a bounded LRU cache.

``JID()`` runs three stringprep profiles (~87 µs, reference/stack.md §1), and
Twisted's own ``internJID`` cache is an unbounded dict that attacker-chosen JIDs
could grow without limit. A bounded :func:`functools.lru_cache` costs ~0.1 µs a hit
and forgets the oldest entries. JIDs are immutable in practice, so sharing is safe.
"""

from __future__ import annotations

from functools import lru_cache

from twisted.words.protocols.jabber.jid import JID, InvalidFormat

JID_CACHE_SIZE = 8192


@lru_cache(maxsize=JID_CACHE_SIZE)
def parse_jid(text: str) -> JID:
    """Parse and normalise ``text``; raise :class:`InvalidFormat` for anything invalid.

    Also rejects what Twisted lets through or mishandles: the empty string (a
    ``RuntimeError`` inside Twisted), an empty localpart (``@x``), and parts over
    the 1023-byte limit of RFC 7622 §3.
    """
    if not text:
        raise InvalidFormat("empty JID")
    if text.startswith("@") or "@/" in text:
        raise InvalidFormat("empty localpart")
    try:
        parsed = JID(text)
    except RuntimeError as exc:  # Twisted raises this for some degenerate inputs
        raise InvalidFormat(str(exc)) from exc
    for part in (parsed.user, parsed.host, parsed.resource):
        if part is not None and len(part.encode("utf-8")) > 1023:
            raise InvalidFormat("JID part longer than 1023 bytes")
    return parsed


def bare(text: str) -> str:
    """The bare form (``user@host``) of a JID string."""
    return parse_jid(text).userhost()


__all__ = ["JID", "InvalidFormat", "bare", "parse_jid"]
