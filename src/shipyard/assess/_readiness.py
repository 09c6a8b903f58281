"""Is the organisation ready for AI? Fifteen yes/no questions, five per area (data, technical,
organisational), one point per yes.

    12-15  ready for AI pilots
     8-11  needs 6-12 months of preparation
     0-7   needs 12+ months of groundwork

Every "no" is a gap, named with what to do about it; each area is scored out of five and the
weakest one named (on a tie, the first in the order data, technical, organisational: data is
what the other two build on).

Answers come as a mapping of question id to yes/no (`data.labels: yes`), from a YAML or JSON
file (`load_answers`) or from the terminal; `answers_template()` writes a file to fill in.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model

from shipyard.core.errors import InvalidInput

__all__ = [
    "AREAS",
    "BANDS",
    "QUESTIONS",
    "AreaScore",
    "Gap",
    "Question",
    "Readiness",
    "YesNo",
    "answers_template",
    "band_for",
    "load_answers",
    "parse_answers",
    "read_document",
    "score_answers",
    "shown",
]

AREAS: dict[str, str] = {"data": "data", "tech": "technical", "org": "organisational"}

# (lowest score, highest score, what the band means), highest band first
BANDS: tuple[tuple[int, int, str], ...] = (
    (12, 15, "ready for AI pilots"),
    (8, 11, "needs 6-12 months of preparation"),
    (0, 7, "needs 12+ months of groundwork"),
)


@dataclass(frozen=True)
class Question:
    """One yes/no question: a "no" is the `gap`, and `remedy` says what to do about it."""

    id: str
    text: str
    gap: str
    remedy: str

    @property
    def area(self) -> str:
        return self.id.split(".", 1)[0]


QUESTIONS: tuple[Question, ...] = (
    Question(
        "data.digital",
        "Is the data the use case needs collected digitally and accessible to the team?",
        "the data is not digital, or the team cannot get at it",
        "digitise the process where it is still on paper and give the team read access to the "
        "source systems (an export or a replica) before any modelling",
    ),
    Question(
        "data.history",
        "Is there enough history: a year or more of records, covering the cases that matter?",
        "too little history to learn from",
        "log every event with its timestamp from now on, and scope a first pilot to the data "
        "there is",
    ),
    Question(
        "data.labels",
        "Are past outcomes labelled (for each case, do you know what happened in the end)?",
        "no labelled outcomes to learn from or to measure against",
        "record outcomes where they are decided (case management, chargebacks, returns) and "
        "join them to the records; budget for labelling a first sample by hand",
    ),
    Question(
        "data.quality",
        "Is data quality owned by someone and measured (missing values, duplicates, freshness)?",
        "nobody owns or measures data quality",
        "name an owner for each source and add checks for missing values, duplicates and "
        "freshness to the pipelines",
    ),
    Question(
        "data.rights",
        "Do you have the legal right to use the data for this purpose (privacy review done)?",
        "the right to use the data is not established",
        "have legal or the data-protection officer review the purpose (lawful basis, impact "
        "assessment) and minimise or pseudonymise personal data",
    ),
    Question(
        "tech.compute",
        "Is compute available for training and serving models (servers or a cloud account)?",
        "no compute to train or serve models on",
        "agree on where models will run (a cloud account or servers) and who provisions them",
    ),
    Question(
        "tech.pipelines",
        "Do automated pipelines bring data from the source systems to where models are trained?",
        "data moves by hand, or not at all",
        "automate extraction from the source systems on a schedule, with the data's versions "
        "recorded, before training anything on it",
    ),
    Question(
        "tech.apis",
        "Do the systems where decisions are made expose APIs to act on a model's predictions?",
        "no way to put a prediction where the decision is made",
        "add an API or an event hook to the deciding system (or start with batch scores "
        "written back to a table it reads)",
    ),
    Question(
        "tech.skills",
        "Are there in-house ML and data-engineering skills (someone who has shipped a model)?",
        "no in-house ML or data-engineering skills",
        "hire or train at least one ML engineer, and pair them with a partner for the first "
        "project",
    ),
    Question(
        "tech.operations",
        "Are monitoring and security practices in place for production systems?",
        "no monitoring or security practices to run a model in production with",
        "set up alerting, access control and audit logs for production services; a model needs "
        "them plus drift and accuracy monitoring",
    ),
    Question(
        "org.sponsor",
        "Is there an executive sponsor who owns the outcome and can unblock teams and budget?",
        "no executive sponsor",
        "find a sponsor who owns the business outcome and will review progress monthly",
    ),
    Question(
        "org.problem",
        "Is the business problem defined, with a success metric and its current baseline?",
        "no defined problem with a success metric",
        "write the problem down with one measurable success metric, today's baseline and the "
        "target that would make the project worth it",
    ),
    Question(
        "org.budget",
        "Is there a budget that covers data preparation, not only building the model?",
        "no budget for data preparation",
        "budget data preparation explicitly: cleaning, joining and labelling are usually most "
        "of the effort",
    ),
    Question(
        "org.users",
        "Are the end users involved from the start, with a plan for change management?",
        "the people who will use the model are not involved",
        "bring end users into the design, plan training and the change to their process, and "
        "agree how they can overrule the model",
    ),
    Question(
        "org.governance",
        "Is someone accountable for AI governance and ethics (bias, explanations, sign-off)?",
        "nobody is accountable for governance and ethics",
        "name an owner for AI governance, with a review of bias, explainability and risk "
        "before each launch",
    ),
)

_KNOWN = ", ".join(q.id for q in QUESTIONS)
_YES, _NO = ("yes", "true", "1", "y"), ("no", "false", "0", "n")
_HOW_TO_ANSWER = "answer yes or no (true/false and 1/0 work too)"


def shown(value: Any, limit: int = 40) -> str:
    """A value from a file as an error message quotes it, cut short when long."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _yes_no(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | str) and str(value).strip().lower() in _YES + _NO:
        return str(value).strip().lower() in _YES
    if value is None:
        raise ValueError(f"no answer: {_HOW_TO_ANSWER}")
    raise ValueError(f"{_HOW_TO_ANSWER}, got {shown(value)}")


YesNo = Annotated[bool, BeforeValidator(_yes_no)]
"""A yes/no answer: yes/no, true/false, 1/0 (and y/n), in any case."""

# one field per question, named by its id (the ids hold dots, so they are aliases)
_Answers: type[BaseModel] = create_model(
    "Answers",
    __config__=ConfigDict(extra="forbid", frozen=True),
    **{q.id.replace(".", "_"): (YesNo, Field(alias=q.id)) for q in QUESTIONS},  # type: ignore[call-overload]
)


def band_for(score: int) -> str:
    """What a questionnaire score (0-15) means."""
    if not 0 <= score <= len(QUESTIONS):
        raise InvalidInput(f"a readiness score is 0-{len(QUESTIONS)}, got {score}")
    return next(text for lowest, highest, text in BANDS if lowest <= score <= highest)


@dataclass(frozen=True)
class AreaScore:
    area: str
    name: str
    score: int
    out_of: int


@dataclass(frozen=True)
class Gap:
    """A question answered "no": what is missing, and what to do about it."""

    id: str
    area: str
    question: str
    gap: str
    remedy: str


@dataclass(frozen=True)
class Readiness:
    """The scored questionnaire."""

    answers: dict[str, bool]
    score: int
    band: str
    areas: list[AreaScore]
    gaps: list[Gap]
    weakest: str | None  # the area's name; None when every answer is yes
    out_of: int = field(default=len(QUESTIONS))

    @property
    def level(self) -> int:
        """The band's place in BANDS: 0 ready, 1 needs preparation, 2 needs groundwork."""
        return [text for _, _, text in BANDS].index(self.band)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_answers(raw: Any, source: str = "answers") -> dict[str, bool]:
    """Every question's answer from a mapping of question id to yes/no.

    Raises:
        InvalidInput: not a mapping, an unknown question id, a missing answer or one that is
            not yes or no; the message lists every problem at once.
    """
    if raw is None:
        raise InvalidInput(
            f"{source} is empty; answer each question as `id: yes` or `id: no` "
            "(shipyard assess --template FILE writes them all)"
        )
    if not isinstance(raw, Mapping):
        raise InvalidInput(
            f"{source} must map question ids to yes or no (data.digital: yes), "
            f"got {type(raw).__name__}; `shipyard assess --template FILE` writes one to fill in"
        )
    try:
        answers = _Answers.model_validate(raw)
    except ValidationError as error:
        raise InvalidInput(f"{source}: {_problems(error)}") from None
    return {q.id: bool(getattr(answers, q.id.replace(".", "_"))) for q in QUESTIONS}


def _problems(error: ValidationError) -> str:
    unknown = [str(e["loc"][0]) for e in error.errors() if e["type"] == "extra_forbidden"]
    # an id written without a value (as the template leaves them) is missing too
    missing = [
        str(e["loc"][0])
        for e in error.errors()
        if e["type"] == "missing" or (e["type"] == "value_error" and e["input"] is None)
    ]
    wrong = [
        f"{e['loc'][0]}: {e['msg'].removeprefix('Value error, ')}"
        for e in error.errors()
        if str(e["loc"][0]) not in (*unknown, *missing)
    ]
    found = []
    if unknown:
        found.append(f"unknown question id {', '.join(map(repr, unknown))}; the ids are {_KNOWN}")
    if missing:
        found.append(f"no answer for {', '.join(missing)} (add `id: yes` or `id: no`)")
    return "; ".join(found + wrong)


def score_answers(answers: Any, source: str = "answers") -> Readiness:
    """The score, band, per-area scores, gaps and weakest area of a full set of answers (a
    mapping of question id to yes/no; `parse_answers` says what it accepts)."""
    parsed = parse_answers(answers, source)
    areas = [
        AreaScore(
            area,
            name,
            sum(parsed[q.id] for q in QUESTIONS if q.area == area),
            sum(1 for q in QUESTIONS if q.area == area),
        )
        for area, name in AREAS.items()
    ]
    gaps = [
        Gap(q.id, AREAS[q.area], q.text, q.gap, q.remedy) for q in QUESTIONS if not parsed[q.id]
    ]
    score = sum(parsed.values())
    weakest = min(areas, key=lambda a: a.score / a.out_of)  # min keeps the first of a tie
    return Readiness(
        answers=parsed,
        score=score,
        band=band_for(score),
        areas=areas,
        gaps=gaps,
        weakest=weakest.name if gaps else None,
    )


def load_answers(path: Path) -> Readiness:
    """The scored questionnaire of a YAML or JSON answers file."""
    return score_answers(read_document(path, "answers"), str(path))


def read_document(path: Path, what: str) -> Any:
    """The data of a YAML (.yaml, .yml) or JSON (.json) file, or an `InvalidInput` saying why
    there is none."""
    import yaml  # only when a file is read

    if not path.is_file():
        hint = " (shipyard assess --template FILE writes one)" if what == "answers" else ""
        raise InvalidInput(f"{what} file {str(path)!r} does not exist{hint}")
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise InvalidInput(f"cannot read {path.name}: write the {what} as .yaml, .yml or .json")
    try:
        text = path.read_text(encoding="utf-8")
        return json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as error:
        raise InvalidInput(
            f"{path} is not valid JSON (line {error.lineno}, column {error.colno}): {error.msg}"
        ) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise InvalidInput(f"{path} is not valid YAML{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidInput(f"{path} cannot be read: {error}") from None


def answers_template() -> str:
    """An answers file to fill in: every question, grouped by area, its text as a comment."""
    lines = [
        "# shipyard assess: the AI-readiness questionnaire, one point per yes.",
        "# Answer each question yes or no, then run: shipyard assess --answers THIS_FILE",
        "# Scores: " + "; ".join(f"{low}-{high} {text}" for low, high, text in BANDS),
    ]
    for area, name in AREAS.items():
        lines += ["", f"# -- {name} --"]
        for q in (q for q in QUESTIONS if q.area == area):
            lines += [f"# {q.text}", f"{q.id}:"]
    return "\n".join(lines) + "\n"
