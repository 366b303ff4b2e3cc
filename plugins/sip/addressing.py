"""SIP addresses as contact JIDs (reference/sip.md §2.11; XEP-0106; RFC 7247's character rules).

A contact's legacy address is ``user@host``: the SIP URI without scheme, port or
parameters, its user part unescaped. The core escapes it with XEP-0106, so
``sip:alice@example.com`` is the JID ``alice\\40example.com@sip.gateway``; the ``%`` form
``alice%example.com@sip.gateway`` is accepted on input. An address without a host
(``bob``, or a ``tel:`` number ``+15551234``) is relative to the user's own SIP domain.

Lossy points: JID localparts are case-folded (nodeprep), so ``Alice@x`` comes back as
``alice@x`` (SIP user parts are case-sensitive, RFC 3261 §19.1.4); ``sips:`` is not kept
(the user's transport setting decides).
"""

from __future__ import annotations

from plugins.sip.errors import SipParseError
from plugins.sip.uri import SipUri, TelUri, Uri, parse_host, parse_uri

__all__ = ["address_of", "normalize", "uri_for"]

#: RFC 7622 §3.3.1: a localpart is at most 1023 octets; keep room for escaping.
MAX_ADDRESS = 700


def normalize(text: str) -> str:
    """The canonical legacy address of ``sip:``/``sips:``/``tel:`` URIs, ``user@host``,
    ``user%host`` or a bare user; :class:`ValueError` when it cannot be one."""
    text = text.strip()
    if not text or len(text.encode()) > MAX_ADDRESS:
        raise ValueError("an empty or over-long SIP address")
    if text.lower().startswith(("sip:", "sips:", "tel:")):
        try:
            return address_of(parse_uri(text))
        except SipParseError as exc:
            raise ValueError(f"{text!r} is not a SIP address: {exc.reason}") from None
    if "@" in text:
        user, _, host = text.rpartition("@")
    elif "%" in text:
        user, _, host = text.rpartition("%")
    else:
        user, host = text, ""
    if not user or any(c.isspace() or ord(c) < 0x20 for c in user):
        raise ValueError(f"{text!r} has no usable SIP user part")
    if host:
        try:
            host = parse_host(host)
        except SipParseError as exc:
            raise ValueError(f"{text!r}: {exc.reason}") from None
        return f"{user}@{host}"
    return user


def address_of(uri: Uri) -> str:
    """The legacy address of a URI (From of an incoming MESSAGE, a ``jabber:iq:gateway`` prompt)."""
    if isinstance(uri, TelUri):
        return uri.digits
    if not uri.user:
        raise ValueError(f"{uri} has no user part")
    return f"{uri.user}@{uri.host}"


def uri_for(address: str, default_host: str) -> SipUri:
    """The Request-URI for a legacy address; hostless ones are on ``default_host``."""
    user, _, host = address.rpartition("@") if "@" in address else (address, "", "")
    return SipUri("sip", host or default_host, user)
