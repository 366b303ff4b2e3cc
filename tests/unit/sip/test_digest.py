"""Digest authentication client (RFC 3261 §22, RFC 2617, RFC 7616, RFC 8760)."""

from __future__ import annotations

import contextlib
import hashlib
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugins.sip.codec import SipRequest
from plugins.sip.digest import (
    Challenge,
    Credentials,
    CredentialsRejected,
    DigestClient,
    NoUsableChallenge,
    digest_response,
    parse_challenges,
)
from plugins.sip.errors import SipParseError
from tests.unit.sip.messages import challenge, message_request

# RFC 2617 §3.5 "Example": the challenge, and the values of the Authorization it shows.
RFC2617_CHALLENGE = (
    'Digest realm="testrealm@host.com", qop="auth,auth-int", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)
RFC2617_RESPONSE = "6629fae49393a05397450978507c4ef1"

# RFC 7616 §3.9.1 "Example with SHA-256 and MD5": one challenge per algorithm.
RFC7616_SHA256 = (
    'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, '
    'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
)
RFC7616_MD5 = RFC7616_SHA256.replace("SHA-256", "MD5")
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC7616_SHA256_RESPONSE = "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
RFC7616_MD5_RESPONSE = "8ca523f5e9506fed4657c9700eebdbec"


def _params(header: str) -> dict[str, str]:
    (parsed,) = parse_challenges(header)
    return {name: value or "" for name, value in parsed.params}


def _client(password: str, cnonce: str) -> DigestClient:
    return DigestClient(Credentials("Mufasa", password), cnonce_factory=lambda: cnonce)


def test_rfc2617_example():
    """RFC 2617 §3.5: Mufasa / "Circle Of Life", GET /dir/index.html gives the RFC's response."""
    (offer,) = parse_challenges(RFC2617_CHALLENGE)
    header = _client("Circle Of Life", "0a4f113b").answer(offer, method="GET", uri="/dir/index.html")
    assert _params(header) == {
        "username": "Mufasa",
        "realm": "testrealm@host.com",
        "nonce": "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        "uri": "/dir/index.html",
        "qop": "auth",
        "nc": "00000001",
        "cnonce": "0a4f113b",
        "response": RFC2617_RESPONSE,
        "opaque": "5ccc069c403ebaf9f0171e9517f40e41",
    }


@pytest.mark.parametrize(
    ("algorithm", "expected"), [("SHA-256", RFC7616_SHA256_RESPONSE), ("MD5", RFC7616_MD5_RESPONSE)]
)
def test_rfc7616_examples(algorithm, expected):
    """RFC 7616 §3.9.1: the SHA-256 and MD5 responses for Mufasa / "Circle of Life"."""
    assert (
        digest_response(
            algorithm=algorithm,
            username="Mufasa",
            realm="http-auth@example.org",
            password="Circle of Life",
            method="GET",
            uri="/dir/index.html",
            nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            qop="auth",
            nc="00000001",
            cnonce=RFC7616_CNONCE,
        )
        == expected
    )


def test_rfc7616_server_offering_both_gets_sha256():
    """Offered SHA-256 and MD5 (RFC 7616 §3.9.1), the client answers SHA-256 with the RFC's values."""
    client = _client("Circle of Life", RFC7616_CNONCE)
    challenges = parse_challenges(RFC7616_SHA256) + parse_challenges(RFC7616_MD5)
    (chosen,) = client.select(challenges)
    params = _params(client.answer(chosen, method="GET", uri="/dir/index.html"))
    assert params["algorithm"] == "SHA-256"
    assert params["response"] == RFC7616_SHA256_RESPONSE
    assert params["opaque"] == "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
    assert (params["qop"], params["nc"], params["cnonce"]) == ("auth", "00000001", RFC7616_CNONCE)


def test_md5_first_in_the_response_still_loses_to_sha256():
    """Order does not matter: the strongest supported algorithm wins (RFC 8760 §2)."""
    client = _client("x", "c")
    chosen = client.select(parse_challenges(RFC7616_MD5) + parse_challenges(RFC7616_SHA256))
    assert [c.algorithm for c in chosen] == ["SHA-256"]


def test_sha512_256_beats_sha256_and_unknown_algorithms_are_ignored():
    """SHA-512-256 is preferred (RFC 8760); an unknown algorithm is skipped."""
    client = _client("x", "c")
    challenges = [
        *parse_challenges('Digest realm="r", nonce="1", qop="auth", algorithm=SHA-256'),
        *parse_challenges('Digest realm="r", nonce="2", qop="auth", algorithm=SHA-512-256'),
        *parse_challenges('Digest realm="r", nonce="3", qop="auth", algorithm=SHA3-999'),
    ]
    assert [c.nonce for c in client.select(challenges)] == ["2"]


def test_sess_variant():
    """-sess hashes HA1 again with nonce and cnonce (RFC 7616 §3.4.2)."""
    h = lambda s: hashlib.sha256(s.encode()).hexdigest()  # noqa: E731
    ha1 = h(f"{h('u:r:p')}:n:cn")
    expected = h(f"{ha1}:n:00000001:cn:auth:{h('MESSAGE:sip:bob@b.example')}")
    assert (
        digest_response(
            algorithm="SHA-256-sess",
            username="u",
            realm="r",
            password="p",
            method="MESSAGE",
            uri="sip:bob@b.example",
            nonce="n",
            qop="auth",
            nc="00000001",
            cnonce="cn",
        )
        == expected
    )


def test_sess_without_qop_is_unusable():
    """-sess needs a cnonce, which may only go with qop (RFC 3261 §22.4 item 8)."""
    (offer,) = parse_challenges('Digest realm="r", nonce="n", algorithm=MD5-sess')
    assert not offer.usable
    assert _client("x", "c").select([offer]) == []


def test_no_qop_uses_rfc2069_form():
    """Without qop the response is H(HA1:nonce:HA2) and no nc/cnonce are sent (RFC 2617 §3.2.2.1)."""
    md5 = lambda s: hashlib.md5(s.encode()).hexdigest()  # noqa: E731
    (offer,) = parse_challenges('Digest realm="r", nonce="n"')
    params = _params(_client("p", "c").answer(offer, method="MESSAGE", uri="sip:b@c.example"))
    assert "qop" not in params and "nc" not in params and "cnonce" not in params
    assert "algorithm" not in params
    assert params["response"] == md5(f"{md5('Mufasa:r:p')}:n:{md5('MESSAGE:sip:b@c.example')}")


def test_auth_int_hashes_the_body():
    """With only auth-int offered, HA2 includes H(body) (RFC 7616 §3.4.3)."""
    md5 = lambda s: hashlib.md5(s).hexdigest()  # noqa: E731
    (offer,) = parse_challenges('Digest realm="r", nonce="n", qop="auth-int"')
    params = _params(_client("p", "c").answer(offer, method="MESSAGE", uri="sip:b@c", body=b"hi"))
    ha1 = md5(b"Mufasa:r:p")
    ha2 = md5(f"MESSAGE:sip:b@c:{md5(b'hi')}".encode())
    assert params["qop"] == "auth-int"
    assert params["response"] == md5(f"{ha1}:n:00000001:c:auth-int:{ha2}".encode())


def test_sip_uri_is_quoted_and_is_the_request_uri():
    """The uri directive is quoted (RFC 3261 §22.4 item 2) and holds the Request-URI."""
    request = message_request()
    response = challenge(request, 'Digest realm="atlanta.example.com", nonce="n", qop="auth"')
    retry = _client("p", "c").authorize(request, response)
    (value,) = retry.headers.get_all("Authorization")
    assert 'uri="sip:bob@biloxi.example.com"' in value and "qop=auth" in value and "nc=00000001" in value


def test_nonce_count_rises_per_nonce():
    """nc counts uses of one nonce and restarts at 1 for a new nonce (RFC 7616 §3.4)."""
    client = _client("p", "c")
    (first,) = parse_challenges('Digest realm="r", nonce="n1", qop="auth"')
    (second,) = parse_challenges('Digest realm="r", nonce="n2", qop="auth"')
    counts = [
        _params(client.answer(c, method="MESSAGE", uri="sip:b@c"))["nc"]
        for c in (first, first, second, first)
    ]
    assert counts == ["00000001", "00000002", "00000001", "00000003"]


def test_cnonce_is_fresh_each_time():
    """Each answer takes a new cnonce from the factory."""
    numbers = itertools.count(1)
    client = DigestClient(Credentials("u", "p"), cnonce_factory=lambda: f"c{next(numbers)}")
    (offer,) = parse_challenges('Digest realm="r", nonce="n", qop="auth"')
    cnonces = [_params(client.answer(offer, method="M", uri="sip:x"))["cnonce"] for _ in range(2)]
    assert cnonces == ["c1", "c2"]


def test_401_gives_authorization_and_407_proxy_authorization():
    """401 → Authorization, 407 → Proxy-Authorization (RFC 3261 §22.2, §22.3)."""
    request = message_request()
    client = _client("p", "c")
    www = client.authorize(request, challenge(request, 'Digest realm="a", nonce="1"'))
    proxy = client.authorize(request, challenge(request, 'Digest realm="a", nonce="1"', proxy=True))
    assert "Authorization" in www.headers and "Proxy-Authorization" not in www.headers
    assert "Proxy-Authorization" in proxy.headers and "Authorization" not in proxy.headers
    assert (www.method, www.uri, www.body, www.cseq) == (
        request.method,
        request.uri,
        request.body,
        request.cseq,
    )


def test_each_realm_gets_its_own_header():
    """Two proxies' challenges (two realms) each get a Proxy-Authorization (RFC 3261 §22.3)."""
    request = message_request()
    response = challenge(
        request,
        'Digest realm="atlanta", nonce="1", qop="auth"',
        'Digest realm="biloxi", nonce="2", qop="auth"',
        proxy=True,
    )
    retry = DigestClient(
        [Credentials("alice", "pa", realm="atlanta"), Credentials("alice2", "pb", realm="biloxi")],
        cnonce_factory=lambda: "c",
    ).authorize(request, response)
    realms = {
        p["realm"]: p["username"] for p in (_params(v) for v in retry.headers.get_all("Proxy-Authorization"))
    }
    assert realms == {"atlanta": "alice", "biloxi": "alice2"}


def test_stale_nonce_retries_with_the_new_nonce():
    """stale=true: answer the new nonce with the same credentials, nc back to 1 (RFC 7616 §3.3)."""
    request = message_request()
    client = _client("p", "c")
    first = client.authorize(request, challenge(request, 'Digest realm="r", nonce="old", qop="auth"'))
    second = client.authorize(
        first,
        challenge(first, 'Digest realm="r", nonce="new", qop="auth", stale=TRUE'),
    )
    (value,) = second.headers.get_all("Authorization")  # the old one was replaced
    assert (_params(value)["nonce"], _params(value)["nc"]) == ("new", "00000001")


def test_second_challenge_without_stale_means_wrong_credentials():
    """A realm challenged again without stale=true rejects the credentials: no loop."""
    request = message_request()
    client = _client("wrong", "c")
    retry = client.authorize(request, challenge(request, 'Digest realm="r", nonce="1"'))
    with pytest.raises(CredentialsRejected) as caught:
        client.authorize(retry, challenge(retry, 'Digest realm="r", nonce="2"'))
    assert caught.value.realm == "r"


def test_no_credentials_for_realm():
    """Credentials pinned to another realm cannot answer: NoUsableChallenge."""
    request = message_request()
    client = DigestClient(Credentials("u", "p", realm="elsewhere"))
    with pytest.raises(NoUsableChallenge):
        client.authorize(request, challenge(request, 'Digest realm="r", nonce="1"'))


def test_non_digest_scheme_is_unusable_but_does_not_hide_digest():
    """A Basic or token68 challenge beside Digest is skipped; Digest is answered."""
    request = message_request()
    response = challenge(request, "Negotiate YIIB==")
    response = response.__class__(
        401, "Unauthorized", response.headers.add("WWW-Authenticate", 'Digest realm="r", nonce="n"')
    )
    retry = _client("p", "c").authorize(request, response)
    assert _params(retry.headers.get("Authorization") or "")["realm"] == "r"


def test_userhash():
    """userhash=true sends H(username:realm) as the username (RFC 7616 §3.4.4)."""
    (offer,) = parse_challenges('Digest realm="r", nonce="n", qop="auth", algorithm=SHA-256, userhash=true')
    params = _params(_client("p", "c").answer(offer, method="M", uri="sip:x"))
    assert params["username"] == hashlib.sha256(b"Mufasa:r").hexdigest()
    assert params["userhash"] == "true"


def test_preemptive_credentials_reuse_the_nonce_with_next_count():
    """After a 407 from the outbound proxy, later requests carry the next nc (RFC 3261 §22.3)."""
    request = message_request()
    client = _client("p", "c")
    client.authorize(request, challenge(request, 'Digest realm="r", nonce="n", qop="auth"', proxy=True))
    later = client.preemptive(message_request(cseq=2, branch="z9hG4bKother"), "r", proxy=True)
    assert _params(later.headers.get("Proxy-Authorization") or "")["nc"] == "00000002"


def test_preemptive_without_a_cached_challenge_changes_nothing():
    """No challenge seen for that realm: the request goes out as it was."""
    request = message_request()
    assert _client("p", "c").preemptive(request, "r", proxy=True) == request


def test_challenge_parsing():
    """Quoted and unquoted values, BWS around '=', and a qop list with spaces (RFC 7235 §2.1)."""
    (offer,) = parse_challenges('Digest realm = "a, b", nonce=abc/def=, qop="auth , auth-int",stale=true')
    assert offer.realm == "a, b" and offer.nonce == "abc/def="
    assert offer.qop_options == ("auth", "auth-int") and offer.stale
    assert offer.algorithm == "MD5"


def test_several_challenges_in_one_value():
    """HTTP-style values with several challenges split per scheme (RFC 7235 §4.1)."""
    challenges = parse_challenges('Digest realm="a", nonce="1", Basic realm="b", Digest realm="c", nonce="2"')
    assert [(c.scheme, c.realm) for c in challenges] == [("Digest", "a"), ("Basic", "b"), ("Digest", "c")]
    assert isinstance(challenges[0], Challenge) and challenges[1].is_digest is False


@pytest.mark.parametrize(
    "bad", ['realm="a"', 'Digest realm="a', "Digest realm=a b", 'Digest realm="a", realm="b"']
)
def test_malformed_challenges(bad):
    """Malformed challenge values raise SipParseError."""
    with pytest.raises(SipParseError):
        parse_challenges(bad)


def test_credentials_repr_hides_password():
    """Credentials never show their password in a repr (reference/sip.md §2.8)."""
    assert "hunter2" not in repr(Credentials("u", "hunter2"))


@given(st.text(max_size=120))
def test_challenge_parser_only_raises_sip_parse_error(text):
    """Any text either parses as challenges or raises SipParseError."""
    with contextlib.suppress(SipParseError):
        parse_challenges(text)


def test_authorize_keeps_other_headers():
    """The retried request keeps every other header and the body (RFC 3261 §22.2)."""
    request = message_request()
    retry = _client("p", "c").authorize(request, challenge(request, 'Digest realm="r", nonce="n"'))
    assert isinstance(retry, SipRequest)
    assert [h for h in retry.headers if h[0] != "Authorization"] == list(request.headers)
