"""The synchronous fast paths of the router (issue 7): a handler that answers at once costs no
Deferred, one that waits keeps every guarantee of the asynchronous path; ``eagerly`` runs a
coroutine to its end when it never suspends and hands the rest to Twisted when it does."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish

from gateway.jids import parse_jid
from gateway.router import Router, Stanza, eagerly
from gateway.stanzas import _ILLEGAL_XML, xml_safe
from gateway.xep.muc import ROOM_ADDRESS_CACHE_SIZE


def _message(to: str = "room@gw.example.org") -> domish.Element:
    element = domish.Element((None, "message"))
    element["from"], element["to"], element["id"] = "alice@example.org/phone", to, "m1"
    return element


class Taker:
    def __init__(self, answer) -> None:
        self.answer = answer
        self.seen: list[Stanza] = []

    def on_message(self, stanza: Stanza):
        self.seen.append(stanza)
        return self.answer(stanza) if callable(self.answer) else self.answer


def _router(*handlers: object) -> tuple[Router, list[domish.Element]]:
    sent: list[domish.Element] = []
    router = Router(sent.append, Clock())
    for handler in handlers:
        router.add_handler(handler)
    return router, sent


def test_synchronous_taker_needs_no_deferred():
    """A handler that takes the stanza at once: no Deferred, later handlers never see it."""
    first, second = Taker(True), Taker(True)
    router, sent = _router(first, second)
    assert router.dispatch(_message()) is None
    assert len(first.seen) == 1 and second.seen == [] and sent == []


def test_nobody_takes_a_message_service_unavailable():
    """Handlers that decline (synchronously) leave the RFC 6121 §8.5.2 error."""
    router, sent = _router(Taker(False), Taker(False))
    assert router.dispatch(_message()) is None
    [error] = sent
    assert error["type"] == "error" and error.error.firstChildElement().name == "service-unavailable"


def test_synchronous_stanza_error_and_crash_are_answered():
    """A StanzaError raised at once becomes that error; any other exception an
    internal-server-error without its text, as on the asynchronous path."""
    def refuse(_):
        raise StanzaError("not-acceptable", text="no")

    def crash(_):
        raise RuntimeError("secret detail")

    router, sent = _router(Taker(refuse))
    router.dispatch(_message())
    assert sent[0].error.firstChildElement().name == "not-acceptable"
    router, sent = _router(Taker(crash))
    router.dispatch(_message())
    assert sent[0].error.firstChildElement().name == "internal-server-error"
    assert "secret detail" not in sent[0].toXml()


def test_waiting_handler_then_the_rest_of_the_walk():
    """A handler that returns a Deferred: the router waits for it, and when it declines, the
    next handlers are asked in order; a failure after the wait is answered too."""
    waiting: Deferred[bool] = Deferred()
    first, second = Taker(waiting), Taker(False)
    router, sent = _router(first, second)
    done = router.dispatch(_message())
    assert isinstance(done, Deferred) and second.seen == [] and sent == []
    waiting.callback(False)
    assert len(second.seen) == 1
    assert sent[0].error.firstChildElement().name == "service-unavailable"

    failing: Deferred[bool] = Deferred()
    router, sent = _router(Taker(failing))
    router.dispatch(_message())
    failing.errback(StanzaError("forbidden"))
    assert sent[0].error.firstChildElement().name == "forbidden"


def test_eagerly_returns_the_value_of_a_coroutine_that_never_waits():
    async def at_once() -> int:
        return 42

    assert eagerly(at_once()) == 42


def test_eagerly_raises_at_once_what_the_coroutine_raises_before_waiting():
    async def broken() -> int:
        raise ValueError("early")

    with pytest.raises(ValueError, match="early"):
        eagerly(broken())


def test_eagerly_continues_a_coroutine_that_waits():
    """Suspended on a Deferred: the result comes through a Deferred, values and exceptions
    of every later await reach the coroutine as they would under ensureDeferred."""
    first: Deferred[int] = Deferred()
    second: Deferred[int] = Deferred()
    seen: list[object] = []

    async def waits() -> int:
        seen.append(await first)
        try:
            await second
        except KeyError as exc:
            seen.append(exc.args[0])
        return 7

    result = eagerly(waits())
    assert isinstance(result, Deferred) and not result.called
    first.callback(1)
    second.errback(KeyError("late"))
    assert seen == [1, "late"]
    outcome: list[int] = []
    result.addCallback(outcome.append)
    assert outcome == [7]


def test_eagerly_fails_the_deferred_when_the_coroutine_fails_after_waiting():
    gate: Deferred[None] = Deferred()

    async def fails() -> None:
        await gate
        raise RuntimeError("after")

    result = eagerly(fails())
    gate.callback(None)
    failures: list[object] = []
    result.addErrback(failures.append)
    assert failures and failures[0].check(RuntimeError)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.characters(), max_size=30) | st.sampled_from(["\ud800", "a\ufffeb", "\uffff", "x\x00",
                                                                         "\x1f", "tab\there", "é日本🎉"]))
def test_xml_safe_fast_path_drops_exactly_what_the_pattern_drops(text):
    """Printable text skips the regular expression: it never holds a character XML refuses."""
    assert xml_safe(text) == _ILLEGAL_XML.sub("", text)


def test_room_address_is_cached_per_localpart():
    """The room JID of every groupchat line is resolved once (a bounded LRU), with the same
    answers as uncached: rooms, non-rooms, other hosts."""
    from tests.unit.harness import build_gateway

    server, _ = build_gateway("tests.fakenet:FakeNetPlugin", options={"allows_unregistered": True})
    muc = server.service.muc
    assert muc.room_address(parse_jid("#chan@gw.example.org")) == "#chan"
    assert muc.room_address(parse_jid("#chan@gw.example.org/nick")) == "#chan"
    assert muc.room_address(parse_jid("bob@gw.example.org")) is None
    assert muc.room_address(parse_jid("#chan@elsewhere.example.org")) is None
    assert muc._room_of.cache_info().hits == 1 and muc._room_of.cache_info().maxsize == ROOM_ADDRESS_CACHE_SIZE


def test_message_parts_match_the_element_lookups_they_replace():
    """One pass over the children finds what child_text and elements() found: the first body,
    the first subject (any namespace), the first origin-id's id, a mediated invitation."""
    from gateway.stanzas import child_text
    from gateway.xep.muc import NS_MUC_USER, NS_STANZA_ID, _message_parts

    message = _message()
    message.addContent("stray text")
    message.addElement(("urn:example", "body"), content="first")
    message.addElement("body", content="second")
    message.addElement((NS_STANZA_ID, "origin-id"))
    message.addElement((NS_STANZA_ID, "origin-id"))["id"] = "later"
    message.addElement(("urn:example", "x")).addElement("invite")
    invites, subject, body, origin_id = _message_parts(message)
    assert (invites, subject, body, origin_id) == (False, None, "first", None)
    assert body == child_text(message, "body")
    message.addElement((NS_MUC_USER, "x")).addElement((NS_MUC_USER, "invite"))
    message.addElement("subject", content="")
    assert _message_parts(message)[0:2] == (True, "")


def test_room_message_validation_still_refuses_what_it_refused():
    """RoomMessage checks its common case in one expression; the errors are unchanged."""
    from gateway.plugin import RoomMessage

    assert RoomMessage(user="u@h", room="#r", nick="", body="hi").nick == ""
    with pytest.raises(ValueError, match=r"RoomMessage\.user must not be empty"):
        RoomMessage(user="", room="#r", nick="n", body="hi")
    with pytest.raises(ValueError, match=r"RoomMessage\.room must not be empty"):
        RoomMessage(user="u@h", room="", nick="n", body="hi")
    with pytest.raises(TypeError, match=r"RoomMessage\.nick must be a str"):
        RoomMessage(user="u@h", room="#r", nick=None, body="hi")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"RoomMessage\.room must be a str"):
        RoomMessage(user="u@h", room=b"#r", nick="n", body="hi")  # type: ignore[arg-type]


def test_one_observer_for_every_element_ignores_what_is_not_a_stanza():
    """The router observes every top-level element; others than iq, message and presence get
    no answer and leave the stream up, stanzas are still answered."""
    from tests.unit.harness import build_gateway

    server, _ = build_gateway()
    server.service.start()
    server.handshake()
    server.sent()
    server.feed("<unknown xmlns='urn:example' from='alice@example.org/phone' to='gw.example.org'/>")
    assert server.sent() == [] and not server.endpoint.transport.disconnecting
    server.feed("<iq type='get' id='p1' from='alice@example.org/phone' to='gw.example.org'>"
                "<ping xmlns='urn:xmpp:ping'/></iq>")
    [reply] = server.sent()
    assert reply["type"] == "result" and reply["id"] == "p1"
    server.service.connection.stop()


def test_groupchat_lines_written_as_text_and_queued_as_elements_when_the_stream_is_down():
    """A room line goes out as text while the stream is up; while it is down the same line is
    built as an element and waits in the outbound queue like any stanza."""
    from gateway.plugin import RoomMessage
    from gateway.xep.muc import RoomState
    from tests.unit.harness import build_gateway

    server, _ = build_gateway("tests.fakenet:FakeNetPlugin", options={"allows_unregistered": True})
    server.service.start()
    server.handshake()
    server.sent()
    sessions = server.service.sessions
    state = sessions.state("alice@example.org")
    state.rooms["#chan"] = RoomState(address="#chan", jid="#chan@gw.example.org", nick="alice", joined=True,
                                     resources={"alice@example.org/phone"})
    state.session = object()  # type: ignore[assignment]
    sessions.emit(RoomMessage(user="alice@example.org", room="#chan", nick="bob", body="a <b> & 'c'"))
    [line] = server.sent()
    assert line["from"] == "#chan@gw.example.org/bob" and str(line.body) == "a <b> & 'c'"
    server.drop_connection()
    sessions.emit(RoomMessage(user="alice@example.org", room="#chan", nick="bob", body="while down"))
    [queued] = server.service.connection.queue.drain()
    assert queued.name == "message" and str(queued.body) == "while down"
    server.service.connection.stop()
