"""SIP, SIPS and tel URIs and name-addr / addr-spec addresses.

* ``sip:`` / ``sips:`` URIs: RFC 3261 §19.1.1 (components), §19.1.2 (escaping),
  §25.1 (grammar: ``SIP-URI``, ``userinfo``, ``hostport``, ``uri-parameters``,
  ``headers``). IPv6 references follow RFC 3261 §25.1 ``IPv6reference``.
* ``tel:`` URIs: RFC 3966 §3 (``global-number`` / ``local-number`` with the
  mandatory ``phone-context``, §5.1.5).
* Addresses (From, To, Contact, Route...): RFC 3261 §20.10 and §25.1 ``name-addr`` /
  ``addr-spec`` with header parameters.

Syntax errors raise :class:`SipParseError` with status 400; a well-formed URI of a
scheme we do not handle raises status 416 (RFC 3261 §21.4.14, Unsupported URI Scheme).
"""

from __future__ import annotations

import ipaddress
import re
import string
from dataclasses import dataclass, replace
from urllib.parse import quote as _percent_quote

from plugins.sip.errors import SipParseError
from plugins.sip.grammar import (
    WHITESPACE,
    Params,
    check_unique,
    format_params,
    get_param,
    has_param,
    is_token,
    parse_params,
    parse_quoted,
    quote,
)

# RFC 3261 §25.1 character classes used by the escaping rules of §19.1.2.
_ALPHANUM = string.ascii_letters + string.digits
_MARK = "-_.!~*'()"
_UNRESERVED = _ALPHANUM + _MARK
_USER_UNRESERVED = "&=+$,;?/"
_PASSWORD_EXTRA = "&=+$,"
_PARAM_UNRESERVED = "[]/:&+$"
_HNV_UNRESERVED = "[]/?:+$"

_USER_SAFE = _UNRESERVED + _USER_UNRESERVED
_PARAM_SAFE = _UNRESERVED + _PARAM_UNRESERVED
_HEADER_SAFE = _UNRESERVED + _HNV_UNRESERVED

_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
# RFC 3261 §25.1 hostname: dot-separated labels of alphanum and "-" (not at either end).
_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")
# RFC 3966 §3: global-number-digits = "+" *phonedigit DIGIT *phonedigit, with the
# visual separators "-" / "." / "(" / ")"; local-number-digits also allow HEXDIG, "*" and "#".
_GLOBAL_NUMBER_RE = re.compile(r"\+[0-9().-]*[0-9][0-9().-]*")
_LOCAL_NUMBER_RE = re.compile(r"[0-9A-Fa-f*#().-]*[0-9A-Fa-f*#][0-9A-Fa-f*#().-]*")


def escape(text: str, safe: str) -> str:
    """Percent-encode every character of ``text`` outside ``safe`` (as UTF-8 octets)."""
    return _percent_quote(text, safe=safe, encoding="utf-8", errors="strict")


def unescape(text: str, *, allowed: str) -> str:
    """Decode ``escaped`` octets (RFC 3261 §25.1 ``escaped = "%" HEXDIG HEXDIG``).

    ``allowed`` lists the characters that may appear unescaped; anything else is a
    syntax error. The decoded octets must be UTF-8 (RFC 3261 §7: SIP is UTF-8 text).
    """
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c == "%":
            pair = text[i + 1 : i + 3]
            if len(pair) != 2 or any(h not in string.hexdigits for h in pair):
                raise SipParseError(f"bad escape in {text!r}")
            out.append(int(pair, 16))
            i += 3
        elif c in allowed:
            out.append(ord(c))
            i += 1
        else:
            raise SipParseError(f"character {c!r} must be escaped in {text!r}")
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipParseError(f"escaped octets are not UTF-8 in {text!r}") from exc


def escape_user(user: str) -> str:
    """Escape a user part for a SIP URI (RFC 3261 §19.1.2, §25.1 ``user``).

    ``@``, ``:``, ``%``, spaces and non-ASCII characters are percent-encoded;
    ``unreserved`` and ``user-unreserved`` characters stay as they are.
    """
    return escape(user, _USER_SAFE)


def format_host(host: str) -> str:
    """Format a host for a URI or Via: IPv6 addresses go in brackets (RFC 3261 §25.1)."""
    return f"[{host}]" if ":" in host else host


def parse_host(text: str) -> str:
    """Parse ``host = hostname / IPv4address / IPv6reference`` (RFC 3261 §25.1).

    :returns: the host lower-cased (RFC 3261 §19.1.4: hosts compare case-insensitively),
        an IPv6 address without its brackets and in compressed form.
    """
    if text.startswith("["):
        if not text.endswith("]"):
            raise SipParseError(f"bad IPv6 reference: {text!r}")
        try:
            return ipaddress.IPv6Address(text[1:-1]).compressed
        except ValueError as exc:
            raise SipParseError(f"bad IPv6 address: {text!r}") from exc
    labels = text.removesuffix(".").split(".")
    if not all(_LABEL_RE.fullmatch(label) for label in labels):
        raise SipParseError(f"bad host: {text!r}")
    # RFC 3261 §25.1: toplabel starts with ALPHA, so an all-numeric last label can
    # only be an IPv4 address, and that must then be a valid one.
    if labels[-1].isdigit():
        try:
            ipaddress.IPv4Address(text)
        except ValueError as exc:
            raise SipParseError(f"bad IPv4 address: {text!r}") from exc
    return text.lower()


def parse_hostport(text: str) -> tuple[str, int | None]:
    """Parse ``hostport = host [ ":" port ]`` (RFC 3261 §25.1)."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError(f"bad IPv6 reference: {text!r}")
        host_text, rest = text[: end + 1], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise SipParseError(f"bad hostport: {text!r}")
        port_text = rest[1:] if rest else None
    else:
        host_text, sep, port_text_ = text.partition(":")
        port_text = port_text_ if sep else None
    port: int | None = None
    if port_text is not None:
        if not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5:
            raise SipParseError(f"bad port in {text!r}")
        port = int(port_text)
        if not 0 < port <= 65535:
            raise SipParseError(f"port out of range in {text!r}")
    return parse_host(host_text), port


@dataclass(frozen=True)
class SipUri:
    """A ``sip:`` or ``sips:`` URI (RFC 3261 §19.1.1).

    :ivar user: the unescaped user part, or ``None`` when the URI has no userinfo.
        A password in the userinfo is dropped: RFC 3261 §19.1.1 makes its use NOT
        RECOMMENDED, and we never send or need one.
    :ivar host: lower-cased host; IPv6 addresses without brackets.
    :ivar params: uri-parameters in order, names lower-cased, values unescaped.
    :ivar headers: the ``?name=value&...`` headers, unescaped.
    """

    scheme: str
    host: str
    user: str | None = None
    port: int | None = None
    params: Params = ()
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def secure(self) -> bool:
        """Whether this is a SIPS URI (RFC 3261 §19.1: TLS on every hop)."""
        return self.scheme == "sips"

    @property
    def transport(self) -> str | None:
        """The ``transport`` uri-parameter, lower-cased (RFC 3261 §19.1.1)."""
        value = get_param(self.params, "transport")
        return value.lower() if value is not None else None

    @property
    def hostport(self) -> str:
        """``host[:port]`` as written in a URI or a Via sent-by."""
        host = format_host(self.host)
        return host if self.port is None else f"{host}:{self.port}"

    def param(self, name: str) -> str | None:
        """The value of uri-parameter ``name``; ``None`` if absent or valueless (``;lr``)."""
        return get_param(self.params, name)

    def has_param(self, name: str) -> bool:
        """Whether uri-parameter ``name`` is present, with or without a value."""
        return has_param(self.params, name)

    def with_params(self, **params: str | None) -> SipUri:
        """A copy with the given uri-parameters set (``None`` for a valueless one)."""
        kept = tuple((k, v) for k, v in self.params if k not in params)
        return replace(self, params=kept + tuple(params.items()))

    def without_headers(self) -> SipUri:
        """A copy with no ``?headers``, as required in a Request-URI built from it."""
        return replace(self, headers=())

    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out += [escape_user(self.user), "@"]
        out.append(self.hostport)
        for name, value in self.params:
            out.append(f";{escape(name, _PARAM_SAFE)}")
            if value is not None:
                out.append(f"={escape(value, _PARAM_SAFE)}")
        if self.headers:
            out.append("?")
            out.append(
                "&".join(f"{escape(k, _HEADER_SAFE)}={escape(v, _HEADER_SAFE)}" for k, v in self.headers)
            )
        return "".join(out)


@dataclass(frozen=True)
class TelUri:
    """A ``tel:`` URI (RFC 3966 §3).

    :ivar number: the telephone-subscriber digits as written, visual separators included.
    :ivar params: parameters (``ext``, ``isub``, ``phone-context``...), names lower-cased.
    """

    number: str
    params: Params = ()

    scheme = "tel"

    @property
    def is_global(self) -> bool:
        """Whether the number is a global E.164 number (starts with ``+``)."""
        return self.number.startswith("+")

    @property
    def digits(self) -> str:
        """The number without visual separators (RFC 3966 §5.1.1), for comparisons."""
        return "".join(c for c in self.number if c not in "-.()")

    def param(self, name: str) -> str | None:
        """The value of parameter ``name``; ``None`` if absent."""
        return get_param(self.params, name)

    def __str__(self) -> str:
        out = ["tel:", self.number]
        for name, value in self.params:
            out.append(f";{name}")
            if value is not None:
                out.append(f"={escape(value, _PARAM_SAFE)}")
        return "".join(out)


Uri = SipUri | TelUri


def parse_uri(text: str) -> Uri:
    """Parse a ``sip:``, ``sips:`` or ``tel:`` URI.

    :raises SipParseError: status 400 for bad syntax, 416 for another scheme.
    """
    scheme, sep, rest = text.partition(":")
    if not sep or not _SCHEME_RE.fullmatch(scheme):
        raise SipParseError(f"not a URI: {text!r}")
    # RFC 3261 §7.1: "The Request-URI MUST NOT contain unescaped spaces or control characters".
    if any(c in WHITESPACE or ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise SipParseError(f"unescaped space or control character in URI {text!r}")
    scheme = scheme.lower()
    if scheme in ("sip", "sips"):
        return _parse_sip(scheme, rest, text)
    if scheme == "tel":
        return _parse_tel(rest, text)
    raise SipParseError(f"unsupported URI scheme {scheme!r}", status=416)


def _parse_sip(scheme: str, rest: str, text: str) -> SipUri:
    # The user part may hold ";" and "?" (user-unreserved) but never an unescaped "@",
    # and neither may parameters or headers: the first "@" ends the userinfo.
    user: str | None = None
    if "@" in rest:
        userinfo, _, rest = rest.partition("@")
        user_text, _, password = userinfo.partition(":")
        # RFC 3261 §19.1.1: "If the @ sign is present in a SIP or SIPS URI, the user
        # field MUST NOT be empty."
        if not user_text:
            raise SipParseError(f"empty user part in {text!r} (RFC 3261 §19.1.1)")
        user = unescape(user_text, allowed=_USER_SAFE)
        unescape(password, allowed=_UNRESERVED + _PASSWORD_EXTRA)  # validated, then dropped
    rest, _, headers_text = rest.partition("?")
    hostport, *param_texts = rest.split(";")
    host, port = parse_hostport(hostport)
    params: list[tuple[str, str | None]] = []
    for raw in param_texts:
        name, sep, value = raw.partition("=")
        if not name:
            raise SipParseError(f"empty uri-parameter in {text!r}")
        # RFC 3261 §19.1.4: parameter names compare case-insensitively.
        name = unescape(name, allowed=_PARAM_SAFE).lower()
        if sep and not value:
            raise SipParseError(f"empty value for uri-parameter {name!r}")
        params.append((name, unescape(value, allowed=_PARAM_SAFE) if sep else None))
    # RFC 3261 §19.1.1: "any given parameter-name MUST NOT appear more than once".
    check_unique(name for name, _ in params)
    headers: list[tuple[str, str]] = []
    if headers_text:
        for raw in headers_text.split("&"):
            name, sep, value = raw.partition("=")
            if not sep or not name:
                raise SipParseError(f"bad URI header {raw!r}")
            headers.append((unescape(name, allowed=_HEADER_SAFE), unescape(value, allowed=_HEADER_SAFE)))
    return SipUri(scheme, host, user, port, tuple(params), tuple(headers))


def _parse_tel(rest: str, text: str) -> TelUri:
    number, *param_texts = rest.split(";")
    params: list[tuple[str, str | None]] = []
    for raw in param_texts:
        name, sep, value = raw.partition("=")
        name = name.lower()
        if not name or any(c not in _ALPHANUM + "-" for c in name) or (sep and not value):
            raise SipParseError(f"bad tel parameter {raw!r}")
        params.append((name, unescape(value, allowed=_PARAM_SAFE) if sep else None))
    check_unique(name for name, _ in params)
    if _GLOBAL_NUMBER_RE.fullmatch(number):
        return TelUri(number, tuple(params))
    if _LOCAL_NUMBER_RE.fullmatch(number):
        # RFC 3966 §5.1.5: a local number "MUST" carry a phone-context parameter.
        if get_param(tuple(params), "phone-context") is None:
            raise SipParseError(f"local tel number without phone-context (RFC 3966 §5.1.5): {text!r}")
        return TelUri(number, tuple(params))
    raise SipParseError(f"bad telephone number in {text!r}")


@dataclass(frozen=True)
class Address:
    """A name-addr or addr-spec with header parameters (RFC 3261 §20.10, §25.1).

    Used by From, To, Contact, Route, Record-Route, Reply-To. ``params`` are the
    *header* parameters (``tag``, ``expires``, ``q``...), not the URI's.
    """

    uri: Uri
    display_name: str | None = None
    params: Params = ()

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter (RFC 3261 §19.3), or ``None``."""
        return get_param(self.params, "tag")

    def param(self, name: str) -> str | None:
        """The value of header parameter ``name``; ``None`` if absent or valueless."""
        return get_param(self.params, name)

    def with_tag(self, tag: str) -> Address:
        """A copy with the ``tag`` parameter set to ``tag``."""
        kept = tuple((k, v) for k, v in self.params if k != "tag")
        return replace(self, params=(*kept, ("tag", tag)))

    def __str__(self) -> str:
        # Always the name-addr form: RFC 3261 §20.10 requires it when the URI has a
        # comma, question mark or semicolon, and it is valid in every case.
        display = f"{quote(self.display_name)} " if self.display_name is not None else ""
        return f"{display}<{self.uri}>{format_params(self.params)}"


def parse_address(text: str) -> Address:
    """Parse ``(name-addr / addr-spec) *(SEMI generic-param)`` (RFC 3261 §25.1).

    ``"Alice" <sip:alice@example.com>;tag=abc``, ``Bob <sip:bob@example.com>`` and
    ``sip:carol@example.com;tag=1`` are all accepted. In the addr-spec form the
    parameters after the URI are header parameters (RFC 3261 §20.10).
    """
    text = text.strip(WHITESPACE)
    display: str | None = None
    if text.startswith('"'):
        display, end = parse_quoted(text, 0)
        text = text[end:].lstrip(WHITESPACE)
        if not text.startswith("<"):
            raise SipParseError("quoted display name without '<uri>'")
    if "<" in text:
        start = text.index("<")
        words = text[:start].strip(WHITESPACE)
        if words:
            # RFC 3261 §25.1: display-name = *(token LWS) / quoted-string. COMPAT: phones
            # send unquoted UTF-8 names ("Jürgen <sip:...>"), so non-ASCII letters are
            # let through; ASCII separators still are not.
            if any(not is_token("".join(c for c in w if ord(c) < 0x80) or "x") for w in words.split()):
                raise SipParseError(f"bad display name {words!r}")
            display = " ".join(words.split())
        end = text.find(">", start)
        if end < 0:
            raise SipParseError("unterminated '<' in address")
        uri_text, rest = text[start + 1 : end], text[end + 1 :]
    else:
        uri_text, sep, params_text = text.partition(";")
        rest = sep + params_text
        # RFC 3261 §20.10: without angle brackets the URI cannot carry headers.
        if "?" in uri_text or "," in uri_text:
            raise SipParseError(f"addr-spec needs '<>' around {uri_text!r} (RFC 3261 §20.10)")
    uri = parse_uri(uri_text.strip(WHITESPACE))
    return Address(uri, display, parse_params(rest))
