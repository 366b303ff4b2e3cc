"""The IRC plugin's side of registered networks and their settings (issue 5): form mapping,
validation, autojoin, live setting changes (NICK, throttle, room charsets), connection info."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock

from gateway.plugin import LegacyError, LoginFailed, PluginContext, Registration
from plugins.irc.plugin import IrcPlugin, IrcSession, check_settings
from plugins.irc.throttle import Throttle
from tests.unit.irc.test_chathistory import Server

NETWORK = "irc.example.net"


class Events:
    def __init__(self) -> None:
        self.events: list[object] = []

    def emit(self, event: object) -> None:
        self.events.append(event)


def plugin(**options) -> IrcPlugin:
    return IrcPlugin(PluginContext(gateway_jid="irc.gw", options=options, events=Events(),
                                   clock=MemoryReactorClock()))


def test_gateway_form_naming_a_network_maps_to_the_network_form() -> None:
    """username -> nick, password -> sasl_password; nothing else leaks across."""
    values = plugin().service_values({"username": "al", "password": "pw", "sasl_account": "acct",
                                      "client_certificate": "PEM", "other": "x"})
    assert values == {"nick": "al", "sasl_password": "pw", "sasl_account": "acct", "client_certificate": "PEM"}


def test_autojoin_rooms_of_every_network_with_its_nick() -> None:
    """One channel per line, channels only, the network's nick, else the gateway nick."""
    registration = Registration(user="u@example.org", legacy_id="gwnick", values={"username": "gwnick"},
                                services={NETWORK: {"nick": "al", "autojoin": "#One\n  #two \nnotachannel\n"},
                                          "irc.other.net": {"autojoin": "&local"}})
    assert plugin().autojoin_rooms(registration) == [
        (f"#one%{NETWORK}", "al"), (f"#two%{NETWORK}", "al"), ("&local%irc.other.net", "gwnick")]
    assert plugin().service_of(f"#one%{NETWORK}") == NETWORK


@pytest.mark.parametrize("values", [
    {"nick": "bad nick"}, {"nick": "1digit"}, {"encoding_in": "klingon"}, {"encoding_out": "nope"},
    {"throttle_limit": "0"}, {"throttle_limit": "ten"}, {"client_certificate": "not a pem"},
])
def test_settings_that_cannot_work_are_refused_before_connecting(values) -> None:
    with pytest.raises(LegacyError) as refused:
        check_settings(values)
    assert refused.value.condition == "not-acceptable"


def test_good_settings_pass() -> None:
    check_settings({"nick": "alice", "encoding_in": "cp1251", "encoding_out": "latin-1", "throttle_limit": "3"})


def test_check_refuses_a_network_the_policy_refuses() -> None:
    """Private addresses are not allowed by default: refused before any connection."""
    from twisted.internet.defer import ensureDeferred

    checked = ensureDeferred(plugin(networks={NETWORK: {"host": "127.0.0.1", "tls": False}})
                             .check_service_credentials("u@example.org", NETWORK, {"nick": "al"}))
    failure = checked.result if hasattr(checked, "result") else None
    assert failure is not None and failure.check(LoginFailed)
    assert failure.value.condition == "not-allowed"
    checked.addErrback(lambda f: None)


def test_require_registration_refuses_unregistered_networks() -> None:
    """With require_registration, a network the user has no registration for is refused."""
    from twisted.internet.defer import ensureDeferred

    session = IrcSession(plugin(require_registration=True), "u@example.org", "")
    attempt = ensureDeferred(session.connection(NETWORK))
    failure = attempt.result
    assert failure.check(LegacyError) and failure.value.condition == "registration-required"
    attempt.addErrback(lambda f: None)


def test_set_burst_applies_at_once_and_caps_the_tokens() -> None:
    """A smaller throttle_limit caps the bucket now; a larger one lets more through later."""
    clock = Clock()
    throttle = Throttle(clock.seconds, burst=10, rate=1.0)
    throttle.set_burst(2)
    for n in range(5):
        throttle.send(f"L{n}")
    assert throttle.pop_ready() == ["L0", "L1"]
    throttle.set_burst(5)
    clock.advance(10)
    assert throttle.pop_ready() == ["L2", "L3", "L4"]
    with pytest.raises(ValueError):
        throttle.set_burst(0)


def live_session() -> tuple[IrcSession, Server]:
    """An IrcSession whose connection to NETWORK is a scripted server, registered and in #chan."""
    server = Server("server-time")
    server.connection.connect()
    server.accept()
    server.connection.join(f"#chan%{NETWORK}", "#chan", "")
    server.feed(":me!m@h JOIN #chan")
    server.feed(":srv 366 me #chan :End of NAMES")
    server.sent()
    session = IrcSession(plugin(), "u@example.org", "me")
    session.connections[NETWORK] = server.connection
    return session, server


def test_a_changed_nick_is_sent_at_once_and_throttle_applied() -> None:
    """settings_changed on the network: NICK now, and the new throttle_limit on the live link."""
    from twisted.internet.defer import ensureDeferred

    session, server = live_session()
    ensureDeferred(session.settings_changed(NETWORK, {"nick": "renamed", "throttle_limit": "3"}))
    assert server.sent() == ["NICK renamed"]
    assert server.connection.throttle_burst == 3
    assert session.services[NETWORK]["nick"] == "renamed"
    ensureDeferred(session.settings_changed(NETWORK, {}))  # the registration was removed
    assert NETWORK not in session.services
    server.connection.quit("")


def test_room_charsets_apply_to_the_live_connection() -> None:
    """encoding_out: the bytes of lines to that channel; encoding_in: its fallback decoding."""
    from twisted.internet.defer import ensureDeferred

    session, server = live_session()
    ensureDeferred(session.settings_changed(f"#chan%{NETWORK}", {"encoding_out": "latin-1",
                                                                 "encoding_in": "cp1251"}))
    server.connection.say("#chan", "café")
    server.connection.say("#other", "café")
    assert server.transport.value() == b"PRIVMSG #chan caf\xe9\r\nPRIVMSG #other caf\xc3\xa9\r\n"
    server.transport.clear()
    assert server.connection.protocol is not None
    server.connection.protocol.dataReceived(b":bob!b@h PRIVMSG #chan :\xe9\r\n")
    assert server.events[-1].body == "й"
    info = server.connection.info()
    assert info.startswith(f"Connected to IRC server {NETWORK} on port 6667 as me since 1970-01-01 00:00:00 UTC (0 seconds ago).")
    assert info.splitlines()[1:] == ["#chan"]
    server.connection.quit("")


def test_network_charsets_apply_to_every_line_and_rooms_win() -> None:
    """The network's encoding_out/encoding_in (its registration or configure): every line
    unless the room has its own; changed live, and gone with the registration."""
    from twisted.internet.defer import ensureDeferred

    session, server = live_session()
    ensureDeferred(session.settings_changed(NETWORK, {"nick": "me", "encoding_out": "latin-1",
                                                      "encoding_in": "cp1251"}))
    ensureDeferred(session.settings_changed(f"#chan%{NETWORK}", {"encoding_out": "cp1252"}))
    server.transport.clear()
    server.connection.say("#chan", "€")
    server.connection.say("bob", "café")
    assert server.transport.value() == b"PRIVMSG #chan \x80\r\nPRIVMSG bob caf\xe9\r\n"
    server.transport.clear()
    assert server.connection.protocol is not None
    server.connection.protocol.dataReceived(b":bob!b@h PRIVMSG me :\xe9\r\n")
    assert server.events[-1].body == "й"
    ensureDeferred(session.settings_changed(NETWORK, {"nick": "me"}))
    server.connection.say("bob", "café")
    assert server.transport.value() == b"PRIVMSG bob caf\xc3\xa9\r\n"
    server.connection.quit("")
