"""The SIP plugin on a fake reactor, with a scripted registrar/proxy at 192.0.2.10:5060.

:class:`Harness` builds a :class:`~plugins.sip.plugin.SipPlugin` whose UDP socket is a
:class:`~tests.unit.sip.fakes.FakeUdpPort`; tests read what the gateway sent
(:meth:`Harness.sent`) and answer it (:meth:`Harness.reply`), and record the plugin
events the core would get.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import ensureDeferred

from gateway.plugin import PluginContext
from plugins.sip.codec import SipRequest, make_response, serialize
from plugins.sip.plugin import SipPlugin, SipSession
from plugins.sip.ua import AccountSettings, parse_aor
from tests.unit.sip.fakes import PEER, SipTestReactor

PROXY = "sip:192.0.2.10:5060"
USER = "alice@example.org"
AOR = "alice@sip.test"
CHALLENGE = 'Digest realm="sip.test", nonce="n0nce", qop="auth", algorithm=MD5'


class Events:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def emit(self, event: Any) -> None:
        self.events.append(event)


class Harness:
    def __init__(self, **options: Any) -> None:
        self.reactor = SipTestReactor()
        self.events = Events()
        self.plugin = SipPlugin(PluginContext(
            gateway_jid="sip.gw.example", events=self.events, clock=self.reactor,
            options={"listen_host": "127.0.0.1", "udp_port": 5062, "tcp_port": 5062, "proxy": PROXY, **options}))

    @property
    def udp(self):
        return self.reactor.udp[-1]

    def sent(self) -> list[SipRequest]:
        """Requests the gateway sent since the last call (responses are dropped)."""
        return [m for m in self.udp.take() if isinstance(m, SipRequest)]

    def last(self) -> SipRequest:
        requests = self.sent()
        assert requests, "the gateway sent nothing"
        return requests[-1]

    def reply(self, request: SipRequest, status: int, headers: list[tuple[str, str]] | None = None) -> None:
        self.udp.receive(serialize(make_response(request, status, to_tag="reg", headers=headers or [])), PEER)

    def receive(self, data: bytes) -> list:
        """Feed a request from the proxy; return the responses the gateway sent."""
        self.udp.sent.clear()
        self.udp.receive(data, PEER)
        return self.udp.take()

    def active_session(self, user: str = USER) -> SipSession:
        """A logged-in session without the REGISTER dance (for UAS tests)."""
        assert ensureDeferred(self.plugin.acquire_stack()).called
        settings = AccountSettings(aor=parse_aor(AOR), auth_username="alice", password="pw")
        session = SipSession(self.plugin, user, settings, self.plugin.token_for(user))
        session.active = True
        self.plugin.sessions[session.token] = session
        self.plugin.known_tokens[session.token] = user
        return session
