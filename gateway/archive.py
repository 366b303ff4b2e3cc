"""The per-user message archive: recording room and 1:1 lines, cheaply (XEP-0313, XEP-0359).

Every line that reaches a user, or that a user says, is recorded for that user
alone (Biboumi's privacy rule: a user sees only what was said while present).
Recording happens on the reactor at event time and costs an id (gateway.ids) and a list
append: rows wait in memory and :class:`ArchiveWriter` writes them in batches,
one transaction and one ``executemany`` each, on the database thread pool,
every ``flush_interval`` seconds or ``batch_size`` rows, and at shutdown.
(Biboumi does one INSERT and fsync per line on its event loop; DESIGN.md §9
measures against that.)

The archive id is generated here, on the reactor, so the live stanza carries
the same XEP-0359 ``<stanza-id/>`` that MAM later pages by. A line that is not
archived gets no stanza-id (XEP-0313 §3.5: the id says where it is stored).

Backfilled lines (IRCv3 ``chathistory`` after an outage) are deduplicated by
their legacy id per user and conversation: against the ids recorded lately (an
in-memory LRU, which also covers rows still waiting to be written) and against
the database, one query per burst.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from gateway.config import ArchiveConfig
from gateway.ids import new_id
from gateway.stanzas import xml_safe
from gateway.store import archive_repository as repo
from gateway.store.archive_repository import ArchiveQuery, ArchiveRecord, ArchiveRow, Direction, Page

log = logging.getLogger(__name__)

#: Rows that may wait in memory when the database falls behind; the oldest go first beyond it.
MAX_PENDING_BATCHES = 50
#: Legacy ids remembered for backfill dedupe without a database round trip.
RECENT_LEGACY_IDS = 20000
#: Pruning: at start, then at most hourly after a batch is written (no timer ticks while idle:
#: an idle archive does not grow), deleting in chunks.
PRUNE_INTERVAL = 3600.0
PRUNE_CHUNK = 5000

ShouldRecord = Callable[[str, str], bool]


class ArchiveWriter:
    """Batches rows in memory and writes them off the reactor thread.

    At most one batch is in flight, so batches commit in order. :meth:`flush`
    fires once every row queued before the call is written (or failed and was
    logged): history and MAM call it before reading, so they see every line.
    """

    def __init__(self, database: Any, clock: IReactorTime, *, batch_size: int, interval: float,
                 after_write: Callable[[], object] | None = None) -> None:
        self.database = database
        self.after_write = after_write
        self.clock = clock
        self.batch_size = batch_size
        self.interval = interval
        self.max_pending = batch_size * MAX_PENDING_BATCHES
        self._queue: list[ArchiveRow] = []
        self._queued = 0
        """Rows ever queued; with ``_done``, positions for :meth:`flush` waiters."""
        self._done = 0
        self._timer: IDelayedCall | None = None
        self._writing = False
        self._waiters: list[tuple[int, Deferred[None]]] = []
        self.batches_written = 0
        self.dropped = 0

    def add(self, row: ArchiveRow) -> None:
        if len(self._queue) >= self.max_pending:
            # The database is far behind: bound the memory, keep the newest lines.
            self._queue.pop(0)
            self._done += 1
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10000 == 0:
                log.warning("archive writer is %d rows behind: %d oldest lines dropped so far",
                            self.max_pending, self.dropped)
        self._queue.append(row)
        self._queued += 1
        if len(self._queue) >= self.batch_size:
            self._write()
        elif self._timer is None and not self._writing:
            self._timer = self.clock.callLater(self.interval, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._write()

    def flush(self) -> Deferred[None]:
        """Write everything queued so far; fires when it is written."""
        if self._done >= self._queued:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._waiters.append((self._queued, waiter))
        self._write()
        return waiter

    def _write(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        if self._writing or not self._queue:
            return
        self._writing = True
        ensureDeferred(self._write_batches())

    async def _write_batches(self) -> None:
        try:
            while self._queue:
                batch = self._queue[:self.batch_size]
                del self._queue[:self.batch_size]
                try:
                    await self.database.run(repo.insert_rows, batch)
                    self.batches_written += 1
                except Exception:
                    log.exception("archiving %d lines failed", len(batch))
                self._done += len(batch)
                self._wake()
                if self._queue and len(self._queue) < self.batch_size and not self._waiters:
                    break  # a partial batch waits for the timer, to fill up
        finally:
            self._writing = False
        if self._queue and self._timer is None:
            self._timer = self.clock.callLater(self.interval, self._on_timer)
        if self.after_write is not None:
            self.after_write()

    def _wake(self) -> None:
        ready = [waiter for target, waiter in self._waiters if target <= self._done]
        self._waiters = [(t, w) for t, w in self._waiters if t > self._done]
        for waiter in ready:
            waiter.callback(None)

    def stop(self) -> Deferred[None]:
        """Flush what is queued (at shutdown); no timer is left behind."""
        return self.flush()


@dataclass(slots=True)
class _Backfill:
    row: ArchiveRow
    record: bool
    result: Deferred[str | None]


class Archive:
    """Records lines per user and answers history and MAM reads, for one gateway.

    :param should_record: ``(user, legacy address) -> bool``, asked for every line
        (the address of the room, or of the contact in a 1:1 chat). By default the
        ``enabled`` flag; the per-room "record history" setting plugs in here.
    """

    def __init__(self, *, gateway_jid: str, database: Any, clock: IReactorTime, config: ArchiveConfig,
                 should_record: ShouldRecord | None = None) -> None:
        self.gateway_jid = gateway_jid
        self.database = database
        self.clock = clock
        self.config = config
        self.should_record: ShouldRecord = should_record or (lambda user, address: config.enabled)
        self.writer = ArchiveWriter(database, clock, batch_size=config.batch_size,
                                    interval=config.flush_interval, after_write=self._maybe_prune)
        self.now: Callable[[], datetime] = lambda: datetime.now(UTC)
        self._recent: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self._backfills: dict[tuple[str, str], list[_Backfill]] = {}
        self._backfilling: set[tuple[str, str]] = set()
        self._last_prune: float | None = None
        self._pruning = False
        self._running = False
        self._stopped = False
        """Set by :meth:`stop`: the database is going away, later lines are not recorded."""

    @property
    def enabled(self) -> bool:
        """Whether the archive can be read at all (history, MAM)."""
        return self.config.enabled

    # -- recording (reactor thread, at event time) -----------------------------------------

    def record(self, user: str, address: str, with_jid: str, *, sender: str, body: str,
               direction: Direction, legacy_id: str = "", timestamp: datetime | None = None) -> str | None:
        """Archive one line; its archive id (for the live ``<stanza-id/>``), or ``None``
        when it is not archived."""
        if legacy_id:
            self._remember(user, with_jid, legacy_id)
        if self._stopped or not self.should_record(user, address):
            return None
        stanza_id = new_id()
        # xml_safe: what is stored is what can be shown, and PostgreSQL text refuses NUL
        # (one such line would fail its whole batch).
        self.writer.add(ArchiveRow(self.gateway_jid, user, with_jid, stanza_id, legacy_id,
                                   timestamp or self.now(), direction, xml_safe(sender), xml_safe(body)))
        return stanza_id

    def _remember(self, user: str, with_jid: str, legacy_id: str) -> None:
        key = (user, with_jid, legacy_id)
        self._recent[key] = None
        self._recent.move_to_end(key)
        if len(self._recent) > RECENT_LEGACY_IDS:
            self._recent.popitem(last=False)

    def backfill(self, user: str, address: str, with_jid: str, *, sender: str, body: str,
                 legacy_id: str, timestamp: datetime | None, record: bool = True) -> Deferred[str | None]:
        """A line fetched after the fact: fires with ``""`` or its archive id when it is new
        (show it), ``None`` when that legacy id is already known (drop it). Lines of one
        conversation are answered in the order they came. ``record=False``: dedupe only."""
        if self._stopped:
            return succeed(None)  # shutting down: nothing is shown or written any more
        record = record and self.should_record(user, address)
        row = ArchiveRow(self.gateway_jid, user, with_jid, new_id(), legacy_id,
                         timestamp or self.now(), "in", xml_safe(sender), xml_safe(body))
        item = _Backfill(row, record, Deferred())
        key = (user, with_jid)
        self._backfills.setdefault(key, []).append(item)
        if key not in self._backfilling:
            self._backfilling.add(key)
            # Next turn: a chathistory batch arrives as many events in one go; one query each burst.
            self.clock.callLater(0, lambda: ensureDeferred(self._run_backfills(key)))
        return item.result

    async def _run_backfills(self, key: tuple[str, str]) -> None:
        user, with_jid = key
        try:
            while items := self._backfills.pop(key, None):
                wanted = [i.row.legacy_id for i in items
                          if i.row.legacy_id and (user, with_jid, i.row.legacy_id) not in self._recent]
                known: set[str] = set()
                if wanted:
                    try:
                        known = await self.database.run(repo.existing_legacy_ids, self.gateway_jid, user,
                                                        with_jid, wanted)
                    except Exception:
                        log.exception("backfill dedupe for %s failed: showing the lines", user)
                for item in items:
                    legacy_id = item.row.legacy_id
                    if legacy_id and (legacy_id in known or (user, with_jid, legacy_id) in self._recent):
                        item.result.callback(None)
                        continue
                    if legacy_id:
                        self._remember(user, with_jid, legacy_id)
                    if item.record:
                        self.writer.add(item.row)
                    item.result.callback(item.row.stanza_id if item.record else "")
        finally:
            self._backfilling.discard(key)

    # -- reading (each flushes first, so that it sees every line recorded so far) ------------

    async def recent(self, user: str, with_jid: str, since: datetime | None,
                     limit: int) -> list[ArchiveRecord]:
        if not self.enabled or limit <= 0:
            return []
        await self.writer.flush()
        return await self.database.run(repo.recent, self.gateway_jid, user, with_jid, since, limit)

    async def query(self, request: ArchiveQuery) -> Page:
        await self.writer.flush()
        return await self.database.run(repo.query, request)

    # -- lifecycle and pruning -----------------------------------------------------------------

    def start(self) -> None:
        self._running = True
        self._maybe_prune()

    def _maybe_prune(self) -> None:
        """Prune if it is due: at start, then at most every :data:`PRUNE_INTERVAL` seconds."""
        if not self._running or self._pruning or self.config.max_age_days <= 0:
            return
        now = self.clock.seconds()
        if self._last_prune is not None and now - self._last_prune < PRUNE_INTERVAL:
            return
        self._last_prune = now
        ensureDeferred(self.prune()).addErrback(lambda f: log.error("pruning the archive failed: %s",
                                                                    f.getErrorMessage()))

    async def prune(self) -> int:
        """Delete lines older than ``max_age_days``, a chunk per transaction, off the reactor."""
        deleted = 0
        if self.config.max_age_days <= 0:
            return 0
        self._pruning = True
        try:
            before = self.now() - timedelta(days=self.config.max_age_days)
            while True:
                count = await self.database.run(repo.prune, self.gateway_jid, before, PRUNE_CHUNK)
                deleted += count
                if count < PRUNE_CHUNK or not self._running:
                    break
        finally:
            self._pruning = False
        if deleted:
            log.info("pruned %d archived lines older than %d days", deleted, self.config.max_age_days)
        return deleted

    async def forget_user(self, user: str) -> int:
        """Delete everything archived for ``user`` (unregistration), lines still in memory too."""
        await self.writer.flush()
        for key in [key for key in self._recent if key[0] == user]:
            del self._recent[key]
        return await self.database.run(repo.delete_user, self.gateway_jid, user)

    async def stop(self) -> None:
        """Write what is queued (graceful shutdown); no timer is left behind."""
        self._running = False
        self._stopped = True
        await self.writer.stop()


__all__ = ["Archive", "ArchiveWriter", "ShouldRecord"]
