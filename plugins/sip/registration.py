"""Keeping one user's SIP registration up (RFC 3261 §10.2).

* REGISTER: Request-URI ``sip:<AOR domain>``, To and From the AOR, our Contact with its
  ``expires`` (§10.2.1), one Call-ID per registration client for its lifetime and CSeq
  rising by one per REGISTER (§10.2: "the same Call-ID ... incremented by one").
* The granted interval is our binding's ``expires`` in the 200's Contact list, else its
  Expires header (§10.2.4, §10.3 step 8); the refresh is sent at half of it.
* ``423 Interval Too Brief``: retry with the ``Min-Expires`` value (§10.2.8, §10.3 step 7).
* Failures: 401/407 after our credentials, 403 and 404 are permanent (wrong password, no
  such user): stop and tell the user. Timeouts, transport errors, 5xx and the rest are
  transient: retried with capped exponential backoff (RFC 5626 §4.5's idea), honouring a
  503's ``Retry-After``, until the current binding expires; then the session is lost.
* Once stopped (logout, retire, loss) a refresh still in flight sends nothing more: a late
  401/423 answer is not retried and a late 2xx schedules no refresh.
* Unregistering removes only our own binding (``Contact: <ours>;expires=0``), never
  ``Contact: *``, which would log the user's phones out too (§10.2.2).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from twisted.internet.defer import ensureDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from plugins.sip.codec import SipRequest, SipResponse
from plugins.sip.errors import SipParseError
from plugins.sip.grammar import parse_int
from plugins.sip.resolver import NoTargets
from plugins.sip.stack import SipTimeout, SipTransportError
from plugins.sip.transport import Peer
from plugins.sip.ua import UserAgent, new_call_id, new_tag
from plugins.sip.uri import SipUri, parse_address

__all__ = ["RegistrationClient", "RegistrationFailed"]

log = logging.getLogger(__name__)

#: Permanent failures (§10.2 / reference/sip.md §2.7): never retried.
PERMANENT = frozenset({401, 403, 404, 407, 410, 484, 603, 604})
BACKOFF_BASE = 2.0
BACKOFF_CAP = 300.0
#: A refresh is never scheduled sooner than this (a registrar granting 1 s is broken).
MIN_REFRESH = 1.0


class RegistrationFailed(Exception):
    """A REGISTER failed; ``permanent`` failures mean wrong credentials or account."""

    def __init__(self, text: str, *, permanent: bool, status: int = 0,
                 retry_after: float | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.permanent = permanent
        self.status = status
        self.retry_after = retry_after


class RegistrationClient:
    """One binding of one account: register, refresh, unregister.

    :param contact_user: the opaque user part of our Contact (how incoming requests find
        the XMPP user, reference/sip.md §2.5).
    :param on_lost: called once with ``(condition, text)`` when the registration is lost
        for good after being up (refresh refused, or failing until the binding expired).
    """

    def __init__(self, ua: UserAgent, clock: IReactorTime, *, contact_user: str, expires: int,
                 on_lost: Callable[[str, str], None] | None = None,
                 rng: random.Random | None = None) -> None:
        self.ua = ua
        self.clock = clock
        self.contact_user = contact_user
        self.expires = expires
        self.on_lost = on_lost
        self.rng = rng or random.Random()
        self.call_id = new_call_id(ua.settings.aor.host)
        self.from_tag = new_tag()
        self.cseq = 0
        self.registered_until: float | None = None
        self.refreshes = 0
        """Successful refreshes so far (tests and logs)."""
        self._contact: str | None = None
        self._peer: Peer | None = None
        """Where the last REGISTER went."""
        self._held: Peer | None = None
        """The peer whose connection our binding depends on (held in the stack)."""
        self._timer: IDelayedCall | None = None
        self._failures = 0
        self._stopped = False

    # -- public ---------------------------------------------------------------------------------

    async def register(self) -> int:
        """Register now; return the granted interval. Raises :class:`RegistrationFailed`."""
        expires = self.expires
        for _ in range(3):
            response = await self._send(expires)
            if 200 <= response.status < 300:
                granted = self._granted(response, expires)
                self.registered_until = self.clock.seconds() + granted
                if not self._stopped:
                    self._hold(self._peer)
                return granted
            if response.status == 423:
                # §10.2.8: "the UA MAY retry the registration with an expiration interval
                # greater than or equal to the one in the Min-Expires header field".
                minimum = _int_header(response, "Min-Expires")
                if minimum is None or minimum <= expires:
                    break
                expires = minimum
                self.expires = minimum
                continue
            raise _failure(response)
        raise RegistrationFailed("the registrar keeps refusing the interval (423)", permanent=True,
                                 status=423)

    def start_refreshing(self, granted: int) -> None:
        """Schedule the refresh of a binding granted for ``granted`` seconds."""
        self._failures = 0
        self._schedule(max(MIN_REFRESH, granted / 2))

    async def unregister(self, timeout: float = 5.0) -> bool:
        """Remove our binding (``expires=0``); ``True`` when the registrar said 2xx."""
        self.stop()
        if self._contact is None:
            return False
        request = ensureDeferred(self._send(0))
        request.addTimeout(timeout, self.clock)
        try:
            response = await request
        except Exception as exc:
            log.info("unregistering %s failed: %s", self.ua.settings.aor, exc)
            return False
        self.registered_until = None
        return 200 <= response.status < 300

    def stop(self) -> None:
        """Stop refreshing (the binding stays until it expires or :meth:`unregister`)."""
        self._stopped = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._hold(None)

    # -- internals ------------------------------------------------------------------------------

    def _hold(self, peer: Peer | None) -> None:
        """Tell the stack which connection the binding depends on (a TCP/TLS registration is
        reached over it: it must stay open and pinged); ``None``: none any more."""
        if peer == self._held:
            return
        if self._held is not None:
            self.ua.stack.unhold(self._held)
        self._held = peer if peer is not None and peer.reliable else None
        if self._held is not None:
            self.ua.stack.hold(self._held)

    async def _send(self, expires: int) -> SipResponse:
        aor = self.ua.settings.aor
        registrar = SipUri(aor.scheme, aor.host)

        def build(peer: Peer, cseq: int) -> SipRequest:
            if self._stopped and expires:
                # A refresh still in flight when we stopped (its 401/423/503 answered late):
                # never send it again, it would race the unregistration (a binding left
                # behind) and run timers after the stack should be idle.
                raise RegistrationFailed("the registration was stopped", permanent=False)
            self._peer = peer
            self._contact = self.ua.stack.contact(self.contact_user, peer.transport)
            headers = self.ua.headers(
                to=f"<{aor}>", call_id=self.call_id, cseq=cseq, method="REGISTER", from_tag=self.from_tag,
                extra=[("Contact", f"<{self._contact}>;expires={expires}"), ("Expires", str(expires))])
            return SipRequest("REGISTER", str(registrar), headers)

        def next_cseq() -> int:
            self.cseq += 1
            return self.cseq

        try:
            response = await self.ua.send(build, next_cseq)
        except SipTimeout as exc:
            raise RegistrationFailed("the registrar did not answer", permanent=False) from exc
        except (SipTransportError, NoTargets) as exc:
            raise RegistrationFailed(f"cannot reach the registrar: {exc}", permanent=False) from exc
        return response

    def _granted(self, response: SipResponse, asked: int) -> int:
        for value in response.headers.get_all("Contact"):
            try:
                address = parse_address(value)
            except SipParseError:
                continue
            uri = address.uri
            if isinstance(uri, SipUri) and uri.user == self.contact_user:
                expires = address.param("expires")
                if expires is not None and expires.isdigit():
                    return int(expires)
        header = _int_header(response, "Expires")
        return header if header is not None else asked

    def _schedule(self, delay: float) -> None:
        if self._stopped:
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self.clock.callLater(delay, self._refresh)

    def _refresh(self) -> None:
        self._timer = None
        ensureDeferred(self._do_refresh()).addErrback(
            lambda f: log.error("SIP refresh of %s failed: %s", self.ua.settings.aor, f.getTraceback()))

    async def _do_refresh(self) -> None:
        try:
            granted = await self.register()
        except RegistrationFailed as exc:
            if self._stopped:
                return
            now = self.clock.seconds()
            if exc.permanent:
                self._lose("not-authorized", f"the SIP registrar refused the refresh: {exc.text}")
                return
            if self.registered_until is not None and now >= self.registered_until:
                self._lose("remote-server-timeout", f"the SIP registration expired: {exc.text}")
                return
            self._failures += 1
            backoff = min(BACKOFF_CAP, BACKOFF_BASE**self._failures) * self.rng.uniform(0.5, 1.0)
            delay = exc.retry_after or backoff
            if self.registered_until is not None:
                # One last try just before the binding runs out.
                delay = min(delay, max(MIN_REFRESH, self.registered_until - now - 1))
            log.info("SIP refresh of %s failed (%s); retrying in %.1f s", self.ua.settings.aor, exc.text,
                     delay)
            self._schedule(delay)
            return
        if self._stopped:
            return
        self.refreshes += 1
        self.start_refreshing(granted)

    def _lose(self, condition: str, text: str) -> None:
        self.stop()
        self.registered_until = None
        if self.on_lost is not None:
            self.on_lost(condition, text)


def _int_header(response: SipResponse, name: str) -> int | None:
    value = response.headers.get(name)
    if value is None:
        return None
    try:
        return parse_int(value.split("(")[0].split(";")[0].strip(), what=name, maximum=2**32 - 1)
    except SipParseError:
        return None


def _failure(response: SipResponse) -> RegistrationFailed:
    text = f"SIP {response.status} {response.reason}".strip()
    retry_after = _int_header(response, "Retry-After") if response.status == 503 else None
    return RegistrationFailed(text, permanent=response.status in PERMANENT, status=response.status,
                              retry_after=float(retry_after) if retry_after is not None else None)

