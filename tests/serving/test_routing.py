"""Which variant answers: sticky by key, in proportion to the weights, stable while ramping,
and a different slice of customers for each candidate."""

from __future__ import annotations

import math
import random

import pytest

from shipyard.registry import Deployment, Variant
from shipyard.serving._routing import choose, key_point


def _deployment(*variants: Variant, name: str = "fraud-detector") -> Deployment:
    return Deployment(name, 1, variants, None, None, None, "t", "")


def _within_bounds(hits: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    """Binomial count within `sigmas` standard deviations (a false alarm is < 1 in 15,000)."""
    return abs(hits - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


CANARY_5 = _deployment(Variant(3, 95.0, "primary"), Variant(4, 5.0, "canary"))


def test_canary_sends_five_percent_of_keys_to_the_candidate() -> None:
    n = 20_000
    hits = sum(choose(CANARY_5, f"customer-{i}").version == 4 for i in range(n))
    assert _within_bounds(hits, n, 0.05)


def test_the_same_key_always_lands_on_the_same_variant() -> None:
    for i in range(500):
        key = f"customer-{i}"
        assert len({choose(CANARY_5, key).version for _ in range(5)}) == 1


def test_raising_a_canary_keeps_every_key_already_on_it() -> None:
    ramped = _deployment(Variant(3, 75.0, "primary"), Variant(4, 25.0, "canary"))
    keys = [f"customer-{i}" for i in range(5000)]
    before = {k for k in keys if choose(CANARY_5, k).version == 4}
    after = {k for k in keys if choose(ramped, k).version == 4}
    assert before <= after
    assert _within_bounds(len(after), len(keys), 0.25)


def test_raising_either_of_two_arms_keeps_every_key_already_on_it() -> None:
    def split(ab: float, canary: float) -> Deployment:
        return _deployment(
            Variant(1, 100 - ab - canary, "primary"),
            Variant(2, ab, "ab"),
            Variant(3, canary, "canary"),
        )

    keys = [f"customer-{i}" for i in range(5000)]
    for before, after, version in [
        (split(10, 5), split(10, 25), 3),
        (split(10, 5), split(30, 5), 2),
    ]:
        was = {k for k in keys if choose(before, k).version == version}
        now = {k for k in keys if choose(after, k).version == version}
        assert was <= now
        assert len(now) > len(was)


def test_each_candidate_gets_its_own_slice_of_customers() -> None:
    """Salted by the version, two candidates' 5% canaries overlap as independent draws do
    (5% of 5%), not entirely: the same customers are not every candidate's guinea pigs."""
    other = _deployment(Variant(3, 95.0, "primary"), Variant(5, 5.0, "canary"))
    n = 20_000
    keys = [f"customer-{i}" for i in range(n)]
    first = {k for k in keys if choose(CANARY_5, k).version == 4}
    second = {k for k in keys if choose(other, k).version == 5}
    assert _within_bounds(len(second), n, 0.05)
    assert _within_bounds(len(first & second), n, 0.05 * 0.05)


def test_the_primary_answers_every_key_no_arm_takes() -> None:
    keys = [f"customer-{i}" for i in range(2000)]
    on_canary = {k for k in keys if choose(CANARY_5, k).version == 4}
    alone = _deployment(Variant(3, 100.0, "primary"))
    assert {choose(CANARY_5, k).version for k in set(keys) - on_canary} == {3}
    assert {choose(alone, k).version for k in keys} == {3}


def test_ab_split_with_three_arms_follows_the_weights() -> None:
    split = _deployment(
        Variant(1, 50.0, "primary"), Variant(2, 30.0, "ab"), Variant(3, 20.0, "canary")
    )
    n = 20_000
    counts = {1: 0, 2: 0, 3: 0}
    for i in range(n):
        counts[choose(split, f"k{i}").version] += 1
    assert _within_bounds(counts[1], n, 0.5)
    assert _within_bounds(counts[2], n, 0.3)
    assert _within_bounds(counts[3], n, 0.2)


def test_without_a_key_the_choice_is_weighted_random() -> None:
    rng = random.Random(1)
    n = 20_000
    hits = sum(choose(CANARY_5, None, rng).version == 4 for _ in range(n))
    assert _within_bounds(hits, n, 0.05)


def test_shadows_never_answer_and_a_single_primary_always_does() -> None:
    shadowed = _deployment(Variant(1, 100.0, "primary"), Variant(2, 0.0, "shadow"))
    assert {choose(shadowed, f"k{i}").version for i in range(2000)} == {1}


def test_key_points_are_uniform_and_differ_per_model() -> None:
    points = [key_point("fraud-detector", f"k{i}") for i in range(10_000)]
    assert all(0 <= p < 100 for p in points)
    below = sum(p < 50 for p in points)
    assert _within_bounds(below, 10_000, 0.5)
    same = sum(
        (key_point("fraud-detector", f"k{i}") < 5) == (key_point("churn", f"k{i}") < 5)
        for i in range(2000)
    )
    assert same < 2000  # a customer in one model's canary is not in every model's canary
    salted = [key_point("fraud-detector", f"k{i}", 4) for i in range(10_000)]
    assert _within_bounds(sum(p < 50 for p in salted), 10_000, 0.5)
    assert salted != points


@pytest.mark.parametrize("key", ["", "ünïcode", "x" * 1000])
def test_any_string_is_a_routing_key(key: str) -> None:
    assert choose(CANARY_5, key).version in {3, 4}
