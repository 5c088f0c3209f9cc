"""Fraud features: what the store knows about an order and its customer, as numbers.

One pure function (`order_features`) over plain facts (`OrderFacts`, `CustomerFacts`) serves both
doors: training builds the facts of every order from whole tables (`load_all`), scoring builds one
customer's facts with a few indexed queries (`load_customer`, `load_order`). Same code, so what the
model learnt is what it sees at checkout.

Point in time: an order's features use only what happened before it was placed (prior orders,
refunds, payment methods, address changes), plus the order itself as it stands (its items, its
payments, its final address and whether that address was changed on the order). Nothing after the
order leaks in, so training on the history matches scoring at checkout.

Changing what a feature means or the list itself: bump FEATURE_VERSION. An artifact trained on
another version is refused and scoring falls back to the rules (commerce/fraud.py).
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from statistics import median
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection
from sqlmodel import Session, col

from commerce.models import (
    Address,
    AddressChange,
    Customer,
    FraudLabel,
    Order,
    OrderItem,
    Payment,
    PaymentMethod,
    Product,
    Variant,
)

FEATURE_VERSION = "store-v1"

# Resold easily and shipped anywhere: what stolen cards and taken-over accounts buy (tau2 catalog names).
HIGH_RISK_PRODUCTS: frozenset[str] = frozenset(
    {
        "Laptop",
        "Smartphone",
        "Tablet",
        "Digital Camera",
        "Action Camera",
        "Wristwatch",
        "Smart Watch",
        "Headphones",
        "Wireless Earbuds",
        "E-Reader",
        "Bluetooth Speaker",
        "Perfume",
    }
)

FEATURES: tuple[str, ...] = (
    "amount",
    "n_items",
    "max_item_price",
    "amount_vs_median",
    "n_prior_orders",
    "orders_1h",
    "orders_24h",
    "payment_methods_24h",
    "account_age_days",
    "gift_card_share",
    "paypal_share",
    "pm_age_hours",
    "pm_first_use",
    "pms_added_7d",
    "ship_differs_default",
    "new_ship_address",
    "addr_change_days",
    "order_addr_changed",
    "ship_to_recent_change",
    "ship_addr_accounts",
    "high_risk_share",
    "name_mismatch",
    "refunds_prior",
    "refund_rate_prior",
)

# What each feature means, for reason codes an agent reads ({v} is the value).
FEATURE_TEXT: dict[str, str] = {
    "amount": "order total ${v:,.2f}",
    "n_items": "{v:.0f} item(s) in the order",
    "max_item_price": "most expensive item ${v:,.2f}",
    "amount_vs_median": "total is {v:.1f}x the customer's usual order",
    "n_prior_orders": "{v:.0f} earlier orders on the account",
    "orders_1h": "{v:.0f} other orders in the hour before",
    "orders_24h": "{v:.0f} other orders in the day before",
    "payment_methods_24h": "{v:.0f} payment methods used within a day",
    "account_age_days": "account {age} old",
    "gift_card_share": "{v:.0%} paid by gift card",
    "paypal_share": "{v:.0%} paid by PayPal",
    "pm_age_hours": "payment method added {age} before the order",
    "pm_first_use": "first use of this payment method",
    "pms_added_7d": "{v:.0f} payment methods added in the 7 days before",
    "ship_differs_default": "ships elsewhere than the account's default address",
    "new_ship_address": "ships to an address never used on the account",
    "addr_change_days": "an address was changed {age} before the order",
    "order_addr_changed": "the order's shipping address was changed after it was placed",
    "ship_to_recent_change": "ships to an address set within 30 days before the order",
    "ship_addr_accounts": "{v:.0f} other accounts ship to the same address",
    "high_risk_share": "{v:.0%} of the total is easily resold electronics or luxury goods",
    "name_mismatch": "recipient name differs from the account holder",
    "refunds_prior": "{v:.0f} refunds on earlier delivered orders",
    "refund_rate_prior": "{v:.0%} of earlier orders were refunded",
}

RECENT_CHANGE_DAYS = 30


def describe(name: str, value: float) -> str:
    """A feature and its value in words, for a reason an agent reads."""
    text = FEATURE_TEXT[name]
    if "{" not in text:
        return text
    if math.isnan(value):
        return f"{name.replace('_', ' ')}: unknown"
    hours = value if name.endswith("_hours") else value * 24.0
    age = (
        f"{hours * 60:.0f} min" if hours < 1 else f"{hours:.0f} h" if hours < 48 else f"{hours / 24:.0f} days"
    )
    return text.format(v=value, age=age)


# ---- facts -----------------------------------------------------------------------------------------


def utc(value: datetime) -> datetime:
    """Aware UTC (SQLite hands back naive datetimes for aware columns on some paths)."""
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


@functools.lru_cache(maxsize=65_536)
def address_key(address1: str, zip_code: str) -> str:
    """Two spellings of one street address compare equal: case, spaces and punctuation ignored.
    Cached: scoring one order keys every earlier order of the customer and of the zip again."""
    street = "".join(ch for ch in address1.lower() if ch.isalnum() or ch == " ")
    return f"{' '.join(street.split())}|{zip_code.strip()[:5]}"


def _name_key(name: str) -> str:
    return " ".join("".join(ch for ch in name.lower() if ch.isalpha() or ch == " ").split())


def names_differ(recipient: str, last_name: str) -> bool:
    """A recipient outside the family: the last names differ (a gift to a sibling is not a mismatch)."""
    ship, last = _name_key(recipient).split(), _name_key(last_name).split()
    return not ship or not last or ship[-1] != last[-1]


@dataclass(frozen=True)
class PaymentFacts:
    id: str
    kind: str  # credit_card | gift_card | paypal
    added_at: datetime


@dataclass(frozen=True)
class OrderFacts:
    """An order as the scorer sees it. `payments` are (payment method id, amount) of the payments;
    `refunds` are (time, amount) of refunds that were not cancellations (returns, claims)."""

    id: str | None
    customer_id: str | None
    created_at: datetime
    status: str
    items: tuple[tuple[str, float], ...]  # (product name, unit price), one entry per unit
    payments: tuple[tuple[str, float], ...]
    ship_key: str
    ship_name: str | None = None
    refunds: tuple[tuple[datetime, float], ...] = ()
    cancelled_at: datetime | None = None

    @property
    def amount(self) -> float:
        return round(sum(p for _, p in self.items), 2)


@dataclass(frozen=True)
class ChangeFacts:
    changed_at: datetime
    order_id: str | None  # None: the account's address
    new_key: str


@dataclass
class CustomerFacts:
    id: str
    first_name: str
    last_name: str
    created_at: datetime
    default_key: str
    payment_methods: dict[str, PaymentFacts] = field(default_factory=dict)
    orders: list[OrderFacts] = field(default_factory=list)  # by created_at
    changes: list[ChangeFacts] = field(default_factory=list)  # by changed_at


# ---- the features ------------------------------------------------------------------------------------


def _hours(delta: timedelta) -> float:
    return delta.total_seconds() / 3600.0


def order_features(
    order: OrderFacts,
    customer: CustomerFacts | None,
    ship_addr_accounts: int,
    extra_methods: dict[str, PaymentFacts] | None = None,
) -> dict[str, float]:
    """The FEATURES of `order` from what was known when it was placed (see the module docstring).

    `customer` None is a guest checkout (no history). `ship_addr_accounts` counts the other
    customers who shipped to the same address before. `extra_methods` are payment methods not in
    the store yet (a card entered at checkout)."""
    t = order.created_at
    amount = order.amount
    prices = [p for _, p in order.items]
    methods = dict(customer.payment_methods) if customer else {}
    methods.update(extra_methods or {})
    prior = [o for o in (customer.orders if customer else []) if o.created_at < t and o.id != order.id]
    kept = [o for o in prior if o.status != "cancelled"]
    totals = [o.amount for o in kept if o.amount > 0]
    paid = sum(a for _, a in order.payments) or amount or 1.0

    def share(kind: str) -> float:
        return sum(a for m, a in order.payments if m in methods and methods[m].kind == kind) / paid

    ages = [_hours(t - methods[m].added_at) for m, _ in order.payments if m in methods]
    used_before = {m for o in prior for m, _ in o.payments}
    day_methods = {m for o in prior if t - o.created_at <= timedelta(hours=24) for m, _ in o.payments}
    day_methods |= {m for m, _ in order.payments}

    changes = customer.changes if customer else []
    account_changes = [c for c in changes if c.order_id is None and c.changed_at < t]
    own_changes = [c for c in changes if order.id is not None and c.order_id == order.id]
    recent_keys = {
        c.new_key for c in account_changes if t - c.changed_at <= timedelta(days=RECENT_CHANGE_DAYS)
    }
    recent_keys |= {c.new_key for c in own_changes}
    last_change = max((c.changed_at for c in changes if c.changed_at < t), default=None)

    default_key = customer.default_key if customer else ""
    known = {default_key} | {o.ship_key for o in prior}
    refunds = sum(1 for o in prior for at, _ in o.refunds if at < t)
    name_mismatch = float(
        bool(order.ship_name and customer and names_differ(order.ship_name, customer.last_name))
    )

    high_risk = sum(p for name, p in order.items if name in HIGH_RISK_PRODUCTS)
    return {
        "amount": amount,
        "n_items": float(len(order.items)),
        "max_item_price": max(prices, default=0.0),
        "amount_vs_median": amount / median(totals) if totals else math.nan,
        "n_prior_orders": float(len(prior)),
        "orders_1h": float(sum(1 for o in prior if t - o.created_at <= timedelta(hours=1))),
        "orders_24h": float(sum(1 for o in prior if t - o.created_at <= timedelta(hours=24))),
        "payment_methods_24h": float(len(day_methods)),
        "account_age_days": max(0.0, _hours(t - customer.created_at) / 24.0) if customer else 0.0,
        "gift_card_share": share("gift_card"),
        "paypal_share": share("paypal"),
        "pm_age_hours": max(0.0, min(ages)) if ages else math.nan,
        "pm_first_use": float(any(m not in used_before for m, _ in order.payments)),
        "pms_added_7d": float(
            sum(1 for m in methods.values() if timedelta(0) <= t - m.added_at <= timedelta(days=7))
        ),
        "ship_differs_default": float(order.ship_key != default_key),
        "new_ship_address": float(order.ship_key not in known),
        "addr_change_days": _hours(t - last_change) / 24.0 if last_change else math.nan,
        "order_addr_changed": float(bool(own_changes)),
        "ship_to_recent_change": float(order.ship_key in recent_keys),
        "ship_addr_accounts": float(ship_addr_accounts),
        "high_risk_share": high_risk / amount if amount > 0 else 0.0,
        "name_mismatch": name_mismatch,
        "refunds_prior": float(refunds),
        "refund_rate_prior": refunds / len(kept) if kept else 0.0,
    }


def action_facts(order: OrderFacts, customer: CustomerFacts | None, now: datetime) -> dict[str, float]:
    """What matters for an action on `order` requested at `now` (return, exchange, address change,
    cancel): the account's state up to now, not when the order was placed."""
    orders = [o for o in (customer.orders if customer else []) if o.created_at <= now]
    kept = [o for o in orders if o.status != "cancelled"]
    refunds = sum(1 for o in orders for at, _ in o.refunds if at <= now)
    changes = [c for c in (customer.changes if customer else []) if c.changed_at <= now]
    methods = customer.payment_methods.values() if customer else []
    return {
        "refunds_total": float(refunds),
        "refund_rate_total": refunds / len(kept) if kept else 0.0,
        "addr_changes_30d": float(sum(1 for c in changes if now - c.changed_at <= timedelta(days=30))),
        "pms_added_7d_now": float(
            sum(1 for m in methods if timedelta(0) <= now - m.added_at <= timedelta(days=7))
        ),
        "cancels_24h": float(
            sum(
                1
                for o in orders
                if o.cancelled_at and timedelta(0) <= now - o.cancelled_at <= timedelta(hours=24)
            )
        ),
        "days_since_order": max(0.0, _hours(now - order.created_at) / 24.0),
    }


# ---- from the store --------------------------------------------------------------------------------


def _order_facts(
    row: Any,
    items: dict[str, list[tuple[str, float]]],
    pays: dict[str, list[tuple[str, str, float, datetime]]],
) -> OrderFacts:
    oid = row.id
    cancelled = row.status == "cancelled"
    flows = pays.get(oid, [])
    return OrderFacts(
        id=oid,
        customer_id=row.customer_id,
        created_at=utc(row.created_at),
        status=row.status,
        items=tuple(items.get(oid, [])),
        payments=tuple((m, a) for kind, m, a, _ in flows if kind == "payment"),
        ship_key=address_key(row.ship_address1, row.ship_zip),
        ship_name=row.ship_name,
        refunds=() if cancelled else tuple((utc(at), a) for kind, _, a, at in flows if kind == "refund"),
        cancelled_at=utc(row.cancelled_at) if row.cancelled_at else None,
    )


def _conn(db: Session | Connection) -> Connection:
    """A Core connection in the caller's transaction (flushed first, as autoflush would): scoring
    runs a handful of small selects, and the ORM layer would cost more than the queries."""
    if isinstance(db, Session):
        db.flush()
        return db.connection()
    return db


def _rows(db: Session | Connection, stmt: Any, **params: Any) -> Any:
    return _conn(db).execute(stmt, params)


_ORDER_COLS = (
    Order.id,
    Order.customer_id,
    Order.created_at,
    Order.status,
    Order.ship_address1,
    Order.ship_zip,
    Order.ship_name,
    Order.cancelled_at,
)
_CID = bindparam("cid")
# Built once: SQLAlchemy then reuses their compiled form (scoring is on the checkout's hot path).
_Q_DEFAULT = (
    select(Address.address1, Address.zip)
    .where(Address.customer_id == Customer.id, col(Address.is_default).is_(True))
    .order_by(col(Address.created_at).desc(), col(Address.id).desc())
    .limit(1)
)
# The profile and its default address in one round trip (two correlated scalar subqueries).
_Q_CUSTOMER = select(
    Customer.id,
    Customer.first_name,
    Customer.last_name,
    Customer.created_at,
    _Q_DEFAULT.with_only_columns(Address.address1).scalar_subquery().label("default_address1"),
    _Q_DEFAULT.with_only_columns(Address.zip).scalar_subquery().label("default_zip"),
).where(Customer.id == _CID)
_Q_METHODS = select(PaymentMethod.id, PaymentMethod.kind, PaymentMethod.added_at).where(
    PaymentMethod.customer_id == _CID
)
_Q_ORDERS = select(*_ORDER_COLS).where(Order.customer_id == _CID)
_Q_ITEMS = (
    select(OrderItem.order_id, OrderItem.name, OrderItem.price)
    .join(Order, col(Order.id) == col(OrderItem.order_id))
    .where(Order.customer_id == _CID)
    .order_by(col(OrderItem.id))
)
_Q_PAYMENTS = (
    select(Payment.order_id, Payment.kind, Payment.payment_method_id, Payment.amount, Payment.created_at)
    .join(Order, col(Order.id) == col(Payment.order_id))
    .where(Order.customer_id == _CID)
    .order_by(col(Payment.id))
)
_Q_CHANGES = (
    select(AddressChange.changed_at, AddressChange.order_id, AddressChange.address1, AddressChange.zip)
    .where(AddressChange.customer_id == _CID)
    .order_by(col(AddressChange.changed_at), col(AddressChange.id))
)
_Q_SAME_ZIP = select(Order.customer_id, Order.ship_address1, Order.ship_zip).where(
    col(Order.ship_zip).in_(bindparam("zips", expanding=True)), Order.created_at < bindparam("before")
)


_Q_ORDER_OWNER = select(Order.customer_id, Order.ship_address1, Order.ship_zip).where(
    Order.id == bindparam("oid")
)
_Q_CATALOG = (
    select(Variant.id, Product.name, Variant.price)
    .join(Product, col(Product.id) == col(Variant.product_id))
    .where(col(Variant.id).in_(bindparam("ids", expanding=True)))
)


def order_owner(db: Session | Connection, order_id: str) -> tuple[str, str, str] | None:
    """(customer id, ship address1, ship zip) of an order, None if there is no such order."""
    row = _rows(db, _Q_ORDER_OWNER, oid=order_id).first()
    return (row.customer_id, row.ship_address1, row.ship_zip) if row else None


def catalog(db: Session | Connection, variant_ids: Iterable[str]) -> dict[str, tuple[str, float]]:
    """variant id -> (product name, price) for the ids that exist."""
    rows = _rows(db, _Q_CATALOG, ids=sorted(set(variant_ids)))
    return {vid: (name, float(price)) for vid, name, price in rows}


def load_customer(db: Session | Connection, customer_id: str) -> CustomerFacts | None:
    """One customer's facts: profile, default address, payment methods, orders, address changes."""
    conn = _conn(db)
    cust = conn.execute(_Q_CUSTOMER, {"cid": customer_id}).first()
    if cust is None:
        return None
    methods = conn.execute(_Q_METHODS, {"cid": customer_id}).all()
    order_rows = conn.execute(_Q_ORDERS, {"cid": customer_id}).all()
    items: dict[str, list[tuple[str, float]]] = defaultdict(list)
    pays: dict[str, list[tuple[str, str, float, datetime]]] = defaultdict(list)
    if order_rows:
        for oid, name, price in conn.execute(_Q_ITEMS, {"cid": customer_id}):
            items[oid].append((name, float(price)))
        for oid, kind, method, amount, at in conn.execute(_Q_PAYMENTS, {"cid": customer_id}):
            pays[oid].append((kind, method, float(amount), at))
    changes = conn.execute(_Q_CHANGES, {"cid": customer_id}).all()
    return CustomerFacts(
        id=cust.id,
        first_name=cust.first_name,
        last_name=cust.last_name,
        created_at=utc(cust.created_at),
        default_key=(
            address_key(cust.default_address1, cust.default_zip) if cust.default_address1 is not None else ""
        ),
        payment_methods={m.id: PaymentFacts(m.id, m.kind, utc(m.added_at)) for m in methods},
        orders=sorted((_order_facts(r, items, pays) for r in order_rows), key=lambda o: (o.created_at, o.id)),
        changes=[ChangeFacts(utc(c.changed_at), c.order_id, address_key(c.address1, c.zip)) for c in changes],
    )


def count_ship_addr_accounts(
    db: Session | Connection, address1: str, zip_code: str, customer_id: str | None, before: datetime
) -> int:
    """How many other customers shipped an order to this address before `before` (zip index)."""
    key = address_key(address1, zip_code)
    zips = sorted({zip_code.strip(), zip_code.strip()[:5]})
    rows = _rows(db, _Q_SAME_ZIP, zips=zips, before=before)
    return len({c for c, a, z in rows if c != customer_id and address_key(a, z) == key})


@dataclass
class StoreHistory:
    """Every order with its customer's facts and its label: what training reads."""

    customers: dict[str, CustomerFacts]
    orders: list[OrderFacts]  # by created_at
    labels: dict[str, str]  # order id -> fraud pattern (absent: legitimate)
    ship_addr_accounts: dict[str, int]  # order id -> other accounts that shipped there before

    def matrix(self, progress: Any = None) -> tuple[list[list[float]], list[int], list[str]]:
        """Feature rows (FEATURES order), 0/1 labels and order ids, in time order."""
        X, y, ids = [], [], []
        for n, o in enumerate(self.orders, start=1):
            f = order_features(
                o, self.customers.get(o.customer_id or ""), self.ship_addr_accounts[o.id or ""]
            )
            X.append([f[name] for name in FEATURES])
            y.append(int((o.id or "") in self.labels))
            ids.append(o.id or "")
            if progress is not None and (n % 250 == 0 or n == len(self.orders)):
                progress(n, len(self.orders))
        return X, y, ids


def load_history(db: Session | Connection) -> StoreHistory:
    """The whole store's orders as facts, in a handful of table scans (for training and evaluation)."""
    customers: dict[str, CustomerFacts] = {}
    defaults: dict[str, tuple[datetime, int, str]] = {}
    for cid, a1, z, at, aid in _rows(
        db,
        select(Address.customer_id, Address.address1, Address.zip, Address.created_at, Address.id).where(
            col(Address.is_default).is_(True)
        ),
    ):
        cand = (utc(at), aid, address_key(a1, z))
        if cid not in defaults or cand[:2] > defaults[cid][:2]:
            defaults[cid] = cand
    for c in _rows(db, select(Customer.id, Customer.first_name, Customer.last_name, Customer.created_at)):
        customers[c.id] = CustomerFacts(
            c.id, c.first_name, c.last_name, utc(c.created_at), defaults.get(c.id, (None, 0, ""))[2]
        )
    for m in _rows(
        db, select(PaymentMethod.id, PaymentMethod.customer_id, PaymentMethod.kind, PaymentMethod.added_at)
    ):
        customers[m.customer_id].payment_methods[m.id] = PaymentFacts(m.id, m.kind, utc(m.added_at))
    items: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for oid, name, price in _rows(
        db, select(OrderItem.order_id, OrderItem.name, OrderItem.price).order_by(col(OrderItem.id))
    ):
        items[oid].append((name, float(price)))
    pays: dict[str, list[tuple[str, str, float, datetime]]] = defaultdict(list)
    for oid, kind, method, amount, at in _rows(
        db,
        select(
            Payment.order_id, Payment.kind, Payment.payment_method_id, Payment.amount, Payment.created_at
        ).order_by(col(Payment.id)),
    ):
        pays[oid].append((kind, method, float(amount), at))
    orders = sorted(
        (_order_facts(r, items, pays) for r in _rows(db, select(*_ORDER_COLS))),
        key=lambda o: (o.created_at, o.id),
    )
    for o in orders:
        customers[o.customer_id or ""].orders.append(o)
    for cid, at, oid, a1, z in _rows(
        db,
        select(
            AddressChange.customer_id,
            AddressChange.changed_at,
            AddressChange.order_id,
            AddressChange.address1,
            AddressChange.zip,
        ).order_by(col(AddressChange.changed_at), col(AddressChange.id)),
    ):
        customers[cid].changes.append(ChangeFacts(utc(at), oid, address_key(a1, z)))
    labels = dict(_rows(db, select(FraudLabel.order_id, FraudLabel.pattern)).all())
    return StoreHistory(customers, orders, labels, _shared_address_counts(orders))


def _shared_address_counts(orders: Iterable[OrderFacts]) -> dict[str, int]:
    """Per order: distinct other customers with an earlier order to the same address."""
    seen: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    out: dict[str, int] = {}
    for o in orders:  # in time order
        earlier = seen[o.ship_key]
        out[o.id or ""] = len({c for at, c in earlier if at < o.created_at and c != o.customer_id})
        earlier.append((o.created_at, o.customer_id or ""))
    return out
