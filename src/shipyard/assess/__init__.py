"""Is the organisation ready for AI, and which use case first?

The readiness questionnaire (15 yes/no questions over data, technical and organisational
readiness, scored into three bands, every "no" named as a gap with its remedy) and the use-case
framework (candidates scored on five criteria, placed on the impact-versus-feasibility matrix,
with build-versus-buy guidance and the pitfalls to avoid), rendered as HTML or Markdown.
`shipyard assess` is the command. And the maturity ladder (levels 0-3): what this installation
actually runs, the evidence for each criterion and what the next level needs (`shipyard
maturity`; loaded on first use, since it reads every capability).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from shipyard.assess._readiness import (
    AREAS,
    BANDS,
    QUESTIONS,
    AreaScore,
    Gap,
    Question,
    Readiness,
    answers_template,
    band_for,
    load_answers,
    parse_answers,
    score_answers,
)
from shipyard.assess._report import (
    Assessment,
    MatrixChart,
    matrix_chart,
    render_html,
    render_markdown,
)
from shipyard.assess._usecases import (
    CRITERIA,
    QUADRANTS,
    THRESHOLD,
    Pitfall,
    ScoredUseCase,
    Sourcing,
    UseCase,
    build_or_buy,
    feasibility_of,
    impact_of,
    load_use_cases,
    parse_use_cases,
    pitfalls,
    prioritise,
    score_use_case,
)

if TYPE_CHECKING:  # the maturity inspection reads every capability: loaded when first used
    from shipyard.assess._maturity import (
        MATURITY_LEVELS,
        MaturityCriterion,
        MaturityReport,
        inspect_maturity,
    )

__all__ = [
    "AREAS",
    "BANDS",
    "CRITERIA",
    "MATURITY_LEVELS",
    "QUADRANTS",
    "QUESTIONS",
    "THRESHOLD",
    "AreaScore",
    "Assessment",
    "Gap",
    "MatrixChart",
    "MaturityCriterion",
    "MaturityReport",
    "Pitfall",
    "Question",
    "Readiness",
    "ScoredUseCase",
    "Sourcing",
    "UseCase",
    "answers_template",
    "band_for",
    "build_or_buy",
    "feasibility_of",
    "impact_of",
    "inspect_maturity",
    "load_answers",
    "load_use_cases",
    "matrix_chart",
    "parse_answers",
    "parse_use_cases",
    "pitfalls",
    "prioritise",
    "render_html",
    "render_markdown",
    "score_answers",
    "score_use_case",
]

_LAZY = {"MATURITY_LEVELS", "MaturityCriterion", "MaturityReport", "inspect_maturity"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module("shipyard.assess._maturity"), name)
    raise AttributeError(f"module 'shipyard.assess' has no attribute {name!r}")
