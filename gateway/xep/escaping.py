"""XEP-0106: JID Escaping.

Twisted has no escaping, so this module maps legacy names (IRC nicks and
channels, SIP addresses) to JID localparts and back. Per XEP-0106 §4.2, a
backslash is escaped only where it would start one of the escape sequences,
so ``a\\b`` stays ``a\\b`` while ``a\\40b`` becomes ``a\\5c40b``.
"""

from __future__ import annotations

import re

NS_JID_ESCAPING = r"jid\20escaping"

_ESCAPES = {
    " ": r"\20", '"': r"\22", "&": r"\26", "'": r"\27", "/": r"\2f",
    ":": r"\3a", "<": r"\3c", ">": r"\3e", "@": r"\40",
}
_SEQUENCE = re.compile(r"\\(20|22|26|27|2f|3a|3c|3e|40|5c)")
# Any character that escaping might change; most nicks have none (every occupant of a big
# channel goes through here when the user joins it).
_SPECIAL = re.compile(r'[ "&\'/:<>@\\]')


def escape_localpart(text: str) -> str:
    """Escape ``text`` into a JID localpart (XEP-0106 §4.2).

    Raise :class:`ValueError` for an empty text or one that starts or ends with
    a space, which XEP-0106 §4.2 rule 3 forbids.
    """
    if not text:
        raise ValueError("an empty name has no localpart")
    if text[0] == " " or text[-1] == " ":
        raise ValueError("a localpart must not start or end with a space (XEP-0106 §4.2)")
    if _SPECIAL.search(text) is None:
        return text
    out = []
    for index, char in enumerate(text):
        if char == "\\" and _SEQUENCE.match(text, index):
            out.append(r"\5c")
        else:
            out.append(_ESCAPES.get(char, char))
    return "".join(out)


def unescape_localpart(localpart: str) -> str:
    """Undo :func:`escape_localpart` (XEP-0106 §4.3); other backslashes stay as they are."""
    return _SEQUENCE.sub(lambda match: chr(int(match.group(1), 16)), localpart)
