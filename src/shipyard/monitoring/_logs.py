"""Queries over the prediction, label and error logs: DuckDB, out of core.

Aggregates (volume, latency percentiles, confusion counts, ROC AUC by ranks) run as SQL over
the Parquet segments, so memory does not grow with the log. Where a computation needs rows in
Python (drift tests, calibration, sequential detectors), it gets a uniform random sample of
bounded size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from shipyard.logstore import LogReader

__all__ = ["LogQueries", "Period", "days_between"]

SAMPLE_ROWS = 200_000


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
        has_labels = self.reader.relation(conn, label_files, "labels")
        if has_labels:
            conn.execute(
                "CREATE TEMP VIEW truth AS SELECT prediction_id, arg_max(label, received_at) AS truth "
                "FROM labels GROUP BY prediction_id"
            )
        else:
            conn.execute(
                "CREATE TEMP VIEW truth AS SELECT NULL::VARCHAR AS prediction_id, NULL::VARCHAR AS truth WHERE false"
            )
        return conn, has_predictions, has_labels

    def _where(self) -> tuple[str, list[Any]]:
        return "ts >= ? AND ts < ?", [self.period.start, self.period.end]

    def windows(self, positive: str | None) -> list[dict[str, Any]]:
        """Per version, variant and window: traffic, latency, scores and, with labels, quality."""
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
                    avg(abs(value - TRY_CAST(truth AS DOUBLE))) AS mae,
                    sqrt(avg(power(value - TRY_CAST(truth AS DOUBLE), 2))) AS rmse
                FROM scoped GROUP BY ALL ORDER BY version, variant, w
                """,
                {"pos": positive},
            ).fetchall()
            columns = [d[0] for d in conn.description or []]
            out = [dict(zip(columns, r, strict=True)) for r in rows]
            aucs = self._aucs(conn, positive) if positive is not None else {}
        finally:
            conn.close()
        for row in out:
            row["window_start"] = self.period.window_start(int(row.pop("w")))
            # one quantile list per column: each quantile_cont call would hold its own copy of
            # the window's values
            latency = row.pop("latency_quantiles") or [None] * 3
            row["latency_p50"], row["latency_p95"], row["latency_p99"] = latency
            row["score_p50"], row["score_p90"] = row.pop("score_quantiles") or [None] * 2
            row["auc"] = aucs.get((row["version"], row["variant"], row["window_start"]))
            _derive(row, self.period.seconds)
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
        """Up to `limit` rows of one version (uniform sample): ts, score, label, truth, features."""
        conn, has_predictions, _ = self._connect()
        try:
            if not has_predictions:
                return pa.table({})
            where, params = self._where()
            labelled = " AND t.truth IS NOT NULL" if labelled_only else ""
            query = (
                f"SELECT p.ts, p.score, p.label, t.truth, p.features FROM predictions p "
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

    def segments(self, version: int, feature: str, positive: str | None) -> list[dict[str, Any]]:
        """Labelled quality per value of a categorical feature (for root causes)."""
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
                    sum(CASE WHEN t.truth = ? THEN 1 ELSE 0 END) AS positives
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
            }
            for s, n, acc, tp, positives in rows
        ]


def _literal(moment: datetime) -> str:
    """A TIMESTAMPTZ literal of an aware datetime."""
    return f"TIMESTAMPTZ '{moment.astimezone(UTC).isoformat()}'"


def _derive(row: dict[str, Any], seconds: float) -> None:
    """Rates and classification metrics from the counts of one window."""
    row["throughput_per_s"] = row["volume"] / seconds
    labelled = row["labelled"] or 0
    row["label_coverage"] = labelled / row["volume"] if row["volume"] else 0.0
    tp, fp, fn, tn = (row.pop(k) or 0 for k in ("tp", "fp", "fn", "tn"))
    correct = row.pop("correct") or 0
    row["accuracy"] = correct / labelled if labelled else None
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
