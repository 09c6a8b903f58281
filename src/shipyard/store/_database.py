"""The metadata database: one engine per process, SQLite (WAL) by default, PostgreSQL at scale."""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, exc, make_url

from shipyard.core.errors import (
    ConfigurationError,
    DatabaseUnavailable,
    InvalidInput,
    SchemaOutdated,
    missing_extra,
)

__all__ = ["Database", "utcnow"]

log = logging.getLogger("shipyard.store")
T = TypeVar("T")

MIGRATIONS = "shipyard.store:migrations"
_MIGRATING = threading.Lock()
READ_ATTEMPTS = 3  # a read-only query on a connection the database dropped is run again


def utcnow() -> datetime:
    return datetime.now(UTC)


def _normalise_url(url: str) -> str:
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        # name the driver: SQLAlchemy's default (psycopg2) is not what the extra installs
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


class Database:
    """Opens the engine lazily and hands out transactions.

    Nothing touches the database in the constructor; `open()` (or the first transaction)
    connects, and applies migrations when `auto_migrate` is on.
    """

    def __init__(self, url: str, *, auto_migrate: bool = False) -> None:
        self.url = _normalise_url(url)
        self.auto_migrate = auto_migrate
        self._engine: Engine | None = None
        self._checked = False
        # threads sharing this object may each be the first to use it: one engine is made
        self._opening = threading.RLock()

    @property
    def dialect(self) -> str:
        return make_url(self.url).get_backend_name()

    @property
    def engine(self) -> Engine:
        """The engine of a database whose schema is current (opening it on first use)."""
        if not self._checked:
            self.open()
        assert self._engine is not None
        return self._engine

    def open(self) -> Database:
        """Connect, then migrate (with `auto_migrate`) or refuse a schema that is behind."""
        with self._opening:
            if self._checked:
                return self
            if self.auto_migrate:
                # at head already (nearly always): one query, not a migration run
                if self.current_revision() != _script_head():
                    self.upgrade()
            else:
                self._check_current()
            self._checked = True
        return self

    def _connected(self) -> Engine:
        """The engine, connected but with the schema unchecked (for migrations)."""
        with self._opening:
            if self._engine is None:
                self._engine = self._first_engine()
            return self._engine

    def _first_engine(self) -> Engine:
        engine = self._create_engine()
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except exc.OperationalError as error:
            engine.dispose()
            safe = make_url(self.url).render_as_string(hide_password=True)
            raise ConfigurationError(
                f"cannot reach the metadata database at {safe}: {error.orig}; "
                "check SHIPYARD_DATABASE_URL and that the server is running"
            ) from None
        return engine

    def _create_engine(self) -> Engine:
        url = make_url(self.url)
        if url.get_backend_name() == "sqlite":
            if url.database and url.database != ":memory:":
                Path(url.database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
            _configure_sqlite(engine)
            return engine
        if url.get_backend_name() == "postgresql":
            try:
                import psycopg  # noqa: F401
            except ImportError:
                raise missing_extra("psycopg", "postgres", "PostgreSQL databases") from None
            return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
        return create_engine(url)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        self._checked = False

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A connection inside one transaction, committed on success, rolled back on error.

        A database that refuses connections or drops one raises `DatabaseUnavailable` (503,
        retry later); a value it cannot store (a number out of range, a NUL in text) raises
        `InvalidInput`. Starting the transaction is tried twice: a connection the server
        dropped since it was pooled is replaced before anything ran on it.
        """
        try:
            conn, transaction = self._begin()
        except exc.DBAPIError as error:
            raise _translated(error) from error
        except exc.TimeoutError:  # every pooled connection is in use
            raise DatabaseUnavailable(
                "every connection to the metadata database is busy; retry shortly",
                retry_after=1.0,
            ) from None
        with conn:
            try:
                yield conn
            except BaseException as error:
                with contextlib.suppress(
                    exc.DBAPIError
                ):  # a dropped connection: rolled back anyway
                    transaction.rollback()
                if isinstance(error, exc.DBAPIError):
                    raise _translated(error) from error
                raise
            try:
                transaction.commit()
            except exc.DBAPIError as error:
                raise _translated(error, committing=True) from error

    def _begin(self) -> tuple[Connection, Any]:
        engine = self.engine
        for attempt in (1, 2):
            conn = None
            try:
                conn = engine.connect()
                return conn, conn.begin()
            except exc.DBAPIError as error:
                if conn is not None:
                    conn.close()
                if attempt == 2 or not _is_disconnect(error):
                    raise
                log.debug("the metadata database dropped a connection; reconnecting")
        raise AssertionError("unreachable")  # pragma: no cover

    def read(self, query: Callable[[Connection], T]) -> T:
        """Run a read-only `query(conn)` in a transaction; again, on a new connection, when the
        database dropped the one it ran on half-way (`pg_terminate_backend`, a failover), up to
        READ_ATTEMPTS times: a failover can drop the new connection too."""
        for attempt in range(1, READ_ATTEMPTS + 1):
            try:
                with self.transaction() as conn:
                    return query(conn)
            except DatabaseUnavailable as error:
                cause = error.__cause__
                dropped = isinstance(cause, exc.DBAPIError) and _is_disconnect(cause)
                if not dropped or attempt == READ_ATTEMPTS:
                    raise
                log.debug("the metadata database dropped a connection mid-read; reading again")
        raise AssertionError("unreachable")  # pragma: no cover

    def _alembic_config(self, conn: Connection) -> Any:
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", MIGRATIONS)
        config.attributes["connection"] = conn
        return config

    def upgrade(self, revision: str = "head") -> str | None:
        """Apply migrations up to `revision`; returns the revision the database is at."""
        from alembic import command

        # alembic's `op` and `context` are process-wide proxies: two threads migrating two
        # databases at once would swap each other's out, so one migration per process at a time
        engine = self._connected()  # before the process-wide lock (open() holds its own)
        with _MIGRATING, engine.begin() as conn:
            if self.dialect == "postgresql":
                # one migrator at a time when several replicas start together
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7419853)")
            command.upgrade(self._alembic_config(conn), revision)
        return self.current_revision()

    def current_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self._connected().connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def head_revision(self) -> str | None:
        return _script_head()

    def _check_current(self) -> None:
        current, head = self.current_revision(), self.head_revision()
        if current != head:
            raise SchemaOutdated(
                f"the metadata database is at revision {current or 'none (empty)'} but this "
                f"shipyard needs {head}; run `shipyard db upgrade` (or set SHIPYARD_AUTO_MIGRATE=true)"
            )


@functools.cache
def _script_head() -> str | None:
    """The revision this shipyard's migrations end at (read once per process)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    return ScriptDirectory.from_config(config).get_current_head()


def _is_disconnect(error: exc.DBAPIError) -> bool:
    """A connection the server refused, dropped or could not serve (SQLite: locked too long)."""
    if error.connection_invalidated or isinstance(error, exc.InterfaceError):
        return True
    if not isinstance(error, exc.OperationalError):
        return False
    if type(error.orig).__module__.startswith("psycopg"):
        return True  # refused, terminated, shut down, failed over: all operational errors
    text = str(error.orig)
    return any(sign in text for sign in ("locked", "unable to open", "disk is full", "disk I/O"))


def _translated(error: exc.DBAPIError, *, committing: bool = False) -> Exception:
    """What a database error means to the caller: the database is away, or a value is bad."""
    detail = str(error.orig).splitlines()[0] if error.orig is not None else str(error)
    if isinstance(error, exc.DataError):
        return InvalidInput(f"the metadata database refused a value: {detail}")
    if _is_disconnect(error):
        if committing:
            return DatabaseUnavailable(
                f"the metadata database dropped the connection while saving a change ({detail}); "
                "the change may or may not have been saved: look before trying it again",
                retry_after=2.0,
            )
        return DatabaseUnavailable(
            f"the metadata database does not answer ({detail}); retry shortly", retry_after=2.0
        )
    return error


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # let SQLAlchemy's BEGIN below decide transactions instead of pysqlite
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # take the write lock up front: a read-then-write transaction can then never fail
        # half-way with "database is locked" when two processes register at once
        conn.exec_driver_sql("BEGIN IMMEDIATE")
