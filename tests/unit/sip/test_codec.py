"""SIP message codec: parsing, framing, serialising (RFC 3261 §7, §8.2.6, §18.3, §20)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugins.sip.codec import (
    NEED_DATA,
    CSeq,
    Headers,
    KeepAlivePing,
    KeepAlivePong,
    SipRequest,
    SipResponse,
    StreamParser,
    make_response,
    parse_datagram,
    parse_via,
    serialize,
)
from plugins.sip.errors import SipParseError
from plugins.sip.uri import SipUri
from tests.unit.sip.messages import message_request

UTF8_MESSAGE = (
    "MESSAGE sip:bob@biloxi.example.com SIP/2.0\r\n"
    "Via: SIP/2.0/TCP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n"
    "Max-Forwards: 70\r\n"
    "To: Bob <sip:bob@biloxi.example.com>\r\n"
    "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    "Call-ID: a84b4c76e66710\r\n"
    "CSeq: 1 MESSAGE\r\n"
    "Content-Type: text/plain\r\n"
    "Content-Length: 13\r\n"
    "\r\n"
    "héllo wörld"
).encode()

COMPACT_MESSAGE = (
    b"MESSAGE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"v: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKa, SIP/2.0/UDP [2001:db8::9]:5070;branch=z9hG4bKb\r\n"
    b"v: SIP/2.0/UDP third.example.com\r\n"
    b'f: "Doe, John" <sip:john@atlanta.example.com>;tag=12\r\n'
    b"t: <sip:bob@biloxi.example.com>\r\n"
    b"i: call-1\r\n"
    b"CSeq: 7 MESSAGE\r\n"
    b'm: "Doe, John" <sip:john@10.0.0.1>, <sip:john@10.0.0.2;transport=tcp>;q=0.5\r\n'
    b"k: path, gruu\r\n"
    b"s: I know you're there,\r\n"
    b"     pick up the phone\r\n"
    b"\tand talk to me!\r\n"
    b'c: text/plain; charset="ISO-8859-1"\r\n'
    b"e: gzip\r\n"
    b"l: 0\r\n"
    b"\r\n"
)


def test_utf8_body_round_trip():
    """A UTF-8 body is bytes framed by its byte length (twisted.protocols.sip breaks here)."""
    message = parse_datagram(UTF8_MESSAGE)
    assert isinstance(message, SipRequest)
    assert message.body.decode("utf-8") == "héllo wörld"
    assert serialize(message) == UTF8_MESSAGE


def test_compact_forms_are_canonical():
    """Compact header names become their long forms (RFC 3261 §7.3.3)."""
    message = parse_datagram(COMPACT_MESSAGE)
    assert message is not None
    names = [name for name, _ in message.headers]
    assert names == [
        "Via", "Via", "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Contact",
        "Supported", "Supported", "Subject", "Content-Type", "Content-Encoding", "Content-Length",
    ]  # fmt: skip
    assert message.headers.get("i") == "call-1"


def test_comma_joined_vias_are_separate_hops():
    """Comma-joined Via values are separate hops, in order (RFC 3261 §7.3.1)."""
    message = parse_datagram(COMPACT_MESSAGE)
    assert message is not None
    assert [via.sent_by for via in message.vias] == [
        "pc33.atlanta.example.com",
        "[2001:db8::9]:5070",
        "third.example.com",
    ]
    assert message.branch == "z9hG4bKa"


def test_commas_inside_quotes_do_not_split_contacts():
    """A comma in a quoted display name does not split a Contact list."""
    message = parse_datagram(COMPACT_MESSAGE)
    assert message is not None
    assert message.headers.get_all("Contact") == (
        '"Doe, John" <sip:john@10.0.0.1>',
        "<sip:john@10.0.0.2;transport=tcp>;q=0.5",
    )
    assert message.from_address.display_name == "Doe, John"


def test_folded_header_is_unfolded():
    """Continuation lines become a single SP (RFC 3261 §7.3.1)."""
    message = parse_datagram(COMPACT_MESSAGE)
    assert message is not None
    assert message.headers.get("Subject") == "I know you're there, pick up the phone and talk to me!"


def test_content_type_charset():
    """Content-Type exposes type, subtype and the charset parameter (quoted here)."""
    message = parse_datagram(COMPACT_MESSAGE)
    assert message is not None and message.content_type is not None
    assert (message.content_type.mime, message.content_type.charset) == ("text/plain", "iso-8859-1")


def test_text_defaults_to_utf8():
    """A text/* body without charset is UTF-8 (RFC 3261 §7.4.1)."""
    content_type = message_request().content_type
    assert content_type is not None
    assert (content_type.charset, content_type.effective_charset) == (None, "utf-8")


def test_auth_headers_are_never_split():
    """WWW-Authenticate keeps its commas: it MUST NOT be combined (RFC 3261 §7.3.1)."""
    value = 'Digest realm="atlanta.com", qop="auth,auth-int", nonce="84a4cc6f3082121f32b42a2187831a9e"'
    headers = Headers([("WWW-Authenticate", value), ("WWW-Authenticate", value)])
    assert headers.get_all("www-authenticate") == (value, value)


def test_unknown_headers_are_not_split():
    """An unknown header keeps its commas: its grammar is unknown."""
    assert Headers([("X-Thing", "a, b")]).get_all("x-thing") == ("a, b",)


def test_message_helpers():
    """CSeq, Call-ID, tags, top Via, Max-Forwards read from the headers."""
    request = message_request(cseq=4711)
    assert request.cseq == CSeq(4711, "MESSAGE")
    assert request.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert (request.from_tag, request.to_tag) == ("1928301774", None)
    assert request.top_via.transport == "UDP" and request.branch == "z9hG4bK776asdhds"
    assert request.max_forwards == 70
    assert isinstance(request.to_address.uri, SipUri)


def test_via_with_whitespace_and_ipv6_received():
    """Via allows LWS around '/' and ':'; an IPv6 received stays unbracketed (RFC 3261 §25.1)."""
    via = parse_via("SIP / 2.0 / UDP first.example.com: 4000;ttl=16 ;maddr=224.2.0.1 ;received=2001:db8::1")
    assert (via.host, via.port, via.param("ttl"), via.param("received")) == (
        "first.example.com",
        4000,
        "16",
        "2001:db8::1",
    )
    assert str(via) == "SIP/2.0/UDP first.example.com:4000;ttl=16;maddr=224.2.0.1;received=2001:db8::1"


def test_serialize_always_writes_content_length():
    """serialize writes Content-Length, replacing a wrong one (RFC 3261 §18.3, §20.14)."""
    request = message_request(body=b"abc")
    wrong = SipRequest(request.method, request.uri, request.headers.add("Content-Length", "99"), request.body)
    data = serialize(wrong)
    assert data.count(b"Content-Length") == 1 and b"Content-Length: 3\r\n\r\nabc" in data


def test_headers_refuse_injection():
    """A CR or LF in a header value is refused, so nobody can inject rows."""
    with pytest.raises(ValueError):
        Headers([("Subject", "hi\r\nVia: evil")])


def test_headers_operations():
    """add, prepend, replace and remove return new header sets."""
    headers = Headers([("Via", "SIP/2.0/UDP a"), ("To", "<sip:b@c.example>")])
    assert headers.prepend("Via", "SIP/2.0/UDP z").get("via") == "SIP/2.0/UDP z"
    assert headers.add("Route", "<sip:p;lr>").get_all("Route") == ("<sip:p;lr>",)
    assert headers.replace("TO", "<sip:x@y.example>").get_all("To") == ("<sip:x@y.example>",)
    assert "To" not in headers.remove("t")
    assert "Via" in headers and len(headers) == 2


# --- datagrams (RFC 3261 §18.3) ----------------------------------------------------------


def _wire(request: SipRequest) -> bytes:
    return serialize(request)


def test_datagram_without_content_length_ends_at_packet_end():
    """Without Content-Length the body runs to the end of the datagram (RFC 3261 §18.3)."""
    data = _wire(message_request(body=b"hello")).replace(b"Content-Length: 5\r\n", b"")
    message = parse_datagram(data)
    assert message is not None and message.body == b"hello"


def test_datagram_extra_bytes_are_discarded():
    """Bytes beyond Content-Length MUST be discarded (RFC 3261 §18.3)."""
    message = parse_datagram(_wire(message_request(body=b"hello")) + b"trailing junk")
    assert message is not None and message.body == b"hello"


def test_short_request_body_is_answerable_400():
    """A request shorter than its Content-Length gets a 400 (RFC 3261 §18.3 SHOULD)."""
    data = _wire(message_request(body=b"hello"))[:-2]
    with pytest.raises(SipParseError) as caught:
        parse_datagram(data)
    assert caught.value.status == 400 and caught.value.request is not None


def test_short_response_body_is_dropped():
    """A response shorter than its Content-Length MUST be discarded (RFC 3261 §18.3)."""
    response = make_response(message_request(), 200, body=b"body")
    with pytest.raises(SipParseError) as caught:
        parse_datagram(serialize(response)[:-1])
    assert caught.value.request is None


def test_crlf_datagram_is_a_keepalive():
    """A datagram of only CRLFs is a keep-alive, not an error."""
    assert parse_datagram(b"\r\n\r\n") is None


def test_other_sip_version_is_505():
    """SIP/3.0 is answered with 505 Version Not Supported (RFC 3261 §21.5.6)."""
    data = _wire(message_request()).replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1)
    with pytest.raises(SipParseError) as caught:
        parse_datagram(data)
    assert caught.value.status == 505 and caught.value.request is not None


def test_missing_call_id_cannot_be_answered():
    """Without Call-ID no response can be built (RFC 3261 §8.2.6.2), so it is dropped."""
    data = _wire(message_request()).replace(b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n", b"")
    with pytest.raises(SipParseError) as caught:
        parse_datagram(data)
    assert caught.value.status == 400 and caught.value.request is None


def test_cseq_method_mismatch_is_answerable_400():
    """A CSeq method that differs from the request method gets 400 (RFC 3261 §8.1.1.5)."""
    data = _wire(message_request()).replace(b"CSeq: 1 MESSAGE", b"CSeq: 1 OPTIONS")
    with pytest.raises(SipParseError) as caught:
        parse_datagram(data)
    assert caught.value.status == 400
    assert caught.value.request is not None and caught.value.request.method == "MESSAGE"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"Max-Forwards: 70", b"Max-Forwards: 256"),  # §20.22: 0-255
        (b"CSeq: 1 MESSAGE", b"CSeq: 4294967296 MESSAGE"),  # §20.16: 32-bit
        (b"Content-Type: text/plain", b"Content-Type: text"),
        (b"MESSAGE sip:bob", b"MESSAGE  sip:bob"),  # §7.1: single SP
        (b"To: Bob", b"To Bob"),
        (b"From: Alice <sip:alice@atlanta.example.com>", b"From: <sip:alice@atlanta.example.com"),
    ],
)
def test_malformed_requests_are_400(old, new):
    """Malformed start lines and mandatory headers raise SipParseError(400)."""
    with pytest.raises(SipParseError) as caught:
        parse_datagram(_wire(message_request()).replace(old, new))
    assert caught.value.status == 400


def test_response_parses():
    """A status line with a UTF-8 reason phrase parses (RFC 3261 §7.2)."""
    response = make_response(message_request(), 404, "Nicht gefunden, weg: ü", to_tag="x")
    parsed = parse_datagram(serialize(response))
    assert isinstance(parsed, SipResponse)
    assert (parsed.status, parsed.reason, parsed.to_tag) == (404, "Nicht gefunden, weg: ü", "x")


# --- streams (RFC 3261 §18.3, RFC 5626 §3.5.1) ------------------------------------------


def _events(parser: StreamParser) -> list[object]:
    out: list[object] = []
    while (event := parser.next_event()) is not NEED_DATA:
        out.append(event)
    return out


def test_stream_frames_two_messages_in_one_chunk():
    """Two messages in one read come out as two events."""
    parser = StreamParser()
    parser.receive_data(UTF8_MESSAGE + UTF8_MESSAGE)
    events = _events(parser)
    assert len(events) == 2 and all(isinstance(e, SipRequest) for e in events)
    assert parser.buffered == 0


def test_stream_byte_by_byte():
    """A message fed one byte at a time comes out once, complete."""
    parser = StreamParser()
    events = []
    for byte in UTF8_MESSAGE:
        parser.receive_data(bytes([byte]))
        events += _events(parser)
    assert events == [parse_datagram(UTF8_MESSAGE)]


def test_stream_keepalives():
    """CRLFCRLF is a ping, a lone CRLF a pong (RFC 5626 §3.5.1); both stay out of messages."""
    parser = StreamParser()
    parser.receive_data(b"\r\n\r\n" + UTF8_MESSAGE + b"\r\n")
    events = _events(parser)
    assert [type(e) for e in events] == [KeepAlivePing, SipRequest, KeepAlivePong]


def test_stream_needs_content_length():
    """On a stream a message without Content-Length cannot be framed (RFC 3261 §18.3)."""
    parser = StreamParser()
    parser.receive_data(UTF8_MESSAGE.replace(b"Content-Length: 13\r\n", b""))
    with pytest.raises(SipParseError) as caught:
        parser.next_event()
    assert caught.value.fatal and caught.value.status == 400 and caught.value.request is not None
    with pytest.raises(SipParseError):
        parser.next_event()  # the stream stays broken: the connection must be closed


def test_stream_header_section_is_bounded():
    """A header section over the limit is a fatal 513 Message Too Large."""
    parser = StreamParser(max_header_size=256)
    parser.receive_data(b"MESSAGE sip:a@b SIP/2.0\r\nSubject: " + b"x" * 300)
    with pytest.raises(SipParseError) as caught:
        parser.next_event()
    assert (caught.value.status, caught.value.fatal) == (513, True)


def test_stream_body_is_bounded():
    """A Content-Length over the body limit is a fatal 413, answerable before closing."""
    parser = StreamParser(max_body_size=4)
    parser.receive_data(UTF8_MESSAGE.partition(b"\r\n\r\n")[0] + b"\r\n\r\n")
    with pytest.raises(SipParseError) as caught:
        parser.next_event()
    assert (caught.value.status, caught.value.fatal) == (413, True)
    assert caught.value.request is not None


def test_conflicting_content_lengths_are_fatal():
    """Two different Content-Length values make framing ambiguous: fatal 400."""
    parser = StreamParser()
    parser.receive_data(UTF8_MESSAGE.replace(b"Content-Length: 13\r\n", b"Content-Length: 13\r\nl: 3\r\n"))
    with pytest.raises(SipParseError) as caught:
        parser.next_event()
    assert caught.value.fatal


def test_stream_survives_a_bad_message():
    """A malformed but framed message raises once; the next message still parses (G9)."""
    bad = UTF8_MESSAGE.replace(b"CSeq: 1 MESSAGE", b"CSeq: x MESSAGE")
    parser = StreamParser()
    parser.receive_data(bad + UTF8_MESSAGE)
    with pytest.raises(SipParseError) as caught:
        parser.next_event()
    assert not caught.value.fatal
    assert isinstance(parser.next_event(), SipRequest)


# --- responses (RFC 3261 §8.2.6) ---------------------------------------------------------


def test_make_response_copies_and_tags():
    """Via (all, in order), From, Call-ID, CSeq are copied and a To tag added (§8.2.6.2)."""
    request = message_request()
    request = SipRequest(request.method, request.uri, request.headers.add("Via", "SIP/2.0/UDP second"))
    response = make_response(request, 202, to_tag="b7")
    assert response.reason == "Accepted"
    assert response.headers.get_all("Via") == request.headers.get_all("Via")
    assert (response.call_id, response.cseq, response.from_tag, response.to_tag) == (
        request.call_id,
        request.cseq,
        "1928301774",
        "b7",
    )


def test_make_response_keeps_existing_to_tag():
    """An in-dialog To tag is kept as it was (RFC 3261 §8.2.6.2)."""
    request = message_request()
    request = SipRequest(
        request.method, request.uri, request.headers.replace("To", "<sip:b@c.example>;tag=z")
    )
    assert make_response(request, 200).to_tag == "z"


def test_100_trying_has_no_tag_and_copies_timestamp():
    """A 100 needs no To tag and copies Timestamp (RFC 3261 §8.2.6.1)."""
    request = message_request()
    request = SipRequest(request.method, request.uri, request.headers.add("Timestamp", "54"))
    response = make_response(request, 100)
    assert response.to_tag is None and response.headers.get("Timestamp") == "54"


# --- reference/sip.md §4.1: inputs twisted.protocols.sip gets wrong ------------------------


def test_twisted_sip_probe_inputs():
    """sips/tel URIs, IPv6 Via, two hops per line, '<' in display names, valueless params."""
    data = (
        b"MESSAGE sips:bob@example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/TLS [::1]:5061;branch=z9hG4bKa, SIP/2.0/UDP g:5060;branch=z9hG4bKb\r\n"
        b'From: "Bob <the builder>" <tel:+1-555-0100>;tag=t\r\n'
        b"To: <sip:bob@example.com>;foo\r\n"
        b"Call-ID: c\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
    )
    message = parse_datagram(data)
    assert message is not None
    assert [v.branch for v in message.vias] == ["z9hG4bKa", "z9hG4bKb"]
    assert message.from_address.display_name == "Bob <the builder>"
    assert message.to_address.params == (("foo", None),)
    assert b"Content-Length: 0" in serialize(message)


# --- fuzzing ------------------------------------------------------------------------------


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_datagram_parser_only_raises_sip_parse_error(data):
    """Arbitrary bytes either parse or raise SipParseError, never anything else."""
    with contextlib.suppress(SipParseError):
        parse_datagram(data)


@settings(max_examples=300)
@given(st.binary(max_size=200).map(lambda tail: UTF8_MESSAGE[: len(tail) % len(UTF8_MESSAGE)] + tail))
def test_datagram_parser_on_mangled_messages(data):
    """A truncated real message plus garbage parses or raises SipParseError only."""
    with contextlib.suppress(SipParseError):
        parse_datagram(data)


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=60), max_size=12))
def test_stream_parser_only_raises_sip_parse_error(chunks):
    """Arbitrary chunks into the stream parser give events or SipParseError only."""
    parser = StreamParser(max_header_size=512, max_body_size=128)
    for chunk in [UTF8_MESSAGE, *chunks]:
        parser.receive_data(chunk)
        try:
            _events(parser)
        except SipParseError as exc:
            if exc.fatal:
                return


@given(
    body=st.binary(max_size=200),
    subject=st.text(alphabet=st.characters(exclude_categories=("Cs", "Cc")), max_size=30),
    split=st.integers(min_value=0, max_value=400),
)
def test_serialize_parse_round_trip(body, subject, split):
    """Any body and header text survive serialize then parse, on a datagram and a stream."""
    request = message_request(body=body)
    request = SipRequest(request.method, request.uri, request.headers.add("Subject", subject), body)
    data = serialize(request)
    expected = SipRequest(
        request.method, request.uri, request.headers.add("Content-Length", str(len(body))), body
    )
    assert parse_datagram(data) == expected
    parser = StreamParser()
    parser.receive_data(data[:split])
    parser.receive_data(data[split:])
    assert _events(parser) == [expected]
