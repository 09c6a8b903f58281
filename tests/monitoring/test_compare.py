"""`compare()`: verdicts that combine significance and size, on the drifts that matter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shipyard.core import errors as e
from shipyard.monitoring import compare

LEVELS = ["A", "B", "C", "D", "E"]


def _frames(n: int, seed: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference and current with four real drifts and six columns that did not change."""
    rng_r, rng_c = np.random.default_rng(seed), np.random.default_rng(seed + 1)

    def side(rng: np.random.Generator, current: bool) -> pd.DataFrame:
        data = {
            "shifted": rng.normal(10.6 if current else 10, 2, n),  # mean + 0.3 sd
            "wider": rng.normal(0, np.sqrt(1.5) if current else 1, n),  # variance x 1.5
            "gappier": rng.normal(50, 5, n),
            "steady_normal": rng.normal(0, 1, n),
            "steady_lognormal": rng.lognormal(3, 0.8, n),
            "steady_uniform": rng.uniform(0, 100, n),
            "steady_gamma": rng.gamma(2, 3, n),
        }
        gaps = rng.random(n) < (0.05 if current else 0.01)  # missing 1% -> 5%
        data["gappier"][gaps] = np.nan
        shares = [0.28, 0.30, 0.15, 0.12, 0.10, 0.05] if current else [0.40, 0.30, 0.15, 0.10, 0.05]
        levels = [*LEVELS, "F_new"] if current else LEVELS
        data["newcomer"] = rng.choice(levels, n, p=shares)
        data["steady_cat"] = rng.choice(["x", "y", "z"], n, p=[0.5, 0.3, 0.2])
        return pd.DataFrame(data)

    return side(rng_r, False), side(rng_c, True)


@pytest.fixture(scope="module")
def large() -> tuple[pd.DataFrame, pd.DataFrame]:
    return _frames(400_000)


def test_real_drifts_are_caught_and_unchanged_columns_stay_quiet_at_scale(
    large: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    report = compare(*large)
    assert sorted(report.drifted) == ["gappier", "newcomer", "shifted", "wider"]
    for name in (
        "steady_normal",
        "steady_lognormal",
        "steady_uniform",
        "steady_gamma",
        "steady_cat",
    ):
        assert report.columns[name].status == "ok", report.columns[name].reason
    assert report.columns["gappier"].missing["drift"]
    assert "missing rate 1.0% -> 5.0%" in report.columns["gappier"].reason
    assert "categories the reference never had (F_new)" in report.columns["newcomer"].reason
    assert report.drift_share == pytest.approx(4 / 9)
    assert not report.dataset_drift
    # ranked by effect size: the three distribution changes first (gappier moved only in missing rate)
    assert {c.column for c in report.ranked()[:3]} == {"newcomer", "shifted", "wider"}


def test_a_significant_but_negligible_change_is_not_drift_by_default() -> None:
    rng = np.random.default_rng(3)
    n = 1_000_000
    ref = pd.DataFrame({"amount": rng.normal(0, 1, n)})
    cur = pd.DataFrame({"amount": rng.normal(0.02, 1, n)})  # 0.02 sd: real, but too small to matter
    default = compare(ref, cur).columns["amount"]
    by_p_value = compare(ref, cur, methods="ks", thresholds={"wasserstein": 0.0}).columns["amount"]
    assert default.p_adjusted is not None
    assert default.p_adjusted < 1e-6
    assert default.status == "ok"
    assert by_p_value.drift  # what a p-value-only verdict says at a million rows


def test_psi_at_point_one_misses_a_small_mean_shift_that_the_default_catches(
    large: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    by_psi = compare(*large, methods={"shifted": "psi_sturges"}, columns=["shifted"])
    assert by_psi.columns["shifted"].effect_size < 0.1  # Evidently's PSI threshold would miss it
    assert not by_psi.columns["shifted"].drift
    assert compare(*large, columns=["shifted"]).columns["shifted"].drift


def test_small_samples_lean_on_significance(large: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    ref, cur = large
    sixty = ref.iloc[:60], cur.iloc[:60]
    tiny = compare(*sixty, columns=["shifted", "steady_normal"])
    by_size_alone = compare(*sixty, methods="wasserstein", columns=["shifted", "steady_normal"])
    for name in ("shifted", "steady_normal"):
        column = tiny.columns[name]
        # at 60 rows noise alone looks big: the effect is over its threshold on both columns,
        # and a size-only verdict calls both drift...
        assert column.effect_size >= column.threshold
        assert by_size_alone.columns[name].drift
        # ...but neither test is significant after correction, so neither is drift
        assert column.p_adjusted is not None
        assert column.p_adjusted >= tiny.thresholds["alpha"]
        assert column.status == "ok", column.reason


@pytest.mark.parametrize("method", ["ks", "wasserstein", "psi", "psi_sturges"])
def test_every_numeric_method_can_be_chosen(
    large: tuple[pd.DataFrame, pd.DataFrame], method: str
) -> None:
    report = compare(
        large[0].iloc[:50_000],
        large[1].iloc[:50_000],
        methods=method,
        columns=["shifted", "wider", "steady_normal"],
    )
    assert {c.method for c in report.columns.values()} == {method}
    assert report.columns["steady_normal"].status == "ok"


@pytest.mark.parametrize("method", ["chi2", "chi2_gof", "jensen_shannon", "psi"])
def test_every_categorical_method_can_be_chosen(
    large: tuple[pd.DataFrame, pd.DataFrame], method: str
) -> None:
    report = compare(
        large[0].iloc[:50_000], large[1].iloc[:50_000], methods=method, columns=["newcomer"]
    )
    assert report.columns["newcomer"].method == method
    assert report.columns["newcomer"].drift


def test_parquet_paths_and_arrow_tables_give_the_same_report(
    tmp_path: Path, large: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    ref, cur = (f.iloc[:30_000].reset_index(drop=True) for f in large)
    pq.write_table(pa.Table.from_pandas(ref), tmp_path / "ref.parquet")
    cur_dir = tmp_path / "cur"
    cur_dir.mkdir()
    pq.write_table(pa.Table.from_pandas(cur.iloc[:15_000]), cur_dir / "a.parquet")
    pq.write_table(pa.Table.from_pandas(cur.iloc[15_000:]), cur_dir / "b.parquet")
    from_frames = compare(ref, cur).to_dict()
    from_files = compare(tmp_path / "ref.parquet", cur_dir).to_dict()
    from_arrow = compare(pa.Table.from_pandas(ref), pa.Table.from_pandas(cur)).to_dict()
    for other in (from_files, from_arrow):
        for name, column in from_frames["columns"].items():
            assert other["columns"][name]["statistic"] == pytest.approx(
                column["statistic"], rel=1e-12
            ), name
            assert other["columns"][name]["status"] == column["status"]


def test_to_dict_has_method_statistic_p_value_threshold_and_verdict(
    large: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    column = compare(large[0].iloc[:20_000], large[1].iloc[:20_000], columns=["shifted"]).to_dict()[
        "columns"
    ]["shifted"]
    assert {
        "method",
        "statistic",
        "p_value",
        "p_value_adjusted",
        "threshold",
        "drift",
        "status",
        "effect",
        "effect_size",
    } <= set(column)
    assert column["method"] == "ks"
    assert column["drift"] is True


def test_integer_codes_with_few_values_are_treated_as_categories() -> None:
    ref = pd.DataFrame({"flag": np.r_[np.zeros(900), np.ones(100)].astype(int)})
    cur = pd.DataFrame({"flag": np.r_[np.zeros(700), np.ones(300)].astype(int)})
    report = compare(ref, cur)
    assert report.columns["flag"].kind == "categorical"
    assert report.columns["flag"].drift


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"methods": {"newcomer": "ks"}}, "does not apply to categorical column"),
        ({"columns": ["nope"]}, "are not in both data sets"),
        ({"thresholds": {"beta": 1}}, "unknown threshold"),
    ],
)
def test_bad_arguments_say_what_to_do(
    large: tuple[pd.DataFrame, pd.DataFrame], kwargs: dict, fragment: str
) -> None:
    with pytest.raises(e.InvalidInput, match=fragment):
        compare(large[0].iloc[:100], large[1].iloc[:100], **kwargs)
    with pytest.raises(e.InvalidInput, match="Parquet"):
        compare([1, 2, 3], large[1])


# -- one category, however pandas typed it ---------------------------------------------------


def _codes(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 4, size=n)


def test_integer_codes_arriving_as_floats_with_a_missing_value_are_the_same_categories() -> None:
    reference = pd.DataFrame({"channel": _codes(5_000, 1)})
    current = pd.DataFrame({"channel": _codes(5_000, 2).astype(float)})
    current.loc[7, "channel"] = np.nan  # one missing value: pandas stores the column as float
    column = compare(reference, current).columns["channel"]
    assert column.kind == "categorical"
    assert column.stats["unseen_share"] == 0.0
    assert not column.drift
    assert column.effect_size < 0.05  # Jensen-Shannon of two samples of one distribution


def test_booleans_against_zero_one_codes_are_the_same_categories() -> None:
    flags = np.random.default_rng(3).random(4_000) < 0.3
    reference = pd.DataFrame({"is_night": flags})
    current = pd.DataFrame({"is_night": (np.random.default_rng(4).random(4_000) < 0.3).astype(int)})
    column = compare(reference, current).columns["is_night"]
    assert column.kind == "categorical"
    assert column.stats["unseen_share"] == 0.0
    assert not column.drift


def test_digits_as_strings_against_integer_codes_are_the_same_categories() -> None:
    reference = pd.DataFrame({"tier": _codes(3_000, 5)})
    current = pd.DataFrame({"tier": _codes(3_000, 6).astype(str)})
    column = compare(reference, current).columns["tier"]
    assert column.stats["unseen_share"] == 0.0
    assert not column.drift


def test_a_column_missing_from_the_current_data_is_a_schema_problem() -> None:
    rng = np.random.default_rng(8)
    reference = pd.DataFrame({"amount": rng.normal(size=500), "hour": rng.integers(0, 24, 500)})
    report = compare(reference, reference[["amount"]])
    assert report.missing_in_current == ["hour"]
    assert report.schema_problems == [
        "column 'hour' is in the reference and missing from the current data"
    ]
    assert report.to_dict()["missing_in_current"] == ["hour"]
    assert compare(reference, reference).missing_in_current == []
