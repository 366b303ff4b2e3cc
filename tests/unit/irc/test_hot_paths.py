"""The IRC side's per-line fast paths (issue 7) give exactly what the general paths give."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from plugins.irc.encoding import split_body
from plugins.irc.formatting import _scan, to_xep0393
from plugins.irc.lines import IrcMessage, IrcParseError, parse

text = st.text(alphabet=st.characters(), max_size=40) | st.sampled_from(
    ["plain", "a\x02b\x02", "\x0304red", "tab\tand\x00nul", "cr\rlf\n", "\ud800", "été 日本 🎉", ""])


@settings(max_examples=400, deadline=None)
@given(text)
def test_printable_text_is_its_own_xep0393_form(value):
    """to_xep0393 skips the scan for printable text: the scan finds no code and no illegal
    character in it, so the general path would also have returned it unchanged."""
    if value.isprintable():
        plain, styles = _scan(value)
        assert plain == value and not any(styles)
        assert to_xep0393(value) == value


@settings(max_examples=400, deadline=None)
@given(text)
def test_split_body_single_line_fast_path(value):
    general = [line.replace("\x00", "") for line in re.split("\r\n|\r|\n", value)]
    assert split_body(value) == [line for line in general if line]


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=60))
def test_parsed_messages_pass_the_checks_they_skip(line):
    """parse builds its IrcMessage without __post_init__: the same message must validate."""
    try:
        message = parse(line)
    except IrcParseError:
        return
    again = IrcMessage(command=message.command, params=message.params, source=message.source,
                       tags=message.tags)
    assert again == message and hash(again) == hash(message)


def test_address_parsing_is_cached_and_refusals_still_raise():
    import pytest

    from plugins.irc.addressing import Addressing, IrcAddress

    addressing = Addressing()
    first = addressing.parse("#chan%irc.example.net")
    assert first == IrcAddress(network="irc.example.net", name="#chan")
    assert addressing.parse("#chan%irc.example.net") is first
    for _ in range(2):
        with pytest.raises(ValueError):
            addressing.parse("#chan%bad/network")
    assert Addressing("irc.example.net").parse("#chan") == IrcAddress(network="irc.example.net", name="#chan")
