"""Bytes and budgets: decoding IRC lines, cutting XMPP bodies into IRC-sized lines.

RFC 1459 §2.3 and RFC 2812 §2.3: a message is at most 512 bytes *including*
the CRLF, and NUL, CR and LF may not appear in it; the charset is not
specified. Modern practice (https://modern.ircdocs.horse/#character-encodings)
is UTF-8, with legacy channels still sending ISO-8859-1 or CP1252, so we read
UTF-8 first and fall back to a charset the caller picks per network or room.
IRCv3 message tags do not count against the 512 bytes (message-tags, "Size
limit"), so nothing here counts them.

The 512-byte limit applies to the line *as relayed by the server* to the other
clients, which is longer than the line we send: the server prepends
``:nick!user@host ``. :func:`relay_overhead` computes that fixed cost,
reserving the longest user and host the server may show (Biboumi reserves the
same: a 10-character user and a 63-character host), so that nobody sees the
end of a message cut off.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "MAX_LINE_BYTES",
    "decode_line",
    "encode_and_split",
    "relay_overhead",
    "split_body",
]

#: RFC 1459 §2.3: messages "SHALL NOT exceed 512 characters in length, counting all
#: characters including the trailing CR-LF".
MAX_LINE_BYTES = 512
# USERLEN on most servers (RFC 2812 implies 9 plus a '~' ident marker) and the
# DNS host-name label limit of 63 used by ircu-derived servers for HOSTLEN.
DEFAULT_USERLEN = 10
DEFAULT_HOSTLEN = 63
# The longest UTF-8 encoding of one code point: a budget below this could not
# always make progress.
_MAX_CHAR_BYTES = 4

_LINE_BREAK_RE = re.compile("\r\n|\r|\n")


def decode_line(raw: bytes, fallback: str = "latin-1") -> str:
    """Decode one line: UTF-8, else ``fallback``, else UTF-8 with U+FFFD. Never raises.

    The whole line is decoded one way, rather than byte runs each their own way,
    because multi-byte fallbacks (Shift-JIS, GB18030) cannot be decoded piecemeal.
    An unknown or non-text ``fallback`` (a typo in the room settings) falls
    through to the last resort instead of breaking the connection.
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode(fallback)
    # The contract is "never raises": codecs raise LookupError, UnicodeError and,
    # for odd ones, other errors; whatever the charset does, we fall through.
    except Exception:
        return raw.decode("utf-8", errors="replace")


def relay_overhead(
    command: str,
    target: str,
    nick: str,
    *,
    userlen: int = DEFAULT_USERLEN,
    hostlen: int = DEFAULT_HOSTLEN,
) -> int:
    """Bytes of ``:nick!user@host COMMAND target :`` plus CRLF, as the server relays our line.

    Pass it to :func:`encode_and_split` as ``prefix_bytes_len``. ``userlen`` and
    ``hostlen`` are the worst case the server may show for us (use USERLEN and
    HOSTLEN from ISUPPORT when advertised).
    """
    source = 1 + _utf8_len(nick) + 1 + userlen + 1 + hostlen + 1  # ":" nick "!" user "@" host " "
    return source + _utf8_len(command) + 1 + _utf8_len(target) + 2 + 2  # " " target " :" text CRLF


def encode_and_split(prefix_bytes_len: int, text: str, limit: int = MAX_LINE_BYTES) -> list[str]:
    """Cut ``text`` into chunks whose UTF-8 encoding fits ``limit - prefix_bytes_len`` bytes.

    ``prefix_bytes_len`` is everything on the relayed line but the text: see
    :func:`relay_overhead`. Chunks end at the last space that fits (the space
    is dropped, as a line break would be); a word longer than a whole chunk is
    cut at a character boundary, moved back before combining marks and joiners
    so that an accent or emoji sequence is not split from its base when that
    can be avoided. No chunk is empty. ``""`` gives ``[]``.

    :raises ValueError: if ``text`` holds CR, LF or NUL (split it with
        :func:`split_body` first: those characters would end the IRC line and
        start a new command), or if the budget is under 4 bytes.
    """
    if "\r" in text or "\n" in text or "\x00" in text:
        raise ValueError("CR, LF or NUL in IRC text: split the body first")
    budget = limit - prefix_bytes_len
    if budget < _MAX_CHAR_BYTES:
        raise ValueError(f"no room for text on an IRC line ({budget} bytes)")
    chunks: list[str] = []
    rest = text
    while rest:
        if _utf8_len(rest) <= budget:
            chunks.append(rest)
            break
        cut = _fit(rest, budget)
        space = rest.rfind(" ", 0, cut + 1)
        if space > 0:
            chunks.append(rest[:space])
            rest = rest[space + 1 :]
        else:
            cut = _avoid_splitting_cluster(rest, cut)
            chunks.append(rest[:cut])
            rest = rest[cut:]
    return chunks


def split_body(body: str) -> list[str]:
    """Split an XMPP body into IRC lines: on CRLF, CR or LF; NUL removed; empty lines dropped.

    Every line break a server could see is a split point here, so a body like
    ``"hello\\rJOIN #x"`` gives two PRIVMSG texts, never a raw JOIN. Other
    Unicode line separators (U+2028, NEL) are no line end to IRC servers and
    stay in the text.
    """
    if "\r" not in body and "\n" not in body and "\x00" not in body:
        return [body] if body else []  # one line, as typed most of the time
    lines = (line.replace("\x00", "") for line in _LINE_BREAK_RE.split(body))
    return [line for line in lines if line]


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def _fit(text: str, budget: int) -> int:
    """The largest number of leading characters of ``text`` whose UTF-8 fits ``budget``."""
    used = 0
    for index, char in enumerate(text):
        used += _utf8_len(char)
        if used > budget:
            return index
    return len(text)


def _avoid_splitting_cluster(text: str, cut: int) -> int:
    # Back up while the next chunk would start with a combining mark, a zero-width
    # joiner or a variation selector; keep the cut if that would empty the chunk.
    index = cut
    while index > 1 and _joined(text, index):
        index -= 1
    return cut if _joined(text, index) else index


def _joined(text: str, index: int) -> bool:
    """Whether a cut before ``text[index]`` would split a character from what it joins."""
    return _continues_cluster(text[index]) or text[index - 1] == "\u200d"


def _continues_cluster(char: str) -> bool:
    return (
        unicodedata.combining(char) != 0
        or char in "\u200d\u200c"
        or "\ufe00" <= char <= "\ufe0f"
        or "\U000e0100" <= char <= "\U000e01ef"
        or unicodedata.category(char) == "Mn"
    )
