"""Incoming SIP requests: page-mode MESSAGE to XMPP, OPTIONS, and refusals (RFC 3261 §8.2).

Every request is answered at once (reference/sip.md decision 3: never hold a non-INVITE
transaction open for XMPP, RFC 4320), in this order:

1. Max-Forwards 0 on a request we would act on: 483 (RFC 3261 §16.3 item 2 spirit, §20.22);
   a request carrying one of our own live Via branches came back to us: 482 Loop Detected
   (§8.2.2.2, §16.3 item 4).
2. OPTIONS: 200 with Allow and Accept (§11.2). Other methods: 405 with Allow when they are
   SIP methods we know of, 501 for unknown ones (§8.2.1, §21.5.2).
3. Request-URI of another scheme: 416 (§8.2.2.1). Require with any option: 420 with
   Unsupported (§8.2.2.3): we implement no extension.
4. The user: the Request-URI's user part is the opaque Contact token we registered
   (reference/sip.md §2.5), an HMAC nobody else can compute. Any token we did not hand
   out: 404, whoever it was meant to name. One of ours whose user is not logged in: 480. With the
   ``offline_messages`` option an offline user stays logged in, so their MESSAGE gets
   the 200 below and the core sends it to their bare JID (the server's offline storage).
5. Content: ``text/plain`` only (``message/cpim`` and others: 415 with ``Accept:
   text/plain``, §8.2.3; CPIM is out of scope). The ``charset`` parameter is honoured
   (UTF-8 by default, as baresip sends none); an unknown charset, or a codec that is not a
   text encoding (``hex``, ``base64``, ``rot13``), is 415; undecodable bytes 400.
6. 200 OK (RFC 3428 §7: "200 (OK) ... delivered"; the message goes to the XMPP server now).
"""

from __future__ import annotations

import codecs
import logging
from typing import TYPE_CHECKING

from gateway.plugin import MessageReceived
from plugins.sip.addressing import address_of
from plugins.sip.codec import SipRequest, SipResponse, make_response
from plugins.sip.errors import SipParseError
from plugins.sip.transport import Origin
from plugins.sip.uri import SipUri, parse_uri

if TYPE_CHECKING:
    from plugins.sip.plugin import SipPlugin

__all__ = ["ALLOW", "MessageService"]

log = logging.getLogger(__name__)

ALLOW = "MESSAGE, OPTIONS"
ACCEPT = "text/plain"
#: RFC 3261 and extensions' methods: refused with 405; anything else is 501 (§21.5.2).
KNOWN_METHODS = frozenset({"INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY",
                           "PUBLISH", "INFO", "REFER", "UPDATE"})


class MessageService:
    """The stack's request handler (the UAS core of the gateway)."""

    def __init__(self, plugin: SipPlugin) -> None:
        self.plugin = plugin

    def _reply(self, request: SipRequest, status: int, reason: str | None = None,
               headers: list[tuple[str, str]] | None = None) -> SipResponse:
        rows = [("Server", self.plugin.stack.settings.user_agent), *(headers or [])]
        return make_response(request, status, reason, headers=rows)

    def handle(self, request: SipRequest, origin: Origin) -> SipResponse | None:
        method = request.method
        if method == "ACK":
            return None  # never answered (RFC 3261 §17.2.3)
        try:
            max_forwards = request.max_forwards
        except SipParseError:
            return self._reply(request, 400, "Bad Max-Forwards")
        if max_forwards == 0 and method != "OPTIONS":
            return self._reply(request, 483)
        try:
            vias = request.vias  # the top one parsed already; lower ones are read here first
        except SipParseError:
            return self._reply(request, 400, "Bad Via")
        if any(self.plugin.stack.is_own_branch(via.branch) for via in vias):
            return self._reply(request, 482)
        if method == "OPTIONS":
            return self._reply(request, 200, headers=[("Allow", ALLOW), ("Accept", ACCEPT)])
        if method != "MESSAGE":
            if method in KNOWN_METHODS:
                return self._reply(request, 405, headers=[("Allow", ALLOW)])
            return self._reply(request, 501, headers=[("Allow", ALLOW)])
        return self._message(request)

    def _message(self, request: SipRequest) -> SipResponse:
        try:
            uri = parse_uri(request.uri)
        except SipParseError as exc:
            return self._reply(request, exc.status)
        if request.headers.get_all("Require"):
            unsupported = ", ".join(request.headers.get_all("Require"))
            return self._reply(request, 420, headers=[("Unsupported", unsupported)])
        token = uri.user if isinstance(uri, SipUri) else None
        session = self.plugin.sessions.get(token or "")
        if session is None or not session.active:
            if token in self.plugin.known_tokens:
                return self._reply(request, 480, headers=[("Retry-After", "300")])
            return self._reply(request, 404)
        content_type = request.content_type
        if content_type is None and not request.body:
            return self._reply(request, 400, "Empty MESSAGE")
        if content_type is not None and content_type.mime != "text/plain":
            return self._reply(request, 415, headers=[("Accept", ACCEPT)])
        charset = (content_type.charset if content_type is not None else None) or "utf-8"
        if not _is_text_charset(charset):
            return self._reply(request, 415, "Unsupported Charset",
                               headers=[("Accept", f"{ACCEPT};charset=UTF-8")])
        try:
            body = request.body.decode(charset)
        except (UnicodeDecodeError, ValueError, LookupError):
            return self._reply(request, 400, "Body Not In Its Charset")
        try:
            sender = address_of(request.from_address.uri)
            event = MessageReceived(user=session.user, contact=sender, body=body)
        except (SipParseError, ValueError, TypeError) as exc:
            log.info("MESSAGE for %s with an unusable From: %s", session.user, exc)
            return self._reply(request, 400, "Unusable From")
        self.plugin.context.events.emit(event)
        return self._reply(request, 200)


def _is_text_charset(charset: str) -> bool:
    """Whether ``charset`` names a codec that decodes bytes to text. ``codecs.lookup`` also
    finds bytes-to-bytes and text-to-text codecs (``hex``, ``base64``, ``rot13``), which
    ``bytes.decode`` then refuses with :class:`LookupError`. ``b"".decode`` cannot tell (an
    empty input is decoded without a lookup), and ``CodecInfo._is_text_encoding`` is private:
    decode nothing through ``codecs.decode`` and look at what comes out."""
    try:
        return isinstance(codecs.decode(b"", charset), str)
    except Exception:  # LookupError, or whatever a non-text codec raises on bytes
        return False
