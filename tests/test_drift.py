"""Drift math (quality/drift.py) on numbers whose answers are known."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from quality import drift


def test_psi_of_a_known_shift_and_of_identical_shares():
    assert drift.psi([0.5, 0.5], [0.6, 0.4]) == pytest.approx(0.1 * np.log(1.2) + 0.1 * np.log(1 / 0.8))
    assert drift.psi([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0


def test_an_empty_bin_gives_a_large_finite_psi_not_a_division_error():
    value = drift.psi([0.5, 0.5, 0.0], [0.4, 0.4, 0.2], epsilon=1e-4)
    assert np.isfinite(value) and value > 1.0


def test_bands_follow_the_rule_of_thumb_and_config():
    bands = drift.Bands()
    assert [bands.band(x) for x in (0.0, 0.099, 0.10, 0.2499, 0.25, 3.0)] == [
        "stable", "stable", "warn", "warn", "alert", "alert"]
    assert drift.Bands.from_config({"psi_warn": 0.2, "psi_alert": 0.5}).band(0.3) == "warn"


def test_numeric_profile_bins_at_training_deciles_with_a_missing_bin():
    values = pd.Series([*range(1, 101), None], dtype="float64")
    profile = drift.profile_column(values)
    assert profile["edges"] == pytest.approx(np.quantile(np.arange(1, 101), np.linspace(0.1, 0.9, 9)))
    assert len(profile["shares"]) == 11 and profile["shares"][-1] == pytest.approx(1 / 101)
    assert sum(profile["shares"]) == pytest.approx(1.0)


def test_same_population_is_stable_and_a_shifted_one_drifts_with_the_right_ks():
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"x": rng.normal(0, 1, 50_000), "y": rng.normal(0, 1, 50_000)})
    same = pd.DataFrame({"x": rng.normal(0, 1, 50_000), "y": rng.normal(0, 1, 50_000)})
    shifted = same.assign(x=same["x"] + 0.8)
    profile = drift.build_profile(ref, ["x", "y"])
    calm = drift.compare(profile, same)
    assert (calm["band"] == "stable").all() and calm["psi"].max() < 0.01 and calm["ks"].max() < 0.02
    moved = drift.compare(profile, shifted).set_index("feature")
    assert moved.loc["x", "band"] == "alert" and moved.loc["y", "band"] == "stable"
    # KS from 1,001 reference quantiles matches scipy's two-sample KS on the full samples
    exact = stats.ks_2samp(ref["x"], shifted["x"]).statistic
    assert moved.loc["x", "ks"] == pytest.approx(exact, abs=0.002)
    assert moved.loc["x", "ks"] == pytest.approx(2 * stats.norm.cdf(0.4) - 1, abs=0.01)  # theory: 0.311
    assert moved.loc["x", "current_mean"] - moved.loc["x", "reference_mean"] == pytest.approx(0.8, abs=0.02)


@pytest.mark.parametrize("seed", range(4))
def test_ks_equals_the_largest_gap_over_every_step_of_both_functions(seed):
    """ks_statistic counts new values per reference quantile instead of sorting them; the answer must be the
    supremum over every point where either distribution function steps, ties and all."""
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, 5, 300) if seed % 2 else rng.normal(size=300)
    cur = rng.integers(0, 7, 250) if seed % 2 else np.round(rng.normal(0.3, 1, 250), 1)
    q = np.quantile(ref.astype(float), np.linspace(0, 1, drift.N_QUANTILES))
    grid = np.union1d(q, cur)
    brute = np.max(np.abs(np.searchsorted(q, grid, side="right") / len(q)
                          - np.searchsorted(np.sort(cur), grid, side="right") / len(cur)))
    assert drift.ks_statistic(q.tolist(), pd.Series(cur)) == pytest.approx(brute, abs=1e-12) and brute > 0.05


def test_categorical_new_values_pool_into_other_and_show_as_drift():
    ref = pd.Series(["a"] * 60 + ["b"] * 40)
    profile = {"c": drift.profile_column(ref)}
    assert profile["c"]["categories"] == ["a", "b", drift.OTHER] and profile["c"]["shares"] == [0.6, 0.4, 0.0]
    new = pd.DataFrame({"c": ["a"] * 50 + ["z"] * 30 + [None] * 20})
    shares = drift.current_shares(new["c"], profile["c"])
    assert shares == pytest.approx([0.5, 0.0, 0.5])  # "z" and missing are not reference categories
    row = drift.compare(profile, new).iloc[0]
    assert row["band"] == "alert" and np.isnan(row["ks"])


def test_distribution_rows_show_reference_and_current_shares():
    ref = drift.profile_column(pd.Series(["Low"] * 80 + ["High"] * 20))
    rows = drift.distribution_rows(ref, pd.Series(["Low"] * 50 + ["High"] * 50))
    assert rows == [("Low", pytest.approx(0.8), pytest.approx(0.5)), ("High", pytest.approx(0.2), pytest.approx(0.5))]
