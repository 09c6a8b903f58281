"""Which AI use case first? Candidates scored on five criteria, placed on the impact-versus-
feasibility matrix, with build-versus-buy guidance and the pitfalls that sink such projects.

Each criterion is scored 1 (low) to 5 (high):

    business_value       value to the business if it works
    manual_process       how much manual work it replaces today
    data_available       how much of the data it needs exists and can be used
    pattern_recognition  how much the task is recognising patterns in data (what ML does well)
    error_tolerance      how well the process absorbs a wrong answer (1: not at all)

    impact      = (2 * business_value + manual_process) / 3
    feasibility = (data_available + pattern_recognition + error_tolerance) / 3

Business value counts twice in impact and the manual work replaced once: the work a model
takes over is value too, and the easiest to measure. Both axes run 1-5; a use case is high on
an axis at or above THRESHOLD, the midpoint of the scale (3). The quadrants, in the order
they are worked on:

    high impact, high feasibility  do first
    high impact, low feasibility   plan (invest in data/feasibility first)
    low impact, high feasibility   quick win / only if cheap
    low impact, low feasibility    avoid

Within a quadrant, the larger impact x feasibility comes first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shipyard.assess._readiness import YesNo, read_document, shown
from shipyard.core.errors import InvalidInput

__all__ = [
    "CRITERIA",
    "QUADRANTS",
    "THRESHOLD",
    "Pitfall",
    "ScoredUseCase",
    "Sourcing",
    "UseCase",
    "build_or_buy",
    "feasibility_of",
    "impact_of",
    "load_use_cases",
    "parse_use_cases",
    "pitfalls",
    "prioritise",
    "score_use_case",
]

CRITERIA: dict[str, str] = {
    "business_value": "value to the business if it works",
    "data_available": "how much of the data it needs exists and can be used",
    "manual_process": "how much manual work it replaces today",
    "pattern_recognition": "how much the task is recognising patterns in data",
    "error_tolerance": "how well the process absorbs a wrong answer",
}
THRESHOLD = 3.0
# (high impact, high feasibility) -> (key, label), in the order the quadrants are worked on
QUADRANTS: dict[tuple[bool, bool], tuple[str, str]] = {
    (True, True): ("do_first", "do first"),
    (True, False): ("plan", "plan (invest in data/feasibility first)"),
    (False, True): ("quick_win", "quick win / only if cheap"),
    (False, False): ("avoid", "avoid"),
}

Score = Annotated[int, Field(ge=1, le=5, strict=True)]


class UseCase(BaseModel):
    """A candidate use case, as its file describes it: a name, a description, the five criteria
    (1-5), and what is known of its plan, each optional:

        target_accuracy        the accuracy aimed at, as a fraction (0.95)
        success_metric         how success will be measured
        data_prep_budget       the money set aside for preparing the data (0: none)
        core_differentiator    whether it sets the business apart from competitors
        vendor_solution_exists whether it can be bought
        in_house_skills        whether the team could build and run it
        proprietary_data       whether it rests on data only this business has
        human_in_the_loop      whether a person reviews the model's decisions
        time_to_value_months   how long until it delivers value
    """

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=80)
    description: str = Field(min_length=1, max_length=1000)
    business_value: Score
    data_available: Score
    manual_process: Score
    pattern_recognition: Score
    error_tolerance: Score
    target_accuracy: float | None = Field(None, gt=0, le=1, strict=True)
    success_metric: str | None = Field(None, max_length=300)
    data_prep_budget: float | None = Field(None, ge=0, strict=True)
    core_differentiator: YesNo | None = None
    vendor_solution_exists: YesNo | None = None
    in_house_skills: YesNo | None = None
    proprietary_data: YesNo | None = None
    human_in_the_loop: YesNo | None = None
    time_to_value_months: int | None = Field(None, ge=1, le=120, strict=True)


class _UseCaseFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    use_cases: list[UseCase] = Field(min_length=1)

    @field_validator("use_cases")
    @classmethod
    def _names_unique(cls, value: list[UseCase]) -> list[UseCase]:
        names = [u.name for u in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"each name must be unique; {', '.join(map(repr, twice))} repeated")
        return value


@dataclass(frozen=True)
class Sourcing:
    """Build, buy, or partner, and why."""

    decision: str
    reasons: list[str]


@dataclass(frozen=True)
class Pitfall:
    id: str
    problem: str
    fix: str


@dataclass(frozen=True)
class ScoredUseCase:
    use_case: UseCase
    impact: float
    feasibility: float
    quadrant: str  # a key of QUADRANTS' values: do_first, plan, quick_win, avoid
    quadrant_label: str
    priority: int  # 1 = work on it first
    sourcing: Sourcing
    pitfalls: list[Pitfall]

    @property
    def name(self) -> str:
        return self.use_case.name

    def to_dict(self) -> dict[str, Any]:
        fields = {k: v for k, v in asdict(self).items() if k != "use_case"}
        return {**self.use_case.model_dump(), **fields}


def impact_of(use_case: UseCase) -> float:
    """(2 x business value + manual process today) / 3, on the 1-5 scale."""
    return round((2 * use_case.business_value + use_case.manual_process) / 3, 2)


def feasibility_of(use_case: UseCase) -> float:
    """The mean of data available, pattern recognition and error tolerance, on the 1-5 scale."""
    u = use_case
    return round((u.data_available + u.pattern_recognition + u.error_tolerance) / 3, 2)


def score_use_case(use_case: UseCase, priority: int = 0) -> ScoredUseCase:
    """One use case on the matrix, with its sourcing advice and pitfalls (`prioritise` ranks
    several and sets `priority`)."""
    impact, feasibility = impact_of(use_case), feasibility_of(use_case)
    key, label = QUADRANTS[(impact >= THRESHOLD, feasibility >= THRESHOLD)]
    return ScoredUseCase(
        use_case,
        impact,
        feasibility,
        key,
        label,
        priority,
        build_or_buy(use_case),
        pitfalls(use_case),
    )


def prioritise(use_cases: Iterable[UseCase]) -> list[ScoredUseCase]:
    """The use cases scored, in the order to work on them: by quadrant, then by impact x
    feasibility, then by name."""
    order = [key for key, _ in QUADRANTS.values()]
    scored = sorted(
        (score_use_case(u) for u in use_cases),
        key=lambda s: (order.index(s.quadrant), -s.impact * s.feasibility, s.name),
    )
    return [replace(s, priority=rank) for rank, s in enumerate(scored, start=1)]


def build_or_buy(use_case: UseCase) -> Sourcing:
    """Build when the use case sets the business apart and it has the data and the people to
    build it; buy when a vendor has it and it does not set the business apart; otherwise
    partner, or start by buying, and build the parts that turn out to matter."""
    u = use_case
    if u.core_differentiator and u.proprietary_data and u.in_house_skills:
        reasons = [
            "a core differentiator: owning the model keeps the edge",
            "proprietary data that a vendor's model is not trained on",
            "in-house skills to build and run it",
        ]
        if u.vendor_solution_exists:
            reasons.append("a vendor solution exists, but would give competitors the same model")
        return Sourcing("build", reasons)
    if u.vendor_solution_exists and not u.core_differentiator:
        reasons = [
            "a vendor solution exists",
            _not_differentiator(u),
            "buying is faster and leaves the team for what sets the business apart",
        ]
        return Sourcing("buy", reasons)
    return Sourcing("partner / start by buying", _partner_reasons(u))


def _partner_reasons(u: UseCase) -> list[str]:
    if u.core_differentiator:
        missing = [
            what
            for what, have in (("proprietary data", u.proprietary_data), ("in-house skills", u.in_house_skills))
            if not have
        ]  # fmt: skip
        reasons = [f"a core differentiator, but without {' or '.join(missing)} to build it alone"]
    else:
        reasons = [f"{_not_differentiator(u)}, so building protects no edge"]
    if u.vendor_solution_exists:
        reasons.append("start by buying, and build the parts that turn out to be an edge")
    else:
        reasons.append("no vendor solution known: work with a partner who has built one before")
    return reasons


def _not_differentiator(u: UseCase) -> str:
    if u.core_differentiator is None:
        return "not marked as a core differentiator"
    return "not a core differentiator"


def pitfalls(use_case: UseCase) -> list[Pitfall]:
    """What in the use case's plan is known to sink AI projects, each with its fix."""
    u, impact = use_case, impact_of(use_case)
    found = []
    if u.target_accuracy is not None and u.target_accuracy >= 1.0:
        found.append(Pitfall(
            "perfect_accuracy",
            "the target is 100% accuracy: no model is right every time, so it can never be met",
            "set the accuracy the business case needs (better than today's process is often "
            "enough) and plan for the errors that remain",
        ))  # fmt: skip
    if not u.success_metric:
        found.append(Pitfall(
            "no_success_metric",
            "no success metric: nobody can tell whether it worked",
            "name one measurable metric with today's baseline and a target "
            "(e.g. fraud losses per month down 20%)",
        ))  # fmt: skip
    if not u.data_prep_budget:
        found.append(Pitfall(
            "no_data_prep_budget",
            "no budget for data preparation" + (" stated" if u.data_prep_budget is None else ""),
            "budget cleaning, joining and labelling the data explicitly: they are usually most "
            "of the effort",
        ))  # fmt: skip
    if u.error_tolerance == 1 and impact >= THRESHOLD and not u.human_in_the_loop:
        found.append(Pitfall(
            "needs_human_in_the_loop",
            "a wrong answer is not tolerable, on a high-impact decision",
            "keep a human in the loop: the model proposes, a person decides "
            "(then set human_in_the_loop: yes)",
        ))  # fmt: skip
    if u.data_available <= 2:
        found.append(Pitfall(
            "little_data",
            "little of the data it needs is available: a feasibility risk",
            "collect and label the data first (a data project before the model), or pick a "
            "use case whose data exists",
        ))  # fmt: skip
    if u.pattern_recognition <= 2:
        found.append(Pitfall(
            "not_a_pattern_task",
            "the task is not mainly recognising patterns: rules or a process change may do "
            "as well for less",
            "build a rule-based baseline first and use a model only where it beats it",
        ))  # fmt: skip
    if u.time_to_value_months is not None and u.time_to_value_months > 12:
        found.append(Pitfall(
            "slow_time_to_value",
            f"value comes after {u.time_to_value_months} months: sponsors rarely wait that long",
            "cut a first release that shows value within 6 months",
        ))  # fmt: skip
    return found


def parse_use_cases(raw: Any, source: str = "use cases") -> list[UseCase]:
    """The use cases of a file's data: `{"use_cases": [...]}` or the list alone.

    Raises:
        InvalidInput: every problem of every use case at once, each naming the use case and
            the field.
    """
    if isinstance(raw, list):
        raw = {"use_cases": raw}
    if raw is None:
        raise InvalidInput(f"{source} is empty; list the use cases under use_cases:")
    if not isinstance(raw, dict):
        raise InvalidInput(
            f"{source} must hold a list `use_cases:` of use cases, got {type(raw).__name__}"
        )
    try:
        return _UseCaseFile.model_validate(raw).use_cases
    except ValidationError as error:
        problems = "; ".join(_problem(e, raw) for e in error.errors())
        raise InvalidInput(f"{source}: {problems}") from None


_FIELDS = ", ".join(UseCase.model_fields)
_HINTS = {
    **dict.fromkeys(CRITERIA, "a whole number from 1 (low) to 5 (high)"),
    "target_accuracy": "a fraction above 0 and at most 1 (0.95 for 95%)",
    "data_prep_budget": "an amount of 0 or more",
    "time_to_value_months": "a whole number of months from 1 to 120",
}


def _problem(error: Any, raw: dict[str, Any]) -> str:
    loc, kind = error["loc"], error["type"]
    message = error["msg"].removeprefix("Value error, ")
    if loc[:1] != ("use_cases",) or len(loc) == 1:  # the file's top level, or the list itself
        if kind == "extra_forbidden":
            return f"unknown key {loc[0]!r}; the file holds one key, use_cases"
        if kind == "missing":
            return "no use_cases: list; the file holds the use cases under use_cases:"
        if kind == "too_short":
            return "lists no use cases; add at least one under use_cases:"
        return f"use_cases: {message}"
    who = _who(loc[1], raw["use_cases"][loc[1]])
    if len(loc) == 2:
        return f"{who} must be a mapping of its fields ({_FIELDS}), got {shown(error['input'])}"
    field = str(loc[2])
    if kind == "extra_forbidden":
        return f"{who}: unknown field {field!r}; the fields are {_FIELDS}"
    hint = _HINTS.get(field)
    if kind == "missing":
        return f"{who}: {field} is missing" + (f" ({hint})" if hint else "")
    if hint:
        return f"{who}: {field} must be {hint}, got {shown(error['input'])}"
    return f"{who}: {field}: {message}"


def _who(index: int, item: Any) -> str:
    name = item.get("name") if isinstance(item, dict) else None
    return f"use case {index + 1}" + (f" ({name!r})" if isinstance(name, str) else "")


def load_use_cases(path: Path) -> list[ScoredUseCase]:
    """The use cases of a YAML or JSON file, scored and in priority order."""
    return prioritise(parse_use_cases(read_document(path, "use cases"), str(path)))
