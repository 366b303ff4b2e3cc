"""XEP-0184 receipts answered by the core for plugins that confirm delivery (``delivery_receipts``)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from gateway.store.models import ArchivedMessage
from tests.fakenet import FakeSession
from tests.unit.harness import build_gateway, matches

GW = "gw.example.org"
ALICE = "alice@example.org"
OPTIONS = {"accounts": {"alice": "pw1"}, "offline": ["dave"]}
REQUEST = "<request xmlns='urn:xmpp:receipts'/>"


@pytest.fixture
def server():
    server, _ = build_gateway("tests.fakenet:FakeNetPlugin", options=OPTIONS)
    server.service.start()
    server.handshake()
    server.feed(f"<iq type='set' id='r1' from='{ALICE}/phone' to='{GW}'><query xmlns='jabber:iq:register'>"
                "<username>alice</username><password>pw1</password></query></iq>")
    server.feed(f"<presence from='{ALICE}/phone' to='{GW}'/>")
    server.clock.advance(0)
    server.sent()
    yield server
    server.service.connection.stop()


def chat(server, to: str, id_: str, extra: str = "") -> list:
    server.feed(f"<message type='chat' id='{id_}' from='{ALICE}/phone' to='{to}@{GW}'>"
                f"<body>hi</body>{extra}</message>")
    return server.sent()


def test_receipt_after_confirmed_delivery(server):
    """XEP-0184 §5.1: the contact answers a requested receipt with the message's id, to the sending resource."""
    server.service.plugin.delivery_receipts = True
    [receipt] = chat(server, "carol", "m1", REQUEST)
    assert matches(receipt, f"/message[@from='carol@{GW}'][@to='{ALICE}/phone']"
                            "/received[@xmlns='urn:xmpp:receipts'][@id='m1']")


def test_no_receipt_unless_requested(server):
    """XEP-0184 §5.1: no request, no receipt."""
    server.service.plugin.delivery_receipts = True
    assert chat(server, "carol", "m2") == []


def test_a_refused_message_gets_its_error_and_no_receipt(server):
    """A legacy refusal is an error with the original id, never also a receipt."""
    server.service.plugin.delivery_receipts = True
    [error] = chat(server, "dave", "m3", REQUEST)
    assert matches(error, "/message[@type='error'][@id='m3']/error/service-unavailable")


def test_plugins_that_do_not_confirm_delivery_send_no_receipts(server):
    """Without ``delivery_receipts`` a return from send_message proves nothing: no receipt, no feature."""
    assert chat(server, "carol", "m4", REQUEST) == []
    server.feed(f"<iq type='get' id='d1' from='{ALICE}/phone' to='{GW}'>"
                "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    [info] = server.sent()
    assert not matches(info, "/iq/query/feature[@var='urn:xmpp:receipts']")


def test_receipts_are_advertised_in_disco(server):
    """XEP-0184 §6: the gateway lists urn:xmpp:receipts when its plugin confirms delivery."""
    server.service.plugin.delivery_receipts = True
    server.feed(f"<iq type='get' id='d2' from='{ALICE}/phone' to='{GW}'>"
                "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    [info] = server.sent()
    assert matches(info, "/iq[@type='result']/query/feature[@var='urn:xmpp:receipts']")


def test_no_receipt_and_no_archive_line_for_an_empty_body():
    """An empty <body/> is sent nowhere (the SIP plugin skips it): no receipt, no "out" archive line."""
    server, database = build_gateway("tests.fakenet:FakeNetPlugin", options=OPTIONS, extra={"archive": {}})
    server.service.start()
    server.handshake()
    server.feed(f"<iq type='set' id='r1' from='{ALICE}/phone' to='{GW}'><query xmlns='jabber:iq:register'>"
                "<username>alice</username><password>pw1</password></query></iq>")
    server.feed(f"<presence from='{ALICE}/phone' to='{GW}'/>")
    server.clock.advance(0)
    server.sent()
    server.service.plugin.delivery_receipts = True
    server.feed(f"<message type='chat' id='e1' from='{ALICE}/phone' to='carol@{GW}'><body/>{REQUEST}</message>")
    assert server.sent() == []
    [receipt] = chat(server, "carol", "e2", REQUEST)  # a real one still is answered and archived
    assert matches(receipt, "/message/received[@id='e2']")
    server.clock.advance(1)
    with database.sessionmaker() as session:
        bodies = [r.body for r in session.execute(select(ArchivedMessage)).scalars()]
    assert bodies == ["hi"]
    server.service.connection.stop()


def test_no_receipt_when_the_plugin_returns_no_legacy_id(server, monkeypatch):
    """An empty legacy id: the legacy side accepted the message without confirming delivery (SIP 202)."""
    server.service.plugin.delivery_receipts = True

    async def accepted(self, message):
        return ""

    monkeypatch.setattr(FakeSession, "send_message", accepted)
    assert chat(server, "carol", "a1", REQUEST) == []
