"""A realistic synthetic retail bank, written in the raw data contract's tables (no Dagster here).

`generate_bank` writes customers, agencies, managers, products, accounts, transactions, loans and labels as
CSV or XLSX. Customers are generated in fixed-size chunks, each from its own seeded generator, so memory is
bounded, a run is byte-for-byte reproducible from (seed, arguments), and 1M customers (~50M transactions)
fit in a few minutes. Everything is vectorised numpy; the only per-row Python loop is the XLSX writer.

How the labels get their signal (all dates relative to snapshot = end_date - 90 days):

* churn: each customer has a latent "intent to leave" built from short tenure, few products, no digital
  use, no salary paid in and youth, plus noise. High intent shows BEFORE the snapshot as complaints and a
  fading activity rate (fewer transactions), salary moved elsewhere, balances drained and no longer
  topped up, secondary products closed. Churners then leave on a date in the 90 days after the snapshot
  (label_date): a closing transfer empties the accounts, they are closed, and no transaction follows.
* default: loan holders default in the 90 days after the snapshot depending on credit score, income,
  debt-to-income and a latent financial stress that shows before the snapshot as overspending, incident
  fees and lost salaries. After the default date the loan instalments stop.
* product take-up: besides the new customers who join after the snapshot, existing customers open
  secondary products (savings, term deposit, card, investments, insurance; not loans) in the 90 days after
  it, with the propensities that drive their holdings (income, age, tenure) and the pace of their openings
  before it, so next-product recommendations can be evaluated out of time. These accounts are drawn from a
  generator of their own: every other value is the same as without them.
The noise is set so a gradient-boosted model on RFM / balance-trend / product features lands around
AUC 0.8-0.9, not a give-away.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import xlsxwriter

CHUNK = 50_000  # customers per chunk; part of the seed, so changing it changes the data
HISTORY_MONTHS = 15  # transaction history ending at end_date
HORIZON_DAYS = 90  # label window after the snapshot
XLSX_PART_ROWS = 1_000_000  # an xlsx sheet holds 1,048,575 data rows; transactions are split in parts
DAY = 86_400

TX_CATEGORIES = ("salary", "bill", "card", "transfer", "cash", "fee", "loan", "interest")
SAL, BILL, CARD, TRF, CASH, FEE, LOAN, INT = range(8)
# "system" marks movements nobody initiated at a channel (salaries, direct debits, fees, interest), so
# the customer-facing channels measure real channel use.
CHANNELS = ("branch", "atm", "online", "mobile", "pos", "system")
BRANCH, ATM, ONLINE, MOBILE, POS, SYSTEM = range(6)

OCCUPATIONS = ("employee", "executive", "civil_servant", "self_employed", "unemployed", "student", "retired")
MARITAL = ("single", "married", "divorced", "widowed")
SEGMENTS = ("mass", "affluent", "private")
LOAN_STATUS = ("active", "default", "repaid")
ACCOUNT_STATUS = ("active", "dormant", "closed", "default")

# region -> [(city, relative size)]; agencies and customers are spread by size.
GEOGRAPHY = {
    "Île-de-France": [("Paris", 10), ("Boulogne-Billancourt", 1.5), ("Versailles", 1.2), ("Saint-Denis", 1.3)],
    "Auvergne-Rhône-Alpes": [("Lyon", 4), ("Grenoble", 1.6), ("Saint-Étienne", 1.3), ("Clermont-Ferrand", 1.2)],
    "Provence-Alpes-Côte d'Azur": [("Marseille", 3.5), ("Nice", 2), ("Toulon", 1.2), ("Aix-en-Provence", 1.2)],
    "Occitanie": [("Toulouse", 3), ("Montpellier", 2.2), ("Nîmes", 1)],
    "Nouvelle-Aquitaine": [("Bordeaux", 2.8), ("Limoges", 1), ("Poitiers", 0.9)],
    "Hauts-de-France": [("Lille", 2.6), ("Amiens", 1), ("Roubaix", 0.9)],
    "Grand Est": [("Strasbourg", 2), ("Reims", 1.2), ("Metz", 1)],
}
N_AGENCIES = 40
BRANCH_NAMES = ("Centre", "Gare", "Nord", "Sud", "Est", "Ouest", "République", "Université", "Port", "Hôtel de Ville")
FIRST_NAMES = ("Marie", "Jean", "Sophie", "Pierre", "Camille", "Nicolas", "Julie", "Thomas", "Claire", "Antoine",
               "Laura", "Julien", "Sarah", "Mehdi", "Inès", "Lucas", "Emma", "Hugo", "Léa", "Karim", "Chloé",
               "Maxime", "Manon", "Yann")
LAST_NAMES = ("Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy", "Moreau",
              "Simon", "Laurent", "Lefebvre", "Michel", "Garcia", "David", "Bertrand", "Roux", "Vincent", "Fournier",
              "Morel", "Girard", "Benali", "Nguyen", "Mercier", "Faure", "Blanc", "Guerin")

# Account slots a customer can hold; slot 0 (current account) is always held.
CUR, SAV, TERM, CARD_S, INVEST, HOME_INS, LIFE_INS, LOAN_S = range(8)
N_SLOTS = 8
# product_id, product_name, category, monthly_fee
PRODUCTS = (
    ("P01", "Everyday Current Account", "deposit", 2.0),
    ("P02", "Premium Current Account", "deposit", 9.5),
    ("P03", "Easy Access Savings", "savings", 0.0),
    ("P04", "Fixed Term Deposit", "savings", 0.0),
    ("P05", "Classic Debit Card", "card", 3.5),
    ("P06", "Gold Credit Card", "card", 11.0),
    ("P07", "Personal Loan", "loan", 0.0),
    ("P08", "Car Loan", "loan", 0.0),
    ("P09", "Mortgage", "loan", 0.0),
    ("P10", "Investment Portfolio", "investment", 4.0),
    ("P11", "Home Insurance", "insurance", 14.0),
    ("P12", "Life Insurance", "insurance", 0.0),
)
FEES = np.array([p[3] for p in PRODUCTS])
SAVINGS_RATE = 0.02  # yearly, credited quarterly

COLUMNS = {  # the contract's columns first, then the extra ones a real export would carry
    "customers": ("customer_id", "birth_date", "age", "gender", "income", "credit_score", "region", "city",
                  "agency_id", "manager_id", "joined_date", "tenure_months", "segment", "occupation",
                  "marital_status", "dependents", "digital_user", "complaints_12m"),
    "agencies": ("agency_id", "agency_name", "region", "city", "opened_date"),
    "managers": ("manager_id", "manager_name", "agency_id", "hired_date"),
    "products": ("product_id", "product_name", "category", "monthly_fee"),
    "accounts": ("account_id", "customer_id", "product_id", "opened_date", "closed_date", "balance",
                 "credit_limit", "status"),
    "transactions": ("transaction_id", "customer_id", "account_id", "transaction_date", "amount", "category",
                     "channel", "balance_after"),
    "loans": ("loan_id", "customer_id", "account_id", "start_date", "amount", "duration_months",
              "monthly_payment", "interest_rate", "status", "defaulted", "product_id", "outstanding"),
    "labels": ("customer_id", "label", "value", "label_date"),
}


# --------------------------------------------------------------------------------------------- helpers
def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _pick(rng, probs):
    """One category per row of a (n, k) probability matrix."""
    cum = np.cumsum(probs, axis=1)
    u = rng.random(len(probs))[:, None] * cum[:, -1:]
    return (cum <= u).sum(axis=1)


def _ymd(days):
    d = np.asarray(days).astype("datetime64[D]")
    y = d.astype("datetime64[Y]")
    m = d.astype("datetime64[M]")
    return y.astype(np.int64) + 1970, (m - y).astype(np.int64) + 1, (d - m).astype(np.int64) + 1


def _age_at(birth, ref):
    by, bm, bd = _ymd(birth)
    ry, rm, rd = _ymd(np.full_like(birth, ref))
    return ry - by - ((rm < bm) | ((rm == bm) & (rd < bd)))


def _weekend_to_friday(days):
    wd = (days + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    return days - np.where(wd == 5, 1, np.where(wd == 6, 2, 0))


def _lognormal_mean1(rng, sigma, size):
    return rng.lognormal(-sigma * sigma / 2, sigma, size)


def _cents(x):
    return np.round(np.asarray(x, dtype=np.float64) * 100).astype(np.int64)


def _ids(prefix, numbers, width):
    """'C0000042'-style keys, built in Arrow (a Python f-string per row is far too slow at 50M rows)."""
    s = pc.utf8_lpad(pc.cast(pa.array(np.asarray(numbers, dtype=np.int64)), pa.string()), width, padding="0")
    return pc.binary_join_element_wise(prefix, s, "")


def _dates(days, mask=None):
    return pa.array(np.asarray(days, dtype=np.int32), mask=mask).cast(pa.date32())


def _money(cents, mask=None):
    return pa.array(np.asarray(cents, dtype=np.int64) / 100.0, mask=mask)


def _labels(names, codes):
    return pa.array(list(names), pa.string()).take(pa.array(np.asarray(codes, dtype=np.int64)))


def _grouped_cummax(keys, values):
    """Running maximum of values restarting where keys change (keys arrive grouped, ascending)."""
    if len(values) == 0:
        return values
    lo = values.min()
    span = values.max() - lo + 1
    lifted = (keys - keys[0]) * span + (values - lo)  # each group sits above all earlier ones
    return np.maximum.accumulate(lifted) - (keys - keys[0]) * span + lo


def _grouped_cumsum(keys, values):
    """Running sum of values restarting where keys change (keys arrive grouped)."""
    cs = np.cumsum(values)
    start = np.ones(len(keys), dtype=bool)
    start[1:] = keys[1:] != keys[:-1]
    base = (cs - values)[start]
    return cs - base[np.cumsum(start) - 1]


class _Calendar:
    def __init__(self, end_date: str):
        end = np.datetime64(end_date, "D")
        self.end = int(end.astype(np.int64))
        self.snap = self.end - HORIZON_DAYS
        months = end.astype("datetime64[M]") - np.arange(HISTORY_MONTHS - 1, -1, -1)
        self.ms = months.astype("datetime64[D]").astype(np.int64)  # first day of each history month
        self.me = (months + 1).astype("datetime64[D]").astype(np.int64)  # first day of the next month
        self.ml = self.me - self.ms
        self.cal_month = months.astype(np.int64) % 12 + 1
        self.start = int(self.ms[0])
        self.created = dt.datetime.fromisoformat(end_date) + dt.timedelta(days=1)  # xlsx metadata, no clock


# ------------------------------------------------------------------------------------ reference tables
class _Reference:
    """Agencies, managers and products: small, the same for every seed (a seed draws customers)."""

    def __init__(self, rng, cal: _Calendar):
        cities, city_region, size = [], [], []
        for region, entries in GEOGRAPHY.items():
            for city, weight in entries:
                cities.append(city)
                city_region.append(region)
                size.append(weight)
        self.cities, self.regions = cities, list(GEOGRAPHY)
        self.city_region = np.array([self.regions.index(r) for r in city_region])
        size = np.array(size, dtype=float)
        # one agency per city, the rest by size (largest remainder), so Paris gets several
        share = size / size.sum() * (N_AGENCIES - len(cities))
        per_city = 1 + np.floor(share).astype(int)
        per_city[np.argsort(-(share - np.floor(share)), kind="stable")[: N_AGENCIES - per_city.sum()]] += 1
        self.agency_city = np.repeat(np.arange(len(cities)), per_city)
        names = [f"{cities[c]} {BRANCH_NAMES[k] if n > 1 else 'Centre'}"
                 for c, n in enumerate(per_city) for k in range(n)]
        n_ag = len(self.agency_city)
        self.agency_weight = size[self.agency_city] / per_city[self.agency_city] * rng.lognormal(0, 0.3, n_ag)
        self.agency_weight /= self.agency_weight.sum()
        self.region_first = np.searchsorted(self.city_region, np.arange(len(self.regions)))
        self.region_count = np.bincount(self.city_region, minlength=len(self.regions))

        n_mgr = rng.integers(6, 11, n_ag)  # ~8 managers per agency
        self.mgr_first = np.concatenate([[0], np.cumsum(n_mgr)[:-1]])
        self.mgr_count = n_mgr
        m = int(n_mgr.sum())
        first, last = rng.integers(0, len(FIRST_NAMES), m), rng.integers(0, len(LAST_NAMES), m)
        ag_opened = cal.end - rng.integers(5 * 365, 60 * 365, n_ag)
        hired = cal.end - rng.integers(60, 30 * 365, m)

        ag_ids = _ids("AG", np.arange(1, n_ag + 1), 3)
        self.agency_ids, self.manager_ids = ag_ids, _ids("M", np.arange(1, m + 1), 4)
        self.tables = {
            "agencies": pa.table({
                "agency_id": ag_ids, "agency_name": pa.array(names),
                "region": _labels(self.regions, self.city_region[self.agency_city]),
                "city": _labels(cities, self.agency_city), "opened_date": _dates(ag_opened)}),
            "managers": pa.table({
                "manager_id": self.manager_ids,
                "manager_name": pa.array([f"{FIRST_NAMES[a]} {LAST_NAMES[b]}" for a, b in zip(first, last, strict=True)]),
                "agency_id": ag_ids.take(pa.array(np.repeat(np.arange(n_ag), n_mgr))), "hired_date": _dates(hired)}),
            "products": pa.table({
                "product_id": [p[0] for p in PRODUCTS], "product_name": [p[1] for p in PRODUCTS],
                "category": [p[2] for p in PRODUCTS], "monthly_fee": FEES}),
        }
        self.product_ids = pa.array([p[0] for p in PRODUCTS])
        # How well each manager (and agency) looks after a book: drawn from its own generator, so the network above
        # is the same; it moves the customers' engagement and loyalty only with a manager effect (generate_bank).
        quality = np.random.default_rng([0, 2 << 40])
        agency_q = quality.standard_normal(n_ag)
        self.manager_quality = 0.6 * agency_q[np.repeat(np.arange(n_ag), n_mgr)] + 0.8 * quality.standard_normal(m)
        self.manager_effect = 0.0


# ------------------------------------------------------------------------------------------- one chunk
class _Chunk:
    """The arrays of one chunk of customers (one entry per customer unless said otherwise)."""

    def __init__(self, rng, first: int, n: int, cal: _Calendar, ref: _Reference):
        self.rng, self.n, self.cal, self.ref = rng, n, cal, ref
        self.num = np.arange(first + 1, first + n + 1)
        self.cust_ids = _ids("C", self.num, 7)
        self.drift = 0.0


def _people(b: _Chunk) -> None:
    """Who they are: demographics, occupation, income, score, relationship."""
    rng, n, end, ref, d = b.rng, b.n, b.cal.end, b.ref, b.drift
    # drift d (generate --drift): a shifted population from the same random draws: younger, richer, newer,
    # more digital and more active customers. d = 0 is the bank as always, byte for byte.
    age0 = 18 + (72 * rng.beta(2.0, 3.0, n) * (1 - 0.4 * d)).astype(np.int64)
    b.birth = end - (age0 * 365.2425).astype(np.int64) - rng.integers(1, 365, n)
    b.age = age = _age_at(b.birth, end)
    p_occ = np.tile([0.52, 0.16, 0.15, 0.10, 0.07, 0.0, 0.0], (n, 1))
    p_occ[age < 25] = [0.38, 0.02, 0.03, 0.02, 0.10, 0.45, 0.0]
    retired = np.clip((age - 60) / 7, 0, 1)  # retirement phases in between 60 and 67
    p_occ *= (1 - retired)[:, None]
    p_occ[:, 6] += retired
    b.occ = occ = _pick(rng, p_occ)
    b.working = occ <= 3
    med = np.array([29e3, 58e3, 33e3, 38e3, 13e3, 9e3, 24e3])[occ]
    sig = np.array([0.35, 0.45, 0.28, 0.75, 0.4, 0.5, 0.45])[occ]
    career = np.where(b.working, 1 + 0.015 * (np.clip(age, 22, 55) - 35), 1.0)
    b.income = np.maximum(np.round(med * career * rng.lognormal(0, sig) * (1 + d) / 100) * 100, 1200.0)
    b.z_inc = z_inc = (np.log(b.income) - np.log(27_000)) / 0.55
    b.segment = np.where(b.income >= 120e3, 2, np.where(b.income >= 55e3, 1, 0))
    score = 650 + 45 * z_inc + (age - 45) - 45 * (occ == 4) - 20 * (occ == 5) + 55 * rng.standard_normal(n)
    b.score = np.clip(np.round(score), 300, 850)
    b.z_cs = (b.score - 660) / 75
    b.female = rng.random(n) < 0.515
    p_mar = np.tile([0.30, 0.55, 0.13, 0.02], (n, 1))
    p_mar[age < 30] = [0.75, 0.23, 0.02, 0.0]
    p_mar[age > 60] = [0.15, 0.55, 0.12, 0.18]
    b.marital = _pick(rng, p_mar)
    family_age = (age >= 28) & (age <= 58)
    b.dependents = np.minimum(rng.poisson(np.where(family_age, np.where(b.marital == 1, 1.3, 0.3), 0.05)), 5)
    b.digital = rng.random(n) < _sigmoid(2.4 + 3 * d - 0.07 * (age - 30) + 0.3 * z_inc)
    max_tenure = np.minimum(20 * 365.25, np.maximum(age - 16, 0) * 365.25)
    b.joined = end - (max_tenure * rng.beta(0.9, 1.4, n) * (1 - 0.5 * d)).astype(np.int64)
    b.tenure_y = (end - b.joined) / 365.25
    b.tenure_months = ((end - b.joined) / 30.4375).astype(np.int64)
    b.agency = rng.choice(len(ref.agency_city), n, p=ref.agency_weight)
    b.manager = ref.mgr_first[b.agency] + (rng.random(n) * ref.mgr_count[b.agency]).astype(np.int64)
    home = ref.agency_city[b.agency]
    region = ref.city_region[home]
    nearby = ref.region_first[region] + (rng.random(n) * ref.region_count[region]).astype(np.int64)
    b.city = np.where(rng.random(n) < 0.85, home, nearby)  # most bank where they live
    b.salary_paid_in = rng.random(n) < np.array([0.85, 0.82, 0.9, 0.35, 0.5, 0.3, 0.85])[occ]
    b.engagement = (rng.lognormal(0, 0.45, n) * np.where(b.digital, 1.15, 1.0) * np.where(age > 70, 0.8, 1.0)
                    * (1 + d))
    b.s_net = b.income * 0.78 / 12  # monthly net pay
    if ref.manager_effect:  # a good manager's clients use their products more
        b.engagement = b.engagement * np.exp(0.4 * ref.manager_effect * ref.manager_quality[b.manager])


def _holdings(b: _Chunk) -> None:
    """Which products they hold (fewer early in the relationship) and the terms of their loan."""
    rng, n, snap, age, z_inc = b.rng, b.n, b.cal.snap, b.age, b.z_inc
    settled = 0.4 + 0.6 * (1 - np.exp(-b.tenure_y / 3))
    zage = age - 45
    p_hold = np.stack([
        np.ones(n),
        _sigmoid(0.2 + 0.5 * z_inc + 0.01 * zage),
        _sigmoid(-2.8 + 0.8 * z_inc + 0.02 * zage),
        _sigmoid(-0.2 + 0.6 * z_inc - 0.01 * np.abs(age - 40)),
        _sigmoid(-3.0 + 1.3 * z_inc + 0.02 * zage),
        _sigmoid(-1.0 + 0.3 * z_inc + 0.03 * (age - 30)),
        _sigmoid(-2.2 + 0.5 * z_inc + 0.03 * zage),
        _sigmoid(-0.9 + 0.35 * z_inc - 0.002 * (age - 40) ** 2) * (b.occ != 5),
    ], axis=1)
    p_hold[:, 1:] *= settled[:, None]
    b.p_hold = p_hold  # also drives the products taken up after the snapshot (_acquisitions)
    b.held = rng.random((n, N_SLOTS)) < p_hold
    b.held[:, LOAN_S] &= b.joined < snap - 60  # loans start before the snapshot
    b.n_secondary = b.held[:, 1:].sum(axis=1)

    premium = (b.segment > 0) | (rng.random(n) < 0.1)
    b.slot_product = sp = np.zeros((n, N_SLOTS), dtype=np.int64)  # index into PRODUCTS
    sp[:, CUR], sp[:, SAV], sp[:, TERM] = np.where(premium, 1, 0), 2, 3
    sp[:, CARD_S], sp[:, INVEST], sp[:, HOME_INS], sp[:, LIFE_INS] = np.where(premium, 5, 4), 9, 10, 11
    # loan type by life stage (personal, car, mortgage); sized by income, priced by score
    owner_age = (age >= 25) & (age <= 60) & (z_inc > -0.7)
    ltype = _pick(rng, np.where(owner_age[:, None], [0.3, 0.2, 0.5], [0.55, 0.37, 0.08]))
    sp[:, LOAN_S] = 6 + ltype
    b.duration = np.choose(ltype, [rng.choice([24, 36, 48, 60, 84], n), rng.choice([36, 48, 60, 72], n),
                                   rng.choice([180, 240, 300], n)])
    principal = np.choose(ltype, [np.clip(b.income * rng.uniform(0.05, 0.4, n), 1500, 50_000),
                                  rng.uniform(8_000, 40_000, n), b.income * rng.uniform(2.5, 5.5, n)])
    b.principal = np.round(principal / 100) * 100
    rate = np.choose(ltype, [rng.uniform(4.5, 8.5, n), rng.uniform(3.5, 6.5, n), rng.uniform(2.2, 4.0, n)])
    b.rate = np.round(np.clip(rate + 0.006 * (700 - b.score), 0.5, 19.9), 2)
    b.r = r = b.rate / 1200
    b.payment = np.round(b.principal * r / (1 - (1 + r) ** -b.duration), 2)
    lo = np.maximum(b.joined + 30, snap - (b.duration * 30.4375).astype(np.int64) + 60)
    b.loan_start = lo + (rng.random(n) * np.maximum(snap - 30 - lo, 0)).astype(np.int64)
    b.dti = 12 * b.payment / b.income


def _fates(b: _Chunk) -> None:
    """Latent intent to leave and financial stress, what they do before the snapshot, and the outcomes."""
    rng, n, snap, end = b.rng, b.n, b.cal.snap, b.cal.end
    static = (0.9 * (b.tenure_y < 2) + 0.45 * ((b.tenure_y >= 2) & (b.tenure_y < 5)) - 0.3 * (b.n_secondary - 2)
              + 0.55 * ~b.digital + 0.6 * ~b.salary_paid_in + 0.25 * (b.age < 30) - 0.4 * (b.segment > 0))
    intent = static + rng.standard_normal(n)
    if b.ref.manager_effect:  # ... and leave less
        intent = intent - 0.5 * b.ref.manager_effect * b.ref.manager_quality[b.manager]
    b.complaints = np.minimum(rng.poisson(0.12 * np.exp(0.55 * np.clip(intent, -3, 4))), 9)
    # only customers who were there a month before the snapshot can churn
    b.churn = (rng.random(n) < _sigmoid(-5.2 + 2.8 * intent)) & (b.joined < snap - 30)
    b.churn_day = np.where(b.churn, snap + rng.integers(1, HORIZON_DAYS + 1, n), end + 1)
    # disengagement starting 40-160 days before the snapshot and deepening afterwards
    b.depth = np.clip(0.6 * (intent - 0.6) + 0.25 * rng.standard_normal(n), 0, 0.95)
    b.fading = b.depth > 0
    b.fade_start = snap - rng.integers(40, 161, n)
    moves_salary = b.fading & (rng.random(n) < np.clip(1.2 * b.depth, 0, 0.9))
    after_fade = b.fade_start + (rng.random(n) * (snap + 60 - b.fade_start)).astype(np.int64)
    b.salary_stop = np.where(moves_salary, after_fade, end + 1)

    # financial stress, partly what the score already says, shows in the 6 months before the snapshot
    b.stress = 0.35 * -b.z_cs + 0.95 * rng.standard_normal(n)
    b.stress_start = snap - 180
    b.job_loss = b.working & b.salary_paid_in & (b.stress > 1.2) & (rng.random(n) < 0.35)
    lost = rng.integers(b.stress_start, snap - 20, n)
    b.salary_stop = np.where(b.job_loss, np.minimum(b.salary_stop, lost), b.salary_stop)
    # fading or stressed customers stop topping their account up, so their balance runs down
    b.no_topup_from = np.where(b.fading, b.fade_start, end + 1)
    b.no_topup_from = np.where(b.stress > 0.8, np.minimum(b.no_topup_from, b.stress_start), b.no_topup_from)

    risk = (-2.3 - 0.35 * b.z_cs - 0.35 * b.z_inc + 3.0 * (np.minimum(b.dti, 1.5) - 0.3) + 1.1 * b.stress
            + 1.2 * b.job_loss)
    b.default = b.held[:, LOAN_S] & ~b.churn & (rng.random(n) < _sigmoid(risk))
    b.default_day = np.where(b.default, snap + rng.integers(1, HORIZON_DAYS + 1, n), end + 1)


def _lifecycle(b: _Chunk) -> None:
    """Open and close dates of every holding, account rows and opening balances."""
    rng, n, snap, end = b.rng, b.n, b.cal.snap, b.cal.end
    span = np.maximum(snap - b.joined, 1)
    opened = b.joined[:, None] + (rng.random((n, N_SLOTS)) ** 1.5 * span[:, None]).astype(np.int64)
    opened[rng.random((n, N_SLOTS)) < 0.4] = 0  # many products come with the first visit
    opened = np.maximum(opened, b.joined[:, None])
    opened[b.joined >= snap] = b.joined[b.joined >= snap, None]
    opened[:, CUR] = b.joined
    opened[:, LOAN_S] = b.loan_start
    closed = np.full((n, N_SLOTS), end + 1)
    # fading customers shut secondary products before the snapshot; others close one now and then
    shut = (rng.random((n, N_SLOTS)) < 0.3 * b.depth[:, None]) & b.fading[:, None]
    fade_len = (snap - b.fade_start)[:, None]
    shut_day = b.fade_start[:, None] + (rng.random((n, N_SLOTS)) * fade_len).astype(np.int64)
    other = rng.random((n, N_SLOTS)) < 0.03
    other_day = opened + (rng.random((n, N_SLOTS)) * (end - opened)).astype(np.int64) + 1
    closed = np.where(other, other_day, closed)
    closed = np.where(shut, np.minimum(closed, shut_day), closed)
    closed[:, [CUR, LOAN_S]] = end + 1
    closed = np.where(closed <= opened, end + 1, closed)
    b.closed = np.minimum(closed, b.churn_day[:, None])  # leavers close everything on the day they go
    b.opened = opened
    b.held &= opened < b.churn_day[:, None]
    b.held[:, CUR] = True

    # account rows in customer order, numbered 01, 02, ... within each customer
    b.a_cust, b.a_slot = np.nonzero(b.held)
    b.a_rank = np.cumsum(b.held, axis=1)[b.a_cust, b.a_slot]
    b.n_acc = len(b.a_cust)
    row_of = np.full((n, N_SLOTS), -1)
    row_of[b.a_cust, b.a_slot] = np.arange(b.n_acc)
    b.row_of, b.cur_row, b.sav_row = row_of, row_of[:, CUR], row_of[:, SAV]
    b.account_ids = _ids("A", b.num[b.a_cust] * 100 + b.a_rank, 9)

    # the current account hovers around a personal buffer; new customers start from zero
    b.buffer = _cents(b.s_net * rng.lognormal(0, 0.5, n))
    b.cur_open = np.where(b.joined >= b.cal.start, 0, (b.buffer * rng.lognormal(0, 0.3, n)).astype(np.int64))
    # savings: a balance at the start of the history, or a first deposit when opened during it
    b.sav_open = _cents(b.income * rng.lognormal(np.log(0.25), 1.0, n))
    b.sav_open[~b.held[:, SAV] | (b.closed[:, SAV] < b.cal.start)] = 0
    b.sav_deposit = b.held[:, SAV] & (b.opened[:, SAV] >= b.cal.start)


class _Flows:
    """Collects transactions as parallel arrays: customer, account row, day, second, cents, category, ..."""

    FIELDS = ("cust", "acct", "day", "tod", "cents", "cat", "chan", "fade")

    def __init__(self):
        self.parts = []

    def add(self, cust, acct, day, tod, cents, cat, chan, fade=0.0):
        """fade: how strongly a fading customer's waning activity thins this kind (0 = not at all)."""
        k = len(cust)
        self.parts.append((cust, acct, day, tod, cents, np.broadcast_to(np.int8(cat), k),
                           np.broadcast_to(np.asarray(chan, dtype=np.int8), k), np.full(k, fade)))

    def arrays(self) -> dict[str, np.ndarray]:
        cols = [np.concatenate(x) if x else np.zeros(0, np.int64) for x in zip(*self.parts, strict=True)]
        return dict(zip(self.FIELDS, cols, strict=True))


def _activity(b: _Chunk, cust, day):
    """Share of their usual activity a customer still has on a day: falls linearly once fading starts."""
    elapsed = np.clip((day - b.fade_start[cust]) / np.maximum(b.cal.snap - b.fade_start[cust], 1), 0, None)
    return np.clip(1 - b.depth[cust] * elapsed, 0.03, 1)


def _transactions(b: _Chunk) -> dict[str, np.ndarray]:
    rng, n, cal = b.rng, b.n, b.cal
    end, snap, months = cal.end, cal.snap, HISTORY_MONTHS
    cur, s_net, f = b.cur_row, b.s_net, _Flows()

    def night(k):  # batch postings
        return rng.integers(3600, 6 * 3600, k)

    def hours(k, start, stop):
        return rng.integers(start * 3600, stop * 3600, k)

    def random_day(m):
        return cal.ms[m] + (rng.random(len(m)) * cal.ml[m]).astype(np.int64)

    def poisson_events(rate):  # (n, months) rates -> customer, month, day of each event
        counts = rng.poisson(rate)
        flat = np.repeat(np.arange(counts.size), counts.ravel())
        c, m = flat // months, flat % months
        return c, m, random_day(m)

    def user_channel(c):
        u = rng.random(len(c))
        return np.where(b.digital[c], np.where(u < 0.65, MOBILE, ONLINE), np.where(u < 0.9, BRANCH, ONLINE))

    def every_month(mask):
        return np.nonzero(np.broadcast_to(mask[:, None], (n, months)))

    # salary or pension on a fixed pay day moved off weekends; a 13th month in December for some
    c, m = every_month(b.salary_paid_in)
    day = _weekend_to_friday(cal.ms[m] + rng.integers(25, 29, n)[c] - 1)
    keep = day < b.salary_stop[c]
    c, m, day = c[keep], m[keep], day[keep]
    k = len(c)
    pay = s_net[c] * np.where(b.occ[c] == 3, _lognormal_mean1(rng, 0.35, k), 1 + 0.02 * rng.standard_normal(k))
    bonus = (cal.cal_month[m] == 12) & (b.occ[c] <= 2) & (b.num[c] % 3 == 0)
    f.add(c, cur[c], day, night(k), _cents(pay * np.where(bonus, 2, 1)), SAL, SYSTEM)
    # no salary paid in: the money arrives by transfer from elsewhere
    c, m = every_month(~b.salary_paid_in)
    day = random_day(m)
    c, day = c[day < b.salary_stop[c]], day[day < b.salary_stop[c]]
    f.add(c, cur[c], day, night(len(c)), _cents(s_net[c] * _lognormal_mean1(rng, 0.25, len(c))), TRF, SYSTEM)

    # recurring bills (rent, energy, phone) by direct debit on fixed days
    n_bills = _pick(rng, np.tile([0.25, 0.4, 0.25, 0.1], (n, 1)))
    has_bill = np.arange(3) < n_bills[:, None]
    bill_day = rng.integers(1, 29, (n, 3))
    share = rng.gamma(2.0, size=(n, 3)) * has_bill
    share /= np.maximum(share.sum(axis=1, keepdims=True), 1e-9)
    c, k, m = np.nonzero(np.broadcast_to(has_bill[:, :, None], (n, 3, months)))
    bills = 0.45 * np.maximum(s_net - np.where(b.held[:, LOAN_S], b.payment, 0), 0.3 * s_net)
    amt = np.maximum(bills[c] * share[c, k] * _lognormal_mean1(rng, 0.08, len(c)), 10)
    f.add(c, cur[c], cal.ms[m] + bill_day[c, k] - 1, night(len(c)), -_cents(amt), BILL, SYSTEM, 0.8)

    def overspend(c, day):  # stressed customers spend beyond their means in the last 6 months
        return 1 + 1.5 * np.maximum(b.stress[c] - 0.3, 0) * (day >= b.stress_start)

    scale = np.sqrt(s_net / 1800)  # spending per purchase grows slowly with pay
    season = np.select([cal.cal_month == 12, cal.cal_month == 1, np.isin(cal.cal_month, [7, 8])],
                       [1.3, 0.85, 1.1], 1.0)
    # card payments in shops (pos) or online
    c, m, day = poisson_events(0.9 * b.engagement[:, None] * season[None, :])
    k = len(c)
    online = rng.random(k) < np.where(b.digital[c], 0.25, 0.05)
    tod = np.where(online, hours(k, 7, 24), hours(k, 8, 21))
    amt = np.maximum(55 * scale[c] * _lognormal_mean1(rng, 0.9, k) * overspend(c, day), 1)
    f.add(c, cur[c], day, tod, -_cents(amt), CARD, np.where(online, ONLINE, POS), 1.0)
    # cash withdrawals, more for non-digital customers, some at the counter
    rate = 0.25 * np.where(b.digital, 1.0, 1.8) * np.sqrt(b.engagement)
    c, m, day = poisson_events(np.broadcast_to(rate[:, None], (n, months)))
    k = len(c)
    at_branch = rng.random(k) < np.where(b.digital[c], 0.03, 0.2)
    tod = np.where(at_branch, hours(k, 9, 17), hours(k, 7, 23))
    amt = np.maximum(np.round(80 * scale[c] * _lognormal_mean1(rng, 0.5, k) * overspend(c, day) / 10) * 10, 20)
    f.add(c, cur[c], day, tod, -_cents(amt), CASH, np.where(at_branch, BRANCH, ATM), 1.0)

    # quarterly package fee for the products open at the quarter's end
    q_end = np.flatnonzero(cal.cal_month % 3 == 0)
    q_day = cal.me[q_end] - 1
    is_open = b.held[:, :, None] & (b.opened[:, :, None] <= q_day) & (b.closed[:, :, None] > q_day)
    fee = 3 * (FEES[b.slot_product][:, :, None] * is_open).sum(axis=1)
    c, q = np.nonzero(fee > 0)
    f.add(c, cur[c], q_day[q], night(len(c)), -_cents(fee[c, q]), FEE, SYSTEM)
    # incident fees (overdraft, rejected payments) under financial stress
    c, m, day = poisson_events(0.35 * np.maximum(b.stress - 0.8, 0)[:, None] * (cal.me > b.stress_start))
    c, day = c[day >= b.stress_start], day[day >= b.stress_start]
    f.add(c, cur[c], day, night(len(c)), -_cents(rng.uniform(8, 25, len(c))), FEE, SYSTEM)
    # savings interest, quarterly, while the savings account is open
    c, q = np.nonzero(is_open[:, SAV])
    interest = np.maximum(_cents(b.sav_open[c] / 100 * SAVINGS_RATE / 4), 1)
    f.add(c, b.sav_row[c], q_day[q], night(len(c)), interest, INT, SYSTEM)
    # loan instalments until maturity or default
    c, m = every_month(b.held[:, LOAN_S])
    day = cal.ms[m] + np.minimum(_ymd(b.loan_start)[2], 28)[c] - 1
    maturity = b.loan_start + b.duration * 30.4375
    keep = (day > b.loan_start[c]) & (day < maturity[c]) & (day < b.default_day[c])
    c, day = c[keep], day[keep]
    f.add(c, cur[c], day, night(len(c)), -_cents(b.payment[c]), LOAN, SYSTEM)
    # fading customers move money out before they go
    c = np.flatnonzero(b.fading & (rng.random(n) < np.clip(b.depth, 0, 0.8)))
    day = b.fade_start[c] + (rng.random(len(c)) * (snap - b.fade_start[c])).astype(np.int64)
    amt = rng.uniform(0.6, 0.9, len(c)) * (b.cur_open[c] + b.buffer[c])
    f.add(c, cur[c], day, hours(len(c), 8, 22), -np.round(amt).astype(np.int64), TRF, user_channel(c))
    c = np.flatnonzero(b.fading & b.held[:, SAV] & (rng.random(n) < 0.8 * b.depth))
    day = b.fade_start[c] + (rng.random(len(c)) * (snap - b.fade_start[c])).astype(np.int64)
    keep = (day >= b.opened[c, SAV]) & (day < b.closed[c, SAV])
    c, day = c[keep], day[keep]
    amt = np.round(rng.uniform(0.4, 1.0, len(c)) * b.sav_open[c]).astype(np.int64)
    f.add(c, b.sav_row[c], day, hours(len(c), 8, 22), -amt, TRF, user_channel(c))

    c = np.flatnonzero(b.sav_deposit)
    f.add(c, b.sav_row[c], b.opened[c, SAV], hours(len(c), 9, 17), b.sav_open[c], TRF, SYSTEM)

    # thin the waning activity of fading customers; nothing before joining or after leaving
    t = f.arrays()
    c, day = t["cust"], t["day"]
    keep = rng.random(len(c)) < _activity(b, c, day) ** t["fade"]
    keep &= (day >= b.joined[c]) & (day <= end) & (day < b.churn_day[c])
    t = {k: v[keep] for k, v in t.items() if k != "fade"}

    # transfers that keep the current account near the customer's buffer: the surplus goes out to
    # another bank or a shortfall comes in, once in a while. The (monthly) target is reached exactly:
    # cumulative transfers after an event = balance without transfers - buffer. Customers who stopped
    # topping up only ever send money out, so their cumulative transfers are a running maximum.
    c, day = t["cust"], t["day"]
    month = np.searchsorted(cal.me, day, side="right")
    on_cur = t["acct"] == cur[c]
    net = np.bincount(c[on_cur] * months + month[on_cur], weights=t["cents"][on_cur], minlength=n * months)
    level = b.cur_open[:, None] + np.cumsum(net.reshape(n, months), axis=1)
    hit = rng.random((n, months)) < 1 - np.exp(-0.3 * np.sqrt(b.engagement))[:, None]
    c, m = np.nonzero(hit)
    day = random_day(m)
    keep = (rng.random(len(c)) < _activity(b, c, day)) & (day >= b.joined[c]) & (day <= end)
    keep &= day < b.churn_day[c]
    c, m, day = c[keep], m[keep], day[keep]
    want = level[c, m] - b.buffer[c]
    post = day >= b.no_topup_from[c]
    first = np.ones(len(c), dtype=bool)
    first[1:] = c[1:] != c[:-1]
    last_pre = ~post & np.r_[first[1:] | post[1:], True]
    base = np.zeros(n)
    base[c[last_pre]] = want[last_pre]
    total = want.copy()
    total[post] = np.maximum(base[c[post]], _grouped_cummax(c[post], want[post]))
    prev = np.r_[0.0, total[:-1]]
    prev[first] = 0.0
    move = np.round(total - prev).astype(np.int64)
    c, day, move = c[move != 0], day[move != 0], move[move != 0]
    chan = np.where(move > 0, user_channel(c), SYSTEM)
    tod = np.where(chan == BRANCH, hours(len(c), 9, 17), hours(len(c), 7, 24))
    extra = {"cust": c, "acct": cur[c], "day": day, "tod": tod, "cents": -move, "cat": np.full(len(c), TRF),
             "chan": chan}
    t = {k: np.concatenate([v, extra[k].astype(v.dtype)]) for k, v in t.items()}

    if b.fraud_rate:
        t["fraud"] = np.zeros(len(t["cust"]), dtype=np.int8)
        t["party"] = np.zeros(len(t["cust"]), dtype=np.int64)  # genuine: a usual party (_parties)
        extra = _fraud(b)
        t = {k: np.concatenate([v, extra[k].astype(v.dtype)]) for k, v in t.items()}

    # closed accounts are emptied on the day they close (leavers: the day they go), so they end at 0
    opening = np.zeros(b.n_acc, dtype=np.int64)
    opening[cur] = b.cur_open
    has_sav = b.held[:, SAV]
    opening[b.sav_row[has_sav]] = np.where(b.sav_deposit, 0, b.sav_open)[has_sav]
    balance = opening + np.bincount(t["acct"], weights=t["cents"], minlength=b.n_acc).round().astype(np.int64)
    for slot in (CUR, SAV):
        shut = b.held[:, slot] & (b.closed[:, slot] <= end) & (b.closed[:, slot] >= cal.start)
        c = np.flatnonzero(shut)
        rows = b.row_of[c, slot]
        c, rows = c[balance[rows] != 0], rows[balance[rows] != 0]
        extra = {"cust": c, "acct": rows, "day": b.closed[c, slot], "tod": hours(len(c), 9, 17) + 60 * slot,
                 "cents": -balance[rows], "cat": np.full(len(c), TRF), "chan": user_channel(c)}
        if "fraud" in t:
            extra["fraud"], extra["party"] = np.zeros(len(c), dtype=np.int8), np.zeros(len(c), dtype=np.int64)
        t = {k: np.concatenate([v, extra[k].astype(v.dtype)]) for k, v in t.items()}
        balance[rows] = 0
    b.balance = balance

    order = np.lexsort((t["tod"], t["day"], t["cust"]))
    t = {k: v[order] for k, v in t.items()}
    # running balance per account: one current and at most one savings account per customer move money
    after = np.empty(len(order), dtype=np.int64)
    is_cur = t["acct"] == cur[t["cust"]]
    for mask in (is_cur, ~is_cur):
        idx = np.flatnonzero(mask)
        after[idx] = opening[t["acct"][idx]] + _grouped_cumsum(t["acct"][idx], t["cents"][idx])
    t["after"] = after
    return t


MULE = 10**8  # fraud parties are numbered from here: never a customer's usual one


def _fraud(b: _Chunk) -> dict[str, np.ndarray]:
    """Fraud on the current accounts of a share (b.fraud_rate) of customers, once each, in one of three patterns,
    drawn from b.fraud_rng (its own generator: every value drawn without fraud is the same with it):
      card testing  6-14 online card debits of 0.50-3.00 within 20 minutes (a stolen card number being tried);
      takeover      a customer who banks at the branch suddenly on mobile: a 1.00-5.00 test transfer, then 1-2
                    transfers of 30-80% of a month's pay within the hour;
      night         a card purchase of 40-120% of a month's pay between 01:00 and 04:00.
    fraud is 1 on these rows."""
    rng, cal, n, cur = b.fraud_rng, b.cal, b.n, b.cur_row
    hit = np.flatnonzero((rng.random(n) < b.fraud_rate) & b.held[:, CUR])
    lo = np.maximum(np.maximum(b.joined[hit], b.opened[hit, CUR]) + 30, cal.start)
    hi = np.minimum(b.closed[hit, CUR], cal.end + 1)
    hit, lo, hi = hit[hi > lo], lo[hi > lo], hi[hi > lo]
    day = lo + (rng.random(len(hit)) * (hi - lo)).astype(np.int64)
    pattern = np.where(b.digital[hit], rng.choice([0, 2], len(hit)), rng.integers(0, 3, len(hit)))
    rows = []

    def add(c, d, tod, cents, cat, chan):
        rows.append({"cust": c, "acct": cur[c], "day": d, "tod": tod, "cents": cents,
                     "cat": np.full(len(c), cat), "chan": np.full(len(c), chan), "fraud": np.ones(len(c))})

    v = pattern == 0
    k = rng.integers(6, 15, v.sum())
    c, d = np.repeat(hit[v], k), np.repeat(day[v], k)
    add(c, d, np.repeat(rng.integers(0, DAY - 1200, v.sum()), k) + rng.integers(0, 1200, len(c)),
        -rng.integers(50, 301, len(c)), CARD, ONLINE)
    v = pattern == 1
    c, d, start = hit[v], day[v], rng.integers(8 * 3600, 20 * 3600, v.sum())
    add(c, d, start, -rng.integers(100, 501, len(c)), TRF, MOBILE)
    k = rng.integers(1, 3, len(c))
    c2 = np.repeat(c, k)
    add(c2, np.repeat(d, k), np.repeat(start, k) + rng.integers(60, 3600, len(c2)),
        -_cents(b.s_net[c2] * rng.uniform(0.3, 0.8, len(c2))), TRF, MOBILE)
    v = pattern == 2
    c = hit[v]
    add(c, day[v], rng.integers(3600, 4 * 3600, len(c)), -_cents(b.s_net[c] * rng.uniform(0.4, 1.2, len(c))), CARD,
        POS)
    out = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    # each incident pays a party the customer never dealt with (drawn last: the draws above stay as they were)
    out["party"] = np.repeat(MULE + rng.integers(0, MULE, len(rows)), [len(r["cust"]) for r in rows])
    return out


def _parties(b: _Chunk, t: dict[str, np.ndarray]) -> np.ndarray:
    """Counterparty numbers: a customer's genuine movements go to one of its 3 usual parties (which one follows
    the day and hour, no random draw); a fraud incident's to its own new party (_fraud)."""
    usual = b.num[t["cust"]] * 4 + (t["day"] * 7 + t["tod"] // 3600) % 3
    return np.where(t["fraud"] == 1, t["party"], usual)


def _tables(b: _Chunk, t: dict[str, np.ndarray], tx_offset: int) -> dict[str, pa.Table]:
    rng, n, cal, ref = b.rng, b.n, b.cal, b.ref
    end = cal.end
    a_cust, a_slot, n_acc, ids = b.a_cust, b.a_slot, b.n_acc, b.cust_ids
    n_tx = len(t["cust"])
    transactions = pa.table({
        "transaction_id": _ids("T", np.arange(tx_offset + 1, tx_offset + n_tx + 1), 10),
        "customer_id": ids.take(pa.array(t["cust"])),
        "account_id": b.account_ids.take(pa.array(t["acct"])),
        "transaction_date": pa.array(t["day"] * DAY + t["tod"], pa.timestamp("s")),
        "amount": _money(t["cents"]),
        "category": _labels(TX_CATEGORIES, t["cat"]),
        "channel": _labels(CHANNELS, t["chan"]),
        "balance_after": _money(t["after"]),
        **({"counterparty": _ids("P", _parties(b, t), 9), "fraud": pa.array(t["fraud"], pa.int8())}
           if "fraud" in t else {}),
    })

    # accounts as of end_date; dormant = no customer-initiated movement in the last 6 months
    user = t["chan"] != SYSTEM
    last_user = np.full(n, -1)
    np.maximum.at(last_user, t["cust"][user], t["day"][user])
    closed = b.closed[a_cust, a_slot]
    opened = b.opened[a_cust, a_slot]
    income = b.income[a_cust]
    is_slot = {s: a_slot == s for s in range(N_SLOTS)}
    bal = b.balance / 100
    bal = np.where(is_slot[TERM], np.round(income * rng.lognormal(np.log(0.3), 0.7, n_acc), 2), bal)
    bal = np.where(is_slot[INVEST], np.round(income * rng.lognormal(np.log(0.8), 1.0, n_acc), 2), bal)
    card_limit = np.clip(np.round(income * 0.08 / 500) * 500, 500, 15_000)
    limit = np.where(is_slot[CARD_S], card_limit, np.nan)
    bal = np.where(is_slot[CARD_S], -np.round(limit * rng.beta(1.2, 4, n_acc), 2), bal)
    overdraft = np.round(b.s_net[a_cust] * 0.5 / 100) * 100
    limit = np.where(is_slot[CUR] & (rng.random(n_acc) < 0.6) & (overdraft > 0), overdraft, limit)
    lc = a_cust[is_slot[LOAN_S]]  # loan holders, in customer order
    months_paid = np.floor(np.minimum(np.minimum(end, b.default_day) - b.loan_start, b.duration * 30.4375)
                           / 30.4375)[lc]
    grow = (1 + b.r[lc]) ** months_paid
    outstanding = np.maximum(b.principal[lc] * grow - b.payment[lc] * (grow - 1) / b.r[lc], 0)
    outstanding = np.round(np.where(b.churn[lc], 0, outstanding), 2)  # leavers refinance elsewhere
    bal[is_slot[LOAN_S]] = -outstanding
    bal = np.where(closed <= end, 0.0, bal)
    status = np.where(is_slot[LOAN_S] & b.default[a_cust], 3, 0)
    dormant = is_slot[CUR] & (last_user[a_cust] < end - 180) & (end - opened > 180)
    status = np.where(closed <= end, 2, np.where(dormant, 1, status))
    accounts = pa.table({
        "account_id": b.account_ids,
        "customer_id": ids.take(pa.array(a_cust)),
        "product_id": ref.product_ids.take(pa.array(b.slot_product[a_cust, a_slot])),
        "opened_date": _dates(opened),
        "closed_date": _dates(closed, mask=closed > end),
        "balance": pa.array(bal, mask=is_slot[HOME_INS] | is_slot[LIFE_INS]),
        "credit_limit": pa.array(limit, mask=np.isnan(limit)),
        "status": _labels(ACCOUNT_STATUS, status),
    })

    loans = pa.table({
        "loan_id": _ids("L", b.num[lc], 7),
        "customer_id": ids.take(pa.array(lc)),
        "account_id": b.account_ids.take(pa.array(b.cur_row[lc])),  # paid from the current account
        "start_date": _dates(b.loan_start[lc]),
        "amount": b.principal[lc],
        "duration_months": b.duration[lc],
        "monthly_payment": b.payment[lc],
        "interest_rate": b.rate[lc],
        "status": _labels(LOAN_STATUS, np.where(b.default[lc], 1, np.where(b.churn[lc], 2, 0))),
        "defaulted": pa.array(b.default[lc]),
        "product_id": ref.product_ids.take(pa.array(b.slot_product[lc, LOAN_S])),
        "outstanding": outstanding,
    })

    # long format: churned for every customer, defaulted for every loan holder
    who = np.r_[np.arange(n), lc]
    kind = np.r_[np.zeros(n, np.int64), np.ones(len(lc), np.int64)]
    value = np.r_[b.churn, b.default[lc]].astype(np.float64)
    when = np.r_[np.minimum(b.churn_day, end), np.minimum(b.default_day[lc], end)]
    order = np.lexsort((kind, who))
    labels = pa.table({
        "customer_id": ids.take(pa.array(who[order])),
        "label": _labels(("churned", "defaulted"), kind[order]),
        "value": value[order],
        "label_date": _dates(when[order]),
    })

    customers = pa.table({
        "customer_id": ids,
        "birth_date": _dates(b.birth),
        "age": b.age,
        "gender": pa.array(np.where(b.female, "F", "M")),
        "income": b.income,
        "credit_score": b.score,
        "region": _labels(ref.regions, ref.city_region[b.city]),
        "city": _labels(ref.cities, b.city),
        "agency_id": ref.agency_ids.take(pa.array(b.agency)),
        "manager_id": ref.manager_ids.take(pa.array(b.manager)),
        "joined_date": _dates(b.joined),
        "tenure_months": b.tenure_months,
        "segment": _labels(SEGMENTS, b.segment),
        "occupation": _labels(OCCUPATIONS, b.occ),
        "marital_status": _labels(MARITAL, b.marital),
        "dependents": b.dependents,
        "digital_user": b.digital.astype(np.int64),
        "complaints_12m": b.complaints,
    })
    return {"customers": customers, "accounts": accounts, "transactions": transactions, "loans": loans,
            "labels": labels}


# Secondary products existing customers take up after the snapshot. Loans are left out: a loan's
# instalments and its default are part of the default outcome, which starts loans before the snapshot only.
ACQUIRABLE = (SAV, TERM, CARD_S, INVEST, HOME_INS, LIFE_INS)


def _acquisitions(b: _Chunk, rng, accounts: pa.Table) -> pa.Table:
    """`accounts` plus the products existing customers open in the label window after the snapshot.

    At the pace of the openings before it, so that the chance to take a product up in the next HORIZON_DAYS
    given that one does not hold it is the same after the snapshot as before: in _lifecycle a product is
    held with probability p_hold (income, age, occupation, tenure) and, when not opened on the first visit
    (60%), opened at joined + U ** 1.5 * span, so it falls in the last HORIZON_DAYS of the span with
    probability f = 0.6 * (1 - (1 - HORIZON_DAYS / span) ** (2/3)). Not holding it at snapshot - HORIZON_DAYS
    has probability 1 - p + p * f, of which p * f opens it in the window: a customer who does not hold it at
    the snapshot takes it up after with probability p * f / (1 - p + p * f). Leavers and defaulters take
    nothing up. `rng` is this step's own generator, so every value drawn before (and every other table) is
    the same as without it; the new accounts have no transactions yet (a savings account opened empty, fees
    start with the next quarter's statement).
    """
    cal, n = b.cal, b.n
    snap = cal.snap
    slots = np.array(ACQUIRABLE)
    span = np.maximum(snap - b.joined, 1)
    f = 0.6 * (1 - (1 - np.minimum(HORIZON_DAYS / span, 1)) ** (2 / 3))[:, None]
    p = b.p_hold[:, slots]
    eligible = (b.joined < snap) & ~b.churn & ~b.default
    take = (rng.random((n, len(slots))) < p * f / (1 - p + p * f)) & ~b.held[:, slots] & eligible[:, None]
    c, k = np.nonzero(take)
    slot = slots[k]
    m = len(c)
    rank = b.held.sum(axis=1)[c] + np.cumsum(take, axis=1)[c, k]
    day = snap + rng.integers(1, HORIZON_DAYS + 1, m)
    income = b.income[c]
    limit = np.where(slot == CARD_S, np.clip(np.round(income * 0.08 / 500) * 500, 500, 15_000), np.nan)
    bal = np.select(
        [slot == TERM, slot == INVEST, slot == CARD_S],
        [np.round(income * rng.lognormal(np.log(0.3), 0.7, m), 2),
         np.round(income * rng.lognormal(np.log(0.8), 1.0, m), 2),
         -np.round(limit * rng.beta(1.2, 4, m), 2)], 0.0)
    extra = pa.table({
        "account_id": _ids("A", b.num[c] * 100 + rank, 9),
        "customer_id": b.cust_ids.take(pa.array(c)),
        "product_id": b.ref.product_ids.take(pa.array(b.slot_product[c, slot])),
        "opened_date": _dates(day),
        "closed_date": pa.nulls(m, pa.date32()),
        "balance": pa.array(bal, mask=(slot == HOME_INS) | (slot == LIFE_INS)),
        "credit_limit": pa.array(limit, mask=np.isnan(limit)),
        "status": pa.array(["active"] * m, pa.string()),
    }).cast(accounts.schema)
    # in customer order, each customer's new accounts after the ones held before
    order = np.argsort(np.r_[b.a_cust, c], kind="stable")
    return pa.concat_tables([accounts, extra]).take(pa.array(order))


def _chunk(rng, acq_rng, first: int, n: int, cal: _Calendar, ref: _Reference, tx_offset: int,
           drift: float = 0.0, fraud_rate: float = 0.0, fraud_rng=None) -> dict[str, pa.Table]:
    """Customers first+1 .. first+n and everything that hangs off them (acq_rng: see _acquisitions; fraud_rng:
    see _fraud)."""
    b = _Chunk(rng, first, n, cal, ref)
    b.drift = drift
    b.fraud_rate, b.fraud_rng = fraud_rate, fraud_rng
    _people(b)
    _holdings(b)
    _fates(b)
    _lifecycle(b)
    tables = _tables(b, _transactions(b), tx_offset)
    tables["accounts"] = _acquisitions(b, acq_rng, tables["accounts"])
    return tables


# --------------------------------------------------------------------------------------------- writers
class _CsvSink:
    """One CSV written chunk by chunk: a plain header once, then unquoted rows (no value holds , or ")."""

    def __init__(self, path: Path, columns: tuple[str, ...]):
        self.columns, self.rows = columns, 0
        self.file = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.file.write((",".join(columns) + "\n").encode())
        self.writer = None

    def write(self, table: pa.Table) -> None:
        table = table.select(list(self.columns))
        if self.writer is None:
            opts = pacsv.WriteOptions(include_header=False, quoting_style="none")
            self.writer = pacsv.CSVWriter(self.file, table.schema, write_options=opts)
        self.writer.write_table(table)
        self.rows += table.num_rows

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.file.close()


class _XlsxSink:
    """One sheet per file, streamed with constant_memory; split in numbered parts when part_rows is set."""

    def __init__(self, out: Path, name: str, columns: tuple[str, ...], created: dt.datetime,
                 part_rows: int | None = None):
        self.out, self.name, self.columns, self.created = out, name, columns, created
        self.part_rows, self.part, self.rows = part_rows, 0, 0
        self._open()

    def _open(self) -> None:
        self.part += 1
        fname = f"{self.name}_{self.part:03d}.xlsx" if self.part_rows else f"{self.name}.xlsx"
        self.book = xlsxwriter.Workbook(str(self.out / fname), {"constant_memory": True})
        self.book.set_properties({"created": self.created})  # else xlsxwriter stamps the wall clock
        self.date_fmt = self.book.add_format({"num_format": "yyyy-mm-dd"})
        self.ts_fmt = self.book.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"})
        self.sheet = self.book.add_worksheet(self.name)
        for c, col in enumerate(self.columns):
            self.sheet.write_string(0, c, col)
        self.row = 0

    def write(self, table: pa.Table) -> None:
        table = table.select(list(self.columns))
        start = 0
        while start < table.num_rows:
            if self.part_rows and self.row >= self.part_rows:
                self.book.close()
                self._open()
            take = table.num_rows - start if not self.part_rows else min(table.num_rows - start,
                                                                          self.part_rows - self.row)
            self._write_rows(table.slice(start, take))
            start += take

    def _write_rows(self, table: pa.Table) -> None:
        sheet, cols, writers = self.sheet, [], []
        for col in table.columns:
            t = col.type
            if pa.types.is_date32(t):  # Excel serial days: 1970-01-01 is 25569
                cols.append(pc.add(col.cast(pa.int32()), 25569).to_pylist())
                writers.append((sheet.write_number, self.date_fmt))
            elif pa.types.is_timestamp(t):
                cols.append(pc.add(pc.divide(col.cast(pa.int64()).cast(pa.float64()), float(DAY)), 25569.0)
                            .to_pylist())
                writers.append((sheet.write_number, self.ts_fmt))
            elif pa.types.is_boolean(t):
                cols.append(col.to_pylist())
                writers.append((sheet.write_boolean, None))
            elif pa.types.is_string(t):
                cols.append(col.to_pylist())
                writers.append((sheet.write_string, None))
            else:
                cols.append(col.to_pylist())
                writers.append((sheet.write_number, None))
        row = self.row
        for values in zip(*cols, strict=True):
            row += 1
            for c, v in enumerate(values):
                if v is not None:  # empty cell for null
                    fn, fmt = writers[c]
                    fn(row, c, v, fmt)
        self.rows += table.num_rows
        self.row = row

    def close(self) -> None:
        self.book.close()


# ------------------------------------------------------------------------------------------------- API
def generate_bank(out_dir: str | Path, customers: int = 20_000, seed: int = 0, fmt: str = "csv",
                  end_date: str = "2026-09-30", progress: Callable[[str], None] | None = None,
                  drift: float = 0.0, fraud_rate: float = 0.0, manager_effect: float = 0.0) -> dict[str, int]:
    """Write a realistic synthetic bank to out_dir; return {table_name: rows_written}.

    fmt "csv" writes <table>.csv; "xlsx" writes <table>.xlsx and transactions_001.xlsx, _002, ... in parts
    of at most 1,000,000 rows. Same seed and arguments give byte-identical files. `drift` in [0, 1] shifts
    the population (0.5: customers ~20% younger at the median, incomes x1.5, more digital, newer, busier) so
    drift monitoring can be seen at work. `fraud_rate` in [0, 1]: the share of customers defrauded once (_fraud),
    with a `fraud` column (1/0) on transactions; 0 writes the bank exactly as without it. `manager_effect` >= 0:
    how much a relationship manager's (and agency's) fixed quality moves their clients' product use and loyalty (1:
    a manager one standard deviation better has clients ~50% busier and less likely to leave), so the book
    performance models have something lasting to find; 0 writes the bank exactly as without it.
    """
    if not 0 <= drift <= 1:
        raise ValueError("drift must be between 0 and 1")
    if not 0 <= fraud_rate <= 1:
        raise ValueError("fraud_rate must be between 0 and 1")
    if manager_effect < 0:
        raise ValueError("manager_effect must be >= 0")
    if fmt not in ("csv", "xlsx"):
        raise ValueError(f"fmt must be 'csv' or 'xlsx', not {fmt!r}")
    if customers < 0:
        raise ValueError("customers must be >= 0")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cal = _Calendar(end_date)
    # The bank's network (agencies, managers, products) is the same for every seed, as it is from one month's
    # export to the next: a seed draws customers. (Seed 0's files are as they always were.)
    ref = _Reference(np.random.default_rng([0, 1 << 40]), cal)
    ref.manager_effect = manager_effect

    sinks = {}
    for name, columns in COLUMNS.items():
        if name == "transactions" and fraud_rate:
            columns = (*columns, "counterparty", "fraud")
        if fmt == "csv":
            sinks[name] = _CsvSink(out / f"{name}.csv", columns)
        else:
            parts = XLSX_PART_ROWS if name == "transactions" else None
            sinks[name] = _XlsxSink(out, name, columns, cal.created, parts)
    try:
        for name, table in ref.tables.items():
            sinks[name].write(table)
        n_chunks = -(-customers // CHUNK)
        tx_total = 0
        for i in range(n_chunks):
            first = i * CHUNK
            size = min(CHUNK, customers - first)
            tables = _chunk(np.random.default_rng([seed, i]), np.random.default_rng([seed, i, 7]), first, size,
                            cal, ref, tx_total, drift, fraud_rate, np.random.default_rng([seed, i, 11]))
            for name, table in tables.items():
                sinks[name].write(table)
            tx_total += tables["transactions"].num_rows
            if progress:
                progress(f"chunk {i + 1}/{n_chunks}: {first + size:,}/{customers:,} customers, "
                         f"{tx_total:,} transactions")
    finally:
        for sink in sinks.values():
            sink.close()
    # Written last, as a bank's export job does: the files beside it are complete (the synthetic source config
    # reads a file once the marker is at least as new as it, without waiting for it to settle).
    (out / "_SUCCESS").touch()
    return {name: sink.rows for name, sink in sinks.items()}
