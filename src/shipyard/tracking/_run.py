"""Experiment tracking: a run records what went into a model (params, data fingerprints, code
version) and what came out (metrics with steps, artifacts), so any registered version can be
traced back to how it was made and made again.

    with shipyard.start_run(experiment="fraud", params={"C": 0.5}) as run:
        run.log_dataset("train", train_frame)
        model = fit(...)
        run.log_metric("auc", 0.91)
        shipyard.register(model, name="fraud-detector", sample=X)   # linked to the run
"""

from __future__ import annotations

import contextvars
import math
import platform
import subprocess
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update

from shipyard.core import fingerprint, new_id
from shipyard.core.errors import InvalidInput, NotFound
from shipyard.store import ArtifactStore, Database, tables, utcnow
from shipyard.tracking._datasets import SNAPSHOT_SUFFIXES, DataVersions

__all__ = [
    "ML_PACKAGES",
    "Run",
    "RunRecord",
    "Tracker",
    "active_run",
    "environment",
    "git_state",
    "seed_everything",
]

R, M = tables.runs, tables.run_metrics
_ACTIVE: contextvars.ContextVar[Run | None] = contextvars.ContextVar(
    "shipyard_active_run", default=None
)


def active_run() -> Run | None:
    """The run a `with start_run(...)` block opened in this context, if any."""
    return _ACTIVE.get()


def git_state(folder: Path | None = None) -> dict[str, Any]:
    """The commit, branch and dirtiness of the git checkout `folder` (or the cwd) is in."""
    cwd = str(folder or Path.cwd())

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {}
    return {
        "commit": commit,
        "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
        "dirty": bool(git("status", "--porcelain")),
    }


# the packages whose versions decide what a training run produces, recorded when installed
ML_PACKAGES = (
    "shipyard", "numpy", "pandas", "scipy", "scikit-learn", "lightgbm", "xgboost", "torch",
    "pyarrow", "onnx", "onnxruntime", "skl2onnx", "mlflow", "flwr", "fairlearn",
)  # fmt: skip


def environment(code_dir: Path | None = None, seed: int | None = None) -> dict[str, Any]:
    """What a run trains with besides its code and data: Python, the ML packages' versions,
    the folder its training code was imported from, and the seed its RNGs started from."""
    from importlib import metadata

    packages = {}
    for name in ML_PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "python": platform.python_version(),
        "packages": packages,
        "code_dir": str(code_dir.resolve()) if code_dir is not None else None,
        "seed": seed,
    }


def seed_everything(seed: int) -> None:
    """Start Python's, numpy's global and (when imported) PyTorch's RNGs from `seed`, so
    training code that draws from them draws the same numbers when run again."""
    import random
    import sys

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)


@dataclass(frozen=True)
class RunRecord:
    """A stored run."""

    id: str
    experiment: str
    name: str
    status: str
    started_at: datetime
    ended_at: datetime | None
    params: dict[str, Any]
    tags: dict[str, Any]
    metrics: dict[str, float]
    git: dict[str, Any]
    entrypoint: str
    datasets: dict[str, Any]
    artifacts: dict[str, Any]
    created_by: str
    error: str | None = None
    environment: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "experiment": self.experiment,
            "name": self.name,
            "status": self.status,
            "started_at": self.started_at.isoformat(),
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "params": self.params,
            "tags": self.tags,
            "metrics": self.metrics,
            "git": self.git,
            "entrypoint": self.entrypoint,
            "datasets": self.datasets,
            "artifacts": self.artifacts,
            "created_by": self.created_by,
            "error": self.error,
            "environment": self.environment,
        }


def _json_value(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


@dataclass
class Run:
    """An open run; log to it while it is active. Ends when its `with` block ends."""

    id: str
    experiment: str
    tracker: Tracker
    _steps: dict[str, int] = field(default_factory=dict)

    def log_param(self, key: str, value: Any) -> None:
        self.log_params({key: value})

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.tracker._merge(self.id, "params", {str(k): _json_value(v) for k, v in params.items()})

    def set_tag(self, key: str, value: Any) -> None:
        self.tracker._merge(self.id, "tags", {str(key): _json_value(value)})

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        self.log_metrics({key: value}, step=step)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Record metric values; without `step`, each key counts its own steps 0, 1, 2 ..."""
        rows = []
        for key, value in metrics.items():
            number = float(value)
            if not math.isfinite(number):
                raise InvalidInput(f"metric {key!r} is {value}; log finite numbers")
            at_step = step if step is not None else self._steps.get(key, -1) + 1
            self._steps[key] = max(self._steps.get(key, -1), at_step)
            rows.append(
                {
                    "run_id": self.id,
                    "key": str(key),
                    "step": at_step,
                    "value": number,
                    "at": utcnow(),
                }
            )
        self.tracker._log_metrics(self.id, rows)

    def log_dataset(
        self,
        name: str,
        data: Any,
        *,
        key: Sequence[str] | str | None = None,
        label: str | None = None,
        snapshot: bool = True,
    ) -> dict[str, Any]:
        """Record the data set `name` (`train`, `holdout`, ...) this run used.

        In-memory data (a frame, Arrow table, records) and Parquet or CSV files are snapshotted
        as a data version (stored once per content; `shipyard data list`), so the run can be
        made again from the same rows; other paths (folders) are fingerprinted only.

        Args:
            key: the column(s) that identify a row, so `shipyard data diff` can tell rows
                added, removed and changed.
            label: the column with the true outcome, so `shipyard reproduce` can score a
                model made again on this data beside the original.
            snapshot: False to fingerprint only (data that must not be copied).
        """
        if not snapshot or (
            isinstance(data, str | Path) and Path(data).suffix.lower() not in SNAPSHOT_SUFFIXES
        ):
            entry = fingerprint(data)
        else:
            version = self.tracker.data.snapshot(data, key=key)
            if label is not None and label not in version.columns:
                raise InvalidInput(
                    f"the label {label!r} is not a column of {name} "
                    f"({', '.join(version.columns[:20])})"
                )
            entry = {
                "sha256": version.sha256,
                "rows": version.rows,
                "columns": version.columns,
                "source": str(Path(data).resolve())
                if isinstance(data, str | Path)
                else "in-memory",
                "snapshot": version.path,
                "key": ([key] if isinstance(key, str) else list(key)) if key else version.key,
                "label": label,
            }
        self.tracker._merge(self.id, "datasets", {name: entry})
        return entry

    def record_dataset(self, name: str, held_by: str, print_: Mapping[str, Any]) -> None:
        """Record a data set this run used that stays where it is (a federated site's rows):
        its id as a data version there (`sha256`), rows and columns; nothing is copied."""
        entry = {**print_, "source": held_by, "snapshot": None, "kept_by": held_by}
        self.tracker._merge(self.id, "datasets", {name: entry})

    def datasets(self) -> dict[str, Any]:
        """The data sets logged so far, by name."""
        return self.tracker.get(self.id).datasets

    def log_artifact(self, path: str | Path, name: str | None = None) -> dict[str, Any]:
        """Copy a file into the artifact store under this run, with its SHA-256."""
        source = Path(path)
        if not source.is_file():
            raise InvalidInput(f"artifact {str(source)!r} is not a file")
        stored = self.tracker.artifacts.write_file(f"runs/{self.id}/{name or source.name}", source)
        entry = {"sha256": stored.sha256, "size": stored.size, "path": stored.path}
        self.tracker._merge(self.id, "artifacts", {name or source.name: entry})
        return entry


class Tracker:
    """Runs in the metadata database, their artifacts in the artifact store."""

    def __init__(
        self, database: Database, artifacts: ArtifactStore, *, actor: str = "unknown"
    ) -> None:
        self.database = database
        self.artifacts = artifacts
        self.actor = actor
        self.data = DataVersions(database, artifacts, actor=actor)

    @contextmanager
    def start_run(
        self,
        experiment: str = "default",
        *,
        name: str = "",
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        entrypoint: str = "",
        code_dir: Path | None = None,
        seed: int | None = None,
    ) -> Iterator[Run]:
        """Open a run; it is finished when the block ends, failed (with the error) if it raises.

        Args:
            entrypoint: the training function as `module:function` (called with the training
                frame and the params), so `shipyard reproduce` can run it again.
            code_dir: the folder its module is imported from (default: the working folder).
            seed: seeds Python's, numpy's and PyTorch's global RNGs now (`seed_everything`),
                and is recorded so a reproduction starts them the same way.
        """
        if not experiment or not isinstance(experiment, str):
            raise InvalidInput("a run needs an experiment name, e.g. start_run(experiment='fraud')")
        run_id = new_id()
        with self.database.transaction() as conn:
            conn.execute(
                insert(R).values(
                    id=run_id, experiment=experiment, name=name, status="running", started_at=utcnow(),
                    params={str(k): _json_value(v) for k, v in (params or {}).items()},
                    tags={str(k): _json_value(v) for k, v in (tags or {}).items()},
                    metrics={}, git=git_state(code_dir), entrypoint=entrypoint, datasets={}, artifacts={},
                    created_by=self.actor, environment=environment(code_dir or Path.cwd(), seed),
                )
            )  # fmt: skip
        if seed is not None:
            seed_everything(seed)
        run = Run(run_id, experiment, self)
        token = _ACTIVE.set(run)
        try:
            yield run
        except BaseException as error:
            self._end(run_id, "failed", f"{type(error).__name__}: {error}")
            raise
        finally:
            _ACTIVE.reset(token)
        self._end(run_id, "finished", None)

    def _end(self, run_id: str, status: str, error: str | None) -> None:
        with self.database.transaction() as conn:
            conn.execute(
                update(R)
                .where(R.c.id == run_id)
                .values(status=status, ended_at=utcnow(), error=error)
            )

    def _merge(self, run_id: str, column: str, values: dict[str, Any]) -> None:
        with self.database.transaction() as conn:
            current = conn.execute(select(R.c[column]).where(R.c.id == run_id)).scalar_one()
            conn.execute(
                update(R).where(R.c.id == run_id).values({column: {**(current or {}), **values}})
            )

    def _log_metrics(self, run_id: str, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        with self.database.transaction() as conn:
            conn.execute(insert(M), rows)
            current = conn.execute(select(R.c.metrics).where(R.c.id == run_id)).scalar_one() or {}
            latest = {**current, **{r["key"]: r["value"] for r in rows}}
            conn.execute(update(R).where(R.c.id == run_id).values(metrics=latest))

    # -- reading --------------------------------------------------------------------------------

    def get(self, run_id: str) -> RunRecord:
        row = self.database.read(
            lambda conn: conn.execute(select(R).where(R.c.id == run_id)).first()
        )
        if row is None:
            raise NotFound(f"no run {run_id!r} (shipyard runs list)")
        return _record(row)

    def list_runs(
        self,
        experiment: str | None = None,
        limit: int = 100,
        *,
        among: Collection[str] | None = None,
    ) -> list[RunRecord]:
        """Runs, newest first; `among` keeps only runs with those ids."""
        query = select(R).order_by(R.c.started_at.desc(), R.c.id.desc()).limit(limit)
        if experiment is not None:
            query = query.where(R.c.experiment == experiment)
        if among is not None:
            query = query.where(R.c.id.in_(sorted(among)))
        return self.database.read(lambda conn: [_record(r) for r in conn.execute(query)])

    def metric_history(self, run_id: str, key: str | None = None) -> list[dict[str, Any]]:
        query = (
            select(M.c.key, M.c.step, M.c.value, M.c.at)
            .where(M.c.run_id == run_id)
            .order_by(M.c.key, M.c.step)
        )
        if key is not None:
            query = query.where(M.c.key == key)
        return self.database.read(
            lambda conn: [
                {"key": r.key, "step": r.step, "value": r.value, "at": r.at.isoformat()}
                for r in conn.execute(query)
            ]
        )

    def compare(self, run_ids: list[str]) -> dict[str, Any]:
        """Params and final metrics of runs side by side, with the keys that differ."""
        runs = [self.get(i) for i in run_ids]
        params = sorted({k for r in runs for k in r.params})
        metrics = sorted({k for r in runs for k in r.metrics})
        return {
            "runs": [r.id for r in runs],
            "params": {k: [r.params.get(k) for r in runs] for k in params},
            "metrics": {k: [r.metrics.get(k) for r in runs] for k in metrics},
            "differs": [k for k in params if len({repr(r.params.get(k)) for r in runs}) > 1],
        }


def _record(row: Any) -> RunRecord:
    from datetime import UTC

    def aware(value: datetime | None) -> datetime | None:
        return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)

    started = aware(row.started_at)
    assert started is not None
    return RunRecord(
        id=row.id, experiment=row.experiment, name=row.name, status=row.status, started_at=started,
        ended_at=aware(row.ended_at), params=row.params or {}, tags=row.tags or {}, metrics=row.metrics or {},
        git=row.git or {}, entrypoint=row.entrypoint, datasets=row.datasets or {}, artifacts=row.artifacts or {},
        created_by=row.created_by, error=row.error, environment=row.environment or {},
    )  # fmt: skip
