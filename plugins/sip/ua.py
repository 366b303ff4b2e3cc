"""One user's SIP user agent client: requests as the user's address of record.

* Building requests outside a dialog: RFC 3261 §8.1.1 (To without tag, From with a
  fresh tag, Call-ID, CSeq, Max-Forwards 70; the stack adds Via) and §8.1.2 (an
  outbound proxy gets a pre-loaded ``Route: <proxy;lr>``).
* Digest answers: RFC 3261 §22.2 (a 401/407 is answered with a *new* request: same
  Call-ID, CSeq + 1, new branch), through :class:`~plugins.sip.digest.DigestClient`.
* Next hop: the outbound proxy when the user set one, else the AOR's domain (the home
  proxy, as phones do), located by RFC 3263 (:mod:`plugins.sip.resolver`), failing over
  to the next target on a timeout, a 503 or a transport error (RFC 3263 §4.3).
* Size: RFC 3261 §18.1.1, "If a request is within 200 bytes of the path MTU, or if it
  is larger than 1300 bytes and the path MTU is unknown, the request MUST be sent using
  an RFC 2914 congestion controlled transport protocol, such as TCP": such a request
  goes to the same target over TCP.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from plugins.sip.codec import Headers, SipRequest, SipResponse, serialize
from plugins.sip.digest import AuthenticationError, Credentials, DigestClient
from plugins.sip.resolver import NoTargets, ServerLocator
from plugins.sip.stack import SipStack, SipTimeout, SipTransportError
from plugins.sip.transport import Peer
from plugins.sip.uri import SipUri, parse_uri

__all__ = ["UDP_LIMIT", "AccountSettings", "UserAgent", "parse_aor", "parse_proxy"]

#: RFC 3261 §18.1.1: larger requests go over a congestion-controlled transport.
UDP_LIMIT = 1300
#: Room for the Via the stack adds (transport, sent-by, branch, rport).
_VIA_ALLOWANCE = 120
Builder = Callable[[Peer, int], SipRequest]
"""Makes the request for a target and a CSeq number."""
#: Challenge rounds per request: a stale nonce or a second realm, never a loop.
_AUTH_ROUNDS = 3


def parse_aor(text: str) -> SipUri:
    """A user's address of record from ``sip:user@domain``, ``sips:...`` or ``user@domain``.

    :raises ValueError: not a SIP address with a user and a domain.
    """
    text = text.strip()
    if not text.lower().startswith(("sip:", "sips:")):
        text = f"sip:{text}"
    try:
        uri = parse_uri(text)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a SIP address: {exc}") from None
    if not isinstance(uri, SipUri) or not uri.user:
        raise ValueError(f"{text!r} is not a SIP address of the form user@domain")
    return SipUri(uri.scheme, uri.host, uri.user, uri.port)


def parse_proxy(text: str) -> SipUri | None:
    """An outbound proxy / registrar: ``sip:host[:port][;transport=x]``, or a bare host[:port]."""
    text = text.strip()
    if not text:
        return None
    if not text.lower().startswith(("sip:", "sips:")):
        text = f"sip:{text}"
    try:
        uri = parse_uri(text)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a SIP proxy address: {exc}") from None
    if not isinstance(uri, SipUri):
        raise ValueError(f"{text!r} is not a SIP proxy address")
    if uri.transport not in (None, "udp", "tcp", "tls"):
        raise ValueError(f"unsupported transport {uri.transport!r} in {text!r}")
    return uri


@dataclass(frozen=True)
class AccountSettings:
    """One registration's SIP account."""

    aor: SipUri
    auth_username: str
    password: str = field(repr=False)
    proxy: SipUri | None = None
    """Outbound proxy (and registrar); ``None``: the AOR's domain."""
    transport: str | None = None
    """``udp``/``tcp``/``tls``; ``None`` lets RFC 3263 choose."""


def new_tag() -> str:
    return secrets.token_hex(8)


def new_call_id(host: str) -> str:
    # RFC 3261 §8.1.1.4: "MUST be a globally unique identifier"; the host part helps debugging.
    return f"{secrets.token_hex(16)}@{host}"


class UserAgent:
    """Sends requests for one account through the shared :class:`SipStack`."""

    def __init__(self, stack: SipStack, locator: ServerLocator, settings: AccountSettings) -> None:
        self.stack = stack
        self.locator = locator
        self.settings = settings
        self.digest = DigestClient(Credentials(settings.auth_username, settings.password))

    @property
    def next_hop(self) -> SipUri:
        return self.settings.proxy or SipUri(self.settings.aor.scheme, self.settings.aor.host)

    async def targets(self) -> list[Peer]:
        """RFC 3263 targets of the next hop; :class:`NoTargets` when there are none."""
        peers = await self.locator.locate(self.next_hop, self.settings.transport)
        if not peers:
            raise NoTargets(f"no SIP server found for {self.next_hop}")
        return peers

    def headers(self, *, to: str, call_id: str, cseq: int, method: str, from_tag: str,
                extra: Iterable[tuple[str, str]] = ()) -> Headers:
        """The mandatory header fields of a request outside a dialog (RFC 3261 §8.1.1)."""
        rows = [
            ("Max-Forwards", "70"),
            ("To", to),
            ("From", f"<{self.settings.aor}>;tag={from_tag}"),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} {method}"),
        ]
        if self.settings.proxy is not None:
            # RFC 3261 §8.1.2: a UAC with an outbound proxy pre-loads its Route (loose routing).
            rows.append(("Route", f"<{self.settings.proxy.without_headers().with_params(lr=None)}>"))
        rows.append(("User-Agent", self.stack.settings.user_agent))
        return Headers([*rows, *extra])

    async def send(self, build: Builder, next_cseq: Callable[[], int]) -> SipResponse:
        """Send the request ``build(peer, cseq)`` makes, answering challenges and failing over.

        ``next_cseq()`` gives the CSeq of every request sent, the authenticated retries
        included ("the CSeq header field value MUST be incremented", RFC 3261 §22.2): one
        counter per Call-ID, so a refresh and an unregistration racing on one Call-ID never
        share a number. Raises :class:`SipTimeout`, :class:`SipTransportError` or
        :class:`NoTargets` when no target answered.
        """
        peers = await self.targets()
        error: Exception = NoTargets(f"no SIP server found for {self.next_hop}")
        for index, peer in enumerate(peers):
            try:
                response = await self._authenticated(build, peer, next_cseq)
            except (SipTimeout, SipTransportError) as exc:
                error = exc
                continue
            if response.status == 503 and index + 1 < len(peers):
                continue  # RFC 3263 §4.3: try the next server
            return response
        raise error

    async def _authenticated(self, build: Builder, peer: Peer, next_cseq: Callable[[], int]) -> SipResponse:
        auth: list[tuple[str, str]] = []
        response: SipResponse | None = None
        for _ in range(_AUTH_ROUNDS):
            request = build(peer, next_cseq())
            if auth:
                headers = Headers([*request.headers, *auth])
                request = SipRequest(request.method, request.uri, headers, request.body)
            response = await self.stack.request(request, fit_transport(peer, request))
            if response.status not in (401, 407):
                return response
            try:
                authorized = self.digest.authorize(request, response)
            except AuthenticationError:
                return response  # wrong credentials (or nothing we can answer): final
            auth = [(n, v) for n, v in authorized.headers if n in ("Authorization", "Proxy-Authorization")]
        assert response is not None
        return response


def fit_transport(peer: Peer, request: SipRequest) -> Peer:
    """``peer``, or the same server over TCP for a request too large for UDP (§18.1.1)."""
    if peer.transport == "udp" and len(serialize(request)) + _VIA_ALLOWANCE > UDP_LIMIT:
        return Peer("tcp", peer.host, peer.port)
    return peer


def too_large_for_udp(request: SipRequest) -> bool:
    return len(serialize(request)) + _VIA_ALLOWANCE > UDP_LIMIT
