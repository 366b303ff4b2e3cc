"""IRCv3 ``chathistory`` backfill and ``server-time``, sans-I/O (issue 5).

After a lost connection the gateway rejoins its channels; where the server offers
chathistory (the ``draft/chathistory`` or ``chathistory`` capability, or the
``CHATHISTORY`` ISUPPORT token) and ``batch``, it asks for the lines said since the last
one it saw, ``CHATHISTORY LATEST <channel> msgid=<id>|timestamp=<time> <limit>``
(https://ircv3.net/specs/extensions/chathistory), and the lines of the
``chathistory`` batch that answers are emitted as backfill (``RoomMessage.backfill``,
with their ``time`` and ``msgid``); the core dedupes and archives them.

``time`` tags (https://ircv3.net/specs/extensions/server-time) become the
timestamps of live lines too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from plugins.irc.lines import IrcMessage, serialize

#: Capabilities that announce the command (the draft name is what servers ship today).
CHATHISTORY_CAPS = frozenset({"draft/chathistory", "chathistory"})
#: Lines asked for when the server states no maximum (the spec's examples use 100).
DEFAULT_LIMIT = 100
#: Batches open at once per connection; a server that never closes them cannot grow this.
MAX_OPEN_BATCHES = 64


def server_time(message: IrcMessage) -> datetime | None:
    """The ``time`` tag as an aware UTC datetime; ``None`` when absent or malformed
    (server-time: ``YYYY-MM-DDThh:mm:ss.sssZ``)."""
    value = message.tags.get("time", "")
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Seen:
    """The last line seen in a channel: its msgid and its server time, either may be empty."""

    msgid: str = ""
    time: str = ""


class History:
    """What one connection knows for backfill: the last line seen per channel, and which
    open batches are chathistory answers."""

    def __init__(self, fold: Callable[[str], str]) -> None:
        self.fold = fold
        self.last: dict[str, Seen] = {}
        """Folded channel -> the last live line seen there."""
        self._batches: dict[str, str] = {}
        """Open batch reference -> its type (only the first parameter matters here)."""

    # -- what the server offers --------------------------------------------------------------

    @staticmethod
    def available(enabled_caps: Iterable[str], isupport_token: str | None) -> bool:
        """chathistory needs ``batch`` to tell backfill from live lines."""
        caps = frozenset(enabled_caps)
        offered = bool(caps & CHATHISTORY_CAPS) or isupport_token is not None
        return offered and "batch" in caps

    @staticmethod
    def limit(isupport_token: str | None) -> int:
        """ISUPPORT ``CHATHISTORY=<n>``: the most lines one request may return (0: no limit)."""
        if isupport_token and isupport_token.isdigit() and int(isupport_token) > 0:
            return min(int(isupport_token), DEFAULT_LIMIT)
        return DEFAULT_LIMIT

    # -- live lines ------------------------------------------------------------------------------

    def seen(self, channel: str, message: IrcMessage) -> None:
        msgid, time = message.tags.get("msgid", ""), message.tags.get("time", "")
        if msgid or time:
            self.last[self.fold(channel)] = Seen(msgid=msgid, time=time)

    def request(self, channel: str, limit: int) -> str | None:
        """The CHATHISTORY line that fetches what was missed in ``channel``; ``None`` when no
        line was ever seen there (nothing to anchor to: no backfill rather than a guess)."""
        seen = self.last.get(self.fold(channel))
        if seen is None:
            return None
        reference = f"msgid={seen.msgid}" if seen.msgid else f"timestamp={seen.time}"
        return serialize("CHATHISTORY", "LATEST", channel, reference, str(limit))

    # -- batches -----------------------------------------------------------------------------------

    def on_batch(self, message: IrcMessage) -> None:
        """``BATCH +ref type [params]`` opens, ``BATCH -ref`` closes (IRCv3 batch)."""
        if not message.params:
            return
        reference = message.params[0]
        if reference.startswith("+") and len(message.params) > 1:
            if len(self._batches) < MAX_OPEN_BATCHES:
                self._batches[reference[1:]] = message.params[1].lower()
        elif reference.startswith("-"):
            self._batches.pop(reference[1:], None)

    def is_backfill(self, message: IrcMessage) -> bool:
        """A line inside a ``chathistory`` batch (or the draft's name for it)."""
        kind = self._batches.get(message.tags.get("batch", ""))
        return kind in ("chathistory", "draft/chathistory")


__all__ = ["CHATHISTORY_CAPS", "History", "Seen", "server_time"]
