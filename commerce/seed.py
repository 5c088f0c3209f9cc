"""Seed the store from the tau2-retail db.json plus a generated, reproducible history.

`seed_store(engine_or_session, settings)` loads the 500 customers, 50 products / 591 variants and
1,000 orders of tau2-retail and generates what tau2 lacks: dates, addresses and payment-method
timestamps, product descriptions, stock counts, carriers, delivery estimates and tracking events,
cancellation reasons, and two years of daily sales per variant.

Determinism: everything random comes from `random.Random` / numpy generators seeded by
`settings.seed` plus a stable key of the entity ("order|#W2611340", "sales|9612497925"), never from
iteration order, `hash()` or the wall clock; all dates are relative to `settings.store_today`.
So seeding twice (or on SQLite and on PostgreSQL) gives the same store: `store_fingerprint`.

Generated times are naive UTC internally, rounded to the second; they get a UTC tzinfo on the way
into columns declared timezone-aware (SQLModel maps `datetime` fields to UTCDateTime).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import time as _time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import numpy as np
from sqlalchemy import (
    Boolean,
    Date,
    Enum,
    Integer,
    String,
    Table,
    delete,
    func,
    inspect,
    select,
    text,
    type_coerce,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session

from commerce.models import (
    Address,
    AddressChange,
    Conversation,
    Customer,
    DailySales,
    FraudLabel,
    Order,
    OrderItem,
    Payment,
    PaymentMethod,
    Product,
    PurchaseOrder,
    PurchaseOrderLine,
    Shipment,
    ShipmentEvent,
    SupplierItem,
    Variant,
)
from commerce.purchasing_seed import add_purchasing
from shopdesk.settings import Settings, get_settings

# Parents first: the insert order. Deletion runs in reverse.
STORE_MODELS: tuple[type, ...] = (
    Customer,
    Address,
    PaymentMethod,
    Product,
    Variant,
    Order,
    OrderItem,
    Shipment,
    ShipmentEvent,
    Payment,
    AddressChange,
    FraudLabel,
    DailySales,
    SupplierItem,
    PurchaseOrder,
    PurchaseOrderLine,
)
STORE_TABLES: tuple[Table, ...] = tuple(m.__table__ for m in STORE_MODELS)  # type: ignore[attr-defined]

HISTORY_DAYS = 730  # orders and daily sales cover the 24 months before store_today
CANCEL_REASONS = ("no longer needed", "ordered by mistake")  # the tau2 policy's allowed set

# Carriers: share of shipments and transit time in business days after pickup.
CARRIERS: tuple[tuple[str, float, int], ...] = (
    ("UPS", 0.35, 3),
    ("FedEx", 0.30, 2),
    ("USPS", 0.25, 4),
    ("DHL", 0.10, 5),
)
TRANSIT_DAYS = {name: days for name, _, days in CARRIERS}
CARRIER_HUBS = {"UPS": "Louisville, KY", "FedEx": "Memphis, TN", "DHL": "Hebron, KY"}
# Warehouses by destination state (tau2 addresses are in 13 states); fallback: Columbus.
WAREHOUSES = {
    "CA": "Reno, NV",
    "WA": "Reno, NV",
    "AZ": "Reno, NV",
    "CO": "Reno, NV",
    "TX": "Dallas, TX",
    "OH": "Columbus, OH",
    "IN": "Columbus, OH",
    "IL": "Columbus, OH",
    "NY": "Allentown, PA",
    "PA": "Allentown, PA",
    "DC": "Allentown, PA",
    "NC": "Allentown, PA",
    "FL": "Allentown, PA",
}
USPS_HUBS = {
    "Reno, NV": "Sacramento, CA",
    "Dallas, TX": "Fort Worth, TX",
    "Columbus, OH": "Indianapolis, IN",
    "Allentown, PA": "Philadelphia, PA",
}

# Demand shape, shared by order dates and daily sales.
WEEKDAY_FACTOR = (0.93, 0.88, 0.90, 0.95, 1.04, 1.22, 1.16)  # Mon..Sun
MONTH_FACTOR = (0.86, 0.82, 0.90, 0.93, 0.97, 0.95, 0.93, 0.98, 0.95, 1.00, 1.28, 1.45)  # Jan..Dec
# Orders by hour of day (UTC; the customers are in US time zones, so UTC evenings are busy).
HOUR_FACTOR = (
    1.10, 1.15, 1.05, 0.80, 0.55, 0.35, 0.22, 0.15, 0.12, 0.12, 0.15, 0.25,
    0.45, 0.65, 0.80, 0.90, 0.95, 0.95, 0.95, 0.90, 0.90, 0.95, 1.05, 1.10,
)  # fmt: skip
SHOP_UNITS_PER_DAY = 900.0  # the whole shop's average daily units (orders in db.json are a sample)


@dataclass
class SeedReport:
    """What `seed_store` did: row counts per table, the store fingerprint and the time it took."""

    counts: dict[str, int]
    fingerprint: str
    seconds: float
    dialect: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def total_rows(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "counts": dict(self.counts),
            "total_rows": self.total_rows,
            "fingerprint": self.fingerprint,
            "seconds": round(self.seconds, 2),
            "dialect": self.dialect,
            "timings": {k: round(v, 2) for k, v in self.timings.items()},
        }


class StoreNotEmpty(RuntimeError):
    """`seed_store(..., reset=False)` on a store that already has rows."""


# ---- time helpers -------------------------------------------------------------------------------


def _now_naive(today: date) -> datetime:
    return datetime.combine(today, time(12, 0))


def add_business_days(day: date, n: int) -> date:
    """`day` plus `n` business days (Mon-Fri; holidays are ignored)."""
    while n > 0:
        day += timedelta(days=1)
        if day.weekday() < 5:
            n -= 1
    return day


def _black_friday(year: int) -> date:
    nov1 = date(year, 11, 1)
    first_friday = nov1 + timedelta(days=(4 - nov1.weekday()) % 7)
    return first_friday + timedelta(weeks=3)


def season(day: date, today: date) -> float:
    """Relative demand of a day: weekday x month x Black Friday weekend x holidays x growth."""
    w = WEEKDAY_FACTOR[day.weekday()] * MONTH_FACTOR[day.month - 1]
    bf = _black_friday(day.year)
    if bf <= day <= bf + timedelta(days=3):  # Black Friday to Cyber Monday
        w *= 1.7
    if day.month == 12 and day.day in (24, 25, 31):
        w *= {24: 0.75, 25: 0.45, 31: 0.8}[day.day]
    years_back = (today - day).days / 365.0
    return w * (1.0 - 0.08 * min(years_back, 3.0))  # the shop grew ~8 % a year


_SEASON_MAX = max(WEEKDAY_FACTOR) * max(MONTH_FACTOR) * 1.7 * max(HOUR_FACTOR)


def _sample_time(rng: random.Random, start: datetime, end: datetime, today: date) -> datetime:
    """A timestamp in [start, end) drawn with the weekly/yearly/daily demand shape."""
    span = (end - start).total_seconds()
    if span <= 1:
        return start.replace(microsecond=0)
    for _ in range(10_000):
        t = start + timedelta(seconds=int(rng.random() * span))
        if rng.random() * _SEASON_MAX <= season(t.date(), today) * HOUR_FACTOR[t.hour]:
            return t
    return t  # pragma: no cover (acceptance is ~20 %)


def _between(rng: random.Random, lo: datetime, hi: datetime) -> datetime:
    if hi <= lo:
        return lo
    return lo + timedelta(seconds=int(rng.random() * (hi - lo).total_seconds()))


def _at(day: date, hour: float) -> datetime:
    return datetime.combine(day, time(0)) + timedelta(seconds=int(hour * 3600))


# ---- deterministic randomness -------------------------------------------------------------------


def _rng(seed: int, *key: str) -> random.Random:
    # str seeds go through SHA-512 inside random.seed: stable across processes (no hash()).
    return random.Random("|".join([str(seed), *key]))


def _np_rng(seed: int, *key: str) -> np.random.Generator:
    digest = hashlib.sha256("|".join([str(seed), *key]).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "big"))


# ---- product descriptions -----------------------------------------------------------------------

_SIZE_ORDER = {
    s: i for i, s in enumerate(["xs", "s", "m", "l", "xl", "xxl", "portable", "small", "medium", "large"])
}
_NUM = re.compile(r"^(\d+(?:\.\d+)?)\s*([A-Za-z%]*)")


def _value_key(value: str) -> tuple[int, float, str]:
    low = value.lower()
    if low in _SIZE_ORDER:
        return (0, float(_SIZE_ORDER[low]), low)
    m = _NUM.match(value)
    if m:
        number = float(m.group(1)) * (1000.0 if m.group(2).upper().startswith("TB") else 1.0)
        return (1, number, low)
    return (2, 0.0, low)


def describe_product(name: str, variants: Sequence[dict[str, Any]]) -> str:
    """A short factual description from the product name and what its variants offer."""
    values: dict[str, set[str]] = defaultdict(set)
    keys: list[str] = []
    for v in variants:
        for k, val in v["options"].items():
            if k not in values:
                keys.append(k)
            values[k].add(str(val))
    prices = [float(v["price"]) for v in variants]
    n = len(variants)
    parts = [
        f"{name}. Comes in {n} variant{'s' if n != 1 else ''}, "
        f"priced ${min(prices):,.2f} to ${max(prices):,.2f}."
        if n > 1
        else f"{name}. One variant, priced ${prices[0]:,.2f}."
    ]
    opts = []
    for k in keys:
        ordered = sorted(values[k], key=_value_key)
        opts.append(f"{k}: {', '.join(ordered)}")
    if opts:
        parts.append("Options: " + "; ".join(opts) + ".")
    return " ".join(parts)


# ---- generation (pure: db.json + seed + today -> rows per table) ---------------------------------


def load_seed_file(settings: Settings) -> dict[str, Any]:
    with open(settings.seed_file, encoding="utf-8") as fh:
        return json.load(fh)


def _shipment_plan(
    rng: random.Random, created: datetime, carrier: str, dest_city: str, dest_state: str, delay: int
) -> tuple[datetime, date, list[tuple[datetime, str, str, str]]]:
    """Pickup time, estimated delivery and the full event timeline of one shipment.

    `delay` shifts the actual delivery in business days relative to the estimate.
    """
    origin = WAREHOUSES.get(dest_state, "Columbus, OH")
    hub = USPS_HUBS[origin] if carrier == "USPS" else CARRIER_HUBS[carrier]
    dest = f"{dest_city}, {dest_state}"
    label_at = created + timedelta(seconds=int(rng.uniform(1.0, 20.0) * 3600))
    pick_day = label_at.date()
    if pick_day.weekday() >= 5 or label_at.hour >= 15:
        pick_day = add_business_days(pick_day, 1)
    pickup = _at(pick_day, rng.uniform(16.0, 19.0))
    transit = TRANSIT_DAYS[carrier]
    estimate = add_business_days(pick_day, transit)
    actual = add_business_days(pick_day, max(1, transit + delay))
    departed = pickup + timedelta(seconds=int(rng.uniform(2.0, 5.0) * 3600))
    arrived_dest = _at(actual, rng.uniform(-2.0, 5.0))
    out_for_delivery = _at(actual, rng.uniform(7.0, 9.0))
    delivered = _at(actual, rng.uniform(10.0, 19.0))
    events = [
        (label_at, "label_created", origin, f"Shipping label created, {carrier} awaiting item"),
        (pickup, "in_transit", origin, f"Picked up by {carrier}"),
        (departed, "in_transit", origin, "Departed facility"),
    ]
    span = (arrived_dest - departed).total_seconds()
    if span > 12 * 3600:
        at_hub = departed + timedelta(seconds=int(span * rng.uniform(0.25, 0.45)))
        left_hub = at_hub + timedelta(seconds=int(rng.uniform(2.0, 8.0) * 3600))
        events.append((at_hub, "in_transit", hub, "Arrived at carrier facility"))
        events.append((left_hub, "in_transit", hub, "Departed carrier facility"))
    events += [
        (arrived_dest, "in_transit", dest, "Arrived at destination facility"),
        (out_for_delivery, "out_for_delivery", dest, "Out for delivery"),
        (delivered, "delivered", dest, "Delivered"),
    ]
    # Strictly increasing timestamps, at least ten minutes apart.
    fixed: list[tuple[datetime, str, str, str]] = []
    for at, status, location, description in events:
        if fixed and at <= fixed[-1][0] + timedelta(minutes=10):
            at = fixed[-1][0] + timedelta(minutes=10 + rng.randint(0, 50))
        fixed.append((at, status, location, description))
    return pickup, estimate, fixed


def _pick_carrier(rng: random.Random) -> str:
    return rng.choices([c[0] for c in CARRIERS], weights=[c[1] for c in CARRIERS])[0]


def _order_created(rng: random.Random, status: str, start: datetime, now: datetime, today: date) -> datetime:
    if status == "pending":  # the most recent: placed in the last few days
        return _sample_time(rng, now - timedelta(days=3), now - timedelta(minutes=5), today)
    if status == "processed":  # recent: shipped within days, not delivered yet
        return _sample_time(rng, now - timedelta(days=10), now - timedelta(days=1), today)
    if status == "delivered":  # older
        return _sample_time(rng, start, now - timedelta(days=14), today)
    return _sample_time(rng, start, now - timedelta(hours=1), today)  # cancelled: any time


def generate_store(data: dict[str, Any], seed: int, today: date) -> dict[str, list[dict[str, Any]]]:
    """Rows for every store table (table name -> list of column dicts), naive UTC datetimes."""
    now = _now_naive(today)
    start = datetime.combine(today - timedelta(days=HISTORY_DAYS), time(0))
    rows: dict[str, list[dict[str, Any]]] = {t.name: [] for t in STORE_TABLES}

    users = {uid: data["users"][uid] for uid in sorted(data["users"])}
    products = {pid: data["products"][pid] for pid in sorted(data["products"])}
    orders = {oid: data["orders"][oid] for oid in sorted(data["orders"])}

    # -- orders, items, shipments, events, payments ------------------------------------------------
    first_order: dict[str, datetime] = {}
    first_use: dict[str, datetime] = {}
    sample_units: dict[str, Counter[int]] = defaultdict(Counter)  # variant -> day index -> units
    item_id = shipment_id = event_id = payment_id = 0
    for oid, o in orders.items():
        rng = _rng(seed, "order", oid)
        status = o["status"]
        addr = o["address"]
        created = _order_created(rng, status, start, now, today)
        plans: list[tuple[str, list[str], str, datetime, date, list]] = []
        if status in ("processed", "delivered"):
            for _ in range(500):  # resample the date until the shipment story fits before `now`
                ok = True
                plans = []
                for f in o["fulfillments"]:
                    for tracking in f["tracking_id"]:
                        srng = _rng(seed, "shipment", oid, tracking)
                        carrier = _pick_carrier(srng)
                        delay = 0
                        if status == "delivered":
                            delay = srng.choices([-1, 0, 1, 2, 3], weights=[10, 70, 12, 6, 2])[0]
                        pickup, estimate, events = _shipment_plan(
                            srng, created, carrier, addr["city"], addr["state"], delay
                        )
                        plans.append((tracking, f["item_ids"], carrier, pickup, estimate, events))
                        if status == "delivered":
                            ok &= events[-1][0] < now - timedelta(hours=1)
                        else:  # processed: label created, not yet out for delivery
                            ok &= events[0][0] < now and events[-2][0] > now
                if ok:
                    break
                created = _order_created(rng, status, start, now, today)
            else:  # pragma: no cover
                raise RuntimeError(f"could not place order {oid} in time")
        updated = created
        cancelled_at = cancel_reason = None
        if status == "cancelled":
            cancelled_at = min(
                _between(rng, created + timedelta(minutes=5), created + timedelta(hours=36)), now
            )
            cancel_reason = rng.choice(CANCEL_REASONS)
            updated = cancelled_at
        rows["orders"].append(
            {
                "id": oid,
                "customer_id": o["user_id"],
                "status": status,
                "created_at": created,
                "updated_at": updated,  # finalised below from the shipments
                "ship_address1": addr["address1"],
                "ship_address2": addr.get("address2", "") or "",
                "ship_city": addr["city"],
                "ship_state": addr["state"],
                "ship_zip": addr["zip"],
                "ship_country": addr.get("country", "USA") or "USA",
                "cancel_reason": cancel_reason,
                "cancelled_at": cancelled_at,
            }
        )
        order_row = rows["orders"][-1]
        uid = o["user_id"]
        first_order[uid] = min(first_order.get(uid, created), created)
        for it in o["items"]:
            item_id += 1
            rows["orderitem"].append(
                {
                    "id": item_id,
                    "order_id": oid,
                    "variant_id": it["item_id"],
                    "product_id": it["product_id"],
                    "name": it["name"],
                    "price": round(float(it["price"]), 2),
                    "options": dict(it["options"]),
                }
            )
            day_idx = (created.date() - start.date()).days
            if status != "cancelled" and 0 <= day_idx < HISTORY_DAYS:
                sample_units[it["item_id"]][day_idx] += 1

        if status == "cancelled":
            for f in o["fulfillments"]:
                for tracking in f["tracking_id"]:
                    srng = _rng(seed, "shipment", oid, tracking)
                    carrier = _pick_carrier(srng)
                    origin = WAREHOUSES.get(addr["state"], "Columbus, OH")
                    label_at = _between(srng, created + timedelta(minutes=2), cancelled_at)  # type: ignore[arg-type]
                    shipment_id += 1
                    rows["shipment"].append(
                        {
                            "id": shipment_id,
                            "order_id": oid,
                            "carrier": carrier,
                            "tracking_id": tracking,
                            "status": "cancelled",
                            "shipped_at": None,
                            "estimated_delivery": None,
                            "delivered_at": None,
                            "variant_ids": list(f["item_ids"]),
                        }
                    )
                    for at, st, desc in (
                        (label_at, "label_created", f"Shipping label created, {carrier} awaiting item"),
                        (cancelled_at, "cancelled", "Order cancelled before pickup; label voided"),
                    ):
                        event_id += 1
                        rows["shipmentevent"].append(
                            {
                                "id": event_id,
                                "shipment_id": shipment_id,
                                "at": at,
                                "status": st,
                                "location": origin,
                                "description": desc,
                            }
                        )
        for tracking, variant_ids, carrier, pickup, estimate, events in plans:
            shipment_id += 1
            if status == "processed":
                events = [e for e in events if e[0] <= now]
            last = events[-1]
            rows["shipment"].append(
                {
                    "id": shipment_id,
                    "order_id": oid,
                    "carrier": carrier,
                    "tracking_id": tracking,
                    "status": last[1],
                    "shipped_at": pickup if pickup <= now else None,
                    "estimated_delivery": estimate,
                    "delivered_at": last[0] if last[1] == "delivered" else None,
                    "variant_ids": list(variant_ids),
                }
            )
            for at, st, location, desc in events:
                event_id += 1
                rows["shipmentevent"].append(
                    {
                        "id": event_id,
                        "shipment_id": shipment_id,
                        "at": at,
                        "status": st,
                        "location": location,
                        "description": desc,
                    }
                )
            # The order became "processed" when its label was created, "delivered" on delivery.
            order_row["updated_at"] = max(
                order_row["updated_at"], events[-1][0] if status == "delivered" else events[0][0]
            )

        for k, p in enumerate(o["payment_history"]):
            payment_id += 1
            if p["transaction_type"] == "refund" and cancelled_at is not None:
                at = cancelled_at + timedelta(seconds=30 + k)
            else:
                at = created + timedelta(seconds=rng.randint(5, 90) + k)
            rows["payment"].append(
                {
                    "id": payment_id,
                    "order_id": oid,
                    "kind": p["transaction_type"],
                    "amount": round(float(p["amount"]), 2),
                    "payment_method_id": p["payment_method_id"],
                    "created_at": at,
                }
            )
            pm = p["payment_method_id"]
            first_use[pm] = min(first_use.get(pm, at), at)

    # -- customers, addresses, payment methods --------------------------------------------------------
    for n, (uid, u) in enumerate(users.items(), start=1):
        rng = _rng(seed, "customer", uid)
        if uid in first_order:
            back = timedelta(seconds=int(rng.uniform(2 * 3600, 540 * 86400) * rng.random()))
            created = first_order[uid] - timedelta(hours=1) - back
        else:
            created = _between(rng, start - timedelta(days=365), now - timedelta(days=1))
        rows["customer"].append(
            {
                "id": uid,
                "first_name": u["name"]["first_name"],
                "last_name": u["name"]["last_name"],
                "email": u["email"],
                "created_at": created,
            }
        )
        a = u["address"]
        rows["address"].append(
            {
                "id": n,
                "customer_id": uid,
                "is_default": True,
                "address1": a["address1"],
                "address2": a.get("address2", "") or "",
                "city": a["city"],
                "state": a["state"],
                "zip": a["zip"],
                "country": a.get("country", "USA") or "USA",
                "created_at": created,
            }
        )
        for pm_id in sorted(u["payment_methods"]):
            pm = u["payment_methods"][pm_id]
            prng = _rng(seed, "payment_method", pm_id)
            limit = first_use[pm_id] - timedelta(minutes=1) if pm_id in first_use else now
            added = created + timedelta(seconds=int((limit - created).total_seconds() * prng.random() ** 2))
            kind = pm["source"]
            rows["paymentmethod"].append(
                {
                    "id": pm_id,
                    "customer_id": uid,
                    "kind": kind,
                    "brand": pm.get("brand") if kind == "credit_card" else None,
                    "last_four": pm.get("last_four") if kind == "credit_card" else None,
                    "balance": round(float(pm["balance"]), 2) if kind == "gift_card" else None,
                    "added_at": added,
                }
            )

    # -- catalogue, stock and daily sales ---------------------------------------------------------------
    product_items = Counter(it["product_id"] for o in orders.values() for it in o["items"])
    weights = {
        pid: (product_items[pid] + 3.0) * math.exp(_rng(seed, "product", pid).gauss(0.0, 0.35))
        for pid in products
    }
    total_weight = sum(weights.values())
    days = [start.date() + timedelta(days=i) for i in range(HISTORY_DAYS)]
    shape = np.array([season(d, today) for d in days])
    shape /= shape.mean()
    for pid, p in products.items():
        variants = [p["variants"][vid] for vid in sorted(p["variants"])]
        rows["product"].append(
            {"id": pid, "name": p["name"], "description": describe_product(p["name"], variants)}
        )
        shares = np.array([_rng(seed, "share", v["item_id"]).gammavariate(0.8, 1.0) + 0.05 for v in variants])
        shares /= shares.sum()
        product_rate = SHOP_UNITS_PER_DAY * weights[pid] / total_weight
        for v, share in zip(variants, shares, strict=True):
            vid = v["item_id"]
            vrng = _rng(seed, "variant", vid)
            rate = product_rate * float(share)
            if vrng.random() < 0.15:  # intermittent low sellers
                rate = min(rate, vrng.uniform(0.03, 0.25))
            gen = _np_rng(seed, "sales", vid)
            noise = gen.gamma(4.0, 0.25, size=HISTORY_DAYS)
            units = gen.poisson(rate * shape * noise)
            samples = sample_units.get(vid, Counter())
            if vrng.random() < 0.10:  # launched during the window: no sales before
                launch = vrng.randint(30, HISTORY_DAYS - 60)
                if samples:
                    launch = min(launch, min(samples))
                units[:launch] = 0
            available = bool(v["available"])
            if not available:  # sold out: nothing sold since the stock ran out
                stockout = HISTORY_DAYS - vrng.randint(3, 90)
                if samples:
                    stockout = max(stockout, max(samples) + 1)
                units[stockout:] = 0
            for idx, count in samples.items():  # the db.json orders are part of the sales
                units[idx] = max(int(units[idx]), count)
            if available:
                stock = (
                    vrng.randint(1, 3)
                    if vrng.random() < 0.08
                    else max(1, round(rate * vrng.uniform(7.0, 45.0)) + vrng.randint(0, 5))
                )
            else:
                stock = 0
            rows["variant"].append(
                {
                    "id": vid,
                    "product_id": pid,
                    "options": dict(v["options"]),
                    "price": round(float(v["price"]), 2),
                    "stock_on_hand": stock,
                    "available": available,
                }
            )
            rows["dailysales"].extend(
                {"variant_id": vid, "day": d, "units": int(u)}
                for d, u in zip(days, units.tolist(), strict=True)
            )
    return rows


# ---- writing --------------------------------------------------------------------------------------


def _aware_columns(table: Table) -> list[str]:
    return [c.name for c in table.columns if getattr(c.type, "timezone", False)]


def _to_db(rows: list[dict[str, Any]], table: Table) -> list[dict[str, Any]]:
    cols = _aware_columns(table)
    if not cols:
        return rows
    out = []
    for r in rows:
        r = dict(r)
        for c in cols:
            if r.get(c) is not None:
                r[c] = r[c].replace(tzinfo=UTC)
        out.append(r)
    return out


def _insert(conn: Connection, table: Table, rows: list[dict[str, Any]], batch: int = 20_000) -> None:
    if not rows:
        return
    if table.name == "dailysales":
        _insert_daily_sales(conn, rows)
        return
    rows = _to_db(rows, table)
    for i in range(0, len(rows), batch):
        conn.execute(table.insert(), rows[i : i + batch])


def _insert_daily_sales(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """The 430k-row table: COPY on PostgreSQL, a plain DB-API executemany on SQLite."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        raw = conn.connection.driver_connection
        with raw.cursor() as cur, cur.copy("COPY dailysales (variant_id, day, units) FROM STDIN") as cp:
            for r in rows:
                cp.write_row((r["variant_id"], r["day"], r["units"]))
        return
    if dialect == "sqlite":
        conn.exec_driver_sql(
            "INSERT INTO dailysales (variant_id, day, units) VALUES (?, ?, ?)",
            [(r["variant_id"], r["day"].isoformat(), r["units"]) for r in rows],
        )
        return
    table: Table = DailySales.__table__  # type: ignore[attr-defined]
    for i in range(0, len(rows), 20_000):
        conn.execute(table.insert(), rows[i : i + 20_000])


def _clear_store(conn: Connection) -> dict[str, str]:
    """Delete every store row; returns conversation id -> customer id to re-attach afterwards."""
    conv: Table = Conversation.__table__  # type: ignore[attr-defined]
    links = {
        cid: cust
        for cid, cust in conn.execute(
            select(conv.c.id, conv.c.customer_id).where(conv.c.customer_id.is_not(None))
        )
    }
    if links:
        conn.execute(update(conv).where(conv.c.customer_id.is_not(None)).values(customer_id=None))
    for table in reversed(STORE_TABLES):
        if table.name == "dailysales" and conn.dialect.name == "postgresql":
            conn.exec_driver_sql("TRUNCATE TABLE dailysales")
        else:
            conn.execute(delete(table))
    return links


def _reset_sequences(conn: Connection) -> None:
    """Explicit ids were inserted: move PostgreSQL's serial sequences past them."""
    if conn.dialect.name != "postgresql":
        return
    for table in STORE_TABLES:
        pk = list(table.primary_key.columns)
        if len(pk) == 1 and isinstance(pk[0].type, Integer):
            conn.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence('{table.name}', '{pk[0].name}'), "
                    f"COALESCE(MAX({pk[0].name}), 0) + 1, false) FROM {table.name}"
                )
            )


def _store_is_empty(conn: Connection) -> bool:
    return all(conn.execute(select(func.count()).select_from(t)).scalar_one() == 0 for t in STORE_TABLES)


def _check_schema(conn: Connection) -> None:
    names = set(inspect(conn).get_table_names())
    missing = [t.name for t in STORE_TABLES if t.name not in names]
    if missing:
        raise RuntimeError(f"missing tables {missing}: run the migrations first (shopdesk.db.migrate)")


def _seed_on(conn: Connection, settings: Settings, reset: bool) -> SeedReport:
    t0 = _time.perf_counter()
    timings: dict[str, float] = {}
    _check_schema(conn)
    data = load_seed_file(settings)
    rows = generate_store(data, settings.seed, settings.store_day())
    from commerce.fraud_history import add_fraud_history  # late: it builds on this module's helpers

    add_fraud_history(rows, settings.seed, settings.store_day())  # the labelled fraud history
    add_purchasing(rows, settings.seed, settings.store_day())  # suppliers, lead times, purchase orders
    timings["generate"] = _time.perf_counter() - t0
    t1 = _time.perf_counter()
    links: dict[str, str] = {}
    if reset:
        links = _clear_store(conn)
    elif not _store_is_empty(conn):
        raise StoreNotEmpty("the store already has rows: seed with reset=True to replace them")
    timings["clear"] = _time.perf_counter() - t1
    t1 = _time.perf_counter()
    for table in STORE_TABLES:
        _insert(conn, table, rows[table.name])
    _reset_sequences(conn)
    if links:
        conv: Table = Conversation.__table__  # type: ignore[attr-defined]
        customers = {r["id"] for r in rows["customer"]}
        for cid, cust in sorted(links.items()):
            if cust in customers:
                conn.execute(update(conv).where(conv.c.id == cid).values(customer_id=cust))
    timings["insert"] = _time.perf_counter() - t1
    t1 = _time.perf_counter()
    fingerprint = _fingerprint_conn(conn)
    timings["fingerprint"] = _time.perf_counter() - t1
    return SeedReport(
        counts={t.name: len(rows[t.name]) for t in STORE_TABLES},
        fingerprint=fingerprint,
        seconds=_time.perf_counter() - t0,
        dialect=conn.dialect.name,
        timings=timings,
    )


def seed_store(
    session_or_engine: Session | Engine | Connection, settings: Settings | None = None, *, reset: bool = True
) -> SeedReport:
    """Load db.json and the generated history into the store tables (which must exist: migrate first).

    - An Engine: runs in its own transaction and commits.
    - A Session (or Connection): runs in the caller's transaction, which the caller commits.
    `reset=True` deletes every store row first (conversations keep their customer link), so seeding
    twice gives the same store; `reset=False` raises `StoreNotEmpty` unless the store is empty.
    """
    settings = settings or get_settings()
    if isinstance(session_or_engine, Session):
        report = _seed_on(session_or_engine.connection(), settings, reset)
        session_or_engine.expire_all()
        return report
    if isinstance(session_or_engine, Connection):
        return _seed_on(session_or_engine, settings, reset)
    with session_or_engine.begin() as conn:
        return _seed_on(conn, settings, reset)


# ---- fingerprint ----------------------------------------------------------------------------------


def _canon(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def _column_canon(column: Any) -> Any:
    """A canonicalising function per column type (None when values are already canonical)."""
    t = column.type
    if isinstance(t, (Integer, String, Boolean)) and not isinstance(t, Enum):
        return None
    return _canon


def _fingerprint_conn(conn: Connection) -> str:
    h = hashlib.sha256()
    for table in STORE_TABLES:
        cols = list(table.columns)
        convs = [_column_canon(c) for c in cols]
        pk_idx = [cols.index(c) for c in table.primary_key.columns]
        if conn.dialect.name == "sqlite":  # SQLite keeps dates as ISO text: skip parsing 430k of them
            convs = [None if isinstance(c.type, Date) else f for c, f in zip(cols, convs, strict=True)]
            result = conn.execute(
                select(
                    *[type_coerce(c, String).label(c.name) if isinstance(c.type, Date) else c for c in cols]
                )
            )
        else:
            result = conn.execute(select(*cols))
        if any(convs):
            canon = [
                tuple(v if f is None or v is None else f(v) for f, v in zip(convs, row, strict=True))
                for row in result
            ]
        else:
            canon = [tuple(row) for row in result]
        # Sort in Python: PostgreSQL's collation orders text differently from SQLite.
        canon.sort(key=lambda r: tuple(r[i] for i in pk_idx))
        h.update(f"{table.name}:{len(canon)}:{','.join(c.name for c in cols)}\n".encode())
        h.update(json.dumps(canon, separators=(",", ":")).encode())
    return h.hexdigest()


def store_fingerprint(session: Session | Connection | Engine) -> str:
    """SHA-256 over a canonical dump of every store table (rows by primary key, floats to cents,
    datetimes as naive-UTC ISO, JSON with sorted keys): equal stores give equal fingerprints."""
    if isinstance(session, Session):
        return _fingerprint_conn(session.connection())
    if isinstance(session, Connection):
        return _fingerprint_conn(session)
    with session.connect() as conn:
        return _fingerprint_conn(conn)
