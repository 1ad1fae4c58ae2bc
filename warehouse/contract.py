"""The raw data contract: the tables every bank's files are mapped to, their columns, types and keys.

This module is the single source of truth: ingest coerces to it, the GX suites are built from it, and
`docs/data-contract.md` is generated from it (a test keeps the two in step).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# DuckDB types used by the contract.
TEXT, INT, NUM, DATE, TS, BOOL = "VARCHAR", "BIGINT", "DOUBLE", "DATE", "TIMESTAMP", "BOOLEAN"

MONEY = 1e9  # |amount| above this is implausible for a retail bank's row (plausibility, overridable per source)
MIN_DATE = "1901-01-01"  # dates before it are placeholders (1900-01-01, 0001-01-01), not facts
MODES = ("snapshot", "events")


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    required: bool = False  # must be mapped by the source AND non-null in every row
    description: str = ""
    min: float | None = None  # inclusive bounds checked on load (rows outside go to quarantine)
    max: float | None = None
    allowed: tuple[str, ...] | None = None  # allowed values (after the source's value maps)
    not_future: bool = False  # dates after the load time are rejected
    sensitive: bool = False  # a person's name or free text: never in logs, metadata, alerts or serving
    # Plausibility (overridable per source, `plausibility:` in the source config): money beyond this is an
    # export error (a wrong unit, a shifted column, a placeholder such as 999999999999999), not a customer.
    max_abs: float | None = None
    age_of: str | None = None  # an age column: must agree with this birth-date column where both are given


@dataclass(frozen=True)
class Table:
    name: str
    description: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()
    references_customers: bool = False  # customer_id must exist in raw.customers (when customers are loaded)
    generated_key: str | None = None  # key column made from the row's content when a source has no id
    # How a bank delivers it (docs/deliveries.md): `snapshot` — every delivery is the complete current state,
    # versions kept in raw.<table>_history; `events` — append-only facts, merged by key.
    mode: str = "snapshot"
    extra: dict = field(default_factory=dict)

    @property
    def previewable(self) -> list[str]:
        """Columns whose values may be shown (UI previews): the contract's, minus sensitive ones. A bank's extra
        columns are never shown: nothing says what they hold (names, notes, ...)."""
        return [c.name for c in self.columns if not c.sensitive]

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)


CUSTOMERS = Table(
    "customers",
    "One row per customer: demographics, income, relationship. Extra columns of a bank's file are kept.",
    (
        Column("customer_id", TEXT, True, "Customer key, kept as text (leading zeros matter)."),
        Column("birth_date", DATE, description="Date of birth.", not_future=True),
        Column("age", INT, description="Age in years when the file was exported.", min=0, max=120, age_of="birth_date"),
        Column("gender", TEXT, description="F, M or U (unknown).", allowed=("F", "M", "U")),
        Column("income", NUM, description="Yearly income in the bank's currency.", min=0, max_abs=MONEY),
        Column("credit_score", NUM, description="Bureau or internal credit score.", min=0),
        Column("region", TEXT, description="Region or country of residence."),
        Column("city", TEXT, description="City or district of residence."),
        Column("agency_id", TEXT, description="Home agency (branch); see agencies."),
        Column("manager_id", TEXT, description="Relationship manager; see managers."),
        Column("joined_date", DATE, description="Date the customer relationship started.", not_future=True),
        Column("tenure_months", INT, description="Months as customer, when no joined_date is given.", min=0),
        Column("segment", TEXT, description="The bank's own segment label (mass, affluent, ...)."),
    ),
    key=("customer_id",),
)

ACCOUNTS = Table(
    "accounts",
    "Product holdings: one row per account, card or contract a customer holds, with open/close dates.",
    (
        Column("account_id", TEXT, True, "Holding key (account number, card id, contract id)."),
        Column("customer_id", TEXT, True, "Holder."),
        Column("product_id", TEXT, True, "Product held; see products."),
        Column("opened_date", DATE, description="Date opened.", not_future=True),
        Column("closed_date", DATE, description="Date closed; empty while open."),
        Column("balance", NUM, description="Current balance (negative for credit used).", max_abs=MONEY),
        Column("credit_limit", NUM, description="Credit limit for cards and overdrafts.", min=0, max_abs=MONEY),
        Column("status", TEXT, description="Bank's status code (active, dormant, closed, ...)."),
    ),
    key=("account_id",),
    references_customers=True,
)

PRODUCTS = Table(
    "products",
    "Product catalogue.",
    (
        Column("product_id", TEXT, True, "Product key."),
        Column("product_name", TEXT, description="Display name."),
        Column("category", TEXT, description="deposit, savings, card, loan, investment, insurance, other."),
        Column("monthly_fee", NUM, description="Monthly fee.", min=0, max_abs=MONEY),
    ),
    key=("product_id",),
)

TRANSACTIONS = Table(
    "transactions",
    "Money movements. amount is signed: positive into the customer's account, negative out of it.",
    (
        Column("transaction_id", TEXT, True, "Transaction key; made from file and row when the bank has none."),
        Column("customer_id", TEXT, True, "Customer the movement belongs to."),
        Column("account_id", TEXT, description="Account or holding; see accounts."),
        Column("transaction_date", TS, True, "When it happened.", not_future=True),
        Column("amount", NUM, True, "Signed amount: + credit (in), - debit (out).", max_abs=MONEY),
        Column("category", TEXT, description="salary, bill, card, transfer, cash, fee, loan, interest, purchase, ..."),
        Column("channel", TEXT, description="branch, atm, online, mobile, pos, ..."),
        Column("balance_after", NUM, description="Account balance after the movement.", max_abs=MONEY),
        Column("quantity", NUM, description="Items bought, for retail-style logs.", min=0),
        Column("counterparty", TEXT, description="The other party: merchant, payee or payer (an id, or a name as "
               "exported). The fraud model asks whether the customer dealt with it before.", sensitive=True),
        Column("fraud", BOOL, description="True for a transaction confirmed as fraud, false for one known genuine; "
               "empty when not known. The label models.fraud learns from (without it: an anomaly score)."),
    ),
    key=("transaction_id",),
    references_customers=True,
    generated_key="transaction_id",
    mode="events",
)

LOANS = Table(
    "loans",
    "Loans and credit contracts.",
    (
        Column("loan_id", TEXT, True, "Loan key."),
        Column("customer_id", TEXT, True, "Borrower."),
        Column("account_id", TEXT, description="Account the loan is paid from."),
        Column("start_date", DATE, description="Date granted.", not_future=True),
        Column("amount", NUM, True, "Principal.", min=0, max_abs=MONEY),
        Column("duration_months", INT, description="Term in months.", min=0),
        Column("monthly_payment", NUM, description="Instalment.", min=0, max_abs=MONEY),
        Column("interest_rate", NUM, description="Yearly rate in percent.", min=0, max=100),
        Column("status", TEXT, description="Bank's status code."),
        Column("defaulted", BOOL, description="True when the loan ended or runs in default."),
    ),
    key=("loan_id",),
    references_customers=True,
)

MANAGERS = Table(
    "managers",
    "Relationship managers.",
    (
        Column("manager_id", TEXT, True, "Manager key."),
        Column("manager_name", TEXT, description="Name.", sensitive=True),
        Column("agency_id", TEXT, description="Agency the manager works in."),
        Column("hired_date", DATE, description="Hiring date.", not_future=True),
    ),
    key=("manager_id",),
)

AGENCIES = Table(
    "agencies",
    "Agencies (branches).",
    (
        Column("agency_id", TEXT, True, "Agency key."),
        Column("agency_name", TEXT, description="Name."),
        Column("region", TEXT, description="Region."),
        Column("city", TEXT, description="City."),
    ),
    key=("agency_id",),
)

LABELS = Table(
    "labels",
    "Customer-level outcomes, long format: one row per customer and label (churned, defaulted, ...).",
    (
        Column("customer_id", TEXT, True, "Customer."),
        Column("label", TEXT, True, "Outcome name: churned, defaulted, term_deposit, ..."),
        Column("value", NUM, True, "Outcome: 1/0 for events, an amount for values."),
        Column("label_date", DATE, description="When the outcome happened or was observed."),
    ),
    key=("customer_id", "label"),
    references_customers=True,
    mode="events",
)

TARGETS = Table(
    "targets",
    "Objectives set for relationship managers and agencies, and what each achieved, period by period. Optional: "
    "with it, a period's performance score is its objective achievement; without it, a composite of the book "
    "(docs/scores.md, manager and agency performance).",
    (
        Column("level", TEXT, True, "`manager` or `agency`.", allowed=("manager", "agency")),
        Column("entity_id", TEXT, True, "The manager_id or agency_id it is set for."),
        Column("period", DATE, True, "The period's first day (monthly objectives: the 1st of the month)."),
        Column("objective", TEXT, True, "What is measured: new_products, balances, clients, ... (any name)."),
        Column("target", NUM, True, "The objective set for the period.", min=0, max_abs=MONEY),
        Column("achieved", NUM, description="What was achieved; empty while the period is open.", max_abs=MONEY),
    ),
    key=("level", "entity_id", "period", "objective"),
    mode="events",
)

TABLES: dict[str, Table] = {
    t.name: t for t in (CUSTOMERS, AGENCIES, MANAGERS, PRODUCTS, ACCOUNTS, TRANSACTIONS, LOANS, LABELS, TARGETS)
}

# A bank's extra columns that hold a person's name, contact details or free text, known by their (snake_case)
# name: kept in raw (nothing is lost) but never a feature, a preview value or a published column.
PERSONAL = re.compile(r"(^|_)(name|names|surname|firstname|lastname|fullname|email|e_mail|mail|phone|mobile|tel|"
                      r"address|street|note|notes|comment|comments|description|memo|remark|remarks|text|message)($|_)")


def personal(column: str) -> bool:
    return bool(PERSONAL.search(column.lower()))


# Lineage columns ingest adds to every raw table.
LINEAGE = (
    Column("_source_file", TEXT, True, "File the row came from."),
    Column("_source_row", INT, True, "Row number in that file as an editor or Excel shows it (header is row 1)."),
    Column("_ingested_at", TS, True, "When the row was loaded."),
    Column("_delivery_id", TEXT, True, "The delivery that loaded it (raw.deliveries)."),
)
# Versions of a snapshot table's rows (raw.<table>_history; raw.<table> is the open versions).
HISTORY = (
    Column("_feed", TEXT, True, "The feed (path glob of the source config) whose snapshots hold the row."),
    Column("_valid_from", TS, description="From the delivery that brought this version (its file's time); "
           "empty for the first delivery of the feed, which stands for everything before it."),
    Column("_valid_to", TS, description="Until the delivery that changed or dropped the row; empty while current."),
)
