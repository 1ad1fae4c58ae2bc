"""Metadata a user looks at in the UI: row counts, column schema, a markdown preview."""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg
import duckdb

from warehouse.columns import describe


def table_metadata(con: duckdb.DuckDBPyConnection, table: str, preview_rows: int = 5,
                   hide: tuple[str, ...] = (), show: list[str] | None = None,
                   docs: Mapping[str, str] | None = None) -> dict[str, dg.MetadataValue]:
    """Row count, column schema with what each column means (`docs`, else warehouse/columns.py) and a preview of
    the first rows (only the columns in `show`, when given)."""
    schema, name = table.split(".")
    cols = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = ? AND table_name = ? "
        "ORDER BY ordinal_position", [schema, name]
    ).fetchall()
    n = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    shown = [c for c, _ in cols if c not in hide and not c.startswith("_") and (show is None or c in show)][:12]
    preview = con.execute(
        f"SELECT {', '.join(chr(34) + c + chr(34) for c in shown)} FROM {table} LIMIT {preview_rows}"
    ).df() if shown else None
    md = {
        "dagster/row_count": dg.MetadataValue.int(n),
        "dagster/table_name": dg.MetadataValue.text(f"warehouse.{table}"),
        "dagster/column_schema": dg.TableSchema(columns=[
            dg.TableColumn(c, t, description=(docs or {}).get(c) or describe(table, c)) for c, t in cols]),
    }
    if preview is not None and len(preview):
        md["preview"] = dg.MetadataValue.md(preview.to_markdown(index=False, floatfmt=".4g"))
    return md


# Who answers for an asset, by group: data engineering runs the data in and out, data science the models.
OWNERS = {"ingest": "team:data-engineering", "features": "team:data-engineering", "training": "team:data-science",
          "scoring": "team:data-science", "serving": "team:data-engineering"}
# Tables that hold more about a person than a customer key: birth dates and gender (customers), names (managers;
# a bank's extra columns, kept in raw though never published), free text of transactions, age and city (features).
PII = {dg.AssetKey(["raw", "customers"]), dg.AssetKey(["raw", "managers"]), dg.AssetKey(["raw", "transactions"]),
       dg.AssetKey(["features", "customer_features"])}
GROUP_DOMAINS = {"ingest": "customer-data", "features": "customer-data", "serving": "bi"}


def catalogued(spec: dg.AssetSpec, domains: Mapping[dg.AssetKey, str]) -> dg.AssetSpec:
    """An asset with its owner (by group) and tags: `domain` (a model's own, else its group's) and `pii`."""
    tags = {**spec.tags, "domain": domains.get(spec.key) or GROUP_DOMAINS.get(spec.group_name or "", "customer-data")}
    if spec.key in PII:
        tags["pii"] = "true"
    owner = OWNERS.get(spec.group_name or "")
    return spec.replace_attributes(owners=[owner] if owner else [], tags=tags)


def frame_md(rows: list[tuple], headers: list[str]) -> dg.MetadataValue:
    head = "| " + " | ".join(headers) + " |\n| " + " | ".join("---" for _ in headers) + " |\n"
    body = "".join("| " + " | ".join(str(v).replace("|", "\\|") for v in r) + " |\n" for r in rows)
    return dg.MetadataValue.md(head + body if rows else "_none_")


def counts_md(counts, total: int, label: str) -> dg.MetadataValue:
    """A distribution as a table: value, customers, share of `total` (e.g. risk levels, segments)."""
    return frame_md([(k, f"{v:,}", f"{v / max(total, 1):.1%}") for k, v in counts.items()], [label, "customers", "share"])


def rounded(v):
    """Floats to 4 decimals for metadata; anything else as it is."""
    return round(v, 4) if isinstance(v, float) else v
