"""Queries over the prediction, label and error logs: DuckDB, out of core.

Aggregates (volume, latency percentiles, confusion counts, ROC AUC by ranks) run as SQL over
the Parquet segments, so memory does not grow with the log. Where a computation needs rows in
Python (drift tests, calibration, sequential detectors), it gets a uniform random sample of
bounded size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from shipyard.logstore import LogReader
from shipyard.monitoring._kpis import Kpi

__all__ = [
    "CLASSIFICATION_METRICS",
    "LogQueries",
    "Period",
    "days_between",
    "kpi_sql",
    "multiclass_metrics",
]

SAMPLE_ROWS = 200_000
CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "false_positive_rate")


@dataclass(frozen=True)
class Period:
    """A half-open time range [start, end) cut into windows of `step`."""

    start: datetime
    end: datetime
    step: timedelta

    @property
    def seconds(self) -> float:
        return self.step.total_seconds()

    def window_start(self, index: int) -> datetime:
        return self.start + index * self.step

    @property
    def windows(self) -> int:
        return max(1, math.ceil((self.end - self.start) / self.step))


def _kpi_column(column: str) -> str:
    """A KPI's column as SQL over the `scoped` view (names are checked by `parse_kpi`)."""
    if column == "label":
        return "truth"
    if column == "prediction":
        return "coalesce(CAST(label AS VARCHAR), CAST(value AS VARCHAR))"
    if column in ("score", "value"):
        return column
    return 'features."' + column.replace('"', '""') + '"'


def _kpi_number(sql: str) -> str:
    text = f"CAST({sql} AS VARCHAR)"
    return (
        f"coalesce(TRY_CAST({text} AS DOUBLE), "
        f"CASE lower({text}) WHEN 'true' THEN 1.0 WHEN 'false' THEN 0.0 END)"
    )


def kpi_sql(kpi: Kpi) -> tuple[str, list[Any]]:
    """The aggregate SQL of `kpi` and its bound values."""
    params: list[Any] = []
    parts = []
    for condition in kpi.where:
        column = _kpi_column(condition.column)
        op = "<>" if condition.op == "!=" else condition.op
        if isinstance(condition.value, str):
            parts.append(f"CAST({column} AS VARCHAR) {op} ?")
            params.append(condition.value)
        else:
            parts.append(f"{_kpi_number(column)} {op} ?")
            params.append(float(condition.value))
    matches = " AND ".join(parts) or "TRUE"
    if kpi.function == "rate":
        return f"avg(CASE WHEN {matches} THEN 1.0 ELSE 0.0 END)", params
    if kpi.column is None:  # count(*)
        return f"count(*) FILTER (WHERE {matches})", params
    value = _kpi_number(_kpi_column(kpi.column))
    function = {"mean": "avg"}.get(kpi.function, kpi.function)
    if function == "count":
        return f"count({value}) FILTER (WHERE {matches})", params
    return f"{function}({value}) FILTER (WHERE {matches})", params


def days_between(start: datetime, end: datetime) -> list[str]:
    """The `date=` partitions that can hold rows in [start, end)."""
    day = start.astimezone(UTC).date()
    last = (end - timedelta(microseconds=1)).astimezone(UTC).date()
    out = []
    while day <= last:
        out.append(day.isoformat())
        day += timedelta(days=1)
    return out


class LogQueries:
    """SQL over one model's logs for one period (a short-lived DuckDB connection per query)."""

    def __init__(self, reader: LogReader, model: str, period: Period) -> None:
        self.reader = reader
        self.model = model
        self.period = period
        self.days = days_between(period.start, period.end)

    def _connect(self) -> tuple[duckdb.DuckDBPyConnection, bool, bool]:
        conn = self.reader.connect()
        conn.execute("SET TimeZone = 'UTC'")
        has_predictions = self.reader.relation(
            conn, self.reader.prediction_files(model=self.model, days=self.days), "predictions"
        )
        # a label comes after its prediction: older label days cannot hold the period's truth,
        # and reading them would make every query grow with the whole label history
        first_day = (self.period.start - timedelta(days=1)).astimezone(UTC).date().isoformat()
        label_files = [
            f for f in self.reader.label_files() if f.split("date=", 1)[-1][:10] >= first_day
        ]
        has_labels = self.reader.truth(conn, label_files)
        return conn, has_predictions, has_labels

    def _where(self) -> tuple[str, list[Any]]:
        return "ts >= ? AND ts < ?", [self.period.start, self.period.end]

    def windows(
        self, positive: str | None, tasks: Mapping[int, str] | None = None
    ) -> list[dict[str, Any]]:
        """Per version, variant and window: traffic, latency, scores and, with labels, quality
        as the version's task measures it (`tasks`: version -> binary, multiclass or
        regression; a version not in it is taken as binary when `positive` is given)."""
        tasks = tasks or {}
        conn, has_predictions, _ = self._connect()
        try:
            if not has_predictions:
                return []
            # a view cannot take parameters: the bounds go in as literals (our own datetimes)
            start, end = _literal(self.period.start), _literal(self.period.end)
            bucket = f"CAST(floor((epoch(ts) - epoch({start})) / {self.period.seconds}) AS BIGINT)"
            conn.execute(
                f"CREATE TEMP VIEW scoped AS SELECT p.*, t.truth, {bucket} AS w "
                f"FROM predictions p LEFT JOIN truth t USING (prediction_id) WHERE ts >= {start} AND ts < {end}"
            )
            pos = "$pos"
            rows = conn.execute(
                f"""
                SELECT version, variant, w,
                    count(*) AS volume,
                    quantile_cont(latency_ms, [0.5, 0.95, 0.99]) AS latency_quantiles,
                    avg(score) AS score_mean,
                    quantile_cont(score, [0.5, 0.9]) AS score_quantiles,
                    avg(CASE WHEN label = {pos} THEN 1.0 ELSE 0.0 END) AS predicted_positive_rate,
                    count(truth) AS labelled,
                    sum(CASE WHEN truth IS NOT NULL AND label = truth THEN 1 ELSE 0 END) AS correct,
                    sum(CASE WHEN truth = {pos} AND label = {pos} THEN 1 ELSE 0 END) AS tp,
                    sum(CASE WHEN truth IS NOT NULL AND truth <> {pos} AND label = {pos} THEN 1 ELSE 0 END) AS fp,
                    sum(CASE WHEN truth = {pos} AND label <> {pos} THEN 1 ELSE 0 END) AS fn,
                    sum(CASE WHEN truth IS NOT NULL AND truth <> {pos} AND label <> {pos} THEN 1 ELSE 0 END) AS tn,
                    count(TRY_CAST(truth AS DOUBLE)) AS numeric_labels,
                    avg(abs(value - TRY_CAST(truth AS DOUBLE))) AS mae,
                    sqrt(avg(power(value - TRY_CAST(truth AS DOUBLE), 2))) AS rmse,
                    avg(value - TRY_CAST(truth AS DOUBLE)) AS mean_residual,
                    var_pop(CASE WHEN value IS NOT NULL THEN TRY_CAST(truth AS DOUBLE) END) AS truth_variance
                FROM scoped GROUP BY ALL ORDER BY version, variant, w
                """,
                {"pos": positive},
            ).fetchall()
            columns = [d[0] for d in conn.description or []]
            out = [dict(zip(columns, r, strict=True)) for r in rows]
            aucs = self._aucs(conn, positive) if positive is not None else {}
            multiclass = {v for v, t in tasks.items() if t == "multiclass"}
            confusion = self._confusion(conn, multiclass) if multiclass else {}
        finally:
            conn.close()
        for row in out:
            row["window_start"] = self.period.window_start(int(row.pop("w")))
            # one quantile list per column: each quantile_cont call would hold its own copy of
            # the window's values
            latency = row.pop("latency_quantiles") or [None] * 3
            row["latency_p50"], row["latency_p95"], row["latency_p99"] = latency
            row["score_p50"], row["score_p90"] = row.pop("score_quantiles") or [None] * 2
            key = (row["version"], row["variant"], row["window_start"])
            row["auc"] = aucs.get(key)
            task = tasks.get(row["version"], "binary" if positive is not None else "")
            _derive(row, self.period.seconds, task, confusion.get(key, {}))
        return out

    def kpis(self, kpis: Sequence[Kpi]) -> dict[int, list[dict[str, Any]]]:
        """Each KPI per version: over the whole period (`total`) and per window (`windows`,
        None where a window had no rows); a KPI that cannot be computed for a version (a
        feature it names is not logged) carries `error` instead."""
        if not kpis:
            return {}
        conn, has_predictions, _ = self._connect()
        out: dict[int, list[dict[str, Any]]] = {}
        try:
            if not has_predictions:
                return {}
            start, end = _literal(self.period.start), _literal(self.period.end)
            bucket = f"CAST(floor((epoch(ts) - epoch({start})) / {self.period.seconds}) AS BIGINT)"
            conn.execute(
                f"CREATE TEMP VIEW scoped AS SELECT p.*, t.truth, {bucket} AS w "
                f"FROM predictions p LEFT JOIN truth t USING (prediction_id) WHERE ts >= {start} AND ts < {end}"
            )
            versions = [
                int(v) for (v,) in conn.execute("SELECT DISTINCT version FROM scoped").fetchall()
            ]
            for kpi in kpis:
                sql, params = kpi_sql(kpi)
                try:
                    rows = conn.execute(
                        f"SELECT version, w, {sql} AS v FROM scoped "
                        "GROUP BY GROUPING SETS ((version, w), (version))",
                        params,
                    ).fetchall()
                except duckdb.Error as error:
                    for version in versions:
                        out.setdefault(version, []).append(
                            {"name": kpi.name, "expression": kpi.expression, "total": None,
                             "last": None, "windows": [None] * self.period.windows,
                             "error": str(error).splitlines()[0][:300]}
                        )  # fmt: skip
                    continue
                found: dict[int, dict[str, Any]] = {}
                for version, w, value in rows:
                    entry = found.setdefault(
                        int(version),
                        {"name": kpi.name, "expression": kpi.expression, "total": None,
                         "last": None, "windows": [None] * self.period.windows},
                    )  # fmt: skip
                    number = None if value is None else float(value)
                    if w is None:
                        entry["total"] = number
                    elif 0 <= int(w) < self.period.windows:
                        entry["windows"][int(w)] = number
                for version, entry in found.items():
                    entry["last"] = entry["windows"][-1]
                    out.setdefault(version, []).append(entry)
        finally:
            conn.close()
        return out

    def _confusion(
        self, conn: duckdb.DuckDBPyConnection, versions: set[int]
    ) -> dict[tuple[int, str, datetime], dict[tuple[str, str], int]]:
        """Labelled predictions counted by (true class, predicted class), per window."""
        rows = conn.execute(
            "SELECT version, variant, w, truth, label, count(*) FROM scoped "
            "WHERE truth IS NOT NULL AND label IS NOT NULL AND list_contains($versions, version) "
            "GROUP BY ALL",
            {"versions": sorted(versions)},
        ).fetchall()
        out: dict[tuple[int, str, datetime], dict[tuple[str, str], int]] = {}
        for version, variant, w, truth, label, n in rows:
            key = (version, variant, self.period.window_start(int(w)))
            out.setdefault(key, {})[(truth, label)] = int(n)
        return out

    def _aucs(
        self, conn: duckdb.DuckDBPyConnection, positive: str
    ) -> dict[tuple[int, str, datetime], float]:
        """ROC AUC per window from ranks (ties share their average rank), in SQL."""
        rows = conn.execute(
            """
            WITH ranked AS (
                SELECT version, variant, w, truth = ? AS pos,
                    rank() OVER (PARTITION BY version, variant, w ORDER BY score) AS r,
                    count(*) OVER (PARTITION BY version, variant, w, score) AS ties
                FROM scoped WHERE truth IS NOT NULL AND score IS NOT NULL
            )
            SELECT version, variant, w,
                sum(CASE WHEN pos THEN r + (ties - 1) / 2.0 ELSE 0 END) AS rank_sum,
                sum(CASE WHEN pos THEN 1 ELSE 0 END) AS npos,
                sum(CASE WHEN pos THEN 0 ELSE 1 END) AS nneg
            FROM ranked GROUP BY ALL
            """,
            [positive],
        ).fetchall()
        out = {}
        for version, variant, w, rank_sum, npos, nneg in rows:
            if npos and nneg:
                out[(version, variant, self.period.window_start(int(w)))] = float(
                    (rank_sum - npos * (npos + 1) / 2) / (npos * nneg)
                )
        return out

    def errors(self) -> list[dict[str, Any]]:
        """Refused and failed requests per version, variant, window and status."""
        files = self.reader.error_files(days=self.days)
        conn = self.reader.connect()
        try:
            conn.execute("SET TimeZone = 'UTC'")
            if not self.reader.relation(conn, files, "errors"):
                return []
            rows = conn.execute(
                f"""
                SELECT version, variant, status,
                    CAST(floor((epoch(ts) - epoch(?::TIMESTAMPTZ)) / {self.period.seconds}) AS BIGINT) AS w,
                    count(*) AS n
                FROM errors WHERE model = ? AND ts >= ? AND ts < ? GROUP BY ALL ORDER BY w
                """,
                [self.period.start, self.model, self.period.start, self.period.end],
            ).fetchall()
        finally:
            conn.close()
        return [
            {
                "version": v,
                "variant": r,
                "status": s,
                "window_start": self.period.window_start(int(w)),
                "count": n,
            }
            for v, r, s, w, n in rows
        ]

    def schema_violations(self) -> dict[str, int]:
        """How often each field was named in refused requests (422s) over the period."""
        files = self.reader.error_files(days=self.days)
        conn = self.reader.connect()
        try:
            if not self.reader.relation(conn, files, "errors"):
                return {}
            rows = conn.execute(
                "SELECT f, count(*) FROM (SELECT unnest(fields) AS f FROM errors "
                "WHERE model = ? AND status = 422 AND ts >= ? AND ts < ?) GROUP BY f ORDER BY 2 DESC",
                [self.model, self.period.start, self.period.end],
            ).fetchall()
        finally:
            conn.close()
        return {f: int(n) for f, n in rows}

    def sample(
        self, version: int, *, labelled_only: bool = False, limit: int = SAMPLE_ROWS
    ) -> pa.Table:
        """Up to `limit` rows of one version (uniform sample): ts, score, label, value,
        probabilities, truth, features."""
        conn, has_predictions, _ = self._connect()
        try:
            if not has_predictions:
                return pa.table({})
            where, params = self._where()
            labelled = " AND t.truth IS NOT NULL" if labelled_only else ""
            query = (
                f"SELECT p.ts, p.score, p.label, p.value, p.probabilities, t.truth, p.features "
                f"FROM predictions p "
                f"LEFT JOIN truth t USING (prediction_id) "
                f"WHERE {where} AND p.version = ? AND p.variant <> 'shadow'{labelled}"
            )
            total = conn.execute(f"SELECT count(*) FROM ({query})", [*params, version]).fetchall()[
                0
            ]
            if total and total[0] > limit:
                # a query's own USING SAMPLE draws before its WHERE: sample the matching rows
                query = (
                    f"SELECT * FROM ({query}) USING SAMPLE reservoir({limit} ROWS) REPEATABLE (7)"
                )
            return conn.sql(
                f"SELECT * FROM ({query}) ORDER BY ts", params=[*params, version]
            ).to_arrow_table()
        finally:
            conn.close()

    def first(self, version: int, limit: int) -> pa.Table:
        """The time and features of the first `limit` rows one version answered in the period
        (its shadow's excluded), in time order."""
        conn, has_predictions, _ = self._connect()
        try:
            if not has_predictions:
                return pa.table({})
            where, params = self._where()
            return conn.sql(
                f"SELECT p.ts, p.features FROM predictions p WHERE {where} AND p.version = ? "
                "AND p.variant <> 'shadow' ORDER BY p.ts, p.prediction_id LIMIT ?",
                params=[*params, version, limit],
            ).to_arrow_table()
        finally:
            conn.close()

    def segments(self, version: int, feature: str, positive: str | None) -> list[dict[str, Any]]:
        """Labelled quality per value of a categorical feature (for root causes): accuracy and
        the positive class's recall, and the mean absolute error where predictions are
        values (a regressor's)."""
        conn, has_predictions, has_labels = self._connect()
        try:
            if not (has_predictions and has_labels):
                return []
            where, params = self._where()
            quoted = '"' + feature.replace('"', '""') + '"'
            rows = conn.execute(
                f"""
                SELECT CAST(p.features.{quoted} AS VARCHAR) AS segment, count(*) AS labelled,
                    avg(CASE WHEN p.label = t.truth THEN 1.0 ELSE 0.0 END) AS accuracy,
                    sum(CASE WHEN t.truth = ? AND p.label = ? THEN 1 ELSE 0 END) AS tp,
                    sum(CASE WHEN t.truth = ? THEN 1 ELSE 0 END) AS positives,
                    avg(abs(p.value - TRY_CAST(t.truth AS DOUBLE))) AS mae
                FROM predictions p JOIN truth t USING (prediction_id)
                WHERE {where} AND p.version = ? AND p.variant <> 'shadow'
                GROUP BY ALL ORDER BY labelled DESC LIMIT 200
                """,
                [positive, positive, positive, *params, version],
            ).fetchall()
        finally:
            conn.close()
        return [
            {
                "segment": s,
                "labelled": int(n),
                "accuracy": float(acc),
                "recall": (tp / positives) if positives else None,
                "mae": float(mae) if mae is not None else None,
            }
            for s, n, acc, tp, positives, mae in rows
        ]

    def outcome_sums(self, version: int, *, regression: bool) -> dict[str, int | float]:
        """One version's labelled outcomes over the period, summed per routing key: what a
        cluster-robust standard error needs (the canary decision compares arms with it).

        The outcome of a prediction is 1.0 when its label equals the truth and 0.0 when not,
        or for a regressor `|value - truth|`, a truth that does not read as a number left out
        and counted in `unparsed`. Predictions without a routing key (unkeyed requests,
        segments written before the column) are a cluster each; shadow copies and pinned
        requests (no routing chose their version) are left out. For clusters j of n_j
        predictions with outcome sum s_j: `clusters`, `count` (sum n_j), `total` (sum s_j),
        `total_sq` (sum of squared outcomes), `cluster_total_sq` (sum s_j^2), `cluster_cross`
        (sum n_j s_j), `cluster_size_sq` (sum n_j^2) and `unparsed`.
        """
        conn, has_predictions, has_labels = self._connect()
        try:
            if not (has_predictions and has_labels):
                return dict.fromkeys(_OUTCOME_SUMS, 0)
            described = conn.execute("SELECT * FROM predictions LIMIT 0").description or []
            key = "p.routing_key" if "routing_key" in {d[0] for d in described} else "NULL"
            outcome = (
                "abs(p.value - TRY_CAST(t.truth AS DOUBLE))"
                if regression
                else "CASE WHEN p.label = t.truth THEN 1.0 ELSE 0.0 END"
            )
            where, params = self._where()
            row = conn.execute(
                f"""
                WITH labelled AS (
                    SELECT coalesce({key}, 'id:' || p.prediction_id) AS cluster, {outcome} AS y
                    FROM predictions p JOIN truth t USING (prediction_id)
                    WHERE {where} AND p.version = ? AND t.truth IS NOT NULL
                        AND p.variant NOT IN ('shadow', 'pinned')
                ), clusters AS (
                    SELECT count(*) AS n, sum(y) AS s, sum(y * y) AS q
                    FROM labelled WHERE y IS NOT NULL GROUP BY cluster
                )
                SELECT count(*), coalesce(sum(n), 0), coalesce(sum(s), 0), coalesce(sum(q), 0),
                    coalesce(sum(s * s), 0), coalesce(sum(n * s), 0), coalesce(sum(n * n), 0),
                    (SELECT count(*) FROM labelled WHERE y IS NULL)
                FROM clusters
                """,
                [*params, version],
            ).fetchone()
        finally:
            conn.close()
        assert row is not None
        return {
            name: (int(value) if name in ("clusters", "count", "unparsed") else float(value))
            for name, value in zip(_OUTCOME_SUMS, row, strict=True)
        }


_OUTCOME_SUMS = (
    "clusters",
    "count",
    "total",
    "total_sq",
    "cluster_total_sq",
    "cluster_cross",
    "cluster_size_sq",
    "unparsed",
)


def _literal(moment: datetime) -> str:
    """A TIMESTAMPTZ literal of an aware datetime."""
    return f"TIMESTAMPTZ '{moment.astimezone(UTC).isoformat()}'"


def _derive(
    row: dict[str, Any], seconds: float, task: str, confusion: dict[tuple[str, str], int]
) -> None:
    """Rates and the task's quality metrics from the counts of one window: binary
    (accuracy, precision, recall, F1, FPR, AUC), multiclass (accuracy, per-class precision and
    recall, macro and weighted F1, the confusion matrix) or regression (MAE, RMSE, R², mean
    residual); the metrics of other tasks are None."""
    row["throughput_per_s"] = row["volume"] / seconds
    labelled = row["labelled"] or 0
    row["label_coverage"] = labelled / row["volume"] if row["volume"] else 0.0
    row["task"] = task
    numeric = row.pop("numeric_labels") or 0
    variance = row.pop("truth_variance")
    if task == "regression":
        for key in ("tp", "fp", "fn", "tn", "correct"):
            row.pop(key)
        row.update(dict.fromkeys(CLASSIFICATION_METRICS))
        row["auc"] = None
        row["unusable_labels"] = labelled - numeric
        mse = row["rmse"] ** 2 if row["rmse"] is not None else None
        row["r2"] = 1 - mse / variance if mse is not None and variance and numeric >= 2 else None
        return
    row["mae"] = row["rmse"] = row["mean_residual"] = row["r2"] = None
    tp, fp, fn, tn = (row.pop(k) or 0 for k in ("tp", "fp", "fn", "tn"))
    correct = row.pop("correct") or 0
    row["accuracy"] = correct / labelled if labelled else None
    if task == "multiclass":
        row.update(multiclass_metrics(confusion))
        return
    row["precision"] = tp / (tp + fp) if tp + fp else None
    row["recall"] = tp / (tp + fn) if tp + fn else None
    p, r = row["precision"], row["recall"]
    row["f1"] = (
        2 * p * r / (p + r) if p and r else (0.0 if p is not None and r is not None else None)
    )
    row["false_positive_rate"] = fp / (fp + tn) if fp + tn else None
    row["confusion"] = {"tp": int(tp), "fp": int(fp), "fn": int(fn), "tn": int(tn)}


def numpy_column(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table.column(name).to_numpy(zero_copy_only=False))


def multiclass_metrics(confusion: Mapping[tuple[str, str], int]) -> dict[str, Any]:
    """Per-class precision, recall and F1, their macro and support-weighted means, and the
    confusion matrix, from counts by (true class, predicted class). A class counts when it
    was true or predicted at least once (scikit-learn's convention); a precision or recall
    with nothing to divide by is 0 in the means, as scikit-learn's `zero_division=0`."""
    classes = sorted({c for pair in confusion for c in pair}, key=_class_order)
    if not classes:
        return {
            "precision": None, "recall": None, "f1": None, "false_positive_rate": None,
            "macro_precision": None, "macro_recall": None, "macro_f1": None, "weighted_f1": None,
            "per_class": [], "confusion": {"classes": [], "matrix": []},
        }  # fmt: skip
    matrix = [[confusion.get((t, p), 0) for p in classes] for t in classes]
    total = sum(map(sum, matrix))
    per_class: list[dict[str, Any]] = []
    for i, name in enumerate(classes):
        hit = matrix[i][i]
        support = sum(matrix[i])
        predicted = sum(row[i] for row in matrix)
        precision = hit / predicted if predicted else 0.0
        recall = hit / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class.append({"class": name, "support": support, "predicted": predicted,
                          "precision": precision, "recall": recall, "f1": f1})  # fmt: skip
    count = len(per_class)
    return {
        # one positive class does not exist: the binary metrics stay empty
        "precision": None,
        "recall": None,
        "f1": None,
        "false_positive_rate": None,
        "macro_precision": sum(c["precision"] for c in per_class) / count,
        "macro_recall": sum(c["recall"] for c in per_class) / count,
        "macro_f1": sum(c["f1"] for c in per_class) / count,
        "weighted_f1": sum(c["f1"] * c["support"] for c in per_class) / total if total else None,
        "per_class": per_class,
        "confusion": {"classes": classes, "matrix": matrix},
    }


def _class_order(name: str) -> tuple[int, float, str]:
    """Numeric class names in numeric order (2 before 10), then the others as text."""
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)
