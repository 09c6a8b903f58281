"""Training sets for a retrain: from files, from SQL, or from what the model saw in production
(logged predictions joined with the labels that came back), and their holdout split."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from shipyard.core.errors import ConfigurationError, InvalidInput
from shipyard.core.tables import read_table_file
from shipyard.logstore import LogReader
from shipyard.retraining._spec import DataSpec, HoldoutSpec, parse_duration

__all__ = ["build_training_set", "split_holdout"]


def build_training_set(
    data: DataSpec,
    model: str,
    features: list[str],
    classes: list[Any] | None,
    reader: LogReader,
    now: datetime,
    *,
    base: Path | None = None,
) -> pd.DataFrame:
    """The frame the training function gets: feature columns, the label, and the time column.

    A relative `data.path` is read from `base` (the folder of shipyard.yaml), like the
    training module.
    """
    if data.source == "logs":
        frame = _from_logs(model, features, data, classes, reader, now)
    elif data.source in ("parquet", "csv"):
        frame = _read_file(data, model, base)
    else:
        frame = _read_sql(data, model)
    missing = [c for c in [*features, data.label] if c not in frame.columns]
    if missing:
        raise ConfigurationError(
            f"the training data of {model} lacks column(s) {missing}; check data in shipyard.yaml"
        )
    if frame.empty:
        raise InvalidInput(
            f"the training data of {model} is empty ({data.source}); nothing to retrain on"
        )
    return frame


def _read_file(data: DataSpec, model: str, base: Path | None) -> pd.DataFrame:
    path = Path(str(data.path)).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    if not path.is_file():
        raise ConfigurationError(
            f"the training data of {model} (data.path: {data.path}) is not a file: {path} "
            "does not exist; a relative path is read from the folder of shipyard.yaml"
        )
    try:
        frame: pd.DataFrame = read_table_file(path, data.source)
        return frame
    except InvalidInput as error:
        raise InvalidInput(f"the training data of {model}: {error.message}") from None


def _read_sql(data: DataSpec, model: str) -> pd.DataFrame:
    from sqlalchemy import create_engine
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    try:
        engine = create_engine(str(data.url))
    except (ArgumentError, ImportError, ValueError) as error:
        raise ConfigurationError(
            f"the training data of {model}: data.url is not a usable SQLAlchemy URL ({error})"
        ) from None
    try:
        return pd.read_sql(str(data.query), engine)
    except SQLAlchemyError as error:
        raise InvalidInput(
            f"the training query of {model} (data.query) failed: {getattr(error, 'orig', None) or error}"
        ) from None
    finally:
        engine.dispose()


def _from_logs(
    model: str,
    features: list[str],
    data: DataSpec,
    classes: list[Any] | None,
    reader: LogReader,
    now: datetime,
) -> pd.DataFrame:
    """Logged predictions of every version over the window, with their latest label."""
    start = now - parse_duration(data.window)
    conn = reader.connect()
    try:
        if not reader.relation(conn, reader.prediction_files(model=model), "predictions"):
            raise InvalidInput(
                f"{model} has no logged predictions to retrain on; send traffic and labels first"
            )
        if not reader.relation(conn, reader.label_files(), "labels"):
            raise InvalidInput(
                f"{model} has no labels yet (POST /v1/feedback); a retrain needs ground truth"
            )
        selected = ", ".join(f'p.features."{f}" AS "{f}"' for f in features)
        frame: pd.DataFrame = conn.sql(
            f"""
            WITH truth AS (SELECT prediction_id, arg_max(label, received_at) AS truth FROM labels GROUP BY prediction_id)
            SELECT {selected}, t.truth AS "{data.label}", p.ts AS "{data.time_column or "timestamp"}"
            FROM predictions p JOIN truth t USING (prediction_id)
            WHERE p.variant <> 'shadow' AND p.ts >= $start AND p.ts < $end
            ORDER BY p.ts
            """,
            params={"start": start, "end": now},
        ).to_df()
    finally:
        conn.close()
    if frame.empty:
        raise InvalidInput(
            f"{model} has no labelled predictions between {start:%Y-%m-%d} and {now:%Y-%m-%d}"
        )
    frame[data.label] = _typed_labels(frame[data.label], classes)
    return frame


def _typed_labels(labels: pd.Series, classes: list[Any] | None) -> pd.Series:
    """Logged labels are text; give them back the type of the model's classes (0/1 -> int)."""
    if not classes:
        return labels
    by_text = {str(c).lower() if isinstance(c, bool) else str(c): c for c in classes}
    return labels.map(lambda v: by_text.get(v, v))


def split_holdout(
    frame: pd.DataFrame, holdout: HoldoutSpec, time_column: str | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, holdout): the latest rows by time (default), or a seeded random share."""
    n = len(frame)
    cut = round(n * (1 - holdout.fraction))
    if cut <= 0 or cut >= n:
        raise InvalidInput(
            f"{n} rows cannot be split {1 - holdout.fraction:.0%}/{holdout.fraction:.0%}; collect more data"
        )
    if holdout.split == "time" and time_column and time_column in frame.columns:
        ordered = frame.sort_values(time_column, kind="stable")
        return ordered.iloc[:cut], ordered.iloc[cut:]
    shuffled = frame.sample(frac=1.0, random_state=holdout.seed)
    return shuffled.iloc[:cut], shuffled.iloc[cut:]
