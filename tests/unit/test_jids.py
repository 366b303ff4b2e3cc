"""The ASCII fast path of :func:`gateway.jids.parse_jid` gives exactly what Twisted's stringprep gives."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from twisted.words.protocols.jabber import jid as twisted_jid

from gateway.jids import InvalidFormat, _ascii_parts, parse_jid
from gateway.xep.escaping import escape_localpart


def twisted_parts(text: str) -> tuple[str | None, str, str | None] | type[BaseException]:
    """Twisted's own answer, or the class of what it raised."""
    try:
        return twisted_jid.parse(text)
    except Exception as exc:  # IndexError for an empty label, UnicodeError, InvalidFormat
        return type(exc)


def assert_same_as_twisted(text: str) -> None:
    fast = _ascii_parts(text)
    if fast is not None:
        assert fast == twisted_parts(text), text


ASCII = st.characters(codec="ascii")
# Weighted towards the characters that matter to JIDs, so both paths get exercised.
JID_LIKE = st.lists(st.one_of(st.sampled_from(list("@/.-%aZ9 \"&'<>:\\\t\x7f")), ASCII), max_size=30).map("".join)


@settings(max_examples=1500)
@given(st.one_of(st.text(alphabet=ASCII, max_size=30), JID_LIKE))
@example("Nick%irc.Example.org@GW.example.org/Res Source")
@example("a@b..c")
@example("a@.b")
@example("a@b.")
@example("a@.")
@example("a@-b.c")
@example("a@b-.c")
@example("a/b@c")
@example("x@y/")
@example("x/")
@example("a b@c")
@example("a\x7f@c")
@example("a@c/\x7f")
@example("a@c/\x1f")
@example("a@c_d")
@example("a@c/ ")
@example("A@B/C/D@E")
def test_fast_path_agrees_with_twisted(text: str) -> None:
    assert_same_as_twisted(text)


@given(st.text(alphabet=ASCII, min_size=1, max_size=30))
def test_parse_jid_agrees_with_twisted_on_ascii(text: str) -> None:
    # The whole function: same parts as Twisted, or InvalidFormat where Twisted refuses.
    parse_jid.cache_clear()
    expected = twisted_parts(text)
    if text.startswith("@") or "@/" in text or not isinstance(expected, tuple):
        with pytest.raises((InvalidFormat, IndexError)):
            parse_jid(text)
        return
    parsed = parse_jid(text)
    assert (parsed.user, parsed.host, parsed.resource) == expected


@given(st.text(alphabet=st.characters(codec="ascii", categories=("L", "N", "P", "S", "Zs")), min_size=1,
               max_size=30).filter(lambda s: s.strip(" ") == s))
def test_escaped_occupant_jids_take_the_fast_path(nick: str) -> None:
    # Every ASCII nick, escaped (XEP-0106) and put on the gateway's domain, is handled without
    # stringprep, and as Twisted would.
    text = f"{escape_localpart(nick)}%irc.example.org@irc.localhost"
    assert _ascii_parts(text) is not None
    assert_same_as_twisted(text)


@pytest.mark.parametrize("text", [
    "nick%net@gw.example.org", "Nick@GW.Example.Org/Res", "gw.example.org", "gw.example.org/r",
    "a@b.c.", "x@y", "a@b/c@d/e",
])
def test_fast_path_taken_for_plain_jids(text: str) -> None:
    assert _ascii_parts(text) is not None
    parse_jid.cache_clear()
    assert parse_jid(text).full() == twisted_jid.JID(text).full()


@pytest.mark.parametrize("text", [
    "néo@example.org", "a@exämple.org", "a@b/ré", "a b@c", "a\"@c", "a&b@c", "a'b@c", "a:b@c",
    "a<b@c", "a>b@c", "a\x00@c", "a\x7f@c", "a@c d", "a@c_d", "a@b..c", "a@.b", "a@-b", "a@b-",
    "a@c/\x7f", "a@c/\t", "a@", "a@/r",
])
def test_fast_path_leaves_the_rest_to_twisted(text: str) -> None:
    assert _ascii_parts(text) is None


def test_non_ascii_still_prepped() -> None:
    parse_jid.cache_clear()
    parsed = parse_jid("ÉCOLE@Example.org/Ré")
    assert (parsed.user, parsed.host, parsed.resource) == ("école", "example.org", "Ré")
