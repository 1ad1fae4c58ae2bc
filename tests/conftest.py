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


# The longest modules (measured: test_webserver_e2e alone takes two minutes of a worker), started first: pytest-xdist
# hands whole modules (--dist loadfile) to its workers in collection order, and a long module collected last
# kept one worker busy for minutes after the other had finished.
LONGEST_FIRST = ("test_lake_e2e", "test_reliability_e2e", "test_cli_e2e", "test_model_assets", "test_webserver_e2e",
                 "test_alerts_e2e", "test_deliveries_e2e", "test_ml_fraud")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: the rest keep their order
