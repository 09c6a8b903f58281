"""Training sets for a retrain: from files, from SQL, or from what the model saw in production
(logged predictions joined with the labels that came back), and their holdout split.

A label the model cannot learn from (missing; for a classifier, not one of its classes; for a
regressor, not a number) never reaches the training function and never stops the retrain: the
row is dropped, counted and reported with a few examples in the pipeline's data step.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shipyard.core.errors import ConfigurationError, InvalidInput
from shipyard.core.tables import read_table_file
from shipyard.core.values import category_text
from shipyard.features import FeatureStore
from shipyard.logstore import LogReader
from shipyard.retraining._spec import DataSpec, HoldoutSpec, parse_duration

__all__ = ["TrainingSet", "build_training_set", "model_columns", "split_holdout"]

EXAMPLES = 5


@dataclass(frozen=True)
class TrainingSet:
    """The rows to train on, and the rows left out because of their label."""

    frame: pd.DataFrame
    dropped: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    lineage: dict[str, Any] | None = None
    """The feature views and versions the rows were built from (source `features`)."""

    def dropped_evidence(self) -> dict[str, Any]:
        if not self.dropped:
            return {}
        return {
            "unusable_labels": self.dropped,
            "unusable_reasons": self.reasons,
            "unusable_examples": self.examples,
        }


def build_training_set(
    data: DataSpec,
    model: str,
    features: list[str],
    classes: list[Any] | None,
    reader: LogReader,
    now: datetime,
    *,
    base: Path | None = None,
    task: str | None = None,
    feature_store: FeatureStore | None = None,
) -> TrainingSet:
    """The frame the training function gets: feature columns, the label (typed as the model's
    classes, or as numbers for a regressor), and the time column.

    A relative `data.path` is read from `base` (the folder of shipyard.yaml), like the
    training module. `task` is the serving model's (None for a first version: labels are
    kept as they come, missing ones dropped).
    """
    lineage = None
    if data.source == "logs":
        frame = _from_logs(model, features, data, classes, reader, now)
    elif data.source in ("parquet", "csv"):
        frame = _read_file(data, model, base)
    elif data.source == "features":
        if feature_store is None:
            raise ConfigurationError(f"the training data of {model} needs the feature store")
        frame, lineage = _from_feature_store(data, model, base, feature_store)
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
    found = replace(_usable_labels(frame, data.label, task, classes), lineage=lineage)
    if found.frame.empty:
        raise InvalidInput(
            f"none of the {len(frame)} rows of {model}'s training data has a label it can learn "
            f"from ({', '.join(f'{n} {why}' for why, n in found.reasons.items())}; e.g. "
            f"{', '.join(found.examples)})"
        )
    return found


def _usable_labels(
    frame: pd.DataFrame, label: str, task: str | None, classes: list[Any] | None
) -> TrainingSet:
    """`frame` with its label typed for `task`, without the rows whose label cannot be."""
    labels = frame[label]
    reasons: dict[str, int] = {}
    missing = labels.isna()
    if missing.any():
        reasons["missing"] = int(missing.sum())
    bad = pd.Series(False, index=frame.index)
    if task == "regression":
        numbers = pd.to_numeric(labels.map(_number_or_none), errors="coerce")
        numbers = numbers.where(np.isfinite(numbers))  # "inf" is not a value to learn
        bad = numbers.isna() & ~missing
        typed = numbers
    elif task in ("binary", "multiclass") and classes:
        by_text = {category_text(c): c for c in classes}
        texts = labels.map(category_text)
        bad = ~texts.isin(list(by_text)) & ~missing
        typed = texts.map(by_text)
        # the model's own class type (0/1 as int, not a float column from the NaN)
        typed = typed.astype(object)
    else:
        typed = labels
    if bad.any():
        reasons["not a number" if task == "regression" else "not one of the model's classes"] = int(
            bad.sum()
        )
    examples = [repr(v)[:40] for v in labels[bad].drop_duplicates().head(EXAMPLES)]
    keep = ~(missing | bad)
    out = frame.loc[keep].copy()
    out[label] = typed[keep]
    if task in ("binary", "multiclass") and classes:
        out[label] = out[label].astype(pd.Series(classes).dtype) if len(out) else out[label]
    return TrainingSet(out, int((~keep).sum()), reasons, examples)


def _number_or_none(value: Any) -> Any:
    """A label as a number when it is one (bools are not), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    try:
        return float(str(value))
    except ValueError:
        return None


def model_columns(features: list[str]) -> list[str]:
    """The columns a model takes: a feature-store reference `view:feature` is its feature's
    name (as a training set names it), a plain name is itself."""
    return [f.rsplit(":", 1)[-1] for f in features]


def _from_feature_store(
    data: DataSpec, model: str, base: Path | None, store: FeatureStore
) -> tuple[pd.DataFrame, dict[str, Any]]:
    path = _file(str(data.entities), f"the entity rows of {model} (data.entities)", base)
    refs = [f for f in data.features or [] if ":" in f]
    try:
        entities = read_table_file(path, "csv" if path.suffix.lower() == ".csv" else "parquet")
    except InvalidInput as error:
        raise InvalidInput(f"the entity rows of {model}: {error.message}") from None
    given = data.time_column
    time_column = given if given is not None and given in entities.columns else "event_timestamp"
    built = store.training_set(entities, refs, timestamp_column=time_column)
    return built.to_pandas(), built.lineage


def _file(given: str, what: str, base: Path | None) -> Path:
    """The file `given` in a spec, a relative path read from `base` (shipyard.yaml's folder)."""
    path = Path(given).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    if not path.is_file():
        raise ConfigurationError(
            f"{what}: {given} is not a file: {path} does not exist; a relative path is read "
            "from the folder of shipyard.yaml"
        )
    return path


def _read_file(data: DataSpec, model: str, base: Path | None) -> pd.DataFrame:
    path = _file(str(data.path), f"the training data of {model} (data.path)", base)
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
        if not reader.truth(conn, reader.label_files()):
            raise InvalidInput(
                f"{model} has no labels yet (POST /v1/feedback); a retrain needs ground truth"
            )
        selected = ", ".join(f'p.features."{f}" AS "{f}"' for f in features)
        frame: pd.DataFrame = conn.sql(
            f"""
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
    # logged labels are text: `_usable_labels` gives them back the type of the model's classes
    return frame


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
