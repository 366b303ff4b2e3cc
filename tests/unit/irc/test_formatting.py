"""mIRC formatting to plain or XEP-0393 text, XML safety, and CTCP framing."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugins.irc.formatting import ctcp, ctcp_split, to_plain, to_xep0393

# XML 1.0 §2.2 Char production.
XML_CHAR = re.compile("[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*")


@pytest.mark.parametrize(("irc", "plain"), [
    ("\x02bold\x02 \x1ditalic\x1d \x1funder\x1f \x1estrike\x1e \x11mono\x11 \x16rev\x16", "bold italic under strike mono rev"),
    ("\x034red\x03 \x0312,04both\x03 \x031,text", "red both ,text"),
    ("\x03123", "3"),  # two digits at most
    ("\x03,12x", ",12x"),  # no foreground: the comma is text
    ("\x04FF00FFhex\x04 \x04ff00ff,00FF00two\x04 \x04FFx", "hex two FFx"),
    ("a\x0fb", "ab"),
    ("nul\x00 bell\x07 esc\x1b tab\tok", "nul bell esc tab\tok"),
    ("\x01ACTION waves\x01", "ACTION waves"),
    ("\ufffe\uffff\ud800x", "x"),
])
def test_to_plain(irc, plain):
    """to_plain removes formatting codes with their colour digits and XML-illegal characters."""
    assert to_plain(irc) == plain


@pytest.mark.parametrize(("irc", "styled"), [
    ("\x02bold\x02 and \x1ditalic\x1d", "*bold* and _italic_"),
    ("\x1estruck\x1e, \x11code\x11.", "~struck~, `code`."),
    ("\x02bold \x02word", "*bold* word"),  # whitespace moved outside the directives
    ("\x02a \x1db\x1d\x02", "*a _b_*"),  # nested spans
    ("\x02\x1dboth\x1d\x02!", "*_both_*!"),  # a directive right after a different opening one
    ("\x02x \x11y\x11\x02", "*x `y`*"),  # monospace inside bold is fine
    ("\x02unclosed to the end", "*unclosed to the end*"),
    ("\x02a\x0f b", "*a* b"),  # reset closes everything
    ("\x0304\x02red bold\x02\x03", "*red bold*"),
])
def test_to_xep0393_styles_when_safe(irc, styled):
    """Bold, italics, strikethrough and monospace become XEP-0393 spans where a client reads them back."""
    assert to_xep0393(irc) == styled


@pytest.mark.parametrize(("irc", "plain"), [
    ("a\x02b\x02c", "abc"),  # mid-word: the opening directive would follow a letter
    ("\x02foo\x02bar", "foobar"),  # closing directive followed by a letter (stricter than §6.2)
    ("\x02a*b\x02", "a*b"),  # the text's own '*' would close the span early
    ("*x \x02bold\x02", "*x bold"),  # a literal '*' would pair with ours
    ("\x02a\x1db\x02c\x1d", "abc"),  # crossing runs cannot nest
    ("\x11x \x02y\x02\x11", "`x y`"),  # nothing is styled inside monospace
    ("\x02 \x02", " "),  # an all-space run has nothing to style
    ("> \x02quote\x02", "> quote"),  # a quotation block shifts the rules
    ("\x11``\x11` x", "``` x"),  # a line starting ``` opens a preformatted block
])
def test_to_xep0393_drops_codes_when_unsafe(irc, plain):
    """Where a span would be misread, the codes are dropped and plain text returned."""
    assert to_xep0393(irc) == plain


@given(st.text(alphabet=st.sampled_from("ab *_~`\x02\x1d\x1e\x11\x0f\x03\x04,1 \x00\x01\ufffe"), max_size=40))
def test_to_xep0393_is_xml_safe_and_keeps_the_text(text):
    """The styled text is XML-safe and, without our directives, is exactly the plain text."""
    styled = to_xep0393(text)
    plain = to_plain(text)
    assert XML_CHAR.fullmatch(styled)
    assert len(styled) >= len(plain)
    # Every character of the plain text is still there, in order.
    remaining = iter(styled)
    assert all(char in remaining for char in plain)


@given(st.text(max_size=100))
def test_to_plain_is_xml_safe(text):
    """to_plain always returns text made of XML 1.0 characters only."""
    assert XML_CHAR.fullmatch(to_plain(text))


@pytest.mark.parametrize(("text", "split"), [
    ("\x01ACTION waves\x01", ("ACTION", "waves")),
    ("\x01ACTION waves", ("ACTION", "waves")),  # the final 0x01 is optional
    ("\x01ACTION\x01", ("ACTION", "")),
    ("\x01version\x01", ("VERSION", "")),
    ("\x01PING 12345\x01", ("PING", "12345")),
    ("hello", None),
    ("\x01\x01", None),
    ("\x01 x\x01", None),
])
def test_ctcp_split(text, split):
    """ctcp_split returns (COMMAND, args) for CTCP messages and None for plain text."""
    assert ctcp_split(text) == split


def test_ctcp_frames_and_refuses_delimiters():
    """ctcp() frames a command and refuses 0x01, CR, LF, NUL or a spaced command."""
    assert ctcp("ACTION", "waves") == "\x01ACTION waves\x01"
    assert ctcp("VERSION") == "\x01VERSION\x01"
    assert ctcp_split(ctcp("ACTION", "a b")) == ("ACTION", "a b")
    for command, args in [("", "x"), ("A B", ""), ("ACTION", "x\x01y"), ("ACTION", "x\ry"), ("ACTION", "\x00")]:
        with pytest.raises(ValueError):
            ctcp(command, args)
