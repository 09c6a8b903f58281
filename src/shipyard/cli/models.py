"""`shipyard models ...`: register, list, show, importance, alias, archive, unarchive, delete,
history, card."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.table import Table

from shipyard.cli._common import (
    console,
    emit_json,
    json_flag,
    open_registry,
    parse_pairs,
    read_table,
    settings,
)
from shipyard.core import ModelRef, parse_version
from shipyard.core.errors import InvalidInput
from shipyard.registry import ModelVersion
from shipyard.runtime import load_model_file

app = typer.Typer(
    help="Register models and manage their versions and aliases.", no_args_is_help=True
)


@app.command("register")
def register(
    ctx: typer.Context,
    path: Path = typer.Argument(
        ...,
        help="model file (.joblib/.pkl/.onnx/.txt/.json/.ubj, PyTorch .pt2/.pt) or MLflow model folder",
    ),
    name: str = typer.Option(..., "--name", "-n", help="model name, e.g. fraud-detector"),
    sample: Path | None = typer.Option(
        None,
        "--sample",
        "-s",
        help="rows of the training features (.csv/.parquet/.json); needed when the model "
        "does not say what it takes (scikit-learn), optional for MLflow models with a "
        "signature, ONNX, LightGBM and XGBoost",
    ),
    metric: list[str] | None = typer.Option(
        None, "--metric", "-m", help="metric as key=value (repeatable)"
    ),
    param: list[str] | None = typer.Option(None, "--param", "-p", help="hyperparameter key=value"),
    tag: list[str] | None = typer.Option(None, "--tag", "-t", help="tag key=value"),
    description: str = typer.Option("", help="what the model is"),
    purpose: str = typer.Option("", help="what the model is for"),
    threshold: float | None = typer.Option(None, help="decision threshold for binary classifiers"),
    training_data: Path | None = typer.Option(None, help="training data file to fingerprint"),
    alias: list[str] | None = typer.Option(
        None, "--alias", "-a", help="alias to point at the new version"
    ),
    as_json: bool = json_flag("the new version's record"),
) -> None:
    """Register a model file as the next version of NAME."""
    model = load_model_file(path)
    frame = read_table(sample) if sample is not None else None
    with open_registry(ctx) as registry:
        version = registry.register(
            model,
            name=name,
            sample=frame,
            metrics=parse_pairs(metric, "metric", numeric=True),
            params=parse_pairs(param, "param"),
            tags=parse_pairs(tag, "tag"),
            description=description,
            purpose=purpose,
            threshold=threshold,
            training_data=training_data,
            aliases=alias or [],
        )
    if as_json:
        emit_json(version.to_dict())
        return
    console.print(
        f"[green]registered[/] [bold]{version.ref}[/] ({version.flavour}, {version.task}, "
        f"serves on {version.runtime})"
        + (f"; aliases: {', '.join(version.aliases)}" if version.aliases else "")
    )


@app.command("list")
def list_models(ctx: typer.Context, as_json: bool = json_flag("the models' records")) -> None:
    """List registered models."""
    with open_registry(ctx) as registry:
        models = registry.list_models()
    if as_json:
        emit_json([m.to_dict() for m in models])
        return
    if not models:
        console.print(
            "no models registered yet; try `shipyard models register PATH --name NAME --sample FILE`"
        )
        return
    table = Table("model", "versions", "latest", "aliases", "created", "by")
    for m in models:
        aliases = ", ".join(f"{a}→{v}" for a, v in m.aliases.items())
        table.add_row(
            m.name,
            str(m.version_count),
            str(m.latest_version or "-"),
            aliases,
            f"{m.created_at:%Y-%m-%d %H:%M}",
            m.created_by,
        )
    console.print(table)


@app.command("show")
def show(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="NAME or NAME:VERSION or NAME:ALIAS"),
    as_json: bool = json_flag("the model and its versions, or the one version"),
) -> None:
    """Show a model's versions, or one version in detail."""
    parsed = ModelRef.parse(ref)
    with open_registry(ctx) as registry:
        if parsed.version is None and parsed.alias is None:
            model = registry.get_model(parsed.name)
            versions = registry.list_versions(parsed.name)
            if as_json:
                emit_json({**model.to_dict(), "versions": [v.to_dict() for v in versions]})
                return
            _versions_table(parsed.name, versions)
            return
        version = registry.resolve(parsed)
    if as_json:
        emit_json(version.to_dict())
        return
    _version_detail(version)


def _versions_table(name: str, versions: list[ModelVersion]) -> None:
    table = Table(
        "version", "status", "aliases", "flavour", "runtime", "metrics", "created", "by", title=name
    )
    for v in versions:
        metrics = ", ".join(
            f"{k}={val:.4g}" if isinstance(val, float) else f"{k}={val}"
            for k, val in v.metrics.items()
        )
        table.add_row(
            str(v.version),
            v.status,
            ", ".join(v.aliases),
            v.flavour,
            v.runtime,
            metrics,
            f"{v.created_at:%Y-%m-%d %H:%M}",
            v.created_by,
        )
    console.print(table)


def _version_detail(v: ModelVersion) -> None:
    console.print(f"[bold]{v.ref}[/]  {v.status}  aliases: {', '.join(v.aliases) or '-'}")
    console.print(
        f"flavour {v.flavour}, task {v.task}, serves on {v.runtime}"
        + (f", threshold {v.threshold}" if v.threshold is not None else "")
    )
    console.print(
        f"created {v.created_at:%Y-%m-%d %H:%M:%S} by {v.created_by}; bundle {v.bundle_path} ({v.size_bytes:,} bytes)"
    )
    if v.purpose or v.description:
        console.print(f"purpose: {v.purpose or '-'}; description: {v.description or '-'}")
    if v.metrics:
        console.print("metrics: " + ", ".join(f"{k}={val}" for k, val in v.metrics.items()))
    if v.data_fingerprint:
        console.print(
            f"training data sha256 {v.data_fingerprint.get('sha256', '')[:16]}... rows {v.data_fingerprint.get('rows', '-')}"
        )
    store = (v.lineage or {}).get("feature_store") or {}
    if store.get("views"):
        views = ", ".join(f"{view} v{version}" for view, version in sorted(store["views"].items()))
        console.print(
            f"trained on feature views {views}; served by entity keys "
            f"({len(store.get('features', []))} features looked up per request)"
        )
    table = Table("column", "type", "nullable", title="signature")
    for c in v.signature.columns:
        table.add_row(c.name, c.type, "yes" if c.nullable else "no")
    console.print(table)
    if v.importance:
        _importance_table(v)


IMPORTANCE_SHOWN = 15  # features `models show` lists by importance


def _importance_table(v: ModelVersion) -> None:
    importance = v.importance or {}
    features = importance.get("features", {})
    total = sum(features.values()) or 1.0
    console.print(
        f"what {v.ref} relies on ({importance.get('method')}, {importance.get('space')}, "
        f"{importance.get('rows')} reference rows): mean |contribution| to its answers",
        highlight=False,
    )
    table = Table("feature", "mean |contribution|", "share")
    for name, value in list(features.items())[:IMPORTANCE_SHOWN]:
        table.add_row(name, f"{value:.4g}", f"{value / total:.1%}")
    console.print(table)
    if len(features) > IMPORTANCE_SHOWN:
        console.print(f"... and {len(features) - IMPORTANCE_SHOWN} more (--json has them all)")


@app.command("importance")
def importance(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="NAME:VERSION (or NAME:ALIAS) to show"),
    against: str | None = typer.Argument(
        None, help="another version to compare with: NAME:VERSION, or VERSION of the same model"
    ),
    as_json: bool = json_flag("the importance, or the comparison"),
) -> None:
    """What a version relies on: each feature's mean |contribution| over its reference rows
    (worked out at registration). With a second version: what changed, as each feature's share
    of the total and its rank in each, largest change first."""
    from shipyard.explain import compare_importance

    first = ModelRef.parse(ref)
    with open_registry(ctx) as registry:
        a = registry.resolve(first)
        b = None
        if against is not None:
            other = ModelRef.parse(against if ":" in against else f"{first.name}:{against}")
            b = registry.resolve(other)
    for version in (a, b):
        if version is not None and not version.importance:
            raise InvalidInput(
                f"{version.ref} has no feature importance: it was registered without reference "
                "rows (a sample or training data), or before shipyard worked it out"
            )
    if b is None:
        if as_json:
            emit_json({"version": a.ref, **(a.importance or {})})
            return
        _importance_table(a)
        return
    rows = compare_importance(a.importance, b.importance)
    if as_json:
        emit_json({"before": a.ref, "after": b.ref, "features": rows})
        return
    console.print(
        f"what changed in what the model relies on: {a.ref} -> {b.ref} (each feature's share "
        "of the mean |contribution|)",
        highlight=False,
    )
    table = Table("feature", f"share in {a.ref}", f"share in {b.ref}", "change", "rank")
    for row in rows[:IMPORTANCE_SHOWN]:
        table.add_row(
            row["feature"],
            "-" if row["before"] is None else f"{row['before']:.1%}",
            "-" if row["after"] is None else f"{row['after']:.1%}",
            f"{row['change']:+.1%}",
            f"{row['rank_before'] or '-'} -> {row['rank_after'] or '-'}",
        )
    console.print(table)


@app.command("alias")
def alias(
    ctx: typer.Context,
    name: str,
    first: str = typer.Argument(..., metavar="VERSION"),
    second: str | None = typer.Argument(None, metavar="ALIAS"),
    remove: bool = typer.Option(
        False, "--remove", help="remove ALIAS instead (shipyard models alias NAME ALIAS --remove)"
    ),
    as_json: bool = json_flag("the alias move"),
) -> None:
    """Point ALIAS (e.g. production) at VERSION of NAME, or remove it with --remove."""
    with open_registry(ctx) as registry:
        if remove:
            alias_name = second if second is not None else first
            if second is not None:
                registry.get_version(name, _version_number(first))
            move = registry.remove_alias(name, alias_name)
        else:
            if second is None:
                raise InvalidInput(
                    f"say which version the alias points at: shipyard models alias {name} VERSION "
                    f"{first} (or add --remove to remove it)"
                )
            move = registry.set_alias(name, _version_number(first), second)
    if as_json:
        emit_json({**move.to_dict(), "removed": True} if remove else move.to_dict())
        return
    if remove:
        console.print(f"[yellow]removed[/] {name}:{move.alias} (it pointed at {move.version})")
        return
    was = f" (was {move.previous})" if move.previous is not None else ""
    console.print(f"[green]{name}:{move.alias}[/] → version {move.version}{was}")


def _version_number(text: str) -> int:
    return parse_version(text)


@app.command("archive")
def archive(
    ctx: typer.Context,
    name: str,
    version: int,
    as_json: bool = json_flag("the archived version's record"),
) -> None:
    """Archive VERSION of NAME: kept on record, no longer served."""
    with open_registry(ctx) as registry:
        record = registry.archive(name, version)
    if as_json:
        emit_json(record.to_dict())
        return
    console.print(f"[yellow]archived[/] {record.ref}")


@app.command("unarchive")
def unarchive(
    ctx: typer.Context, name: str, version: int, as_json: bool = json_flag("the version's record")
) -> None:
    """Bring back an archived VERSION of NAME: it may serve and take aliases again."""
    with open_registry(ctx) as registry:
        record = registry.unarchive(name, version)
    if as_json:
        emit_json(record.to_dict())
        return
    console.print(f"[green]unarchived[/] {record.ref}")


@app.command("delete")
def delete(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="NAME (the model, all versions) or NAME:VERSION"),
    yes: bool = typer.Option(False, "--yes", "-y", help="do not ask for confirmation"),
    as_json: bool = json_flag("the model and the versions deleted"),
) -> None:
    """Delete a version, or a model with all its versions, and their bundle files.

    Refused while a version has an alias or serves. The audit trail keeps the record; the
    prediction logs stay.
    """
    parsed = ModelRef.parse(ref)
    if parsed.alias is not None:
        raise InvalidInput(f"delete takes NAME or NAME:VERSION, not an alias ({ref!r})")
    what = (
        str(parsed) if parsed.version is not None else f"model {parsed.name} and all its versions"
    )
    if not yes:
        if not sys.stdin.isatty():
            raise InvalidInput(f"deleting {what} needs --yes when there is no terminal to ask")
        typer.confirm(f"delete {what}?", abort=True)
    with open_registry(ctx) as registry:
        deleted = registry.delete(parsed.name, parsed.version)
    if as_json:
        emit_json({"model": parsed.name, "versions": deleted})
        return
    versions = ", ".join(map(str, deleted)) or "none"
    console.print(f"[red]deleted[/] {what} (versions: {versions})")


@app.command("history")
def history(
    ctx: typer.Context,
    name: str,
    limit: int = typer.Option(50, help="most recent events to show"),
    as_json: bool = json_flag("the audit events"),
) -> None:
    """The audit trail of NAME, newest first."""
    with open_registry(ctx) as registry:
        events = registry.history(name, limit=limit)
    if as_json:
        emit_json([e.to_dict() for e in events])
        return
    table = Table("when", "who", "action", "version", "details", title=f"{name} history")
    for ev in events:
        table.add_row(
            f"{ev.at:%Y-%m-%d %H:%M:%S}",
            ev.actor,
            ev.action,
            str(ev.version or "-"),
            ", ".join(
                f"{k}={v}"
                for k, v in ev.details.items()
                if k not in ("metrics", "data_fingerprint")
            ),
        )
    console.print(table)


CARD_SUFFIXES = (".md", ".html")


@app.command("card")
def card(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="NAME:VERSION (or NAME:ALIAS) to write the card of"),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="write the card to PATH.md (Markdown) or PATH.html (one standalone page) "
        "instead of printing the Markdown",
    ),
    as_json: bool = json_flag("the card's content"),
) -> None:
    """Write a model card: purpose and intended use, owner, the data versions it learned from,
    metrics beside their targets, per-group metrics on its holdout, limitations (written in
    shipyard.yaml's `card:` and found in the records), lineage and approvals."""
    from shipyard.lineage import model_card, render_html, render_markdown
    from shipyard.tracking import Tracker

    if out is not None:
        _check_card_path(out)
    with open_registry(ctx) as registry:
        tracker = Tracker(registry.database, registry.artifacts, actor=registry.actor)
        made = model_card(registry, tracker, ref, project=settings(ctx).config)
    if out is not None:
        page = out.suffix.lower() == ".html"
        out.write_text(render_html(made) if page else render_markdown(made), encoding="utf-8")
    if as_json:
        emit_json(made.to_dict())
    elif out is not None:
        console.print(f"wrote the model card of {made.ref} to {out}", markup=False, highlight=False)
    else:
        sys.stdout.write(render_markdown(made))


def _check_card_path(out: Path) -> None:
    if out.suffix.lower() not in CARD_SUFFIXES:
        raise InvalidInput(
            f"cannot write a model card to {out.name!r}: name a .md (Markdown) or .html file"
        )
    if not out.parent.is_dir():
        raise InvalidInput(
            f"the folder {str(out.parent)!r} does not exist; create it first or write the card "
            "elsewhere"
        )
    if out.is_dir():
        raise InvalidInput(f"{str(out)!r} is a folder; name a .md or .html file")
