"""The router and core handlers over a StringTransport (RFC 6120 §8, XEP-0030/0092/0199)."""

from __future__ import annotations

import pytest

from tests.unit.harness import build_gateway, matches

USER = "alice@example.org/phone"


@pytest.fixture
def server():
    server, _ = build_gateway()
    server.service.start()
    server.handshake()
    server.sent()
    yield server
    server.service.connection.stop()


def test_disco_info_answers_with_the_gateway_identity(server):
    """disco#info on the gateway JID carries the gateway/<type> identity and our features."""
    server.feed(f"<iq type='get' id='d1' from='{USER}' to='gw.example.org'>"
                "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    [reply] = server.sent()
    assert matches(reply, "/iq[@type='result'][@id='d1'][@to='alice@example.org/phone']")
    assert matches(reply, "/iq/query/identity[@category='gateway'][@type='echo']")
    for feature in ("jabber:iq:register", "jabber:iq:gateway", "jid\\20escaping", "urn:xmpp:ping",
                    "jabber:iq:version", "http://jabber.org/protocol/commands"):
        assert matches(reply, f"/iq/query/feature[@var='{feature}']"), feature


def test_unknown_iq_gets_service_unavailable(server):
    """An iq no handler takes is answered with service-unavailable (RFC 6120 §8.3.3.19)."""
    server.feed(f"<iq type='get' id='u1' from='{USER}' to='gw.example.org'>"
                "<query xmlns='urn:example:unknown'/></iq>")
    [reply] = server.sent()
    assert matches(reply, "/iq[@type='error'][@id='u1']/error[@type='cancel']/service-unavailable")


def test_error_stanzas_are_never_answered(server):
    """Nothing answers an error or a result, even when no handler takes it (RFC 6120 §8.3.1)."""
    server.feed(f"<iq type='error' id='e1' from='{USER}' to='gw.example.org'>"
                "<query xmlns='urn:example:unknown'/></iq>")
    server.feed(f"<iq type='result' id='e2' from='{USER}' to='gw.example.org'/>")
    server.feed(f"<message type='error' id='e3' from='{USER}' to='nobody@gw.example.org'/>")
    assert server.sent() == []


def test_iq_without_payload_is_a_bad_request(server):
    """An iq get needs exactly one child (RFC 6120 §8.2.3)."""
    server.feed(f"<iq type='get' id='b1' from='{USER}' to='gw.example.org'/>")
    [reply] = server.sent()
    assert matches(reply, "/iq[@type='error'][@id='b1']/error/bad-request")


def test_malformed_from_gets_jid_malformed(server):
    """An address that does not parse is refused with jid-malformed."""
    server.feed("<iq type='get' id='j1' from='a@b@c' to='gw.example.org'>"
                "<ping xmlns='urn:xmpp:ping'/></iq>")
    [reply] = server.sent()
    assert matches(reply, "/iq[@type='error']/error/jid-malformed")


def test_ping_and_version(server):
    """XEP-0199 ping gets an empty result; XEP-0092 names the software, not the OS."""
    server.feed(f"<iq type='get' id='p1' from='{USER}' to='gw.example.org'><ping xmlns='urn:xmpp:ping'/></iq>")
    server.feed(f"<iq type='get' id='v1' from='{USER}' to='gw.example.org'>"
                "<query xmlns='jabber:iq:version'/></iq>")
    ping, version = server.sent()
    assert matches(ping, "/iq[@type='result'][@id='p1']") and not ping.children
    assert matches(version, "/iq[@type='result']/query/name")
    assert not matches(version, "/iq/query/os")


def test_handler_exception_becomes_internal_server_error_without_text(server, caplog):
    """A failing handler is logged and answered with internal-server-error, never its message."""
    def broken(request):
        raise RuntimeError("secret detail")

    from gateway.router import IqRoute

    class Broken:
        def iq_routes(self):
            return (IqRoute("get", "urn:example:broken", "q", broken),)

    server.service.router.add_handler(Broken())
    server.feed(f"<iq type='get' id='x1' from='{USER}' to='gw.example.org'><q xmlns='urn:example:broken'/></iq>")
    [reply] = server.sent()
    assert matches(reply, "/iq[@type='error']/error/internal-server-error")
    assert "secret detail" not in reply.toXml()
    assert "secret detail" in caplog.text


def test_not_implemented_becomes_feature_not_implemented(server):
    """NotImplementedError in a handler maps to feature-not-implemented."""
    from gateway.router import IqRoute

    def todo(request):
        raise NotImplementedError

    class Todo:
        def iq_routes(self):
            return (IqRoute("set", "urn:example:todo", "q", todo),)

    server.service.router.add_handler(Todo())
    server.feed(f"<iq type='set' id='n1' from='{USER}' to='gw.example.org'><q xmlns='urn:example:todo'/></iq>")
    [reply] = server.sent()
    assert matches(reply, "/iq[@type='error']/error/feature-not-implemented")


def test_iq_gateway_translates_an_address(server):
    """jabber:iq:gateway set returns an escaped JID that round-trips (XEP-0100 §6.3)."""
    server.feed(f"<iq type='set' id='g1' from='{USER}' to='gw.example.org'>"
                "<query xmlns='jabber:iq:gateway'><prompt>Bob Smith@home</prompt></query></iq>")
    [reply] = server.sent()
    assert matches(reply, "/iq[@type='result']/query/jid")
    jid = str(next(reply.elements()).firstChildElement())
    assert jid == "bob\\20smith\\40home@gw.example.org"
