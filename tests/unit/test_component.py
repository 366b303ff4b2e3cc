"""The XEP-0114 connection: handshake, backoff, fatal errors, queueing, keepalive."""

from __future__ import annotations

from twisted.words.xish import domish

from gateway.component import OutboundQueue
from gateway.stanzas import stanza
from tests.unit.harness import build_gateway


def _message(body: str) -> domish.Element:
    message = stanza("message", sender="bob@gw.example.org", recipient="alice@example.org", type_="chat")
    message.addElement("body", content=body)
    return message


def test_wrong_secret_is_fatal_and_stops_retrying():
    """not-authorized ends the service with a clear error instead of a retry loop."""
    server, _ = build_gateway()
    server.service.start()
    server.handshake(accept=False)
    fatal = server.service.fatal
    assert fatal.called
    errors = []
    fatal.addCallback(errors.append)
    assert errors[0].condition == "not-authorized"
    assert "secret" in str(errors[0])
    attempts = server.endpoint.attempts
    server.clock.advance(3600)
    assert server.endpoint.attempts == attempts


def test_reconnects_with_capped_backoff_and_flushes_the_queue():
    """After a lost stream, retries back off up to the cap; queued stanzas follow the handshake."""
    server, _ = build_gateway(extra={"max_backoff": 5})
    service = server.service
    service.start()
    server.handshake()
    server.sent()
    server.endpoint.refuse = True
    server.drop_connection()
    service.connection.send(_message("while down"))
    for _ in range(20):
        server.clock.advance(1)
    attempts = server.endpoint.attempts
    assert attempts > 4
    # Capped: over 60 s with a 5 s cap (plus <1 s jitter), at least 10 more attempts.
    for _ in range(60):
        server.clock.advance(1)
    assert server.endpoint.attempts - attempts >= 10
    server.endpoint.refuse = False
    for _ in range(7):
        server.clock.advance(1)
    server.handshake()
    sent = server.sent()
    assert any(el.name == "message" and str(el.body) == "while down" for el in sent)
    service.connection.stop()


def test_queue_drops_superseded_presence_and_chat_states():
    """Only the latest presence per pair is kept; chat states are never queued; the queue is bounded."""
    queue = OutboundQueue(limit=3)
    first = stanza("presence", sender="bob@gw.example.org", recipient="alice@example.org")
    later = stanza("presence", sender="bob@gw.example.org", recipient="alice@example.org",
                   type_="unavailable")
    typing = stanza("message", sender="bob@gw.example.org", recipient="alice@example.org", type_="chat")
    typing.addElement(("http://jabber.org/protocol/chatstates", "composing"))
    queue.put(first)
    queue.put(later)
    queue.put(typing)
    assert queue.drain() == [later]
    for index in range(5):
        queue.put(_message(str(index)))
    assert [str(m.body) for m in queue.drain()] == ["2", "3", "4"]


def test_keepalive_sends_whitespace_when_idle_and_stops_on_disconnect():
    """An idle stream gets a single space every keepalive interval; no timer survives the stream."""
    server, _ = build_gateway(extra={"keepalive": 30})
    server.service.start()
    server.handshake()
    server.sent()
    server.endpoint.transport.clear()
    server.clock.advance(30)
    assert server.endpoint.transport.value() == b" "
    server.endpoint.refuse = True
    server.drop_connection()
    server.service.connection.stop()
    assert not [c for c in server.clock.getDelayedCalls() if c.active()]


def test_stanza_size_limit_is_applied():
    """The parser's per-stanza cap is set from the configuration."""
    server, _ = build_gateway(extra={"max_stanza_size": 4096})
    server.service.start()
    assert server.endpoint.protocol.stream.maxStanzaSize == 4096
    server.service.connection.stop()
