"""Locating SIP servers (RFC 3263 §4) on ``twisted.names``.

:meth:`ServerLocator.locate` turns the URI of the next hop (an outbound proxy, or the
registrar / Request-URI domain) into an ordered list of :class:`Peer` targets:

* ``maddr`` replaces the host (§4.1); a numeric IP is used as it is, on the URI's port
  or the default one (5060, 5061 for TLS) with no lookup at all (§4.2);
* the transport is the ``transport`` parameter, else the caller's choice, else TLS for
  ``sips:``; with none of those and no port, NAPTR records choose it (§4.1): ``SIP+D2U``,
  ``SIP+D2T``, ``SIPS+D2T`` by order then preference, or without NAPTR the first SRV of
  ``_sips._tcp``, ``_sip._tcp``, ``_sip._udp`` that exists, else UDP (TLS for ``sips:``);
* an explicit port means A/AAAA only (§4.2); otherwise SRV records of the transport give
  the targets (§4.2, ordered by RFC 2782: priority, then weighted random), and without
  SRV the host's A/AAAA records on the default port.

The caller fails over to the next target on a timeout, a 503 or a transport error
(§4.3). Any DNS failure simply yields fewer targets; none at all is
:class:`NoTargets`.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import socket
from collections.abc import Sequence
from typing import Any

from twisted.names import dns
from twisted.names.error import DNSNameError, DomainError, ResolverError

from plugins.sip.transport import Peer
from plugins.sip.uri import SipUri

__all__ = ["NoTargets", "ServerLocator", "default_port", "order_srv"]

log = logging.getLogger(__name__)

#: RFC 3263 §4.1: NAPTR services per transport.
_NAPTR_SERVICES = {"SIP+D2U": "udp", "SIP+D2T": "tcp", "SIPS+D2T": "tls"}
_SRV_PREFIX = {"udp": "_sip._udp.", "tcp": "_sip._tcp.", "tls": "_sips._tcp."}
#: How many targets a request may fail over between.
MAX_TARGETS = 8


class NoTargets(Exception):
    """No server could be found for the URI (the caller answers as for a 502/transport error)."""


def default_port(transport: str) -> int:
    """RFC 3261 §19.1.2: 5060 for UDP and TCP, 5061 for TLS."""
    return 5061 if transport == "tls" else 5060


def order_srv(records: Sequence[Any], rng: random.Random) -> list[Any]:
    """RFC 2782 ordering: ascending priority; within one, weighted random selection."""
    out: list[Any] = []
    for priority in sorted({r.priority for r in records}):
        group = [r for r in records if r.priority == priority]
        # "Arrange all SRV RRs ... in any order, except that all those with weight 0 are
        # placed at the beginning", then pick by running sums.
        group.sort(key=lambda r: r.weight != 0)
        while group:
            total = sum(r.weight for r in group)
            pick = rng.randint(0, total) if total else 0
            running = 0
            for index, record in enumerate(group):
                running += record.weight
                if running >= pick:
                    out.append(group.pop(index))
                    break
    return out


def _text(value: bytes | str) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


def _ip(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


class ServerLocator:
    """RFC 3263 client procedures over an ``IResolver`` (``twisted.names.client``'s by default).

    :param resolver: ``None`` creates ``twisted.names.client.createResolver()`` on first
        use; tests inject a fake with the same ``lookup*`` methods.
    """

    def __init__(self, resolver: Any = None, *, rng: random.Random | None = None) -> None:
        self._resolver = resolver
        self.rng = rng or random.Random()

    @property
    def resolver(self) -> Any:
        if self._resolver is None:
            from twisted.names import client

            self._resolver = client.createResolver()
        return self._resolver

    async def locate(self, uri: SipUri, transport: str | None = None) -> list[Peer]:
        """The targets for ``uri``, best first; ``transport`` is the caller's preference
        (``udp``/``tcp``/``tls``), overridden by the URI's ``transport`` parameter."""
        host = uri.param("maddr") or uri.host
        chosen = uri.transport or transport
        if chosen not in (None, "udp", "tcp", "tls"):
            raise NoTargets(f"unsupported transport {chosen!r}")
        if uri.secure:
            chosen = "tls"  # RFC 3261 §26.2.2: sips needs TLS on every hop
        tls_name = uri.host
        literal = _ip(host)
        if literal is not None:
            kind = chosen or "udp"
            return [Peer(kind, literal, uri.port or default_port(kind), tls_name if kind == "tls" else "")]
        if uri.port is not None:
            kind = chosen or ("tls" if uri.secure else "udp")
            return await self._addresses(host, uri.port, kind, tls_name)
        candidates: list[tuple[str, str]] = []  # (transport, SRV name)
        if chosen is None:
            candidates = await self._naptr(host, secure=uri.secure)
            if not candidates:
                kinds = ("tls",) if uri.secure else ("tls", "tcp", "udp")
                candidates = [(kind, _SRV_PREFIX[kind] + host) for kind in kinds]
        else:
            candidates = [(chosen, _SRV_PREFIX[chosen] + host)]
        for kind, name in candidates:
            peers = await self._srv(name, kind, tls_name)
            if peers:
                return peers[:MAX_TARGETS]
        kind = chosen or ("tls" if uri.secure else "udp")
        return await self._addresses(host, default_port(kind), kind, tls_name)

    async def _naptr(self, host: str, *, secure: bool) -> list[tuple[str, str]]:
        records = await self._lookup("lookupNamingAuthorityPointer", host, dns.NAPTR)
        usable = []
        for record in records:
            service, flags = _text(record.service).upper(), _text(record.flags).lower()
            kind = _NAPTR_SERVICES.get(service)
            if kind is None or flags != "s" or (secure and kind != "tls"):
                continue
            usable.append((record.order, record.preference, kind, str(record.replacement)))
        usable.sort(key=lambda item: (item[0], item[1]))
        return [(kind, name) for _, _, kind, name in usable]

    async def _srv(self, name: str, kind: str, tls_name: str) -> list[Peer]:
        records = await self._lookup("lookupService", name, dns.SRV)
        peers: list[Peer] = []
        for record in order_srv([r for r in records if str(r.target) not in ("", ".")], self.rng):
            peers += await self._addresses(str(record.target), record.port, kind, tls_name)
            if len(peers) >= MAX_TARGETS:
                break
        return peers

    async def _addresses(self, host: str, port: int, kind: str, tls_name: str) -> list[Peer]:
        found: list[str] = []
        for record in await self._lookup("lookupAddress", host, dns.A):
            found.append(record.dottedQuad())
        for record in await self._lookup("lookupIPV6Address", host, dns.AAAA):
            found.append(socket.inet_ntop(socket.AF_INET6, record.address))
        name = tls_name if kind == "tls" else ""
        return [Peer(kind, address, port, name) for address in found[:MAX_TARGETS]]

    async def _lookup(self, method: str, name: str, record_type: int) -> list[Any]:
        try:
            answers, _authority, _additional = await getattr(self.resolver, method)(name)
        except (DNSNameError, DomainError, ResolverError, TimeoutError) as exc:
            log.debug("%s %s: %s", method, name, exc)
            return []
        except Exception as exc:  # a resolver timeout is twisted.internet.defer.TimeoutError, among others
            log.info("%s %s failed: %s", method, name, exc)
            return []
        return [answer.payload for answer in answers if answer.type == record_type]
