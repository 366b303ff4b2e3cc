"""SIP/SIPS/tel URIs and name-addr addresses (RFC 3261 §19.1, §20.10, §25.1; RFC 3966)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugins.sip.errors import SipParseError
from plugins.sip.uri import Address, SipUri, TelUri, escape_user, parse_address, parse_uri


def test_full_sip_uri():
    """Every component of a SIP URI is read (RFC 3261 §19.1.1 general form)."""
    uri = parse_uri("sip:alice@atlanta.com:5070;transport=TCP;lr?subject=project%20x&priority=urgent")
    assert uri == SipUri(
        scheme="sip",
        host="atlanta.com",
        user="alice",
        port=5070,
        params=(("transport", "TCP"), ("lr", None)),
        headers=(("subject", "project x"), ("priority", "urgent")),
    )
    assert uri.transport == "tcp"
    assert uri.has_param("lr") and uri.param("lr") is None


def test_password_is_dropped():
    """A password in the userinfo is parsed and dropped (RFC 3261 §19.1.1: NOT RECOMMENDED)."""
    uri = parse_uri("sip:alice:secretword@atlanta.com;transport=tcp")
    assert uri.user == "alice"
    assert str(uri) == "sip:alice@atlanta.com;transport=tcp"


def test_sips_uri():
    """sips: URIs parse and say they are secure (RFC 3261 §19.1)."""
    uri = parse_uri("sips:bob@example.com")
    assert isinstance(uri, SipUri) and uri.secure and str(uri) == "sips:bob@example.com"


def test_ipv6_reference_with_port():
    """An IPv6 reference keeps its port and is written back in brackets (RFC 3261 §25.1)."""
    uri = parse_uri("sip:bob@[2001:DB8:0:0::1]:5060")
    assert isinstance(uri, SipUri)
    assert (uri.host, uri.port) == ("2001:db8::1", 5060)
    assert str(uri) == "sip:bob@[2001:db8::1]:5060"


def test_escaped_user_part():
    """Escaped octets in the user part decode, and re-escape on output (RFC 3261 §19.1.2)."""
    uri = parse_uri("sip:alice%40example.org@gateway.example.com")
    assert isinstance(uri, SipUri) and uri.user == "alice@example.org"
    assert str(uri) == "sip:alice%40example.org@gateway.example.com"


def test_user_part_keeps_user_unreserved_characters():
    """';', '=' and '?' may stay unescaped in a user part (RFC 3261 §25.1 user-unreserved)."""
    uri = parse_uri("sip:alice;day=tuesday@atlanta.com")
    assert isinstance(uri, SipUri) and uri.user == "alice;day=tuesday" and uri.params == ()
    assert str(uri) == "sip:alice;day=tuesday@atlanta.com"


def test_escape_user_encodes_non_ascii_as_utf8():
    """Non-ASCII user parts are escaped as UTF-8 octets (RFC 3261 §19.1.2)."""
    assert escape_user("jürgen b@x") == "j%C3%BCrgen%20b%40x"


def test_host_is_case_insensitive():
    """Hosts are lower-cased; user parts keep their case (RFC 3261 §19.1.4)."""
    uri = parse_uri("sip:Alice@AtLanTa.CoM")
    assert isinstance(uri, SipUri) and (uri.user, uri.host) == ("Alice", "atlanta.com")


def test_phone_user_param():
    """user=phone is an ordinary uri-parameter (RFC 3261 §19.1.1)."""
    uri = parse_uri("sip:+1-212-555-1212:1234@gateway.com;user=phone")
    assert isinstance(uri, SipUri) and uri.user == "+1-212-555-1212" and uri.param("user") == "phone"


def test_global_tel_uri():
    """A global tel: number with an extension (RFC 3966 §3)."""
    uri = parse_uri("tel:+1-201-555-0123;ext=1234")
    assert uri == TelUri("+1-201-555-0123", (("ext", "1234"),))
    assert isinstance(uri, TelUri) and uri.is_global and uri.digits == "+12015550123"
    assert str(uri) == "tel:+1-201-555-0123;ext=1234"


def test_local_tel_uri_needs_phone_context():
    """A local tel: number MUST carry phone-context (RFC 3966 §5.1.5)."""
    assert parse_uri("tel:7042;phone-context=example.com") == TelUri(
        "7042", (("phone-context", "example.com"),)
    )
    with pytest.raises(SipParseError) as caught:
        parse_uri("tel:7042")
    assert caught.value.status == 400


def test_other_scheme_is_416():
    """A well-formed URI of another scheme carries 416 Unsupported URI Scheme (RFC 3261 §21.4.14)."""
    with pytest.raises(SipParseError) as caught:
        parse_uri("mailto:alice@example.com")
    assert caught.value.status == 416


@pytest.mark.parametrize(
    "bad",
    [
        "sip:",
        "sip:@example.com",  # §19.1.1: with an @ the user MUST NOT be empty
        "sip:alice@exa mple.com",
        "sip:alice@example.com:99999",
        "sip:alice@example.com:",
        "sip:alice@[::1",
        "sip:alice@[zz::1]",
        "sip:alice@300.1.1.1",
        "sip:alice@-bad-.com",
        "sip:alice@example.com;lr;lr",  # §19.1.1: a parameter MUST NOT appear twice
        "sip:al%zzice@example.com",
        "sip:al%ffice@example.com",  # escaped octets must be UTF-8
        "sip:alice@example.com;=x",
        "tel:+",
        "tel:+1;ext=1;ext=2",
        "no-colon",
    ],
)
def test_malformed_uris_are_400(bad):
    """Malformed URIs raise SipParseError with status 400."""
    with pytest.raises(SipParseError) as caught:
        parse_uri(bad)
    assert caught.value.status == 400


def test_name_addr_with_quoted_display_name_and_tag():
    """A quoted display name, angle-bracketed URI and header parameter (RFC 3261 §20.10)."""
    address = parse_address('"Alice" <sip:alice@example.com>;tag=abc')
    assert address == Address(parse_uri("sip:alice@example.com"), "Alice", (("tag", "abc"),))
    assert address.tag == "abc"
    assert str(address) == '"Alice" <sip:alice@example.com>;tag=abc'


def test_display_name_with_quotes_commas_and_brackets():
    """Escaped quotes, commas and angle brackets survive in a quoted display name."""
    address = parse_address('"Bob \\"the\\" <builder>, Jr." <sip:bob@example.com>')
    assert address.display_name == 'Bob "the" <builder>, Jr.'
    assert parse_address(str(address)) == address


def test_token_display_name():
    """An unquoted display name is a sequence of tokens (RFC 3261 §25.1 display-name)."""
    address = parse_address("Bob  Smith <sip:bob@example.com>")
    assert address.display_name == "Bob Smith"


def test_addr_spec_parameters_are_header_parameters():
    """Without '<>', parameters after the URI belong to the header (RFC 3261 §20.10)."""
    address = parse_address("sip:carol@chicago.com;tag=887s")
    assert address.tag == "887s"
    assert isinstance(address.uri, SipUri) and address.uri.params == ()


def test_uri_parameters_inside_brackets_stay_with_the_uri():
    """Inside '<>' the ';lr' belongs to the URI; after '>' 'expires' to the header."""
    address = parse_address("<sip:proxy.example.com;lr>;expires=60")
    assert isinstance(address.uri, SipUri) and address.uri.has_param("lr")
    assert address.param("expires") == "60"


def test_parameter_without_value():
    """A header parameter without a value parses (twisted.protocols.sip raises on it)."""
    address = parse_address("<sip:bob@example.com>;foo")
    assert address.params == (("foo", None),)


def test_quoted_header_parameter_round_trip():
    """A quoted header parameter value is unquoted and quoted again on output."""
    address = parse_address('<sip:a@b.example>;+sip.instance="<urn:uuid:f81d4fae>"')
    assert address.param("+sip.instance") == "<urn:uuid:f81d4fae>"
    assert parse_address(str(address)) == address


def test_with_tag_replaces_tag():
    """with_tag sets the tag parameter once."""
    assert parse_address("<sip:b@c.example>;tag=1").with_tag("2").params == (("tag", "2"),)


@pytest.mark.parametrize(
    "bad",
    [
        '"unterminated <sip:a@b.example>',
        '"Alice" sip:a@b.example',
        "<sip:a@b.example",
        "Al@ce <sip:a@b.example>",
        "sip:a@b.example?x=y",  # §20.10: headers need the name-addr form
        "<sip:a@b.example>;tag=1;tag=2",  # §7.3.1: no repeated parameter
        "<sip:a@b.example>;tag=a b",
    ],
)
def test_malformed_addresses_are_400(bad):
    """Malformed addresses raise SipParseError with status 400."""
    with pytest.raises(SipParseError) as caught:
        parse_address(bad)
    assert caught.value.status == 400


@given(st.text(max_size=60))
def test_uri_parser_only_raises_sip_parse_error(text):
    """Any text either parses as a URI or raises SipParseError."""
    with contextlib.suppress(SipParseError):
        parse_uri(text)


@given(st.text(max_size=80))
def test_address_parser_only_raises_sip_parse_error(text):
    """Any text either parses as an address or raises SipParseError."""
    with contextlib.suppress(SipParseError):
        parse_address(text)


_hosts = st.sampled_from(["example.com", "10.0.0.1", "2001:db8::1", "a-b.c.example."])
_values = st.text(alphabet=st.characters(exclude_categories=("Cs",)), min_size=1, max_size=12)


@given(
    user=st.none() | st.text(alphabet=st.characters(exclude_categories=("Cs",)), min_size=1, max_size=20),
    host=_hosts,
    port=st.none() | st.integers(1, 65535),
    params=st.dictionaries(st.sampled_from(["transport", "lr", "maddr", "x-y"]), st.none() | _values),
    display=st.none() | st.text(alphabet=st.characters(exclude_categories=("Cs", "Cc")), max_size=12),
)
def test_uri_and_address_round_trip(user, host, port, params, display):
    """Formatting then parsing gives back the same URI and address, escapes included."""
    uri = SipUri("sip", host, user, port, tuple(params.items()))
    assert parse_uri(str(uri)) == uri
    address = Address(uri, display, (("tag", "x1"),))
    assert parse_address(str(address)) == address


def test_unquoted_utf8_display_name():
    """COMPAT: an unquoted non-ASCII display name is accepted; ASCII separators are not."""
    assert parse_address("Jürgen Groß <sip:j@example.com>").display_name == "Jürgen Groß"
