"""XEP-0050 ad-hoc commands and the XEP-0133 admin nodes, on the fake reactor."""

from __future__ import annotations

import pytest
from twisted.internet.defer import ensureDeferred

from tests.unit.harness import build_gateway, matches

GW = "gw.example.org"
ALICE = "alice@example.org"
ADMIN = "admin@example.org"
NS = "http://jabber.org/protocol/commands"
ADMIN_NS = "http://jabber.org/protocol/admin"


@pytest.fixture
def server():
    server, _ = build_gateway("tests.fakenet:FakeNetPlugin", options={"accounts": {"alice": "pw1"}})
    server.service.start()
    server.handshake()
    server.sent()
    yield server
    server.service.connection.stop()


def send(server, xml):
    server.feed(xml)
    server.clock.advance(0)
    return server.sent()


def register_and_log_in(server):
    send(server, f"<iq type='set' id='reg' from='{ALICE}/a' to='{GW}'><query xmlns='jabber:iq:register'>"
                 "<username>alice</username><password>pw1</password></query></iq>")
    send(server, f"<presence from='{ALICE}/a' to='{GW}'/>")


def execute(server, node, sender, form="", session=None):
    session_attr = f" sessionid='{session}'" if session else ""
    return send(server, f"<iq type='set' id='c' from='{sender}' to='{GW}'>"
                        f"<command xmlns='{NS}' node='{node}'{session_attr}>{form}</command></iq>")


def test_command_list_depends_on_who_asks(server):
    """Users see their commands; admins also see the XEP-0133 nodes."""
    def items(sender):
        [reply] = send(server, f"<iq type='get' id='i' from='{sender}' to='{GW}'>"
                               f"<query xmlns='http://jabber.org/protocol/disco#items' node='{NS}'/></iq>")
        return {item["node"] for item in reply.query.elements()}

    assert items(f"{ALICE}/a") == {"unregister", "reconnect", "settings"}
    assert f"{ADMIN_NS}#get-online-users-num" in items(f"{ADMIN}/x")


def test_admin_counts(server):
    """get-registered-users-num and get-online-users-num answer with result forms."""
    register_and_log_in(server)
    [reply] = execute(server, f"{ADMIN_NS}#get-registered-users-num", f"{ADMIN}/x")
    assert matches(reply, "/iq/command[@status='completed']/x/field[@var='registeredusersnum']/value")
    values = [str(f.value) for f in reply.command.x.elements() if f.getAttribute("var") != "FORM_TYPE"]
    assert values == ["1"]
    [reply] = execute(server, f"{ADMIN_NS}#get-online-users-num", f"{ADMIN}/x")
    values = [str(f.value) for f in reply.command.x.elements() if f.getAttribute("var") != "FORM_TYPE"]
    assert values == ["1"]


def test_admin_commands_are_forbidden_to_users(server):
    """A non-admin executing an admin node gets forbidden."""
    [reply] = execute(server, f"{ADMIN_NS}#get-registered-users-num", f"{ALICE}/a")
    assert matches(reply, "/iq[@type='error']/error/forbidden")


def test_end_user_session_and_announce(server):
    """end-user-session logs the user out; announce reaches online users as a headline."""
    register_and_log_in(server)
    [reply] = execute(server, f"{ADMIN_NS}#announce", f"{ADMIN}/x")
    session = reply.command["sessionid"]
    sent = execute(server, f"{ADMIN_NS}#announce", f"{ADMIN}/x", session=session, form=(
        "<x xmlns='jabber:x:data' type='submit'><field var='announcement'><value>maintenance</value>"
        "</field></x>"))
    assert [s.name for s in sent] == ["message", "iq"]
    assert matches(sent[0], f"/message[@type='headline'][@to='{ALICE}']")
    [reply] = execute(server, f"{ADMIN_NS}#end-user-session", f"{ADMIN}/x")
    sent = execute(server, f"{ADMIN_NS}#end-user-session", f"{ADMIN}/x", session=reply.command["sessionid"],
                   form=f"<x xmlns='jabber:x:data' type='submit'><field var='accountjids'><value>{ALICE}</value>"
                        "</field></x>")
    assert ("logout", ALICE) in server.service.plugin.network.log
    assert server.service.sessions.online_users() == []
    assert matches(sent[-1], "/iq/command[@status='completed']/note")


def test_unregister_command_sends_farewell_after_the_result(server):
    """The unregister command follows XEP-0100 §4.3.1: result first, then the presences."""
    register_and_log_in(server)
    [reply] = execute(server, "unregister", f"{ALICE}/a")
    sent = execute(server, "unregister", f"{ALICE}/a", session=reply.command["sessionid"],
                   form="<x xmlns='jabber:x:data' type='submit'><field var='confirm'><value>1</value></field></x>")
    assert [(s.name, s.getAttribute("type")) for s in sent] == [
        ("iq", "result"), ("presence", "unsubscribe"), ("presence", "unsubscribed"), ("presence", "unavailable")]
    assert ("logout", ALICE) in server.service.plugin.network.log


def test_settings_command_stores_plugin_settings(server):
    """The settings form shows the plugin's fields and stores what is submitted."""
    register_and_log_in(server)
    [reply] = execute(server, "settings", f"{ALICE}/a")
    assert matches(reply, "/iq/command[@status='executing']/x/field[@var='greeting']")
    execute(server, "settings", f"{ALICE}/a", session=reply.command["sessionid"],
            form="<x xmlns='jabber:x:data' type='submit'><field var='greeting'><value>hi!</value></field></x>")
    result = []
    ensureDeferred(server.service.sessions.load_registration(ALICE)).addCallback(result.append)
    assert result[-1].values["greeting"] == "hi!"


def test_unknown_session_is_a_bad_request(server):
    """A sessionid the gateway did not hand out is refused."""
    [reply] = execute(server, "reconnect", f"{ALICE}/a", session="nope")
    assert matches(reply, "/iq[@type='error']/error/bad-request")
