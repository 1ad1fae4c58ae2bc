"""Generated docs stay in step with the code."""

from pathlib import Path

from warehouse import contract_doc

DOCS = Path(__file__).parents[1] / "docs"


def test_data_contract_doc_is_current():
    assert (DOCS / "data-contract.md").read_text() == contract_doc.render(), (
        "docs/data-contract.md is stale: run `python -m warehouse.contract_doc > docs/data-contract.md`"
    )
