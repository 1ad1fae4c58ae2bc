"""Features: customer feature tables in DuckDB SQL, as of the snapshot date (see warehouse/features.py)."""


import dagster as dg

from assets.metadata import frame_md, table_metadata
from assets.resources import Settings, Source, Warehouse, holds_warehouse
from warehouse import failpoints
from warehouse import features as F
from warehouse.contract import TABLES
from warehouse.db import content_version

GROUP = "features"
RAW = {t: dg.AssetKey(["raw", t]) for t in TABLES}


def _snapshot(con):
    row = con.execute("SELECT max(snapshot_date) FROM features.population").fetchone()
    return row[0]


def _feature_asset(name: str, builder, deps: list[dg.AssetKey], description: str):
    @dg.asset(key=["features", name], group_name=GROUP, kinds={"duckdb", "sql"}, pool="warehouse",
              deps=deps, description=description)
    @holds_warehouse
    def _asset(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
        with warehouse.connect() as con:
            snap = _snapshot(con)
            n = builder(con, snap)
            md = table_metadata(con, f"features.{name}")
            version = dg.DataVersion(content_version(con, f"features.{name}"))
        context.log.info(f"features.{name}: {n:,} customers as of {snap}")
        failpoints.reached("features")
        return dg.MaterializeResult(metadata={**md, "snapshot_date": str(snap)}, data_version=version)

    return _asset


@dg.asset(key=["features", "population"], group_name=GROUP, kinds={"duckdb", "sql"}, pool="warehouse",
          deps=[RAW["customers"], RAW["transactions"], RAW["accounts"], RAW["loans"]])
@holds_warehouse
def population(context: dg.AssetExecutionContext, warehouse: Warehouse, source: Source,
               settings: Settings) -> dg.MaterializeResult:
    """features.population: every customer known at the snapshot date, which is fixed here for all features.

    The snapshot is the source config's `snapshot.date`, else the latest transaction date minus
    `snapshot.holdout_days` (the outcome window labels are taken from). On the iceberg backend, a sample of
    them (`warehouse.lake.sample_customers`, the same share of every customer shard): the models train, are
    gated and watched for drift on its features here, while the lake builds and scores every customer's."""
    cfg, sample = source.config(), _sample(settings)
    with warehouse.connect() as con:
        snap = F.resolve_snapshot(con, cfg.snapshot_date, cfg.holdout_days)
        n = known = F.build_population(con, snap)
        problem = None if n else F.empty_population(con, snap, cfg.snapshot_date, cfg.holdout_days, str(cfg.origin))
        if problem:
            raise dg.Failure(description=problem)
        if sample:
            n, known = sample.apply(con)
        md = table_metadata(con, "features.population")
        version = dg.DataVersion(content_version(con, "features.population"))
    sampled = (f"{n:,} of the {known:,} customers, the same share of each of the {sample.shards} shards "
               f"(warehouse.lake.sample_customers {sample.customers:,}); the lake holds every customer's features"
               if sample and n < known else None)
    context.log.info(f"snapshot {snap}: {n:,} customers" + (f": a sample, {sampled}" if sampled else ""))
    return dg.MaterializeResult(data_version=version, metadata={
        **md, "snapshot_date": str(snap), **({"sample": sampled, "customers_known": known} if sampled else {})})


def _sample(settings: Settings) -> F.Sample | None:
    """The iceberg backend's sample of customers for the DuckDB file, if it has one."""
    wh = settings.get("warehouse")
    cap = wh["lake"]["sample_customers"]
    return F.Sample(cap, wh["lake"]["shards"]) if wh["backend"] == "iceberg" and cap is not None else None


POP = dg.AssetKey(["features", "population"])
rfm = _feature_asset("rfm", F.build_rfm, [POP, RAW["transactions"]],
                     "features.rfm: recency/frequency/monetary, 30/90/180/365-day counts and spend, trends, "
                     "channel and category mix, RFM quintile scores.")
balances = _feature_asset("balances", F.build_balances, [POP, RAW["transactions"], RAW["accounts"]],
                          "features.balances: balance now and 30/90/180 days ago, changes, 90-day average.")
holdings = _feature_asset("holdings", F.build_holdings, [POP, RAW["accounts"], RAW["products"], RAW["loans"]],
                          "features.holdings: products and accounts open at the snapshot, product flags, loans.")
labels = _feature_asset("labels", F.build_labels, [POP, RAW["labels"]],
                        "features.labels: outcomes observed after the snapshot (churned, defaulted, ...), "
                        "long format.")


@dg.asset(
    key=["features", "customer_features"], group_name=GROUP, kinds={"duckdb", "sql"}, pool="warehouse",
    deps=[POP, dg.AssetKey(["features", "rfm"]), dg.AssetKey(["features", "balances"]),
          dg.AssetKey(["features", "holdings"]), RAW["customers"], RAW["managers"], RAW["agencies"]],
)
@holds_warehouse
def customer_features(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    """features.customer_features: one model-ready row per customer — demographics, RFM, balances and trends,
    holdings, income/spend ratios, the financial health score, agency and manager aggregates, and the
    bank's extra customer attributes (attr_*). Columns are documented in docs/features.md."""
    with warehouse.connect() as con:
        snap = _snapshot(con)
        n = F.build_customer_features(con, snap)
        md = table_metadata(con, "features.customer_features")
        version = dg.DataVersion(content_version(con, "features.customer_features"))
        dist = con.execute("""
            SELECT CASE WHEN financial_health_score IS NULL THEN 'n/a'
                        ELSE lpad((floor(financial_health_score / 20) * 20)::INT::VARCHAR, 3, ' ') || '-' END AS band,
                   count(*) FROM features.customer_features GROUP BY 1 ORDER BY 1""").fetchall()
    context.log.info(f"features.customer_features: {n:,} customers, {len(md['dagster/column_schema'].columns)} columns")
    return dg.MaterializeResult(metadata={
        **md, "snapshot_date": str(snap), "columns": len(md["dagster/column_schema"].columns),
        "financial_health_bands": frame_md(dist, ["score band", "customers"]),
    }, data_version=version)


CF = dg.AssetKey(["features", "customer_features"])


@dg.asset_check(asset=CF, description="exactly one row per customer, the same customers as the population",
                blocking=True, pool="warehouse")
@holds_warehouse
def features_unique_customers(warehouse: Warehouse) -> dg.AssetCheckResult:
    with warehouse.connect() as con:
        rows, distinct, pop = con.execute(
            "SELECT count(*), count(DISTINCT customer_id), (SELECT count(*) FROM features.population) "
            "FROM features.customer_features").fetchone()
    return dg.AssetCheckResult(
        passed=rows == distinct == pop,
        metadata={"actual": f"{rows:,} rows, {distinct:,} distinct customers", "threshold": f"{pop:,} (population)"},
    )


@dg.asset_check(asset=CF, description="no nulls in the columns listed in features.not_null", blocking=True,
                pool="warehouse")
@holds_warehouse
def features_not_null(warehouse: Warehouse, settings: Settings) -> dg.AssetCheckResult:
    cols = settings.get("features", "not_null")
    with warehouse.connect() as con:
        counts = con.execute(
            "SELECT " + ", ".join(f'count(*) - count("{c}")' for c in cols) + " FROM features.customer_features"
        ).fetchone()
    nulls = {c: n for c, n in zip(cols, counts, strict=True) if n}
    return dg.AssetCheckResult(passed=not nulls, metadata={
        "actual": ", ".join(f"{c}: {n:,} null" for c, n in nulls.items()) or "no nulls",
        "threshold": "no null in " + ", ".join(cols), "rows_with_nulls": sum(nulls.values())})


@dg.asset_check(asset=CF, description="values inside the bounds in features.ranges", pool="warehouse")
@holds_warehouse
def features_in_range(warehouse: Warehouse, settings: Settings) -> dg.AssetCheckResult:
    ranges: dict = settings.get("features", "ranges")
    with warehouse.connect() as con:
        present = {r[0] for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema='features' "
            "AND table_name='customer_features'").fetchall()}
        conds = {c: " OR ".join(x for x in (f'"{c}" < {lo}' if lo is not None else "",
                                            f'"{c}" > {hi}' if hi is not None else "") if x)
                 for c, (lo, hi) in ranges.items() if c in present}
        outside = dict(zip(conds, con.execute(
            "SELECT " + ", ".join(f"count(*) FILTER (WHERE {w})" for w in conds.values())
            + " FROM features.customer_features").fetchone(), strict=True)) if conds else {}
    bad = {c: n for c, n in outside.items() if n}

    def bounds(lo, hi) -> str:
        return " and ".join(x for x in (f">= {lo:g}" if lo is not None else "", f"<= {hi:g}" if hi is not None else "")
                            if x)

    return dg.AssetCheckResult(
        passed=not bad,
        metadata={"actual": ", ".join(f"{c}: {n:,} outside" for c, n in bad.items()) or "all in range",
                  "threshold": "; ".join(f"{c} {bounds(*ranges[c])}" for c in conds),
                  "values_outside": sum(bad.values())},
    )


feature_assets = [population, rfm, balances, holdings, labels, customer_features]
feature_checks = [features_unique_customers, features_not_null, features_in_range]
