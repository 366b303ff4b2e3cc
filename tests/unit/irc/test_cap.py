"""Connection registration: CAP LS 302 negotiation, SASL PLAIN/EXTERNAL, 001 and nick retries."""

from __future__ import annotations

import base64

import pytest

from plugins.irc.cap import Registration, SaslExternal, SaslPlain, authenticate_lines
from plugins.irc.lines import parse


def feed(registration: Registration, *lines: str) -> list[str]:
    """Feed server lines; return everything the machine answered."""
    out: list[str] = []
    for line in lines:
        out.extend(registration.receive(parse(line)))
    return out


def plain() -> SaslPlain:
    return SaslPlain(authcid="alice", password="s3cret")


def test_start_sends_cap_ls_302_then_pass_nick_user():
    """Registration opens with CAP LS 302, PASS (if any), NICK, USER, in that order."""
    registration = Registration(nick="alice", user="al", realname="Alice A", password="pw")
    assert registration.start() == ["CAP LS 302", "PASS pw", "NICK alice", "USER al 0 * :Alice A"]
    with pytest.raises(RuntimeError):
        registration.start()


def test_multiline_ls_then_req_ack_end():
    """A multi-line LS is collected before one REQ of the wanted caps; the ACK leads to CAP END."""
    registration = Registration(nick="alice", user="al", realname="A")
    registration.start()
    assert feed(registration, ":srv CAP * LS * :multi-prefix server-time unknown-cap") == []
    assert feed(registration, ":srv CAP * LS :message-tags echo-message draft/foo=bar") == [
        "CAP REQ :echo-message message-tags multi-prefix server-time"
    ]
    assert registration.available["draft/foo"] == "bar"
    assert feed(registration, ":srv CAP * ACK :echo-message message-tags multi-prefix server-time") == ["CAP END"]
    assert registration.enabled == {"echo-message", "message-tags", "multi-prefix", "server-time"}
    assert not registration.registered
    feed(registration, ":srv 001 alice :Welcome")
    assert registration.registered


def test_nothing_wanted_ends_at_once():
    """When the server offers nothing we want, CAP END follows the LS directly."""
    registration = Registration(nick="alice", user="al", realname="A")
    registration.start()
    assert feed(registration, ":srv CAP * LS :something-else") == ["CAP END"]


def test_nak_enables_nothing_and_ends():
    """A NAK refuses the whole request; negotiation still ends with CAP END."""
    registration = Registration(nick="alice", user="al", realname="A")
    registration.start()
    feed(registration, ":srv CAP * LS :multi-prefix")
    assert feed(registration, ":srv CAP * NAK :multi-prefix") == ["CAP END"]
    assert registration.enabled == frozenset()


def test_sasl_plain_success():
    """SASL PLAIN: REQ sasl, AUTHENTICATE PLAIN, base64 authzid\\0authcid\\0password, 903, CAP END."""
    registration = Registration(nick="alice", user="al", realname="A", sasl=plain())
    registration.start()
    assert feed(registration, ":srv CAP * LS :sasl=PLAIN,EXTERNAL multi-prefix") == ["CAP REQ :multi-prefix sasl"]
    assert feed(registration, ":srv CAP alice ACK :multi-prefix sasl") == ["AUTHENTICATE PLAIN"]
    payload = base64.b64encode(b"\x00alice\x00s3cret").decode()
    assert feed(registration, "AUTHENTICATE +") == [f"AUTHENTICATE {payload}"]
    assert feed(registration, ":srv 900 alice alice!al@host alice :You are now logged in as alice") == []
    assert registration.account == "alice"
    assert feed(registration, ":srv 903 alice :SASL authentication successful") == ["CAP END"]
    assert registration.sasl_result == "success"
    assert registration.error is None
    feed(registration, ":srv 001 alice :Welcome")
    assert registration.registered


def test_sasl_failure_is_reported_and_registration_goes_on():
    """904 sets sasl_result 'failure' and a sasl-failed error, then CAP END: the caller decides."""
    registration = Registration(nick="alice", user="al", realname="A", sasl=plain())
    registration.start()
    feed(registration, ":srv CAP * LS :sasl", ":srv CAP * ACK :sasl", "AUTHENTICATE +")
    assert feed(registration, ":srv 904 alice :SASL authentication failed") == ["CAP END"]
    assert registration.sasl_result == "failure"
    assert registration.error is not None
    assert (registration.error.kind, registration.error.numeric) == ("sasl-failed", "904")


@pytest.mark.parametrize("numeric", ["902", "905", "906"])
def test_other_sasl_failures(numeric):
    """902 (nick locked), 905 (too long) and 906 (aborted) are failures as well."""
    registration = Registration(nick="alice", user="al", realname="A", sasl=plain())
    registration.start()
    feed(registration, ":srv CAP * LS :sasl", ":srv CAP * ACK :sasl", "AUTHENTICATE +")
    assert feed(registration, f":srv {numeric} alice :no") == ["CAP END"]
    assert registration.sasl_result == "failure"


def test_sasl_mechanism_not_offered():
    """A 302 server offering only EXTERNAL: sasl is not requested and the failure is reported."""
    registration = Registration(nick="alice", user="al", realname="A", sasl=plain())
    registration.start()
    assert feed(registration, ":srv CAP * LS :sasl=EXTERNAL") == ["CAP END"]
    assert registration.sasl_result == "failure"
    assert registration.error is not None and registration.error.kind == "sasl-unavailable"


def test_sasl_without_cap_support_is_reported_at_welcome():
    """A server that answers CAP with 421 and registers us: no CAP END, and SASL reported unavailable."""
    registration = Registration(nick="alice", user="al", realname="A", sasl=plain())
    registration.start()
    assert feed(registration, ":srv 421 * CAP :Unknown command") == []
    feed(registration, ":srv 001 alice :Welcome")
    assert registration.registered
    assert registration.sasl_result == "failure"


def test_sasl_external_sends_plus():
    """SASL EXTERNAL with no authzid answers the challenge with a lone '+'."""
    registration = Registration(nick="alice", user="al", realname="A", sasl=SaslExternal())
    registration.start()
    feed(registration, ":srv CAP * LS :sasl")
    assert feed(registration, ":srv CAP * ACK :sasl") == ["AUTHENTICATE EXTERNAL"]
    assert feed(registration, "AUTHENTICATE +") == ["AUTHENTICATE +"]
    assert feed(registration, ":srv 903 alice :ok") == ["CAP END"]


def test_second_challenge_aborts():
    """A second AUTHENTICATE challenge for a one-step mechanism is answered with AUTHENTICATE *."""
    registration = Registration(nick="alice", user="al", realname="A", sasl=plain())
    registration.start()
    feed(registration, ":srv CAP * LS :sasl", ":srv CAP * ACK :sasl", "AUTHENTICATE +")
    assert feed(registration, "AUTHENTICATE +") == ["AUTHENTICATE *"]


@pytest.mark.parametrize(("size", "lengths"), [(0, [1]), (30, [40]), (300, [400, 1]), (301, [400, 4])])
def test_authenticate_chunking(size, lengths):
    """Payloads go in 400-byte base64 chunks; an empty or exactly-full last chunk is followed by '+'."""
    args = [line.removeprefix("AUTHENTICATE ") for line in authenticate_lines(b"x" * size)]
    assert [len(arg) for arg in args] == lengths
    assert "".join(arg for arg in args if arg != "+") == base64.b64encode(b"x" * size).decode()


def test_nick_in_use_retries_then_reports():
    """433 before 001 tries nick_, nick__, … up to the limit, then reports nick-unavailable."""
    registration = Registration(nick="alice", user="al", realname="A", max_nick_retries=2)
    registration.start()
    assert feed(registration, ":srv 433 * alice :Nickname is already in use") == ["NICK alice_"]
    assert feed(registration, ":srv 433 * alice :Nickname is already in use") == []  # stale: about an old try
    assert feed(registration, ":srv 433 * alice_ :Nickname is already in use") == ["NICK alice__"]
    assert feed(registration, ":srv 433 * alice__ :Nickname is already in use") == []
    assert registration.error is not None and registration.error.kind == "nick-unavailable"
    assert registration.nick_attempts == ["alice", "alice_", "alice__"]
    assert registration.change_nick("bob") == ["NICK bob"]
    assert registration.error is None
    feed(registration, ":srv 001 bob :Welcome")
    assert registration.registered and registration.nick == "bob"


def test_nick_in_use_after_registration_is_not_ours():
    """After 001, a 433 is a nick change for the connection to handle: no retry here."""
    registration = Registration(nick="alice", user="al", realname="A")
    registration.start()
    feed(registration, ":srv 001 alice_ :Welcome")
    assert registration.nick == "alice_"
    assert feed(registration, ":srv 433 alice_ bob :Nickname is already in use") == []


@pytest.mark.parametrize(("line", "kind"), [
    (":srv 464 * :Password incorrect", "password-mismatch"),
    (":srv 465 * :You are banned", "banned"),
    ("ERROR :Closing Link: too many connections", "server-error"),
])
def test_fatal_errors(line, kind):
    """Password mismatch, bans and ERROR before 001 fail registration with a named kind."""
    registration = Registration(nick="alice", user="al", realname="A", password="pw")
    registration.start()
    feed(registration, line)
    assert registration.state == "failed"
    assert registration.error is not None and registration.error.kind == kind


def test_cap_new_and_del_after_registration():
    """cap-notify: NEW caps we want are requested; DEL removes them from enabled."""
    registration = Registration(nick="alice", user="al", realname="A")
    registration.start()
    feed(registration, ":srv CAP * LS :cap-notify", ":srv CAP * ACK :cap-notify", ":srv 001 alice :hi")
    assert feed(registration, ":srv CAP alice NEW :away-notify sasl other") == ["CAP REQ away-notify"]
    feed(registration, ":srv CAP alice ACK :away-notify")
    assert "away-notify" in registration.enabled
    feed(registration, ":srv CAP alice DEL :away-notify")
    assert "away-notify" not in registration.enabled


def test_secrets_stay_out_of_repr():
    """The SASL password never appears in a repr (logs)."""
    assert "s3cret" not in repr(plain())


def test_plain_refuses_nul_and_empty():
    """PLAIN credentials with a NUL or an empty account or password are refused."""
    with pytest.raises(ValueError):
        SaslPlain(authcid="a\x00b", password="x")
    with pytest.raises(ValueError):
        SaslPlain(authcid="", password="x")
