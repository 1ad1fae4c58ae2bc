"""How every model splits customers: one deterministic hash of the customer id, and the check that a split
holds enough outcomes of each kind to judge a model on it."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from ml.errors import NotEnoughData


def unit_hash(customer_ids, salt: str) -> np.ndarray:
    """A number in [0, 1) per customer from a hash of its id and `salt`: what is chosen with it (a holdout, a
    sample) is the same customers in every run, whatever the row order."""
    def bucket(cid: str) -> float:
        return int(hashlib.blake2b(f"{salt}:{cid}".encode(), digest_size=8).hexdigest(), 16) / 2**64

    return np.fromiter((bucket(str(c)) for c in customer_ids), float, len(customer_ids))


def holdout_mask(customer_ids: pd.Series, share: float, salt: str = "holdout") -> np.ndarray:
    """True for the customers held out: the same customer lands on the same side in every run and for every
    model, so a challenger and the champion are compared on the same holdout."""
    return unit_hash(customer_ids, salt) < share


def check_classes(y: np.ndarray, hold: np.ndarray, minimum: int, what: tuple[str, str],
                  unit: str = "customers") -> None:
    """NotEnoughData unless the holdout holds at least `minimum` of each outcome (and the rest both): fewer
    cannot tell a good model from a lucky one. `what`: the words for outcome 1 and 0, e.g. ("churned", "stayed");
    `unit`: what a row is."""
    y = np.asarray(y, dtype=int)
    held = [int((y[hold] == v).sum()) for v in (1, 0)]
    rest = [int((y[~hold] == v).sum()) for v in (1, 0)]
    if min(held) < minimum or min(rest) == 0:
        raise NotEnoughData(
            f"too few outcomes to judge: {held[0]:,} {what[0]} and {held[1]:,} {what[1]} {unit} in the holdout "
            f"(at least {minimum} of each: models.min_holdout_per_class)")


def stratified_cap(customer_ids, y: np.ndarray, rows: np.ndarray, cap: int | None,
                   salt: str = "train_sample") -> np.ndarray:
    """`rows` (a boolean mask: what a model fits on) cut to about `cap` rows when it holds more: every outcome
    class keeps the same share of its rows, so the sample has the population's rates; within a class the customers
    with the lowest hash of their id are kept (the same ones every run, whatever the row order)."""
    idx = np.flatnonzero(rows)
    if cap is None or len(idx) <= cap:
        return rows
    y_in, u = np.asarray(y)[idx], unit_hash(np.asarray(customer_ids, dtype=object)[idx], salt)
    kept = np.zeros(len(rows), dtype=bool)
    for value in np.unique(y_in):
        members = np.flatnonzero(y_in == value)
        n = max(1, round(len(members) * cap / len(idx)))
        kept[idx[members[np.argsort(u[members], kind="stable")[:n]]]] = True
    return kept
