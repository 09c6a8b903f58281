"""Shared fixtures: settings over each metadata backend, and small trained fraud models."""

from __future__ import annotations

import functools
import io
import logging
import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shipyard.core import Settings
from shipyard.demo import FEATURES, LABEL, transactions
from shipyard.demo.training import train
from shipyard.registry import Registry
from tests import services

# before any test module reads its service URL: use the local services when they answer
services.discover()
POSTGRES_URL = os.environ.get("SHIPYARD_TEST_POSTGRES_URL")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say which services the run used, and how many tests skipped for which reason."""
    terminalreporter.write_sep("-", "services")
    for variable, decision in services.found.items():
        terminalreporter.write_line(f"{variable}: {decision}")
    skipped = terminalreporter.stats.get("skipped", [])
    reasons: dict[str, int] = {}
    for report in skipped:
        reason = (
            str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        )
        reasons[reason.removeprefix("Skipped: ")] = (
            reasons.get(reason.removeprefix("Skipped: "), 0) + 1
        )
    terminalreporter.write_sep("-", f"{len(skipped)} skipped")
    for reason, count in sorted(reasons.items(), key=lambda item: -item[1]):
        terminalreporter.write_line(f"{count:5d}  {reason}")


pytest_plugins = ["tests.webhooks"]  # the `hook` fixture: a real webhook endpoint


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    if not POSTGRES_URL:
        pytest.skip("SHIPYARD_TEST_POSTGRES_URL is not set; PostgreSQL tests need a server")
    from sqlalchemy import create_engine, make_url, text
    from sqlalchemy.pool import NullPool

    admin_url = make_url(POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    name = f"shipyard_test_{uuid.uuid4().hex[:10]}"
    # NullPool: every connection closes when released, so none lingers for the whole session
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _reset_postgres(url: str, *, keep_schema: bool = True) -> None:
    """Empty every table of a schema that is at the migrations' head (a test that migrated
    it elsewhere, or left it empty, gets a new schema instead): a test starts from no rows,
    without paying for every migration again. `keep_schema=False`: no tables at all."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    from shipyard.store import Database

    engine = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with engine.connect() as conn:
        tables = [
            name
            for (name,) in conn.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            )
        ]
        at = None
        if "alembic_version" in tables:
            at = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        kept = [t for t in tables if t != "alembic_version"]
        if (
            keep_schema
            and at == Database(url).head_revision()
            and set(tables) == _shipyard_tables()
        ):
            sequences = [
                name
                for (name,) in conn.execute(
                    text("SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'")
                )
            ]
            # in one round trip, foreign keys not checked while every row goes (DELETE is
            # several times faster than TRUNCATE on tables this small), ids from 1 again
            conn.exec_driver_sql(
                "SET session_replication_role = replica; "
                + "".join(f'DELETE FROM "{t}"; ' for t in kept)
                + "".join(f'ALTER SEQUENCE "{q}" RESTART; ' for q in sequences)
                + "SET session_replication_role = DEFAULT;"
            )
        else:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@functools.cache
def _shipyard_tables() -> frozenset[str]:
    """The tables shipyard's migrations make (read once, from a scratch SQLite database)."""
    from sqlalchemy import inspect

    from shipyard.store import Database

    with tempfile.TemporaryDirectory() as folder:
        database = Database(f"sqlite:///{folder}/tables.db", auto_migrate=True)
        try:
            with database.engine.connect() as conn:
                return frozenset(inspect(conn).get_table_names())
        finally:
            database.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The metadata database URL for each backend: SQLite in tmp, a clean PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'meta' / 'shipyard.db'}"
    url: str = request.getfixturevalue("postgres_database")
    _reset_postgres(url)
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A metadata database without any table, not even alembic's (for tests of migrations)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'meta' / 'empty.db'}"
    url: str = request.getfixturevalue("postgres_database")
    _reset_postgres(url, keep_schema=False)
    return url


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        home=tmp_path / "home", database_url=database_url, auto_migrate=True, actor="tester"
    )


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    """Settings on embedded defaults only, for tests that are not about the database."""
    return Settings(home=tmp_path / "home", actor="tester")


@pytest.fixture
def registry(settings: Settings) -> Iterator[Registry]:
    with Registry.from_settings(settings) as reg:
        yield reg


@pytest.fixture(scope="session")
def fraud_data() -> pd.DataFrame:
    return transactions(6_000, seed=11)


@pytest.fixture(scope="session")
def fraud_model(fraud_data: pd.DataFrame) -> Any:
    """The demo's kind of model: imputer + scaler + one-hot + logistic regression."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [f for f in FEATURES if f != "merchant_category"]
    model = Pipeline(
        [
            (
                "features",
                ColumnTransformer(
                    [
                        (
                            "num",
                            make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
                            numeric,
                        ),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), ["merchant_category"]),
                    ]
                ),
            ),
            ("clf", LogisticRegression(max_iter=1000)),
        ]
    )
    return model.fit(fraud_data[FEATURES], fraud_data[LABEL])


@pytest.fixture(scope="session")
def fraud_sample(fraud_data: pd.DataFrame) -> pd.DataFrame:
    return fraud_data[FEATURES].iloc[:500]


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready records with None for missing values."""
    return list(frame.astype(object).where(frame.notna(), None).to_dict(orient="records"))


@pytest.fixture(scope="session")
def champion() -> tuple[Any, pd.DataFrame, float]:
    """The demo's champion: trained on a month of history, flagging the riskiest 2%."""
    history = transactions(24_000, seed=7)
    model = train(history, {"C": 0.5})
    threshold = float(np.quantile(model.predict_proba(history[FEATURES])[:, 1], 0.98))
    return model, history, threshold


@dataclass
class DemoRun:
    """One `shipyard demo` for the whole session (the demo test reads its story, the browser
    tests explore what it left behind)."""

    home: Path
    result: Any
    text: str
    monitoring_records: list[logging.LogRecord]


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    from rich.console import Console

    from shipyard.demo import run_demo

    home = tmp_path_factory.mktemp("demo") / "demo"
    out = io.StringIO()
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("shipyard.monitoring")
    handler, level = Keep(logging.INFO), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        result = run_demo(home, rows=10_000, requests=40, console=Console(file=out, width=120))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return DemoRun(home, result, out.getvalue(), records)
