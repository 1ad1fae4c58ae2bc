"""Shared test helpers."""

from pathlib import Path

import pytest

from assets.models import SPECS

MODELS = [s.name for s in SPECS]


def _relax(home: Path) -> None:
    """A home whose scorehouse.yaml drops every absolute gate threshold and judges on a small holdout, the way a
    user would for a tiny bank: tests of the CLI or the UI on a few hundred customers are not about model quality."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "scorehouse.yaml").write_text("models:\n  min_holdout_per_class: 3\n" + "".join(
        f"  {m}:\n    gate: {{min: null, max: null}}\n" for m in MODELS)
        + "  fraud:\n    unsupervised_gate: {min: null, max: null}\n    gate: {min: null, max: null}\n")


@pytest.fixture
def relax_gates():
    return _relax


@pytest.fixture(scope="session")
def postgres_url():
    """A PostgreSQL server for this test session (tests/postgres.py): the iceberg backend's catalog."""
    from tests.postgres import local_postgres

    with local_postgres() as url:
        yield url
