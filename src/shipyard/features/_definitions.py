"""What a feature is: entities, sources, feature views and their time-window aggregations,
declared once in Python (or `shipyard.yaml`) and stored as a versioned spec.

A view's spec is plain JSON (`spec()`); its fingerprint (SHA-256 of that JSON) decides whether
`apply` makes a new version. A row-level `transform` is stored by reference (module file and
name) with the SHA-256 of its source, so the same code runs offline and online, and a changed
function is a changed definition.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import re
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, get_args

import pandas as pd

from shipyard.core.durations import duration_text, parse_duration
from shipyard.core.errors import InvalidInput, UserCodeFailed

__all__ = [
    "FUNCTIONS",
    "Aggregation",
    "Definitions",
    "Entity",
    "Feature",
    "FeatureView",
    "FileSource",
    "LogSource",
    "Source",
    "SqlSource",
    "load_definitions",
    "parse_refs",
    "view_from_spec",
]

Function = Literal["mean", "sum", "count", "min", "max", "stddev", "last", "distinct_count"]
FUNCTIONS: tuple[str, ...] = get_args(Function)
DType = Literal["float", "int", "string", "bool"]
DTYPES: tuple[str, ...] = get_args(DType)
SQL_TYPES = {"float": "DOUBLE", "int": "BIGINT", "string": "VARCHAR", "bool": "BOOLEAN"}
"""How each feature type is held (DuckDB's names): the same cast offline and online."""
OnMissing = Literal["null", "default", "reject"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
MAX_TTL = timedelta(days=3650)


def _check_name(kind: str, name: object, where: str = "") -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInput(
            f"{kind} name {name!r}{where} is not a valid name: use letters, digits and "
            "underscores, starting with a letter or underscore (at most 63 characters)"
        )
    return name


@dataclass(frozen=True)
class Entity:
    """What features describe (a customer, a merchant), and the columns that identify it."""

    name: str
    join_keys: Sequence[str]
    description: str = ""

    def __post_init__(self) -> None:
        _check_name("entity", self.name)
        keys = [self.join_keys] if isinstance(self.join_keys, str) else list(self.join_keys)
        if not keys:
            raise InvalidInput(f"entity {self.name!r} has no join_keys; name its key column(s)")
        for key in keys:
            _check_name("join key", key, f" of entity {self.name!r}")
        object.__setattr__(self, "join_keys", tuple(keys))

    def spec(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "join_keys": list(self.join_keys),
            "description": self.description,
        }


@dataclass(frozen=True)
class Feature:
    """A column of the view's source served as a feature; `default` is what the `default`
    policy serves when the value is missing or older than the TTL."""

    name: str
    dtype: DType = "float"
    default: float | int | str | bool | None = None
    description: str = ""

    def __post_init__(self) -> None:
        _check_name("feature", self.name)
        if self.dtype not in DTYPES:
            raise InvalidInput(
                f"feature {self.name!r} has dtype {self.dtype!r}; use one of {', '.join(DTYPES)}"
            )

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "default": self.default,
                "description": self.description}  # fmt: skip


@dataclass(frozen=True)
class Aggregation:
    """A time-window aggregation over the view's raw events, point-in-time correct: at time
    t it covers the events of the entity with event time in (t - window, t]."""

    column: str
    function: Function
    window: str
    name: str | None = None
    group_by: Entity | None = None
    default: float | int | str | bool | None = None
    description: str = ""
    dtype: DType | None = None
    """The result's type: int for counts, float otherwise, unless given (the min, max or
    last of a text column is a string)."""

    def __post_init__(self) -> None:
        _check_name("aggregated column", self.column)
        if self.function not in FUNCTIONS:
            raise InvalidInput(
                f"aggregation of {self.column!r} has function {self.function!r}; use one of "
                f"{', '.join(FUNCTIONS)}"
            )
        length = _duration("window", self.window, f"aggregation of {self.column!r}")
        if self.name is None:
            object.__setattr__(
                self, "name", f"{self.column}_{self.function}_{duration_text(length)}"
            )
        _check_name("feature", self.name)
        if self.dtype is None:
            counts = self.function in ("count", "distinct_count")
            object.__setattr__(self, "dtype", "int" if counts else "float")
        elif self.dtype not in DTYPES:
            raise InvalidInput(
                f"aggregation {self.name!r} has dtype {self.dtype!r}; use one of {', '.join(DTYPES)}"
            )

    @property
    def feature(self) -> str:
        assert self.name is not None  # set in __post_init__
        return self.name

    @property
    def length(self) -> timedelta:
        return parse_duration(self.window)

    def spec(self) -> dict[str, Any]:
        return {"name": self.feature, "column": self.column, "function": self.function,
                "window": self.window, "default": self.default, "description": self.description,
                "dtype": self.dtype}  # fmt: skip


def _duration(what: str, value: object, where: str) -> timedelta:
    if isinstance(value, timedelta):
        length = value
    elif isinstance(value, str):
        length = parse_duration(value, f"{what} of {where}")
    else:
        raise InvalidInput(
            f"{what} {value!r} of {where} is not a duration; write it like 30m, 2h, 2d or 4w"
        )
    if not timedelta(0) < length <= MAX_TTL:
        raise InvalidInput(f"{what} of {where} must be longer than 0 and at most ten years")
    return length


# -- sources ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source(ABC):
    """Where a view's rows come from."""

    @abstractmethod
    def spec(self) -> dict[str, Any]:
        """The source as JSON, as a view's stored spec holds it."""


@dataclass(frozen=True)
class FileSource(Source):
    """Parquet or CSV files on any fsspec URL or local path (a folder or a glob reads every
    file in it); the format follows the suffix unless given."""

    path: str
    format: Literal["parquet", "csv"] | None = None

    def __post_init__(self) -> None:
        path = str(self.path)
        object.__setattr__(self, "path", path)
        if self.format is None:
            suffix = path.rstrip("/").rsplit(".", 1)[-1].lower()
            object.__setattr__(self, "format", "csv" if suffix in ("csv", "tsv") else "parquet")
        if self.format not in ("parquet", "csv"):
            raise InvalidInput(f"file source {path!r}: format must be parquet or csv")

    def spec(self) -> dict[str, Any]:
        return {"kind": "file", "path": self.path, "format": self.format}


@dataclass(frozen=True)
class SqlSource(Source):
    """A SQL query through SQLAlchemy (any database it reaches)."""

    query: str
    url: str

    def __post_init__(self) -> None:
        if not self.query.strip():
            raise InvalidInput("SQL source has an empty query")

    def spec(self) -> dict[str, Any]:
        return {"kind": "sql", "query": self.query, "url": self.url}


@dataclass(frozen=True)
class LogSource(Source):
    """The prediction log of a model: each logged request's features, with its time
    (`ts`), as raw events for aggregations or as the latest value per entity."""

    model: str

    def spec(self) -> dict[str, Any]:
        return {"kind": "log", "model": self.model}


def source_from_spec(spec: Mapping[str, Any]) -> Source:
    kind = spec.get("kind")
    if kind == "file":
        return FileSource(spec["path"], spec.get("format"))
    if kind == "sql":
        return SqlSource(spec["query"], spec["url"])
    if kind == "log":
        return LogSource(spec["model"])
    raise InvalidInput(f"unknown source kind {kind!r}; use file, sql or log")


# -- views --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureView:
    """Features of one or more entities from one source, versioned as a whole.

    Either `features` (columns of the source, the newest value per entity at or before a
    time, no older than `ttl`) or `aggregations` (time windows over the source's raw
    events, grouped by the view's entity). `transform(frame) -> frame` runs on the source
    rows first, offline and online alike. `on_missing` says what serving does with a
    missing or stale value: null, the feature's default, or refuse the request (422).
    A SQL `transform` is a DuckDB query over the source rows as the table `source`
    (`SELECT *, amount / 100 AS amount_eur FROM source`).
    """

    name: str
    entities: Sequence[Entity]
    source: Source
    features: Sequence[Feature | str] = ()
    aggregations: Sequence[Aggregation] = ()
    timestamp_field: str = "event_timestamp"
    created_timestamp_field: str | None = None
    ttl: str | timedelta | None = None
    transform: Callable[[pd.DataFrame], pd.DataFrame] | str | None = None
    on_missing: OnMissing = "null"
    owner: str = ""
    description: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f" (view {self.name!r})"
        _check_name("feature view", self.name)
        entities = list(self.entities)
        if not entities or not all(isinstance(e, Entity) for e in entities):
            raise InvalidInput(f"view {self.name!r} needs at least one Entity in `entities`")
        object.__setattr__(self, "entities", tuple(entities))
        if not isinstance(self.source, Source):
            raise InvalidInput(
                f"view {self.name!r}: source must be a FileSource, SqlSource or LogSource"
            )
        features = [Feature(f) if isinstance(f, str) else f for f in self.features]
        object.__setattr__(self, "features", tuple(features))
        object.__setattr__(self, "aggregations", tuple(self.aggregations))
        if bool(features) == bool(self.aggregations):
            raise InvalidInput(
                f"view {self.name!r} needs either `features` (columns of its source) or "
                "`aggregations` (windows over its raw events), not both and not neither"
            )
        if self.aggregations and len(entities) != 1:
            raise InvalidInput(
                f"view {self.name!r}: aggregations group by one entity; split the view per entity"
            )
        for agg in self.aggregations:
            if agg.group_by is not None and agg.group_by != entities[0]:
                raise InvalidInput(
                    f"view {self.name!r}: aggregation {agg.feature!r} groups by "
                    f"{agg.group_by.name!r}, not the view's entity {entities[0].name!r}"
                )
        _check_name("timestamp field", self.timestamp_field, where)
        if self.created_timestamp_field is not None:
            _check_name("created timestamp field", self.created_timestamp_field, where)
        if self.ttl is not None:
            _duration("ttl", self.ttl, f"view {self.name!r}")
            if self.aggregations:
                raise InvalidInput(
                    f"view {self.name!r}: aggregations take no ttl (their windows bound them); "
                    f"watch how recently it was materialized with freshness({self.name}) > 2h"
                )
        if self.on_missing not in get_args(OnMissing):
            raise InvalidInput(
                f"view {self.name!r}: on_missing must be null, default or reject, "
                f"not {self.on_missing!r}"
            )
        names = [f.name for f in self.all_features]
        doubled = sorted({n for n in names if names.count(n) > 1})
        if doubled:
            raise InvalidInput(f"view {self.name!r} declares {', '.join(doubled)} twice")
        keys = set(self.join_keys)
        clash = sorted(keys & {*names, self.timestamp_field})
        if clash:
            raise InvalidInput(
                f"view {self.name!r}: {', '.join(clash)} is a join key and cannot be a "
                "feature or the timestamp"
            )
        if isinstance(self.transform, str):
            if not re.match(r"^\s*(SELECT|WITH)\b", self.transform, re.IGNORECASE):
                raise InvalidInput(
                    f"view {self.name!r}: a SQL transform is a query over `source`, starting "
                    "with SELECT or WITH"
                )
        elif self.transform is not None and not callable(self.transform):
            raise InvalidInput(f"view {self.name!r}: transform must be a function or a SQL query")

    @cached_property
    def join_keys(self) -> tuple[str, ...]:
        return tuple(k for e in self.entities for k in e.join_keys)

    @cached_property
    def all_features(self) -> list[Feature]:
        """Every feature the view serves, aggregations as features of their own."""
        if self.aggregations:
            return [
                Feature(a.feature, a.dtype or "float", a.default, a.description)
                for a in self.aggregations
            ]
        return [f if isinstance(f, Feature) else Feature(f) for f in self.features]

    @cached_property
    def ttl_length(self) -> timedelta | None:
        if self.ttl is None:
            return None
        return self.ttl if isinstance(self.ttl, timedelta) else parse_duration(self.ttl)

    @property
    def max_window(self) -> timedelta:
        return max(a.length for a in self.aggregations)

    def spec(self) -> dict[str, Any]:
        """The definition as JSON: what is stored, compared and fingerprinted."""
        ttl = self.ttl_length
        return {
            "name": self.name,
            "entities": [e.spec() for e in self.entities],
            "source": self.source.spec(),
            "timestamp_field": self.timestamp_field,
            "created_timestamp_field": self.created_timestamp_field,
            "ttl_seconds": int(ttl.total_seconds()) if ttl is not None else None,
            "features": [f.spec() for f in self.features if isinstance(f, Feature)],
            "aggregations": [a.spec() for a in self.aggregations],
            "transform": _transform_spec(self.transform),
            "on_missing": self.on_missing,
            "owner": self.owner,
            "description": self.description,
            "tags": dict(self.tags),
        }

    def fingerprint(self) -> str:
        """What decides a new version: everything that changes a value. Who owns the view,
        its descriptions and tags do not (they are updated in place)."""
        return hashlib.sha256(
            json.dumps(_computed(self.spec()), sort_keys=True, default=str).encode()
        ).hexdigest()


_DESCRIPTIVE = frozenset({"owner", "description", "tags"})


def _computed(spec: Any) -> Any:
    """`spec` without its descriptive fields, at any depth."""
    if isinstance(spec, Mapping):
        return {k: _computed(v) for k, v in spec.items() if k not in _DESCRIPTIVE}
    if isinstance(spec, list):
        return [_computed(v) for v in spec]
    return spec


def _transform_spec(transform: Callable[..., Any] | str | None) -> dict[str, Any] | None:
    if transform is None:
        return None
    if isinstance(transform, str):
        return {"sql": transform.strip()}
    try:
        code = inspect.getsource(transform)
        file = inspect.getsourcefile(transform)
    except (OSError, TypeError):
        raise InvalidInput(
            f"transform {getattr(transform, '__name__', transform)!r} has no source file; "
            "define it with `def` in the module you apply"
        ) from None
    name = getattr(transform, "__qualname__", "")
    if "<lambda>" in name or "<locals>" in name:
        raise InvalidInput(
            f"transform {name!r} must be a module-level function (it is found again by name "
            "when features are computed)"
        )
    return {
        "function": name,
        "file": str(Path(file).resolve()) if file else None,
        "sha256": hashlib.sha256(code.encode()).hexdigest(),
    }


def view_from_spec(spec: Mapping[str, Any], *, transform: bool = True) -> FeatureView:
    """A stored spec back as a view (its transform found again by file and name, and checked
    against the source it was applied with). Without `transform`, the view is for online
    reads only: its source's transform is not loaded (a server need not have its file)."""
    entities = [
        Entity(e["name"], e["join_keys"], e.get("description", "")) for e in spec["entities"]
    ]
    by_name = {e.name: e for e in entities}
    loaded = _load_transform(spec["name"], spec.get("transform")) if transform else None
    return FeatureView(
        name=spec["name"],
        entities=[by_name[e["name"]] for e in spec["entities"]],
        source=source_from_spec(spec["source"]),
        features=[_feature(f) for f in spec.get("features", [])],
        aggregations=[_aggregation(a) for a in spec.get("aggregations", [])],
        timestamp_field=spec["timestamp_field"],
        created_timestamp_field=spec.get("created_timestamp_field"),
        ttl=timedelta(seconds=spec["ttl_seconds"]) if spec.get("ttl_seconds") else None,
        transform=loaded,
        on_missing=spec.get("on_missing", "null"),
        owner=spec.get("owner", ""),
        description=spec.get("description", ""),
        tags=spec.get("tags", {}),
    )


def _feature(spec: Mapping[str, Any]) -> Feature:
    return Feature(spec["name"], spec["dtype"], spec.get("default"), spec.get("description", ""))


def _aggregation(spec: Mapping[str, Any]) -> Aggregation:
    return Aggregation(
        spec["column"], spec["function"], spec["window"], spec["name"],
        default=spec.get("default"), description=spec.get("description", ""),
        dtype=spec.get("dtype"),
    )  # fmt: skip


def _load_transform(view: str, spec: Mapping[str, Any] | None) -> Callable[..., Any] | str | None:
    if spec is None:
        return None
    if "sql" in spec:
        return str(spec["sql"])
    file = spec.get("file")
    if not file or not Path(file).is_file():
        raise InvalidInput(
            f"view {view!r}: its transform {spec.get('function')!r} lived in {file}, which is "
            "gone; apply the definitions again from where they are now"
        )
    module = _import_file(Path(file))
    target: Any = module
    for part in str(spec["function"]).split("."):
        target = getattr(target, part, None)
    if target is None or not callable(target):
        raise InvalidInput(
            f"view {view!r}: {file} no longer defines {spec['function']!r}; apply the "
            "definitions again"
        )
    found = _transform_spec(target)
    if found is None or found["sha256"] != spec["sha256"]:
        raise InvalidInput(
            f"view {view!r}: its transform {spec['function']!r} changed since it was applied; "
            "run `shipyard features apply` so the change becomes a new version"
        )
    return target  # type: ignore[no-any-return]


# -- loading definitions ------------------------------------------------------------------------


@dataclass
class Definitions:
    """The entities and views a module or YAML file declares."""

    entities: list[Entity]
    views: list[FeatureView]
    origin: str


def _import_file(path: Path) -> Any:
    name = "shipyard_features_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InvalidInput(f"{path} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except InvalidInput as error:
        raise InvalidInput(f"{path}: {error.message}") from error
    except Exception as error:
        raise UserCodeFailed.raised("feature definitions", str(path), error) from error
    return module


def load_definitions(path: Path) -> Definitions:
    """Entities and feature views declared in a Python module (every module-level `Entity`
    and `FeatureView`) or a YAML file (its `features:` section)."""
    if not path.exists():
        raise InvalidInput(f"{path} does not exist; point at a .py module or a shipyard.yaml")
    if path.suffix in (".yaml", ".yml"):
        return _from_yaml(path)
    if path.suffix != ".py":
        raise InvalidInput(f"{path} is neither a Python module (.py) nor YAML (.yaml)")
    module = _import_file(path)
    values = list(vars(module).values())
    views = [v for v in values if isinstance(v, FeatureView)]
    entities = {e.name: e for e in values if isinstance(e, Entity)}
    for view in views:
        for entity in view.entities:
            entities.setdefault(entity.name, entity)
    if not views:
        raise InvalidInput(f"{path} declares no FeatureView at module level")
    _check_unique(views, path)
    return Definitions(list(entities.values()), views, str(path.resolve()))


def _check_unique(views: list[FeatureView], path: Path) -> None:
    names = [v.name for v in views]
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise InvalidInput(f"{path} declares the view {', '.join(doubled)} more than once")


def _from_yaml(path: Path) -> Definitions:
    import yaml

    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise InvalidInput(f"{path} is not valid YAML: {error}") from None
    section = document.get("features") if isinstance(document, dict) else None
    if not isinstance(section, dict):
        raise InvalidInput(f"{path} has no `features:` section with `entities` and `views`")
    try:
        entities = {
            e["name"]: Entity(e["name"], e["join_keys"], e.get("description", ""))
            for e in section.get("entities", [])
        }
        views = []
        for raw in section.get("views", []):
            unknown = [e for e in raw.get("entities", []) if e not in entities]
            if unknown:
                raise InvalidInput(
                    f"view {raw.get('name')!r} uses the entity {', '.join(unknown)}, which "
                    "`entities` does not declare"
                )
            source = dict(raw["source"])
            source.setdefault(
                "kind", "sql" if "query" in source else "log" if "model" in source else "file"
            )
            views.append(
                FeatureView(
                    name=raw["name"],
                    entities=[entities[e] for e in raw["entities"]],
                    source=source_from_spec(source),
                    features=[
                        Feature(**f) if isinstance(f, dict) else Feature(f)
                        for f in raw.get("features", [])
                    ],
                    aggregations=[Aggregation(**a) for a in raw.get("aggregations", [])],
                    timestamp_field=raw.get("timestamp_field", "event_timestamp"),
                    created_timestamp_field=raw.get("created_timestamp_field"),
                    ttl=raw.get("ttl"),
                    on_missing=raw.get("on_missing", "null"),
                    owner=raw.get("owner", ""),
                    description=raw.get("description", ""),
                    tags=raw.get("tags", {}),
                )
            )
    except KeyError as error:
        raise InvalidInput(f"{path}: a feature definition lacks {error.args[0]!r}") from None
    except TypeError as error:
        raise InvalidInput(f"{path}: {error}") from None
    if not views:
        raise InvalidInput(f"{path} declares no views under `features:`")
    _check_unique(views, path)
    return Definitions(list(entities.values()), views, str(path.resolve()))


# -- references ---------------------------------------------------------------------------------

_REF = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:@v?(\d+))?:([A-Za-z_][A-Za-z0-9_]*|\*)$")


def parse_refs(refs: Sequence[str]) -> list[tuple[str, int | None, str]]:
    """`view:feature`, `view@3:feature` (a version) or `view:*` (every feature), as
    (view, version or None for the latest, feature)."""
    out = []
    for ref in refs:
        match = _REF.match(ref.strip())
        if match is None:
            raise InvalidInput(
                f"feature reference {ref!r} is not view:feature (or view@VERSION:feature, view:*)"
            )
        view, version, feature = match.groups()
        out.append((view, int(version) if version else None, feature))
    if not out:
        raise InvalidInput("name at least one feature (view:feature)")
    return out
