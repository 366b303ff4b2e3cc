"""Sample SIP messages for the SIP core's unit tests (shaped like RFC 3261 §24's examples)."""

from __future__ import annotations

from collections.abc import Iterable

from plugins.sip.codec import Headers, SipRequest, SipResponse, make_response

ALICE = "Alice <sip:alice@atlanta.example.com>;tag=1928301774"
BOB = "Bob <sip:bob@biloxi.example.com>"
CALL_ID = "a84b4c76e66710@pc33.atlanta.example.com"


def message_request(
    *,
    branch: str = "z9hG4bK776asdhds",
    method: str = "MESSAGE",
    cseq: int = 1,
    body: bytes = b"Watson, come here.",
    sent_by: str = "pc33.atlanta.example.com",
    transport: str = "UDP",
) -> SipRequest:
    """A page-mode MESSAGE (RFC 3428 §4) from Alice to Bob."""
    return SipRequest(
        method,
        "sip:bob@biloxi.example.com",
        Headers(
            [
                ("Via", f"SIP/2.0/{transport} {sent_by};branch={branch}"),
                ("Max-Forwards", "70"),
                ("To", BOB),
                ("From", ALICE),
                ("Call-ID", CALL_ID),
                ("CSeq", f"{cseq} {method}"),
                ("Content-Type", "text/plain"),
            ]
        ),
        body,
    )


def response_to(request: SipRequest, status: int, headers: Iterable[tuple[str, str]] = ()) -> SipResponse:
    """A response to ``request`` with a fixed To tag and extra ``headers``."""
    return make_response(request, status, to_tag="a6c85cf", headers=headers)


def challenge(request: SipRequest, *challenges: str, proxy: bool = False) -> SipResponse:
    """A 401 (or with ``proxy`` a 407) to ``request`` carrying ``challenges``, one per row."""
    name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
    return response_to(request, 407 if proxy else 401, [(name, c) for c in challenges])
