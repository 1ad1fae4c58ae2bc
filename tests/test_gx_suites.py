"""The GX contract suites, called on good and bad frames: real GX validations over DuckDB."""

import pandas as pd

from quality.contract_suite import contract_specs, validate_frame
from warehouse.contract import TABLES

CUSTOMERS = pd.DataFrame({"customer_id": ["C1", "C2", "C3"]})


def transactions(**overrides) -> pd.DataFrame:
    frame = pd.DataFrame({
        "transaction_id": ["T1", "T2", "T3", "T4"],
        "customer_id": ["C1", "C2", "C3", "C1"],
        "account_id": ["A1", "A2", "A3", "A1"],
        "transaction_date": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"]),
        "amount": [-10.0, 2500.0, -3.5, -80.0],
        "category": ["card", "salary", "fee", "bill"],
        "channel": ["pos", "system", "system", "online"],
        "balance_after": [100.0, 2600.0, 2596.5, 2516.5],
        "quantity": [None, None, None, None],
        "counterparty": ["P1", None, None, "P2"],
        "fraud": [False, None, None, True],
    })
    for col, values in overrides.items():
        frame[col] = values
    return frame.astype({"quantity": "float64"})


def by_type(result, kind: str, column: str | None = None) -> dict:
    return next(r for r in result.results if r["type"] == kind and (column is None or r["kwargs"].get("column") == column))


def test_good_frame_passes_every_expectation():
    result = validate_frame(transactions(), "transactions", CUSTOMERS)
    assert result.passed, result.markdown()
    assert len(result.results) == len(contract_specs(TABLES["transactions"]))


def test_bad_frame_fails_with_exact_counts():
    bad = transactions(
        transaction_id=["T1", "T1", "T3", "T4"],          # duplicate key
        customer_id=["C1", None, "C9", "C1"],              # one missing, one unknown customer
    )
    result = validate_frame(bad, "transactions", CUSTOMERS)
    assert not result.passed
    assert by_type(result, "expect_column_values_to_not_be_null", "customer_id")["unexpected_count"] == 1
    assert by_type(result, "foreign_key")["unexpected_count"] == 1
    assert by_type(result, "expect_column_proportion_of_unique_values_to_be_between")["observed_value"] == 0.75
    failed = {result.describe(r) for r in result.failed}
    assert failed == {"customer_id: column values to not be null", "customer_id in raw.customers",
                      "key (transaction_id) is unique"}


def test_types_bounds_and_allowed_values():
    customers = pd.DataFrame({
        "customer_id": ["C1", "C2"], "birth_date": pd.to_datetime(["1980-01-01", "1990-01-01"]).date,
        "age": [44, 150], "gender": ["F", "X"], "income": [1000.0, -5.0], "credit_score": [700.0, 650.0],
        "region": ["N", "S"], "city": ["a", "b"], "agency_id": ["G1", "G1"], "manager_id": ["M1", "M2"],
        "joined_date": pd.to_datetime(["2020-01-01", "2021-01-01"]).date, "tenure_months": [12, 24],
        "segment": ["mass", "mass"],
    })
    result = validate_frame(customers, "customers")
    assert {result.describe(r) for r in result.failed} == {
        "age: column values to be between", "gender: column values to be in set", "income: column values to be between"}
    assert by_type(result, "expect_column_values_to_be_in_set", "gender")["partial_unexpected_list"] == ["X"]


def test_missing_column_and_wrong_type_fail():
    frame = transactions().drop(columns=["channel"]).astype({"amount": "str"})
    result = validate_frame(frame, "transactions", CUSTOMERS)
    failed = {result.describe(r) for r in result.failed}
    assert "channel: column to exist" in failed
    assert "amount: column values to be of type" in failed


def test_an_empty_table_passes():
    """A bank that sends no managers file: the empty raw.managers meets its contract."""
    import duckdb

    from quality.contract_suite import validate_table
    from warehouse.schema import ensure_all_raw_tables

    with duckdb.connect() as con:
        ensure_all_raw_tables(con)
        result = validate_table(con, "managers")
    assert result.passed, result.markdown()
