from __future__ import annotations

import threading

import pytest
from sqlalchemy import inspect, text

from shipyard.core.errors import ConfigurationError, SchemaOutdated
from shipyard.store import Database


def test_upgrade_creates_every_table(database_url: str) -> None:
    database = Database(database_url)
    try:
        assert database.upgrade() == database.head_revision()
        tables = set(inspect(database.engine).get_table_names())
        assert {"models", "model_versions", "aliases", "audit_events", "alembic_version"} <= tables
        # a second upgrade is a no-op, as on every deploy
        assert database.upgrade() == database.head_revision()
    finally:
        database.close()


def test_an_unmigrated_database_is_refused_with_the_command_to_run(
    empty_database_url: str,
) -> None:
    database = Database(empty_database_url, auto_migrate=False)
    with pytest.raises(SchemaOutdated, match="shipyard db upgrade"):
        database.open()
    database.close()


def test_downgrade_to_base_and_back(empty_database_url: str) -> None:
    database = Database(empty_database_url)
    try:
        database.upgrade()
        from alembic import command

        with database.engine.begin() as conn:
            command.downgrade(database._alembic_config(conn), "base")
        assert database.current_revision() is None
        assert database.upgrade() == database.head_revision()
    finally:
        database.close()


def test_sqlite_runs_in_wal_mode(tmp_path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'x.db'}", auto_migrate=True)
    try:
        with database.engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        database.close()


def test_unreachable_server_is_a_configuration_error() -> None:
    database = Database("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")
    with pytest.raises(ConfigurationError, match="SHIPYARD_DATABASE_URL"):
        database.open()


def test_plain_postgresql_urls_get_the_installed_driver() -> None:
    assert Database("postgresql://u@h/db").url.startswith("postgresql+psycopg://")


def test_threads_that_first_use_one_database_together_share_one_engine(
    database_url: str,
) -> None:
    """Each thread's first use opens the database: one engine comes of it, not one per thread
    (the others' pooled connections were left for the garbage collector, never closed)."""
    database = Database(database_url, auto_migrate=True)
    start = threading.Barrier(8)
    engines: list[object] = []

    def first_use() -> None:
        start.wait(timeout=30)
        engines.append(database.engine)

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert len(engines) == 8
        assert len({id(engine) for engine in engines}) == 1
    finally:
        database.close()
