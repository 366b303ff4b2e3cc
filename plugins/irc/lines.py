"""IRC message lines: parse what the server sends, serialize what we send.

Grammar: RFC 1459 §2.3.1 and RFC 2812 §2.3.1, as clarified by the Modern IRC
Client Protocol "Messages" section (https://modern.ircdocs.horse/#messages),
with IRCv3 message tags (https://ircv3.net/specs/extensions/message-tags,
"Format" and "Escaping values")::

    message  ::= ['@' tags SPACE] [':' source SPACE] command params
    SPACE    ::= one or more U+0020 (tabs are not separators)
    params   ::= *( SPACE middle ) [ SPACE ':' trailing ]

Lines here are ``str`` without the CRLF: decoding and framing belong to
:mod:`plugins.irc.encoding` and :mod:`plugins.irc.protocol`.

Why not jaraco ``irc``'s helpers (checked on irc 20.5):

* ``irc.message.Arguments.from_group`` splits with ``str.split()``, i.e. on
  *Unicode* whitespace, so a middle parameter holding ``\\x1f`` (the underline
  code) or U+00A0 is cut in two;
* ``irc.message.Tag.parse`` keeps a lone trailing backslash, which the
  message-tags spec says to drop;
* ``irc.client.NickMask('nick@host').nick`` is ``'nick@host'`` and a server
  name comes back as a nick.

Each is a few lines to get right, so they are written here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["IrcMessage", "IrcParseError", "parse", "serialize", "split_source"]


class IrcParseError(ValueError):
    """A line that is not an IRC message. The line is skipped, the connection stays (STYLE.md G9)."""


# RFC 1459 §2.3.1: <command> ::= <letter> { <letter> } | <number> <number> <number>.
# Explicit ASCII classes: in Python, \d and str.isdigit() also accept other scripts' digits.
_COMMAND_RE = re.compile(r"[A-Za-z]+|[0-9]{3}")

# RFC 1459 §2.3.1: NUL, CR and LF can never be part of a message; a CR or LF is a
# line end to most servers, so letting one through is a command injection.
_FORBIDDEN_RE = re.compile("[\x00\r\n]")

# IRCv3 message-tags "Format": <key> ::= [ '+' ] [ <vendor> '/' ] <key_name>,
# <vendor> a host name, <key_name> letters, digits and hyphens.
_TAG_KEY_RE = re.compile(r"\+?(?:[A-Za-z0-9.\-]+/)?[A-Za-z0-9\-]+")

# IRCv3 message-tags "Escaping values".
_TAG_UNESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}
_TAG_ESCAPES = str.maketrans({";": "\\:", " ": "\\s", "\\": "\\\\"})


@dataclass(frozen=True, slots=True, kw_only=True)
class IrcMessage:
    """One IRC message, as received or as it will be sent.

    :ivar tags: IRCv3 tags, values unescaped; a tag without value maps to ``""``
        (message-tags: "missing value and empty value are equivalent").
    :ivar source: the prefix without its ``:``, or ``None``.
    :ivar command: upper-cased letters, or a three-digit numeric.
    :ivar params: middle parameters then the trailing one, without the ``:``.
    """

    command: str
    params: tuple[str, ...] = ()
    source: str | None = None
    # A dict is not hashable: leave it out of the hash, keep it in equality.
    tags: dict[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not _COMMAND_RE.fullmatch(self.command) or self.command != self.command.upper():
            raise ValueError(f"bad IRC command {self.command!r}")
        parts = [*self.params, self.source or ""]
        if any(_FORBIDDEN_RE.search(part) for part in parts):
            raise ValueError("CR, LF or NUL in an IRC message")

    @property
    def nick(self) -> str | None:
        """The nick of the source, or ``None`` for a server (or no source)."""
        if self.source is None:
            return None
        nick, user, host = split_source(self.source)
        # RFC 2812 §2.3.1: a nickname cannot contain '.', a server name without
        # '!' or '@' is how servers identify themselves.
        if user is None and host is None and "." in nick:
            return None
        return nick

    def to_line(self) -> str:
        """Serialize this message (see :func:`serialize`), without the CRLF."""
        return serialize(self.command, *self.params, tags=self.tags or None)


def split_source(source: str) -> tuple[str, str | None, str | None]:
    """Split ``nick[!user][@host]`` (RFC 2812 §2.3.1 ``prefix``) into its three parts.

    A server name comes back whole as the first part: callers that care use
    :attr:`IrcMessage.nick`, which tells the two apart.
    """
    nick_user, at, host = source.partition("@")
    nick, bang, user = nick_user.partition("!")
    return nick, (user if bang else None), (host if at else None)


def parse(line: str) -> IrcMessage:
    """Parse one line (without CRLF) into an :class:`IrcMessage`.

    Lenient where servers are known to be sloppy (runs of spaces between
    parameters, trailing spaces, a malformed tag is dropped rather than the
    message), strict where safety needs it (CR, LF, NUL, command syntax).

    :raises IrcParseError: on anything that is not an IRC message; never any other exception.
    """
    if "\r" in line or "\n" in line or "\x00" in line:  # cheaper than _FORBIDDEN_RE, per line
        raise IrcParseError("CR, LF or NUL inside a line")
    rest = line.lstrip(" ")
    tags: dict[str, str] = {}
    if rest.startswith("@"):
        raw_tags, sep, rest = rest[1:].partition(" ")
        if not sep:
            raise IrcParseError("tags without a command")
        tags = _parse_tags(raw_tags)
        rest = rest.lstrip(" ")
    source: str | None = None
    if rest.startswith(":"):
        source, sep, rest = rest[1:].partition(" ")
        if not source:
            raise IrcParseError("empty source")
        if not sep:
            raise IrcParseError("source without a command")
        rest = rest.lstrip(" ")
    command, _, rest = rest.partition(" ")
    if not _COMMAND_RE.fullmatch(command):
        raise IrcParseError(f"bad command {command[:20]!r}")
    params: list[str] = []
    while True:
        rest = rest.lstrip(" ")
        if not rest:
            break
        if rest.startswith(":"):
            params.append(rest[1:])
            break
        param, _, rest = rest.partition(" ")
        params.append(param)
    return _validated(command.upper(), tuple(params), source, tags)


def _validated(command: str, params: tuple[str, ...], source: str | None, tags: dict[str, str]) -> IrcMessage:
    """An IrcMessage from parts :func:`parse` has already checked (the whole line for CR, LF
    and NUL, the command's syntax), without ``__post_init__`` checking them again: one
    parse per received line, so this is on the hot path."""
    message = object.__new__(IrcMessage)
    _set(message, "command", command)
    _set(message, "params", params)
    _set(message, "source", source)
    _set(message, "tags", tags)
    return message


_set = object.__setattr__


def _parse_tags(raw: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in raw.split(";"):
        key, _, value = item.partition("=")
        # COMPAT: a malformed tag (empty key, stray characters) from a buggy server
        # costs us that tag, not the whole message.
        if not _TAG_KEY_RE.fullmatch(key):
            continue
        # message-tags: "If a tag key is repeated, only the final value should be
        # considered": plain dict assignment does that.
        tags[key] = _unescape_tag_value(value)
    return tags


def _unescape_tag_value(value: str) -> str:
    # Character at a time, so "\\\\n" is a backslash then 'n', not a newline.
    if "\\" not in value:
        return value
    out: list[str] = []
    chars = iter(value)
    for char in chars:
        if char != "\\":
            out.append(char)
            continue
        # message-tags: an unknown escape drops the backslash; a lone backslash at the
        # end "SHOULD" produce no output character (next() gives "" then).
        escaped = next(chars, "")
        out.append(_TAG_UNESCAPES.get(escaped, escaped))
    return "".join(out)


def serialize(command: str, *params: str, tags: Mapping[str, str] | None = None) -> str:
    """Build one line (without CRLF) for ``command`` and ``params``.

    The last parameter gets a ``:`` only when it needs one (empty, has a space,
    or starts with ``:``). Length is the caller's business: see
    :func:`plugins.irc.encoding.encode_and_split`.

    :raises ValueError: for a CR, LF or NUL anywhere (command, parameter, tag
        key or value); a space in, ``:`` at the start of, or emptiness of a
        non-final parameter; a bad command or tag key. Refusing is the point:
        a body such as ``"hi\\rJOIN #x"`` must never become two commands.
    """
    if not _COMMAND_RE.fullmatch(command):
        raise ValueError(f"bad IRC command {command!r}")
    parts: list[str] = []
    if tags:
        parts.append("@" + ";".join(_serialize_tag(key, value) for key, value in tags.items()))
    parts.append(command.upper())
    for index, param in enumerate(params):
        if "\r" in param or "\n" in param or "\x00" in param:  # cheaper than the regex, per line
            raise ValueError("CR, LF or NUL in an IRC parameter")
        final = index == len(params) - 1
        if final:
            needs_colon = not param or " " in param or param.startswith(":")
            parts.append(":" + param if needs_colon else param)
            continue
        # RFC 2812 §2.3.1 <middle>: nonempty, no SPACE, does not start with ':'.
        if not param:
            raise ValueError("empty non-final IRC parameter")
        if " " in param:
            raise ValueError(f"space in non-final IRC parameter {param!r}")
        if param.startswith(":"):
            raise ValueError(f"non-final IRC parameter starts with ':' {param!r}")
        parts.append(param)
    return " ".join(parts)


def _serialize_tag(key: str, value: str) -> str:
    if not _TAG_KEY_RE.fullmatch(key):
        raise ValueError(f"bad IRCv3 tag key {key!r}")
    # \r and \n have escapes in message-tags, but nothing we send needs them, and a
    # refusal everywhere is simpler to audit than "refused except in tag values".
    if _FORBIDDEN_RE.search(value):
        raise ValueError("CR, LF or NUL in an IRCv3 tag value")
    return f"{key}={value.translate(_TAG_ESCAPES)}" if value else key
