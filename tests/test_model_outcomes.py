"""Models you can leave unattended (issue 16): every model ends a run with a stated outcome, a data limit is an
outcome and not a failure, and a model scores with exactly the inputs it was trained on or not at all."""

from __future__ import annotations

from datetime import date

import duckdb
import numpy as np
import pandas as pd
import pytest

from assets.lifecycle import require_label
from ml import registry
from ml.errors import MissingInputs, NotEnoughData
from ml.frame import FeatureSpec
from ml.split import check_classes
from warehouse import features as F
from warehouse.schema import ensure_all_raw_tables


def test_a_missing_input_is_named_never_a_column_of_nan():
    train = pd.DataFrame({"customer_id": ["a", "b", "c"], "income": [1.0, 2.0, 3.0], "channel_share_web": [0, .5, 1],
                          "segment": ["x", "y", "x"]})
    spec = FeatureSpec.infer(train)
    with pytest.raises(MissingInputs, match="inputs missing from today's features: channel_share_web"):
        spec.matrix(train.drop(columns="channel_share_web"))
    with pytest.raises(MissingInputs, match="numbers at training and are text now: income"):
        spec.matrix(train.assign(income=["1", "n/a", "3"]))
    assert list(spec.matrix(train).columns) == ["income", "channel_share_web", "segment"]


def test_a_pivot_column_stays_when_its_value_leaves_the_top(tmp_path):
    """channel_share_<c> columns are inputs of models: a channel that drops out of the most frequent ones keeps
    its column (zeros), so the champion still finds its inputs after the next delivery."""
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        ensure_all_raw_tables(con)
        con.execute("INSERT INTO raw.transactions (transaction_id, customer_id, transaction_date, amount, channel) "
                    "VALUES ('t1', 'c1', '2024-05-01', -5, 'branch'), ('t2', 'c1', '2024-05-02', -5, 'web')")
        F.build_all(con, date(2024, 6, 1))
        assert {"channel_share_branch", "channel_share_web"} <= {r[0] for r in con.execute(
            "SELECT column_name FROM (DESCRIBE features.customer_features)").fetchall()}
        con.execute("DELETE FROM raw.transactions WHERE channel = 'branch'")
        F.build_all(con, date(2024, 6, 1))
        got = con.execute("SELECT channel_share_branch, channel_share_web FROM features.customer_features").fetchall()
    assert got == [(0.0, 1.0)]


def test_the_label_a_model_reads_is_named_with_the_ones_the_source_has(tmp_path):
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        ensure_all_raw_tables(con)
        con.execute("INSERT INTO raw.labels (customer_id, label, value) VALUES ('c1', 'churn', 1), ('c2', 'churn', 0)")
        with pytest.raises(NotEnoughData, match=r"no 'churned' outcomes \(models.churn.label\): the source's "
                                                r"outcome labels are 'churn'"):
            require_label(con, "churned", "models.churn.label")
        require_label(con, "churn", "models.churn.label")


def test_too_few_outcomes_in_the_holdout_to_judge():
    y = np.array([1] * 20 + [0] * 180)
    hold = np.arange(200) % 5 == 0  # 4 bad, 36 good in the holdout
    with pytest.raises(NotEnoughData, match=r"4 defaulted and 36 good customers in the holdout \(at least 30 of each"):
        check_classes(y, hold, 30, ("defaulted", "good"))
    check_classes(y, hold, 4, ("defaulted", "good"))


@pytest.mark.parametrize(("row", "line"), [
    ({"training": "promoted", "challenger_version": 5, "champion_version": 5, "training_note": "replaces v4",
      "scoring": "scored"}, "promoted v5 (replaces v4); scored with champion v5"),
    ({"training": "rejected", "challenger_version": 5, "champion_version": 4, "training_note": "auc 0.71 not >= 0.8",
      "scoring": "scored"}, "kept champion v4 (challenger v5 rejected: auc 0.71 not >= 0.8); scored with champion v4"),
    ({"training": "not_trained", "training_note": "no 'churned' outcomes", "scoring": "no_champion"},
     "not trained: no 'churned' outcomes; no champion yet"),
    ({"scoring": "scored", "champion_version": 3}, "scored with champion v3"),
    ({"scoring": "failed", "champion_version": 3, "scoring_note": "inputs missing from today's features: x"},
     "scoring failed: inputs missing from today's features: x"),
])
def test_each_outcome_reads_as_one_line(row, line):
    assert registry.outcome_line(row) == line


def test_training_on_a_home_without_features_says_what_to_run(tmp_path):
    import dagster as dg

    from assets.lifecycle import read_features
    from assets.resources import Warehouse

    with pytest.raises(dg.Failure, match=r"features.customer_features is not built yet .*run the whole pipeline once"):
        read_features(Warehouse(home=str(tmp_path)))


def test_credit_risk_on_too_few_customers_for_its_proxy_target_is_not_trained():
    """A transaction-only source (a card processor's export, fraud_ulb) has one pseudo-customer: the RFM proxy's
    3-cluster K-Means cannot run, which is a data limit (an outcome), not a crash of the run."""
    from ml.credit_risk import rfm_proxy_target

    one = pd.DataFrame({"recency_days": [0.0], "frequency": [284_807.0], "monetary": [25e6]})
    with pytest.raises(NotEnoughData, match="1 customers with 1 distinct recency, frequency and monetary"):
        rfm_proxy_target(one)
    alike = pd.DataFrame({"recency_days": [3.0] * 5 + [9.0] * 5, "frequency": [2.0] * 10, "monetary": [50.0] * 10})
    with pytest.raises(NotEnoughData, match="10 customers with 2 distinct"):
        rfm_proxy_target(alike)
