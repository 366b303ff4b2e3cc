"""XEP-0203 Delayed Delivery stamps, in the XEP-0082 DateTime profile."""

from __future__ import annotations

from datetime import UTC, datetime

from twisted.words.xish import domish

NS_DELAY = "urn:xmpp:delay"


def format_stamp(moment: datetime) -> str:
    """XEP-0082 DateTime in UTC with microseconds, e.g. ``2026-11-24T05:38:43.123456Z``.

    Microseconds, so that a client that echoes a stamp back (``since``, ``start``)
    gets exactly the lines from that one on.
    """
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_stamp(text: str) -> datetime | None:
    """A XEP-0082 DateTime (``Z`` or an offset; a missing zone is taken as UTC), or ``None``."""
    text = text.strip()
    if "T" not in text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def add_delay(element: domish.Element, moment: datetime, by: str) -> domish.Element:
    """Add ``<delay xmlns='urn:xmpp:delay' from=by stamp=.../>`` (XEP-0203 §3)."""
    delay = element.addElement((NS_DELAY, "delay"))
    delay["from"] = by
    delay["stamp"] = format_stamp(moment)
    return delay
