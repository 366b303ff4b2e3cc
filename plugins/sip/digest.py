"""Digest authentication client for SIP, sans-I/O.

* RFC 3261 §22.2 (UAC answers 401 with Authorization and 407 with
  Proxy-Authorization, one per challenged realm), §22.3 (credential reuse), §22.4
  (SIP differences from RFC 2617: ``uri`` is quoted and is the Request-URI; an empty
  body hashes as H(""); a client that receives ``qop`` MUST send ``qop``).
* RFC 2617 §3.2.1-§3.2.2 (challenge and response directives, HA1/HA2, nc, cnonce).
* RFC 7616 §3.3-§3.5 (SHA-256, SHA-512-256, ``-sess`` variants, ``userhash``,
  ``stale``), §3.9.1 worked examples (tests).
* RFC 8760 §2 (SHA-256 and SHA-512-256 in SIP; several challenges per realm, one per
  algorithm).

:class:`DigestClient` turns a challenged request plus its 401/407 into the request
to resend; building that new transaction (CSeq + 1, new branch) is the caller's job
(RFC 3261 §22.2, §8.1.3.5).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from plugins.sip.codec import Headers, SipRequest, SipResponse
from plugins.sip.errors import SipParseError
from plugins.sip.grammar import (
    WHITESPACE,
    Params,
    check_unique,
    get_param,
    is_token,
    parse_quoted,
    quote,
    split_outside,
)


def _hasher(name: str) -> Callable[[bytes], str]:
    def digest(data: bytes) -> str:
        return hashlib.new(name, data).hexdigest()

    return digest


#: RFC 7616 §6.1 / RFC 8760 §2: the hash functions of the digest algorithms we support.
HASHES: Final[dict[str, Callable[[bytes], str]]] = {
    "MD5": _hasher("md5"),
    "SHA-256": _hasher("sha256"),
    "SHA-512-256": _hasher("sha512_256"),
}
#: Preference among supported algorithms: strongest first. RFC 8760 §2 lets a server
#: offer one challenge per algorithm for a realm; which one to answer is our policy.
_STRENGTH: Final = {"MD5": 0, "SHA-256": 1, "SHA-512-256": 2}


class AuthenticationError(Exception):
    """A challenge that cannot be answered; the request fails with the 401/407."""


class NoUsableChallenge(AuthenticationError):
    """No challenge has a supported scheme, algorithm and qop, or matching credentials."""


class CredentialsRejected(AuthenticationError):
    """We already sent credentials for this realm and were challenged again, not stale.

    RFC 3261 §22.1: "A UAC MUST NOT re-attempt requests with the credentials that have
    just been rejected (though the request may be retried if the nonce was stale)."
    RFC 7616 §3.3: without ``stale=true`` the username or password is wrong. Stop and
    tell the user.
    """

    def __init__(self, realm: str) -> None:
        super().__init__(f"credentials rejected for realm {realm!r}")
        self.realm = realm


@dataclass(frozen=True)
class Credentials:
    """A username and password, for one realm or (``realm=None``) for any realm.

    The authentication username may differ from the user part of the AOR
    (reference/sip.md §2.8: XEP-0077 collects it separately).
    """

    username: str
    password: str
    realm: str | None = None

    def __repr__(self) -> str:
        # Never let a password reach a log line (reference/sip.md §2.8).
        return f"Credentials(username={self.username!r}, password=<hidden>, realm={self.realm!r})"


@dataclass(frozen=True)
class Challenge:
    """One authentication challenge (RFC 2617 §3.2.1, RFC 7616 §3.3).

    :ivar scheme: the auth-scheme as sent (``Digest``).
    :ivar params: auth-params in order, names lower-cased, quoted values unquoted.
    :ivar proxy: it came in Proxy-Authenticate, so it is answered in Proxy-Authorization.
    """

    scheme: str
    params: Params
    proxy: bool = False

    def param(self, name: str) -> str | None:
        """The value of auth-param ``name``, or ``None``."""
        return get_param(self.params, name)

    @property
    def is_digest(self) -> bool:
        """Whether the scheme is Digest (schemes compare case-insensitively)."""
        return self.scheme.lower() == "digest"

    @property
    def realm(self) -> str:
        """The realm; RFC 7616 §3.3 makes it mandatory (missing counts as empty)."""
        return self.param("realm") or ""

    @property
    def nonce(self) -> str:
        """The server nonce (mandatory)."""
        return self.param("nonce") or ""

    @property
    def opaque(self) -> str | None:
        """The opaque value to echo unchanged (RFC 7616 §3.3)."""
        return self.param("opaque")

    @property
    def algorithm(self) -> str:
        """The algorithm token upper-cased; ``MD5`` when absent (RFC 2617 §3.2.1)."""
        return (self.param("algorithm") or "MD5").upper()

    @property
    def hash_name(self) -> str:
        """The algorithm without ``-SESS``."""
        return self.algorithm.removesuffix("-SESS")

    @property
    def session(self) -> bool:
        """Whether the algorithm is a ``-sess`` variant (RFC 7616 §3.4.2)."""
        return self.algorithm.endswith("-SESS")

    @property
    def qop_options(self) -> tuple[str, ...]:
        """The offered qop values, lower-cased (a quoted comma list, RFC 7616 §3.3)."""
        value = self.param("qop")
        if value is None:
            return ()
        return tuple(q.strip(WHITESPACE).lower() for q in value.split(",") if q.strip(WHITESPACE))

    @property
    def stale(self) -> bool:
        """``stale=true``: the nonce expired but the credentials were good (RFC 7616 §3.3)."""
        return (self.param("stale") or "").lower() == "true"

    @property
    def userhash(self) -> bool:
        """The server supports hashed usernames (RFC 7616 §3.4.4)."""
        return (self.param("userhash") or "").lower() == "true"

    def chosen_qop(self) -> str | None:
        """The qop we answer with: ``auth`` if offered, else ``auth-int``, else none.

        :raises NoUsableChallenge: if only unknown qop values are offered, or a
            ``-sess`` algorithm comes without qop (RFC 3261 §22.4 item 8: cnonce, which
            -sess needs, may only be sent with qop).
        """
        options = self.qop_options
        if not options:
            if self.session:
                raise NoUsableChallenge("-sess algorithm without qop")
            return None
        for qop in ("auth", "auth-int"):
            if qop in options:
                return qop
        raise NoUsableChallenge(f"unsupported qop {options!r}")

    @property
    def usable(self) -> bool:
        """Digest, a supported algorithm, a nonce, and a qop we can answer."""
        if not self.is_digest or self.hash_name not in HASHES or not self.nonce:
            return False
        try:
            self.chosen_qop()
        except NoUsableChallenge:
            return False
        return True


def parse_challenges(value: str, *, proxy: bool = False) -> list[Challenge]:
    """Parse a WWW-Authenticate or Proxy-Authenticate value into its challenges.

    SIP puts one challenge in each header row (RFC 3261 §25.1), but HTTP-style values
    with several comma-separated challenges (RFC 7235 §4.1) are accepted too. Also
    parses Authorization values (the same ``scheme auth-param, ...`` shape).
    """
    challenges: list[tuple[str, list[tuple[str, str | None]]]] = []
    for element in split_outside(value, ",", brackets=False):
        element = element.strip(WHITESPACE)
        if not element:
            continue  # RFC 7235 §4.1 list rules allow empty elements
        scheme = _SCHEME_RE.fullmatch(element)
        if scheme is not None and not (scheme["rest"] or "").startswith("="):
            # "Digest realm=..." starts a new challenge; "nonce = ..." (BWS, RFC 7235
            # §2.1) does not.
            challenges.append((scheme["scheme"], []))
            element = scheme["rest"] or ""
            if not element:
                continue
            if _TOKEN68_RE.fullmatch(element):
                # RFC 7235 §2.1: another scheme's token68 credentials (not Digest's).
                challenges[-1][1].append(("token68", element))
                continue
        if not challenges:
            raise SipParseError(f"auth-param before any scheme in {value!r}")
        challenges[-1][1].append(_parse_auth_param(element))
    out: list[Challenge] = []
    for scheme_name, params in challenges:
        check_unique(name for name, _ in params)
        out.append(Challenge(scheme_name, tuple(params), proxy))
    return out


_SCHEME_RE = re.compile(r"(?P<scheme>[^\s=,\"]+)(?:[ \t]+(?P<rest>.*))?", re.DOTALL)
_TOKEN68_RE = re.compile(r"[A-Za-z0-9._~+/-]+=*")


def _parse_auth_param(text: str) -> tuple[str, str]:
    """``auth-param = token EQUAL ( token / quoted-string )`` (RFC 7235 §2.1)."""
    name, eq, value = text.partition("=")
    name = name.strip(WHITESPACE).lower()
    value = value.strip(WHITESPACE)
    if not eq or not is_token(name):
        raise SipParseError(f"bad auth-param {text!r}")
    if value.startswith('"'):
        unquoted, end = parse_quoted(value, 0)
        if value[end:].strip(WHITESPACE):
            raise SipParseError(f"text after quoted auth-param {text!r}")
        return name, unquoted
    # COMPAT: some servers send unquoted values that are not strict tokens (e.g. a
    # base64 nonce with "/" or "="), so any run without separators is accepted.
    if not value or any(c in '",; \t' for c in value):
        raise SipParseError(f"bad auth-param value {text!r}")
    return name, value


def challenges_of(response: SipResponse) -> list[Challenge]:
    """Every challenge in a 401/407: WWW-Authenticate and Proxy-Authenticate rows, in order."""
    out: list[Challenge] = []
    for name, proxy in (("WWW-Authenticate", False), ("Proxy-Authenticate", True)):
        for value in response.headers.get_all(name):
            try:
                out += parse_challenges(value, proxy=proxy)
            except SipParseError:
                # One malformed row (perhaps another scheme's) must not hide a good
                # Digest challenge in the next row.
                continue
    return out


def digest_response(
    *,
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The ``response`` directive (RFC 2617 §3.2.2.1, RFC 7616 §3.4.1-§3.4.3).

    ``algorithm`` is ``MD5``, ``SHA-256`` or ``SHA-512-256``, optionally with ``-sess``.
    Strings are hashed as UTF-8 (SIP text is UTF-8, RFC 3261 §7).
    """
    algorithm = algorithm.upper()
    h = HASHES[algorithm.removesuffix("-SESS")]

    def hs(text: str) -> str:
        return h(text.encode("utf-8"))

    ha1 = hs(f"{username}:{realm}:{password}")
    if algorithm.endswith("-SESS"):
        # RFC 7616 §3.4.2: A1 = H(user:realm:passwd) ":" nonce-prime ":" cnonce-prime
        ha1 = hs(f"{ha1}:{nonce}:{cnonce}")
    # RFC 7616 §3.4.3: auth-int adds H(entity-body); RFC 3261 §22.4 item 7: an empty
    # body hashes as H("").
    ha2 = hs(f"{method}:{uri}:{h(body)}") if qop == "auth-int" else hs(f"{method}:{uri}")
    if qop is None:
        # RFC 2617 §3.2.2.1 (RFC 2069 compatibility): no qop, no nc, no cnonce.
        return hs(f"{ha1}:{nonce}:{ha2}")
    return hs(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def _random_cnonce() -> str:
    return secrets.token_hex(16)


def _header_name(proxy: bool) -> str:
    return "Proxy-Authorization" if proxy else "Authorization"


class DigestClient:
    """Answers Digest challenges for one user, keeping nonce counts per nonce.

    :param credentials: one :class:`Credentials` or several (per realm; one with
        ``realm=None`` answers any realm).
    :param cnonce_factory: makes client nonces; inject a fixed one in tests.
    :param max_nonces: how many nonces to remember nonce counts for (bounded: G9).
    """

    def __init__(
        self,
        credentials: Credentials | Iterable[Credentials],
        *,
        cnonce_factory: Callable[[], str] = _random_cnonce,
        max_nonces: int = 32,
    ) -> None:
        self._credentials = (credentials,) if isinstance(credentials, Credentials) else tuple(credentials)
        self._cnonce_factory = cnonce_factory
        self._max_nonces = max_nonces
        self._nonce_counts: OrderedDict[str, int] = OrderedDict()
        # The last challenge per (header kind, realm), for pre-emptive use (§22.2, §22.3).
        self._cache: OrderedDict[tuple[bool, str], Challenge] = OrderedDict()

    def credentials_for(self, realm: str) -> Credentials | None:
        """The credentials for ``realm``: an exact realm match first, then a wildcard."""
        exact = [c for c in self._credentials if c.realm == realm]
        wildcard = [c for c in self._credentials if c.realm is None]
        return next(iter(exact or wildcard), None)

    def authorize(self, request: SipRequest, response: SipResponse) -> SipRequest:
        """The request to resend after ``response`` (a 401 or 407) challenged ``request``.

        Adds one Authorization / Proxy-Authorization per challenged realm (RFC 3261
        §22.2, §22.3), replacing the ones we sent before for those realms. The caller
        sends it as a new transaction: "the CSeq header field value ... MUST be
        incremented" and the branch is new (RFC 3261 §22.2, §8.1.1.7).

        :raises CredentialsRejected: a realm we had answered challenged again without
            ``stale=true`` (RFC 7616 §3.3): the credentials are wrong.
        :raises NoUsableChallenge: nothing in the response can be answered.
        """
        challenges = challenges_of(response)
        sent_realms = _answered_realms(request)
        chosen = self.select(challenges)
        if not chosen:
            raise NoUsableChallenge(f"no usable challenge in {response.status} {response.reason}")
        for challenge in chosen:
            if (challenge.proxy, challenge.realm) in sent_realms and not challenge.stale:
                raise CredentialsRejected(challenge.realm)
        headers = request.headers
        for challenge in chosen:
            headers = _without_realm(headers, challenge.proxy, challenge.realm)
        for challenge in chosen:
            value = self.answer(challenge, method=request.method, uri=request.uri, body=request.body)
            headers = headers.add(_header_name(challenge.proxy), value)
        return SipRequest(request.method, request.uri, headers, request.body)

    def select(self, challenges: Sequence[Challenge]) -> list[Challenge]:
        """The challenge to answer for each (header kind, realm), strongest algorithm first.

        RFC 8760 §2 has a server send one challenge per algorithm for a realm; we
        pick the strongest supported one (SHA-512-256, then SHA-256, then MD5; on a tie
        the topmost) and skip realms we have no credentials for.
        """
        best: dict[tuple[bool, str], tuple[int, int, Challenge]] = {}
        for index, challenge in enumerate(challenges):
            if not challenge.usable or self.credentials_for(challenge.realm) is None:
                continue
            key = (challenge.proxy, challenge.realm)
            rank = (_STRENGTH[challenge.hash_name], -index)
            if key not in best or rank > best[key][:2]:
                best[key] = (*rank, challenge)
        return [entry[2] for entry in best.values()]

    def answer(self, challenge: Challenge, *, method: str, uri: str, body: bytes = b"") -> str:
        """The Authorization / Proxy-Authorization value answering ``challenge``.

        ``uri`` is the Request-URI (RFC 3261 §22.4 item 3: digest-uri-value =
        Request-URI) and ``method`` the request method.
        """
        credentials = self.credentials_for(challenge.realm)
        if credentials is None:
            raise NoUsableChallenge(f"no credentials for realm {challenge.realm!r}")
        if not challenge.usable:
            raise NoUsableChallenge(f"cannot answer {challenge.scheme} {challenge.algorithm}")
        qop = challenge.chosen_qop()
        nc = cnonce = None
        if qop is not None:
            # RFC 7616 §3.4: nc counts the requests sent with this nonce, as 8 hex digits.
            nc = f"{self._next_count(challenge.nonce):08x}"
            cnonce = self._cnonce_factory()
        response = digest_response(
            algorithm=challenge.algorithm,
            username=credentials.username,
            realm=challenge.realm,
            password=credentials.password,
            method=method,
            uri=uri,
            nonce=challenge.nonce,
            qop=qop,
            nc=nc,
            cnonce=cnonce,
            body=body,
        )
        username = credentials.username
        if challenge.userhash:
            # RFC 7616 §3.4.4: username = H(unq(username) ":" unq(realm))
            username = HASHES[challenge.hash_name](f"{username}:{challenge.realm}".encode())
        # RFC 3261 §22.4 item 2: "the 'uri' parameter MUST be enclosed in quotation marks".
        parts = [
            f"username={quote(username)}",
            f"realm={quote(challenge.realm)}",
            f"nonce={quote(challenge.nonce)}",
            f"uri={quote(uri)}",
            f"response={quote(response)}",
        ]
        algorithm = challenge.param("algorithm")
        if algorithm is not None:
            parts.append(f"algorithm={algorithm}" if is_token(algorithm) else f"algorithm={quote(algorithm)}")
        if cnonce is not None:
            parts.append(f"cnonce={quote(cnonce)}")
        if challenge.opaque is not None:
            # RFC 7616 §3.3: opaque "MUST be returned by the client unchanged".
            parts.append(f"opaque={quote(challenge.opaque)}")
        if qop is not None:
            # RFC 3261 §22.4 item 8: "If a client receives a 'qop' parameter in a
            # challenge header field, it MUST send the 'qop' parameter".
            parts += [f"qop={qop}", f"nc={nc}"]
        if challenge.userhash:
            parts.append("userhash=true")
        self._remember(challenge)
        return "Digest " + ", ".join(parts)

    def preemptive(self, request: SipRequest, realm: str, *, proxy: bool) -> SipRequest:
        """``request`` with credentials for a realm challenged before (RFC 3261 §22.2, §22.3).

        The caller names the realm: RFC 3261 §22.3 says proxy credentials "MUST NOT be
        cached across dialogs" except for "the realm of its local outbound proxy", so
        only that realm should be passed with ``proxy=True``. Only challenges with qop
        are reused: the rising nc keeps a reused nonce from being a replay (RFC 7616
        §3.4). A server that dislikes the nonce answers 401/407 with ``stale=true``,
        which :meth:`authorize` handles. Without a usable cached challenge the request
        is returned unchanged.
        """
        challenge = self._cache.get((proxy, realm))
        if challenge is None or challenge.chosen_qop() is None:
            return request
        headers = _without_realm(request.headers, proxy, realm)
        value = self.answer(challenge, method=request.method, uri=request.uri, body=request.body)
        return SipRequest(request.method, request.uri, headers.add(_header_name(proxy), value), request.body)

    def _next_count(self, nonce: str) -> int:
        count = self._nonce_counts.pop(nonce, 0) + 1
        self._nonce_counts[nonce] = count
        while len(self._nonce_counts) > self._max_nonces:
            self._nonce_counts.popitem(last=False)
        return count

    def _remember(self, challenge: Challenge) -> None:
        key = (challenge.proxy, challenge.realm)
        self._cache.pop(key, None)
        self._cache[key] = challenge
        while len(self._cache) > self._max_nonces:
            self._cache.popitem(last=False)


def _answered_realms(request: SipRequest) -> set[tuple[bool, str]]:
    """The (header kind, realm) pairs ``request`` already carried credentials for."""
    realms: set[tuple[bool, str]] = set()
    for proxy in (False, True):
        for value in request.headers.get_all(_header_name(proxy)):
            for credentials in parse_challenges(value, proxy=proxy):
                realms.add((proxy, credentials.realm))
    return realms


def _without_realm(headers: Headers, proxy: bool, realm: str) -> Headers:
    """``headers`` without our earlier credentials for ``realm`` of that header kind."""
    name = _header_name(proxy)
    kept: list[tuple[str, str]] = []
    for n, v in headers:
        if n == name and any(c.realm == realm for c in parse_challenges(v, proxy=proxy)):
            continue
        kept.append((n, v))
    return Headers(kept)


__all__ = [
    "HASHES",
    "AuthenticationError",
    "Challenge",
    "Credentials",
    "CredentialsRejected",
    "DigestClient",
    "NoUsableChallenge",
    "challenges_of",
    "digest_response",
    "parse_challenges",
]
