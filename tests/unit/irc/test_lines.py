"""IRC message lines: parsing (RFC 1459 §2.3.1, IRCv3 message-tags) and refusing serializer."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from plugins.irc.lines import IrcMessage, IrcParseError, parse, serialize, split_source

# Vectors in the style of ircdocs/parser-tests "msg-split.yaml", written by hand from the
# Modern IRC Client Protocol "Messages" section and IRCv3 message-tags. Our command is
# upper-cased, where the parser-tests keep the verb as sent.
MSG_SPLIT = [
    ("foo bar baz asdf", {}, None, "FOO", ("bar", "baz", "asdf")),
    (":coolguy foo bar baz asdf", {}, "coolguy", "FOO", ("bar", "baz", "asdf")),
    ("foo bar baz :asdf quux", {}, None, "FOO", ("bar", "baz", "asdf quux")),
    ("foo bar baz :", {}, None, "FOO", ("bar", "baz", "")),
    ("foo bar baz ::asdf", {}, None, "FOO", ("bar", "baz", ":asdf")),
    (":coolguy foo bar baz :  asdf quux ", {}, "coolguy", "FOO", ("bar", "baz", "  asdf quux ")),
    (":coolguy PRIVMSG bar :lol :) ", {}, "coolguy", "PRIVMSG", ("bar", "lol :) ")),
    (":coolguy foo bar baz :  ", {}, "coolguy", "FOO", ("bar", "baz", "  ")),
    ("@a=b;c=32;k;rt=ql7 foo", {"a": "b", "c": "32", "k": "", "rt": "ql7"}, None, "FOO", ()),
    (r"@a=b\\and\nk;c=72\s45;d=gh\:764 foo", {"a": "b\\and\nk", "c": "72 45", "d": "gh;764"}, None, "FOO", ()),
    ("@c;h=;a=b :quux ab cd", {"c": "", "h": "", "a": "b"}, "quux", "AB", ("cd",)),
    (":src JOIN #chan", {}, "src", "JOIN", ("#chan",)),
    (":src JOIN :#chan", {}, "src", "JOIN", ("#chan",)),
    (":src AWAY", {}, "src", "AWAY", ()),
    (":src AWAY ", {}, "src", "AWAY", ()),
    # A tab is not a separator.
    (":cool\tguy foo bar baz", {}, "cool\tguy", "FOO", ("bar", "baz")),
    # Formatting codes in the source are data.
    (":coolguy!ag@net\x035w\x03ork.admin PRIVMSG foo :bar baz", {}, "coolguy!ag@net\x035w\x03ork.admin",
     "PRIVMSG", ("foo", "bar baz")),
    ("@tag1=value1;tag2;vendor1/tag3=value2;vendor2/tag4 :irc.example.com COMMAND param1 param2 :param3 param3",
     {"tag1": "value1", "tag2": "", "vendor1/tag3": "value2", "vendor2/tag4": ""}, "irc.example.com", "COMMAND",
     ("param1", "param2", "param3 param3")),
    ("COMMAND", {}, None, "COMMAND", ()),
    (r"@foo=\\\\\:\\s\s\r\n COMMAND", {"foo": "\\\\;\\s \r\n"}, None, "COMMAND", ()),
    # Unreal's runs of spaces and trailing spaces.
    (":gravel.mozilla.org 432  #momo :Erroneous Nickname: Illegal characters", {}, "gravel.mozilla.org", "432",
     ("#momo", "Erroneous Nickname: Illegal characters")),
    (":gravel.mozilla.org MODE #tckk +n ", {}, "gravel.mozilla.org", "MODE", ("#tckk", "+n")),
    (":services.esper.net MODE #foo-bar +o foobar  ", {}, "services.esper.net", "MODE", ("#foo-bar", "+o", "foobar")),
    # Tag values are unescaped one character at a time.
    (r"@tag1=value\\ntest COMMAND", {"tag1": "value\\ntest"}, None, "COMMAND", ()),
    # An unknown escape drops the backslash; so does a lone backslash at the end.
    (r"@tag1=value\1 COMMAND", {"tag1": "value1"}, None, "COMMAND", ()),
    ("@tag1=value1\\ COMMAND", {"tag1": "value1"}, None, "COMMAND", ()),
    # Duplicate keys: the last one counts; a vendored key is a different key.
    ("@tag1=1;tag2=3;tag3=4;tag1=5;vendor/tag2=8 COMMAND", {"tag1": "5", "tag2": "3", "tag3": "4", "vendor/tag2": "8"},
     None, "COMMAND", ()),
    (":SomeOp MODE #channel :+i", {}, "SomeOp", "MODE", ("#channel", "+i")),
    (":SomeOp MODE #channel +oo SomeUser :AnotherUser", {}, "SomeOp", "MODE",
     ("#channel", "+oo", "SomeUser", "AnotherUser")),
]


@pytest.mark.parametrize(("line", "tags", "source", "command", "params"), MSG_SPLIT)
def test_msg_split_vectors(line, tags, source, command, params):
    """Each parser-tests style vector splits into the expected tags, source, command and params."""
    message = parse(line)
    assert (message.tags, message.source, message.command, message.params) == (tags, source, command, params)


@pytest.mark.parametrize("line", [
    "", "   ", ":", ":src", ":src ", "@a=b", "@a=b ", "@a=b :src", ": PRIVMSG #a :x",
    "12 x", "1234 x", "PRIV-MSG x", "PRIVMSG #a :x\r", "PRIVMSG #a :\nJOIN #b",
    "PRIVMSG #a :x\x00y", "\u0661\u0662\u0663 x",
])
def test_garbage_raises_parse_error(line):
    """Lines that are not messages (no command, bad command, CR/LF/NUL) raise IrcParseError."""
    with pytest.raises(IrcParseError):
        parse(line)


def test_privmsg_without_text_parses():
    """A PRIVMSG with no text (which crashes jaraco's _process_line) parses to its params."""
    assert parse(":n!u@h PRIVMSG").params == ()
    assert parse("PRIVMSG #chan").params == ("#chan",)


def test_malformed_tag_is_dropped_not_the_message():
    """A tag with an empty or invalid key is skipped and the rest of the message kept."""
    message = parse("@=x;ok=1;b!d;;e=\\ PRIVMSG #c :hi")
    assert message.tags == {"ok": "1", "e": ""}
    assert message.params == ("#c", "hi")


def test_numeric_and_lowercase_command():
    """Numerics stay three digits; letter commands are upper-cased."""
    assert parse(":srv 001 me :Welcome").command == "001"
    assert parse("privmsg #a b").command == "PRIVMSG"


@pytest.mark.parametrize(("source", "parts", "nick"), [
    ("nick!user@host", ("nick", "user", "host"), "nick"),
    ("nick@host", ("nick", None, "host"), "nick"),
    ("nick", ("nick", None, None), "nick"),
    ("irc.example.org", ("irc.example.org", None, None), None),
])
def test_source_split(source, parts, nick):
    """Sources split into nick, user, host; a bare dotted name is a server (nick is None)."""
    assert split_source(source) == parts
    assert parse(f":{source} PRIVMSG #a :x").nick == nick


def test_serialize_adds_colon_only_when_needed():
    """The final parameter gets ':' when empty, spaced or colon-led, and not otherwise."""
    assert serialize("JOIN", "#chan") == "JOIN #chan"
    assert serialize("PRIVMSG", "#chan", "hello world") == "PRIVMSG #chan :hello world"
    assert serialize("PRIVMSG", "#chan", ":)") == "PRIVMSG #chan ::)"
    assert serialize("TOPIC", "#chan", "") == "TOPIC #chan :"
    assert serialize("privmsg", "x", "y") == "PRIVMSG x y"


def test_serialize_escapes_tags():
    """Tag values are escaped per message-tags; valueless tags have no '='."""
    line = serialize("TAGMSG", "#c", tags={"+draft/reply": "a b;c\\", "+typing": ""})
    assert line == r"@+draft/reply=a\sb\:c\\;+typing TAGMSG #c"
    assert parse(line).tags == {"+draft/reply": "a b;c\\", "+typing": ""}


@pytest.mark.parametrize(("command", "params", "tags"), [
    ("PRIVMSG", ("#a", "hello\rJOIN #x"), None),
    ("PRIVMSG", ("#a", "hello\nJOIN #x"), None),
    ("PRIVMSG", ("#a", "nul\x00"), None),
    ("PRIVMSG", ("#a\r", "x"), None),
    ("PRIVMSG", ("#a b", "x"), None),
    ("PRIVMSG", (":#a", "x"), None),
    ("PRIVMSG", ("", "x"), None),
    ("PRIV MSG", ("#a", "x"), None),
    ("PRIVMSG\r\nQUIT", ("#a", "x"), None),
    ("", (), None),
    ("TAGMSG", ("#a",), {"+x": "a\rb"}),
    ("TAGMSG", ("#a",), {"+x": "\x00"}),
    ("TAGMSG", ("#a",), {"bad key": "v"}),
    ("TAGMSG", ("#a",), {"": "v"}),
])
def test_serialize_refuses_unsafe_parts(command, params, tags):
    """CR, LF, NUL anywhere, and spaced, colon-led or empty middle params raise ValueError."""
    with pytest.raises(ValueError):
        serialize(command, *params, tags=tags)


def test_message_refuses_unsafe_construction():
    """An IrcMessage built by hand with a bad command or a CR in a param is refused."""
    with pytest.raises(ValueError):
        IrcMessage(command="privmsg")
    with pytest.raises(ValueError):
        IrcMessage(command="PRIVMSG", params=("#a", "x\ry"))


@given(st.text(max_size=300))
def test_fuzz_parse_raises_only_parse_error(line):
    """On any text, parse returns a message or raises IrcParseError, nothing else."""
    try:
        message = parse(line)
    except IrcParseError:
        return
    assert message.command


@given(st.binary(max_size=200))
def test_fuzz_parse_latin1_bytes(raw):
    """Arbitrary bytes read as latin-1 parse or raise IrcParseError, nothing else."""
    with contextlib.suppress(IrcParseError):
        parse(raw.decode("latin-1"))


_middle = st.text(min_size=1, max_size=20).filter(
    lambda p: not any(c in p for c in " \r\n\x00") and not p.startswith(":")
)
_trailing = st.text(max_size=40).filter(lambda p: not any(c in p for c in "\r\n\x00"))
_tag_values = st.text(max_size=20).filter(lambda v: not any(c in v for c in "\r\n\x00"))


@given(
    command=st.sampled_from(["PRIVMSG", "NOTICE", "001", "MODE", "TAGMSG"]),
    middles=st.lists(_middle, max_size=4),
    trailing=st.one_of(st.none(), _trailing),
    tags=st.dictionaries(st.sampled_from(["a", "+b", "v.example/c", "time"]), _tag_values, max_size=3),
)
def test_serialize_parse_round_trip(command, middles, trailing, tags):
    """Whatever serialize accepts, parse gives back unchanged."""
    params = (*middles, trailing) if trailing is not None else tuple(middles)
    line = serialize(command, *params, tags=tags)
    assert parse(line) == IrcMessage(command=command, params=params, tags=tags)


@given(st.text(max_size=200))
def test_parsed_messages_reserialize(line):
    """A parsed message serializes back to a line that parses to the same message."""
    try:
        message = parse(line)
    except IrcParseError:
        return
    # Unescaped tag values may hold CR/LF, which serialize refuses by design.
    assume(not any(c in v for v in message.tags.values() for c in "\r\n\x00"))
    assert parse(message.to_line()) == message
