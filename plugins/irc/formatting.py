"""IRC text to XMPP text: mIRC formatting codes, XML-illegal characters, CTCP framing.

Sources:

* formatting codes: the de facto mIRC set as documented in "IRC Formatting"
  (https://modern.ircdocs.horse/formatting): bold 0x02, italics 0x1D,
  underline 0x1F, strikethrough 0x1E, monospace 0x11, colour 0x03
  (``<fg>[,<bg>]``, one or two digits each), hex colour 0x04 (``RRGGBB[,RRGGBB]``),
  reverse 0x16, reset 0x0F;
* XML 1.0 §2.2 ``Char``: what may appear in XML at all. Twisted's domish writes
  ``\\x02`` or ``\\x03`` into a stanza as they are, which breaks the stream
  (STYLE.md G3), so every path to XMPP goes through this module;
* XEP-0393 §6.2 (Message Styling, spans): what we emit for bold, italics,
  strikethrough and monospace;
* CTCP: "Client-to-Client Protocol" (https://modern.ircdocs.horse/ctcp), where
  the closing 0x01 is optional and no low-level quoting is used. jaraco's
  ``irc.ctcp.dequote`` still applies the old 0x10 low-level quoting (so ``"\\x100"``
  in a message becomes a NUL) and does not accept a missing final 0x01, so it
  is not used.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass

__all__ = ["ctcp", "ctcp_split", "to_plain", "to_xep0393"]

CTCP_DELIMITER = "\x01"

_FORMAT_RE = re.compile(
    # Colour: digits are ASCII only, and a comma belongs to the code only when a
    # background follows ("\x0312,text" keeps its comma).
    "\x03(?:[0-9]{1,2}(?:,[0-9]{1,2})?)?"
    "|\x04(?:[0-9A-Fa-f]{6}(?:,[0-9A-Fa-f]{6})?)?"
    "|[\x02\x0f\x11\x16\x1d\x1e\x1f]"
)
# XML 1.0 §2.2: Char ::= #x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF].
_XML_ILLEGAL_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")

# Toggle code -> XEP-0393 styling directive. Underline, reverse and colours have
# no XEP-0393 equivalent and are dropped.
_DIRECTIVES = {"\x02": "*", "\x1d": "_", "\x1e": "~", "\x11": "`"}
_DIRECTIVE_ORDER = {"`": 0, "*": 1, "_": 2, "~": 3}
_PREFORMATTED = "`"


def to_plain(text: str) -> str:
    """Remove every formatting code (with its colour digits) and every XML-illegal character."""
    return _XML_ILLEGAL_RE.sub("", _FORMAT_RE.sub("", text))


# -- XEP-0393 ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Span:
    directive: str
    start: int  # index in the plain text of the first styled character
    end: int  # one past the last


def to_xep0393(text: str) -> str:
    """Turn bold, italics, strikethrough and monospace into XEP-0393 spans where that is safe.

    A span is emitted only where a XEP-0393 parser will read it back as meant:
    whitespace at the edges of a styled run is moved outside the directives
    (§6.2: the opening directive "MUST NOT be followed by a whitespace
    character", the closing one "MUST NOT be preceded" by one); the opening
    directive must follow the line start or whitespace; runs that cross
    instead of nesting, or sit inside monospace (whose content §6.2.5 says is
    not styled), lose their styling. We are stricter than §6.2 in one place: a
    closing directive must be followed by the end, whitespace or punctuation,
    because several clients do not style mid-word spans. Finally the result is
    parsed back with §6.2's rules; if any emitted span would be misread (for
    instance because the text itself contains ``*``), the codes are dropped
    and plain text is returned. The result is always XML-safe.
    """
    if text.isprintable():
        # No formatting code, no XML-illegal character: every one of them is unprintable.
        return text
    plain, styles = _scan(text)
    if not any(styles) or "\n" in plain or "\r" in plain:
        return plain
    spans = _select(plain, _runs(plain, styles))
    if not spans:
        return plain
    styled, expected = _render(plain, spans)
    # §5.1: a line starting with "```" opens a preformatted block and one starting
    # with ">" a quotation, which shifts where spans may start. Not worth the risk.
    if styled.startswith(("```", ">")) or not expected <= _parse_spans(styled):
        return plain
    return styled


def _scan(text: str) -> tuple[str, list[frozenset[str]]]:
    """Plain (XML-safe) text and, per character, the set of directives active on it."""
    chars: list[str] = []
    styles: list[frozenset[str]] = []
    active: frozenset[str] = frozenset()

    def append(segment: str) -> None:
        segment = _XML_ILLEGAL_RE.sub("", segment)
        chars.extend(segment)
        styles.extend([active] * len(segment))

    position = 0
    for match in _FORMAT_RE.finditer(text):
        append(text[position : match.start()])
        code = match.group()[0]
        if code in _DIRECTIVES:
            active = active ^ {_DIRECTIVES[code]}
        elif code == "\x0f":
            active = frozenset()
        position = match.end()
    append(text[position:])
    return "".join(chars), styles


def _runs(plain: str, styles: list[frozenset[str]]) -> list[_Span]:
    """Maximal runs of each directive, trimmed of whitespace at both ends."""
    runs: list[_Span] = []
    for directive in _DIRECTIVE_ORDER:
        index = 0
        while index < len(plain):
            if directive not in styles[index]:
                index += 1
                continue
            start = index
            while index < len(plain) and directive in styles[index]:
                index += 1
            end = index
            while start < end and plain[start].isspace():
                start += 1
            while end > start and plain[end - 1].isspace():
                end -= 1
            if start < end:
                runs.append(_Span(directive, start, end))
    return runs


def _select(plain: str, runs: list[_Span]) -> list[_Span]:
    """Keep the runs that sit well in their context and nest with each other (outer ones first)."""
    accepted: list[_Span] = []
    for run in sorted(runs, key=lambda r: (r.start, -r.end, _DIRECTIVE_ORDER[r.directive])):
        if _fits_context(plain, run) and all(_nests(run, other) for other in accepted):
            accepted.append(run)
    return accepted


def _fits_context(plain: str, run: _Span) -> bool:
    before_ok = run.start == 0 or plain[run.start - 1].isspace()
    after_ok = (
        run.end == len(plain)
        or plain[run.end].isspace()
        or unicodedata.category(plain[run.end]).startswith("P")
    )
    return before_ok and after_ok


def _nests(a: _Span, b: _Span) -> bool:
    if a.end <= b.start or b.end <= a.start:
        return True
    if a.start <= b.start and b.end <= a.end:
        outer = a
    elif b.start <= a.start and a.end <= b.end:
        outer = b
    else:
        return False  # crossing runs cannot be written as spans
    # §6.2.5: "the content of a preformatted span is not parsed": nothing may sit inside one.
    return outer.directive != _PREFORMATTED


def _render(plain: str, spans: list[_Span]) -> tuple[str, set[tuple[str, int, int]]]:
    """Insert directives; return the text and the (directive, open, close) positions emitted."""
    opens: dict[int, list[_Span]] = defaultdict(list)
    closes: dict[int, list[_Span]] = defaultdict(list)
    for span in spans:
        opens[span.start].append(span)
        closes[span.end].append(span)
    out: list[str] = []
    opened_at: dict[_Span, int] = {}
    emitted: set[tuple[str, int, int]] = set()
    for index in range(len(plain) + 1):
        # Inner spans close first; outer spans open first.
        for span in sorted(closes.get(index, ()), key=lambda s: (-s.start, -_DIRECTIVE_ORDER[s.directive])):
            emitted.add((span.directive, opened_at[span], len(out)))
            out.append(span.directive)
        for span in sorted(opens.get(index, ()), key=lambda s: (-s.end, _DIRECTIVE_ORDER[s.directive])):
            opened_at[span] = len(out)
            out.append(span.directive)
        if index < len(plain):
            out.append(plain[index])
    return "".join(out), emitted


def _parse_spans(line: str) -> set[tuple[str, int, int]]:
    """The spans a XEP-0393 §6.2 parser finds in ``line``: (directive, open index, close index)."""
    found: set[tuple[str, int, int]] = set()
    _parse_range(line, 0, len(line), found)
    return found


def _parse_range(line: str, low: int, high: int, found: set[tuple[str, int, int]]) -> None:
    index = low
    while index < high:
        directive = line[index]
        if directive in _DIRECTIVE_ORDER and _opens(line, index, low, high):
            close = _closing(line, directive, index + 1, high)
            if close is not None:
                found.add((directive, index, close))
                if directive != _PREFORMATTED:
                    _parse_range(line, index + 1, close, found)
                index = close + 1
                continue
        index += 1


def _opens(line: str, index: int, low: int, high: int) -> bool:
    # §6.2: "The opening styling directive MUST be located at the beginning of the
    # line, after a whitespace character, or after a different opening styling
    # directive. The opening styling directive MUST NOT be followed by a whitespace character".
    if index + 1 >= high or line[index + 1].isspace():
        return False
    if index == 0 or line[index - 1].isspace():
        return True
    return index == low and line[low - 1] != line[index]


def _closing(line: str, directive: str, content_start: int, high: int) -> int | None:
    # §6.2: spans are "lazily matched", must not be empty, and "the closing styling
    # directive MUST NOT be preceded by a whitespace character".
    for index in range(content_start + 1, high):
        if line[index] == directive and not line[index - 1].isspace():
            return index
    return None


# -- CTCP -------------------------------------------------------------------------------


def ctcp_split(text: str) -> tuple[str, str] | None:
    """Split a CTCP message: ``"\\x01ACTION waves\\x01"`` -> ``("ACTION", "waves")``.

    Returns ``None`` when ``text`` is not a CTCP message. The command is
    upper-cased (the CTCP draft says commands are case-sensitive but in
    practice clients send ``version``); the final 0x01 may be missing, as the
    CTCP draft allows. The arguments are raw: pass them through
    :func:`to_plain` or :func:`to_xep0393` before they reach XML.
    """
    if not text.startswith(CTCP_DELIMITER):
        return None
    body = text[1:]
    if body.endswith(CTCP_DELIMITER):
        body = body[:-1]
    command, _, args = body.partition(" ")
    if not command or CTCP_DELIMITER in command:
        return None
    return command.upper(), args


def ctcp(command: str, args: str = "") -> str:
    """Frame a CTCP message: ``ctcp("ACTION", "waves")`` -> ``"\\x01ACTION waves\\x01"``.

    :raises ValueError: for an empty command, a space in it, or 0x01, CR, LF or
        NUL anywhere (0x01 would end the CTCP early, the others end the line).
    """
    if not command or " " in command:
        raise ValueError(f"bad CTCP command {command!r}")
    if any(char in command + args for char in "\x01\x00\r\n"):
        raise ValueError("0x01, CR, LF or NUL in a CTCP message")
    return f"{CTCP_DELIMITER}{command}{' ' + args if args else ''}{CTCP_DELIMITER}"
