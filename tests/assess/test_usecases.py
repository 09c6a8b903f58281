"""The use-case framework: impact and feasibility, the quadrants and the order to work in,
build-versus-buy, the pitfalls, and use-case files that cannot be used."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shipyard.assess import (
    THRESHOLD,
    UseCase,
    build_or_buy,
    load_use_cases,
    parse_use_cases,
    pitfalls,
    prioritise,
    score_use_case,
)
from shipyard.core.errors import InvalidInput

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "assess" / "use_cases.yaml"


def use_case(**fields: Any) -> UseCase:
    """A use case with middling scores and a clean plan, changed by `fields`."""
    base: dict[str, Any] = {
        "name": "fraud scoring",
        "description": "score card payments",
        "business_value": 3,
        "data_available": 3,
        "manual_process": 3,
        "pattern_recognition": 3,
        "error_tolerance": 3,
        "success_metric": "fraud losses down 20%",
        "data_prep_budget": 10_000,
    }
    return UseCase.model_validate({**base, **fields})


def test_impact_weighs_business_value_twice_and_feasibility_is_a_mean() -> None:
    scored = score_use_case(
        use_case(business_value=5, manual_process=2, data_available=4,
                 pattern_recognition=5, error_tolerance=1)
    )  # fmt: skip
    assert scored.impact == 4.0  # (2 * 5 + 2) / 3
    assert scored.feasibility == pytest.approx(3.33)  # (4 + 5 + 1) / 3


@pytest.mark.parametrize(
    ("scores", "quadrant", "label"),
    [
        ({"business_value": 5, "data_available": 5}, "do_first", "do first"),
        ({"business_value": 5, "data_available": 1, "pattern_recognition": 2}, "plan",
         "plan (invest in data/feasibility first)"),
        ({"business_value": 1, "manual_process": 2}, "quick_win", "quick win / only if cheap"),
        ({"business_value": 2, "data_available": 1, "error_tolerance": 2}, "avoid", "avoid"),
    ],
)  # fmt: skip
def test_each_quadrant(scores: dict[str, int], quadrant: str, label: str) -> None:
    scored = score_use_case(use_case(**scores))
    assert (scored.quadrant, scored.quadrant_label) == (quadrant, label)


def test_the_midpoint_of_the_scale_counts_as_high() -> None:
    assert THRESHOLD == 3.0
    assert score_use_case(use_case()).quadrant == "do_first"  # all 3s: impact 3, feasibility 3
    # (2 * 3 + 2) / 3 = 2.67 and (3 + 3 + 2) / 3 = 2.67: just below, on both axes
    below = score_use_case(use_case(manual_process=2, error_tolerance=2))
    assert (below.impact, below.feasibility) == (2.67, 2.67)
    assert below.quadrant == "avoid"


def test_use_cases_are_worked_on_by_quadrant_and_low_low_is_avoided_last() -> None:
    ranked = prioritise([
        use_case(name="avoid me", business_value=2, manual_process=2, data_available=1,
                 pattern_recognition=2, error_tolerance=2),
        use_case(name="quick", business_value=2, manual_process=2, data_available=5,
                 pattern_recognition=5, error_tolerance=5),
        use_case(name="plan", business_value=5, data_available=1, pattern_recognition=2),
        use_case(name="first, smaller", business_value=4),
        use_case(name="first, larger", business_value=5, data_available=5),
    ])  # fmt: skip
    assert [(u.priority, u.name, u.quadrant) for u in ranked] == [
        (1, "first, larger", "do_first"),
        (2, "first, smaller", "do_first"),
        (3, "plan", "plan"),
        (4, "quick", "quick_win"),
        (5, "avoid me", "avoid"),
    ]
    # a "quick win" can score more impact x feasibility than a "plan" and still comes after it
    assert ranked[3].impact * ranked[3].feasibility > ranked[2].impact * ranked[2].feasibility


def test_build_when_a_differentiator_with_proprietary_data_and_skills() -> None:
    sourcing = build_or_buy(
        use_case(core_differentiator=True, proprietary_data=True, in_house_skills=True,
                 vendor_solution_exists=True)
    )  # fmt: skip
    assert sourcing.decision == "build"
    assert any("core differentiator" in r for r in sourcing.reasons)
    assert any("proprietary data" in r for r in sourcing.reasons)
    assert any("in-house skills" in r for r in sourcing.reasons)
    assert any("competitors the same model" in r for r in sourcing.reasons)


@pytest.mark.parametrize("differentiator", [False, None])
def test_buy_when_a_vendor_has_it_and_it_is_no_differentiator(differentiator: bool | None) -> None:
    sourcing = build_or_buy(
        use_case(vendor_solution_exists=True, core_differentiator=differentiator,
                 in_house_skills=True, proprietary_data=True)
    )  # fmt: skip
    assert sourcing.decision == "buy"
    assert sourcing.reasons[0] == "a vendor solution exists"
    marked = "not a core differentiator" if differentiator is False else "not marked as"
    assert sourcing.reasons[1].startswith(marked)


def test_partner_when_a_differentiator_lacks_skills_or_data() -> None:
    sourcing = build_or_buy(
        use_case(core_differentiator=True, proprietary_data=True, in_house_skills=False,
                 vendor_solution_exists=True)
    )  # fmt: skip
    assert sourcing.decision == "partner / start by buying"
    assert sourcing.reasons[0] == (
        "a core differentiator, but without in-house skills to build it alone"
    )
    assert "start by buying" in sourcing.reasons[-1]


def test_partner_when_no_vendor_has_it_and_it_is_no_differentiator() -> None:
    sourcing = build_or_buy(use_case(core_differentiator=False, vendor_solution_exists=False))
    assert sourcing.decision == "partner / start by buying"
    assert sourcing.reasons[0] == "not a core differentiator, so building protects no edge"
    assert sourcing.reasons[1].startswith("no vendor solution known")


def test_a_clean_plan_has_no_pitfalls() -> None:
    assert pitfalls(use_case(target_accuracy=0.95, time_to_value_months=6)) == []


@pytest.mark.parametrize(
    ("fields", "pitfall", "fix"),
    [
        ({"target_accuracy": 1.0}, "perfect_accuracy", "set the accuracy the business case needs"),
        ({"success_metric": None}, "no_success_metric", "name one measurable metric"),
        ({"success_metric": "  "}, "no_success_metric", "name one measurable metric"),
        ({"data_prep_budget": None}, "no_data_prep_budget", "budget cleaning"),
        ({"data_prep_budget": 0}, "no_data_prep_budget", "budget cleaning"),
        ({"error_tolerance": 1, "business_value": 4, "data_available": 5},
         "needs_human_in_the_loop", "keep a human in the loop"),
        ({"data_available": 2}, "little_data", "collect and label the data first"),
        ({"pattern_recognition": 2}, "not_a_pattern_task", "rule-based baseline"),
        ({"time_to_value_months": 18}, "slow_time_to_value", "within 6 months"),
    ],
)  # fmt: skip
def test_each_pitfall_is_flagged_with_its_fix(
    fields: dict[str, Any], pitfall: str, fix: str
) -> None:
    (found,) = pitfalls(use_case(**fields))
    assert found.id == pitfall
    assert fix in found.fix
    assert found.problem


def test_no_tolerance_for_errors_needs_a_human_only_on_high_impact_and_until_one_is_planned() -> (
    None
):
    low_impact = use_case(error_tolerance=1, business_value=2, data_available=5)
    assert [p.id for p in pitfalls(low_impact)] == []
    planned = use_case(error_tolerance=1, business_value=5, human_in_the_loop="yes")
    assert [p.id for p in pitfalls(planned)] == []


def test_the_fraud_team_examples_cover_every_quadrant() -> None:
    ranked = load_use_cases(EXAMPLE)
    assert [u.quadrant for u in ranked] == ["do_first", "do_first", "plan", "quick_win", "avoid"]
    assert ranked[0].name == "Card fraud scoring"
    assert ranked[0].sourcing.decision == "build"
    assert ranked[1].sourcing.decision == "buy"
    takeover = {p.id for p in ranked[2].pitfalls}
    assert {"perfect_accuracy", "needs_human_in_the_loop", "little_data"} <= takeover


def test_a_bare_list_reads_like_the_use_cases_key() -> None:
    raw = [use_case().model_dump()]
    assert parse_use_cases(raw) == parse_use_cases({"use_cases": raw})


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"business_value": 6},
         "use case 1 ('fraud scoring'): business_value must be a whole number from 1 (low) to 5 (high), got 6"),
        ({"error_tolerance": 0}, "error_tolerance must be a whole number from 1 (low) to 5"),
        ({"data_available": "3"}, "data_available must be a whole number from 1 (low) to 5 (high), got '3'"),
        ({"target_accuracy": 95}, "target_accuracy must be a fraction above 0 and at most 1 (0.95 for 95%), got 95"),
        ({"owner": "risk"}, "use case 1 ('fraud scoring'): unknown field 'owner'; the fields are name, description"),
        ({"core_differentiator": "perhaps"}, "core_differentiator: answer yes or no"),
        ({"business_value": None}, "business_value must be a whole number"),
    ],
)  # fmt: skip
def test_a_bad_field_names_the_use_case_the_field_and_the_fix(
    change: dict[str, Any], expected: str
) -> None:
    raw = {**use_case().model_dump(), **change}
    with pytest.raises(InvalidInput) as error:
        parse_use_cases({"use_cases": [raw]}, "use_cases.yaml")
    assert expected in error.value.message
    assert error.value.message.startswith("use_cases.yaml: ")


def test_every_problem_is_listed_at_once() -> None:
    one = use_case(name="one").model_dump()
    two = {k: v for k, v in use_case(name="two").model_dump().items() if k != "manual_process"}
    with pytest.raises(InvalidInput) as error:
        parse_use_cases([{**one, "business_value": 9}, two])
    message = error.value.message
    assert "use case 1 ('one'): business_value must be" in message
    assert "use case 2 ('two'): manual_process is missing" in message


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"use_cases": []}, "lists no use cases"),
        (None, "is empty"),
        ("fraud", "must hold a list `use_cases:`"),
        ({"cases": []}, "unknown key 'cases'"),
        (["fraud"], "use case 1 must be a mapping of its fields"),
    ],
)
def test_files_of_the_wrong_shape_say_what_they_should_hold(raw: Any, expected: str) -> None:
    with pytest.raises(InvalidInput, match=expected):
        parse_use_cases(raw)


def test_two_use_cases_with_one_name_are_refused() -> None:
    raw = [use_case().model_dump(), use_case().model_dump()]
    with pytest.raises(InvalidInput, match="each name must be unique; 'fraud scoring' repeated"):
        parse_use_cases(raw)
