"""The readiness questionnaire: its questions, its scoring bands, the gaps each "no" names, and
answers files that cannot be used."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from shipyard.assess import (
    AREAS,
    BANDS,
    QUESTIONS,
    Question,
    answers_template,
    band_for,
    load_answers,
    parse_answers,
    score_answers,
)
from shipyard.core.errors import InvalidInput

IDS = [q.id for q in QUESTIONS]


def answers(yes: int | set[str]) -> dict[str, str]:
    """Every question answered: the first `yes` questions (or those named) yes, the rest no."""
    chosen = set(IDS[:yes]) if isinstance(yes, int) else yes
    return {id_: "yes" if id_ in chosen else "no" for id_ in IDS}


def answers_file(folder: Path, yes: int | set[str], suffix: str = ".yaml") -> Path:
    path = folder / f"answers{suffix}"
    data = answers(yes)
    path.write_text(json.dumps(data) if suffix == ".json" else yaml.safe_dump(data))
    return path


def test_fifteen_questions_five_per_area_with_stable_ids() -> None:
    assert IDS == [
        "data.digital", "data.history", "data.labels", "data.quality", "data.rights",
        "tech.compute", "tech.pipelines", "tech.apis", "tech.skills", "tech.operations",
        "org.sponsor", "org.problem", "org.budget", "org.users", "org.governance",
    ]  # fmt: skip
    for area in AREAS:
        assert sum(q.area == area for q in QUESTIONS) == 5
    for q in QUESTIONS:
        assert q.text.endswith("?")
        assert q.gap
        assert q.remedy


@pytest.mark.parametrize(
    ("yes", "band"),
    [
        (0, "needs 12+ months of groundwork"),
        (7, "needs 12+ months of groundwork"),
        (8, "needs 6-12 months of preparation"),
        (11, "needs 6-12 months of preparation"),
        (12, "ready for AI pilots"),
        (15, "ready for AI pilots"),
    ],
)
def test_each_band_boundary_from_an_answers_file(tmp_path: Path, yes: int, band: str) -> None:
    readiness = load_answers(answers_file(tmp_path, yes))
    assert readiness.score == yes
    assert readiness.out_of == 15
    assert readiness.band == band
    assert len(readiness.gaps) == 15 - yes


def test_the_bands_cover_every_score_once() -> None:
    covered = [score for low, high, _ in BANDS for score in range(low, high + 1)]
    assert sorted(covered) == list(range(16))
    with pytest.raises(InvalidInput, match="0-15"):
        band_for(16)
    with pytest.raises(InvalidInput, match="0-15"):
        band_for(-1)


@pytest.mark.parametrize("question", QUESTIONS, ids=IDS)
def test_each_no_is_named_as_a_gap_with_its_remedy(question: Question) -> None:
    readiness = score_answers(answers(set(IDS) - {question.id}))
    (gap,) = readiness.gaps
    assert gap.id == question.id
    assert gap.area == AREAS[question.area]
    assert (gap.question, gap.gap, gap.remedy) == (question.text, question.gap, question.remedy)
    assert readiness.score == 14


def test_area_scores_and_the_weakest_area() -> None:
    yes = {"data.digital", "data.history"} | {i for i in IDS if i.startswith("tech.")}
    yes |= {"org.sponsor", "org.problem", "org.budget"}
    readiness = score_answers(answers(yes))
    assert [(a.name, a.score, a.out_of) for a in readiness.areas] == [
        ("data", 2, 5),
        ("technical", 5, 5),
        ("organisational", 3, 5),
    ]
    assert readiness.weakest == "data"
    assert readiness.score == 10


def test_a_tie_for_weakest_names_the_first_area_and_all_yes_names_none() -> None:
    tied = score_answers(answers({"data.digital", "tech.compute", "org.sponsor"}))
    assert tied.weakest == "data"
    perfect = score_answers(answers(15))
    assert perfect.weakest is None
    assert perfect.gaps == []


@pytest.mark.parametrize(
    ("yes", "no"),
    [("yes", "no"), ("YES", "No"), ("true", "false"), (True, False), (1, 0), ("1", "0")],
)
def test_answers_accept_yes_no_true_false_one_zero(yes: object, no: object) -> None:
    raw = dict.fromkeys(IDS[:9], yes) | dict.fromkeys(IDS[9:], no)
    assert score_answers(raw).score == 9


def test_json_answers_files_are_read_like_yaml(tmp_path: Path) -> None:
    assert load_answers(answers_file(tmp_path, 12, ".json")).band == "ready for AI pilots"


def test_an_unknown_question_id_is_refused_naming_the_known_ones() -> None:
    raw = {**answers(15), "data.volume": "yes"}
    with pytest.raises(InvalidInput) as error:
        parse_answers(raw, "answers.yaml")
    message = error.value.message
    assert message.startswith("answers.yaml: unknown question id 'data.volume'")
    assert all(id_ in message for id_ in IDS)


def test_missing_answers_are_listed() -> None:
    raw = answers(15)
    del raw["data.labels"], raw["org.budget"]
    with pytest.raises(InvalidInput, match=r"no answer for data\.labels, org\.budget"):
        parse_answers(raw)


@pytest.mark.parametrize("value", ["maybe", 2, 0.5, ["yes"]])
def test_an_answer_that_is_not_yes_or_no_is_refused(value: object) -> None:
    raw = {**answers(15), "tech.apis": value}
    with pytest.raises(InvalidInput, match=r"tech\.apis: answer yes or no .*got"):
        parse_answers(raw)


def test_the_template_lists_every_question_and_scores_once_filled_in(tmp_path: Path) -> None:
    template = answers_template()
    for q in QUESTIONS:
        assert f"# {q.text}\n{q.id}:\n" in template
    path = tmp_path / "answers.yaml"
    path.write_text(template)
    with pytest.raises(InvalidInput, match=r"no answer for data\.digital, data\.history"):
        load_answers(path)  # the blanks are unanswered, not "no"
    path.write_text(template.replace(":\n", ": yes\n"))
    assert load_answers(path).score == 15


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("answers.yaml", "data.digital: [yes\n", r"is not valid YAML \(line \d+, column \d+\)"),
        ("answers.json", '{"data.digital": ', r"is not valid JSON \(line 1, column \d+\)"),
        ("answers.yaml", "- yes\n- no\n", "must map question ids to yes or no"),
        ("answers.yaml", "", "is empty"),
        ("answers.txt", "data.digital: yes", r"write the answers as \.yaml, \.yml or \.json"),
    ],
)
def test_files_that_cannot_be_used_say_why(
    tmp_path: Path, name: str, text: str, expected: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InvalidInput, match=expected):
        load_answers(path)


def test_a_missing_answers_file_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"does not exist \(shipyard assess --template"):
        load_answers(tmp_path / "nowhere.yaml")


def test_the_example_answers_file_scores() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "assess" / "answers.yaml"
    readiness = load_answers(example)
    assert readiness.score == 11
    assert readiness.band == "needs 6-12 months of preparation"
    assert readiness.weakest == "organisational"
