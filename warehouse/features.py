"""Customer feature tables in DuckDB SQL, as of a snapshot date.

Point-in-time: only facts dated on or before the snapshot enter the features; outcomes (labels) are the
ones observed after it. Each builder writes one `features.<table>` with one row per customer and returns
its row count. Column meanings are in FEATURE_DOCS (and docs/features.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta

import duckdb

from warehouse.contract import HISTORY, LINEAGE, TABLES, personal
from warehouse.db import has_rows
from warehouse.frames import frame
from warehouse.mapping import sql_str
from warehouse.schema import table_mode
from warehouse.shards import shard_sql

WINDOWS = (30, 90, 180, 365)
MAX_PIVOT_VALUES = 8  # channel/category/product columns: the most frequent values, the rest as "other"

FEATURE_DOCS = {
    "customer_id": "Customer key.",
    "snapshot_date": "Features are computed from facts on or before this date.",
    "recency_days": "Days from the last transaction to the snapshot (null: no transaction).",
    "txn_count_{w}d": "Transactions in the {w} days up to the snapshot.",
    "spend_{w}d": "Money out (sum of -amount over debits) in the {w} days up to the snapshot.",
    "inflow_{w}d": "Money in (sum of credits) in the {w} days up to the snapshot.",
    "frequency": "Transactions in the 365 days up to the snapshot (RFM F).",
    "monetary": "Spend in the 365 days up to the snapshot (RFM M).",
    "active_months_365d": "Distinct months with a transaction in the last 365 days.",
    "days_since_first_txn": "Days from the first transaction to the snapshot.",
    "rfm_r / rfm_f / rfm_m": "Quintile scores 1-5 (5 = most recent / most frequent / highest spend); equal values "
    "share a score, placed at the middle of their run (mid-rank).",
    "rfm_score": "rfm_r*100 + rfm_f*10 + rfm_m, e.g. 555 for the best customers.",
    "txn_trend_90d": "Transactions in the last 90 days / in the 90 days before (1 = steady; null: none before).",
    "spend_trend_90d": "Spend in the last 90 days / in the 90 days before.",
    "salary_credits_90d": "Credits categorised salary/pension in the last 90 days.",
    "channel_share_<c>": "Share of the last 365 days' transactions made through channel <c>.",
    "category_spend_share_<c>": "Share of the last 365 days' spend in category <c>.",
    "balance_now": "Sum over the customer's accounts of the last known balance on or before the snapshot (several postings at the same time: the later row of the file).",
    "balance_{w}d_ago": "Same, {w} days before the snapshot.",
    "balance_change_{w}d": "balance_now - balance_{w}d_ago.",
    "balance_avg_90d": "Mean balance after each transaction in the last 90 days.",
    "products_held": "Distinct products held open at the snapshot.",
    "accounts_open": "Holdings open at the snapshot.",
    "products_opened_365d / products_closed_365d": "Holdings opened / closed in the last 365 days.",
    "has_<product>": "1 when the product (or product category) is held at the snapshot.",
    "credit_limit_total": "Sum of credit limits of open holdings.",
    "loans_count / loan_amount_total / loan_payment_monthly": "Loans started on or before the snapshot.",
    "age": "Age in years at the snapshot (from birth_date, else the file's age).",
    "tenure_months": "Months as a customer at the snapshot (from joined_date, else the file's tenure).",
    "income / credit_score / gender / region / city / segment / agency_id / manager_id": "From customers.",
    "income_monthly": "income / 12, else the average monthly inflow over the last 365 days.",
    "spend_to_income": "Monthly spend over the last 365 days / income_monthly.",
    "debt_to_income": "Monthly loan payments / income_monthly.",
    "financial_health_score": "0-100: 0.40 income + 0.25 credit score + 0.20 savings (balance) + 0.15 spending "
    "discipline (1 - spend/income), each as a percentile among customers; missing parts are left out and the "
    "weights renormalised.",
    "agency_customer_share / agency_avg_income / agency_avg_balance": "The customer's agency: its share of the "
    "customers (of those with an agency; a share, not a count, so an agency weighs the same whether a delivery "
    "holds the whole bank or part of it), and its customers' mean income and balance. Group aggregates: not "
    "counted in drift (docs/alerts.md).",
    "manager_customer_share / manager_tenure_years": "The relationship manager: their portfolio's share of the "
    "customers (of those with a manager; a group aggregate, not counted in drift) and years since hired.",
    "attr_<name>": "Extra columns of the bank's customer file, as given (numbers or categories).",
}


# Computed over the other customers of the customer's agency or manager: one value per group, so across
# customers they are a few dozen point masses that move with whichever customers a delivery holds (a random
# half of the bank moves agency_avg_income by PSI 2-3). Drift monitoring measures them but does not count
# them; what they summarise is measured customer by customer (income, balance_now).
GROUP_AGGREGATES = ("agency_customer_share", "agency_avg_income", "agency_avg_balance", "manager_customer_share")


def state(con, table: str, snap: date) -> str:
    """raw.<table> as it stood at the end of the snapshot date: for a snapshot table, the versions valid then
    (a version from the feed's first delivery stands for everything before it); an events table as it is
    (facts carry their own dates, which the builders filter)."""
    if table_mode(con, table) != "snapshot":
        return f"raw.{table}"
    hidden = ", ".join(c.name for c in HISTORY)
    end = f"(DATE '{snap}' + INTERVAL 1 DAY)"
    return (f"(SELECT * EXCLUDE ({hidden}) FROM raw.{table}_history WHERE (_valid_from IS NULL OR _valid_from < "
            f"{end}) AND (_valid_to IS NULL OR _valid_to >= {end}))")


def _cols(con, schema: str, table: str) -> list[tuple[str, str]]:
    return con.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = ? AND table_name = ? "
        "ORDER BY ordinal_position", [schema, table]
    ).fetchall()


def _count(con, table: str) -> int:
    return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def _slug(value: str) -> str:
    s = re.sub(r"[^0-9a-zA-Z]+", "_", str(value)).strip("_").lower()
    return s or "blank"


def resolve_snapshot(con: duckdb.DuckDBPyConnection, configured: date | None, holdout_days: int) -> date:
    """The configured date, else the latest transaction date minus the outcome window, else today."""
    if configured:
        return configured
    last = con.execute("SELECT max(transaction_date)::DATE FROM raw.transactions").fetchone()[0]
    return (last - timedelta(days=holdout_days)) if last else date.today()


def empty_population(con: duckdb.DuckDBPyConnection, snap: date, configured: date | None, holdout_days: int,
                     origin: str) -> str | None:
    """Why no customer is known at the snapshot although the warehouse holds transactions (every feature would be
    empty, and no model could train), saying what to set in the source config `origin`; None when that is not
    the case."""
    first, last = con.execute("SELECT min(transaction_date)::DATE, max(transaction_date)::DATE "
                              "FROM raw.transactions").fetchone()
    if first is None or snap >= first:
        return None
    why = (f"snapshot.date {snap}" if configured else
           f"the latest transaction {last} minus snapshot.holdout_days {holdout_days}, the outcome window")
    return (f"no customer is known at the snapshot {snap} ({why}): the transactions cover {first} .. {last}. Set "
            f"snapshot.holdout_days (e.g. 0 when the data holds no outcomes to wait for) or snapshot.date in {origin}")


def build_population(con, snap: date) -> int:
    """Every customer known at the snapshot: from customers, or from the facts when a bank sends none."""
    s = f"DATE '{snap}'"
    customers = state(con, "customers", snap)
    in_facts = f"""
        SELECT customer_id FROM raw.transactions WHERE transaction_date < {s} + 1
        UNION SELECT customer_id FROM {state(con, "accounts", snap)} a WHERE opened_date IS NULL OR opened_date <= {s}
        UNION SELECT customer_id FROM {state(con, "loans", snap)} l WHERE start_date IS NULL OR start_date <= {s}"""
    if has_rows(con, customers):
        # A customer file defines who is a customer: those who joined by the snapshot, plus those who joined
        # later on paper but already have facts before it. The facts are only probed for the latter (a
        # semi join on a small set, not a DISTINCT over every transaction).
        ids = f"""
            SELECT customer_id FROM {customers} c WHERE joined_date IS NULL OR joined_date <= {s}
            UNION SELECT customer_id FROM ({in_facts}) f
                  SEMI JOIN (SELECT customer_id FROM {customers} c WHERE joined_date > {s}) late USING (customer_id)"""
    else:
        ids = in_facts
    con.execute(f"""
        CREATE OR REPLACE TABLE features.population AS
        SELECT DISTINCT customer_id, {s} AS snapshot_date FROM ({ids}) ORDER BY customer_id""")
    return _count(con, "features.population")


@dataclass(frozen=True)
class Sample:
    """About `customers` of the population, stratified by customer shard: the iceberg backend's DuckDB file, whose
    features the models train, are gated and watched on while the lake builds and scores the whole bank's."""

    customers: int
    shards: int

    def apply(self, con) -> tuple[int, int]:
        """features.population cut to the sample when it holds more: shard k, holding n_k of its n customers, keeps
        round(n_k * customers / n), those with the lowest md5('sample:' || customer_id) (the same customers every
        run, whatever the row order, and in any engine). (customers kept, customers known)."""
        known = _count(con, "features.population")
        if known <= self.customers:
            return known, known
        con.execute(f"""
            DELETE FROM features.population WHERE customer_id NOT IN (
                SELECT customer_id FROM (SELECT customer_id, md5('sample:' || customer_id::VARCHAR) AS h,
                                                {shard_sql("customer_id", self.shards)} AS shard FROM features.population)
                QUALIFY row_number() OVER (PARTITION BY shard ORDER BY h)
                        <= round(count(*) OVER (PARTITION BY shard) * ?))""", [self.customers / known])
        return _count(con, "features.population"), known


def _top_values(con, kind: str, expr: str, table: str, where: str, given: dict[str, list[str]] | None = None
                ) -> list[str]:
    """The values a pivot makes columns of (channels, spend categories, products): the most frequent now, plus
    every value an earlier build pivoted (features.pivots), so a column a model was trained on does not vanish
    when its value drops out of the top (it stays, with zeros) and scoring never misses an input for that.
    `given`: the lists chosen for the whole bank (a shard's build on the iceberg backend uses the bank's)."""
    if given is not None:
        return given[kind]
    con.execute("CREATE TABLE IF NOT EXISTS features.pivots (kind VARCHAR, value VARCHAR, first_built TIMESTAMP)")
    top = [r[0] for r in con.execute(
        f"SELECT {expr} AS v, count(*) n FROM {table} WHERE {where} AND {expr} IS NOT NULL "
        f"GROUP BY 1 ORDER BY n DESC, v LIMIT {MAX_PIVOT_VALUES}").fetchall()]
    known = [r[0] for r in con.execute("SELECT value FROM features.pivots WHERE kind = ? ORDER BY first_built, value",
                                       [kind]).fetchall()]
    new = [v for v in top if v not in known]
    if new:
        con.executemany("INSERT INTO features.pivots VALUES (?, ?, now())", [(kind, v) for v in new])
    return [*known, *new]


def _quintile(col: str) -> str:
    mid = (f"(rank() OVER (ORDER BY {col}) - 1 + count(*) OVER (PARTITION BY {col}) / 2) "
           f"/ count(*) OVER ()")
    return f"least(5, 1 + floor(5 * {mid}))::INTEGER"


def pivot_values(con, snap: date) -> dict[str, list[str]]:
    """The pivot lists of every kind, chosen over this warehouse's rows (and recorded in features.pivots)."""
    s = f"DATE '{snap}'"
    in_year = f"transaction_date < {s} + 1 AND transaction_date >= {s} - 364"
    kind, joined, open_at = _product_pivot(con, snap)
    return {"channel": _top_values(con, "channel", "lower(channel)", "raw.transactions", in_year),
            "category": _top_values(con, "category", "lower(category)", "raw.transactions", f"{in_year} AND amount < 0"),
            "product": _top_values(con, "product", kind, joined, open_at)}


def build_rfm(con, snap: date, pivots: dict[str, list[str]] | None = None, scores: bool = True) -> int:
    """RFM, windowed counts and spend, trends and channel/category mix from transactions. Without `scores`, the
    quintile scores (over the whole population) are left to `build_population_scores`."""
    s = f"DATE '{snap}'"
    in_year = f"transaction_date < {s} + 1 AND transaction_date >= {s} - 364"
    channels = _top_values(con, "channel", "lower(channel)", "raw.transactions", in_year, pivots)
    categories = _top_values(con, "category", "lower(category)", "raw.transactions", f"{in_year} AND amount < 0",
                             pivots)
    # Each row carries 0/1 indicators (in window w, in the year, debit amount, credit amount) computed once,
    # and the aggregates are plain sums of products: about twice as fast in DuckDB as ~45 FILTER clauses.
    flags = ", ".join(f"(transaction_date >= {s} - {w - 1})::INTEGER AS d{w}" for w in WINDOWS)
    window_cols = ",\n".join(
        f"sum(d{w})::BIGINT AS txn_count_{w}d, sum(d{w} * out_amt) AS spend_{w}d, sum(d{w} * in_amt) AS inflow_{w}d"
        for w in WINDOWS
    )
    mix = [
        f"sum(d365 * (ch = {sql_str(c)})::INTEGER) / greatest(sum(d365), 1) AS channel_share_{_slug(c)}"
        for c in channels
    ] + [
        f"sum(d365 * (cat = {sql_str(c)})::INTEGER * out_amt) / greatest(sum(d365 * out_amt), 1e-9) "
        f"AS category_spend_share_{_slug(c)}"
        for c in categories
    ]
    mix_sql = (",\n" + ",\n".join(mix)) if mix else ""
    # Counts and amounts of customers without any transaction are 0, not missing.
    names = (["recency_days", "days_since_first_txn", "active_months_365d", "salary_credits_90d"]
             + [f"{k}_{w}d" for w in WINDOWS for k in ("txn_count", "spend", "inflow")]
             + [f"channel_share_{_slug(c)}" for c in channels] + [f"category_spend_share_{_slug(c)}" for c in categories])
    zero = re.compile(r"^(txn_count|spend|inflow)_\d+d$|^active_months|^salary_credits|^channel_share|^category_spend")
    filled = [f"coalesce(a.{n}, 0) AS {n}" if zero.search(n) else f"a.{n}" for n in names]
    con.execute(f"""
        CREATE OR REPLACE TABLE features.rfm AS
        WITH t AS (
            SELECT customer_id, transaction_date, {flags},
                   (transaction_date >= {s} - 179 AND transaction_date < {s} - 89)::INTEGER AS d_prev,
                   greatest(-amount, 0) AS out_amt, greatest(amount, 0) AS in_amt,
                   lower(channel) AS ch, lower(category) AS cat
            FROM raw.transactions WHERE transaction_date < {s} + 1),
        agg AS (
            SELECT customer_id,
                   date_diff('day', max(transaction_date)::DATE, {s}) AS recency_days,
                   date_diff('day', min(transaction_date)::DATE, {s}) AS days_since_first_txn,
                   -- distinct active months as a bitmask of months back (0..12): far cheaper than COUNT(DISTINCT)
                   bit_count(bit_or(d365::UBIGINT << date_diff('month', transaction_date, {s})::INT)) AS active_months_365d,
                   sum(d_prev)::BIGINT AS txn_prev_90d,
                   sum(d_prev * out_amt) AS spend_prev_90d,
                   sum(d90 * (in_amt > 0 AND cat IN ('salary', 'pension'))::INTEGER)::BIGINT AS salary_credits_90d,
                   {window_cols}{mix_sql}
            FROM t GROUP BY customer_id),
        b AS MATERIALIZED (
            SELECT p.customer_id, p.snapshot_date, {", ".join(filled)},
                   coalesce(a.txn_count_365d, 0) AS frequency,
                   coalesce(a.spend_365d, 0) AS monetary,
                   a.txn_count_90d / nullif(a.txn_prev_90d, 0) AS txn_trend_90d,
                   a.spend_90d / nullif(a.spend_prev_90d, 0) AS spend_trend_90d
            FROM features.population p LEFT JOIN agg a USING (customer_id))
        {f", q AS ({_rfm_scores_select('b')}) SELECT b.*, q.* EXCLUDE (customer_id) FROM b JOIN q USING (customer_id)"
         if scores else "SELECT * FROM b"}
        ORDER BY customer_id""")
    return _count(con, "features.rfm")


def _rfm_scores_select(src: str) -> str:
    # Quintiles by mid-rank: a run of equal values is placed at its middle, so equal values get equal scores, the
    # same on every run (ntile split ties arbitrarily), and a big tie (e.g. everyone seen yesterday) does not
    # swallow the scale. Over a narrow projection: a window over the wide rows re-sorts every column.
    return f"""
        SELECT customer_id, r AS rfm_r, f AS rfm_f, m AS rfm_m, r * 100 + f * 10 + m AS rfm_score FROM (
            SELECT customer_id,
                   CASE WHEN recency_days IS NULL THEN 1 ELSE 6 - {_quintile("recency_days")} END AS r,
                   {_quintile("frequency")} AS f, {_quintile("monetary")} AS m
            FROM (SELECT customer_id, recency_days, frequency, monetary FROM {src}))"""


def build_balances(con, snap: date) -> int:
    """Balances now and 30/90/180 days ago, from balance-after on transactions, else the accounts file."""
    s = f"DATE '{snap}'"
    # The latest transaction wins; on the same timestamp (date-only exports: every posting of a day) the later
    # row of its file, so a rerun gives the same balance. One HUGEINT key: time, then file (by hash: any fixed
    # order will do), then row; a struct key costs twice as much at 60M rows.
    latest = ("epoch_us(transaction_date)::HUGEINT * 18446744073709551616 "
              "+ (hash(_source_file) % 4194304)::HUGEINT * 4398046511104 + coalesce(_source_row, 0)")
    points = ", ".join(
        f"arg_max(balance_after, {latest}) FILTER (WHERE transaction_date < {s} - {w} + 1) AS b{w}"
        for w in (0, 30, 90, 180)
    )
    con.execute(f"""
        CREATE OR REPLACE TABLE features.balances AS
        WITH per_account AS (
            SELECT customer_id, coalesce(account_id, '') AS account_id, {points},
                   avg(balance_after) FILTER (WHERE transaction_date >= {s} - 89) AS avg90
            FROM raw.transactions
            WHERE transaction_date < {s} + 1 AND balance_after IS NOT NULL
            GROUP BY ALL),
        from_txn AS (
            SELECT customer_id, sum(b0) AS b0, sum(b30) AS b30, sum(b90) AS b90, sum(b180) AS b180,
                   sum(avg90) AS avg90
            FROM per_account GROUP BY customer_id),
        from_accounts AS (  -- banks that send balances with the holdings instead
            SELECT customer_id, sum(balance) AS b FROM {state(con, "accounts", snap)} a
            WHERE (opened_date IS NULL OR opened_date <= {s}) AND (closed_date IS NULL OR closed_date > {s})
            GROUP BY customer_id),
        from_customers AS (SELECT customer_id, {_customer_attr(con, "balance")} AS b
                           FROM {state(con, "customers", snap)} c)
        SELECT p.customer_id, p.snapshot_date,
               coalesce(t.b0, a.b, c.b) AS balance_now,
               t.b30 AS balance_30d_ago, t.b90 AS balance_90d_ago, t.b180 AS balance_180d_ago,
               t.b0 - t.b30 AS balance_change_30d, t.b0 - t.b90 AS balance_change_90d,
               t.b0 - t.b180 AS balance_change_180d, t.avg90 AS balance_avg_90d
        FROM features.population p
        LEFT JOIN from_txn t USING (customer_id)
        LEFT JOIN from_accounts a USING (customer_id)
        LEFT JOIN from_customers c USING (customer_id)
        ORDER BY p.customer_id""")
    return _count(con, "features.balances")


def _product_pivot(con, snap: date) -> tuple[str, str, str]:
    """What a product flag is (a category when the bank sends a catalogue, else the product id), the holdings
    it is counted over, and the condition of a holding open at the snapshot."""
    s = f"DATE '{snap}'"
    products = state(con, "products", snap)
    kind = "coalesce(lower(pr.category), lower(a.product_id))" if has_rows(con, products) else "lower(a.product_id)"
    joined = f"{state(con, 'accounts', snap)} a LEFT JOIN {products} pr USING (product_id)"
    return kind, joined, f"(a.opened_date IS NULL OR a.opened_date <= {s}) AND (a.closed_date IS NULL OR a.closed_date > {s})"


def build_holdings(con, snap: date, pivots: dict[str, list[str]] | None = None) -> int:
    """Product holdings at the snapshot, product flags, and loans.

    Loan status and the `defaulted` flag describe the loan when the file was exported, i.e. after the
    snapshot: they are outcomes, not features, and are left out here."""
    s = f"DATE '{snap}'"
    open_at = f"(opened_date IS NULL OR opened_date <= {s}) AND (closed_date IS NULL OR closed_date > {s})"
    kind, joined, open_in_joined = _product_pivot(con, snap)
    kinds = _top_values(con, "product", kind, joined, open_in_joined, pivots)
    flags = "".join(
        f",\n max(CASE WHEN {kind} = {sql_str(k)} AND {open_at} THEN 1 ELSE 0 END) AS has_{_slug(k)}" for k in kinds
    )
    con.execute(f"""
        CREATE OR REPLACE TABLE features.holdings AS
        WITH acc AS (
            SELECT a.customer_id,
                   count(DISTINCT a.product_id) FILTER (WHERE {open_at}) AS products_held,
                   count(*) FILTER (WHERE {open_at}) AS accounts_open,
                   count(*) FILTER (WHERE opened_date > {s} - 365 AND opened_date <= {s}) AS products_opened_365d,
                   count(*) FILTER (WHERE closed_date > {s} - 365 AND closed_date <= {s}) AS products_closed_365d,
                   coalesce(sum(credit_limit) FILTER (WHERE {open_at}), 0) AS credit_limit_total{flags}
            FROM {joined} GROUP BY a.customer_id),
        ln AS (
            SELECT customer_id, count(*) AS loans_count, sum(amount) AS loan_amount_total,
                   sum(monthly_payment) FILTER (WHERE start_date IS NULL OR duration_months IS NULL OR
                       start_date + to_months(duration_months::INT) > {s}) AS loan_payment_monthly
            FROM {state(con, "loans", snap)} l WHERE start_date IS NULL OR start_date <= {s} GROUP BY customer_id)
        SELECT p.customer_id, p.snapshot_date, acc.* EXCLUDE (customer_id),
               coalesce(ln.loans_count, 0) AS loans_count, coalesce(ln.loan_amount_total, 0) AS loan_amount_total,
               coalesce(ln.loan_payment_monthly, 0) AS loan_payment_monthly
        FROM features.population p LEFT JOIN acc USING (customer_id) LEFT JOIN ln USING (customer_id)
        ORDER BY p.customer_id""")
    _zero_fill(con, "features.holdings", r"^(products_|accounts_open|credit_limit_total|has_)")
    return _count(con, "features.holdings")


def _customer_attr(con, name: str) -> str:
    names = {c for c, _ in _cols(con, "raw", "customers")}
    return f'"{name}"' if name in names else "NULL::DOUBLE"


def _zero_fill(con, table: str, pattern: str) -> None:
    schema, name = table.split(".")
    cols = [c for c, _ in _cols(con, schema, name) if re.search(pattern, c)]
    if cols:
        con.execute(f"UPDATE {table} SET " + ", ".join(f'"{c}" = coalesce("{c}", 0)' for c in cols))


def customer_extra_columns(con) -> list[tuple[str, str]]:
    """The bank's own customer attributes usable as features: not names, contacts or free text (by column
    name), and no text column with so many distinct values that it identifies people rather than groups them."""
    contract = {c.name for c in TABLES["customers"].columns} | {c.name for c in LINEAGE}
    extras = [(c, t) for c, t in _cols(con, "raw", "customers") if c not in contract and not personal(c)]
    text = [c for c, t in extras if t == "VARCHAR"]
    if not text:
        return extras
    counts = con.execute("SELECT count(*), " + ", ".join(f'approx_count_distinct("{c}")' for c in text)
                         + " FROM raw.customers").fetchone()
    rows, distinct = counts[0], dict(zip(text, counts[1:], strict=True))
    return [(c, t) for c, t in extras if c not in distinct or distinct[c] <= max(50, 0.2 * rows)]


def build_customer_features(con, snap: date, extras: list[tuple[str, str]] | None = None,
                            population: bool = True) -> int:
    """The wide model-ready table: demographics, RFM, balances, holdings, ratios, health score, aggregates.
    Without `population`, the columns computed over the whole population are left to `build_population_scores`
    (a shard's build on the iceberg backend); `extras`: the bank's customer attributes chosen for the whole bank."""
    s = f"DATE '{snap}'"
    extras = customer_extra_columns(con) if extras is None else extras
    extra_sql = "".join(f',\n c."{n}" AS "attr_{n}"' for n, _ in extras)
    own = f"""
        base AS (
            SELECT p.customer_id, p.snapshot_date,
                   coalesce(date_diff('year', c.birth_date, {s}), c.age) AS age,
                   c.gender, c.income, c.credit_score, c.region, c.city, c.segment, c.agency_id, c.manager_id,
                   coalesce(date_diff('month', c.joined_date, {s}), c.tenure_months,
                            (r.days_since_first_txn / 30.44)::BIGINT) AS tenure_months{extra_sql}
            FROM features.population p
            LEFT JOIN {state(con, "customers", snap)} c USING (customer_id)
            LEFT JOIN features.rfm r USING (customer_id)),
        joined AS (
            SELECT b.*, r.* EXCLUDE (customer_id, snapshot_date), bl.* EXCLUDE (customer_id, snapshot_date),
                   h.* EXCLUDE (customer_id, snapshot_date),
                   coalesce(b.income / 12, r.inflow_365d / greatest(r.active_months_365d, 1)) AS income_monthly
            FROM base b JOIN features.rfm r USING (customer_id) JOIN features.balances bl USING (customer_id)
            JOIN features.holdings h USING (customer_id)),
        ratios AS MATERIALIZED (
            SELECT *, (monetary / 12) / nullif(income_monthly, 0) AS spend_to_income,
                   loan_payment_monthly / nullif(income_monthly, 0) AS debt_to_income
            FROM joined)"""
    tail = (f", pop AS ({_population_select(con, 'ratios', snap)}) SELECT ratios.*, pop.* EXCLUDE (customer_id) "
            f"FROM ratios JOIN pop USING (customer_id)") if population else " SELECT * FROM ratios"
    # Stored in customer order, like every feature table: a parallel join's output order changes from run to
    # run, and the models' row sampling and k-means' seeding follow row order, so the same data would give
    # other models (churn AUC 0.8657-0.8687 over three runs of the same 10,000 customers).
    con.execute(f"CREATE OR REPLACE TABLE features.customer_features AS WITH {own}{tail} ORDER BY customer_id")
    return _count(con, "features.customer_features")


# The columns computed over the whole population (quintiles, percentiles, group shares and means), and what they
# are computed from: on the iceberg backend every shard builds its own customers' other columns, one step
# computes these over all shards' inputs (build_population_scores), and `add_population_scores` joins them in.
RFM_SCORES = ("rfm_r", "rfm_f", "rfm_m", "rfm_score")
POPULATION_COLUMNS = (*RFM_SCORES, "financial_health_score", "agency_customer_share", "agency_avg_income",
                      "agency_avg_balance", "manager_customer_share", "manager_tenure_years")
POPULATION_INPUTS = ("customer_id", "recency_days", "frequency", "monetary", "income_monthly", "credit_score",
                     "balance_now", "spend_to_income", "agency_id", "manager_id")


def _population_select(con, src: str, snap: date) -> str:
    s = f"DATE '{snap}'"
    return f"""
        WITH n AS (SELECT customer_id, income_monthly, credit_score, balance_now, spend_to_income, agency_id,
                          manager_id FROM {src}),
        -- ranks over a narrow projection: a window over all ~90 columns re-sorts every one of them
        ranks AS (
            SELECT customer_id,
                   CASE WHEN income_monthly IS NOT NULL THEN percent_rank() OVER (
                        PARTITION BY income_monthly IS NULL ORDER BY income_monthly) END AS p_income,
                   CASE WHEN credit_score IS NOT NULL THEN percent_rank() OVER (
                        PARTITION BY credit_score IS NULL ORDER BY credit_score) END AS p_credit,
                   CASE WHEN balance_now IS NOT NULL THEN percent_rank() OVER (
                        PARTITION BY balance_now IS NULL ORDER BY balance_now) END AS p_savings,
                   CASE WHEN spend_to_income IS NOT NULL THEN 1 - percent_rank() OVER (
                        PARTITION BY spend_to_income IS NULL ORDER BY spend_to_income) END AS p_spending
            FROM n),
        agency AS (
            SELECT agency_id, count(*) / sum(count(*)) OVER () AS agency_customer_share,
                   avg(income_monthly) * 12 AS agency_avg_income, avg(balance_now) AS agency_avg_balance
            FROM n WHERE agency_id IS NOT NULL GROUP BY agency_id),
        manager AS (
            SELECT r.manager_id, count(*) / sum(count(*)) OVER () AS manager_customer_share,
                   any_value(date_diff('day', m.hired_date, {s}) / 365.25) AS manager_tenure_years
            FROM n r LEFT JOIN {state(con, "managers", snap)} m USING (manager_id)
            WHERE r.manager_id IS NOT NULL GROUP BY r.manager_id)
        SELECT n.customer_id,
               round(100 * (0.40 * coalesce(p_income, 0) + 0.25 * coalesce(p_credit, 0)
                           + 0.20 * coalesce(p_savings, 0) + 0.15 * coalesce(p_spending, 0))
                     / nullif(0.40 * (p_income IS NOT NULL)::INT + 0.25 * (p_credit IS NOT NULL)::INT
                              + 0.20 * (p_savings IS NOT NULL)::INT + 0.15 * (p_spending IS NOT NULL)::INT, 0),
                     1) AS financial_health_score,
               ag.* EXCLUDE (agency_id), mg.* EXCLUDE (manager_id)
        FROM n JOIN ranks USING (customer_id) LEFT JOIN agency ag USING (agency_id)
        LEFT JOIN manager mg USING (manager_id)"""


def build_population_scores(con, src: str, snap: date) -> int:
    """features.population_scores: POPULATION_COLUMNS per customer, over `src` (a relation of
    POPULATION_INPUTS for the whole population: every shard's customer_features built without them)."""
    con.execute(f"""
        CREATE OR REPLACE TABLE features.population_scores AS
        WITH src AS MATERIALIZED (SELECT {", ".join(POPULATION_INPUTS)} FROM {src}),
        q AS ({_rfm_scores_select("src")}), pop AS ({_population_select(con, "src", snap)})
        SELECT q.*, pop.* EXCLUDE (customer_id) FROM q JOIN pop USING (customer_id) ORDER BY customer_id""")
    return _count(con, "features.population_scores")


def add_population_scores(con, scores: str) -> None:
    """features.rfm and features.customer_features built without the population's columns get them from
    `scores` (rows of build_population_scores), in the columns' places of a build with them."""
    rfm = [c for c, _ in _cols(con, "features", "rfm")]
    own = [c for c, _ in _cols(con, "features", "customer_features")]
    at = max(own.index(c) for c in rfm if c in own) + 1  # the quintiles follow the other RFM columns
    order = [*(f'f."{c}"' for c in own[:at]), *(f"s.{c}" for c in RFM_SCORES), *(f'f."{c}"' for c in own[at:]),
             *(f"s.{c}" for c in POPULATION_COLUMNS if c not in RFM_SCORES)]
    con.execute(f"CREATE OR REPLACE TABLE features.customer_features AS SELECT {', '.join(order)} "
                f"FROM features.customer_features f JOIN {scores} s USING (customer_id) ORDER BY customer_id")
    con.execute(f"CREATE OR REPLACE TABLE features.rfm AS SELECT f.*, {', '.join(f's.{c}' for c in RFM_SCORES)} "
                f"FROM features.rfm f JOIN {scores} s USING (customer_id) ORDER BY customer_id")


def build_labels(con, snap: date) -> int:
    """Outcomes observed after the snapshot (undated outcomes are taken as they are)."""
    con.execute(f"""
        CREATE OR REPLACE TABLE features.labels AS
        SELECT l.customer_id, l.label, l.value, l.label_date, p.snapshot_date
        FROM raw.labels l JOIN features.population p USING (customer_id)
        WHERE l.label_date IS NULL OR l.label_date > DATE '{snap}'
        ORDER BY l.customer_id, l.label""")
    return _count(con, "features.labels")


BUILDERS = (build_population, build_rfm, build_balances, build_holdings, build_labels, build_customer_features)


def build_all(con, snap: date) -> None:
    """Every feature table in dependency order (the assets do the same one by one; this is for notebooks,
    tests and benchmarks)."""
    for build in BUILDERS:
        build(con, snap)


def training_frame(con, label: str):
    """features.customer_features with the outcome `label` (0 when a customer has none): the frame a
    supervised model trains on. Returns (features, target) as a DataFrame and a Series, rows in customer order.

    The features are read as stored (in customer order) and the outcomes looked up beside them: a join's output
    order changes from run to run on a big table, and the model's row sampling follows row order."""
    labels = con.execute("SELECT customer_id, coalesce(value, 0)::INTEGER AS value FROM features.labels "
                         "WHERE label = ?", [label]).df().set_index("customer_id")["value"]
    if not labels.index.is_unique:  # not the pipeline's labels (one per customer and label): a row per match
        out = frame(con.execute(
            """SELECT f.*, coalesce(l.value, 0)::INTEGER AS _target FROM features.customer_features f
               LEFT JOIN features.labels l ON l.customer_id = f.customer_id AND l.label = ?
               ORDER BY f.customer_id, _target""", [label]))
        return out, out.pop("_target")  # pop in place: drop() would copy every column
    out = frame(con.execute("SELECT * FROM features.customer_features"))
    return out, out["customer_id"].map(labels).fillna(0).astype("int32").rename("_target")
