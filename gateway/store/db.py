"""Database engine, schema migrations and off-reactor execution (DESIGN.md §5, §8).

The gateway uses the synchronous SQLAlchemy 2 ORM in a dedicated Twisted thread
pool rather than the asyncio extension: it was as fast in our measurements
(reference/stack.md §5), works under any reactor, and needs no greenlet.
:class:`Database` is the only way the rest of the core touches the database:
:meth:`Database.run` runs a repository function with a fresh transaction on a
pool thread and hands back a :class:`~twisted.internet.defer.Deferred`.

Schema changes are Alembic migrations shipped inside the package as
``gateway.migrations`` (setup.cfg maps the top-level ``migrations/`` there), so
an installed copy can upgrade its own database without an ``alembic.ini``.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Callable
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import InstanceState, Session, sessionmaker
from sqlalchemy.pool import StaticPool
from twisted.internet.defer import Deferred, DeferredSemaphore, fail
from twisted.internet.interfaces import IReactorCore, IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

__all__ = [
    "POOL_NAME",
    "Database",
    "DatabaseStoppedError",
    "create_engine_for",
    "current_revision",
    "head_revision",
    "upgrade_to_head",
]

P = ParamSpec("P")
T = TypeVar("T")

#: Name of the database thread pool, visible in thread names and logs.
POOL_NAME = "xmpp-gateway-db"

#: How long SQLite waits for a lock held by another connection or process before
#: failing with "database is locked" (milliseconds; reference/stack.md §5).
SQLITE_BUSY_TIMEOUT_MS = 5000

# PostgreSQL advisory lock key that serialises schema upgrades across instances:
# any fixed 64-bit value that other software on the same database is unlikely to
# use (the ASCII of "xmppgw" followed by 0001).
_MIGRATION_LOCK_KEY = 0x786D_7070_6777_0001


class DatabaseStoppedError(RuntimeError):
    """:meth:`Database.run` was called before :meth:`Database.start` or after a stop."""


def _is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def _is_memory_sqlite(url: URL) -> bool:
    database = url.database or ""
    return (
        database in ("", ":memory:")
        or (database.startswith("file:") and "mode=memory" in database)
        or url.query.get("mode") == "memory"
    )


def create_engine_for(url: str) -> Engine:
    """Create the engine for a database URL, configured for use from a thread pool.

    SQLite (``sqlite:///path``): the parent directory of the file is created;
    every connection gets WAL journaling (readers do not block the writer),
    a busy timeout, and foreign key enforcement (off by default in SQLite, and
    ``contact`` relies on ``ON DELETE CASCADE``). SQLAlchemy, not the ``sqlite3``
    module, emits ``BEGIN``, so that transactions, DDL and savepoints behave as
    on PostgreSQL (the recipe in SQLAlchemy's SQLite dialect documentation,
    "Enabling Non-Legacy SQLite Transactional Modes"). An in-memory database is
    one connection shared by all threads, which is only useful for tests.

    PostgreSQL (``postgresql+psycopg://user@host/db``) and other URLs are passed
    through, with ``pool_pre_ping`` so that a restarted server costs one retry,
    not one failed request per pooled connection.
    """
    parsed = make_url(url)
    if not _is_sqlite(parsed):
        return create_engine(parsed, pool_pre_ping=True)

    if _is_memory_sqlite(parsed):
        # Each pooled connection would otherwise open its own empty database.
        engine = create_engine(
            parsed,
            poolclass=StaticPool,
            connect_args={"check_same_thread": False},
        )
    else:
        database = parsed.database or ""
        if not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed)

    @event.listens_for(engine, "connect")
    def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN away from the sqlite3 module (its legacy mode skips BEGIN
        # for DDL and SAVEPOINT); the "begin" listener below emits it instead.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin_sqlite(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN")

    return engine


def _alembic_config() -> Config:
    """An Alembic configuration pointing at the migrations shipped in the package."""
    cfg = Config()
    # files("gateway.migrations"), not files("gateway") / "migrations": the
    # latter does not exist in an editable install (reference/stack.md §5).
    cfg.set_main_option("script_location", str(importlib.resources.files("gateway.migrations")))
    return cfg


def head_revision() -> str:
    """Return the revision id of the newest migration shipped with this version."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships 0001
        raise RuntimeError("no Alembic migrations found in gateway.migrations")
    return head


def current_revision(engine: Engine) -> str | None:
    """Return the database's current Alembic revision, or ``None`` if it was never migrated."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade_to_head(engine: Engine) -> str:
    """Bring the database schema up to :func:`head_revision`; a no-op if it is there already.

    Blocking: call it at start-up before the reactor runs, or through
    :meth:`Database.upgrade`. Returns the revision reached.
    """
    cfg = _alembic_config()
    # The whole upgrade runs in one transaction on one connection (Alembic
    # cookbook, "Sharing a Connection across one or more programmatic migration
    # commands"); env.py picks the connection up from cfg.attributes.
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Several instances may share one PostgreSQL database (DESIGN.md §7)
            # and start together: the first migrates while the others wait
            # here, then find the schema at head. Released at commit.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")
    revision = current_revision(engine)
    if revision is None:  # pragma: no cover - Alembic raised already if it failed
        raise RuntimeError("database upgrade finished without a revision")
    return revision


class Database:
    """The gateway's database: an engine, a session factory and a thread pool of its own.

    Every call runs on the pool, never on the reactor thread. Calls in flight are
    bounded by a :class:`~twisted.internet.defer.DeferredSemaphore`, so a burst of
    requests waits as cheap Deferreds instead of flooding the pool's queue (an
    unbounded burst stalled the reactor for ~0.7 s in reference/stack.md §5).

    ORM objects must not cross back to the reactor: functions given to
    :meth:`run` return plain values, such as the frozen dataclasses of
    :mod:`gateway.store.repository`.

    :param url: SQLAlchemy URL, ``sqlite:///…`` or ``postgresql+psycopg://…``.
    :param reactor: the reactor that receives results (``callFromThread``); if it
        also provides ``IReactorCore``, the pool is stopped at its shutdown.
    :param pool_size: threads in the pool; by default 1 for SQLite (writes are
        serialised by SQLite anyway, so more threads only add lock contention)
        and 4 for other databases.
    :param max_in_flight: calls handed to the pool at once; by default twice the
        pool size, so a thread finds its next call queued when it finishes one.
    """

    def __init__(
        self,
        url: str,
        reactor: IReactorFromThreads,
        *,
        pool_size: int | None = None,
        max_in_flight: int | None = None,
    ) -> None:
        self._reactor = reactor
        self.engine: Engine = create_engine_for(url)
        self.sessionmaker: sessionmaker[Session] = sessionmaker(
            self.engine,
            # Results outlive the session; expired attributes would trigger
            # lazy loads from whatever thread touched them next.
            expire_on_commit=False,
        )
        if pool_size is None:
            pool_size = 1 if self.engine.dialect.name == "sqlite" else 4
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        if max_in_flight is None:
            max_in_flight = 2 * pool_size
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        # minthreads=0: threads are made on demand; an idle gateway keeps only
        # sleeping threads, which cost no CPU.
        self._pool = ThreadPool(minthreads=0, maxthreads=pool_size, name=POOL_NAME)
        self._semaphore = DeferredSemaphore(max_in_flight)
        self._running = False
        self._stopped = False
        self._shutdown_trigger: Any = None

    @property
    def running(self) -> bool:
        """Whether :meth:`run` accepts calls."""
        return self._running

    def start(self) -> None:
        """Start the thread pool, and arrange for it to stop at reactor shutdown."""
        if self._stopped:
            raise DatabaseStoppedError("a stopped Database cannot be restarted")
        if self._running:
            return
        self._pool.start()
        self._running = True
        if IReactorCore.providedBy(self._reactor):
            core = cast(IReactorCore, self._reactor)
            # Pool threads are not daemons: without this, a forgotten stop()
            # would keep the process alive after the reactor stops.
            self._shutdown_trigger = core.addSystemEventTrigger("during", "shutdown", self._stop_at_shutdown)

    def _stop_at_shutdown(self) -> None:
        # The trigger is firing: it must not be removed again in stop().
        self._shutdown_trigger = None
        self.stop()

    def stop(self) -> None:
        """Stop the pool and dispose of the engine; safe to call more than once.

        Blocks until calls already handed to the pool have finished: Twisted's
        pool runs queued work before its threads exit. Their Deferreds fire on
        a later reactor iteration.
        """
        if self._stopped:
            return
        self._stopped = True
        self._running = False
        if self._shutdown_trigger is not None:
            core = cast(IReactorCore, self._reactor)
            core.removeSystemEventTrigger(self._shutdown_trigger)
            self._shutdown_trigger = None
        self._pool.stop()
        self.engine.dispose()

    def run(
        self,
        fn: Callable[Concatenate[Session, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> Deferred[T]:
        """Run ``fn(session, *args, **kwargs)`` in one transaction on the pool.

        The transaction commits if ``fn`` returns and rolls back if it raises;
        the Deferred fires with the return value or the exception, on the
        reactor thread. ``fn`` must not return ORM instances (a returned mapped
        instance is refused with :class:`TypeError`).
        """
        if not self._running:
            return fail(DatabaseStoppedError("the database is not running"))

        def submit() -> Deferred[T]:
            return deferToThreadPool(self._reactor, self._pool, self._in_transaction, fn, args, kwargs)

        return self._semaphore.run(submit)

    def upgrade(self) -> Deferred[str]:
        """Run :func:`upgrade_to_head` on the pool; fires with the revision reached."""
        if not self._running:
            return fail(DatabaseStoppedError("the database is not running"))
        return self._semaphore.run(
            lambda: deferToThreadPool(self._reactor, self._pool, upgrade_to_head, self.engine)
        )

    def _in_transaction(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> T:
        # Runs on a pool thread.
        with self.sessionmaker.begin() as session:
            result = fn(session, *args, **kwargs)
            # Checked inside the transaction so that the mistake also rolls back.
            if isinstance(inspect(result, raiseerr=False), InstanceState):
                raise TypeError(
                    f"{getattr(fn, '__qualname__', fn)!r} returned an ORM instance; "
                    "return a plain value or dataclass so nothing lazy-loads off the pool"
                )
        return result
