"""What has been alerted (no dagster): `<home>/alerts.sqlite`.

SQLite rather than the warehouse: the alert sensors run in the Dagster daemon while a pipeline run may hold
DuckDB's single writer lock, and SQLite lets several processes write one small file safely.

  runs        every run whose alerts were evaluated (so the CLI and the daemon's sensor never both alert)
  conditions  open conditions (e.g. drift:churn) and when they last alerted: the same condition alerts once
              until it clears or `repeat_after_hours` pass
  deliveries  every attempt to deliver an alert to a channel, with the outcome (a failed one is kept here)
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from contextlib import closing
from datetime import datetime, timedelta
from pathlib import Path

DDL = """
CREATE TABLE IF NOT EXISTS runs (run_id TEXT PRIMARY KEY, evaluated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS conditions (key TEXT PRIMARY KEY, kind TEXT NOT NULL, first_seen TEXT NOT NULL,
                                       last_alerted TEXT NOT NULL, run_id TEXT);
CREATE TABLE IF NOT EXISTS deliveries (sent_at TEXT NOT NULL, run_id TEXT, kind TEXT NOT NULL, title TEXT NOT NULL,
                                       channel TEXT NOT NULL, ok INTEGER NOT NULL, attempts INTEGER NOT NULL,
                                       error TEXT);
"""


class AlertStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as con:
            con.executescript(DDL)

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        return con

    def claim_run(self, run_id: str) -> bool:
        """True for the first caller only: that one evaluates the run's alerts."""
        with closing(self._connect()) as con:
            cur = con.execute("INSERT OR IGNORE INTO runs VALUES (?, ?)", [run_id, datetime.now().isoformat()])
            return cur.rowcount == 1

    def due(self, keys: Iterable[str], repeat_after: timedelta, now: datetime | None = None) -> list[str]:
        """The keys that are new, or last alerted longer than `repeat_after` ago."""
        now = now or datetime.now()
        keys = list(keys)
        with closing(self._connect()) as con:
            seen = dict(con.execute(f"SELECT key, last_alerted FROM conditions WHERE key IN ({','.join('?' * len(keys))})",
                                    keys).fetchall()) if keys else {}
        return [k for k in keys if k not in seen or now - datetime.fromisoformat(seen[k]) >= repeat_after]

    def alerted(self, keys: Iterable[str], kind: str, run_id: str | None, now: datetime | None = None) -> None:
        now = (now or datetime.now()).isoformat()
        with closing(self._connect()) as con:
            con.executemany("""INSERT INTO conditions VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE
                               SET last_alerted = excluded.last_alerted, run_id = excluded.run_id""",
                            [(k, kind, now, now, run_id) for k in keys])

    def clear(self, keys: Iterable[str]) -> int:
        """Conditions that no longer hold: the next occurrence alerts again."""
        keys = list(keys)
        if not keys:
            return 0
        with closing(self._connect()) as con:
            return con.execute(f"DELETE FROM conditions WHERE key IN ({','.join('?' * len(keys))})", keys).rowcount

    def record(self, run_id: str | None, kind: str, title: str, channel: str, ok: bool, attempts: int,
               error: str = "") -> None:
        with closing(self._connect()) as con:
            con.execute("INSERT INTO deliveries VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [datetime.now().isoformat(), run_id, kind, title, channel, int(ok), attempts, error])

    def deliveries(self, limit: int = 50) -> list[dict]:
        with closing(self._connect()) as con:
            con.row_factory = sqlite3.Row
            return [dict(r) for r in con.execute("SELECT * FROM deliveries ORDER BY rowid DESC LIMIT ?", [limit])]

    def open_conditions(self) -> list[dict]:
        with closing(self._connect()) as con:
            con.row_factory = sqlite3.Row
            return [dict(r) for r in con.execute("SELECT * FROM conditions ORDER BY key")]
