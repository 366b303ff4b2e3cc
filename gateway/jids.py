"""JID parsing for hot paths: Twisted's :class:`~twisted.words.protocols.jabber.jid.JID`
behind a bounded LRU cache.

``JID()`` runs three stringprep profiles (~87 µs, reference/stack.md §1), and
Twisted's own ``internJID`` cache is an unbounded dict that attacker-chosen JIDs
could grow without limit. A bounded :func:`functools.lru_cache` costs ~0.1 µs a hit
and forgets the oldest entries. JIDs are immutable in practice, so sharing is safe.

A cache miss on an all-ASCII JID (every occupant JID ``nick%network@gateway`` the
gateway builds: the first join of a 1000-occupant channel misses 1000 times) takes
:func:`_ascii_parts` instead of stringprep: on ASCII the three profiles reduce to
lowercasing the localpart and domain and rejecting a few characters (RFC 3920
Appendix A/B, RFC 3491, the STD 3 host-name rule Twisted applies). Anything it is
not sure of (non-ASCII, a prohibited character, an empty label) goes to Twisted.
"""

from __future__ import annotations

import sys
from functools import lru_cache

from twisted.words.protocols.jabber.jid import JID, InvalidFormat

JID_CACHE_SIZE = 8192

# Nodeprep on ASCII (RFC 3920 Appendix A.5, RFC 3454 tables C.1.1 and C.2.1): space, the
# controls and DEL are prohibited, and so are these eight; B.2 maps A-Z to a-z; NFKC, the
# unassigned (A.1) and bidi checks change nothing on ASCII.
_NODE_OK = frozenset(chr(c) for c in range(0x21, 0x7F)) - frozenset("\"&'/:<>@")
# Nameprep plus Twisted's STD 3 rule: letters, digits and inner hyphens per dot-separated label.
_LABEL_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")
# Resourceprep on ASCII (Appendix B.5): only the controls and DEL (C.2.1) are prohibited.
_RESOURCE_OK = frozenset(chr(c) for c in range(0x20, 0x7F))


def _ascii_parts(text: str) -> tuple[str | None, str, str | None] | None:
    """What Twisted's ``jid.parse`` returns for an ASCII ``text``, or ``None`` to ask Twisted.

    Splits exactly as ``twisted.words.protocols.jabber.jid.parse`` does (first ``@``, first
    ``/``); ``None`` for anything outside the cases above, including what Twisted rejects.
    """
    if not text.isascii():
        return None
    user_sep = text.find("@")
    res_sep = text.find("/")
    user: str | None = None
    resource: str | None = None
    if user_sep != -1 and (res_sep == -1 or user_sep < res_sep):
        user = text[:user_sep] or None
        host = text[user_sep + 1:] if res_sep == -1 else text[user_sep + 1:res_sep]
    else:
        host = text if res_sep == -1 else text[:res_sep]
    if res_sep != -1:
        resource = text[res_sep + 1:] or None
    if user is not None:
        if not _NODE_OK.issuperset(user):
            return None
        lowered = user.lower()
        user = user if lowered == user else lowered  # one string per cached JID, not two
    labels = host.split(".")
    if len(labels) > 1 and not labels[-1]:
        labels.pop()  # one trailing dot is kept (Twisted's NamePrep.prepare)
    for label in labels:
        if not label or label[0] == "-" or label[-1] == "-" or not _LABEL_OK.issuperset(label):
            return None
    if resource is not None and not _RESOURCE_OK.issuperset(resource):
        return None
    # Interned: the cached JIDs share a few domains (the gateway's, the users' servers).
    return user, sys.intern(host.lower()), resource


def _from_parts(user: str | None, host: str, resource: str | None) -> JID:
    # JID.__init__ would prep the parts again; these are already what it would produce.
    jid = JID.__new__(JID)
    jid.user, jid.host, jid.resource = user, host, resource
    return jid


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
    parts = _ascii_parts(text)
    if parts is not None:
        parsed = _from_parts(*parts)
    else:
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
