"""Generated docs stay in step with the code."""

from pathlib import Path

from warehouse import contract_doc

DOCS = Path(__file__).parents[1] / "docs"


def test_data_contract_doc_is_current():
    assert (DOCS / "data-contract.md").read_text() == contract_doc.render(), (
        "docs/data-contract.md is stale: run `python -m warehouse.contract_doc > docs/data-contract.md`"
    )


def test_features_doc_is_current():
    assert (DOCS / "features.md").read_text() == contract_doc.render_features(), (
        "docs/features.md is stale: run `python -m warehouse.contract_doc features > docs/features.md`"
    )


def test_scores_doc_is_current():
    from assets.models import SPECS

    assert (DOCS / "scores.md").read_text() == contract_doc.render_scores([s.table for s in SPECS]), (
        "docs/scores.md is stale: run `python -m assets.models > docs/scores.md`"
    )


def test_every_feature_column_is_documented(tmp_path):
    """Build the features on a small generated bank and on Berka-like extras; every column has a doc entry."""
    from warehouse import features as F
    from warehouse.db import connect
    from warehouse.ingest import ingest_table
    from warehouse.schema import ensure_all_raw_tables
    from warehouse.sources import load_source
    from warehouse.synthetic import generate_bank

    landing = tmp_path / "landing"
    generate_bank(landing, customers=300, seed=2)
    source = load_source("synthetic")
    with connect(tmp_path / "w.duckdb") as con:
        ensure_all_raw_tables(con)
        for t in source.tables():
            ingest_table(con, source, t, landing, log=lambda m: None)
        snap = F.resolve_snapshot(con, None, 90)
        for build in (F.build_population, F.build_rfm, F.build_balances, F.build_holdings, F.build_customer_features):
            build(con, snap)
        columns = [r[0] for r in con.execute("DESCRIBE features.customer_features").fetchall()]
    patterns = contract_doc.feature_patterns()
    undocumented = [c for c in columns if not any(p.match(c) for _, p in patterns)]
    assert not undocumented, f"add these to FEATURE_DOCS: {undocumented}"
