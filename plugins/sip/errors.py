"""Errors of the SIP core that carry the status to answer with (STYLE.md G4).

RFC 3261 §8.2 and §21.4: a UAS answers a request it cannot understand with a 4xx or
5xx response, so every parse failure names the status a UAS would send (400 for bad
syntax, 413 for a body that is too large, 416 for an unsupported URI scheme, 505 for
another SIP version, 513 for a header section that is too large).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from plugins.sip.codec import SipRequest


class SipParseError(ValueError):
    """A SIP message, URI or header value that cannot be parsed or is not allowed.

    :ivar status: the SIP status code a UAS answers with (RFC 3261 §21).
    :ivar request: the request to answer, when its start line and the headers a
        response copies (Via, From, To, Call-ID, CSeq; RFC 3261 §8.2.6.2) were read;
        ``None`` when the input cannot be answered and is dropped (responses are
        always dropped, RFC 3261 §18.3).
    :ivar fatal: on a stream transport, the message boundary is lost and the
        connection must be closed (RFC 3261 §18.3: Content-Length frames streams).
    """

    def __init__(
        self,
        reason: str,
        *,
        status: int = 400,
        request: SipRequest | None = None,
        fatal: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.request = request
        self.fatal = fatal

    def __repr__(self) -> str:
        return f"SipParseError({self.reason!r}, status={self.status}, fatal={self.fatal})"
