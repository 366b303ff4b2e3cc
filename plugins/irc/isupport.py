"""What the server told us about itself: RPL_ISUPPORT (005) and the rules that follow from it.

Token syntax and meanings: the Modern IRC Client Protocol, "RPL_ISUPPORT
Tokens" (https://modern.ircdocs.horse/#rplisupport-005 and
https://modern.ircdocs.horse/#rplisupport-parameters), which documents
``draft-hardy-irc-isupport-00``. Channel modes: RFC 2811 §4 and the
CHANMODES/PREFIX tokens.

Names are compared under the server's CASEMAPPING, channels are recognised by
its CHANTYPES, and mode parameters follow its CHANMODES and PREFIX (DESIGN.md
§4, §8). jaraco ``irc`` gets each of these wrong for our purpose (checked on irc
20.5): ``irc.strings`` always folds rfc1459 *plus* Unicode lowercasing,
``irc.client.is_channel`` hard-codes ``#&+!``, ``irc.modes`` hard-codes the
parameter modes ``bklvohq``, and ``irc.features.FeatureSet`` drops valueless
tokens, does not unescape ``\\x20`` and raises on ``PREFIX=``.

CASEMAPPING choices:

* ``ascii``: A-Z only.
* ``rfc1459`` (the default when none is advertised): A-Z and ``[]\\~`` to ``{}|^``.
* ``strict-rfc1459``: A-Z and ``[]\\`` to ``{}|``.
* ``rfc7613``: RFC 7613 §3.2.2 UsernameCaseMapped: width mapping (fullwidth and
  halfwidth forms to their decompositions), Unicode Default Case Folding
  (:meth:`str.casefold`), then NFC. The server has already refused what the
  PRECIS profile disallows, so only the mapping steps matter to compare names.
* ``rfc8265``: the same with ``toLowerCase`` (:meth:`str.lower`), which is
  what RFC 8264/8265 changed the case mapping rule to.
* anything else: treated as ``rfc1459``, the historical default, because folding
  ``[]\\~`` too at worst merges names the server keeps apart, which for a gateway
  is the lesser evil compared with two JIDs for one channel.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

__all__ = ["DEFAULT_CHANMODES", "DEFAULT_CHANTYPES", "DEFAULT_PREFIX", "ISupport", "ModeChange"]

DEFAULT_CHANTYPES = "#&"
# RFC 2811 §4 modes, grouped as CHANMODES would group them, for servers that
# advertise no CHANMODES at all.
DEFAULT_CHANMODES = ("beI", "k", "l", "imnpst")
# (modes, prefixes), highest rank first: "(ov)@+".
DEFAULT_PREFIX = ("ov", "@+")
# RFC 2812 §3.2.3: "a maximum of three (3) changes per command for modes that take a parameter".
DEFAULT_MODES = 3

_ASCII_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ASCII_LOWER = "abcdefghijklmnopqrstuvwxyz"
_FOLD_TABLES = {
    "ascii": str.maketrans(_ASCII_UPPER, _ASCII_LOWER),
    "rfc1459": str.maketrans(_ASCII_UPPER + "[]\\~", _ASCII_LOWER + "{}|^"),
    "strict-rfc1459": str.maketrans(_ASCII_UPPER + "[]\\", _ASCII_LOWER + "{}|"),
}
_PRECIS = {"rfc7613": str.casefold, "rfc8265": str.lower}

# draft-hardy-irc-isupport-00 §4: values escape "\x20", "\x5C", "\x3D" (and in
# practice any byte) as \xHH.
_VALUE_ESCAPE_RE = re.compile(rb"\\x([0-9A-Fa-f]{2})")
_PREFIX_RE = re.compile(r"\(([^)]*)\)(.*)")

#: One change out of a MODE line: (adding, mode letter, parameter or None).
ModeChange = tuple[bool, str, str | None]


def _width_map(name: str) -> str:
    # RFC 7613 §3.2.2 step 1: "Fullwidth and halfwidth characters MUST be mapped to
    # their decomposition mappings".
    return "".join(
        unicodedata.normalize("NFKC", char)
        if unicodedata.decomposition(char).startswith(("<wide>", "<narrow>"))
        else char
        for char in name
    )


@dataclass(slots=True)
class ISupport:
    """The server's ISUPPORT state; starts at the documented defaults, then :meth:`update`.

    :ivar tokens: every token as last advertised (name -> unescaped value, ``""``
        when valueless), for what this class does not interpret. Read-only: connections
        that were told the same tokens share one dict (see :func:`_shared_tokens`).
    """

    casemapping: str = "rfc1459"
    chantypes: str = DEFAULT_CHANTYPES
    chanmodes: tuple[str, str, str, str] = DEFAULT_CHANMODES
    membership_modes: str = DEFAULT_PREFIX[0]
    membership_prefixes: str = DEFAULT_PREFIX[1]
    network: str | None = None
    nicklen: int | None = None
    channellen: int | None = None
    topiclen: int | None = None
    #: Parameter-taking mode changes per MODE line; ``None`` means no limit.
    modes: int | None = DEFAULT_MODES
    #: Targets per command (upper-cased); ``None`` means no limit for that command.
    targmax: dict[str, int | None] = field(default_factory=dict)
    linelen: int | None = None
    tokens: dict[str, str] = field(default_factory=dict)

    # -- updating -----------------------------------------------------------------

    def update(self, params: Sequence[str]) -> None:
        """Apply the parameters of one 005 message: ``<client> <token>* :are supported…``.

        The trailing text is recognised by its spaces rather than its position,
        so a server that leaves it out does not cost us its last token.
        """
        tokens = list(params[1:])
        if tokens and " " in tokens[-1]:
            tokens.pop()
        self.update_tokens(tokens)

    def update_tokens(self, tokens: Iterable[str]) -> None:
        """Apply ISUPPORT tokens: ``NAME``, ``NAME=value`` or ``-NAME`` (back to the default)."""
        merged = dict(self.tokens)  # a copy: the current dict may be shared
        for token in tokens:
            if not token or token == "-":
                continue
            if token.startswith("-"):
                name = token[1:].partition("=")[0]
                merged.pop(name, None)
                self._reset(name)
                continue
            name, _, raw = token.partition("=")
            # Interned: every connection to a network is told the same strings.
            name, value = sys.intern(name), sys.intern(_unescape_value(raw))
            merged[name] = value
            self._apply(name, value)
        self.tokens = _shared_tokens(merged)

    def _apply(self, name: str, value: str) -> None:
        # Unknown or malformed values leave the previous state alone: a server typo
        # must not make every name compare differently mid-session.
        if name == "CASEMAPPING" and value:
            self.casemapping = sys.intern(value.lower())
        elif name == "CHANTYPES":
            # An empty value is meaningful: "this server has no channels" (modern ircdocs).
            self.chantypes = value
        elif name == "CHANMODES":
            # ircdocs: more than four groups may appear later; clients ignore the extras.
            self.chanmodes = _parse_chanmodes(value)
        elif name == "PREFIX":
            self._apply_prefix(value)
        elif name == "NETWORK":
            self.network = value or None
        elif name == "NICKLEN":
            self.nicklen = _int_or_none(value)
        elif name == "CHANNELLEN":
            self.channellen = _int_or_none(value)
        elif name == "TOPICLEN":
            self.topiclen = _int_or_none(value)
        elif name == "MODES":
            # ircdocs: "If the value is not specified, this parameter has no limit".
            self.modes = _int_or_none(value)
        elif name == "TARGMAX":
            self.targmax = _parse_targmax(value)
        elif name == "LINELEN":
            self.linelen = _int_or_none(value)

    def _apply_prefix(self, value: str) -> None:
        if not value:
            self.membership_modes, self.membership_prefixes = "", ""
            return
        match = _PREFIX_RE.fullmatch(value)
        if match and len(match.group(1)) == len(match.group(2)):
            self.membership_modes = sys.intern(match.group(1))
            self.membership_prefixes = sys.intern(match.group(2))

    def _reset(self, name: str) -> None:
        defaults = ISupport()
        attribute = {
            "CASEMAPPING": ("casemapping",),
            "CHANTYPES": ("chantypes",),
            "CHANMODES": ("chanmodes",),
            "PREFIX": ("membership_modes", "membership_prefixes"),
            "NETWORK": ("network",),
            "NICKLEN": ("nicklen",),
            "CHANNELLEN": ("channellen",),
            "TOPICLEN": ("topiclen",),
            "MODES": ("modes",),
            "TARGMAX": ("targmax",),
            "LINELEN": ("linelen",),
        }.get(name, ())
        for attr in attribute:
            setattr(self, attr, getattr(defaults, attr))

    # -- names --------------------------------------------------------------------

    def fold(self, name: str) -> str:
        """Fold ``name`` for comparison under the server's CASEMAPPING (see module docstring)."""
        table = _FOLD_TABLES.get(self.casemapping)
        if table is not None:
            if name.isascii():
                # The hot path (every line folds its target): str.lower is C-fast and, on ASCII,
                # exactly A-Z -> a-z; only the rfc1459 specials need the table.
                folded = name.lower()
                if "[" in folded or "]" in folded or "\\" in folded or "~" in folded:
                    return folded.translate(table)
                return folded
            return name.translate(table)
        precis = _PRECIS.get(self.casemapping)
        if precis is None:
            return name.translate(_FOLD_TABLES["rfc1459"])
        if name.isascii():
            return name.translate(_FOLD_TABLES["ascii"])
        return unicodedata.normalize("NFC", precis(_width_map(name)))

    def is_channel(self, name: str) -> bool:
        """Whether ``name`` is a channel: its first character is one of CHANTYPES."""
        return bool(name) and name[0] in self.chantypes

    # -- prefixes and modes ---------------------------------------------------------

    def prefix_modes(self) -> tuple[tuple[str, str], ...]:
        """``(mode, prefix)`` pairs from PREFIX, highest rank first, e.g. ``(('o', '@'), ('v', '+'))``."""
        return tuple(zip(self.membership_modes, self.membership_prefixes, strict=True))

    def mode_for_prefix(self, prefix: str) -> str | None:
        """The membership mode for a NAMES/WHO prefix character (``'@'`` -> ``'o'``)."""
        index = self.membership_prefixes.find(prefix) if len(prefix) == 1 else -1
        return self.membership_modes[index] if index >= 0 else None

    def prefix_for_mode(self, mode: str) -> str | None:
        """The prefix character for a membership mode (``'o'`` -> ``'@'``)."""
        index = self.membership_modes.find(mode) if len(mode) == 1 else -1
        return self.membership_prefixes[index] if index >= 0 else None

    def split_prefixes(self, entry: str) -> tuple[str, str]:
        """Split a NAMES entry into its membership modes (rank order) and the rest.

        With ``multi-prefix`` an entry may carry several prefixes (``@+nick``);
        with ``userhost-in-names`` the rest is ``nick!user@host``.
        """
        end = 0
        while end < len(entry) and entry[end] in self.membership_prefixes:
            end += 1
        held = {self.membership_modes[self.membership_prefixes.index(char)] for char in entry[:end]}
        return "".join(mode for mode in self.membership_modes if mode in held), entry[end:]

    def mode_takes_param(self, mode: str, adding: bool) -> bool:
        """Whether a channel mode change consumes a parameter (CHANMODES types A-D, PREFIX).

        Type A (lists) and B always do, C only when set, D never; membership
        modes from PREFIX always do. An unknown mode is taken to have none: we
        cannot know, and guessing "yes" would shift every later parameter.
        """
        if len(mode) != 1:
            return False
        if mode in self.membership_modes:
            return True
        list_modes, always, when_set, _never = self.chanmodes
        if mode in list_modes or mode in always:
            return True
        if mode in when_set:
            return adding
        return False

    def parse_mode_change(self, modestring: str, params: Sequence[str]) -> list[ModeChange]:
        """Split a channel MODE change into ``(adding, mode, param)`` triples.

        ``MODE #c +o-v+l a b 10`` gives ``[(True, 'o', 'a'), (False, 'v', 'b'), (True, 'l', '10')]``.
        A mode that takes a parameter but finds none gets ``None`` (``MODE #c +b``
        asks for the ban list); parameters left over are ignored. A modestring
        without a leading sign counts as adding (modern ircdocs, MODE).
        """
        changes: list[ModeChange] = []
        remaining = iter(params)
        adding = True
        for char in modestring:
            if char == "+":
                adding = True
            elif char == "-":
                adding = False
            else:
                param = next(remaining, None) if self.mode_takes_param(char, adding) else None
                changes.append((adding, char, param))
        return changes


#: Token dicts by content, so that connections to one network share theirs (~1.6 kB each).
#: Bounded: past the limit it starts over, which only costs sharing, never correctness.
_TOKEN_SETS: dict[frozenset[tuple[str, str]], dict[str, str]] = {}
_TOKEN_SETS_MAX = 256


def _shared_tokens(tokens: dict[str, str]) -> dict[str, str]:
    key = frozenset(tokens.items())
    shared = _TOKEN_SETS.get(key)
    if shared is None:
        if len(_TOKEN_SETS) >= _TOKEN_SETS_MAX:
            _TOKEN_SETS.clear()
        shared = _TOKEN_SETS[key] = tokens
    return shared


@lru_cache(maxsize=64)
def _parse_chanmodes(value: str) -> tuple[str, str, str, str]:
    groups = [*value.split(","), "", "", "", ""][:4]
    return (groups[0], groups[1], groups[2], groups[3])


def _unescape_value(raw: str) -> str:
    if "\\x" not in raw:
        return raw
    # Escapes stand for bytes, and several may form one UTF-8 character.
    data = _VALUE_ESCAPE_RE.sub(lambda match: bytes([int(match.group(1), 16)]), raw.encode("utf-8"))
    return data.decode("utf-8", errors="replace")


def _int_or_none(value: str) -> int | None:
    return int(value) if value.isascii() and value.isdigit() else None


def _parse_targmax(value: str) -> dict[str, int | None]:
    limits: dict[str, int | None] = {}
    for item in value.split(","):
        command, sep, number = item.partition(":")
        if sep and command:
            limits[command.upper()] = _int_or_none(number)
    return limits
