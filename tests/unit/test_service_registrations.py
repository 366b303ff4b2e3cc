"""Per-service registrations, persistent rooms, autojoin and the service/room commands of the
core (issue 5), on the fake reactor with a fake network whose services are ``net.*``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from gateway.plugin import FormField, LoginFailed, Registration, RoomMessage
from gateway.store import repository
from tests.fakenet import FakeNetPlugin, FakeSession
from tests.unit.harness import build_gateway, matches

GW = "gw.example.org"
ALICE = "alice@example.org"
SERVICE = f"net.one@{GW}"
ROOM = f"#chan@{GW}"
REGISTER = "jabber:iq:register"
COMMANDS = "http://jabber.org/protocol/commands"
DATA = "jabber:x:data"
MUC = "<x xmlns='http://jabber.org/protocol/muc'/>"


class ServiceSession(FakeSession):
    async def settings_changed(self, address: str, values: Mapping[str, str]) -> None:
        self.log.append(("changed", self.user, address, dict(values)))


class ServiceNetPlugin(FakeNetPlugin):
    """FakeNet with services (``net.*`` addresses): registrations per service, checked by
    ``check_service_credentials`` (the password ``bad`` is refused), autojoin rooms."""

    service_field = FormField(var="network", label="Network")
    service_registration_fields = (
        FormField(var="nick", label="Nick"),
        FormField(var="password", label="Password", type="text-private", secret=True),
        FormField(var="autojoin", label="Autojoin", type="text-multi"),
    )

    def is_service(self, address: str) -> bool:
        return address.startswith("net.")

    def service_of(self, room: str) -> str:
        return "net.one"

    def service_values(self, values: Mapping[str, str]) -> dict[str, str]:
        return {"nick": values.get("username", ""), "password": values.get("password", "")}

    async def check_service_credentials(self, user: str, service: str, values: Mapping[str, str]) -> None:
        self.network.log.append(("check-service", user, service, values.get("nick", "")))
        if values.get("password") == "bad":
            raise LoginFailed("not-authorized", "wrong password")

    def autojoin_rooms(self, registration: Registration) -> Sequence[tuple[str, str]]:
        return [(room, values.get("nick", "x")) for values in registration.services.values()
                for room in values.get("autojoin", "").split()]

    async def login(self, registration: Registration) -> FakeSession:
        self.network.log.append(("login", registration.user, tuple(sorted(registration.services))))
        session = ServiceSession(self, registration)
        self.network.sessions[registration.user] = session
        return session


PLUGIN = "tests.unit.test_service_registrations:ServiceNetPlugin"
OPTIONS = {"accounts": {"alice": "pw1"}, "allows_unregistered": True,
           "rooms": {"#chan": {"occupants": ["bob"]}}}


@pytest.fixture
def gateway():
    server, database = build_gateway(PLUGIN, options=OPTIONS)
    server.service.start()
    server.handshake()
    server.clock.advance(0)
    server.sent()
    yield server, database
    server.service.connection.stop()


def send(server, xml):
    server.feed(xml)
    server.clock.advance(0)
    return server.sent()


def log(server):
    return server.service.plugin.network.log


def form(values: dict[str, str]) -> str:
    fields = "".join(f"<field var='{k}'><value>{v}</value></field>" for k, v in values.items())
    return f"<x xmlns='{DATA}' type='submit'>{fields}</x>"


def register_service(server, values, to=SERVICE):
    return send(server, f"<iq type='set' id='r' from='{ALICE}/a' to='{to}'>"
                        f"<query xmlns='{REGISTER}'>{form(values)}</query></iq>")


def rows(database):
    with database.sessionmaker.begin() as session:
        return repository.list_registrations(session, GW, ALICE)


def test_service_form_and_disco(gateway):
    """A service JID offers jabber:iq:register and the per-service form."""
    server, _ = gateway
    [info] = send(server, f"<iq type='get' id='d' from='{ALICE}/a' to='{SERVICE}'>"
                          "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    assert matches(info, f"/iq/query/feature[@var='{REGISTER}']")
    [reply] = send(server, f"<iq type='get' id='g' from='{ALICE}/a' to='{SERVICE}'>"
                           f"<query xmlns='{REGISTER}'/></iq>")
    assert matches(reply, "/iq[@type='result']/query/x/field[@var='nick']")
    assert not matches(reply, "/iq/query/registered")


def test_refused_service_credentials_store_nothing(gateway):
    """check_service_credentials refusing: the condition reaches the user, no row is stored."""
    server, database = gateway
    [reply] = register_service(server, {"nick": "al", "password": "bad"})
    assert matches(reply, "/iq[@type='error']/error/not-authorized")
    assert "bad" not in reply.toXml()
    assert rows(database) == []


def test_service_registration_is_its_own_row_and_reaches_login(gateway):
    """A service row (service = address) beside no gateway row; the user is subscribed to, and
    the next login gets Registration.services; remove at the service JID removes only it."""
    server, database = gateway
    replies = register_service(server, {"nick": "al", "password": "good", "autojoin": "#chan"})
    assert matches(replies[0], "/iq[@type='result']")
    assert any(matches(s, "/presence[@type='subscribe']") for s in replies)
    [row] = rows(database)
    assert (row.service, row.legacy_id, row.settings) == ("net.one", "net.one", {"nick": "al", "autojoin": "#chan"})
    assert row.credentials  # the password, encrypted
    assert ALICE in server.service.sessions.registered

    send(server, f"<presence from='{ALICE}/a' to='{GW}'/>")
    assert ("login", ALICE, ("net.one",)) in log(server)
    # Logon joins the autojoin room with the registered nick, with no join presence.
    assert ("join", ALICE, "#chan", "al") in log(server)

    [reply] = send(server, f"<iq type='set' id='x' from='{ALICE}/a' to='{SERVICE}'>"
                           f"<query xmlns='{REGISTER}'><remove/></query></iq>")
    assert matches(reply, "/iq[@type='result']")
    assert rows(database) == []
    assert ("changed", ALICE, "net.one", {}) in log(server)


def test_gateway_form_with_the_service_field(gateway):
    """At the gateway JID, naming a service makes a service registration (no gateway row)."""
    server, database = gateway
    [reply, *_] = send(server, f"<iq type='set' id='r' from='{ALICE}/a' to='{GW}'>"
                               f"<query xmlns='{REGISTER}'>"
                               f"{form({'network': 'net.one', 'username': 'al', 'password': 'pw'})}"
                               "</query></iq>")
    assert matches(reply, "/iq[@type='result']")
    assert [(r.service, r.settings) for r in rows(database)] == [("net.one", {"nick": "al"})]
    [bad] = send(server, f"<iq type='set' id='r2' from='{ALICE}/a' to='{GW}'>"
                         f"<query xmlns='{REGISTER}'>{form({'network': '#chan', 'username': 'al'})}"
                         "</query></iq>")
    assert matches(bad, "/iq[@type='error']/error/not-acceptable")


def test_changed_service_settings_reach_the_live_session(gateway):
    """A change while logged in: stored, checked again, and settings_changed on the session."""
    server, _ = gateway
    register_service(server, {"nick": "al", "password": "good"})
    send(server, f"<presence from='{ALICE}/a' to='{GW}'/>")
    register_service(server, {"nick": "albert"})
    assert ("changed", ALICE, "net.one", {"nick": "albert", "password": "good"}) in log(server)


def command(server, to, node, values=None):
    [first] = send(server, f"<iq type='set' id='c1' from='{ALICE}/a' to='{to}'>"
                           f"<command xmlns='{COMMANDS}' node='{node}' action='execute'/></iq>")
    if values is None:
        return first
    session = first.command["sessionid"]
    [done] = send(server, f"<iq type='set' id='c2' from='{ALICE}/a' to='{to}'>"
                          f"<command xmlns='{COMMANDS}' node='{node}' sessionid='{session}'>"
                          f"{form(values)}</command></iq>")
    return done


def join(server, nick="al"):
    return send(server, f"<presence from='{ALICE}/a' to='{ROOM}/{nick}'>{MUC}</presence>")


def test_persistent_room_is_not_left_and_keeps_the_session(gateway):
    """configure persistent on the room JID: the last resource leaving gets its unavailable
    but the legacy room stays joined (no leave_room), the session stays, events still arrive."""
    server, database = gateway
    join(server)
    done = command(server, ROOM, "configure", {"persistent": "1", "max_history_length": "7"})
    assert matches(done, "/iq/command[@status='completed']/note")
    with database.sessionmaker.begin() as session:
        [room] = [r for r in repository.list_rooms(session, GW) if r.channel]
    assert (room.channel, room.legacy_id, room.persistent) == ("#chan", "net.one", True)
    assert room.settings["nick"] == "al" and room.settings["max_history_length"] == "7"

    left = send(server, f"<presence type='unavailable' from='{ALICE}/a' to='{ROOM}/al'/>")
    assert any(matches(s, "/presence[@type='unavailable']/x/status[@code='110']") for s in left)
    assert not [entry for entry in log(server) if entry[0] in ("part", "logout")]
    state = server.service.sessions.users[ALICE]
    assert state.session is not None and "#chan" in state.rooms
    server.service.plugin.context.events.emit(RoomMessage(user=ALICE, room="#chan", nick="bob", body="hi"))
    assert server.sent() == []  # nobody to show it to; the core still got it

    # Not persistent any more, with nobody in it: left at once, and the session ends.
    command(server, ROOM, "configure", {"persistent": "0"})
    assert ("part", ALICE, "#chan", "") in log(server)
    assert ("logout", ALICE) in log(server)


def test_history_settings_fall_back_room_then_global_then_defaults(gateway):
    """record_history / max_history_length: the room's value, else the global configure, else
    true / 20; a bad number is refused."""
    server, _ = gateway
    settings = server.service.sessions.room_settings
    assert settings.record_history(ALICE, "#chan") is True
    assert settings.max_history_length(ALICE, "#chan") == 20
    command(server, GW, "configure", {"record_history": "0", "max_history_length": "5", "persistent": "0"})
    assert settings.record_history(ALICE, "#chan") is False
    assert settings.max_history_length(ALICE, "#chan") == 5
    command(server, ROOM, "configure", {"record_history": "true", "max_history_length": "9"})
    assert settings.record_history(ALICE, "#chan") is True
    assert settings.max_history_length(ALICE, "#chan") == 9
    command(server, ROOM, "configure", {"record_history": "unset"})
    assert settings.record_history(ALICE, "#chan") is False
    bad = command(server, ROOM, "configure", {"max_history_length": "lots"})
    assert matches(bad, "/iq[@type='error']/error/not-acceptable")
    bad = command(server, ROOM, "configure", {"encoding_in": "no-such-charset"})
    assert matches(bad, "/iq[@type='error']/error/not-acceptable")


def test_global_persistent_makes_every_room_persistent(gateway):
    """The global persistent default keeps rooms joined like the room's own flag."""
    server, _ = gateway
    command(server, GW, "configure", {"persistent": "true"})
    join(server)
    settings = server.service.sessions.room_settings
    # Remembered for the restart, with the nick it has.
    assert settings.persistent_rooms() == [(ALICE, "#chan")]
    assert settings.get(ALICE, "#chan").settings["nick"] == "al"
    send(server, f"<presence type='unavailable' from='{ALICE}/a' to='{ROOM}/al'/>")
    assert not [entry for entry in log(server) if entry[0] == "part"]
    command(server, GW, "configure", {"persistent": "false"})
    assert settings.persistent_rooms() == []
    assert ("part", ALICE, "#chan", "") in log(server)  # kept by the default only: left now


def test_global_persistent_switched_on_inside_a_room_keeps_it_for_the_restart(gateway):
    """Turning the global default on while already in a room: that room is rejoined after a restart."""
    server, _ = gateway
    join(server)
    settings = server.service.sessions.room_settings
    assert settings.persistent_rooms() == []
    command(server, GW, "configure", {"persistent": "true"})
    assert settings.persistent_rooms() == [(ALICE, "#chan")]
    assert settings.get(ALICE, "#chan").settings["nick"] == "al"


def test_global_form_shows_the_admins_history_length(gateway):
    """The form shows the admin's history_length until the user sets their own."""
    server, _ = gateway
    server.service.sessions.room_settings.default_max_history_length = 50
    [reply] = send(server, f"<iq type='set' id='c' from='{ALICE}/a' to='{GW}'>"
                           f"<command xmlns='http://jabber.org/protocol/commands' node='configure'"
                           f" action='execute'/></iq>")
    assert matches(reply, "/iq/command/x/field[@var='max_history_length']/value[text()='50']")


def test_muc_owner_form_and_submission(gateway):
    """muc#owner get: the room form with FORM_TYPE roomconfig; a submit applies it; cancel
    changes nothing; destroy is not allowed."""
    server, _ = gateway
    owner = "http://jabber.org/protocol/muc#owner"
    [reply] = send(server, f"<iq type='get' id='o' from='{ALICE}/a' to='{ROOM}'><query xmlns='{owner}'/></iq>")
    assert matches(reply, "/iq/query/x/field[@var='FORM_TYPE']/value")
    assert matches(reply, "/iq/query/x/field[@var='persistent']")
    [reply] = send(server, f"<iq type='set' id='o2' from='{ALICE}/a' to='{ROOM}'><query xmlns='{owner}'>"
                           f"{form({'encoding_out': 'latin-1'})}</query></iq>")
    assert matches(reply, "/iq[@type='result']")
    assert server.service.sessions.room_settings.get(ALICE, "#chan").settings["encoding_out"] == "latin-1"
    [reply] = send(server, f"<iq type='set' id='o3' from='{ALICE}/a' to='{ROOM}'><query xmlns='{owner}'>"
                           f"<x xmlns='{DATA}' type='cancel'/></query></iq>")
    assert matches(reply, "/iq[@type='result']")
    [reply] = send(server, f"<iq type='set' id='o4' from='{ALICE}/a' to='{ROOM}'><query xmlns='{owner}'>"
                           "<destroy/></query></iq>")
    assert matches(reply, "/iq[@type='error']/error/not-allowed")


def test_persistent_rooms_are_rejoined_when_the_stream_comes_up():
    """A persistent room stored before start: joined with its stored nick on the first
    authenticated stream, with no presence from the user."""
    server, database = build_gateway(PLUGIN, options=OPTIONS)
    with database.sessionmaker.begin() as session:
        repository.save_room(session, GW, ALICE, "net.one", "#chan", persistent=True, settings={"nick": "ali"})
    server.service.start()
    server.handshake()
    server.clock.advance(0)
    try:
        assert ("join", ALICE, "#chan", "ali") in log(server)
        assert server.service.sessions.users[ALICE].rooms["#chan"].joined
    finally:
        server.service.connection.stop()


def test_settings_commands_follow_allowed_users():
    """A JID that allowed_users does not admit cannot store settings (forbidden)."""
    server, database = build_gateway(PLUGIN, options=OPTIONS, extra={"allowed_users": ["example.org"]})
    server.service.start()
    server.handshake()
    server.clock.advance(0)
    server.sent()
    try:
        [reply] = send(server, f"<iq type='set' id='c' from='eve@evil.example/x' to='{ROOM}'>"
                               f"<command xmlns='{COMMANDS}' node='configure' action='execute'/></iq>")
        assert matches(reply, "/iq[@type='error']/error/forbidden")
        [reply] = send(server, f"<iq type='set' id='o' from='eve@evil.example/x' to='{ROOM}'>"
                               "<query xmlns='http://jabber.org/protocol/muc#owner'>"
                               f"{form({'persistent': '1'})}</query></iq>")
        assert matches(reply, "/iq[@type='error']/error/forbidden")
        assert server.service.sessions.room_settings.persistent_rooms() == []
        [reply] = send(server, f"<iq type='get' id='g' from='eve@evil.example/x' to='{ROOM}'>"
                               "<query xmlns='http://jabber.org/protocol/muc#owner'/></iq>")
        assert matches(reply, "/iq[@type='error']/error/forbidden")
    finally:
        server.service.connection.stop()


def test_removing_a_service_registration_forgets_its_rooms(gateway):
    """<remove/> at the service JID: that service's persistent rooms are not rejoined after a restart."""
    server, database = gateway
    assert matches(register_service(server, {"nick": "al"})[0], "/iq[@type='result']")
    join(server)
    command(server, ROOM, "configure", {"persistent": "true"})
    settings = server.service.sessions.room_settings
    assert settings.persistent_rooms() == [(ALICE, "#chan")]
    [reply] = send(server, f"<iq type='set' id='u' from='{ALICE}/a' to='{SERVICE}'>"
                           f"<query xmlns='{REGISTER}'><remove/></query></iq>")
    assert matches(reply, "/iq[@type='result']")
    assert settings.persistent_rooms() == []
    with database.sessionmaker.begin() as session:
        assert repository.list_rooms(session, GW) == []


def test_service_registration_changes_follow_registration_changes():
    """registration_changes = false: a first service registration works, a change is not-allowed."""
    server, database = build_gateway(PLUGIN, options=OPTIONS, extra={"registration_changes": False})
    server.service.start()
    server.handshake()
    server.clock.advance(0)
    server.sent()
    try:
        assert matches(register_service(server, {"nick": "al"})[0], "/iq[@type='result']")
        [reply] = register_service(server, {"nick": "other"})
        assert matches(reply, "/iq[@type='error']/error/not-allowed")
        [record] = rows(database)
        assert record.settings["nick"] == "al"
    finally:
        server.service.connection.stop()


@pytest.mark.parametrize("charset", ["utf-16", "utf-32", "hex", "no-such-charset"])
def test_room_charsets_must_keep_lines_intact(gateway, charset):
    """encoding_in/encoding_out: unknown, non-text or not ASCII-compatible charsets are refused."""
    server, _ = gateway
    join(server)
    reply = command(server, ROOM, "configure", {"encoding_out": charset})
    assert matches(reply, "/iq[@type='error']/error/not-acceptable")
    assert "encoding_out" not in server.service.sessions.room_settings.get(ALICE, "#chan").settings


class SlowJoinSession(ServiceSession):
    async def join_room(self, room: str, nick: str, password: str) -> None:
        if room == "#slow":
            self.log.append(("join", self.user, room, nick))
            await self.plugin.slow_join  # the legacy side takes its time
            return
        await super().join_room(room, nick, password)


class SlowJoinPlugin(ServiceNetPlugin):
    """Joining ``#slow`` waits for ``slow_join`` (a Deferred the test fires)."""

    async def login(self, registration: Registration) -> FakeSession:
        self.network.log.append(("login", registration.user, tuple(sorted(registration.services))))
        session = SlowJoinSession(self, registration)
        self.network.sessions[registration.user] = session
        return session


def test_going_offline_during_autojoin_stops_it():
    """The user goes offline while the first autojoin room is still joining: the rest of the
    list is not joined for nobody, and the session ends."""
    from twisted.internet.defer import Deferred

    server, _ = build_gateway("tests.unit.test_service_registrations:SlowJoinPlugin", options=OPTIONS)
    server.service.start()
    server.handshake()
    server.clock.advance(0)
    server.sent()
    try:
        server.service.plugin.slow_join = Deferred()
        register_service(server, {"nick": "al", "autojoin": "#slow #chan"})
        send(server, f"<presence from='{ALICE}/a' to='{GW}'/>")
        assert ("join", ALICE, "#slow", "al") in log(server)
        send(server, f"<presence type='unavailable' from='{ALICE}/a' to='{GW}'/>")
        server.service.plugin.slow_join.callback(None)
        server.clock.advance(0)
        assert not [entry for entry in log(server) if entry[:3] == ("join", ALICE, "#chan")]
        assert ("logout", ALICE) in log(server)
        assert ALICE not in server.service.sessions.online_users()
    finally:
        server.service.connection.stop()
