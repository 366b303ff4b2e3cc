"""XEP-0100 flows on a fake reactor with the fake-network plugin: edge cases and exact orders.

Row ids (R4, U1, L5 ...) refer to the checklist in reference/xep0100-and-transports.md §1;
the same rows are covered against a real Prosody in tests/integration/test_xep0100.py.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select
from twisted.internet.defer import ensureDeferred

from gateway.store.models import Registration
from tests.unit.harness import build_gateway, matches

GW = "gw.example.org"
ALICE = "alice@example.org"
OPTIONS = {"accounts": {"alice": "pw1", "bob": "pw2"}, "contacts": {"alice": ["carol"]},
           "offline": ["dave"]}


@pytest.fixture
def server():
    server, database = build_gateway("tests.fakenet:FakeNetPlugin", options=OPTIONS,
                                     extra={"allowed_users": ["example.org"]})
    server.database = database
    server.service.start()
    server.handshake()
    server.sent()
    yield server
    server.service.connection.stop()


def network(server):
    return server.service.plugin.network


def iq(server, type_, payload, *, sender=f"{ALICE}/phone", to=GW, id_="r1"):
    server.feed(f"<iq type='{type_}' id='{id_}' from='{sender}' to='{to}'>{payload}</iq>")
    return server.sent()


def register(server, username="alice", password="pw1", sender=f"{ALICE}/phone"):
    return iq(server, "set", "<query xmlns='jabber:iq:register'>"
              f"<username>{username}</username><password>{password}</password></query>", sender=sender)


def presence(server, type_=None, sender=f"{ALICE}/phone", to=GW, extra=""):
    attr = f" type='{type_}'" if type_ else ""
    server.feed(f"<presence{attr} from='{sender}' to='{to}'>{extra}</presence>")
    server.clock.advance(0)
    return server.sent()


def test_registration_form_for_a_new_user(server):
    """R4: instructions, the bare fields and an x:data form with a hidden FORM_TYPE."""
    [reply] = iq(server, "get", "<query xmlns='jabber:iq:register'/>")
    assert matches(reply, "/iq[@type='result']/query/instructions")
    assert matches(reply, "/iq/query/username") and matches(reply, "/iq/query/password")
    assert matches(reply, "/iq/query/x[@type='form']/field[@var='FORM_TYPE'][@type='hidden']")
    assert matches(reply, "/iq/query/x/field[@var='password'][@type='text-private']")
    assert not matches(reply, "/iq/query/registered")


def test_registration_then_subscribe_and_encrypted_storage(server):
    """R7, R10: credentials checked, result, then subscribe; the password is not stored in clear."""
    result, subscribe = register(server)
    assert matches(result, "/iq[@type='result'][@id='r1']")
    assert matches(subscribe, f"/presence[@type='subscribe'][@from='{GW}'][@to='{ALICE}']")
    with server.database.sessionmaker() as session:
        row = session.scalars(select(Registration)).one()
    assert row.user == ALICE and row.legacy_id == "alice"
    assert b"pw1" not in row.credentials and "pw1" not in str(row.settings)


def test_wrong_password_is_not_acceptable_and_stores_nothing(server):
    """R7: a refused check is not-acceptable, echoing the query without the password."""
    [error] = register(server, password="nope")
    assert matches(error, "/iq[@type='error']/error[@type='modify']/not-acceptable")
    assert matches(error, "/iq/query[@xmlns='jabber:iq:register']/username")
    assert "nope" not in error.toXml()
    with server.database.sessionmaker() as session:
        assert session.scalars(select(Registration)).all() == []


def test_unreachable_network_at_registration(server):
    """A legacy service that cannot be reached is remote-server-timeout, not a credential error."""
    network(server).unreachable = True
    [error] = register(server)
    assert matches(error, "/iq[@type='error']/error[@type='wait']/remote-server-timeout")


def test_empty_password_is_not_acceptable_for_a_new_registration(server):
    """R8: an empty password on a new registration is not-acceptable."""
    [error] = register(server, password="")
    assert matches(error, "/iq[@type='error']/error/not-acceptable")


def test_form_wins_over_bare_fields(server):
    """R6: with both an x:data form and bare fields, the form values are used."""
    result, _ = iq(server, "set", "<query xmlns='jabber:iq:register'>"
                   "<username>bob</username><password>pw2</password>"
                   "<x xmlns='jabber:x:data' type='submit'>"
                   "<field var='FORM_TYPE'><value>jabber:iq:register</value></field>"
                   "<field var='username'><value>alice</value></field>"
                   "<field var='password'><value>pw1</value></field></x></query>")
    assert matches(result, "/iq[@type='result']")
    with server.database.sessionmaker() as session:
        assert session.scalars(select(Registration.legacy_id)).one() == "alice"


def test_registered_query_shows_values_but_never_the_password(server):
    """E1: <registered/>, the username, and an empty password."""
    register(server)
    [reply] = iq(server, "get", "<query xmlns='jabber:iq:register'/>")
    assert matches(reply, "/iq/query/registered")
    assert "alice" in reply.toXml() and "pw1" not in reply.toXml()


def test_changes_recheck_credentials_and_keep_the_record_on_failure(server):
    """E2: a wrong new password is not-acceptable and the stored record is unchanged."""
    register(server)
    with server.database.sessionmaker() as session:
        before = session.scalars(select(Registration.credentials)).one()
    [error] = register(server, username="bob", password="wrong")
    assert matches(error, "/iq[@type='error']/error/not-acceptable")
    with server.database.sessionmaker() as session:
        row = session.scalars(select(Registration)).one()
    assert (row.legacy_id, row.credentials) == ("alice", before)


def test_empty_password_never_blanks_the_stored_one(server):
    """E3: a change with an empty password keeps the old password (login still works)."""
    register(server)
    [result] = register(server, password="")
    assert matches(result, "/iq[@type='result']")
    presence(server)
    assert ("login", ALICE) in network(server).log
    assert ALICE in server.service.sessions.online_users()


def test_changes_can_be_disabled():
    """E4: with registration_changes = false a registered user's change is not-allowed."""
    server, _ = build_gateway("tests.fakenet:FakeNetPlugin", options=OPTIONS,
                              extra={"registration_changes": False})
    server.service.start()
    server.handshake()
    register(server)
    [error] = register(server)
    assert matches(error, "/iq[@type='error']/error/not-allowed")
    server.service.connection.stop()


def test_disallowed_domain(server):
    """Users outside allowed_users get forbidden on get and not-allowed on set."""
    [error] = iq(server, "get", "<query xmlns='jabber:iq:register'/>", sender="eve@evil.example/x")
    assert matches(error, "/iq/error/forbidden")
    [error] = register(server, sender="eve@evil.example/x")
    assert matches(error, "/iq/error/not-allowed")


def test_removal_order(server):
    """U1: legacy logout and data deletion, then result, unsubscribe, unsubscribed, unavailable."""
    register(server)
    presence(server)
    network(server).log.clear()
    stanzas = iq(server, "set", "<query xmlns='jabber:iq:register'><remove/></query>",
                 sender=f"{ALICE}/laptop", id_="rm")
    assert network(server).log == [("logout", ALICE)]
    kinds = [(s.name, s.getAttribute("type")) for s in stanzas if s.getAttribute("from") == GW]
    assert kinds[-4:] == [("iq", "result"), ("presence", "unsubscribe"), ("presence", "unsubscribed"),
                          ("presence", "unavailable")]
    with server.database.sessionmaker() as session:
        assert session.scalars(select(Registration)).all() == []


def test_removal_errors(server):
    """U3: registration-required for a stranger, bad-request when <remove/> is not alone."""
    [error] = iq(server, "set", "<query xmlns='jabber:iq:register'><remove/></query>")
    assert matches(error, "/iq/error/registration-required")
    register(server)
    [error] = iq(server, "set", "<query xmlns='jabber:iq:register'><remove/><username>x</username></query>")
    assert matches(error, "/iq/error/bad-request")


def test_logon_lives_while_any_resource_is_available(server):
    """L1, L2, L6, O1: first resource logs in, the session survives until the last one leaves."""
    register(server)
    sent = presence(server, extra="<show>dnd</show>")
    assert matches(sent[0], f"/presence[@from='{GW}'][@to='{ALICE}']")
    assert ("presence", ALICE, "dnd") in network(server).log
    presence(server, sender=f"{ALICE}/laptop")
    assert network(server).log.count(("login", ALICE)) == 1
    presence(server, "unavailable")
    assert ("logout", ALICE) not in network(server).log
    sent = presence(server, "unavailable", sender=f"{ALICE}/laptop")
    assert ("logout", ALICE) in network(server).log
    assert matches(sent[-1], f"/presence[@type='unavailable'][@from='{GW}'][@to='{ALICE}/laptop']")


def test_login_failure_is_a_presence_error(server):
    """L5: bad credentials give not-authorized, an unreachable service remote-server-timeout."""
    register(server)
    network(server).accounts["alice"] = "changed"
    [error] = presence(server)
    assert matches(error, f"/presence[@type='error'][@from='{GW}'][@to='{ALICE}/phone']"
                          "/error/not-authorized")
    network(server).accounts["alice"] = "pw1"
    network(server).unreachable = True
    [error] = presence(server)
    assert matches(error, "/presence[@type='error']/error[@type='wait']/remote-server-timeout")


def test_messages_both_ways(server):
    """M1, LM1: chat to a contact reaches the legacy side; legacy messages come from bare contact JIDs."""
    register(server)
    presence(server)
    server.feed(f"<message type='chat' id='m1' from='{ALICE}/phone' to='carol@{GW}'><body>hi</body></message>")
    assert ("send", ALICE, "carol", "hi") in network(server).log
    server.service.plugin.deliver(ALICE, "carol", "hello \x02bold\x02")
    [message] = [s for s in server.sent() if s.name == "message"]
    assert matches(message, f"/message[@type='chat'][@from='carol@{GW}'][@to='{ALICE}']")
    assert str(message.body) == "hello bold"


def test_message_errors(server):
    """M2: registration-required, not logged in, and a legacy refusal, each echoing the id."""
    server.feed(f"<message type='chat' id='e1' from='{ALICE}/phone' to='carol@{GW}'><body>x</body></message>")
    [error] = server.sent()
    assert matches(error, "/message[@type='error'][@id='e1']/error/registration-required")
    register(server)
    server.sent()
    server.feed(f"<message type='chat' id='e2' from='{ALICE}/phone' to='carol@{GW}'><body>x</body></message>")
    [error] = server.sent()
    assert matches(error, "/message[@type='error'][@id='e2']/error/service-unavailable")
    presence(server)
    server.feed(f"<message type='chat' id='e3' from='{ALICE}/phone' to='dave@{GW}'><body>x</body></message>")
    [error] = server.sent()
    assert matches(error, f"/message[@type='error'][@id='e3'][@from='dave@{GW}']/error/service-unavailable")


def test_contact_subscription_flow(server):
    """A1: subscribe to a contact: legacy add, subscribed, then subscribe from the contact."""
    register(server)
    presence(server)
    sent = presence(server, "subscribe", sender=ALICE, to=f"carol@{GW}")
    assert ("add", ALICE, "carol") in network(server).log
    assert [s.getAttribute("type") for s in sent] == ["subscribed", "subscribe"]
    sent = presence(server, "subscribe", sender=ALICE, to=f"dave@{GW}")
    assert [s.getAttribute("type") for s in sent] == ["unsubscribed"]


def test_legacy_add_is_a_subscribe_never_subscribed(server):
    """LA1, LD1: a legacy add is one subscribe; a legacy removal is unsubscribe, unsubscribed, unavailable."""
    register(server)
    presence(server)
    server.service.plugin.contact_added(ALICE, "erin")
    assert [s.getAttribute("type") for s in server.sent()] == ["subscribe"]
    server.service.plugin.contact_removed(ALICE, "erin")
    assert [s.getAttribute("type") for s in server.sent()] == ["unsubscribe", "unsubscribed", "unavailable"]


def test_roster_population_falls_back_to_subscribe(server):
    """CL1: without privilege or rosterx, one subscribe per legacy contact."""
    register(server)
    sent = presence(server)  # login, then the contact list on the next reactor turn
    disco = [s for s in sent if s.name == "iq"]
    assert [q["to"] for q in disco] == [f"{ALICE}/phone"]
    for query in disco:  # the client does not support rosterx
        server.feed(f"<iq type='result' id='{query['id']}' from='{query['to']}' to='{GW}'>"
                    "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    subscribes = [s for s in server.sent() if s.getAttribute("type") == "subscribe"]
    assert [s["from"] for s in subscribes] == [f"carol@{GW}"]


def test_roster_population_with_privilege(server):
    """CL1: with the XEP-0356 roster privilege, a roster set per contact, no subscribe."""
    server.feed(f"<message from='example.org' to='{GW}'><privilege xmlns='urn:xmpp:privilege:2'>"
                "<perm access='roster' type='both'/></privilege></message>")
    register(server)
    [roster_set] = [s for s in presence(server) if s.name == "iq"]
    assert matches(roster_set, f"/iq[@type='set'][@to='{ALICE}']/query/item[@jid='carol@{GW}']")
    server.feed(f"<iq type='result' id='{roster_set['id']}' from='{ALICE}' to='{GW}'/>")
    assert not [s for s in server.sent() if s.getAttribute("type") == "subscribe"]


def test_restart_announces_and_probes_registered_users(server):
    """Item 8: after a new handshake, registered users get our presence state and a probe."""
    register(server)
    server.sent()
    server.drop_connection()
    for _ in range(5):
        server.clock.advance(1)
    assert server.endpoint.attempts >= 2
    server.handshake()
    probes = [s for s in server.sent() if s.getAttribute("type") == "probe"]
    assert [p["to"] for p in probes] == [ALICE]


def test_shutdown_says_goodbye(server):
    """Item 8: on stop, unavailable from contacts and the gateway, and a legacy logout."""
    register(server)
    presence(server)
    server.service.plugin.contact_presence(ALICE, "carol")
    server.sent()
    ensureDeferred(server.service.sessions.shutdown())
    sent = server.sent()
    assert [(s["from"], s.getAttribute("type")) for s in sent] == [
        (f"carol@{GW}", "unavailable"), (GW, "unavailable")]
    assert ("logout", ALICE) in network(server).log


def test_session_lost_tells_the_user(server):
    """A legacy session lost without asking: contacts unavailable, presence error from the gateway."""
    register(server)
    presence(server)
    server.service.plugin.contact_presence(ALICE, "carol")
    server.sent()
    server.service.plugin.lose_session(ALICE)
    sent = server.sent()
    assert matches(sent[0], f"/presence[@type='unavailable'][@from='carol@{GW}']")
    assert matches(sent[1], f"/presence[@type='error'][@from='{GW}']/error/remote-server-timeout")


def test_events_during_login_are_delivered_after_it():
    """R9: a legacy message that arrives while logging in comes after the gateway's presence."""
    server, _ = build_gateway("tests.fakenet:FakeNetPlugin",
                              options={**OPTIONS, "message_during_login": "early bird"})
    server.service.start()
    server.handshake()
    register(server)
    sent = presence(server)
    assert [s.name for s in sent[:2]] == ["presence", "message"]
    assert str(sent[1].body) == "early bird"
    server.service.connection.stop()


def test_unsubscribing_from_the_gateway_logs_out_but_keeps_the_registration(server):
    """U5 (our choice): the user removed the gateway: legacy logout, unsubscribed, data kept."""
    register(server)
    presence(server)
    sent = presence(server, "unsubscribe", sender=ALICE)
    assert ("logout", ALICE) in network(server).log
    assert matches(sent[-1], f"/presence[@type='unsubscribed'][@from='{GW}']")
    with server.database.sessionmaker() as session:
        assert session.scalars(select(Registration)).one().user == ALICE


def test_presence_changes_reach_the_legacy_side_but_probes_do_not(server):
    """L3, L4: show maps both ways; a probe is answered by the gateway, not forwarded."""
    register(server)
    presence(server)
    presence(server, extra="<show>away</show>")
    assert network(server).log[-1] == ("presence", ALICE, "away")
    before = list(network(server).log)
    [answer] = presence(server, "probe", sender=ALICE, to=f"carol@{GW}")
    assert network(server).log == before
    assert matches(answer, f"/presence[@type='unavailable'][@from='carol@{GW}']")
    server.service.plugin.contact_presence(ALICE, "carol", show="xa")
    [forwarded] = server.sent()
    assert matches(forwarded, f"/presence[@from='carol@{GW}'][@to='{ALICE}']/show")
    assert str(forwarded.show) == "xa"


def test_removing_or_refusing_a_contact(server):
    """D1, LA3: unsubscribe or unsubscribed to a contact removes it on the legacy side."""
    register(server)
    presence(server)
    presence(server, "unsubscribe", sender=ALICE, to=f"carol@{GW}")
    presence(server, "unsubscribed", sender=ALICE, to=f"erin@{GW}")
    assert ("remove", ALICE, "carol") in network(server).log
    assert ("remove", ALICE, "erin") in network(server).log


def test_roster_item_exchange_to_resources_that_support_it(server):
    """CL1: a resource advertising rosterx gets one XEP-0144 add with the contacts."""
    register(server)
    sent = presence(server)
    [query] = [s for s in sent if s.name == "iq"]
    server.feed(f"<iq type='result' id='{query['id']}' from='{query['to']}' to='{GW}'>"
                "<query xmlns='http://jabber.org/protocol/disco#info'>"
                "<feature var='http://jabber.org/protocol/rosterx'/></query></iq>")
    [exchange] = server.sent()
    assert matches(exchange, f"/message[@to='{ALICE}/phone']/x[@xmlns='http://jabber.org/protocol/rosterx']"
                             f"/item[@action='add'][@jid='carol@{GW}']")


def test_unregistration_cleans_the_roster_with_privilege(server):
    """U4: with roster privilege, contacts are removed from the roster after unregistration."""
    server.feed(f"<message from='example.org' to='{GW}'><privilege xmlns='urn:xmpp:privilege:2'>"
                "<perm access='roster' type='both'/></privilege></message>")
    register(server)
    [roster_set] = [s for s in presence(server) if s.name == "iq"]
    server.feed(f"<iq type='result' id='{roster_set['id']}' from='{ALICE}' to='{GW}'/>")
    server.sent()
    sent = iq(server, "set", "<query xmlns='jabber:iq:register'><remove/></query>")
    removals = [s for s in sent if s.name == "iq" and s.getAttribute("type") == "set"]
    assert [r.query.item["jid"] for r in removals] == [f"carol@{GW}"]
    assert removals[0].query.item["subscription"] == "remove"
    for removal in removals:
        server.feed(f"<iq type='result' id='{removal['id']}' from='{ALICE}' to='{GW}'/>")


def test_iq_gateway_get_has_desc_and_prompt(server):
    """AD3: get returns <desc/> and <prompt/>."""
    [reply] = iq(server, "get", "<query xmlns='jabber:iq:gateway'/>")
    assert matches(reply, "/iq[@type='result']/query/desc") and matches(reply, "/iq/query/prompt")


def test_refused_registration_never_echoes_secrets():
    """An error reply echoes the request with every secret emptied: bare secret elements and
    secret form fields alike."""
    server, _ = build_gateway("plugins.irc.plugin:IrcPlugin")
    server.service.start()
    server.handshake()
    server.sent()
    [error] = iq(server, "set", "<query xmlns='jabber:iq:register'><username>bad nick</username>"
                 "<password>hunter2</password><client_certificate>-----BEGIN PRIVATE KEY-----"
                 "</client_certificate></query>")
    assert matches(error, "/iq[@type='error']/error/not-acceptable")
    assert "hunter2" not in error.toXml() and "PRIVATE KEY" not in error.toXml()
    [error] = iq(server, "set", "<query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'>"
                 "<field var='username'><value>bad nick</value></field>"
                 "<field var='client_certificate'><value>-----BEGIN PRIVATE KEY-----</value></field>"
                 "</x></query>")
    assert matches(error, "/iq[@type='error']/error/not-acceptable")
    assert "PRIVATE KEY" not in error.toXml()
    server.service.connection.stop()
