"""The feature store: definitions applied as versions, point-in-time training sets,
materialization into an online store, and online reads that honour each view's TTL."""

from __future__ import annotations

import io
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypedDict

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from shipyard.core import Settings
from shipyard.core.errors import InvalidInput, NotFound
from shipyard.core.tables import read_table_file
from shipyard.core.values import jsonable
from shipyard.features import _repository as repo
from shipyard.features._definitions import (
    Definitions,
    FeatureView,
    FileSource,
    LogSource,
    SqlSource,
    parse_refs,
    view_from_spec,
)
from shipyard.features._materialize import (
    aggregation_rows,
    check_source,
    latest,
    layout_of,
    layout_record,
    read_from,
    snapshot_rows,
    ts_literal,
)
from shipyard.features._offline import (
    Selection,
    TrainingSet,
    point_in_time,
    source_select,
)
from shipyard.features._online import Layout, OnlineStore, RedisStore, SqliteStore
from shipyard.features._repository import MaterializationRun, StoredView
from shipyard.features._sources import SourceReader, connect, one
from shipyard.logstore import LogReader
from shipyard.monitoring import compare
from shipyard.registry import Registry, served_feature_refs
from shipyard.store import record_audit

__all__ = ["Change", "FeatureStore", "OnlineResult"]

PROFILE_ROWS = 20_000
"""Rows of each materialization compared with the view's reference for drift."""
_VIEW_VERSION = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:@v?(\d+))?$")


class Change(TypedDict):
    """What `apply` did (or `plan` would do) to one view."""

    view: str
    action: Literal["create", "update", "describe", "unchanged"]
    """`describe`: only its owner, descriptions or tags changed, stored in place (values,
    and so the version's materialized data, stay the same)."""
    version: int
    diff: list[str]


@dataclass
class OnlineResult:
    """Features of each entity row, as of now.

    `values[i]` maps each feature's output name to its value (None when missing or stale);
    `status[i]` maps each view to ok, missing (never materialized for this entity) or stale
    (older than the view's TTL); `event_times[i]` gives each view's value time.
    """

    values: list[dict[str, Any]]
    status: list[dict[str, str]]
    event_times: list[dict[str, datetime | None]]
    views: dict[str, int]
    missing: dict[str, int] = field(default_factory=dict)
    stale: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Plan:
    """What reading a list of feature references needs, resolved once and cached."""

    selections: tuple[Selection, ...]
    layouts: tuple[Layout | None, ...]
    names: tuple[tuple[str, ...], ...]
    at: float
    # per selection, its serving policy, the view's latest version's whichever version the
    # values come from: on_missing and each selected feature's default
    policies: tuple[tuple[str, tuple[Any, ...]], ...] = ()


def spec_diff(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """What changed between two specs, one line each (`features.amount.dtype: int -> float`)."""
    lines = []
    for key in sorted({*old, *new}):
        a, b = old.get(key), new.get(key)
        where = f"{prefix}{key}"
        if a == b:
            continue
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            lines += spec_diff(a, b, f"{where}.")
        elif (
            isinstance(a, list)
            and isinstance(b, list)
            and all(isinstance(x, Mapping) and "name" in x for x in [*a, *b])
        ):
            before = {x["name"]: x for x in a}
            after = {x["name"]: x for x in b}
            for name in sorted({*before, *after}):
                if name not in before:
                    lines.append(f"+ {where}.{name}")
                elif name not in after:
                    lines.append(f"- {where}.{name}")
                else:
                    lines += spec_diff(before[name], after[name], f"{where}.{name}.")
        else:
            lines.append(f"{where}: {a!r} -> {b!r}")
    return lines


class FeatureStore:
    """Feature views of one shipyard installation.

    Args:
        registry: the metadata database, the artifact store (prediction logs) and the actor.
        settings: where the SQLite online store lives, Redis, how often cached plans refresh
            (default: the environment's; a store used offline only never opens them).
        online: the online store (default: Redis when `SHIPYARD_REDIS_URL` is set and
            `SHIPYARD_ONLINE_STORE` is not `sqlite`, else SQLite at <home>/online.sqlite).
        clock: what time it is (TTL checks, materialization bounds).
    """

    def __init__(
        self,
        registry: Registry,
        settings: Settings | None = None,
        *,
        online: OnlineStore | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.registry = registry
        self.settings = settings or Settings()
        self.clock = clock or (lambda: datetime.now(UTC))
        self._online = online
        self._plans: dict[tuple[tuple[str, ...], bool], _Plan] = {}
        self._guard = threading.Lock()

    @property
    def online(self) -> OnlineStore:
        if self._online is None:
            with self._guard:
                if self._online is None:
                    self._online = open_online_store(self.settings)
        return self._online

    def close(self) -> None:
        if self._online is not None:
            self._online.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- definitions ----------------------------------------------------------------------------

    def plan(self, definitions: Definitions) -> list[Change]:
        """What `apply` would do: per view, create, update (with the diff) or unchanged."""
        changes: list[Change] = []
        with self.registry.database.transaction() as conn:
            for view in definitions.views:
                stored = repo.view(conn, view.name)
                spec = view.spec()
                if stored is None:
                    changes.append({"view": view.name, "action": "create", "version": 1,
                                    "diff": [f"+ {view.name}"]})  # fmt: skip
                elif stored["fingerprint"] == view.fingerprint():
                    diff = spec_diff(stored["spec"], spec)  # descriptions, owner, tags only
                    changes.append({"view": view.name, "action": "describe" if diff else "unchanged",
                                    "version": stored["version"], "diff": diff})  # fmt: skip
                else:
                    changes.append({"view": view.name, "action": "update",
                                    "version": stored["version"] + 1,
                                    "diff": spec_diff(stored["spec"], spec)})  # fmt: skip
        return changes

    def apply(self, definitions: Definitions, *, check_sources: bool = True) -> list[Change]:
        """Store every new or changed view as its next version (the old ones stay readable).

        With `check_sources`, each changed view's source is read first: its declared columns,
        rows without a timestamp, and entities with two rows at the same time (without a
        created timestamp to tell which is newer) are refused before anything is stored.
        """
        changes = self.plan(definitions)
        by_name = {v.name: v for v in definitions.views}
        if check_sources:
            with self._duckdb() as reader:
                for change in changes:
                    if change["action"] != "unchanged":
                        check_source(reader, by_name[change["view"]])
        with self.registry.database.transaction() as conn:
            for change in changes:
                if change["action"] == "unchanged":
                    continue
                view = by_name[change["view"]]
                stored = repo.view(conn, view.name)
                if change["action"] == "describe" and stored is not None:
                    repo.describe_view(conn, view.name, stored["version"], view.spec())
                    record_audit(
                        conn, self.registry.actor, "features.describe", None, None,
                        {"view": view.name, "version": stored["version"], "diff": change["diff"][:50]},
                    )  # fmt: skip
                    continue
                if stored is not None and stored["fingerprint"] == view.fingerprint():
                    change["action"], change["version"] = "unchanged", stored["version"]
                    continue  # applied meanwhile by someone else
                change["version"] = repo.add_view(
                    conn, view.name, view.spec(), view.fingerprint(), definitions.origin,
                    self.registry.actor,
                )  # fmt: skip
                record_audit(
                    conn, self.registry.actor, "features.apply", None, None,
                    {"view": view.name, "version": change["version"], "action": change["action"],
                     "diff": change["diff"][:50]},
                )  # fmt: skip
        self._plans.clear()
        return changes

    def views(self) -> list[StoredView]:
        """The latest version of every view."""
        return self.registry.database.read(repo.latest_views)

    def view(self, name: str, version: int | None = None) -> StoredView:
        found = self.registry.database.read(lambda conn: repo.view(conn, name, version))
        if found is None:
            raise self._not_found(name, version)
        return found

    def versions(self, name: str) -> list[StoredView]:
        found = self.registry.database.read(lambda conn: repo.view_versions(conn, name))
        if not found:
            raise self._not_found(name, None)
        return found

    def diff(self, name: str, a: int, b: int | None = None) -> list[str]:
        """What changed in `name` from version `a` to `b` (default: the latest)."""
        return spec_diff(self.view(name, a)["spec"], self.view(name, b)["spec"])

    def runs(self, name: str, limit: int = 20) -> list[MaterializationRun]:
        self.view(name)
        return self.registry.database.read(lambda conn: repo.runs(conn, name, limit))

    def _not_found(self, name: str, version: int | None) -> NotFound:
        known = [v["name"] for v in self.views()]
        if version is not None and name in known:
            return NotFound(
                f"feature view {name!r} has no version {version} (shipyard features show {name})"
            )
        hint = f"views: {', '.join(known[:20])}" if known else "none is applied yet"
        return NotFound(f"no feature view named {name!r}; {hint} (shipyard features apply PATH)")

    def selections(self, refs: Sequence[str], *, transforms: bool = True) -> list[Selection]:
        """`view:feature` references resolved to view versions (the latest unless pinned);
        without `transforms`, for online reads (the sources' transforms are not loaded)."""
        grouped: dict[tuple[str, int | None], list[str]] = {}
        for view, version, feature in parse_refs(refs):
            grouped.setdefault((view, version), [])
            if feature not in grouped[(view, version)]:
                grouped[(view, version)].append(feature)
        out = []
        for (name, version), wanted in grouped.items():
            stored = self.view(name, version)
            found = view_from_spec(stored["spec"], transform=transforms)
            known = [f.name for f in found.all_features]
            if "*" in wanted:
                wanted = known
            unknown = [f for f in wanted if f not in known]
            if unknown:
                raise InvalidInput(
                    f"feature view {name!r} (version {stored['version']}) has no feature "
                    f"{', '.join(unknown)}; it has {', '.join(known)}"
                )
            out.append(Selection(found, stored["version"], tuple(wanted)))
        return out

    # -- training sets --------------------------------------------------------------------------

    def training_set(
        self,
        entities: pd.DataFrame | pa.Table | str | Path,
        features: Sequence[str],
        *,
        timestamp_column: str = "event_timestamp",
        full_names: bool = False,
        out: str | Path | None = None,
        memory_limit: str | None = None,
    ) -> TrainingSet:
        """Point-in-time correct features for every entity row (join keys and an event time):
        each view's newest value at or before the row's time and inside its TTL, or its
        aggregations over the window ending then. Every row comes back once, in order; rows
        without a value get nulls, counted per view in `nulls`.

        `out` writes Parquet instead of returning a table; `memory_limit` (e.g. "2GB") caps
        DuckDB's memory, past which it spills to disk.
        """
        started = time.perf_counter()
        selections = self.selections(features)
        table = _entity_table(entities)
        with self._duckdb(memory_limit) as reader:
            result = point_in_time(
                reader, table, selections, timestamp_column=timestamp_column,
                full_names=full_names, out=Path(out) if out is not None else None,
            )  # fmt: skip
        result.seconds = time.perf_counter() - started
        return result

    @contextmanager
    def _duckdb(self, memory_limit: str | None = None) -> Iterator[SourceReader]:
        workdir = Path(tempfile.mkdtemp(prefix="shipyard-features-"))
        conn = connect(workdir, memory_limit)
        try:
            yield SourceReader(conn, workdir, self._log_table)
        finally:
            conn.close()
            shutil.rmtree(workdir, ignore_errors=True)

    def _log_table(self, model: str) -> pa.Table:
        return LogReader(self.registry.artifacts).predictions(model)

    # -- materialization ------------------------------------------------------------------------

    def materialize(
        self,
        views: Sequence[str] | None = None,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        full: bool = False,
        memory_limit: str | None = None,
        progress: Callable[[str, int], None] | None = None,
    ) -> list[MaterializationRun]:
        """Bring the online store up to date with each view's source (every view by default).

        Incremental by default: a file source's files already read (unchanged since) are
        skipped, other sources are read from the last run's watermark on; aggregations are
        recomputed as of `end` (default now) for the entities whose windows changed. `full`
        reads everything again; `start`/`end` bound the event times read (a backfill).
        Writes never replace a newer value with an older one, so re-running is harmless.
        """
        end = (end or self.clock()).astimezone(UTC)
        if start is not None and start.astimezone(UTC) >= end:
            raise InvalidInput("materialize --start must be before --end")
        targets = self._targets(views)
        done = []
        with self._duckdb(memory_limit) as reader:  # one engine for every view of the call
            for name, version in targets:
                stored = self.view(name, version)
                view = view_from_spec(stored["spec"])
                done.append(
                    self._materialize(reader, view, stored["version"], start, end, full, progress)
                )
        self._plans.clear()
        return done

    def served_versions(self) -> dict[str, dict[int, list[str]]]:
        """The view versions that the model versions served now were trained on, with those
        model versions: `{view: {version: ["fraud-detector:3", ...]}}`. A served model reads
        the version it was trained on, so `materialize` keeps each of these up to date."""
        found: dict[str, dict[int, list[str]]] = {}
        for model, deployment in sorted(self.registry.serving_plan().items()):
            for number in deployment.versions:
                lineage = self.registry.get_version(model, number).lineage
                for ref in served_feature_refs(lineage):
                    try:
                        ((view, version, _),) = parse_refs([ref])
                    except InvalidInput:  # a lineage given by hand may hold anything
                        continue
                    if version is None:  # an unpinned `view:feature` is served the latest
                        continue
                    users = found.setdefault(view, {}).setdefault(version, [])
                    if f"{model}:{number}" not in users:
                        users.append(f"{model}:{number}")
        return found

    def _targets(self, views: Sequence[str] | None) -> list[tuple[str, int]]:
        """The view versions one materialization writes: each named view's latest version
        (every view's by default; `view@N` names one version), then the older versions that
        served models were trained on."""
        latest_versions = {v["name"]: v["version"] for v in self.views()}
        if not latest_versions:
            raise InvalidInput("no feature view is applied yet (shipyard features apply PATH)")
        served = self.served_versions()
        targets: list[tuple[str, int]] = []
        for item in views or list(latest_versions):
            match = _VIEW_VERSION.match(item.strip())
            if match is None:
                raise InvalidInput(f"{item!r} is not a view name (or view@VERSION)")
            name, number = match.group(1), match.group(2)
            if number is not None:
                targets.append((name, self.view(name, int(number))["version"]))
                continue
            if name not in latest_versions:
                raise self._not_found(name, None)
            targets.append((name, latest_versions[name]))
            targets += [(name, v) for v in sorted(served.get(name, {}), reverse=True)]
        return list(dict.fromkeys(targets))

    def _materialize(
        self,
        reader: SourceReader,
        view: FeatureView,
        version: int,
        start: datetime | None,
        end: datetime,
        full: bool,
        progress: Callable[[str, int], None] | None,
    ) -> MaterializationRun:
        started = self.clock()
        store = self.online
        last = self._last_run(view.name, version, store.kind)
        ranged = start is not None
        mode = "full" if full or last is None else "range" if ranged else "incremental"
        watched = not view.aggregations and isinstance(view.source, SqlSource | LogSource)
        late = 0
        if watched and mode == "incremental" and last is not None and last["watermark"] is not None:
            known = (last["source_state"] or {}).get("before_watermark")
            before = reader.count_before(view, last["watermark"])
            if known is not None and before > known:
                # rows arrived older than the watermark: read everything again, lose none
                late, mode = before - known, "full"
        skip = last["files"] if mode == "incremental" and last and not view.aggregations else None
        relation = reader.relation(
            view, skip_files=skip, since=read_from(view, mode, last, start, end)
        )
        layout = layout_of(view, version, relation)
        conn = reader.conn
        conn.execute(f"CREATE OR REPLACE TEMP VIEW src AS {source_select(view, relation)}")
        if view.aggregations:
            where, query = aggregation_rows(view, last, end, full=mode != "incremental")
        else:
            lower = start if ranged else None
            if (
                mode == "incremental"
                and last is not None
                and not isinstance(view.source, FileSource)
            ):
                lower = last["watermark"]
            where, query = snapshot_rows(view, lower, end)
        # one pass: the rows this run reads, the newest of them, and rows after `end`
        counted = one(
            conn,
            f"SELECT count(*) FILTER (WHERE {where}), max(__ts) FILTER (WHERE {where}), "
            f"count(*) FILTER (WHERE __ts > {ts_literal(end)}) FROM src",
        )
        rows_read, newest, later = int(counted[0]), counted[1], int(counted[2])
        watermark = (
            end if view.aggregations else latest(last["watermark"] if last else None, newest)
        )
        written = 0
        sample: list[pa.Table] = []
        reader_of_rows = conn.sql(query).to_arrow_reader(50_000)
        assert reader_of_rows is not None  # a SELECT has a result
        for batch in reader_of_rows:
            rows = pa.Table.from_batches([batch])
            written += store.write(layout, rows)
            if sum(t.num_rows for t in sample) < PROFILE_ROWS:
                sample.append(rows.select([f.name for f in view.all_features]))
            if progress is not None:
                progress(view.name, written)
        profile = self._profile(view, version, sample, last)
        # an aggregation's values hold as of `end` (its windows end there), events or not
        newest_event = (
            end if view.aggregations else latest(newest, last["newest_event"] if last else None)
        )
        files = dict(last["files"] or {}) if last and mode == "incremental" else {}
        # a file counts as read only when all its rows were: a backfill's bounds, or rows
        # after `end`, leave it to be read again
        if mode != "range" and not view.aggregations and not later:
            files.update(relation.files)
        source_state = None
        if watched and watermark is not None:
            source_state = {
                "before_watermark": reader.count_before(view, watermark),
                "late_rows": late,
            }
        finished = self.clock()
        with self.registry.database.transaction() as db:
            run_id = repo.add_run(
                db, view=view.name, version=version, store=store.kind, mode=mode,
                start=start, end=end, watermark=watermark, rows_read=rows_read,
                entities_written=written, newest_event=newest_event, profile=profile,
                files=files or None, layout=layout_record(layout), source_state=source_state,
                started_at=started,
                finished_at=finished,
                created_by=self.registry.actor,
            )  # fmt: skip
            record_audit(
                db, self.registry.actor, "features.materialize", None, None,
                {"view": view.name, "version": version, "store": store.kind, "mode": mode,
                 "rows_read": rows_read, "entities_written": written, "late_rows": late},
            )  # fmt: skip
        return {
            "id": run_id, "view": view.name, "version": version, "store": store.kind,
            "mode": mode, "start": start, "end": end, "watermark": watermark,
            "rows_read": rows_read, "entities_written": written, "newest_event": newest_event,
            "profile": profile, "files": files or None, "layout": layout_record(layout),
            "source_state": source_state,
            "started_at": started,
            "finished_at": finished, "created_by": self.registry.actor,
        }  # fmt: skip

    def _profile(
        self,
        view: FeatureView,
        version: int,
        sample: list[pa.Table],
        last: MaterializationRun | None,
    ) -> dict[str, Any] | None:
        """The values this run wrote against the view version's reference (the first run's
        values, kept in the artifact store): drift at the store, before a model scores it."""
        if not sample:
            return dict(last["profile"] or {}) if last and last["profile"] else None
        values = pa.concat_tables(sample).slice(0, PROFILE_ROWS)
        nulls = {
            name: values.column(name).null_count / max(values.num_rows, 1)
            for name in values.column_names
        }
        reference = (last["profile"] or {}).get("reference") if last is not None else None
        if reference is None:
            buffer = io.BytesIO()
            pq.write_table(values, buffer)
            stored = self.registry.artifacts.write_bytes(
                f"features/{view.name}/v{version}/reference.parquet", buffer.getvalue()
            )
            reference = {"path": stored.path, "sha256": stored.sha256, "rows": values.num_rows}
            return {"rows": values.num_rows, "null_rate": nulls, "reference": reference,
                    "drift_share": 0.0, "drifted": [], "columns": {}}  # fmt: skip
        raw = self.registry.artifacts.read_bytes(reference["path"], reference["sha256"])
        report = compare(pq.read_table(io.BytesIO(raw)), values)
        return {
            "rows": values.num_rows, "null_rate": nulls, "reference": reference,
            "drift_share": report.drift_share, "drifted": report.drifted,
            "columns": {name: {"status": c.status, "method": c.method, "effect": c.effect,
                               "effect_size": jsonable(c.effect_size), "reason": c.reason}
                        for name, c in report.columns.items()},
        }  # fmt: skip

    # -- online reads ---------------------------------------------------------------------------

    def get_online(
        self,
        entity_rows: Sequence[Mapping[str, Any]],
        features: Sequence[str],
        *,
        full_names: bool = False,
    ) -> OnlineResult:
        """The features of each entity row (its join keys) from the online store, as of now:
        a value older than its view's TTL reads as None and is counted as stale."""
        plan = self._plan(tuple(features), full_names)
        now = self.clock().timestamp()
        n = len(entity_rows)
        values: list[dict[str, Any]] = [{} for _ in range(n)]
        status: list[dict[str, str]] = [{} for _ in range(n)]
        times: list[dict[str, datetime | None]] = [{} for _ in range(n)]
        result = OnlineResult(
            values, status, times, {s.view.name: s.version for s in plan.selections}
        )
        for selection, layout, names in zip(plan.selections, plan.layouts, plan.names, strict=True):
            view = selection.view
            keys = [_key_of(view, layout, row, i) for i, row in enumerate(entity_rows)]
            found = (
                self.online.read(layout, keys, selection.features)
                if layout is not None
                else [None] * n
            )
            ttl = view.ttl_length
            limit = ttl.total_seconds() if ttl is not None else None
            # an entity without events in an aggregation's window: counts are 0, as offline
            counts = {
                a.feature for a in view.aggregations if a.function in ("count", "distinct_count")
            }
            empty = [0 if f in counts else None for f in selection.features]
            missing = stale = 0
            for i, hit in enumerate(found):
                if hit is None:
                    missing += 1
                    status[i][view.name] = "missing"
                    times[i][view.name] = None
                    values[i].update(zip(names, empty, strict=True))
                    continue
                ts, row = hit
                times[i][view.name] = datetime.fromtimestamp(ts, UTC)
                if limit is not None and now - ts > limit:
                    stale += 1
                    status[i][view.name] = "stale"
                    values[i].update(dict.fromkeys(names))
                else:
                    status[i][view.name] = "ok"
                    values[i].update(zip(names, row, strict=True))
            result.missing[view.name] = missing
            result.stale[view.name] = stale
        return result

    def serve(
        self, records: Sequence[Mapping[str, Any]], features: Sequence[str]
    ) -> list[dict[str, Any]]:
        """`records` (entity keys and request-time fields) with `features` filled in from the
        online store, for a model to score: the store's values replace any the caller sent; a
        missing or stale value follows its view's `on_missing` (null, the feature's default,
        or refuse the request naming the feature and the row).

        A pinned reference (`view@1:feature`, as a model's lineage gives it) reads that
        version's values; the policy is the view's latest, so an operator's change of policy
        reaches every served model at once."""
        plan = self._plan(tuple(features), False)
        result = self.get_online(records, features)
        refused: list[str] = []
        merged = []
        for i, record in enumerate(records):
            values = result.values[i]
            for selection, names, (on_missing, defaults) in zip(
                plan.selections, plan.names, plan.policies, strict=True
            ):
                view = selection.view
                state = result.status[i][view.name]
                if state == "ok" or on_missing == "null":
                    continue
                if on_missing == "reject":
                    keys = ", ".join(f"{k}={record.get(k)!r}" for k in view.join_keys)
                    refused.append(f"row {i} ({keys}): {', '.join(names)} {state}")
                    continue
                for name, default in zip(names, defaults, strict=True):
                    if values[name] is None:
                        values[name] = default
            merged.append({**record, **values})
        if refused:
            shown = "; ".join(refused[:10]) + (
                f"; and {len(refused) - 10} more" if len(refused) > 10 else ""
            )
            raise InvalidInput(
                f"the feature store has no fresh value for {shown}; these views refuse "
                "predictions without them (on_missing='reject'): materialize them, or send "
                "other entities"
            )
        return merged

    def _last_run(self, view: str, version: int, store: str) -> MaterializationRun | None:
        return self.registry.database.read(lambda conn: repo.last_run(conn, view, version, store))

    def _plan(self, features: tuple[str, ...], full_names: bool) -> _Plan:
        key = (features, full_names)
        plan = self._plans.get(key)
        if plan is not None and time.monotonic() - plan.at < max(
            self.settings.refresh_seconds, 0.5
        ):
            return plan
        selections = self.selections(features, transforms=False)
        store = self.online
        layouts = []
        names = []
        policies = []
        newest = {v["name"]: v for v in self.views()}
        taken: set[str] = set()
        for selection in selections:
            latest_view = newest[selection.view.name]
            policy = (
                selection.view
                if latest_view["version"] == selection.version
                else view_from_spec(latest_view["spec"], transform=False)
            )
            defaults = {f.name: f.default for f in selection.view.all_features}
            defaults.update((f.name, f.default) for f in policy.all_features)
            policies.append((policy.on_missing, tuple(defaults[f] for f in selection.features)))
            run = self._last_run(selection.view.name, selection.version, store.kind)
            layouts.append(_stored_layout(selection.view, selection.version, run))
            mine = []
            for feature in selection.features:
                name = f"{selection.view.name}__{feature}" if full_names else feature
                if name in taken:
                    raise InvalidInput(
                        f"two views serve a feature named {feature!r}; ask for full names "
                        "(full_names=True: view__feature)"
                    )
                taken.add(name)
                mine.append(name)
            names.append(tuple(mine))
        plan = _Plan(
            tuple(selections), tuple(layouts), tuple(names), time.monotonic(), tuple(policies)
        )
        if len(self._plans) > 1000:
            self._plans.clear()
        self._plans[key] = plan
        return plan


# -- helpers --------------------------------------------------------------------------------------


def open_online_store(settings: Settings) -> OnlineStore:
    choice = settings.online_store
    if choice == "redis" or (choice == "auto" and settings.redis_url):
        if not settings.redis_url:
            raise InvalidInput("SHIPYARD_ONLINE_STORE=redis needs SHIPYARD_REDIS_URL")
        return RedisStore(settings.redis_url)
    return SqliteStore(settings.home / "online.sqlite")


def _entity_table(entities: pd.DataFrame | pa.Table | str | Path) -> pa.Table:
    if isinstance(entities, pa.Table):
        return entities
    if isinstance(entities, pd.DataFrame):
        return pa.Table.from_pandas(entities, preserve_index=False)
    if isinstance(entities, str | Path):
        path = Path(entities)
        kind = "csv" if path.suffix.lower() == ".csv" else "parquet"
        return pa.Table.from_pandas(read_table_file(path, kind), preserve_index=False)
    raise InvalidInput(
        "entity rows must be a pandas DataFrame, an Arrow table or a Parquet/CSV path"
    )


def _stored_layout(
    view: FeatureView, version: int, run: MaterializationRun | None
) -> Layout | None:
    """How the last run laid the view out (None: never materialized into this store)."""
    if run is None or not run["layout"]:
        return None
    integer = tuple(bool(x) for x in run["layout"]["integer_keys"])
    return Layout(view.name, version, view.join_keys, integer, tuple(view.all_features))


_INT64 = (-(2**63), 2**63 - 1)


def _integer_key(value: Any, name: str, index: int) -> int:
    """An integer key as the store holds it: an int, an integral float or digits as text;
    never a bool, a fraction, or a number beyond 64 bits (it names no stored entity)."""
    number: int | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif (isinstance(value, float) and value.is_integer()) or (
        isinstance(value, str) and re.fullmatch(r"\s*-?\d{1,20}\s*", value)
    ):
        number = int(value)
    if number is None or not _INT64[0] <= number <= _INT64[1]:
        raise InvalidInput(
            f"entity row {index}: {name} must be a 64-bit integer, not {str(value)[:40]!r}"
        )
    return number


def _key_of(
    view: FeatureView, layout: Layout | None, row: Mapping[str, Any], index: int
) -> tuple[Any, ...]:
    key = []
    names = layout.keys if layout is not None else view.join_keys
    for position, name in enumerate(names):
        value = row.get(name)
        if value is None:
            raise InvalidInput(
                f"entity row {index} has no {name!r}, the join key of feature view {view.name!r}"
            )
        if layout is None:
            pass
        elif layout.integer_keys[position]:
            value = _integer_key(value, name, index)
        elif not isinstance(value, str | int) or isinstance(value, bool):
            raise InvalidInput(f"entity row {index}: {name} must be text, not {value!r}")
        else:
            value = str(value)  # text keys match as text (42 finds "42")
        key.append(value)
    return tuple(key)
