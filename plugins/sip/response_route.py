"""Where a response to a received request goes (RFC 3261 §18.2.1, §18.2.2; RFC 3581 §4).

On receipt the server transport records the request's real source in its top Via:
``received`` (the source IP) and, when the client asked with an empty ``rport``, the
source port (RFC 3581 §4: then ``received`` is added even when it equals sent-by). The
response copies that Via, so the stamps travel back to the client.

Over an unreliable transport the response then goes, in order, to:

1. the ``maddr`` address, at the sent-by port or 5060 (§18.2.2);
2. with ``rport``: the source IP and port (RFC 3581 §4; the only way through a NAT);
3. otherwise the ``received`` address (the source IP) at the sent-by port, or 5060.

Reliable transports answer on the connection the request came in on (§18.2.2); the
stack does that itself and only uses the stamped request.
"""

from __future__ import annotations

from dataclasses import replace

from plugins.sip.codec import Headers, SipRequest, Via, parse_via
from plugins.sip.errors import SipParseError
from plugins.sip.grammar import Params, get_param
from plugins.sip.transport import Peer

__all__ = ["response_peer", "stamp_source"]

DEFAULT_PORT = 5060


def _has(params: Params, name: str) -> bool:
    return any(key == name for key, _ in params)


def stamp_source(request: SipRequest, source: Peer) -> SipRequest:
    """``request`` with ``received`` / ``rport`` set in its top Via (§18.2.1, RFC 3581 §4);
    unchanged when the top Via cannot be read (the parser already refused such requests)."""
    rows = list(request.headers)
    index = next((i for i, (name, _) in enumerate(rows) if name == "Via"), None)
    if index is None:
        return request
    try:
        via = parse_via(rows[index][1])
    except SipParseError:
        return request
    # A client sends rport empty; a value it chose itself is treated the same (not trusted).
    wants_rport = _has(via.params, "rport")
    params = [(key, value) for key, value in via.params if key not in ("received", "rport")]
    if wants_rport or via.host.strip("[]").lower() != source.host.lower():
        params.append(("received", source.host))
    if wants_rport:
        params.append(("rport", str(source.port)))
    rows[index] = ("Via", str(replace(via, params=tuple(params))))
    return SipRequest(request.method, request.uri, Headers(rows), request.body)


def response_peer(request: SipRequest, source: Peer) -> Peer:
    """Where a response to ``request`` (stamped by :func:`stamp_source`) goes over UDP."""
    try:
        via: Via = request.top_via
    except SipParseError:
        return source
    port = via.port or DEFAULT_PORT
    maddr = get_param(via.params, "maddr")
    if maddr:
        return Peer(source.transport, maddr.strip("[]"), port)
    rport = get_param(via.params, "rport")
    if rport is not None and rport.isdigit() and 0 < int(rport) < 65536:
        return Peer(source.transport, source.host, int(rport))
    return Peer(source.transport, source.host, port)
