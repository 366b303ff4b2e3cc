"""XEP-0045 §7.2.15 discussion history on join, from the joining user's own archive.

The history a user gets is what *they* saw (their archive, Biboumi's privacy
rule), sent after the self-presence and before the subject (§7.2.16), each line
with a XEP-0203 ``<delay from=room stamp=.../>``, an id and its archive
``<stanza-id/>`` (XEP-0359), so a client can continue with MAM from there.

``<history/>`` attributes, all honoured together (a line must pass every limit):

* ``maxstanzas``: at most that many lines (capped at :data:`HISTORY_MAX`);
* ``maxchars``: the newest lines whose complete XML stanzas, as sent (``to``
  included), add up to at most that many characters, as §7.2.15 says; 0 is none;
* ``seconds``: lines of the last that many seconds;
* ``since``: lines at or after that XEP-0082 time.

Without ``maxstanzas`` the room's own limit applies: ``history_length`` lines.
A malformed attribute is ignored, as if absent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from twisted.words.xish import domish

from gateway.archive import Archive
from gateway.stanzas import stanza, xml_safe
from gateway.store.archive_repository import ArchiveRecord
from gateway.xep.delay import add_delay, parse_stamp

NS_MUC = "http://jabber.org/protocol/muc"
NS_STANZA_ID = "urn:xmpp:sid:0"
#: The most lines one join replays, whatever the client asks for.
HISTORY_MAX = 1000


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    """The ``<history/>`` of a join presence; ``None`` where an attribute is absent."""

    maxstanzas: int | None = None
    maxchars: int | None = None
    seconds: int | None = None
    since: datetime | None = None

    @classmethod
    def from_presence(cls, presence: domish.Element) -> HistoryRequest:
        for x in presence.elements(NS_MUC, "x"):
            for history in x.elements(NS_MUC, "history"):
                since_text = history.getAttribute("since")
                return cls(maxstanzas=_count(history.getAttribute("maxstanzas")),
                           maxchars=_count(history.getAttribute("maxchars")),
                           seconds=_count(history.getAttribute("seconds")),
                           since=parse_stamp(since_text) if since_text else None)
        return cls()


MAX_COUNT = 10 * 365 * 24 * 3600


def _count(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = int(text.strip())
    except ValueError:
        return None
    # Clamped: a huge ``seconds`` would overflow timedelta (ten years is "everything" anyway).
    return min(value, MAX_COUNT) if value >= 0 else None


def history_message(room_jid: str, resource: str, record: ArchiveRecord) -> domish.Element:
    """One archived room line as history (or as a MAM result's inner message, with ``to``)."""
    sender = f"{room_jid}/{record.sender}" if record.sender else room_jid
    element = stanza("message", sender=sender, recipient=resource, type_="groupchat",
                     id_=record.legacy_id or record.stanza_id)
    element.addElement("body", content=xml_safe(record.body))
    add_delay(element, record.timestamp, room_jid)
    sid = element.addElement((NS_STANZA_ID, "stanza-id"))
    sid["by"], sid["id"] = room_jid, record.stanza_id
    return element


class MucHistory:
    """Builds the history stanzas of one join."""

    def __init__(self, archive: Archive, *, default_length: int,
                 length_for: Callable[[str, str], int] | None = None) -> None:
        self.archive = archive
        self.default_length = default_length
        self.length_for = length_for
        """``(user, room address) -> lines``: the user's ``max_history_length`` for that room."""

    async def stanzas(self, user: str, room_jid: str, resource: str,
                      request: HistoryRequest, *, address: str = "") -> list[domish.Element]:
        if request.maxstanzas == 0 or request.maxchars == 0:
            return []
        limit = request.maxstanzas
        if limit is None:
            limit = (self.length_for(user, address) if self.length_for is not None and address
                     else self.default_length)
        limit = min(limit, HISTORY_MAX)
        since = request.since
        if request.seconds is not None:
            cutoff = self.archive.now() - timedelta(seconds=request.seconds)
            since = cutoff if since is None else max(since, cutoff)
        records = await self.archive.recent(user, room_jid, since, limit)
        built = [history_message(room_jid, resource, record) for record in records]
        if request.maxchars is None:
            return built
        kept: list[domish.Element] = []
        total = 0
        for element in reversed(built):  # the newest lines are the ones worth keeping
            total += len(element.toXml())
            if total > request.maxchars:
                break
            kept.append(element)
        kept.reverse()
        return kept
