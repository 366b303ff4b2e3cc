"""Basic rules of the SIP grammar (RFC 3261 §25.1) shared by the URI, codec and digest parsers.

Tokens, quoted strings with quoted-pairs, ``;name=value`` parameter lists (RFC 3261
§7.3.1, §25.1 ``generic-param``) and comma lists split outside quoted strings and
angle brackets (RFC 3261 §7.3.1). Every failure raises :class:`SipParseError` with
status 400.
"""

from __future__ import annotations

import string
from collections.abc import Iterable

from plugins.sip.errors import SipParseError

#: RFC 3261 §25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "-.!%*_+`'~")
#: gen-value = token / host / quoted-string: a host adds "[", "]" and ":" (IPv6 references).
_BARE_VALUE_CHARS = TOKEN_CHARS | frozenset("[]:")
#: RFC 3261 §25.1 LWS/SWS: whitespace left after unfolding is SP or HTAB.
WHITESPACE = " \t"

Params = tuple[tuple[str, str | None], ...]


def is_token(text: str) -> bool:
    """Whether ``text`` is a non-empty RFC 3261 token."""
    return bool(text) and all(c in TOKEN_CHARS for c in text)


def parse_quoted(text: str, pos: int) -> tuple[str, int]:
    """Read the quoted-string starting at ``text[pos] == '"'``.

    :returns: the unescaped content and the index just past the closing quote.
    """
    # RFC 3261 §25.1: quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F); we accept any
    # escaped character, which is a superset and never changes the string's extent.
    assert text[pos] == '"'
    out: list[str] = []
    i = pos + 1
    while i < len(text):
        c = text[i]
        if c == "\\":
            if i + 1 >= len(text):
                break
            out.append(text[i + 1])
            i += 2
        elif c == '"':
            return "".join(out), i + 1
        else:
            out.append(c)
            i += 1
    raise SipParseError("unterminated quoted string")


def quote(value: str) -> str:
    """Format ``value`` as a quoted-string, escaping ``\\`` and ``"`` (RFC 3261 §25.1)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def split_outside(text: str, separator: str, *, brackets: bool = True) -> list[str]:
    """Split ``text`` on ``separator`` where it is outside quoted strings and ``<...>``.

    RFC 3261 §7.3.1: list values are comma separated, but a comma may appear inside a
    quoted display name or inside an angle-bracketed URI. With ``brackets=False`` only
    quoted strings protect separators (auth-params, RFC 7235 §2.1).
    """
    parts: list[str] = []
    start = 0
    i = 0
    in_angle = False
    while i < len(text):
        c = text[i]
        if c == '"':
            _, i = parse_quoted(text, i)
            continue
        if brackets and c == "<":
            if in_angle:
                raise SipParseError("nested '<' in header value")
            in_angle = True
        elif brackets and c == ">":
            if not in_angle:
                raise SipParseError("unbalanced '>' in header value")
            in_angle = False
        elif c == separator and not in_angle:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    if in_angle:
        raise SipParseError("unterminated '<' in header value")
    parts.append(text[start:])
    return parts


def parse_params(text: str) -> Params:
    """Parse ``*(SEMI generic-param)`` (RFC 3261 §25.1) into ordered (name, value) pairs.

    Names are lower-cased (RFC 3261 §7.3.1: parameter names are case-insensitive).
    Quoted values are unquoted. A parameter without ``=`` has the value ``None``.
    """
    text = text.strip(WHITESPACE)
    if not text:
        return ()
    if not text.startswith(";"):
        raise SipParseError(f"expected ';' before parameters: {text!r}")
    params: list[tuple[str, str | None]] = []
    for raw in split_outside(text[1:], ";"):
        name, sep, value = raw.partition("=")
        name = name.strip(WHITESPACE).lower()
        if not is_token(name):
            raise SipParseError(f"bad parameter name: {name!r}")
        parsed: str | None = None
        if sep:
            value = value.strip(WHITESPACE)
            if value.startswith('"'):
                parsed, end = parse_quoted(value, 0)
                if value[end:].strip(WHITESPACE):
                    raise SipParseError(f"text after quoted parameter value: {raw!r}")
            elif value and all(c in _BARE_VALUE_CHARS for c in value):
                parsed = value
            else:
                raise SipParseError(f"bad value for parameter {name!r}")
        params.append((name, parsed))
    check_unique(name for name, _ in params)
    return tuple(params)


def check_unique(names: Iterable[str]) -> None:
    """Reject a repeated parameter name.

    RFC 3261 §7.3.1 (header parameters) and §19.1.1 (URI parameters): "any given
    parameter-name MUST NOT appear more than once".
    """
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise SipParseError(f"parameter {name!r} appears more than once (RFC 3261 §7.3.1)")
        seen.add(name)


def format_params(params: Params) -> str:
    """Format parameters as ``;name`` / ``;name=value``, quoting values that need it."""
    out: list[str] = []
    for name, value in params:
        if value is None:
            out.append(f";{name}")
        elif value and all(c in _BARE_VALUE_CHARS for c in value):
            out.append(f";{name}={value}")
        else:
            out.append(f";{name}={quote(value)}")
    return "".join(out)


def get_param(params: Params, name: str) -> str | None:
    """The value of parameter ``name`` (case-insensitive); ``None`` if absent or valueless."""
    name = name.lower()
    for key, value in params:
        if key == name:
            return value
    return None


def has_param(params: Params, name: str) -> bool:
    """Whether parameter ``name`` is present (with or without a value)."""
    name = name.lower()
    return any(key == name for key, _ in params)


def parse_int(text: str, *, what: str, maximum: int) -> int:
    """Parse ``1*DIGIT`` no larger than ``maximum``; raises :class:`SipParseError` (400)."""
    text = text.strip(WHITESPACE)
    # Bound the length before int(): Python refuses very long digit strings with a
    # plain ValueError, and a peer must not be able to trigger that.
    if not text or not text.isascii() or not text.isdigit() or len(text) > 20:
        raise SipParseError(f"bad {what}: {text!r}")
    value = int(text)
    if value > maximum:
        raise SipParseError(f"{what} out of range: {value}")
    return value
