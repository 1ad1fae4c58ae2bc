"""What every model offers the pipeline, whichever family it is (churn, segments, recommendations, credit risk,
CLV): the asset lifecycle (assets/lifecycle.py) saves a fitted model and weighs its inputs' drift through this
interface, and each model's assets load their champion with its class's `load`.

Fitting stays a function of each module (`train_churn`, `train_segments`, ...): what a fit reads differs by family
(features and an outcome, features alone, holdings and acquisitions, a transaction summary)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, Self, runtime_checkable

import pandas as pd


@runtime_checkable
class Model(Protocol):
    metrics: dict  # holdout metrics of the fit: what the gate judges and the registry keeps

    @property
    def features(self) -> list[str]:
        """The columns of features.customer_features it reads (empty for a model fitted on transactions, CLV)."""
        ...

    def importance(self) -> dict[str, float]:
        """How much it relies on each input (any scale; empty: all alike): the weight of that input's drift."""
        ...

    def score(self, inputs: Any, /) -> pd.DataFrame:
        """One row per customer (per customer and rank for recommendations), customer_id first."""
        ...

    def save(self, models_dir: str | Path, version: int) -> Path:
        """Its artifacts under <models_dir>/<model>/v<version>/ (ml/registry.py save_artifacts): the folder."""
        ...

    @classmethod
    def load(cls, folder: str | Path) -> Self:
        """What `save` wrote."""
        ...
