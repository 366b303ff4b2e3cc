"""XEP-0114 component connection: one stream per gateway JID.

Built on Twisted's ``componentFactory`` for the handshake, driven by a
:class:`~twisted.application.internet.ClientService` for reconnection. The stock
``buildServiceManager`` path retries a wrong secret forever with a backoff that
never grows (reference/stack.md §1); here a fatal stream error (``not-authorized``,
``conflict``, ``host-unknown``) stops the service and fires :attr:`fatal`.

Stanzas sent while the stream is down wait in a bounded :class:`OutboundQueue`
and go out right after the next handshake.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.python.failure import Failure
from twisted.words.protocols.jabber import component, error, xmlstream
from twisted.words.xish import domish

from gateway.stanzas import NS_CHATSTATES, redacted_xml, to_xml

log = logging.getLogger(__name__)

#: Stream errors after which retrying cannot help (RFC 6120 §4.9.3): the admin must act.
FATAL_STREAM_ERRORS = {
    "not-authorized": "the server refused the component secret",
    "conflict": "another component is already connected with this JID",
    "host-unknown": "the server has no component configured for this JID",
    "invalid-namespace": "the server does not speak XEP-0114 on this port",
    "policy-violation": "the server refused the connection by policy",
}


class FatalStreamError(Exception):
    """The server ended the stream in a way that retrying cannot fix."""

    def __init__(self, jid: str, condition: str, text: str | None) -> None:
        self.jid = jid
        self.condition = condition
        hint = FATAL_STREAM_ERRORS.get(condition, "")
        detail = f" ({text})" if text else ""
        super().__init__(f"{jid}: stream error {condition}{detail}: {hint}")


def _is_availability_presence(element: domish.Element) -> bool:
    return element.name == "presence" and element.getAttribute("type") in (None, "unavailable")


def _is_chat_state_only(element: domish.Element) -> bool:
    if element.name != "message":
        return False
    children = [child for child in element.elements()]
    return bool(children) and all(child.uri == NS_CHATSTATES for child in children)


class OutboundQueue:
    """Stanzas waiting for the stream, bounded, with stale ones dropped.

    A queued availability presence is superseded by a newer one for the same
    sender and recipient (only the latest state matters), chat states are never
    queued (they are stale by the time the stream is back), and when the queue is
    full the oldest stanza is dropped.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: deque[domish.Element] = deque()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, element: domish.Element) -> None:
        if _is_chat_state_only(element):
            self.dropped += 1
            return
        if _is_availability_presence(element):
            key = (element.getAttribute("from"), element.getAttribute("to"))
            for queued in list(self._items):
                if _is_availability_presence(queued) and (
                    queued.getAttribute("from"), queued.getAttribute("to")
                ) == key:
                    self._items.remove(queued)
                    self.dropped += 1
        if len(self._items) >= self.limit:
            self._items.popleft()
            self.dropped += 1
            log.warning("outbound queue full (%d): dropped the oldest stanza", self.limit)
        self._items.append(element)

    def drain(self) -> list[domish.Element]:
        items = list(self._items)
        self._items.clear()
        return items


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionSettings:
    jid: str
    secret: str
    max_backoff: float
    queue_size: int
    max_stanza_size: int
    keepalive: float


class ComponentConnection:
    """One XEP-0114 stream to the server, kept up until stopped or refused.

    :param on_stream: called with each new stream before authentication, to add observers.
    :param on_authenticated: called after each successful handshake (after the queue is flushed).
    """

    def __init__(
        self,
        settings: ConnectionSettings,
        endpoint: IStreamClientEndpoint,
        clock: IReactorTime,
        *,
        on_stream: Callable[[xmlstream.XmlStream], None],
        on_authenticated: Callable[[], None],
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.queue = OutboundQueue(settings.queue_size)
        self.fatal: Deferred[FatalStreamError] = Deferred()
        self._on_stream = on_stream
        self._on_authenticated = on_authenticated
        self._xs: xmlstream.XmlStream | None = None
        self._keepalive_call: IDelayedCall | None = None
        self._sent_since_tick = False
        self._stopping = False
        self.handshakes = 0

        factory = component.componentFactory(settings.jid, settings.secret)
        factory.addBootstrap(xmlstream.STREAM_CONNECTED_EVENT, self._stream_connected)
        factory.addBootstrap(xmlstream.STREAM_AUTHD_EVENT, self._authenticated)
        factory.addBootstrap(xmlstream.STREAM_ERROR_EVENT, self._stream_error)
        factory.addBootstrap(xmlstream.STREAM_END_EVENT, self._stream_ended)
        self.service = ClientService(
            endpoint,
            factory,
            retryPolicy=backoffPolicy(maxDelay=settings.max_backoff, jitter=jitter),
            clock=clock,
            prepareConnection=self._wait_for_handshake,
        )

    @property
    def authenticated(self) -> bool:
        return self._xs is not None

    def start(self) -> None:
        self.service.startService()

    def stop(self) -> Deferred[None]:
        """Close the stream politely (RFC 6120 §4.4) and stop reconnecting."""
        self._cancel_keepalive()
        self._stopping = True
        if self._xs is not None:
            self._xs.sendFooter()
        return self.service.stopService()

    def send(self, element: domish.Element) -> None:
        """Send now if the stream is up, otherwise queue for the next handshake."""
        if self._xs is None:
            self.queue.put(element)
            return
        if log.isEnabledFor(logging.DEBUG):
            log.debug("SEND %s", redacted_xml(element))
        self._sent_since_tick = True
        # The lean serializer writes what domish would, at a fraction of the cost; shapes it
        # does not handle (prefixes) go through domish as before.
        xs = self._xs
        xml = to_xml(element, xs.namespace)
        if xml is None:
            xs.send(element)
        elif xs.rawDataOutFn is None:
            xs.transport.write(xml.encode("utf-8"))  # what XmlStream.send does with text
        else:
            xs.send(xml)

    def send_xml(self, xml: str) -> bool:
        """Write a stanza already serialised (the groupchat hot paths); ``False`` when the
        stream is down, and the caller then sends an element, which the queue can hold."""
        xs = self._xs
        if xs is None:
            return False
        if log.isEnabledFor(logging.DEBUG):
            log.debug("SEND %s", xml)  # groupchat lines: nothing to redact
        self._sent_since_tick = True
        if xs.rawDataOutFn is None:
            xs.transport.write(xml.encode("utf-8"))
        else:
            xs.send(xml)
        return True

    # -- stream events ----------------------------------------------------

    def _stream_connected(self, xs: xmlstream.XmlStream) -> None:
        transport = xs.transport
        # Interactive traffic: don't let Nagle hold small stanzas back.
        for option in ("setTcpNoDelay", "setTcpKeepAlive"):
            if hasattr(transport, option):
                getattr(transport, option)(True)
        xs.stream.maxStanzaSize = self.settings.max_stanza_size
        self._on_stream(xs)

    def _wait_for_handshake(self, xs: xmlstream.XmlStream) -> Deferred[None]:
        """ClientService counts a connection as made only once the handshake succeeded,
        so a refused handshake backs off like a refused TCP connection."""
        done: Deferred[None] = Deferred()

        def authenticated(_: object) -> None:
            if not done.called:
                done.callback(None)

        def ended(reason: Failure) -> None:
            if not done.called:
                done.errback(reason)

        xs.addOnetimeObserver(xmlstream.STREAM_AUTHD_EVENT, authenticated)
        xs.addOnetimeObserver(xmlstream.STREAM_END_EVENT, ended)
        return done

    def _authenticated(self, xs: xmlstream.XmlStream) -> None:
        self.handshakes += 1
        log.info("%s: connected to the XMPP server (handshake %d)", self.settings.jid, self.handshakes)
        self._xs = xs
        queued = self.queue.drain()
        if queued:
            log.info("%s: sending %d stanzas queued while disconnected", self.settings.jid, len(queued))
        for element in queued:
            self.send(element)
        self._arm_keepalive()
        self._on_authenticated()

    def _stream_error(self, reason: Failure) -> None:
        if not reason.check(error.StreamError):
            log.error("%s: stream failed: %s", self.settings.jid, reason.getErrorMessage())
            return
        condition = reason.value.condition
        if condition in FATAL_STREAM_ERRORS:
            fatal = FatalStreamError(self.settings.jid, condition, reason.value.text)
            log.error("%s", fatal)
            self.service.stopService()
            if not self.fatal.called:
                self.fatal.callback(fatal)
        else:
            log.warning("%s: stream error %s, reconnecting", self.settings.jid, condition)

    def _stream_ended(self, reason: Failure) -> None:
        if self._xs is not None and not self._stopping:
            log.warning("%s: lost the XMPP server: %s", self.settings.jid, reason.getErrorMessage())
        self._xs = None
        self._cancel_keepalive()

    # -- whitespace keepalive (RFC 6120 §4.6.1) -----------------------------

    def _arm_keepalive(self) -> None:
        self._cancel_keepalive()
        self._sent_since_tick = False
        self._keepalive_call = self.clock.callLater(self.settings.keepalive, self._keepalive_tick)

    def _cancel_keepalive(self) -> None:
        if self._keepalive_call is not None and self._keepalive_call.active():
            self._keepalive_call.cancel()
        self._keepalive_call = None

    def _keepalive_tick(self) -> None:
        self._keepalive_call = None
        if self._xs is None:
            return
        if not self._sent_since_tick:
            # A single space between stanzas keeps NATs and the server's idle timer happy.
            self._xs.send(" ")
        self._arm_keepalive()
