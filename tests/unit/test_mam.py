"""XEP-0313 MAM on room and contact JIDs, on a fake reactor.

Stanzas follow https://xmpp.org/extensions/xep-0313.html §4 (query, results, fin) and §4.1.5 (form).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.plugin import RoomMessage
from gateway.store import archive_repository
from gateway.store.archive_repository import ArchiveRow
from gateway.xep.delay import format_stamp
from tests.unit.harness import build_gateway, matches

GW = "gw.example.org"
ALICE = "alice@example.org"
ROOM = f"#chan@{GW}"
CAROL = f"carol@{GW}"
OPTIONS = {"allows_unregistered": True, "rooms": {"#chan": {"occupants": ["bob"]}}}
T0 = datetime(2026, 4, 1, 8, 0, tzinfo=UTC)
NS_MAM = "urn:xmpp:mam:2"
FORM = "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>{}</x>"


def make_server(archive: dict | None = None):
    server, database = build_gateway("tests.fakenet:FakeNetPlugin", options=OPTIONS,
                                     extra={"archive": archive or {}})
    server.database = database
    server.service.start()
    server.handshake()
    server.sent()
    return server


@pytest.fixture
def server():
    server = make_server()
    rows = [ArchiveRow(GW, ALICE, ROOM, f"id{n}", f"m{n}" if n == 3 else "", T0 + timedelta(minutes=n),
                       "out" if n == 5 else "in", "alice" if n == 5 else ("bob" if n % 2 == 0 else "dan"),
                       f"line {n}") for n in range(10)]
    rows += [ArchiveRow(GW, "eve@example.org", ROOM, "eve1", "", T0, "in", "bob", "eve's"),
             ArchiveRow(GW, ALICE, CAROL, "c1", "", T0, "out", ALICE, "hi carol"),
             ArchiveRow(GW, ALICE, CAROL, "c2", "", T0 + timedelta(seconds=5), "in", CAROL, "hi alice")]
    with database_session(server) as session:
        archive_repository.insert_rows(session, rows)
    yield server
    server.service.connection.stop()


def database_session(server):
    return server.database.sessionmaker.begin()


def mam(server, form: str = "", rsm: str = "", *, to: str = ROOM, sender: str = f"{ALICE}/phone",
        extra: str = "", type_: str = "set"):
    page = f"<set xmlns='http://jabber.org/protocol/rsm'>{rsm}</set>" if rsm else ""
    server.feed(f"<iq type='{type_}' id='q1' from='{sender}' to='{to}'><query xmlns='{NS_MAM}' queryid='f27'>"
                f"{FORM.format(form) if form else ''}{page}{extra}</query></iq>")
    server.clock.advance(0)
    sent = server.sent()
    return sent[:-1], sent[-1]


def field(var: str, *values: str) -> str:
    return f"<field var='{var}'>" + "".join(f"<value>{v}</value>" for v in values) + "</field>"


def result_ids(results) -> list[str]:
    return [r.result["id"] for r in results]


def fin_set(iq) -> dict[str, str]:
    fin = next(iq.elements(NS_MAM, "fin"))
    page = next(fin.elements("http://jabber.org/protocol/rsm", "set"))
    return {child.name: str(child) for child in page.elements()} | {"complete": fin.getAttribute("complete", "")}


def test_results_and_fin(server):
    """§4: each line is a result message from the room, with queryid, id, delay and the line from
    room/nick; then the iq result with fin, first, last and count."""
    results, iq = mam(server, rsm="<max>3</max>")
    assert result_ids(results) == ["id0", "id1", "id2"]
    first = results[0]
    assert first["from"] == ROOM and first["to"] == f"{ALICE}/phone"
    assert matches(first, f"/message/result[@xmlns='{NS_MAM}'][@queryid='f27'][@id='id0']")
    assert matches(first, f"/message/result/forwarded[@xmlns='urn:xmpp:forward:0']/delay[@stamp='{format_stamp(T0)}']")
    assert matches(first, f"/message/result/forwarded/message[@xmlns='jabber:client'][@from='{ROOM}/bob']"
                          "[@type='groupchat']/body")
    assert str(first.result.forwarded.message.body) == "line 0"
    assert matches(iq, "/iq[@type='result'][@id='q1']/fin")
    assert fin_set(iq) == {"first": "id0", "last": "id2", "count": "10", "complete": ""}


def test_paging_forward_and_backward(server):
    """XEP-0059 after/before ids; an empty <before/> is the last page; complete on the last page."""
    results, iq = mam(server, rsm="<max>4</max><after>id3</after>")
    assert result_ids(results) == ["id4", "id5", "id6", "id7"] and fin_set(iq)["complete"] == ""
    results, iq = mam(server, rsm="<max>4</max><after>id7</after>")
    assert result_ids(results) == ["id8", "id9"] and fin_set(iq)["complete"] == "true"
    results, iq = mam(server, rsm="<max>3</max><before/>")
    assert result_ids(results) == ["id7", "id8", "id9"]
    results, iq = mam(server, rsm="<max>3</max><before>id2</before>")
    assert result_ids(results) == ["id0", "id1"] and fin_set(iq)["complete"] == "true"


def test_without_set_everything_up_to_the_cap(server):
    """No <set/>: every line (under the 100 cap), complete."""
    results, iq = mam(server)
    assert len(results) == 10 and fin_set(iq)["complete"] == "true"


def test_filters_start_end_with(server):
    """start/end are inclusive XEP-0082 times; with=room/nick selects that occupant's lines."""
    results, _ = mam(server, field("start", format_stamp(T0 + timedelta(minutes=7))))
    assert result_ids(results) == ["id7", "id8", "id9"]
    results, _ = mam(server, field("end", "2026-04-01T08:01:00Z"))
    assert result_ids(results) == ["id0", "id1"]
    results, iq = mam(server, field("with", f"{ROOM}/dan"))
    assert result_ids(results) == ["id1", "id3", "id7", "id9"] and fin_set(iq)["count"] == "4"
    results, _ = mam(server, field("with", ROOM))
    assert len(results) == 10
    results, iq = mam(server, field("with", f"someone@{GW}"))
    assert results == [] and fin_set(iq)["complete"] == "true"


def test_extended_fields_and_flip_page(server):
    """#extended: ids, after-id/before-id; <flip-page/> reverses the order within the page only."""
    results, _ = mam(server, field("ids", "id8", "id2"))
    assert result_ids(results) == ["id2", "id8"]
    results, _ = mam(server, field("after-id", "id2") + field("before-id", "id6"))
    assert result_ids(results) == ["id3", "id4", "id5"]
    assert str(results[0].result.forwarded.message["id"]) == "m3"  # the legacy id when there is one
    results, _ = mam(server, rsm="<max>3</max>", extra="<flip-page/>")
    assert result_ids(results) == ["id2", "id1", "id0"]


def test_own_lines_come_from_the_users_nick(server):
    """The user's own lines are in their archive, from room/their nick."""
    results, _ = mam(server, field("ids", "id5"))
    assert matches(results[0], f"/message/result/forwarded/message[@from='{ROOM}/alice']")


@pytest.mark.parametrize(("form", "rsm", "condition"), [
    ("", "<after>nope</after>", "item-not-found"),
    ("", "<before>eve1</before>", "item-not-found"),  # another user's line
    (field("ids", "id1", "nope"), "", "item-not-found"),
    (field("after-id", "nope"), "", "item-not-found"),
    (field("start", "yesterday"), "", "bad-request"),
    (field("with", "@@"), "", "bad-request"),
    (field("with", "a", "b"), "", "bad-request"),
    ("", "<max>many</max>", "bad-request"),
    ("", f"<index>{2**63}</index>", "bad-request"),
    (field("fulltext", "x"), "", "feature-not-implemented"),
    (field("ids", *[f"id{n}" for n in range(101)]), "", "bad-request"),
])
def test_errors(server, form, rsm, condition):
    """Unknown ids are item-not-found; malformed values bad-request; unknown fields feature-not-implemented."""
    results, iq = mam(server, form, rsm)
    assert results == []
    assert matches(iq, f"/iq[@type='error'][@id='q1']/error/{condition}")


def test_wrong_form_type_is_bad_request(server):
    """§4.1: FORM_TYPE must be urn:xmpp:mam:2."""
    server.feed(f"<iq type='set' id='q1' from='{ALICE}/phone' to='{ROOM}'><query xmlns='{NS_MAM}'>"
                "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:xmpp:mam:1</value>"
                "</field></x></query></iq>")
    [iq] = server.sent()
    assert matches(iq, "/iq[@type='error']/error/bad-request")


def test_users_only_read_their_own_archive(server):
    """Privacy: Eve's query of the same room returns only her own line."""
    results, iq = mam(server, sender="eve@example.org/pc")
    assert result_ids(results) == ["eve1"] and fin_set(iq)["count"] == "1"


def test_contact_archive(server):
    """MAM on a contact JID: the 1:1 conversation, chat messages from and to the right JIDs."""
    results, iq = mam(server, to=CAROL)
    assert result_ids(results) == ["c1", "c2"]
    assert matches(results[0], f"/message[@from='{CAROL}']/result/forwarded/message[@from='{ALICE}']"
                               f"[@to='{CAROL}'][@type='chat']")
    assert matches(results[1], f"/message/result/forwarded/message[@from='{CAROL}'][@to='{ALICE}']")
    results, _ = mam(server, field("with", ALICE), to=CAROL)
    assert len(results) == 2


def test_form_discovery(server):
    """§4.1.5: an iq get returns the form with FORM_TYPE and every supported field, none required."""
    server.feed(f"<iq type='get' id='f' from='{ALICE}/phone' to='{ROOM}'><query xmlns='{NS_MAM}'/></iq>")
    [iq] = server.sent()
    assert matches(iq, "/iq[@type='result']/query/x[@type='form']/field[@var='FORM_TYPE'][@type='hidden']")
    for var, type_ in (("with", "jid-single"), ("start", "text-single"), ("end", "text-single"),
                       ("before-id", "text-single"), ("after-id", "text-single"), ("ids", "list-multi")):
        assert matches(iq, f"/iq/query/x/field[@var='{var}'][@type='{type_}']")
    assert not matches(iq, "/iq/query/x/field/required")
    assert matches(iq, "/iq/query/x/field[@var='ids']/validate/open")


def test_metadata(server):
    """The archive's first and last line."""
    server.feed(f"<iq type='get' id='m' from='{ALICE}/phone' to='{ROOM}'><metadata xmlns='{NS_MAM}'/></iq>")
    [iq] = server.sent()
    assert matches(iq, f"/iq/metadata/start[@id='id0'][@timestamp='{format_stamp(T0)}']")
    assert matches(iq, "/iq/metadata/end[@id='id9']")


@pytest.mark.parametrize("target", [GW, f"{ROOM}/bob"])
def test_no_archive_at_the_gateway_or_an_occupant(server, target):
    """Only bare room and contact JIDs hold archives."""
    results, iq = mam(server, to=target)
    assert results == [] and matches(iq, "/iq[@type='error']/error/service-unavailable")


def test_disco_and_disabled_archive():
    """Room disco#info advertises mam:2 and #extended; with the archive off, neither, and queries fail."""
    server = make_server()
    server.feed(f"<iq type='get' id='d' from='{ALICE}/phone' to='{ROOM}'>"
                "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    [info] = server.sent()
    assert matches(info, f"/iq/query/feature[@var='{NS_MAM}']")
    assert matches(info, f"/iq/query/feature[@var='{NS_MAM}#extended']")
    server.service.connection.stop()
    server = make_server({"enabled": False})
    server.feed(f"<iq type='get' id='d' from='{ALICE}/phone' to='{ROOM}'>"
                "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    [info] = server.sent()
    assert not matches(info, f"/iq/query/feature[@var='{NS_MAM}']")
    _, iq = mam(server)
    assert matches(iq, "/iq[@type='error']/error/service-unavailable")
    server.service.connection.stop()


def test_live_line_found_by_its_stanza_id():
    """A line just shown live is in MAM at once (the query flushes the writer) under its stanza-id."""
    server = make_server({"flush_interval": 3600})
    server.feed(f"<presence from='{ALICE}/phone' to='{ROOM}/alice'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
    server.clock.advance(0)
    server.sent()
    server.service.plugin.room_event(RoomMessage(user=ALICE, room="#chan", nick="bob", body="fresh"))
    [live] = server.sent()
    live_id = next(live.elements("urn:xmpp:sid:0", "stanza-id"))["id"]
    results, _ = mam(server, field("ids", live_id))
    assert result_ids(results) == [live_id]
    server.service.connection.stop()
