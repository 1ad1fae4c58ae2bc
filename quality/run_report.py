"""One run in one table: per model, what became of it (ml.model_runs), the champion that scored, rows scored, the
score's PSI and the worst input's (monitoring.drift), the drift check's band, and whether the run published.

The same report is the metadata of asset `serving/run_report` (numbers as numbers, so Dagster plots them run
after run), the tags of the run (the Runs list tells a drifted or partly rejected run from a clean one), the
closing summary of `scorehouse run` and what `scorehouse status` prints. Read from the warehouse, never from the
run's events: it is the same whoever launched the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb
import pandas as pd

from quality import drift

TRAINED = ("promoted", "kept", "rejected", "not_trained")


@dataclass
class ModelReport:
    model: str
    outcome: str  # promoted | kept | rejected | not_trained (training in this run), else scored | no_champion | failed
    scoring: str | None  # scored | no_champion | failed; None: not scored in this run
    champion_version: int | None
    challenger_version: int | None
    rows_scored: int | None
    score_psi: float | None  # the worst score column's PSI; None: not measured in this run
    worst_input: str | None
    worst_input_psi: float | None
    drift_band: str | None  # the drift check's band: stable | warn | alert; None: not measured or nothing counted
    line: str  # ml.model_runs.outcome
    drift_note: str | None = None  # why nothing was counted although the run measured (e.g. too few rows)


@dataclass
class RunReport:
    run_id: str
    models: list[ModelReport]
    published_at: datetime | None  # when this run published serving.duckdb; None: it did not
    publisher: str | None = None  # the job that publishes instead (the iceberg backend's `lake`), if another does

    def count(self, outcome: str) -> int:
        return sum(m.outcome == outcome for m in self.models)

    @property
    def drift(self) -> str | None:
        """The worst drift band of the run's models; None when nothing was measured."""
        bands = [m.drift_band for m in self.models if m.drift_band]
        return max(bands, key=drift.RANK.get) if bands else None

    def metadata(self) -> dict:
        """Plain numbers and text for the report asset: `<model>_score_psi`, `<model>_worst_input_psi`,
        `<model>_rows_scored`, `models_rejected`, ... (a figure not measured in this run is left out, a gap in
        its plot, not a zero)."""
        md: dict = {f"models_{o}": self.count(o) for o in TRAINED}
        md["models_scored"] = sum(m.scoring == "scored" for m in self.models)
        md["models_scoring_failed"] = sum(m.scoring == "failed" for m in self.models)
        md["models_drift_alert"] = sum(m.drift_band == "alert" for m in self.models)
        md["models_drift_warn"] = sum(m.drift_band == "warn" for m in self.models)
        for m in self.models:
            for key, value in (("score_psi", m.score_psi), ("worst_input_psi", m.worst_input_psi),
                               ("rows_scored", m.rows_scored)):
                if value is not None:
                    md[f"{m.model}_{key}"] = value
            md[f"{m.model}_champion"] = f"v{m.champion_version}" if m.champion_version else "none"
            md[f"{m.model}_outcome"] = m.line
        md["published_at"] = f"{self.published_at:%Y-%m-%d %H:%M:%S}" if self.published_at else "not published"
        return md

    def tags(self) -> dict[str, str]:
        """Run tags with the outcome, e.g. {"scorehouse/drift": "alert", "scorehouse/gates": "1 rejected"}."""
        tags = {}
        if self.drift:
            tags["scorehouse/drift"] = self.drift
        trained = [m for m in self.models if m.outcome in TRAINED]
        if trained:
            parts = [f"{self.count(o)} {o.replace('_', ' ')}" for o in ("rejected", "not_trained", "promoted", "kept")
                     if self.count(o)]
            tags["scorehouse/gates"] = ", ".join(parts)
        scored = sum(m.scoring == "scored" for m in self.models)
        failed = sum(m.scoring == "failed" for m in self.models)
        if scored or failed:
            tags["scorehouse/scored"] = f"{scored} of {len(self.models)}" + (f", {failed} failed" if failed else "")
            tags["scorehouse/published"] = ("yes" if self.published_at else
                                            f"by job {self.publisher}" if self.publisher else "no")
        return tags

    def lines(self) -> list[str]:
        """The report as a text table (the CLI's)."""
        head = ("model", "outcome", "champion", "rows scored", "score PSI", "worst input PSI", "drift")
        rows = [head] + [(m.model, m.outcome.replace("_", " "), f"v{m.champion_version}" if m.champion_version
                          else "none", "" if m.rows_scored is None else f"{m.rows_scored:,}", _psi(m.score_psi),
                          _psi(m.worst_input_psi) + (f" ({m.worst_input})" if m.worst_input else ""),
                          m.drift_band or (f"not counted: {m.drift_note}" if m.drift_note else "not measured"))
                         for m in self.models]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        out = ["  ".join(v.rjust(w) if i in (3, 4) else v.ljust(w) for i, (v, w) in
                         enumerate(zip(r, widths, strict=True))).rstrip() for r in rows]
        out += [f"  {m.model}: {m.line}" for m in self.models]
        if self.published_at:
            out.append(f"Published: {self.published_at:%Y-%m-%d %H:%M:%S}")
        elif self.publisher:
            out.append(f"Published: by job {self.publisher}, which scores every customer (this run scored the sample "
                       "the models are trained and watched on: warehouse.lake.sample_customers)")
        elif any(m.scoring in ("scored", "failed") for m in self.models):
            out.append("Published: no (serving.duckdb still holds an earlier run's scores)")
        else:
            out.append("Published: no (no model scored in this run)")
        return out


def _psi(v: float | None) -> str:
    return "" if v is None else f"{v:.3f}"


def _has(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    return con.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
                       [schema, table]).fetchone()[0] > 0


def build_report(con: duckdb.DuckDBPyConnection, run_id: str, bands: drift.Bands = drift.DEFAULT_BANDS,
                 published_at: datetime | None = None, publisher: str | None = None) -> RunReport:
    """The report of run `run_id` from the warehouse (read only): every model the run trained or scored."""
    runs = con.execute(
        "SELECT model, training, scoring, champion_version, challenger_version, rows_scored, outcome "
        "FROM ml.model_runs WHERE run_id = ? ORDER BY model", [run_id]).fetchall() \
        if _has(con, "ml", "model_runs") else []
    measured = con.execute("SELECT * FROM monitoring.drift WHERE run_id = ?", [run_id]).df() \
        if _has(con, "monitoring", "drift") else pd.DataFrame()
    models = []
    for model, training, scoring, champion, challenger, rows, line in runs:
        mine = measured[measured["model"] == model] if len(measured) else measured
        counted = mine[mine["band"] != drift.SKIPPED] if len(mine) else mine
        scores = counted[counted["kind"] == "score"] if len(counted) else counted
        inputs = counted[counted["kind"] == "feature"] if len(counted) else counted
        worst = inputs.loc[inputs["psi"].idxmax()] if len(inputs) else None
        note = None
        if len(mine) and not len(counted):  # every column skipped (a book-level model's few rows): say why
            notes = [n for n in mine.get("note", []) if isinstance(n, str) and n]
            note = notes[0] if notes else "every column skipped"
        models.append(ModelReport(
            model, training if training in TRAINED else (scoring or "not run"), scoring, champion, challenger,
            None if rows is None else int(rows),
            round(float(scores["psi"].max()), 4) if len(scores) else None,
            None if worst is None else str(worst["feature"]),
            None if worst is None else round(float(worst["psi"]), 4),
            drift.verdict(mine, bands).band if len(counted) else None, line, note))
    return RunReport(run_id, models, published_at, publisher)
