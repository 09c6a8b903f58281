"""A model card laid out as Markdown or as one standalone HTML page: the same sections,
built once from the card's data (`ModelCard`), in two formats."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

import jinja2

from shipyard.lineage._card import (
    GROUP_COLUMNS,
    DataEntry,
    Lineage,
    ModelCard,
    _number,
    _threshold_text,
    _when,
)

__all__ = ["render_html", "render_markdown"]


@dataclass(frozen=True)
class Block:
    """A piece of a section: labelled fields, a table, a list or a paragraph, all plain text
    (Markdown escapes table cells; the HTML template autoescapes everything)."""

    kind: str  # fields | table | items | text
    title: str = ""
    fields: list[tuple[str, str]] = field(default_factory=list)
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    text: str = ""


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    blocks: list[Block]


def render_markdown(card: ModelCard) -> str:
    """The card as Markdown: a title, then one `##` heading per section."""
    lines = [f"# Model card: {card.ref}", "", f"_Generated {_when(card.generated_at)}._", ""]
    for section in _sections(card):
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            lines += _markdown(block)
    return "\n".join(lines).rstrip() + "\n"


def render_html(card: ModelCard) -> str:
    """The card as one standalone HTML page (inline CSS, no scripts, nothing from the network)."""
    return _template().render(
        ref=card.ref, generated=_when(card.generated_at), sections=_sections(card)
    )


@cache
def _template() -> jinja2.Template:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("shipyard.lineage", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a name the template misspells fails the tests
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return environment.get_template("card.html.j2")


def _markdown(block: Block) -> list[str]:
    lines = [f"### {block.title}", ""] if block.title else []
    if block.kind == "fields":
        lines += [f"- **{label}**: {_inline(value)}" for label, value in block.fields]
    elif block.kind == "table":
        lines.append("| " + " | ".join(map(_cell, block.headers)) + " |")
        lines.append("|" + "---|" * len(block.headers))
        lines += ["| " + " | ".join(map(_cell, row)) + " |" for row in block.rows]
    elif block.kind == "items":
        lines += [f"- {_inline(item)}" for item in block.items]
    else:
        lines.append(_inline(block.text))
    return [*lines, ""]


def _inline(text: str) -> str:
    return " ".join(str(text).split())


def _cell(text: str) -> str:
    return _inline(text).replace("|", "\\|") or " "


def _sections(card: ModelCard) -> list[Section]:
    """The card's seven sections, laid out as text."""
    return [
        _overview(card),
        _data_section(card),
        _metrics_section(card),
        _groups_section(card),
        _limitations_section(card),
        _lineage_section(card),
        _approvals_section(card),
    ]


def _fields(*pairs: tuple[str, str], title: str = "") -> Block:
    return Block("fields", title, fields=list(pairs))


def _table(headers: list[str], rows: list[list[str]], title: str = "") -> Block:
    return Block("table", title, headers=headers, rows=rows)


def _text(text: str, title: str = "") -> Block:
    return Block("text", title, text=text)


def _listed(names: list[str], shown: int) -> str:
    more = f" (+{len(names) - shown})" if len(names) > shown else ""
    return f"{len(names)}: {', '.join(names[:shown])}{more}" if names else "-"


def _overview(card: ModelCard) -> Section:
    name = card.ref.rsplit(":", 1)[0]
    unwritten = f"not written (models.{name}.card in shipyard.yaml)"
    threshold = _threshold_text(card.threshold) if card.task == "binary" else "-"
    return Section("overview", "Overview", [_fields(
        ("purpose", card.purpose or "-"), ("description", card.description or "-"),
        ("intended use", card.intended_use or unwritten),
        ("out of scope", card.out_of_scope or unwritten),
        ("owner", card.owner), ("contact", card.contact or "-"), ("task", card.task),
        ("flavour", card.flavour), ("runtime", card.runtime), ("threshold", threshold),
        ("aliases", ", ".join(card.aliases) or "-"), ("status", card.status),
        ("registered", f"{_when(card.registered_at)} by {card.registered_by}"),
        ("inputs", _listed(card.features, 12)),
    )])  # fmt: skip


def _data_section(card: ModelCard) -> Section:
    if card.data:
        headers = ["role", "data version", "rows", "columns", "key", "label", "created"]
        blocks = [_table(headers, [_data_row(d) for d in card.data])]
    elif card.lineage.run_id is None:
        blocks = [_text("registered outside a tracked run: no data versions")]
    else:
        blocks = [_text(f"its run {card.lineage.run_id} logged no data sets: no data versions")]
    fingerprint = card.data_fingerprint or {}
    kept = (
        f"{str(fingerprint['sha256'])[:12]}, {_number(fingerprint.get('rows'))} rows"
        if fingerprint.get("sha256")
        else "none: registered without a sample or training data"
    )
    blocks.append(_fields(("data fingerprint at registration", kept)))
    return Section("data", "Data", blocks)


def _data_row(d: DataEntry) -> list[str]:
    version = d.sha256[:12] + ("" if d.kept else " (fingerprint only, not kept)")
    key = ", ".join(d.key or []) or "-"
    return [d.role, version, _number(d.rows), _listed(d.columns, 8), key, d.label or "-", _when(d.created_at)]  # fmt: skip


def _metrics_section(card: ModelCard) -> Section:
    blocks = [_text("no metrics were registered with this version")]
    if card.metrics:
        headers = ["metric", "source", "value", "target", "met", "target from"]
        rows = [
            [m.name, m.source, _number(m.value), m.target or "-", _met(m.met), m.basis or "-"]
            for m in card.metrics
        ]
        blocks = [_table(headers, rows)]
    live = card.live
    if live is None:
        name = card.ref.rsplit(":", 1)[0]
        text = f"no live metrics: no monitoring snapshot has this version yet (shipyard monitor run {name})"
    else:
        period = f"{_when(live['period']['start'])} to {_when(live['period']['end'])}"
        text = f"live metrics: the latest monitoring snapshot, windows of {live['window']} from {period}, computed {_when(live['computed_at'])}"
    return Section("metrics", "Metrics and targets", [*blocks, _text(text)])


def _met(met: bool | None) -> str:
    return "-" if met is None else "met" if met else "not met"


def _groups_section(card: ModelCard) -> Section:
    groups = card.groups
    if groups.status != "measured":
        return Section("groups", "Per-group metrics (fairness)", [_text(groups.note)])
    shown = f"groups under {groups.min_group_rows} rows are shown but not compared"
    blocks = [_text(f"{groups.note}; {groups.data}; {shown}")]
    headers = ["group", *(c.replace("_", " ") for c in GROUP_COLUMNS), "compared"]
    for attribute, report in groups.attributes.items():
        rows = [
            [g["group"], *(_number(g[c]) for c in GROUP_COLUMNS), _compared(g["compared"])]
            for g in report["groups"]
        ]
        blocks.append(_table(headers, rows, title=attribute))
        blocks.append(_gaps(report, groups.limits[attribute]))
    return Section("groups", "Per-group metrics (fairness)", blocks)


def _compared(compared: bool) -> str:
    return "yes" if compared else "no (too few rows)"


def _gaps(report: dict[str, Any], limit: float) -> Block:
    gap = report["fairness_gap"]
    side = "above" if gap is not None and gap > limit else "within"
    return _fields(
        ("demographic parity difference", _number(report["demographic_parity_difference"])),
        ("equalized odds difference", _number(report["equalized_odds_difference"])),
        ("fairness gap", "-" if gap is None else f"{_number(gap)} ({side} the limit {limit:g})"),
    )


def _limitations_section(card: ModelCard) -> Section:
    written = [w.text for w in card.limitations if w.kind == "written"]
    found = [f.text for f in card.limitations if f.kind != "written"]
    blocks = []
    for title, items, empty in (
        ("Stated by the team", written, "none written"),
        ("Found in the records", found, "none found"),
    ):
        blocks.append(Block("items", title, items=items) if items else _text(empty, title))
    return Section("limitations", "Limitations", blocks)


def _lineage_section(card: ModelCard) -> Section:
    lineage = card.lineage
    packages = ", ".join(f"{k} {v}" for k, v in sorted(lineage.packages.items()))
    views = ", ".join(f"{k} v{v}" for k, v in sorted(lineage.feature_views.items()))
    return Section("lineage", "Lineage", [_fields(
        ("parent version", _number(lineage.parent)), ("reproduces", _number(lineage.reproduces)),
        ("pipeline", _pipeline(lineage)), ("run", lineage.run_id or "-"),
        ("entrypoint", lineage.entrypoint or "-"),
        ("params", ", ".join(f"{k}={v}" for k, v in lineage.params.items()) or "-"),
        ("seed", _number(lineage.seed)), ("python", lineage.python or "-"),
        ("git commit", _commit(lineage.git)), ("packages", packages or "-"),
        ("feature views", views or "-"),
    )])  # fmt: skip


def _pipeline(lineage: Lineage) -> str:
    if lineage.pipeline is None:
        return "-"
    trigger = lineage.trigger or {}
    by = f" ({trigger['by']})" if trigger.get("by") else ""
    return f"{lineage.pipeline}, triggered by {trigger.get('kind', 'unknown')}{by}"


def _commit(git: dict[str, Any]) -> str:
    if not git.get("commit"):
        return "-"
    dirty = " with uncommitted changes" if git.get("dirty") else ""
    branch = f" on {git['branch']}" if git.get("branch") else ""
    return f"{str(git['commit'])[:12]}{branch}{dirty}"


def _approvals_section(card: ModelCard) -> Section:
    if not card.approvals:
        return Section("approvals", "Approvals", [_text("no audit events name this version")])
    rows = [[_when(a.at), a.actor, a.what, a.detail or "-"] for a in card.approvals]
    return Section("approvals", "Approvals", [_table(["when", "who", "what", "detail"], rows)])
