"""XEP-0106 JID escaping and the bounded JID cache."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.words.protocols.jabber.jid import InvalidFormat

from gateway.jids import JID_CACHE_SIZE, parse_jid
from gateway.xep.escaping import escape_localpart, unescape_localpart

# XEP-0106 §5 "Examples" table: https://xmpp.org/extensions/xep-0106.html#examples
XEP_0106_EXAMPLES = [
    ("space cadet", r"space\20cadet"),
    ('call me "ishmael"', r"call\20me\20\22ishmael\22"),
    ("at&t guy", r"at\26t\20guy"),
    ("d'artagnan", r"d\27artagnan"),
    ("/.fanboy", r"\2f.fanboy"),
    ("::foo::", r"\3a\3afoo\3a\3a"),
    ("<foo>", r"\3cfoo\3e"),
    ("user@host", r"user\40host"),
    (r"c:\net", r"c\3a\net"),
    (r"c:\\net", r"c\3a\\net"),
    (r"c:\cool stuff", r"c\3a\cool\20stuff"),
    (r"c:\5commas", r"c\3a\5c5commas"),
]


# Checklist AD5: an IRC user with every special character survives the round trip.
IRC_NICK = "somenick!user\"&'/:<>\\3address"


def test_irc_name_with_every_special_character():
    """AD5: escape, JID-parse and unescape an IRC name losslessly."""
    escaped = escape_localpart(IRC_NICK)
    assert unescape_localpart(parse_jid(f"{escaped}@irc.example.org").user) == IRC_NICK


@pytest.mark.parametrize(("name", "escaped"), XEP_0106_EXAMPLES)
def test_xep_0106_examples(name, escaped):
    """Each example of XEP-0106 §5 escapes and unescapes as the XEP shows."""
    assert escape_localpart(name) == escaped
    assert unescape_localpart(escaped) == name


@pytest.mark.parametrize("bad", ["", " leading", "trailing "])
def test_names_that_cannot_be_escaped(bad):
    """Empty names and leading/trailing spaces are refused (XEP-0106 §4.2)."""
    with pytest.raises(ValueError):
        escape_localpart(bad)


@given(st.text(min_size=1).filter(lambda s: s[0] != " " and s[-1] != " "))
def test_round_trip(name):
    """unescape(escape(x)) == x for any name."""
    assert unescape_localpart(escape_localpart(name)) == name


@given(st.text(alphabet=st.characters(codec="ascii", categories=("L", "N", "P", "S", "Zs")),
               min_size=1, max_size=40).filter(lambda s: s[0] != " " and s[-1] != " "))
def test_escaped_names_are_valid_localparts(name):
    """The escaped form of a printable ASCII name survives nodeprep (lowercased only)."""
    jid = parse_jid(f"{escape_localpart(name)}@gw.example.org")
    assert unescape_localpart(jid.user) == name.lower()


@pytest.mark.parametrize("bad", ["", "@example.org", "a@b@c", "x" * 1100 + "@example.org"])
def test_parse_jid_refuses_invalid(bad):
    """Empty, empty-localpart, malformed and over-long JIDs are InvalidFormat, never other errors."""
    with pytest.raises(InvalidFormat):
        parse_jid(bad)


def test_jid_cache_is_bounded():
    """The cache forgets old entries instead of growing with attacker-chosen input."""
    parse_jid.cache_clear()
    for index in range(JID_CACHE_SIZE + 100):
        parse_jid(f"user{index}@example.org")
    assert parse_jid.cache_info().currsize == JID_CACHE_SIZE
    parse_jid.cache_clear()


def _escape_by_character(text: str) -> str:
    # XEP-0106 §4.2 character by character: the definition the fast path must agree with.
    out = []
    for index, char in enumerate(text):
        if char == "\\" and unescape_localpart(text[index:index + 3]) != text[index:index + 3]:
            out.append(r"\5c")
        else:
            out.append({" ": r"\20", '"': r"\22", "&": r"\26", "'": r"\27", "/": r"\2f", ":": r"\3a",
                        "<": r"\3c", ">": r"\3e", "@": r"\40"}.get(char, char))
    return "".join(out)


@given(st.lists(st.one_of(st.sampled_from(["\\", "\\5c", "\\40", "\\2f", "@", "a", "é", " ", ":"]),
                          st.characters()), min_size=1).map("".join).filter(lambda s: s.strip(" ") == s))
def test_escape_agrees_with_the_character_rule(name):
    """Names without special characters come back unchanged (the fast path); all agree with §4.2."""
    assert escape_localpart(name) == _escape_by_character(name)
