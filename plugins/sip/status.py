"""SIP status codes: reason phrases and the SIP → XMPP stanza error mapping.

* Reason phrases: RFC 3261 §21, plus codes from later RFCs that SIP MESSAGE paths
  meet (202 from RFC 3428 §7 / RFC 6665, 204 RFC 5839, 412 RFC 3903, 417 RFC 4412,
  422 RFC 4028, 428/436/437/438 RFC 4474, 429 RFC 3892, 430/439 RFC 5626,
  433 RFC 5079, 470 RFC 5360, 489 RFC 6665, 494 RFC 3329, 580 RFC 3312, 607 RFC 8197,
  199 RFC 6228).
* SIP → XMPP error conditions: the SIP-to-XMPP table of RFC 7247's error mapping
  section, which RFC 7572 §5 refers to for failed MESSAGE transactions, as recorded
  in reference/sip.md §2.13. That record was written without the RFC text at hand,
  and so was this table: the rows follow reference/sip.md's first choice and are
  **not verified against RFC 7247** (the alternatives it lists are noted inline).

The XMPP error ``type`` (RFC 6120 §8.3.3) is the core's business (DESIGN.md §1), so
this module returns only the condition name.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

REASON_PHRASES: Final[Mapping[int, str]] = MappingProxyType(
    {
        100: "Trying",
        180: "Ringing",
        181: "Call Is Being Forwarded",
        182: "Queued",
        183: "Session Progress",
        199: "Early Dialog Terminated",
        200: "OK",
        202: "Accepted",
        204: "No Notification",
        300: "Multiple Choices",
        301: "Moved Permanently",
        302: "Moved Temporarily",
        305: "Use Proxy",
        380: "Alternative Service",
        400: "Bad Request",
        401: "Unauthorized",
        402: "Payment Required",
        403: "Forbidden",
        404: "Not Found",
        405: "Method Not Allowed",
        406: "Not Acceptable",
        407: "Proxy Authentication Required",
        408: "Request Timeout",
        410: "Gone",
        412: "Conditional Request Failed",
        413: "Request Entity Too Large",
        414: "Request-URI Too Long",
        415: "Unsupported Media Type",
        416: "Unsupported URI Scheme",
        417: "Unknown Resource-Priority",
        420: "Bad Extension",
        421: "Extension Required",
        422: "Session Interval Too Small",
        423: "Interval Too Brief",
        428: "Use Identity Header",
        429: "Provide Referrer Identity",
        430: "Flow Failed",
        433: "Anonymity Disallowed",
        436: "Bad Identity-Info",
        437: "Unsupported Certificate",
        438: "Invalid Identity Header",
        439: "First Hop Lacks Outbound Support",
        470: "Consent Needed",
        480: "Temporarily Unavailable",
        481: "Call/Transaction Does Not Exist",
        482: "Loop Detected",
        483: "Too Many Hops",
        484: "Address Incomplete",
        485: "Ambiguous",
        486: "Busy Here",
        487: "Request Terminated",
        488: "Not Acceptable Here",
        489: "Bad Event",
        491: "Request Pending",
        493: "Undecipherable",
        494: "Security Agreement Required",
        500: "Server Internal Error",
        501: "Not Implemented",
        502: "Bad Gateway",
        503: "Service Unavailable",
        504: "Server Time-out",
        505: "Version Not Supported",
        513: "Message Too Large",
        580: "Precondition Failure",
        600: "Busy Everywhere",
        603: "Decline",
        604: "Does Not Exist Anywhere",
        606: "Not Acceptable",
        607: "Unwanted",
    }
)

# RFC 3261 §7.2 / §21: the first digit is the class; the phrase for a code we do not know.
_CLASS_PHRASES: Final = {
    1: "Provisional",
    2: "Success",
    3: "Redirection",
    4: "Client Error",
    5: "Server Error",
    6: "Global Failure",
}


def reason_phrase(status: int) -> str:
    """The RFC reason phrase for ``status``, or its class name for an unknown code."""
    if not 100 <= status <= 699:
        raise ValueError(f"not a SIP status code: {status}")
    return REASON_PHRASES.get(status) or _CLASS_PHRASES[status // 100]


#: SIP final response → XMPP stanza error condition (RFC 7247 error mapping, SIP to
#: XMPP; rows as in reference/sip.md §2.13, not verified against the RFC text).
SIP_TO_XMPP_CONDITION: Final[Mapping[int, str]] = MappingProxyType(
    {
        300: "redirect",
        301: "gone",
        302: "redirect",
        305: "redirect",
        380: "redirect",
        400: "bad-request",
        401: "not-authorized",
        402: "bad-request",
        403: "forbidden",
        404: "item-not-found",
        405: "not-allowed",
        406: "not-acceptable",
        407: "not-authorized",  # reference/sip.md: possibly registration-required
        408: "remote-server-timeout",
        410: "gone",
        413: "policy-violation",
        414: "jid-malformed",
        415: "bad-request",
        416: "bad-request",  # reference/sip.md: possibly jid-malformed
        420: "bad-request",
        421: "bad-request",
        423: "bad-request",
        480: "recipient-unavailable",
        481: "item-not-found",
        482: "not-acceptable",
        483: "not-acceptable",
        484: "item-not-found",
        485: "item-not-found",
        486: "recipient-unavailable",
        487: "service-unavailable",
        488: "not-acceptable",
        491: "unexpected-request",
        493: "bad-request",
        500: "internal-server-error",
        501: "feature-not-implemented",
        502: "remote-server-not-found",
        503: "service-unavailable",
        504: "remote-server-timeout",
        505: "not-acceptable",
        513: "policy-violation",
        600: "recipient-unavailable",  # reference/sip.md: possibly service-unavailable
        603: "service-unavailable",
        604: "item-not-found",
        606: "not-acceptable",
    }
)

#: RFC 3261 §8.1.3.1: a Timer F expiry "MUST" be treated as a 408 by the UAC core.
TIMEOUT_CONDITION: Final = SIP_TO_XMPP_CONDITION[408]
#: A transport failure or no RFC 3263 target: the far server cannot be reached
#: (reference/sip.md §2.13, with 502). RFC 3261 §8.1.3.1 treats a transport failure as
#: a 503 for SIP purposes (retry elsewhere); towards XMPP the unreachable server is the
#: more useful statement.
TRANSPORT_FAILURE_CONDITION: Final = SIP_TO_XMPP_CONDITION[502]


def xmpp_condition(status: int) -> str:
    """The XMPP stanza error condition for a failed SIP request's final response.

    Codes in :data:`SIP_TO_XMPP_CONDITION` map as listed; other 3xx map to
    ``redirect``; any other 4xx, 5xx or 6xx to ``undefined-condition`` (the caller puts
    ``SIP <code> <reason>`` in the error's ``<text/>``). Pass 408 for a Timer F expiry.

    :raises ValueError: for 1xx and 2xx, which are not failures.
    """
    if not 300 <= status <= 699:
        raise ValueError(f"SIP status {status} is not a failure")
    condition = SIP_TO_XMPP_CONDITION.get(status)
    if condition is not None:
        return condition
    return "redirect" if status < 400 else "undefined-condition"
