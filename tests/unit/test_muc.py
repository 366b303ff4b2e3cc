"""XEP-0045 service side over a fake reactor with the fake-network plugin's rooms.

Example stanzas follow XEP-0045 §7.2 (https://xmpp.org/extensions/xep-0045.html#enter).
"""

from __future__ import annotations

import pytest

from gateway.plugin import Occupant, OccupantJoined, OccupantLeft, RoomLeft, RoomMessage
from tests.unit.harness import build_gateway, matches

GW = "gw.example.org"
ALICE = "alice@example.org"
ROOM = f"#chan@{GW}"
OPTIONS = {"accounts": {"alice": "pw1"}, "allows_unregistered": True,
           "rooms": {"#chan": {"occupants": ["@op", "bob"], "subject": "Welcome"}}}
MUC = "<x xmlns='http://jabber.org/protocol/muc'/>"


@pytest.fixture
def server():
    server, _ = build_gateway("tests.fakenet:FakeNetPlugin", options=OPTIONS)
    server.service.start()
    server.handshake()
    server.sent()
    yield server
    server.service.connection.stop()


def log(server):
    return server.service.plugin.network.log


def send(server, xml):
    server.feed(xml)
    server.clock.advance(0)
    return server.sent()


def join(server, resource="phone", nick="alice", room=ROOM, extra=MUC):
    return send(server, f"<presence from='{ALICE}/{resource}' to='{room}/{nick}'>{extra}</presence>")


def codes(element):
    return {s["code"] for x in element.elements("http://jabber.org/protocol/muc#user", "x")
            for s in x.elements("http://jabber.org/protocol/muc#user", "status")}


def test_join_order_occupants_self_subject(server):
    """§7.2: others first, then self with 110, then the subject; unregistered users may join."""
    sent = join(server)
    assert [s.name for s in sent] == ["presence", "presence", "presence", "message"]
    assert sent[0]["from"] == f"{ROOM}/@op"
    assert matches(sent[0], "/presence/x/item[@role='moderator']")
    assert sent[1]["from"] == f"{ROOM}/bob"
    assert sent[2]["from"] == f"{ROOM}/alice" and codes(sent[2]) == {"110", "100"}
    assert matches(sent[3], f"/message[@type='groupchat'][@from='{ROOM}']/subject")
    assert str(sent[3].subject) == "Welcome"
    assert ("join", ALICE, "#chan", "alice") in log(server)


def test_rewritten_nick_gets_210():
    """§7.2.2: when the network gives another nick, the self-presence carries 210."""
    server, _ = build_gateway("tests.fakenet:FakeNetPlugin", options={**OPTIONS, "forced_nick": "alice_"})
    server.service.start()
    server.handshake()
    server.sent()
    sent = join(server)
    assert sent[2]["from"] == f"{ROOM}/alice_" and codes(sent[2]) == {"110", "100", "210"}
    server.service.connection.stop()


def test_second_resource_shares_the_room_and_gets_full_state(server):
    """A second resource joins without a second legacy join and gets the whole state."""
    join(server)
    sent = join(server, resource="laptop")
    assert [s["to"] for s in sent] == [f"{ALICE}/laptop"] * 4
    assert [entry for entry in log(server) if entry[0] == "join"] == [("join", ALICE, "#chan", "alice")]


def test_join_errors(server):
    """§7.2.6-§7.2.9: refused joins are presence errors from the room with the condition."""
    [error] = join(server, room=f"#full@{GW}")
    assert matches(error, f"/presence[@type='error'][@from='#full@{GW}/alice']/error/service-unavailable")
    assert matches(error, "/presence/x[@xmlns='http://jabber.org/protocol/muc']")
    [error] = join(server, room=f"#banned@{GW}")
    assert matches(error, "/presence[@type='error']/error/forbidden")
    [error] = join(server, room=f"#secret@{GW}")
    assert matches(error, "/presence[@type='error']/error[@type='auth']/not-authorized")
    sent = join(server, room=f"#secret@{GW}",
                extra="<x xmlns='http://jabber.org/protocol/muc'><password>key</password></x>")
    assert codes(sent[-2]) == {"110", "100"}


def test_join_without_nick_is_jid_malformed(server):
    """§7.2.1: a join presence to the bare room JID is refused."""
    [error] = send(server, f"<presence from='{ALICE}/phone' to='{ROOM}'>{MUC}</presence>")
    assert matches(error, "/presence[@type='error']/error/jid-malformed")


def test_groupchat_reflection_to_every_resource(server):
    """§7.4: each line reflected to every joined resource, client id on the first, same ids for all."""
    join(server)
    join(server, resource="laptop")
    sent = send(server, f"<message type='groupchat' id='c1' from='{ALICE}/phone' to='{ROOM}'>"
                        "<body>one\ntwo</body><origin-id xmlns='urn:xmpp:sid:0' id='o1'/></message>")
    assert [(s["to"], str(s.body)) for s in sent] == [
        (f"{ALICE}/laptop", "one"), (f"{ALICE}/phone", "one"),
        (f"{ALICE}/laptop", "two"), (f"{ALICE}/phone", "two")]
    assert sent[0]["id"] == sent[1]["id"] == "c1"
    assert sent[2]["id"] == sent[3]["id"] != "c1"
    assert matches(sent[0], "/message/origin-id[@id='o1']")
    assert matches(sent[0], f"/message/stanza-id[@by='{ROOM}']")
    assert [e for e in log(server) if e[0] == "say"] == [("say", ALICE, "#chan", "one"),
                                                         ("say", ALICE, "#chan", "two")]


def test_groupchat_from_a_resource_not_in_the_room(server):
    """A message from a resource that has not joined is not-acceptable."""
    join(server)
    [error] = send(server, f"<message type='groupchat' id='x' from='{ALICE}/other' to='{ROOM}'><body>hi</body></message>")
    assert matches(error, "/message[@type='error'][@id='x']/error/not-acceptable")


def test_room_events_reach_every_resource(server):
    """Legacy room events fan out: messages with one id for all, joins, parts, kicks."""
    join(server)
    join(server, resource="laptop")
    plugin = server.service.plugin
    plugin.room_event(RoomMessage(user=ALICE, room="#chan", nick="bob", body="hey \x02you", legacy_id="m1"))
    sent = server.sent()
    assert [s["id"] for s in sent] == ["m1", "m1"] and str(sent[0].body) == "hey you"
    plugin.room_event(OccupantJoined(user=ALICE, room="#chan", occupant=Occupant(nick="carol")))
    plugin.room_event(OccupantLeft(user=ALICE, room="#chan", nick="bob", kicked_by="@op", reason="spam"))
    sent = server.sent()
    assert [s["from"] for s in sent] == [f"{ROOM}/carol"] * 2 + [f"{ROOM}/bob"] * 2
    assert codes(sent[2]) == {"307"} and matches(sent[2], "/presence/x/item/actor[@nick='@op']")


def test_nick_change(server):
    """§7.6: unavailable with 303 and the new nick, then available from the new nick."""
    join(server)
    sent = send(server, f"<presence from='{ALICE}/phone' to='{ROOM}/alicia'/>")
    assert codes(sent[0]) == {"110", "303"} and matches(sent[0], "/presence[@type='unavailable']/x/item[@nick='alicia']")
    assert sent[1]["from"] == f"{ROOM}/alicia" and sent[1].getAttribute("type") is None


def test_leave_and_last_resource_parts(server):
    """§7.14: self unavailable with 110; the legacy room is left with the last resource."""
    join(server)
    join(server, resource="laptop")
    [bye] = send(server, f"<presence type='unavailable' from='{ALICE}/phone' to='{ROOM}/alice'/>")
    assert codes(bye) == {"110"} and bye["to"] == f"{ALICE}/phone"
    assert not [e for e in log(server) if e[0] == "part"]
    send(server, f"<presence type='unavailable' from='{ALICE}/laptop' to='{ROOM}/alice'><status>bye</status></presence>")
    assert ("part", ALICE, "#chan", "bye") in log(server)
    assert ("logout", ALICE) in log(server)  # nothing else used the session


def test_kicked_user(server):
    """A legacy kick of the user: self unavailable with 110 and 307 to every resource."""
    join(server)
    server.service.plugin.room_event(RoomLeft(user=ALICE, room="#chan", kicked_by="@op", reason="bye"))
    [out] = server.sent()
    assert codes(out) == {"110", "307"} and matches(out, "/presence/x/item/reason")


def test_subject_change_from_the_user(server):
    """A groupchat <subject/> sets the subject; the change comes back from the user's nick."""
    join(server)
    sent = send(server, f"<message type='groupchat' from='{ALICE}/phone' to='{ROOM}'><subject>New</subject></message>")
    assert matches(sent[0], f"/message[@from='{ROOM}/alice']/subject") and str(sent[0].subject) == "New"


def test_self_ping(server):
    """XEP-0410: a joined resource's self-ping succeeds; another resource gets not-acceptable."""
    join(server)
    [ok] = send(server, f"<iq type='get' id='p' from='{ALICE}/phone' to='{ROOM}/alice'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert matches(ok, "/iq[@type='result']")
    [no] = send(server, f"<iq type='get' id='p' from='{ALICE}/other' to='{ROOM}/alice'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert matches(no, "/iq[@type='error']/error/not-acceptable")


def test_room_disco(server):
    """Room disco#info: conference identity and the MUC features."""
    [info] = send(server, f"<iq type='get' id='d' from='{ALICE}/phone' to='{ROOM}'>"
                          "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    assert matches(info, "/iq/query/identity[@category='conference'][@type='fake']")
    assert matches(info, "/iq/query/feature[@var='http://jabber.org/protocol/muc']")


def test_shutdown_empties_rooms(server):
    """On stop, occupants and the user leave every room with 332."""
    join(server)
    from twisted.internet.defer import ensureDeferred

    ensureDeferred(server.service.sessions.shutdown())
    sent = [s for s in server.sent() if s["from"].startswith(ROOM)]
    assert [s["from"] for s in sent] == [f"{ROOM}/@op", f"{ROOM}/bob", f"{ROOM}/alice"]
    assert codes(sent[-1]) == {"110", "332"}


def test_allowed_users_also_limit_rooms():
    """A user outside allowed_users cannot use rooms either, registration or not."""
    server, _ = build_gateway("tests.fakenet:FakeNetPlugin", options=OPTIONS,
                              extra={"allowed_users": ["example.org"]})
    server.service.start()
    server.handshake()
    server.sent()
    [error] = send(server, f"<presence from='eve@evil.example/x' to='{ROOM}/eve'>{MUC}</presence>")
    assert matches(error, "/presence[@type='error']/error/forbidden")
    assert not [entry for entry in server.service.plugin.network.log if entry[0] == "join"]
    server.service.connection.stop()
