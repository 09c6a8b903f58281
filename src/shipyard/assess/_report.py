"""The assessment as one standalone page (inline CSS and SVG: no scripts, nothing from the
network, so it opens offline and can be mailed) or as Markdown.

Python decides where each mark of the impact-versus-feasibility chart goes (`MatrixChart`:
plain numbers and text); the Jinja2 template `templates/assess.html.j2` turns that into markup
with autoescaping on, so no text from a use-case file can become markup.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

import jinja2

from shipyard.assess._readiness import BANDS, Readiness
from shipyard.assess._usecases import CRITERIA, THRESHOLD, ScoredUseCase

__all__ = ["Assessment", "MatrixChart", "matrix_chart", "render_html", "render_markdown"]

# fill of each quadrant, and of the dots in it
COLOURS = {
    "do_first": ("#e6f4ea", "#137333"),
    "plan": ("#fef7e0", "#b06000"),
    "quick_win": ("#e8f0fe", "#1a73e8"),
    "avoid": ("#fce8e6", "#c5221f"),
}
BAND_CLASSES = ("ready", "prepare", "groundwork")  # the page's colour of each band, as BANDS


@dataclass(frozen=True)
class Assessment:
    """What `shipyard assess` found: the questionnaire, the use cases, or both."""

    readiness: Readiness | None = None
    use_cases: list[ScoredUseCase] | None = None
    assessed_at: str = field(
        default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds")
    )

    def to_dict(self) -> dict[str, Any]:
        return {
            "assessed_at": self.assessed_at,
            "readiness": None if self.readiness is None else self.readiness.to_dict(),
            "use_cases": None if self.use_cases is None else [u.to_dict() for u in self.use_cases],
        }


# -- the chart: geometry here, markup in the template --------------------------------------------


@dataclass(frozen=True)
class Region:
    x: float
    y: float
    width: float
    height: float
    fill: str
    label: str
    label_x: float
    label_y: float
    anchor: str


@dataclass(frozen=True)
class Tick:
    x: float
    y: float
    text: str
    anchor: str


@dataclass(frozen=True)
class Dot:
    x: float
    y: float
    label_x: float
    anchor: str  # of the name beside the dot: at the right edge it goes left of the dot
    colour: str
    number: int
    name: str
    title: str


@dataclass(frozen=True)
class MatrixChart:
    """Impact (up) against feasibility (right), split at the threshold into four quadrants."""

    width: int
    height: int
    left: int
    top: int
    right: int
    bottom: int
    mid_x: float
    mid_y: float
    regions: list[Region]
    ticks: list[Tick]
    dots: list[Dot]


def matrix_chart(use_cases: list[ScoredUseCase]) -> MatrixChart:
    """Each use case as a numbered dot (its priority) on the impact-versus-feasibility plane."""
    width, height, left, top, right, bottom = 560, 440, 56, 16, 544, 392

    def x(score: float) -> float:
        return round(left + (right - left) * (score - 1) / 4, 1)

    def y(score: float) -> float:
        return round(bottom - (bottom - top) * (score - 1) / 4, 1)

    mid_x, mid_y = x(THRESHOLD), y(THRESHOLD)
    regions = []
    for key, label, (x0, x1), (y0, y1) in (
        ("plan", "plan (data first)", (left, mid_x), (top, mid_y)),
        ("do_first", "do first", (mid_x, right), (top, mid_y)),
        ("avoid", "avoid", (left, mid_x), (mid_y, bottom)),
        ("quick_win", "quick win", (mid_x, right), (mid_y, bottom)),
    ):
        at_right = x0 == mid_x
        regions.append(Region(
            x0, y0, x1 - x0, y1 - y0, COLOURS[key][0], label,
            x1 - 8 if at_right else x0 + 8, y0 + 18 if y0 == top else y1 - 8,
            "end" if at_right else "start",
        ))  # fmt: skip
    ticks = [Tick(x(s), bottom + 16, str(s), "middle") for s in range(1, 6)]
    ticks += [Tick(left - 8, y(s) + 4, str(s), "end") for s in range(1, 6)]
    return MatrixChart(
        width, height, left, top, right, bottom, mid_x, mid_y, regions, ticks, _dots(use_cases, x, y)
    )  # fmt: skip


def _dots(use_cases: list[ScoredUseCase], x: Any, y: Any) -> list[Dot]:
    """One dot per use case; dots on the same spot are stacked, so each shows."""
    seen: dict[tuple[float, float], int] = {}
    dots = []
    for u in use_cases:
        spot = (u.feasibility, u.impact)
        shift = seen.get(spot, 0)
        seen[spot] = shift + 1
        # on a spot already taken, 20 px above (below, near the top), its name beside it
        at = y(u.impact) + (20 if u.impact > 4.5 else -20) * shift
        to_left = u.feasibility > 3.5
        dot_x = x(u.feasibility)
        dots.append(Dot(
            dot_x, round(at, 1), dot_x - 12 if to_left else dot_x + 12,
            "end" if to_left else "start", COLOURS[u.quadrant][1],
            u.priority, u.name[:28],
            f"{u.priority}. {u.name}: impact {u.impact:g}, feasibility {u.feasibility:g}, "
            f"{u.quadrant_label}",
        ))  # fmt: skip
    return dots


# -- the page ------------------------------------------------------------------------------------


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("shipyard.assess", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a name the template misspells fails the tests
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(assessment: Assessment) -> str:
    """The whole assessment as a standalone HTML page."""
    chart = matrix_chart(assessment.use_cases) if assessment.use_cases else None
    readiness = assessment.readiness
    level = "" if readiness is None else BAND_CLASSES[readiness.level]
    return (
        _environment()
        .get_template("assess.html.j2")
        .render(
            a=assessment,
            chart=chart,
            level=level,
            criteria=list(CRITERIA),
            bands=BANDS,
            threshold=THRESHOLD,
        )
    )


def render_markdown(assessment: Assessment) -> str:
    """The assessment as Markdown: the same sections and tables as the page, without the chart."""
    lines = ["# AI readiness assessment", "", f"Assessed {assessment.assessed_at}.", ""]
    if assessment.readiness is not None:
        lines += _readiness_markdown(assessment.readiness)
    if assessment.use_cases:
        lines += _use_cases_markdown(assessment.use_cases)
    return "\n".join(lines)


def _readiness_markdown(r: Readiness) -> list[str]:
    lines = [
        "## Readiness questionnaire",
        "",
        f"**{r.score}/{r.out_of}: {r.band}.**"
        + (f" Weakest area: {r.weakest}." if r.weakest else ""),
        "",
        "| area | score |",
        "| --- | --- |",
        *(f"| {a.name} | {a.score}/{a.out_of} |" for a in r.areas),
        "",
    ]
    if r.gaps:
        lines += ["| area | question | gap | what to do |", "| --- | --- | --- | --- |"]
        lines += [f"| {g.area} | `{g.id}` | {_cell(g.gap)} | {_cell(g.remedy)} |" for g in r.gaps]
        lines.append("")
    return lines


def _use_cases_markdown(use_cases: list[ScoredUseCase]) -> list[str]:
    headings = [c.replace("_", " ") for c in CRITERIA]
    lines = [
        "## Use cases",
        "",
        f"Impact = (2 x business value + manual process) / 3; feasibility = mean of data "
        f"available, pattern recognition, error tolerance; high from {THRESHOLD:g} (the scale's "
        "midpoint).",
        "",
        _row(["#", "use case", *headings, "impact", "feasibility", "quadrant", "build or buy",
              "pitfalls"]),
        "| --- " * (len(CRITERIA) + 7) + "|",
    ]  # fmt: skip
    for u in use_cases:
        scores = [str(getattr(u.use_case, c)) for c in CRITERIA]
        lines.append(_row([
            str(u.priority), _cell(u.name), *scores, f"{u.impact:g}", f"{u.feasibility:g}",
            u.quadrant_label, u.sourcing.decision, str(len(u.pitfalls)),
        ]))  # fmt: skip
    for u in use_cases:
        lines += ["", f"### {u.priority}. {u.name}: {u.quadrant_label}", ""]
        lines.append(f"- {u.sourcing.decision}: " + "; ".join(u.sourcing.reasons))
        lines += [f"- pitfall: {p.problem}. Fix: {p.fix}." for p in u.pitfalls]
    lines.append("")
    return lines


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
