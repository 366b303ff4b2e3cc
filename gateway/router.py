"""Stanza router: dispatch by kind, type, payload namespace and target JID (RFC 6120 §8).

Guarantees (STYLE.md G2):

* every iq ``get``/``set`` gets exactly one answer: the handler's result, the
  :class:`StanzaError` it raised, ``feature-not-implemented`` for
  :class:`NotImplementedError`, ``internal-server-error`` (without the exception
  text) for anything else, and ``service-unavailable`` when no handler takes it;
* nothing ever answers a stanza of type ``error`` (or an iq ``result``);
* a stanza whose addresses do not parse gets ``jid-malformed`` and goes no further.

Handlers declare their routes (:class:`IqRoute`) and *return* their answer; they
never send an iq result themselves.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Generator
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.words.protocols.jabber.error import StanzaError, exceptionFromStanza
from twisted.words.protocols.jabber.jid import JID, InvalidFormat
from twisted.words.protocols.jabber.xmlstream import toResponse
from twisted.words.xish import domish

from gateway.jids import parse_jid
from gateway.stanzas import error_reply, redacted_copy, redacted_xml

log = logging.getLogger(__name__)

T = TypeVar("T")

IqType = Literal["get", "set"]


@dataclass(frozen=True, slots=True)
class Stanza:
    """An incoming stanza with its addresses parsed once."""

    element: domish.Element
    sender: JID
    recipient: JID

    @property
    def type(self) -> str | None:
        return self.element.getAttribute("type")

    @property
    def id(self) -> str | None:
        return self.element.getAttribute("id")


@dataclass(frozen=True, slots=True)
class IqRequest(Stanza):
    payload: domish.Element


@dataclass(frozen=True, slots=True)
class IqAnswer:
    """A result payload plus what to do right after the result is sent
    (XEP-0100 §4.3.1 orders presences after the unregistration result)."""

    payload: domish.Element | None
    after: Callable[[], object]


IqResult = domish.Element | IqAnswer | None
IqCallable = Callable[[IqRequest], IqResult | Awaitable[IqResult]]
StanzaCallable = Callable[[Stanza], bool | Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class IqRoute:
    """An iq request this handler answers: (type, payload namespace, payload name)."""

    type: IqType
    namespace: str
    name: str
    handler: IqCallable


Sender = Callable[[domish.Element], None]


class Router:
    """Routes the stanzas of one component stream to its handlers."""

    def __init__(self, send: Sender, clock: IReactorTime, *,
                 secret_fields: frozenset[str] = frozenset(), request_timeout: float = 30.0) -> None:
        self._send = send
        self._clock = clock
        self._request_timeout = request_timeout
        self._pending: dict[str, tuple[str, Deferred[domish.Element]]] = {}
        self._secret_fields = secret_fields
        self._iq_routes: dict[tuple[str, str, str], IqCallable] = {}
        self._message_handlers: list[StanzaCallable] = []
        self._presence_handlers: list[StanzaCallable] = []
        self.handlers: list[object] = []

    # -- registration -------------------------------------------------------

    def add_handler(self, handler: object) -> None:
        """Register a handler: its ``iq_routes()``, and ``on_message``/``on_presence`` if it has
        them (each returns whether it took the stanza); ``disco_*`` methods serve XEP-0030."""
        self.handlers.append(handler)
        for route in getattr(handler, "iq_routes", lambda: ())():
            key = (route.type, route.namespace, route.name)
            if key in self._iq_routes:
                raise ValueError(f"two handlers for iq {key}")
            self._iq_routes[key] = route.handler
        if (on_message := getattr(handler, "on_message", None)) is not None:
            self._message_handlers.append(on_message)
        if (on_presence := getattr(handler, "on_presence", None)) is not None:
            self._presence_handlers.append(on_presence)

    # -- our own requests ---------------------------------------------------------

    def request(self, iq: domish.Element, timeout: float | None = None) -> Deferred[domish.Element]:
        """Send an iq get/set of ours; fire with the result, fail with the StanzaError or on timeout.

        The answer must come from the JID the request went to (RFC 6120 §8.2.3),
        or from its bare form when we asked a bare JID.
        """
        iq_id = iq.getAttribute("id") or f"gw-{uuid.uuid4().hex}"
        iq["id"] = iq_id
        answer: Deferred[domish.Element] = Deferred()
        self._pending[iq_id] = (iq.getAttribute("to", ""), answer)
        call = self._clock.callLater(timeout or self._request_timeout, self._expire, iq_id)
        answer.addBoth(lambda outcome: (call.cancel() if call.active() else None, outcome)[1])
        self._send(iq)
        return answer

    def _expire(self, iq_id: str) -> None:
        pending = self._pending.pop(iq_id, None)
        if pending is not None:
            pending[1].errback(StanzaError("remote-server-timeout", text="no answer"))

    def _answer_received(self, element: domish.Element) -> None:
        iq_id = element.getAttribute("id", "")
        pending = self._pending.get(iq_id)
        if pending is None or (element.getAttribute("from", "") not in (
            pending[0], pending[0].partition("/")[0]
        ) and pending[0] != ""):
            return
        del self._pending[iq_id]
        if element.getAttribute("type") == "result":
            pending[1].callback(element)
        else:
            pending[1].errback(exceptionFromStanza(element))

    def cancel_requests(self) -> None:
        """Fail every pending request (the stream went away)."""
        pending, self._pending = self._pending, {}
        for _, answer in pending.values():
            answer.errback(StanzaError("remote-server-timeout", text="stream closed"))

    # -- dispatch -------------------------------------------------------------

    def dispatch(self, element: domish.Element) -> Deferred[None] | None:
        """Entry point for every top-level stanza received on the stream."""
        if log.isEnabledFor(logging.DEBUG):
            log.debug("RECV %s", redacted_xml(element, self._secret_fields))
        if element.name not in ("iq", "message", "presence"):
            return None
        try:
            sender = parse_jid(element.getAttribute("from", ""))
            recipient = parse_jid(element.getAttribute("to", ""))
        except InvalidFormat:
            self._reply_error(element, "jid-malformed")
            return None
        if element.name == "iq":
            return self._dispatch_iq(element, sender, recipient)
        handlers = self._message_handlers if element.name == "message" else self._presence_handlers
        return self._dispatch_other(Stanza(element, sender, recipient), handlers)

    def _reply_error(self, element: domish.Element, condition: str, text: str | None = None) -> None:
        # RFC 6120 §8.3.1: an entity MUST NOT respond to an error stanza with an error.
        if element.getAttribute("type") == "error":
            return
        if element.name == "iq" and element.getAttribute("type") == "result":
            return
        if not element.getAttribute("from"):
            return
        self._send(error_reply(element, condition, text))

    def _dispatch_iq(self, element: domish.Element, sender: JID, recipient: JID) -> Deferred[None] | None:
        iq_type = element.getAttribute("type")
        if iq_type in ("result", "error"):
            self._answer_received(element)
            return None
        if iq_type not in ("get", "set"):
            self._reply_error(element, "bad-request", "iq type must be get, set, result or error")
            return None
        payloads = [child for child in element.elements()]
        # RFC 6120 §8.2.3: a get or set MUST contain exactly one child element.
        if len(payloads) != 1:
            self._reply_error(element, "bad-request", "an iq get or set needs exactly one payload")
            return None
        payload = payloads[0]
        handler = self._iq_routes.get((iq_type, payload.uri or "", payload.name))
        if handler is None:
            self._reply_error(element, "service-unavailable")
            return None
        request = IqRequest(element, sender, recipient, payload)
        result = maybeDeferred(_call, handler, request)
        result.addCallbacks(lambda answer: self._iq_answered(element, answer),
                            lambda failure: self._iq_failed(element, failure))
        return result

    def _iq_answered(self, element: domish.Element, answer: IqResult) -> None:
        reply = toResponse(element, "result")
        payload = answer.payload if isinstance(answer, IqAnswer) else answer
        if payload is not None:
            reply.addChild(payload)
        self._send(reply)
        if isinstance(answer, IqAnswer):
            answer.after()

    def _iq_failed(self, element: domish.Element, failure: Failure) -> None:
        if failure.check(StanzaError):
            exc: StanzaError = failure.value
            reply = toResponse(element, "error")
            # The request is echoed (RFC 6120 §8.3.1 allows it; XEP-0100 §4.1.2 shows it),
            # with any password emptied: an error reply must not carry secrets back.
            for child in element.elements():
                reply.addChild(redacted_copy(child, self._secret_fields, mask=""))
            reply.addChild(exc.getElement())
            self._send(reply)
            return
        if failure.check(NotImplementedError):
            self._reply_error(element, "feature-not-implemented")
            return
        log.error("handler failed on %s", redacted_xml(element, self._secret_fields),
                  exc_info=(failure.type, failure.value, failure.getTracebackObject()))
        # Never leak the exception text to the requester.
        self._reply_error(element, "internal-server-error")

    def _dispatch_other(self, stanza: Stanza, handlers: list[StanzaCallable]) -> Deferred[None] | None:
        # Fast path: handlers that answer synchronously (a plain groupchat line, most presences)
        # cost no Deferred and no coroutine; the first one that returns an awaitable hands the
        # rest of the walk to _first_taker, with the same error handling.
        for index, handler in enumerate(handlers):
            try:
                taken = handler(stanza)
            except Exception:
                self._handler_failed(stanza, Failure())
                return None
            if isinstance(taken, bool):
                if taken:
                    return None
                continue
            done: Deferred[None] = maybeDeferred(self._first_taker, stanza, handlers[index + 1:], taken)
            done.addErrback(lambda failure: self._handler_failed(stanza, failure))
            return done
        self._unhandled(stanza)
        return None

    def _handler_failed(self, stanza: Stanza, failure: Failure) -> None:
        if failure.check(StanzaError):
            self._send(failure.value.toResponse(stanza.element))
            return
        log.error("handler failed on %s", redacted_xml(stanza.element, self._secret_fields),
                  exc_info=(failure.type, failure.value, failure.getTracebackObject()))
        self._reply_error(stanza.element, "internal-server-error")

    async def _first_taker(self, stanza: Stanza, handlers: list[StanzaCallable],
                           pending: Awaitable[bool]) -> None:
        """The rest of the walk once a handler answered with an awaitable (``pending``)."""
        if await pending:
            return
        for handler in handlers:
            taken = handler(stanza)
            if not isinstance(taken, bool):
                taken = await taken
            if taken:
                return
        self._unhandled(stanza)

    def _unhandled(self, stanza: Stanza) -> None:
        # Unhandled message: tell the sender, as a server does for an unknown JID
        # (RFC 6121 §8.5.2). Unhandled presence is silently ignored (§8.5.2.2).
        if stanza.element.name == "message":
            self._reply_error(stanza.element, "service-unavailable")


def eagerly(coroutine: Coroutine[Any, Any, T]) -> T | Deferred[T]:
    """Run ``coroutine`` now: its result if it finishes without suspending (a groupchat
    line to a connected room never waits), else a Deferred for the rest of its run.

    The common case costs no Deferred; exceptions raised before the first suspension
    propagate to the caller, as from a plain function.
    """
    try:
        yielded = coroutine.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    return Deferred.fromCoroutine(_resume(coroutine, yielded))


def _resume(coroutine: Coroutine[Any, Any, T], yielded: Any) -> Generator[Any, Any, T]:
    """Continue a coroutine that already suspended on ``yielded`` (a Deferred it awaits),
    as a generator Twisted's inlineCallbacks machinery can drive."""
    while True:
        try:
            value = yield yielded
        except GeneratorExit:
            coroutine.close()
            raise
        except BaseException as exc:  # handed to the coroutine, as await would
            try:
                yielded = coroutine.throw(exc)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
        else:
            try:
                yielded = coroutine.send(value)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]


def _call(handler: IqCallable, request: IqRequest) -> Deferred[IqResult] | IqResult:
    result = handler(request)
    if isinstance(result, Awaitable) and not isinstance(result, Deferred):
        return ensureDeferred(result)  # type: ignore[arg-type]
    return result
