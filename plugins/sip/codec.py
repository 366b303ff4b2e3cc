"""SIP message codec, sans-I/O (STYLE.md G4).

* Message format: RFC 3261 §7 (start line, header fields, CRLF, body), §7.1 Request-Line,
  §7.2 Status-Line, §7.3.1 header field format (folding, comma lists and their
  exceptions), §7.3.3 compact forms, §7.4.1 body type and default charset, §7.5 framing.
* Framing: RFC 3261 §18.3 (Content-Length on streams; optional on datagrams) and
  §20.14 (Content-Length counts octets). CRLF keep-alives: RFC 5626 §3.5.1.
* Validation: RFC 3261 §8.1.1 mandatory header fields, §8.2.6.2 what a response
  copies, §20.16 CSeq, §20.22 Max-Forwards.

Bodies are ``bytes`` and Content-Length counts bytes, so UTF-8 text bodies survive
(``twisted.protocols.sip`` counts characters and breaks on them; reference/sip.md §4.1).

:class:`StreamParser` frames TCP/TLS byte streams (``receive_data`` / ``next_event``);
:func:`parse_datagram` reads one UDP datagram; :func:`serialize` writes a message and
always writes Content-Length. Parse failures raise :class:`SipParseError` carrying the
status to answer with.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final, overload

from plugins.sip.errors import SipParseError
from plugins.sip.grammar import (
    WHITESPACE,
    Params,
    format_params,
    get_param,
    is_token,
    parse_int,
    parse_params,
    split_outside,
)
from plugins.sip.status import reason_phrase
from plugins.sip.uri import Address, format_host, parse_address, parse_hostport

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_MAX_HEADER_SIZE",
    "MAGIC_COOKIE",
    "NEED_DATA",
    "CSeq",
    "ContentType",
    "Headers",
    "KeepAlivePing",
    "KeepAlivePong",
    "NeedData",
    "SipMessage",
    "SipParseError",
    "SipRequest",
    "SipResponse",
    "StreamParser",
    "Via",
    "canonical_name",
    "make_response",
    "parse_content_type",
    "parse_cseq",
    "parse_datagram",
    "parse_via",
    "serialize",
]

#: RFC 3261 §8.1.1.7: branches of RFC 3261 clients begin with this magic cookie.
MAGIC_COOKIE: Final = "z9hG4bK"

#: Upper bound of the start line plus header fields on a stream (a 513 past it).
DEFAULT_MAX_HEADER_SIZE: Final = 16 * 1024
#: Upper bound of a body on a stream (a 413 past it). IM bodies are small (RFC 3428 §7).
DEFAULT_MAX_BODY_SIZE: Final = 64 * 1024
#: UDP cannot carry more than this in one datagram.
DEFAULT_MAX_DATAGRAM_SIZE: Final = 65535

# RFC 3261 §7.3.3 and §20: compact forms, plus those of later RFCs that SIP stacks
# send: a (RFC 3841), b (RFC 3892), d (RFC 3841), j (RFC 3841), n (RFC 4474),
# o and u (RFC 6665), r (RFC 3515), x (RFC 4028), y (RFC 8224).
_COMPACT: Final = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
    "y": "Identity",
}

# Canonical spellings of names whose capitalisation is not plain Title-Case.
_CANONICAL: Final = {
    name.lower(): name
    for name in (
        *_COMPACT.values(),
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Alert-Info",
        "Allow",
        "Authentication-Info",
        "Authorization",
        "CSeq",
        "Call-Info",
        "Content-Disposition",
        "Content-Language",
        "Date",
        "Error-Info",
        "Expires",
        "In-Reply-To",
        "MIME-Version",
        "Max-Forwards",
        "Min-Expires",
        "Organization",
        "Path",
        "Priority",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Require",
        "RAck",
        "RSeq",
        "Record-Route",
        "Reply-To",
        "Require",
        "Retry-After",
        "Route",
        "SIP-ETag",
        "SIP-If-Match",
        "Server",
        "Service-Route",
        "Timestamp",
        "Unsupported",
        "User-Agent",
        "WWW-Authenticate",
        "Warning",
    )
}

# RFC 3261 §7.3.1: header fields whose grammar is `name HCOLON value *(COMMA value)`
# may be combined on one row, so we split them into one entry per value. Never
# WWW-Authenticate, Authorization, Proxy-Authenticate or Proxy-Authorization: "they
# MUST NOT be combined into a single header field row", and their values hold commas.
# Unknown headers are never split, since we cannot know their grammar.
_LIST_HEADERS: Final = frozenset(
    name.lower()
    for name in (
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Alert-Info",
        "Allow",
        "Allow-Events",
        "Call-Info",
        "Contact",
        "Content-Encoding",
        "Content-Language",
        "Error-Info",
        "In-Reply-To",
        "Path",
        "Proxy-Require",
        "Record-Route",
        "Require",
        "Route",
        "Service-Route",
        "Supported",
        "Unsupported",
        "Via",
        "Warning",
    )
)


def canonical_name(name: str) -> str:
    """The canonical spelling of a header name; compact forms expand (RFC 3261 §7.3.3).

    Unknown names keep the spelling they came with: names compare case-insensitively
    (RFC 3261 §7.3.1), so only lookups need folding.
    """
    lowered = name.lower()
    if lowered in _COMPACT:
        return _COMPACT[lowered]
    return _CANONICAL.get(lowered, name)


def _check_value(name: str, value: str) -> None:
    # A CR or LF in a value would let a caller inject header rows or a body.
    if any(c in "\r\n\0" for c in value) or any(c in "\r\n\0:" or c in WHITESPACE for c in name):
        raise ValueError(f"header {name!r} contains a forbidden character")


class Headers(Sequence[tuple[str, str]]):
    """An immutable, ordered multi-dict of header fields.

    Names are canonical (compact forms expanded); lookups are case-insensitive.
    Values of list headers (Via, Contact, Route...) are split into one entry per
    value (RFC 3261 §7.3.1), so ``get_all("Via")`` lists every hop in order whether
    it came one per row or comma-joined.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        out: list[tuple[str, str]] = []
        for name, value in items:
            name = canonical_name(name)
            _check_value(name, value)
            if name.lower() in _LIST_HEADERS and value.strip(WHITESPACE) != "*":
                parts = [p.strip(WHITESPACE) for p in split_outside(value, ",")]
                # An empty header (e.g. "Supported:") is legal and stays one entry.
                parts = [p for p in parts if p] or [""]
                out.extend((name, part) for part in parts)
            else:
                out.append((name, value.strip(WHITESPACE)))
        self._items: tuple[tuple[str, str], ...] = tuple(out)

    @overload
    def __getitem__(self, index: int) -> tuple[str, str]: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[tuple[str, str]]: ...
    def __getitem__(self, index: int | slice) -> tuple[str, str] | Sequence[tuple[str, str]]:
        return self._items[index]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = canonical_name(name).lower()
        return any(n.lower() == key for n, _ in self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    def __hash__(self) -> int:
        return hash(self._items)

    def __repr__(self) -> str:
        return f"Headers({list(self._items)!r})"

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``, or ``default``."""
        key = canonical_name(name).lower()
        for n, v in self._items:
            if n.lower() == key:
                return v
        return default

    def get_all(self, name: str) -> tuple[str, ...]:
        """Every value of ``name`` in order."""
        key = canonical_name(name).lower()
        return tuple(v for n, v in self._items if n.lower() == key)

    def add(self, name: str, value: str) -> Headers:
        """A copy with ``name: value`` appended after the other fields."""
        return Headers((*self._items, (name, value)))

    def prepend(self, name: str, value: str) -> Headers:
        """A copy with ``name: value`` first (a new top Via goes first, RFC 3261 §8.1.1.7)."""
        return Headers(((name, value), *self._items))

    def remove(self, name: str) -> Headers:
        """A copy without any field called ``name``."""
        key = canonical_name(name).lower()
        return Headers((n, v) for n, v in self._items if n.lower() != key)

    def replace(self, name: str, value: str) -> Headers:
        """A copy where ``name`` has the single value ``value``, at its first position."""
        key = canonical_name(name).lower()
        out: list[tuple[str, str]] = []
        placed = False
        for n, v in self._items:
            if n.lower() == key:
                if not placed:
                    out.append((n, value))
                    placed = True
            else:
                out.append((n, v))
        if not placed:
            out.append((name, value))
        return Headers(out)


@dataclass(frozen=True)
class Via:
    """One Via hop (RFC 3261 §20.42, §25.1 ``via-parm``)."""

    transport: str
    host: str
    port: int | None = None
    params: Params = ()
    protocol: str = "SIP/2.0"

    @property
    def branch(self) -> str | None:
        """The ``branch`` parameter (RFC 3261 §8.1.1.7), or ``None``."""
        return get_param(self.params, "branch")

    @property
    def sent_by(self) -> str:
        """``host[:port]``, lower-cased, for server transaction matching (RFC 3261 §17.2.3)."""
        host = format_host(self.host)
        return host if self.port is None else f"{host}:{self.port}"

    def param(self, name: str) -> str | None:
        """The value of parameter ``name``; ``None`` if absent or valueless (``;rport``)."""
        return get_param(self.params, name)

    def __str__(self) -> str:
        return f"{self.protocol}/{self.transport} {self.sent_by}{format_params(self.params)}"


_VIA_RE = re.compile(
    r"(?P<name>[^\s/]+)[ \t]*/[ \t]*(?P<version>[^\s/]+)[ \t]*/[ \t]*(?P<transport>[^\s/;]+)"
    r"[ \t]+(?P<sent_by>[^;]+)(?P<params>;.*)?",
    re.DOTALL,
)


def parse_via(value: str) -> Via:
    """Parse one Via value: ``sent-protocol LWS sent-by *(SEMI via-params)`` (RFC 3261 §25.1).

    RFC 3261 §25.1: ``SLASH = SWS "/" SWS`` and ``COLON = SWS ":" SWS``, so whitespace
    may surround the slashes and the colon of sent-by.
    """
    match = _VIA_RE.fullmatch(value.strip(WHITESPACE))
    if match is None:
        raise SipParseError(f"bad Via: {value!r}")
    name, version, transport = match["name"], match["version"], match["transport"]
    if not (is_token(name) and is_token(version) and is_token(transport)):
        raise SipParseError(f"bad Via sent-protocol: {value!r}")
    sent_by = "".join(match["sent_by"].split())
    host, port = parse_hostport(sent_by)
    return Via(
        transport=transport.upper(),
        host=host,
        port=port,
        params=parse_params(match["params"] or ""),
        protocol=f"{name.upper()}/{version}",
    )


@dataclass(frozen=True)
class CSeq:
    """The CSeq header: sequence number and method (RFC 3261 §20.16)."""

    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


def parse_cseq(value: str) -> CSeq:
    """Parse ``1*DIGIT LWS Method`` (RFC 3261 §20.16)."""
    number, _, method = value.strip(WHITESPACE).partition(" ")
    method = method.strip(WHITESPACE)
    if not is_token(method):
        raise SipParseError(f"bad CSeq: {value!r}")
    # RFC 3261 §20.16: "The sequence number MUST be expressible as a 32-bit unsigned integer."
    return CSeq(parse_int(number, what="CSeq number", maximum=2**32 - 1), method)


@dataclass(frozen=True)
class ContentType:
    """A media type with parameters (RFC 3261 §20.15); type and subtype lower-cased."""

    type: str
    subtype: str
    params: Params = ()

    @property
    def mime(self) -> str:
        """``type/subtype``, e.g. ``text/plain``."""
        return f"{self.type}/{self.subtype}"

    @property
    def charset(self) -> str | None:
        """The ``charset`` parameter lower-cased, or ``None`` when absent."""
        value = get_param(self.params, "charset")
        return value.lower() if value is not None else None

    @property
    def effective_charset(self) -> str | None:
        """The charset to decode with.

        RFC 3261 §7.4.1: "When no explicit charset parameter is provided by the sender,
        media subtypes of the 'text' type are defined to have a default charset value of
        'UTF-8'." COMPAT: baresip 1.0.0 sends ``text/plain`` without a charset.
        """
        if self.charset is not None:
            return self.charset
        return "utf-8" if self.type == "text" else None

    def __str__(self) -> str:
        return f"{self.mime}{format_params(self.params)}"


def parse_content_type(value: str) -> ContentType:
    """Parse ``m-type SLASH m-subtype *(SEMI m-parameter)`` (RFC 3261 §25.1)."""
    media, sep, params = value.partition(";")
    type_, slash, subtype = media.partition("/")
    type_, subtype = type_.strip(WHITESPACE).lower(), subtype.strip(WHITESPACE).lower()
    if not slash or not is_token(type_) or not is_token(subtype):
        raise SipParseError(f"bad Content-Type: {value!r}")
    return ContentType(type_, subtype, parse_params(sep + params))


class _MessageHelpers:
    """Readers of the header fields every SIP message carries (RFC 3261 §8.1.1)."""

    headers: Headers

    def _required(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise SipParseError(f"missing {name} header")
        return value

    @property
    def call_id(self) -> str:
        """The Call-ID (RFC 3261 §20.8)."""
        value = self._required("Call-ID")
        if not value:
            raise SipParseError("empty Call-ID")
        return value

    @property
    def cseq(self) -> CSeq:
        """The CSeq (RFC 3261 §20.16)."""
        return parse_cseq(self._required("CSeq"))

    @property
    def from_address(self) -> Address:
        """The From address (RFC 3261 §20.20)."""
        return parse_address(self._required("From"))

    @property
    def to_address(self) -> Address:
        """The To address (RFC 3261 §20.39)."""
        return parse_address(self._required("To"))

    @property
    def from_tag(self) -> str | None:
        """The From tag (RFC 3261 §19.3)."""
        return self.from_address.tag

    @property
    def to_tag(self) -> str | None:
        """The To tag (RFC 3261 §19.3); ``None`` outside a dialog and in requests we start."""
        return self.to_address.tag

    @property
    def vias(self) -> tuple[Via, ...]:
        """Every Via hop, topmost first."""
        return tuple(parse_via(v) for v in self.headers.get_all("Via"))

    @property
    def top_via(self) -> Via:
        """The topmost Via (RFC 3261 §17.1.3, §17.2.3)."""
        return parse_via(self._required("Via"))

    @property
    def branch(self) -> str | None:
        """The branch of the topmost Via (RFC 3261 §8.1.1.7)."""
        return self.top_via.branch

    @property
    def max_forwards(self) -> int | None:
        """Max-Forwards (RFC 3261 §20.22), or ``None`` when absent."""
        value = self.headers.get("Max-Forwards")
        return None if value is None else parse_int(value, what="Max-Forwards", maximum=255)

    @property
    def content_type(self) -> ContentType | None:
        """The parsed Content-Type (RFC 3261 §20.15), or ``None`` when absent."""
        value = self.headers.get("Content-Type")
        return None if value is None else parse_content_type(value)


@dataclass(frozen=True)
class SipRequest(_MessageHelpers):
    """A SIP request (RFC 3261 §7.1). ``uri`` is the Request-URI as written."""

    method: str
    uri: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""


@dataclass(frozen=True)
class SipResponse(_MessageHelpers):
    """A SIP response (RFC 3261 §7.2)."""

    status: int
    reason: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    @property
    def provisional(self) -> bool:
        """A 1xx response (RFC 3261 §7.2)."""
        return 100 <= self.status < 200

    @property
    def final(self) -> bool:
        """A 2xx-6xx response (RFC 3261 §6, Final Response)."""
        return self.status >= 200


SipMessage = SipRequest | SipResponse


@dataclass(frozen=True)
class KeepAlivePing:
    """A double CRLF on a stream: the peer expects a single CRLF back (RFC 5626 §3.5.1)."""


@dataclass(frozen=True)
class KeepAlivePong:
    """A single CRLF on a stream: the answer to our ping (RFC 5626 §3.5.1)."""


class NeedData:
    """``next_event()`` needs more bytes before it can return an event."""

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()

StreamEvent = SipRequest | SipResponse | KeepAlivePing | KeepAlivePong | NeedData


# --- parsing -----------------------------------------------------------------------------


def _split_head(head: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """Split a header section into the start line and unfolded (name, value) rows."""
    lines = head.split(b"\r\n")
    start, rows = lines[0], lines[1:]
    fields: list[tuple[bytes, bytes]] = []
    for line in rows:
        if line[:1] in (b" ", b"\t"):
            # RFC 3261 §7.3.1: "The line break and the whitespace at the beginning of
            # the next line are treated as a single SP character."
            if not fields:
                raise SipParseError("continuation line before the first header")
            name, value = fields[-1]
            fields[-1] = (name, value + b" " + line.lstrip(b" \t"))
            continue
        name, colon, value = line.partition(b":")
        if not colon:
            raise SipParseError(f"header line without ':': {line[:40]!r}")
        # RFC 3261 §7.3.1: whitespace is allowed on either side of the colon.
        fields.append((name.rstrip(b" \t"), value))
    return start, fields


def _content_length(fields: list[tuple[bytes, bytes]]) -> int | None:
    values = {v.strip(b" \t") for n, v in fields if n.lower() in (b"content-length", b"l")}
    if not values:
        return None
    if len(values) > 1:
        # Two different lengths make the message boundary ambiguous (request smuggling).
        raise SipParseError("conflicting Content-Length headers", fatal=True)
    try:
        text = values.pop().decode("ascii")
    except UnicodeDecodeError as exc:
        raise SipParseError("bad Content-Length", fatal=True) from exc
    try:
        return parse_int(text, what="Content-Length", maximum=2**32 - 1)
    except SipParseError as exc:
        raise SipParseError(exc.reason, fatal=True) from exc


def _decode(data: bytes, what: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # RFC 3261 §7: "SIP is a text-based protocol and uses the UTF-8 charset".
        raise SipParseError(f"{what} is not UTF-8") from exc
    if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in text):
        raise SipParseError(f"control character in {what}")
    return text


def _build(start: bytes, fields: list[tuple[bytes, bytes]], body: bytes) -> SipMessage:
    """Decode the start line and headers into a message (no semantic checks yet)."""
    start_text = _decode(start, "start line")
    pairs: list[tuple[str, str]] = []
    for raw_name, raw_value in fields:
        name = _decode(raw_name, "header name")
        if not is_token(name):
            raise SipParseError(f"bad header name {name!r}")
        pairs.append((name, _decode(raw_value, f"{name} header")))
    headers = Headers(pairs)
    if start_text[:4].upper() == "SIP/":
        # RFC 3261 §7.2: Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        version, _, rest = start_text.partition(" ")
        code, _, reason = rest.partition(" ")
        if len(code) != 3 or not code.isascii() or not code.isdigit() or not 100 <= int(code) <= 699:
            raise SipParseError(f"bad status line {start_text!r}")
        if version.upper() != "SIP/2.0":
            raise SipParseError(f"unsupported version {version!r}", status=505)
        return SipResponse(int(code), reason, headers, body)
    # RFC 3261 §7.1: Request-Line = Method SP Request-URI SP SIP-Version; "No linear
    # whitespace (LWS) is allowed in any of the elements."
    parts = start_text.split(" ")
    if len(parts) != 3 or not is_token(parts[0]) or not parts[1] or "\t" in start_text:
        raise SipParseError(f"bad request line {start_text!r}")
    method, uri, version = parts
    request = SipRequest(method, uri, headers, body)
    if version.upper() != "SIP/2.0":
        # RFC 3261 §21.5.6: 505 Version Not Supported. It can be answered if the
        # headers a response copies are intact.
        raise SipParseError(f"unsupported version {version!r}", status=505, request=_answerable(request))
    return request


def _answerable(request: SipRequest) -> SipRequest | None:
    """``request`` if a response can be built for it (RFC 3261 §8.2.6.2), else ``None``."""
    try:
        _check_response_fields(request)
    except SipParseError:
        return None
    return request


def _check_response_fields(message: SipMessage) -> None:
    # RFC 3261 §8.2.6.2: a response copies From, Call-ID, CSeq, Via and To, and goes
    # back to the top Via (§18.2.2), so these must parse. Lower Via hops are copied as
    # text and never read here, so an odd one does not cost the whole message.
    parse_via(message._required("Via"))
    parse_address(message._required("From"))
    parse_address(message._required("To"))
    if not message._required("Call-ID"):
        raise SipParseError("empty Call-ID header")
    parse_cseq(message._required("CSeq"))


def _validate(message: SipMessage) -> SipMessage:
    """Check the mandatory header fields; raise :class:`SipParseError` (400) otherwise."""
    if isinstance(message, SipResponse):
        # RFC 3261 §18.3: a malformed response "MUST be discarded", so never answerable.
        _check_response_fields(message)
        return message
    # RFC 3261 §8.1.1: a request MUST contain To, From, CSeq, Call-ID, Max-Forwards and
    # Via. Without the ones a response copies we cannot answer at all; the rest get a 400.
    _check_response_fields(message)
    try:
        if message.cseq.method != message.method:
            # RFC 3261 §8.1.1.5: the CSeq "method MUST match that of the request".
            raise SipParseError("CSeq method does not match the request method")
        # Max-Forwards is a UAC MUST (§8.1.1.6), but RFC 2543 peers omit it and a UAS
        # does not forward, so only a malformed one is refused (§20.22: 0-255).
        if (max_forwards := message.headers.get("Max-Forwards")) is not None:
            parse_int(max_forwards, what="Max-Forwards", maximum=255)
        if (content_type := message.headers.get("Content-Type")) is not None:
            parse_content_type(content_type)
    except SipParseError as exc:
        raise SipParseError(exc.reason, status=exc.status, request=message) from exc
    return message


def _refuse(exc: SipParseError, message: SipMessage | None, *, fatal: bool = False) -> SipParseError:
    """Re-raise ``exc`` with the answerable request attached when there is one."""
    request = _answerable(message) if isinstance(message, SipRequest) else None
    return SipParseError(exc.reason, status=exc.status, request=exc.request or request, fatal=fatal)


class StreamParser:
    """Frames SIP messages on a byte stream (TCP, TLS), sans-I/O.

    Feed bytes with :meth:`receive_data` and call :meth:`next_event` until it returns
    :data:`NEED_DATA`; the size bounds are enforced there, so call it after every
    read. Messages are framed by Content-Length, which "MUST be used with stream
    oriented transports" (RFC 3261 §18.3).

    A :class:`SipParseError` with ``fatal=True`` means the framing is lost: the parser
    stays broken and the connection must be closed (after sending the error's status
    when ``error.request`` is set). A non-fatal error concerns one message, whose bytes
    have been consumed; parsing goes on with the next message.
    """

    def __init__(
        self,
        *,
        max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    ) -> None:
        self.max_header_size = max_header_size
        self.max_body_size = max_body_size
        self._buffer = bytearray()
        self._scanned = 0
        self._error: SipParseError | None = None

    def receive_data(self, data: bytes) -> None:
        """Append bytes received from the connection."""
        if self._error is None:
            self._buffer += data

    @property
    def buffered(self) -> int:
        """How many received bytes are not yet consumed by an event."""
        return len(self._buffer)

    def next_event(self) -> StreamEvent:
        """The next message or keep-alive, or :data:`NEED_DATA`."""
        if self._error is not None:
            raise self._error
        try:
            return self._next_event()
        except SipParseError as exc:
            if exc.fatal:
                self._error = exc
                self._buffer.clear()
            raise

    def _next_event(self) -> StreamEvent:
        buf = self._buffer
        # RFC 5626 §3.5.1: a ping is CRLF CRLF, a pong a single CRLF. RFC 3261 §7.5 also
        # says stream parsers "MUST ignore any CRLF appearing before the start-line".
        if buf.startswith(b"\r\n\r\n"):
            del buf[:4]
            return KeepAlivePing()
        if buf.startswith(b"\r\n"):
            if buf == b"\r\n\r":
                return NEED_DATA
            # A lone CRLF is taken as a pong at once: it is what a client like us waits
            # for, and delaying it would delay RFC 5626 flow liveness checks.
            del buf[:2]
            return KeepAlivePong()
        if len(buf) == 0 or buf == b"\r":
            return NEED_DATA
        end = buf.find(b"\r\n\r\n", max(0, self._scanned - 3))
        if end < 0:
            if len(buf) > self.max_header_size:
                # RFC 3261 §21.5.9: 513 Message Too Large.
                raise SipParseError("header section too large", status=513, fatal=True)
            self._scanned = len(buf)
            return NEED_DATA
        if end + 4 > self.max_header_size:
            raise SipParseError("header section too large", status=513, fatal=True)
        start, fields = _split_head_fatal(bytes(buf[:end]))
        length = _content_length(fields)
        if length is None:
            raise _refuse(
                SipParseError("missing Content-Length on a stream transport (RFC 3261 §18.3)"),
                _try_build(start, fields),
                fatal=True,
            )
        if length > self.max_body_size:
            # RFC 3261 §21.4.11: 413 Request Entity Too Large.
            raise _refuse(SipParseError("body too large", status=413), _try_build(start, fields), fatal=True)
        total = end + 4 + length
        if len(buf) < total:
            self._scanned = end
            return NEED_DATA
        body = bytes(buf[end + 4 : total])
        del buf[:total]
        self._scanned = 0
        return _validate(_build(start, fields, body))


def _split_head_fatal(head: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    try:
        return _split_head(head)
    except SipParseError as exc:
        # Without header rows we cannot find Content-Length, so framing is lost.
        raise SipParseError(exc.reason, status=exc.status, fatal=True) from exc


def _try_build(start: bytes, fields: list[tuple[bytes, bytes]]) -> SipMessage | None:
    try:
        return _build(start, fields, b"")
    except SipParseError:
        return None


def parse_datagram(data: bytes, *, max_size: int = DEFAULT_MAX_DATAGRAM_SIZE) -> SipMessage | None:
    """Parse one UDP datagram: exactly one message (RFC 3261 §18.3).

    :returns: the message, or ``None`` for a datagram of only CRLFs (a keep-alive).
    :raises SipParseError: ``error.request`` is set when a 4xx/5xx can be sent back.
    """
    if len(data) > max_size:
        raise SipParseError("datagram too large", status=513)
    data = data.lstrip(b"\r\n")
    if not data:
        return None
    end = data.find(b"\r\n\r\n")
    if end < 0:
        # RFC 3261 §7: "the empty line MUST be present even if the message-body is not".
        raise SipParseError("no empty line after the header fields")
    start, fields = _split_head(data[:end])
    rest = data[end + 4 :]
    try:
        length = _content_length(fields)
    except SipParseError as exc:
        raise _refuse(exc, _try_build(start, fields)) from exc
    if length is None:
        # RFC 3261 §18.3: "If the message has no Content-Length header field, the message
        # body is assumed to end at the end of the transport packet."
        body = rest
    elif len(rest) < length:
        # RFC 3261 §18.3: a short body "is considered an error. If the message is a
        # response, it MUST be discarded. If the message is a request, the element
        # SHOULD generate a 400 (Bad Request) response."
        raise _refuse(SipParseError("body shorter than Content-Length"), _try_build(start, fields))
    else:
        # RFC 3261 §18.3: "additional bytes in the transport packet beyond the end of the
        # body ... MUST be discarded."
        body = rest[:length]
    return _validate(_build(start, fields, body))


# --- building ----------------------------------------------------------------------------


def serialize(message: SipMessage) -> bytes:
    """The wire form of ``message``, always with a Content-Length counting body octets.

    RFC 3261 §18.3 makes Content-Length mandatory on streams and §20.14 says it
    "SHOULD" be used with UDP, so we always write it (any Content-Length in
    ``message.headers`` is replaced).
    """
    if isinstance(message, SipRequest):
        if not is_token(message.method):
            raise ValueError(f"bad method {message.method!r}")
        if not message.uri or any(c in " \t\r\n\0<>" for c in message.uri):
            # RFC 3261 §7.1: no unescaped spaces or control characters, not in "<>".
            raise ValueError(f"bad Request-URI {message.uri!r}")
        start = f"{message.method} {message.uri} SIP/2.0"
    else:
        if not 100 <= message.status <= 699 or any(c in "\r\n\0" for c in message.reason):
            raise ValueError(f"bad status line {message.status} {message.reason!r}")
        start = f"SIP/2.0 {message.status} {message.reason}"
    lines = [start]
    lines += [f"{name}: {value}" for name, value in message.headers if name != "Content-Length"]
    lines.append(f"Content-Length: {len(message.body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + message.body


def make_response(
    request: SipRequest,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> SipResponse:
    """Build a response to ``request`` (RFC 3261 §8.2.6).

    Copies Via (all values, in order), From, Call-ID, CSeq and To (§8.2.6.2), adds a
    To tag when the request had none (``to_tag``, or a random one) except on 100, and
    copies Timestamp into a 100 (§8.2.6.1).
    """
    copied: list[tuple[str, str]] = [("Via", v) for v in request.headers.get_all("Via")]
    if not copied:
        raise SipParseError("request has no Via to answer along")
    to_value = request.headers.get("To")
    from_value = request.headers.get("From")
    call_id = request.headers.get("Call-ID")
    cseq = request.headers.get("CSeq")
    if to_value is None or from_value is None or call_id is None or cseq is None:
        raise SipParseError("request lacks From, To, Call-ID or CSeq")
    # RFC 3261 §8.2.6.2: "if the To header field in the request did not contain a tag,
    # the URI in the To header field in the response MUST equal the URI in the To header
    # field; additionally, the UAS MUST add a tag to the To header field in the response
    # (with the exception of the 100 (Trying) response, in which a tag MAY be present)."
    if status != 100 and request.to_tag is None:
        to_value = f"{to_value};tag={to_tag or secrets.token_hex(8)}"
    copied += [("From", from_value), ("To", to_value), ("Call-ID", call_id), ("CSeq", cseq)]
    if status == 100 and (timestamp := request.headers.get("Timestamp")) is not None:
        # RFC 3261 §8.2.6.1: a 100 "MUST" copy the Timestamp header field.
        copied.append(("Timestamp", timestamp))
    copied += list(headers)
    return SipResponse(status, reason if reason is not None else reason_phrase(status), Headers(copied), body)
