"""The optional ``keeps_session_offline(user)`` plugin hook (gateway/session.py): a legacy session
kept while the user has no available resource (SIP ``offline_messages``), on a fake reactor with
the fake-network plugin."""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred, ensureDeferred

from tests.unit.harness import build_gateway, matches
from tests.unit.test_xep0100 import ALICE, GW, OPTIONS, iq, network, presence, register

BOB = "bob@example.org"


@pytest.fixture
def server():
    server, database = build_gateway("tests.fakenet:FakeNetPlugin", options=OPTIONS,
                                     extra={"allowed_users": ["example.org"]})
    # Only Alice's session is kept offline: the hook is asked per user.
    server.service.plugin.keeps_session_offline = lambda user: user == ALICE
    server.service.start()
    server.handshake()
    server.sent()
    yield server
    server.service.connection.stop()


def online_then_offline(server) -> list:
    register(server)
    presence(server)
    server.service.plugin.contact_presence(ALICE, "carol")
    server.sent()
    return presence(server, "unavailable")


def test_last_resource_leaving_keeps_the_session_and_tells_it(server):
    """The session is not logged out; it gets set_presence(unavailable) instead, and the gateway's
    own presence to the user still goes unavailable (XEP-0100 §4.5.1)."""
    sent = online_then_offline(server)
    assert ("logout", ALICE) not in network(server).log
    assert network(server).log[-1] == ("presence", ALICE, "unavailable")
    assert [(s["from"], s["to"], s.getAttribute("type")) for s in sent] == [
        (GW, f"{ALICE}/phone", "unavailable")]
    assert server.service.sessions.online_users() == [ALICE]


def test_other_users_are_still_logged_out(server):
    """The hook answers per user: Bob's session ends with his last resource as before."""
    register(server, username="bob", password="pw2", sender=f"{BOB}/desk")
    presence(server, sender=f"{BOB}/desk")
    sent = presence(server, "unavailable", sender=f"{BOB}/desk")
    assert ("logout", BOB) in network(server).log
    assert matches(sent[-1], f"/presence[@type='unavailable'][@from='{GW}'][@to='{BOB}/desk']")


def test_message_for_the_offline_user_goes_to_the_bare_jid(server):
    """RFC 6121 §8.5.2.1.1: a chat message to the bare JID is what the server stores offline."""
    online_then_offline(server)
    server.service.plugin.deliver(ALICE, "carol", "while you were out")
    [message] = server.sent()
    assert matches(message, f"/message[@type='chat'][@from='carol@{GW}'][@to='{ALICE}']")
    assert str(message.body) == "while you were out"


def test_next_available_presence_reuses_the_live_session(server):
    """Logging on again is no second login: the gateway says available and the session hears it."""
    online_then_offline(server)
    sent = presence(server, sender=f"{ALICE}/laptop", extra="<show>away</show>")
    assert network(server).log.count(("login", ALICE)) == 1
    assert matches(sent[0], f"/presence[@from='{GW}'][@to='{ALICE}/laptop']")
    assert sent[0].getAttribute("type") is None
    assert network(server).log[-1] == ("presence", ALICE, "away")


def test_probe_answers_available_while_the_session_is_kept(server):
    """The server probes the gateway when the user logs on: the kept session is live."""
    online_then_offline(server)
    [answer] = presence(server, "probe", sender=ALICE)
    assert answer["from"] == GW and answer.getAttribute("type") is None


def test_unregistration_while_offline_logs_out(server):
    """XEP-0077 <remove/> still ends the legacy session (SIP: Expires 0)."""
    online_then_offline(server)
    iq(server, "set", "<query xmlns='jabber:iq:register'><remove/></query>", sender=ALICE)
    assert ("logout", ALICE) in network(server).log
    assert server.service.sessions.online_users() == []


def test_shutdown_logs_out_kept_sessions(server):
    """SIGTERM: every session ends, the kept ones too."""
    online_then_offline(server)
    ensureDeferred(server.service.sessions.shutdown())
    assert ("logout", ALICE) in network(server).log
    assert server.service.sessions.online_users() == []


def test_session_maybe_done_keeps_it(server):
    """The rooms' check (a room closed, no resource left) respects the hook too."""
    online_then_offline(server)
    state = server.service.sessions.users[ALICE]
    server.service.sessions.session_maybe_done(state)
    server.clock.advance(0)
    assert ("logout", ALICE) not in network(server).log and state.session is not None


def test_last_resource_leaving_during_login_keeps_the_session(server):
    """The user went offline before the login finished: the session stays, told it is unavailable,
    and the gateway never says available."""
    register(server)
    plugin = server.service.plugin
    gate: Deferred[None] = Deferred()
    real_login = plugin.login

    async def slow_login(registration):
        await gate
        return await real_login(registration)

    plugin.login = slow_login
    presence(server)
    sent = presence(server, "unavailable")
    gate.callback(None)
    sent += server.sent()
    assert [(s["from"], s.getAttribute("type")) for s in sent if s.name == "presence"] == [(GW, "unavailable")]
    assert ("logout", ALICE) not in network(server).log
    assert network(server).log[-1] == ("presence", ALICE, "unavailable")
    assert server.service.sessions.online_users() == [ALICE]


def test_restart_logs_in_offline_users_whose_session_is_kept(server):
    """A registered user who is offline when the stream comes up is logged in for the plugin that
    keeps sessions offline (Alice) and not otherwise (Bob): only online users answer the probe."""
    register(server)
    register(server, username="bob", password="pw2", sender=f"{BOB}/desk")
    server.sent()
    assert ("login", ALICE) not in network(server).log
    server.drop_connection()
    for _ in range(5):
        server.clock.advance(1)
    server.handshake()
    server.clock.advance(0)
    assert ("login", ALICE) in network(server).log and ("login", BOB) not in network(server).log
    assert network(server).log[-1] == ("presence", ALICE, "unavailable")
    server.sent()
    server.service.plugin.deliver(ALICE, "carol", "after the restart")
    [message] = server.sent()
    assert matches(message, f"/message[@type='chat'][@from='carol@{GW}'][@to='{ALICE}']")
    # Her answer to the probe (she logs on) reuses that session.
    presence(server)
    assert network(server).log.count(("login", ALICE)) == 1


def test_failed_resume_at_restart_waits_for_the_next_presence(server):
    """A login refused at start tells nobody (no resource); the user's next presence retries."""
    register(server)
    server.sent()
    network(server).accounts["alice"] = "changed"
    server.drop_connection()
    for _ in range(5):
        server.clock.advance(1)
    server.handshake()
    server.clock.advance(0)
    assert network(server).log.count(("login", ALICE)) == 1
    assert not [s for s in server.sent() if s.getAttribute("type") == "error"]
    assert server.service.sessions.online_users() == []
    network(server).accounts["alice"] = "pw1"
    presence(server)
    assert server.service.sessions.online_users() == [ALICE]


def test_shutdown_waits_for_a_logout_already_under_way(server):
    """A logout begun by the last resource leaving has already left the user's state; the
    shutdown still waits for it, so no legacy work (a SIP unregistration) outlives the stop."""
    register(server, username="bob", password="pw2", sender=f"{BOB}/desk")
    presence(server, sender=f"{BOB}/desk")
    session = network(server).sessions[BOB]
    answered: Deferred[None] = Deferred()
    original = session.logout

    async def slow_logout() -> None:
        await answered
        await original()

    session.logout = slow_logout
    presence(server, "unavailable", sender=f"{BOB}/desk")
    stopped = ensureDeferred(server.service.sessions.shutdown())
    assert not stopped.called
    answered.callback(None)
    assert stopped.called and ("logout", BOB) in network(server).log
