"""One text form per category value: what labels, classes and drift counts compare."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shipyard.core.values import category_text
from shipyard.logstore import label_text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1, "1"),
        (1.0, "1"),
        (np.int64(1), "1"),
        (np.float64(1.0), "1"),
        (np.float32(2.0), "2"),
        ("1", "1"),
        (True, "true"),
        (np.bool_(True), "true"),
        (False, "false"),
        (0.25, "0.25"),
        ("fraud", "fraud"),
        (None, None),
        (math.nan, None),
        (np.float64("nan"), None),
    ],
)
def test_every_spelling_of_a_category_has_one_text(value: object, text: str | None) -> None:
    assert category_text(value) == text
    assert label_text(value) == text  # the log's labels use the same normaliser
