"""Decoding IRC bytes with a fallback charset; splitting XMPP bodies into safe IRC lines."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugins.irc.encoding import decode_line, encode_and_split, relay_overhead, split_body
from plugins.irc.lines import parse, serialize


def test_decode_prefers_utf8():
    """Valid UTF-8 is decoded as UTF-8 whatever the fallback."""
    assert decode_line("café ✓".encode(), "cp1252") == "café ✓"


def test_decode_falls_back_to_the_given_charset():
    """A line that is not UTF-8 is decoded with the fallback charset."""
    assert decode_line("café".encode("latin-1")) == "café"
    assert decode_line("€uro".encode("cp1252"), "cp1252") == "€uro"
    assert decode_line("日本".encode("shift_jis"), "shift_jis") == "日本"


def test_decode_never_raises_on_a_bad_charset():
    """An unknown, non-text or failing fallback ends in UTF-8 with U+FFFD instead of an exception."""
    assert decode_line(b"caf\xe9", "no-such-charset") == "caf\ufffd"
    assert decode_line(b"caf\xe9", "base64") == "caf\ufffd"
    assert decode_line(b"\xff\xfe\xfd", "ascii") == "\ufffd\ufffd\ufffd"


@given(st.binary(max_size=200), st.sampled_from(["latin-1", "cp1252", "shift_jis", "utf-16", "bogus", "rot13"]))
def test_decode_fuzz(raw, fallback):
    """decode_line returns a str for any bytes and any fallback name."""
    assert isinstance(decode_line(raw, fallback), str)


def test_relay_overhead_counts_the_relayed_line():
    """The overhead is the length of ':nick!user@host PRIVMSG #chan :' + CRLF with max user and host."""
    expected = len(":alice!" + "u" * 10 + "@" + "h" * 63 + " PRIVMSG #chan :\r\n")
    assert relay_overhead("PRIVMSG", "#chan", "alice") == expected


def test_split_keeps_relayed_lines_within_512_bytes():
    """Every chunk, relayed by the server with the longest prefix, fits 512 bytes."""
    overhead = relay_overhead("PRIVMSG", "#chan", "alice")
    text = " ".join(["word"] * 300)
    chunks = encode_and_split(overhead, text)
    assert len(chunks) > 1
    assert all(len(chunk.encode()) + overhead <= 512 for chunk in chunks)
    assert " ".join(chunks) == text  # split at spaces, each break space dropped


def test_split_on_utf8_boundaries_without_spaces():
    """A long run of multi-byte characters is cut between characters, never inside one."""
    text = "é" * 300 + "😀" * 100
    chunks = encode_and_split(100, text)
    assert "".join(chunks) == text
    assert all(len(chunk.encode()) <= 412 for chunk in chunks)


def test_split_keeps_combining_marks_with_their_base():
    """A cut that would start a chunk with a combining accent moves back before its base."""
    text = "a" * 9 + "e\u0301" + "b"
    chunks = encode_and_split(502, text)  # 10-byte budget
    assert chunks[0] == "a" * 9
    assert chunks[1].startswith("e\u0301")


def test_split_edge_cases():
    """Empty text gives no chunks; short text one; a budget under 4 bytes is refused."""
    assert encode_and_split(50, "") == []
    assert encode_and_split(50, "hi") == ["hi"]
    with pytest.raises(ValueError):
        encode_and_split(509, "hello")


@pytest.mark.parametrize("text", ["hello\rJOIN #x", "a\nb", "nul\x00"])
def test_split_refuses_line_breaks_and_nul(text):
    """encode_and_split refuses CR, LF and NUL: bodies go through split_body first."""
    with pytest.raises(ValueError):
        encode_and_split(50, text)


def test_split_body_lines():
    """Bodies split on CRLF, CR and LF; NUL is removed; empty lines are dropped."""
    assert split_body("one\r\ntwo\rthree\n\n\nfour\x00\r\n") == ["one", "two", "three", "four"]
    assert split_body("\x00\n\r") == []
    assert split_body("keep\u2028this") == ["keep\u2028this"]


def test_cr_injection_never_produces_a_raw_command():
    """A body 'hello\\rJOIN #x' becomes two PRIVMSG texts, never a JOIN line."""
    lines = [
        serialize("PRIVMSG", "#chan", chunk)
        for text in split_body("hello\rJOIN #x")
        for chunk in encode_and_split(relay_overhead("PRIVMSG", "#chan", "me"), text)
    ]
    assert [parse(line).command for line in lines] == ["PRIVMSG", "PRIVMSG"]
    assert [parse(line).params[1] for line in lines] == ["hello", "JOIN #x"]


@given(st.text(max_size=2000), st.integers(min_value=0, max_value=480))
def test_split_fuzz(body, overhead):
    """For any body: chunks are non-empty, free of CR/LF/NUL, and fit the byte budget."""
    for text in split_body(body):
        chunks = encode_and_split(overhead, text)
        assert chunks
        for chunk in chunks:
            assert chunk
            assert not any(char in chunk for char in "\r\n\x00")
            assert len(chunk.encode("utf-8", errors="surrogatepass")) <= 512 - overhead
