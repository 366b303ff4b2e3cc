"""The Twisted edge of IRC: framing, decoding, one exception barrier per line, flood control, keepalive.

Framing: RFC 1459 §2.3 / RFC 2812 §2.3 (lines end in CRLF; we also accept a
bare LF, as the Modern IRC Client Protocol asks), with IRCv3 message-tags
"Size limit": up to 8191 bytes of tags plus 512 bytes of message. Keepalive:
RFC 2812 §3.7.2/§3.7.3 (PING/PONG).

What this layer guarantees (DESIGN.md §6, §8; STYLE.md G9):

* a line over the size limit is dropped and the connection kept; the receive
  buffer never grows past that limit (we do not use ``LineOnlyReceiver``: on an
  over-long line it closes the connection, loses the rest of the chunk, and its
  buffer can keep growing while no delimiter arrives);
* bytes are decoded UTF-8 first, else with a fallback charset chosen by the
  caller, per network (``fallback_encoding``) or per message (``charset_for``,
  which sees the message parsed on a lossless latin-1 reading and can pick the
  room's charset); NUL bytes are removed;
* a line that does not parse, or a handler that raises, is logged and
  skipped: one bad line never drops the connection (jaraco's aio client
  drops it, reference/stack.md §3);
* nothing with CR, LF or NUL is ever written, and nothing over 512 bytes;
* outgoing lines go through a :class:`~plugins.irc.throttle.Throttle`;
* ``PING`` is answered with ``PONG`` at once (ahead of queued lines).

Timers: one ``IDelayedCall`` per connection at most (STYLE.md G4), armed for
the earlier of the throttle's next deadline and the keepalive deadline. A
received byte only stores the time; it does not touch the timer. When the
timer fires it recomputes: if data came in since, it re-arms for
``last activity + keepalive``; if not, it sends a PING and arms for
``timeout``; if the PING got no answer, it aborts the connection. The
trade-off: an idle connection wakes once per ``keepalive`` seconds (not
never), which is the price of noticing a dead peer without waiting for TCP's
own timeouts (hours). Most servers PING us more often than that, and their
PING counts as activity, so in practice our PING is rarely sent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from plugins.irc.encoding import MAX_LINE_BYTES, decode_line
from plugins.irc.lines import IrcMessage, IrcParseError, parse, serialize
from plugins.irc.throttle import Throttle

__all__ = ["IrcLineProtocol"]

log = logging.getLogger(__name__)

# IRCv3 message-tags "Size limit": 8191 bytes for tags (with '@' and the space), 512 for the rest.
MAX_TAGS_BYTES = 8191
MAX_RECEIVED_LINE_BYTES = MAX_TAGS_BYTES + MAX_LINE_BYTES
_EPSILON = 1e-9

MessageHandler = Callable[[IrcMessage], None]
CharsetChooser = Callable[[IrcMessage], str | None]


class IrcLineProtocol(Protocol):
    """One IRC connection's line layer; hands every :class:`IrcMessage` to ``handler``.

    :param handler: called once per received message (PING included, after the PONG).
    :param clock: the reactor's time (``IReactorTime``), injected (STYLE.md G5).
    :param throttle: outgoing flood control; by default 5 lines then one per 2 s.
    :param fallback_encoding: charset for lines that are not UTF-8.
    :param charset_for: optional per-message choice of that charset (e.g. the room's).
    :param keepalive: seconds of silence before we PING; ``None`` disables keepalive.
    :param timeout: seconds to wait for any data after our PING before closing.
    :param on_connect: called when the transport is up.
    :param on_disconnect: called with the reason when the connection is gone.
    :ivar timed_out: the connection was closed because the server stopped answering.
    """

    def __init__(
        self,
        handler: MessageHandler,
        *,
        clock: IReactorTime,
        throttle: Throttle | None = None,
        fallback_encoding: str = "latin-1",
        charset_for: CharsetChooser | None = None,
        keepalive: float | None = 120.0,
        timeout: float = 60.0,
        on_connect: Callable[[], None] | None = None,
        on_disconnect: Callable[[Failure], None] | None = None,
    ) -> None:
        self.handler = handler
        self.clock = clock
        self.throttle = throttle if throttle is not None else Throttle(clock.seconds)
        self.fallback_encoding = fallback_encoding
        self.charset_for = charset_for
        self.keepalive = keepalive
        self.timeout = timeout
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.encode_line: Callable[[str], bytes] = lambda line: line.encode("utf-8")
        """Turns an outgoing line into bytes: UTF-8, or a room's ``encoding_out`` (set by the
        connection)."""
        self.timed_out = False
        self._buffer = b""
        self._discarding = False
        self._timer: IDelayedCall | None = None
        self._last_activity = clock.seconds()
        self._ping_sent_at: float | None = None
        self._ping_serial = 0

    # -- Twisted Protocol ------------------------------------------------------------------

    def connectionMade(self) -> None:
        # Twisted's makeConnection has set self.connected = 1 already. Lines queued
        # before the connection existed go out now.
        self._last_activity = self.clock.seconds()
        self._flush()
        if self.on_connect is not None:
            self._guarded(self.on_connect)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.connected = 0
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.throttle.clear()
        if self.on_disconnect is not None and reason is not None:
            self._guarded(self.on_disconnect, reason)

    def dataReceived(self, data: bytes) -> None:
        # Liveness is any byte from the server; storing the time is all a line costs here.
        self._last_activity = self.clock.seconds()
        self._ping_sent_at = None
        if self._discarding:
            end = data.find(b"\n")
            if end < 0:
                return
            data = data[end + 1 :]
            self._discarding = False
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        for raw in lines:
            if self.transport is None or getattr(self.transport, "disconnecting", False):
                return
            self._line_received(raw)
        if len(self._buffer) > MAX_RECEIVED_LINE_BYTES:
            log.warning("IRC: dropped an over-long line (%d bytes and no end yet)", len(self._buffer))
            self._buffer = b""
            self._discarding = True

    # -- receiving ---------------------------------------------------------------------

    def _line_received(self, raw: bytes) -> None:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if not raw:
            return
        if len(raw) > MAX_RECEIVED_LINE_BYTES:
            log.warning("IRC: dropped an over-long line (%d bytes)", len(raw))
            return
        # COMPAT: RFC 1459 §2.3.1 forbids NUL, yet bridges and old servers relay it;
        # dropping the byte keeps the message.
        raw = raw.replace(b"\x00", b"")
        try:
            message = self._decode(raw)
        except IrcParseError as error:
            log.warning("IRC: skipped a malformed line (%s): %r", error, raw[:200])
            return
        except Exception:
            log.exception("IRC: skipped a line that could not be decoded: %r", raw[:200])
            return
        if message.command == "PING":
            self._guarded(self.send_line, serialize("PONG", *message.params), priority=True)
        self._guarded(self.handler, message)

    def _decode(self, raw: bytes) -> IrcMessage:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return parse(text)
        # Parse the structure on latin-1 (one byte, one character, so nothing is lost
        # and the ASCII syntax is found where the server found it), then decode each
        # part on its own: a UTF-8 nick and a latin-1 text in one line both come out
        # right, and the caller can choose the charset by target.
        skeleton = parse(raw.decode("latin-1"))
        charset = self.fallback_encoding
        if self.charset_for is not None:
            charset = self.charset_for(skeleton) or charset

        def redecode(part: str) -> str:
            return decode_line(part.encode("latin-1"), charset)

        return IrcMessage(
            command=skeleton.command,
            params=tuple(redecode(param) for param in skeleton.params),
            source=None if skeleton.source is None else redecode(skeleton.source),
            tags={key: redecode(value) for key, value in skeleton.tags.items()},
        )

    # -- sending -----------------------------------------------------------------------

    def send_line(self, line: str, *, priority: bool = False) -> None:
        """Queue one line (without CRLF) and write what the throttle allows now.

        :raises ValueError: if the line has CR, LF or NUL, or is over 512 bytes
            with its CRLF (tags aside): build lines with
            :func:`plugins.irc.lines.serialize` and split text with
            :func:`plugins.irc.encoding.encode_and_split`.
        :raises plugins.irc.throttle.QueueFull: when too many lines wait.
        """
        if "\r" in line or "\n" in line or "\x00" in line:
            raise ValueError("CR, LF or NUL in an outgoing IRC line")
        message_part = line.split(" ", 1)[1] if line.startswith("@") and " " in line else line
        if len(message_part.encode("utf-8")) + 2 > MAX_LINE_BYTES:
            raise ValueError("outgoing IRC line over 512 bytes")
        self.throttle.send(line, priority=priority)
        self._flush()

    def _flush(self) -> None:
        if self.connected and self.transport is not None:
            for line in self.throttle.pop_ready():
                self.transport.write(self.encode_line(line) + b"\r\n")
        self._schedule()

    # -- the one timer -------------------------------------------------------------------

    def _keepalive_deadline(self) -> float | None:
        if self.keepalive is None or not self.connected:
            return None
        if self._ping_sent_at is not None:
            return self._ping_sent_at + self.timeout
        return self._last_activity + self.keepalive

    def _schedule(self) -> None:
        # Runs after every line sent: the earlier of two deadlines, without building a list.
        deadline = self.throttle.next_deadline()
        keepalive = self._keepalive_deadline()
        if deadline is None or (keepalive is not None and keepalive < deadline):
            deadline = keepalive
        if deadline is None or not self.connected:
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
            self._timer = None
            return
        if self._timer is not None and self._timer.active():
            # Firing early is harmless (the handler recomputes); only move it sooner.
            if self._timer.getTime() <= deadline + _EPSILON:
                return
            self._timer.reset(max(0.0, deadline - self.clock.seconds()))
            return
        self._timer = self.clock.callLater(max(0.0, deadline - self.clock.seconds()), self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        if not self.connected:
            return
        now = self.clock.seconds()
        if self.keepalive is not None:
            if self._ping_sent_at is not None and now + _EPSILON >= self._ping_sent_at + self.timeout:
                log.warning("IRC: no answer to PING in %s s, closing the connection", self.timeout)
                self.timed_out = True
                # abort, not lose: a dead peer would never take the buffered bytes.
                abort = getattr(self.transport, "abortConnection", None)
                (abort or self.transport.loseConnection)()
                return
            if self._ping_sent_at is None and now + _EPSILON >= self._last_activity + self.keepalive:
                self._ping_serial += 1
                self._ping_sent_at = now
                self.throttle.send(serialize("PING", f"keepalive-{self._ping_serial}"), priority=True)
        self._flush()

    # -- helpers -----------------------------------------------------------------------

    def _guarded(self, function: Callable[..., object], *args: object, **kwargs: object) -> None:
        # The per-line exception barrier (STYLE.md G9): log with traceback, keep going.
        try:
            function(*args, **kwargs)
        except Exception:
            log.exception("IRC: error while handling a line; the connection stays")
