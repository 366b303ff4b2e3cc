"""Repository functions over the ``archive`` table (XEP-0313 archives, XEP-0045 history).

Like :mod:`gateway.store.repository`: plain functions that take a
:class:`~sqlalchemy.orm.Session` first, run on the database thread pool, and
return frozen dataclasses. One archive per user: every row belongs to one
gateway user and one conversation (``with_jid``, a room or contact JID), so a
user only ever reads what reached them (Biboumi's privacy rule).

Order is (``timestamp``, ``id``), the XEP-0313 §4.2 "chronological order", which
the index (gateway, user, with_jid, timestamp) serves. Pages are found by keyset
(the position of an archive id), never by offset, so a page costs the same at
the end of a long archive as at its start.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

from sqlalchemy import CursorResult, and_, delete, func, insert, or_, select
from sqlalchemy.orm import Session

from gateway.store.models import ArchivedMessage

__all__ = [
    "ArchiveQuery",
    "ArchiveRecord",
    "ArchiveRow",
    "Page",
    "UnknownArchiveId",
    "existing_legacy_ids",
    "insert_rows",
    "prune",
    "query",
    "recent",
]

Direction = Literal["in", "out"]

#: Rows fetched per ``IN (...)`` list, well under every backend's parameter limit.
_IN_CHUNK = 500


@dataclass(frozen=True, slots=True)
class ArchiveRow:
    """A line to archive, built on the reactor thread (cheap: no ORM object there)."""

    gateway: str
    user: str
    with_jid: str
    stanza_id: str
    legacy_id: str
    timestamp: datetime
    direction: Direction
    sender: str
    """The nick in a room; the sender's bare JID in a 1:1 chat."""
    body: str


@dataclass(frozen=True, slots=True)
class ArchiveRecord:
    """An archived line as read back."""

    stanza_id: str
    legacy_id: str
    timestamp: datetime
    direction: str
    sender: str
    body: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ArchiveQuery:
    """One user's archive with one JID, filtered and paged (XEP-0313 §4.1, XEP-0059)."""

    gateway: str
    user: str
    with_jid: str
    start: datetime | None = None
    end: datetime | None = None
    sender: str | None = None
    """Only lines by this sender (the ``with`` filter on a room archive)."""
    ids: tuple[str, ...] = ()
    after_id: str | None = None
    before_id: str | None = None
    """Form fields ``after-id``/``before-id`` (exclusive bounds that also count)."""
    after: str | None = None
    before: str | None = None
    """RSM ``<after/>``/``<before/>``; ``before=""`` asks for the last page."""
    index: int | None = None
    limit: int = 100


@dataclass(frozen=True, slots=True)
class Page:
    records: list[ArchiveRecord]
    complete: bool
    """No further page in the direction of paging (XEP-0313 §4.3 ``complete``)."""
    count: int
    """Every line matching the filters, ignoring the RSM position."""


class UnknownArchiveId(LookupError):
    """An id in a query is not in this user's archive with that JID (XEP-0313: item-not-found)."""


def insert_rows(session: Session, rows: Sequence[ArchiveRow]) -> int:
    """Insert a batch in one statement (``executemany``); the caller's transaction commits it."""
    if not rows:
        return 0
    session.execute(insert(ArchivedMessage.__table__), [
        {"gateway": r.gateway, "user": r.user, "with_jid": r.with_jid, "stanza_id": r.stanza_id,
         "legacy_id": r.legacy_id or None, "timestamp": r.timestamp, "direction": r.direction,
         "sender": r.sender, "body": r.body}
        for r in rows
    ])
    return len(rows)


def existing_legacy_ids(session: Session, gateway: str, user: str, with_jid: str,
                        legacy_ids: Sequence[str]) -> set[str]:
    """Which of ``legacy_ids`` are already archived for this user and JID (backfill dedupe)."""
    found: set[str] = set()
    wanted = sorted(set(legacy_ids))
    for start in range(0, len(wanted), _IN_CHUNK):
        chunk = wanted[start:start + _IN_CHUNK]
        statement = select(ArchivedMessage.legacy_id).where(
            ArchivedMessage.gateway == gateway, ArchivedMessage.user == user,
            ArchivedMessage.with_jid == with_jid, ArchivedMessage.legacy_id.in_(chunk))
        found.update(cast(str, value) for value in session.execute(statement).scalars())
    return found


def _record(row: Any) -> ArchiveRecord:
    return ArchiveRecord(stanza_id=row.stanza_id, legacy_id=row.legacy_id or "", timestamp=row.timestamp,
                         direction=row.direction, sender=row.sender, body=row.body)


_COLUMNS = (ArchivedMessage.id, ArchivedMessage.stanza_id, ArchivedMessage.legacy_id,
            ArchivedMessage.timestamp, ArchivedMessage.direction, ArchivedMessage.sender,
            ArchivedMessage.body)


def recent(session: Session, gateway: str, user: str, with_jid: str, since: datetime | None,
           limit: int) -> list[ArchiveRecord]:
    """The newest ``limit`` lines at or after ``since``, oldest first (history on join)."""
    if limit <= 0:
        return []
    conditions = [ArchivedMessage.gateway == gateway, ArchivedMessage.user == user,
                  ArchivedMessage.with_jid == with_jid]
    if since is not None:
        conditions.append(ArchivedMessage.timestamp >= since)
    statement = (select(*_COLUMNS).where(*conditions)
                 .order_by(ArchivedMessage.timestamp.desc(), ArchivedMessage.id.desc()).limit(limit))
    return [_record(row) for row in reversed(session.execute(statement).all())]


def _position(session: Session, base: list[Any], stanza_id: str) -> tuple[datetime, int]:
    row = session.execute(select(ArchivedMessage.timestamp, ArchivedMessage.id)
                          .where(*base, ArchivedMessage.stanza_id == stanza_id)).one_or_none()
    if row is None:
        raise UnknownArchiveId(stanza_id)
    return row.timestamp, row.id


def _later(position: tuple[datetime, int]) -> Any:
    timestamp, row_id = position
    return or_(ArchivedMessage.timestamp > timestamp,
               and_(ArchivedMessage.timestamp == timestamp, ArchivedMessage.id > row_id))


def _earlier(position: tuple[datetime, int]) -> Any:
    timestamp, row_id = position
    return or_(ArchivedMessage.timestamp < timestamp,
               and_(ArchivedMessage.timestamp == timestamp, ArchivedMessage.id < row_id))


def query(session: Session, request: ArchiveQuery) -> Page:
    """A page of the archive (XEP-0313 §4); :class:`UnknownArchiveId` for an unknown id."""
    base = [ArchivedMessage.gateway == request.gateway, ArchivedMessage.user == request.user,
            ArchivedMessage.with_jid == request.with_jid]
    filters = list(base)
    if request.start is not None:
        filters.append(ArchivedMessage.timestamp >= request.start)
    if request.end is not None:
        filters.append(ArchivedMessage.timestamp <= request.end)
    if request.sender is not None:
        filters.append(ArchivedMessage.sender == request.sender)
    if request.ids:
        known = set(session.execute(select(ArchivedMessage.stanza_id)
                                    .where(*base, ArchivedMessage.stanza_id.in_(request.ids))).scalars())
        if missing := set(request.ids) - known:
            raise UnknownArchiveId(sorted(missing)[0])
        filters.append(ArchivedMessage.stanza_id.in_(request.ids))
    if request.after_id is not None:
        filters.append(_later(_position(session, base, request.after_id)))
    if request.before_id is not None:
        filters.append(_earlier(_position(session, base, request.before_id)))
    count = session.execute(select(func.count()).select_from(ArchivedMessage).where(*filters)).scalar_one()

    page_filters = list(filters)
    backwards = request.before is not None
    if request.after:
        page_filters.append(_later(_position(session, base, request.after)))
    if request.before:
        page_filters.append(_earlier(_position(session, base, request.before)))
    order = ((ArchivedMessage.timestamp.desc(), ArchivedMessage.id.desc()) if backwards
             else (ArchivedMessage.timestamp, ArchivedMessage.id))
    statement = select(*_COLUMNS).where(*page_filters).order_by(*order).limit(request.limit + 1)
    if request.index and not backwards and not request.after:
        statement = statement.offset(request.index)
    rows = session.execute(statement).all()
    complete = len(rows) <= request.limit
    rows = rows[:request.limit]
    if backwards:
        rows.reverse()
    return Page(records=[_record(row) for row in rows], complete=complete, count=count)


def prune(session: Session, gateway: str, before: datetime, limit: int) -> int:
    """Delete up to ``limit`` lines older than ``before``; how many went.

    Bounded so that one call holds the (SQLite) write lock only briefly: the
    caller repeats while a full chunk was deleted. Walked in id order, which is
    roughly time order, so the scan stops soon after the old rows at the front.
    """
    oldest = (select(ArchivedMessage.id)
              .where(ArchivedMessage.gateway == gateway, ArchivedMessage.timestamp < before)
              .order_by(ArchivedMessage.id).limit(limit).scalar_subquery())
    result = cast(CursorResult[Any], session.execute(
        delete(ArchivedMessage).where(ArchivedMessage.id.in_(oldest))))
    return result.rowcount


def delete_user(session: Session, gateway: str, user: str) -> int:
    """Forget a user's whole archive (unregistration); how many lines went."""
    result = cast(CursorResult[Any], session.execute(
        delete(ArchivedMessage).where(ArchivedMessage.gateway == gateway, ArchivedMessage.user == user)))
    return result.rowcount
