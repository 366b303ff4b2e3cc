"""Connection registration: IRCv3 capability negotiation and SASL, as a sans-I/O state machine.

Specs, by the section each handler enforces:

* RFC 2812 §3.1 (connection registration: PASS, NICK, USER) and the
  numerics of §5: 001 RPL_WELCOME, 432, 433, 436, 437, 464, 465.
* IRCv3 Capability Negotiation
  (https://ircv3.net/specs/extensions/capability-negotiation): ``CAP LS 302``
  before NICK/USER so the server holds registration until ``CAP END``;
  multi-line LS (``*``); capability values (``sasl=PLAIN,EXTERNAL``); REQ
  answered by exactly one ACK or NAK; ``cap-notify`` (NEW/DEL), implied by 302.
* IRCv3 SASL 3.1/3.2 (https://ircv3.net/specs/extensions/sasl-3.1): the
  AUTHENTICATE exchange, 400-byte base64 chunks with ``+`` for an empty or
  final-and-full chunk, and numerics 900-908.
* RFC 4616 §2 (PLAIN: ``authzid NUL authcid NUL passwd``), RFC 4422 Appendix A
  (EXTERNAL: the optional authzid).

Why not jaraco ``irc`` (checked on irc 20.5): its SASL is PLAIN only, in the
sync client only, uses 3.1-style ``CAP LS`` and has no negotiation logic.

The machine does no I/O and has no timer: :meth:`Registration.start` and
:meth:`Registration.receive` return the lines to send. A silent server is
caught by the connection's keepalive (:mod:`plugins.irc.protocol`); one that
answers PINGs but never sends 001 (a stuck SASL exchange) needs a registration
deadline in the caller, which owns the clock.

Transitions (state, event -> state, what is sent)::

    new        start()                         -> cap-ls      CAP LS 302, PASS, NICK, USER
    cap-ls     CAP LS, last line, wants some   -> cap-req     CAP REQ
    cap-ls     CAP LS, last line, wants none   -> welcome     CAP END
    cap-req    last ACK/NAK, sasl ACKed        -> sasl        AUTHENTICATE <mechanism>
    cap-req    last ACK/NAK, no sasl           -> welcome     CAP END
    sasl       AUTHENTICATE +                  -> sasl        AUTHENTICATE <base64>...
    sasl       903/907, or 902/904/905/906     -> welcome     CAP END
    cap-ls/req 421 for CAP (no IRCv3)          -> welcome     nothing
    any        001                             -> registered
    not reg.   464, 465, ERROR                 -> failed
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import ClassVar, Literal

from plugins.irc.lines import IrcMessage, serialize

__all__ = [
    "DEFAULT_CAPS",
    "Registration",
    "RegistrationError",
    "SaslExternal",
    "SaslPlain",
]

#: Capabilities the gateway uses when the server offers them. ``labeled-response``
#: (which needs ``batch``) is left to callers that pass it in ``desired``.
DEFAULT_CAPS = frozenset(
    {
        "multi-prefix",
        "server-time",
        "message-tags",
        "echo-message",
        "away-notify",
        "account-notify",
        "extended-join",
        "chghost",
        "userhost-in-names",
        "batch",
        "cap-notify",
        # Backfill after a reconnection (plugins.irc.chathistory); Ergo offers the draft name.
        "draft/chathistory",
        "chathistory",
    }
)

# SASL 3.1: "the client MUST split the base64 string into chunks of 400 bytes".
SASL_CHUNK = 400
# A REQ line carries a few hundred bytes of names at most; keeps it well under 512.
_REQ_CHUNK = 400

State = Literal["new", "cap-ls", "cap-req", "sasl", "welcome", "registered", "failed"]
ErrorKind = Literal[
    "sasl-failed",  # 902, 904, 905, 906, or sasl NAKed: answer not-authorized
    "sasl-unavailable",  # no sasl capability, or our mechanism not offered
    "nick-unavailable",  # 433/436/437 after the retries
    "nick-erroneous",  # 432
    "password-mismatch",  # 464
    "banned",  # 465
    "server-error",  # ERROR before 001
]


@dataclass(frozen=True, slots=True, kw_only=True)
class SaslPlain:
    """SASL PLAIN credentials (RFC 4616). ``authzid`` empty means "same as authcid"."""

    mechanism: ClassVar[str] = "PLAIN"
    authcid: str
    password: str = field(repr=False)
    authzid: str = ""

    def __post_init__(self) -> None:
        # RFC 4616 §2: UTF8SAFE excludes NUL, the field separator; authcid and passwd are 1*SAFE.
        if not self.authcid or not self.password:
            raise ValueError("SASL PLAIN needs an account name and a password")
        if "\x00" in self.authcid + self.password + self.authzid:
            raise ValueError("NUL in SASL PLAIN credentials")

    def initial_response(self) -> bytes:
        return f"{self.authzid}\x00{self.authcid}\x00{self.password}".encode()


@dataclass(frozen=True, slots=True, kw_only=True)
class SaslExternal:
    """SASL EXTERNAL (RFC 4422 Appendix A): identity from the TLS client certificate (CertFP)."""

    mechanism: ClassVar[str] = "EXTERNAL"
    authzid: str = ""

    def initial_response(self) -> bytes:
        return self.authzid.encode()


Sasl = SaslPlain | SaslExternal


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrationError:
    """Why registration failed or went differently from what was asked.

    SASL kinds are not fatal to the connection: registration continues without
    an account, and the caller decides whether to QUIT and answer
    ``not-authorized``. ``nick-*`` leaves registration waiting for
    :meth:`Registration.change_nick`. The others end the connection (the
    server closes it).
    """

    kind: ErrorKind
    text: str
    numeric: str | None = None


def authenticate_lines(payload: bytes) -> list[str]:
    """``AUTHENTICATE`` lines for ``payload``: base64 in 400-byte chunks, ``+`` when empty or full."""
    encoded = base64.b64encode(payload).decode("ascii")
    chunks = [encoded[index : index + SASL_CHUNK] for index in range(0, len(encoded), SASL_CHUNK)]
    # SASL 3.1: "If the last chunk was exactly 400 bytes long, it must also be
    # followed by AUTHENTICATE +"; an empty payload is a lone "+".
    if not chunks or len(chunks[-1]) == SASL_CHUNK:
        chunks.append("+")
    return [serialize("AUTHENTICATE", chunk) for chunk in chunks]


@lru_cache(maxsize=64)
def _desired_caps(desired: frozenset[str], sasl: bool) -> frozenset[str]:
    # One shared set per configuration rather than a new frozenset (~700 bytes) per connection.
    return desired | {"sasl"} if sasl else desired - {"sasl"}


@lru_cache(maxsize=64)
def _shared_caps(caps: frozenset[str]) -> frozenset[str]:
    # The first set seen equal to ``caps``: connections to one network share one (~200 bytes each).
    return caps


class Registration:
    """Drives one connection from TCP-connected to 001, negotiating capabilities and SASL.

    :ivar nick: the nick being tried, then the one the server confirmed in 001.
    :ivar nick_attempts: the nicks tried, in order (a retry after 433 is reported here).
    :ivar available: capabilities the server offered, with their values (``""`` if none).
    :ivar account: the account name from 900 RPL_LOGGEDIN, if any.
    :ivar error: the last :class:`RegistrationError`, or ``None``.
    """

    def __init__(
        self,
        *,
        nick: str,
        user: str,
        realname: str,
        password: str | None = None,
        sasl: Sasl | None = None,
        desired: Iterable[str] = DEFAULT_CAPS,
        max_nick_retries: int = 3,
    ) -> None:
        self._user = user
        self._realname = realname
        self._password = password
        self._sasl = sasl
        self._desired = _desired_caps(frozenset(desired), bool(sasl))
        self._max_nick_retries = max_nick_retries
        self.state: State = "new"
        self.nick = nick
        self.nick_attempts: list[str] = [nick]
        self.available: dict[str, str] = {}
        self.account: str | None = None
        self.sasl_mechanisms: tuple[str, ...] | None = None
        self.sasl_result: Literal["success", "failure"] | None = None
        self.error: RegistrationError | None = None
        # Shared with every connection that has the same capabilities (see _shared_caps).
        self._enabled: frozenset[str] = frozenset()
        self._pending_reqs = 0
        self._sasl_sent = False
        self._nick_retries = 0

    # -- what the caller reads ---------------------------------------------------------

    @property
    def enabled(self) -> frozenset[str]:
        """Capabilities the server ACKed (and has not DELeted)."""
        return frozenset(self._enabled)

    @property
    def registered(self) -> bool:
        """Whether 001 RPL_WELCOME arrived."""
        return self.state == "registered"

    # -- driving -----------------------------------------------------------------------

    def start(self) -> list[str]:
        """The opening lines: ``CAP LS 302``, ``PASS`` if any, ``NICK``, ``USER``."""
        if self.state != "new":
            raise RuntimeError("registration already started")
        self.state = "cap-ls"
        lines = [serialize("CAP", "LS", "302")]
        if self._password is not None:
            lines.append(serialize("PASS", self._password))
        lines.append(serialize("NICK", self.nick))
        # RFC 2812 §3.1.3: USER <user> <mode> <unused> <realname>; mode 0 asks for nothing.
        lines.append(serialize("USER", self._user, "0", "*", self._realname or self._user))
        return lines

    def change_nick(self, nick: str) -> list[str]:
        """Try another nick after a ``nick-*`` error, before 001."""
        self.nick = nick
        self.nick_attempts.append(nick)
        self._nick_retries = 0
        if self.error is not None and self.error.kind.startswith("nick-"):
            self.error = None
        return [serialize("NICK", nick)]

    def receive(self, message: IrcMessage) -> list[str]:
        """Feed one message from the server; return the lines to send in answer."""
        handler = _HANDLERS.get(message.command)
        if handler is None:
            return []
        return handler(self, message)

    # -- CAP ---------------------------------------------------------------------------

    def _on_cap(self, message: IrcMessage) -> list[str]:
        if len(message.params) < 3:
            return []
        subcommand = message.params[1].upper()
        # Multi-line replies (302) put "*" before the final parameter.
        more = len(message.params) >= 4 and message.params[2] == "*"
        caps = message.params[-1].split()
        if subcommand == "LS":
            return self._on_ls(caps, more)
        if subcommand == "ACK":
            return self._on_ack(caps)
        if subcommand == "NAK":
            return self._on_nak(caps)
        if subcommand == "NEW":
            return self._on_new(caps)
        if subcommand == "DEL":
            for name in caps:
                self.available.pop(name, None)
                self._enabled = self._enabled - {name}
            self._enabled = _shared_caps(self._enabled)
        return []

    def _on_ls(self, caps: list[str], more: bool) -> list[str]:
        for token in caps:
            name, _, value = token.partition("=")
            self.available[name] = value
        if more or self.state != "cap-ls":
            return []
        wanted = self._wanted(self.available)
        if self._sasl is not None and "sasl" not in wanted:
            self._sasl_failed("sasl-unavailable", "the server offers no SASL")
        if not wanted:
            return self._end()
        self.state = "cap-req"
        return self._request(wanted)

    def _wanted(self, offered: dict[str, str]) -> list[str]:
        wanted = sorted(name for name in offered if name in self._desired and name not in self._enabled)
        if "sasl" in wanted and self._sasl is not None:
            # 302 servers list their mechanisms as the value; 3.1 servers list nothing.
            mechanisms = offered["sasl"]
            if mechanisms and self._sasl.mechanism not in mechanisms.upper().split(","):
                wanted.remove("sasl")
        return wanted

    def _request(self, names: list[str]) -> list[str]:
        lines: list[str] = []
        batch: list[str] = []
        for name in names:
            if batch and len(" ".join([*batch, name])) > _REQ_CHUNK:
                lines.append(serialize("CAP", "REQ", " ".join(batch)))
                batch = []
            batch.append(name)
        lines.append(serialize("CAP", "REQ", " ".join(batch)))
        self._pending_reqs += len(lines)
        return lines

    def _on_ack(self, caps: list[str]) -> list[str]:
        for token in caps:
            # 3.1 servers may echo modifiers; "-name" means disabled.
            if token.startswith("-"):
                self._enabled = self._enabled - {token[1:]}
            else:
                self._enabled = self._enabled | {token.lstrip("~=")}
        self._enabled = _shared_caps(self._enabled)
        return self._answered()

    def _on_nak(self, caps: list[str]) -> list[str]:
        # The whole REQ is refused, atomically; nothing in it is enabled.
        if "sasl" in caps and self._sasl is not None:
            self._sasl_failed("sasl-failed", "the server refused the sasl capability")
        return self._answered()

    def _answered(self) -> list[str]:
        self._pending_reqs = max(0, self._pending_reqs - 1)
        if self._pending_reqs or self.state != "cap-req":
            return []
        if "sasl" in self._enabled and self._sasl is not None and self.sasl_result is None:
            self.state = "sasl"
            return [serialize("AUTHENTICATE", self._sasl.mechanism)]
        if self._sasl is not None and self.sasl_result is None:
            self._sasl_failed("sasl-unavailable", f"the server does not offer SASL {self._sasl.mechanism}")
        return self._end()

    def _on_new(self, caps: list[str]) -> list[str]:
        offered = {}
        for token in caps:
            name, _, value = token.partition("=")
            self.available[name] = value
            offered[name] = value
        # SASL after registration would need re-authentication handling we do not do.
        offered.pop("sasl", None)
        wanted = self._wanted(offered)
        return self._request(wanted) if wanted else []

    def _end(self) -> list[str]:
        if self.state in ("registered", "failed"):
            return []
        self.state = "welcome"
        return [serialize("CAP", "END")]

    # -- SASL --------------------------------------------------------------------------

    def _on_authenticate(self, message: IrcMessage) -> list[str]:
        if self.state != "sasl" or self._sasl is None:
            return []
        if self._sasl_sent:
            # PLAIN and EXTERNAL have one step; a second challenge means confusion: abort.
            return [serialize("AUTHENTICATE", "*")]
        self._sasl_sent = True
        return authenticate_lines(self._sasl.initial_response())

    def _on_logged_in(self, message: IrcMessage) -> list[str]:
        # 900 RPL_LOGGEDIN <nick> <nick>!<ident>@<host> <account> :You are now logged in as <user>
        if len(message.params) >= 3:
            self.account = message.params[2]
        return []

    def _on_logged_out(self, message: IrcMessage) -> list[str]:
        self.account = None
        return []

    def _on_sasl_success(self, message: IrcMessage) -> list[str]:
        # 903 RPL_SASLSUCCESS, or 907 ERR_SASLALREADY (we are authenticated already).
        if self.sasl_result is None:
            self.sasl_result = "success"
        return self._end() if self.state == "sasl" else []

    def _on_sasl_failure(self, message: IrcMessage) -> list[str]:
        # 902 ERR_NICKLOCKED, 904 ERR_SASLFAIL, 905 ERR_SASLTOOLONG, 906 ERR_SASLABORTED.
        text = message.params[-1] if message.params else "SASL authentication failed"
        self._sasl_failed("sasl-failed", text, message.command)
        return self._end() if self.state == "sasl" else []

    def _on_sasl_mechanisms(self, message: IrcMessage) -> list[str]:
        # 908 RPL_SASLMECHS <nick> <mechanisms> :are available SASL mechanisms; a failure numeric follows.
        if len(message.params) >= 2:
            self.sasl_mechanisms = tuple(message.params[1].upper().split(","))
        return []

    def _sasl_failed(self, kind: ErrorKind, text: str, numeric: str | None = None) -> None:
        self.sasl_result = "failure"
        self.error = RegistrationError(kind=kind, text=text, numeric=numeric)

    # -- registration numerics ---------------------------------------------------------

    def _on_welcome(self, message: IrcMessage) -> list[str]:
        if message.params:
            self.nick = message.params[0]
        if self._sasl is not None and self.sasl_result is None:
            # A server without CAP registered us straight away: no SASL happened.
            self._sasl_failed("sasl-unavailable", "the server registered us without SASL")
        self.state = "registered"
        return []

    def _on_nick_in_use(self, message: IrcMessage) -> list[str]:
        # 433 ERR_NICKNAMEINUSE, 436 ERR_NICKCOLLISION, 437 ERR_UNAVAILRESOURCE: <client> <nick> :text
        if self.state in ("registered", "failed", "new"):
            return []
        refused = message.params[1] if len(message.params) >= 2 else self.nick
        if refused != self.nick:
            return []  # about an earlier attempt, already replaced
        if self._nick_retries >= self._max_nick_retries:
            text = message.params[-1] if message.params else "Nickname is already in use"
            self.error = RegistrationError(kind="nick-unavailable", text=text, numeric=message.command)
            return []
        self._nick_retries += 1
        self.nick = self.nick + "_"
        self.nick_attempts.append(self.nick)
        return [serialize("NICK", self.nick)]

    def _on_fatal_numeric(self, message: IrcMessage) -> list[str]:
        if self.state == "registered":
            return []
        kinds: dict[str, ErrorKind] = {"432": "nick-erroneous", "464": "password-mismatch", "465": "banned"}
        kind = kinds.get(message.command, "server-error")
        text = message.params[-1] if message.params else message.command
        self.error = RegistrationError(kind=kind, text=text, numeric=message.command)
        if kind != "nick-erroneous":
            self.state = "failed"
        return []

    def _on_error(self, message: IrcMessage) -> list[str]:
        if self.state == "registered":
            return []
        text = message.params[-1] if message.params else "ERROR"
        self.error = RegistrationError(kind="server-error", text=text)
        self.state = "failed"
        return []

    def _on_unknown_command(self, message: IrcMessage) -> list[str]:
        # 421 ERR_UNKNOWNCOMMAND for CAP: a server without IRCv3. It registers us on
        # NICK/USER; a CAP END would only earn another 421.
        about_cap = len(message.params) >= 2 and message.params[1].upper() == "CAP"
        if about_cap and self.state in ("cap-ls", "cap-req"):
            self._pending_reqs = 0
            self.state = "welcome"
        return []

    def _on_invalid_cap_command(self, message: IrcMessage) -> list[str]:
        # 410 ERR_INVALIDCAPCMD: CAP is known but a subcommand was not; stop negotiating.
        if self.state in ("cap-ls", "cap-req"):
            self._pending_reqs = 0
            return self._end()
        return []


# The dispatch table: one handler per command or numeric (STYLE.md G4, G9).
_HANDLERS: dict[str, Callable[[Registration, IrcMessage], list[str]]] = {
    "CAP": Registration._on_cap,
    "AUTHENTICATE": Registration._on_authenticate,
    "900": Registration._on_logged_in,
    "901": Registration._on_logged_out,
    "902": Registration._on_sasl_failure,
    "903": Registration._on_sasl_success,
    "904": Registration._on_sasl_failure,
    "905": Registration._on_sasl_failure,
    "906": Registration._on_sasl_failure,
    "907": Registration._on_sasl_success,
    "908": Registration._on_sasl_mechanisms,
    "001": Registration._on_welcome,
    "433": Registration._on_nick_in_use,
    "436": Registration._on_nick_in_use,
    "437": Registration._on_nick_in_use,
    "432": Registration._on_fatal_numeric,
    "464": Registration._on_fatal_numeric,
    "465": Registration._on_fatal_numeric,
    "ERROR": Registration._on_error,
    "410": Registration._on_invalid_cap_command,
    "421": Registration._on_unknown_command,
}
