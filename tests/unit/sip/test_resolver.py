"""RFC 3263 server location over a fake ``IResolver`` (plugins/sip/resolver.py)."""

from __future__ import annotations

import random

from twisted.internet.defer import ensureDeferred, fail, succeed
from twisted.names import dns
from twisted.names.error import DNSNameError

from plugins.sip.resolver import NoTargets, ServerLocator, order_srv
from plugins.sip.transport import Peer
from plugins.sip.uri import parse_uri


class FakeResolver:
    """Answers from a table of (method, name) -> records; anything else is NXDOMAIN."""

    def __init__(self, records: dict[tuple[str, str], list]) -> None:
        self.records = records
        self.asked: list[tuple[str, str]] = []

    def _answer(self, method: str, name: str):
        self.asked.append((method, name))
        payloads = self.records.get((method, name))
        if payloads is None:
            return fail(DNSNameError(name))
        answers = [dns.RRHeader(name=name, type=p.TYPE, payload=p) for p in payloads]
        return succeed((answers, [], []))

    def lookupNamingAuthorityPointer(self, name):
        return self._answer("NAPTR", name)

    def lookupService(self, name):
        return self._answer("SRV", name)

    def lookupAddress(self, name):
        return self._answer("A", name)

    def lookupIPV6Address(self, name):
        return self._answer("AAAA", name)


def locate(records, uri: str, transport: str | None = None) -> tuple[list[Peer], FakeResolver]:
    resolver = FakeResolver(records)
    result = ensureDeferred(ServerLocator(resolver, rng=random.Random(1)).locate(parse_uri(uri), transport))
    return result.result, resolver


def naptr(order: int, pref: int, service: bytes, replacement: bytes) -> dns.Record_NAPTR:
    return dns.Record_NAPTR(order, pref, b"s", service, b"", replacement)


def test_ip_literals_need_no_dns():
    """RFC 3263 §4.2: a numeric IP is used as is, on the default port when none is given."""
    peers, resolver = locate({}, "sip:127.0.0.1")
    assert peers == [Peer("udp", "127.0.0.1", 5060)] and resolver.asked == []
    peers, _ = locate({}, "sip:[::1]:5070;transport=tcp")
    assert peers == [Peer("tcp", "::1", 5070)]
    peers, _ = locate({}, "sips:192.0.2.1")
    assert peers == [Peer("tls", "192.0.2.1", 5061, "192.0.2.1")]


def test_maddr_replaces_the_host():
    """RFC 3263 §4.1: maddr is the host to contact."""
    peers, _ = locate({}, "sip:example.com;maddr=192.0.2.7", "tcp")
    assert peers == [Peer("tcp", "192.0.2.7", 5060)]


def test_explicit_port_means_address_records_only():
    """RFC 3263 §4.2: with a port, no SRV lookup; A and AAAA records."""
    records = {("A", "proxy.example.com"): [dns.Record_A("192.0.2.1")],
               ("AAAA", "proxy.example.com"): [dns.Record_AAAA("2001:db8::1")]}
    peers, resolver = locate(records, "sip:proxy.example.com:5080", "tcp")
    assert peers == [Peer("tcp", "192.0.2.1", 5080), Peer("tcp", "2001:db8::1", 5080)]
    assert all(method in ("A", "AAAA") for method, _ in resolver.asked)


def test_naptr_then_srv_in_order_and_preference():
    """RFC 3263 §4.1: NAPTR order/preference picks the transport, then its SRV records."""
    records = {
        ("NAPTR", "example.com"): [naptr(20, 10, b"SIP+D2U", b"_sip._udp.example.com"),
                                   naptr(10, 10, b"SIP+D2T", b"_sip._tcp.example.com"),
                                   naptr(10, 5, b"X-UNKNOWN", b"nothing.example.com")],
        ("SRV", "_sip._tcp.example.com"): [dns.Record_SRV(10, 0, 5070, "tcp.example.com")],
        ("A", "tcp.example.com"): [dns.Record_A("192.0.2.20")],
    }
    peers, _ = locate(records, "sip:example.com")
    assert peers == [Peer("tcp", "192.0.2.20", 5070)]


def test_no_naptr_tries_srv_then_address_records():
    """RFC 3263 §4.1-§4.2: without NAPTR, the SRV of each transport; without SRV, A on 5060."""
    records = {("SRV", "_sip._udp.example.com"): [dns.Record_SRV(0, 0, 5090, "udp.example.com")],
               ("A", "udp.example.com"): [dns.Record_A("192.0.2.30")]}
    peers, resolver = locate(records, "sip:example.com")
    assert peers == [Peer("udp", "192.0.2.30", 5090)]
    assert ("SRV", "_sips._tcp.example.com") in resolver.asked
    peers, _ = locate({("A", "plain.example.com"): [dns.Record_A("192.0.2.40")]}, "sip:plain.example.com")
    assert peers == [Peer("udp", "192.0.2.40", 5060)]


def test_chosen_transport_looks_up_its_srv_only():
    """A user's transport choice skips NAPTR: _sips._tcp for TLS, checked against the domain."""
    records = {("SRV", "_sips._tcp.example.com"): [dns.Record_SRV(0, 0, 5061, "tls.example.com")],
               ("A", "tls.example.com"): [dns.Record_A("192.0.2.50")]}
    peers, resolver = locate(records, "sip:example.com", "tls")
    assert peers == [Peer("tls", "192.0.2.50", 5061, "example.com")]
    assert not any(method == "NAPTR" for method, _ in resolver.asked)


def test_nothing_found_is_an_empty_list():
    """No record at all: no target (the caller reports remote-server-not-found)."""
    peers, _ = locate({}, "sip:nowhere.example.com")
    assert peers == []


def test_srv_order_is_priority_then_weighted():
    """RFC 2782: lower priority first; within a priority every record appears once."""
    records = [dns.Record_SRV(20, 0, 1, "c"), dns.Record_SRV(10, 60, 2, "a"), dns.Record_SRV(10, 40, 3, "b")]
    for seed in range(20):
        ordered = order_srv(records, random.Random(seed))
        assert [r.priority for r in ordered] == [10, 10, 20]
        assert {r.port for r in ordered[:2]} == {2, 3}


def test_unsupported_transport_parameter():
    """Only UDP, TCP and TLS are spoken: another transport finds no target."""
    result = ensureDeferred(ServerLocator(FakeResolver({})).locate(parse_uri("sip:example.com;transport=sctp")))
    failure = result.result
    result.addErrback(lambda _: None)
    assert failure.check(NoTargets)
