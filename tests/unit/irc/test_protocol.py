"""The IRC line protocol over StringTransport and Clock: decoding, barriers, throttling, keepalive."""

from __future__ import annotations

import logging

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from plugins.irc.lines import IrcMessage
from plugins.irc.protocol import MAX_RECEIVED_LINE_BYTES, IrcLineProtocol
from plugins.irc.throttle import Throttle


class Harness:
    """A protocol on a StringTransport and a Clock, recording what reaches the handler."""

    def __init__(self, **options: object) -> None:
        self.clock = Clock()
        self.received: list[IrcMessage] = []
        self.transport = StringTransport()
        options.setdefault("throttle", Throttle(self.clock.seconds, burst=3, rate=2.0))
        self.protocol = IrcLineProtocol(self.received.append, clock=self.clock, **options)
        self.protocol.makeConnection(self.transport)

    def written(self) -> list[str]:
        data = self.transport.value().decode("utf-8")
        self.transport.clear()
        return data.split("\r\n")[:-1]

    def close(self) -> None:
        self.protocol.connectionLost(None)
        assert self.clock.getDelayedCalls() == []


def test_utf8_and_latin1_lines_are_decoded():
    """A UTF-8 line decodes as UTF-8, a latin-1 line with the fallback charset."""
    harness = Harness()
    harness.protocol.dataReceived(":a!u@h PRIVMSG #c :café ✓\r\n".encode())
    harness.protocol.dataReceived(":a!u@h PRIVMSG #c :caf\xe9\r\n".encode("latin-1"))
    assert [m.params[1] for m in harness.received] == ["café ✓", "café"]
    harness.close()


def test_charset_is_chosen_per_message_and_per_part():
    """charset_for picks the room's charset; a UTF-8 nick in the same line stays UTF-8."""
    charsets = {"#ru": "cp1251"}
    harness = Harness(charset_for=lambda skeleton: charsets.get(skeleton.params[0]))
    line = ":Zoë!u@h PRIVMSG #ru :".encode() + "привет".encode("cp1251") + b"\r\n"
    harness.protocol.dataReceived(line)
    assert harness.received[0].source == "Zoë!u@h"
    assert harness.received[0].params == ("#ru", "привет")
    harness.close()


def test_nul_and_formatting_codes_are_handled():
    """NUL bytes are removed; formatting codes reach the handler untouched for formatting.py."""
    harness = Harness()
    harness.protocol.dataReceived(b":a!u@h PRIVMSG #c :\x02bo\x00ld\x02\r\n")
    assert harness.received[0].params[1] == "\x02bold\x02"
    harness.close()


def test_garbage_line_is_skipped_and_connection_kept(caplog):
    """A line that does not parse is logged and skipped; later lines still arrive."""
    harness = Harness()
    with caplog.at_level(logging.WARNING, logger="plugins.irc.protocol"):
        harness.protocol.dataReceived(b":only-a-source\r\n\r\n:a!u@h PRIVMSG #c\rJOIN :x\r\nPING :t\r\n")
    assert [m.command for m in harness.received] == ["PING"]
    assert "malformed" in caplog.text
    assert not harness.transport.disconnecting
    harness.close()


def test_handler_exception_does_not_drop_the_connection(caplog):
    """A handler that raises is logged; the next line is still dispatched."""
    seen: list[str] = []

    def handler(message: IrcMessage) -> None:
        seen.append(message.command)
        if message.command == "PRIVMSG":
            raise RuntimeError("bug in a handler")

    clock = Clock()
    transport = StringTransport()
    protocol = IrcLineProtocol(handler, clock=clock)
    protocol.makeConnection(transport)
    with caplog.at_level(logging.ERROR, logger="plugins.irc.protocol"):
        protocol.dataReceived(b":a!u@h PRIVMSG #c :x\r\n:a!u@h NOTICE #c :y\r\n")
    assert seen == ["PRIVMSG", "NOTICE"]
    assert "bug in a handler" in caplog.text
    assert not transport.disconnecting
    protocol.connectionLost(None)


def test_over_long_line_is_dropped_connection_kept():
    """A line over 8191+512 bytes is dropped whole, even across chunks, and the next line arrives."""
    harness = Harness()
    long_line = b":a!u@h PRIVMSG #c :" + b"x" * MAX_RECEIVED_LINE_BYTES
    harness.protocol.dataReceived(long_line[:5000])
    harness.protocol.dataReceived(long_line[5000:])  # buffer passes the limit: discarding starts
    harness.protocol.dataReceived(b"yyy\r\n:a!u@h PRIVMSG #c :after\r\n")
    assert [m.params[1] for m in harness.received] == ["after"]
    harness.protocol.dataReceived(long_line + b"\r\nPING :z\r\n")  # complete in one chunk
    assert [m.command for m in harness.received] == ["PRIVMSG", "PING"]
    assert not harness.transport.disconnecting
    harness.close()


def test_lines_split_across_chunks_and_bare_lf():
    """Lines arrive whole however the bytes are chunked, with CRLF or a bare LF."""
    harness = Harness()
    for byte in b"PING :a\r\nPING :b\n":
        harness.protocol.dataReceived(bytes([byte]))
    assert [m.params for m in harness.received] == [("a",), ("b",)]
    harness.close()


def test_ping_is_answered_with_pong():
    """PING gets PONG with the same token at once; the handler sees the PING too."""
    harness = Harness()
    harness.protocol.dataReceived(b"PING :irc.example.net\r\n")
    assert harness.written() == ["PONG irc.example.net"]
    assert harness.received[0].command == "PING"
    harness.close()


def test_send_line_throttles_with_one_timer():
    """Past the burst, lines wait; a single delayed call releases them one per rate."""
    harness = Harness()
    for n in range(5):
        harness.protocol.send_line(f"PRIVMSG #c :{n}")
    assert harness.written() == ["PRIVMSG #c :0", "PRIVMSG #c :1", "PRIVMSG #c :2"]
    assert len(harness.clock.getDelayedCalls()) == 1
    harness.clock.advance(1.9)
    assert harness.written() == []
    harness.clock.advance(0.1)
    assert harness.written() == ["PRIVMSG #c :3"]
    assert len(harness.clock.getDelayedCalls()) == 1
    harness.clock.advance(2)
    assert harness.written() == ["PRIVMSG #c :4"]
    harness.close()


def test_pong_goes_ahead_of_a_throttled_queue():
    """A PONG is queued first, so it is written before lines waiting for tokens."""
    harness = Harness()
    for n in range(5):
        harness.protocol.send_line(f"PRIVMSG #c :{n}")
    harness.written()
    harness.protocol.dataReceived(b"PING :t\r\n")
    harness.clock.advance(2)
    assert harness.written() == ["PONG t"]
    harness.close()


@pytest.mark.parametrize("line", ["PRIVMSG #c :a\rJOIN #x", "PRIVMSG #c :a\nb", "PRIVMSG #c :\x00",
                                  "PRIVMSG #c :" + "x" * 500])
def test_send_line_refuses_unsafe_lines(line):
    """Lines with CR, LF, NUL, or over 512 bytes with CRLF are refused and nothing is written."""
    harness = Harness()
    with pytest.raises(ValueError):
        harness.protocol.send_line(line)
    assert harness.written() == []
    harness.close()


def test_lines_sent_before_connecting_go_out_on_connect():
    """Lines queued before the transport exists are written when it connects."""
    clock = Clock()
    protocol = IrcLineProtocol(lambda message: None, clock=clock, keepalive=None)
    protocol.send_line("CAP LS 302")
    transport = StringTransport()
    protocol.makeConnection(transport)
    assert transport.value() == b"CAP LS 302\r\n"
    protocol.connectionLost(None)


def test_idle_without_keepalive_has_no_timer():
    """With keepalive off and nothing queued, an idle connection has no delayed call at all."""
    harness = Harness(keepalive=None)
    assert harness.clock.getDelayedCalls() == []
    harness.protocol.send_line("PRIVMSG #c :x")
    assert harness.clock.getDelayedCalls() == []
    harness.close()


def test_keepalive_pings_then_closes_on_timeout():
    """After `keepalive` s of silence a PING goes out; without an answer in `timeout` s the connection is aborted."""
    harness = Harness(keepalive=100, timeout=30)
    assert len(harness.clock.getDelayedCalls()) == 1
    harness.clock.advance(99)
    assert harness.written() == []
    harness.clock.advance(1)
    assert harness.written() == ["PING keepalive-1"]
    harness.clock.advance(29)
    assert not harness.transport.disconnecting
    harness.clock.advance(1)
    assert harness.transport.disconnecting
    assert harness.protocol.timed_out
    harness.close()


def test_activity_postpones_keepalive_without_rearming():
    """Received data moves the keepalive deadline; the one timer is re-armed only when it fires."""
    harness = Harness(keepalive=100, timeout=30)
    timer = harness.clock.getDelayedCalls()[0]
    harness.clock.advance(60)
    harness.protocol.dataReceived(b":srv NOTICE me :hi\r\n")
    assert harness.clock.getDelayedCalls() == [timer]
    assert timer.getTime() == 100
    harness.clock.advance(40)  # fires, sees activity at t=60, re-arms for t=160
    assert harness.written() == []
    assert [call.getTime() for call in harness.clock.getDelayedCalls()] == [160]
    harness.clock.advance(60)
    assert harness.written() == ["PING keepalive-1"]
    harness.protocol.dataReceived(b":srv PONG srv :keepalive-1\r\n")
    harness.clock.advance(30)
    assert not harness.transport.disconnecting
    harness.close()


def test_connection_lost_cancels_timer_and_queue():
    """Losing the connection cancels the one timer and drops queued lines."""
    harness = Harness(keepalive=100)
    for n in range(5):
        harness.protocol.send_line(f"PRIVMSG #c :{n}")
    harness.close()
    assert len(harness.protocol.throttle) == 0
