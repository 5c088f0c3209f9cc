"""The demo store's purchasing data: a supplier and lead time per variant, purchase orders (received
ones in the past, open ones due after `store_today`), generated deterministically from the seed.

Called once from `commerce.seed` with the rows it generated (`add_purchasing(rows, seed, today)`).
It gives the restock answers their three cases on real catalogue rows: sold-out variants with an open
purchase order (a due date), with only a supplier lead time (a range from ordering today), and with no
estimate at all (discontinued by the supplier, or no supplier on record). In-stock variants that will
run out within their lead time sometimes have an order in flight too, which the reorder list counts.

Same rules as the rest of the seed: randomness from `random.Random` keyed by the seed and the entity
id, naive UTC datetimes (made aware on insert), dates relative to `today`.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from datetime import date, datetime, time, timedelta
from typing import Any

# Supplier, shortest lead time in days, spread of the lead time (max = min + spread).
SUPPLIERS: tuple[tuple[str, int, int], ...] = (
    ("Northwind Supply Co.", 7, 7),
    ("Harbor Goods Ltd.", 10, 6),
    ("Summit Wholesale", 5, 4),
    ("Pacific Trading Co.", 21, 14),  # ships from overseas
    ("Evergreen Distributors", 4, 3),
    ("Atlas Manufacturing", 14, 10),
)
HISTORY_DAYS = 180  # received purchase orders go back this far


def _rng(seed: int, *key: str) -> random.Random:
    return random.Random("|".join([str(seed), "purchasing", *key]))


def _at(day: date, hour: float) -> datetime:
    return datetime.combine(day, time(0)) + timedelta(seconds=int(hour * 3600))


def _daily_rates(sales: list[dict[str, Any]], sold_out: set[str]) -> dict[str, float]:
    """Mean daily units over each variant's last 90 selling days (a sold-out one's zero tail dropped)."""
    series: dict[str, list[int]] = defaultdict(list)
    for r in sales:
        series[r["variant_id"]].append(int(r["units"]))
    rates = {}
    for vid, units in series.items():
        if vid in sold_out:
            while units and units[-1] == 0:
                units = units[:-1]
        tail = units[-90:]
        rates[vid] = sum(tail) / len(tail) if tail else 0.0
    return rates


def _pack(price: float) -> int:
    """Minimum order quantity: cheap things come in cartons."""
    return 12 if price < 40 else 6 if price < 150 else 2 if price < 500 else 1


def add_purchasing(rows: dict[str, list[dict[str, Any]]], seed: int, today: date) -> dict[str, int]:
    """Fill rows["supplieritem"], rows["purchaseorder"], rows["purchaseorderline"]; returns the counts."""
    variants = sorted(rows["variant"], key=lambda v: v["id"])
    by_product: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for v in variants:
        by_product[v["product_id"]].append(v)
    sold_out = {v["id"] for v in variants if not v["available"]}
    rates = _daily_rates(rows["dailysales"], sold_out)
    items: list[dict[str, Any]] = []
    orders: list[dict[str, Any]] = []
    lines: list[dict[str, Any]] = []

    def add_order(
        supplier: str,
        ordered: datetime,
        expected: datetime,
        received: datetime | None,
        wanted: list[tuple[str, int]],
    ) -> None:
        po_id = f"PO-{100001 + len(orders)}"
        orders.append(
            {
                "id": po_id,
                "supplier": supplier,
                "status": "received" if received else "open",
                "ordered_at": ordered,
                "expected_arrival": expected,
                "received_at": received,
            }
        )
        for vid, qty in wanted:
            lines.append(
                {"id": len(lines) + 1, "purchase_order_id": po_id, "variant_id": vid, "quantity": qty}
            )

    for pid in sorted(by_product):
        prng = _rng(seed, "product", pid)
        supplier, base, spread = prng.choice(SUPPLIERS)
        terms: dict[str, tuple[int, int, int]] = {}
        open_wanted: list[tuple[str, int]] = []
        for v in by_product[pid]:
            vid = v["id"]
            vrng = _rng(seed, "variant", vid)
            lo = max(2, base + vrng.randint(-1, 3))
            hi = lo + spread + vrng.randint(0, 3)
            moq = _pack(float(v["price"]))
            qty = max(moq, math.ceil(rates.get(vid, 0.0) * (hi + 30) / moq) * moq)
            r = vrng.random()
            if not v["available"] and 0.15 <= r < 0.22:  # no supplier on record: no estimate at all
                continue
            terms[vid] = (lo, hi, qty)
            if not v["available"]:
                discontinued = r < 0.15
                if 0.22 <= r < 0.62:
                    open_wanted.append((vid, qty))
            else:
                discontinued = r < 0.03  # still selling what is left, never reordered
                short = v["stock_on_hand"] < rates.get(vid, 0.0) * hi
                if short and not discontinued and r > 0.5:
                    open_wanted.append((vid, qty))
            items.append(
                {
                    "variant_id": vid,
                    "supplier": supplier,
                    "lead_time_min_days": lo,
                    "lead_time_max_days": hi,
                    "min_order_qty": moq,
                    "discontinued": discontinued,
                    "updated_at": _at(today - timedelta(days=vrng.randint(3, 200)), vrng.uniform(8.0, 18.0)),
                }
            )
        # Received orders of the past half year: a few variants each, delivered within their lead time.
        for k in range(prng.randint(1, 3) if terms else 0):
            hrng = _rng(seed, "history", pid, str(k))
            chosen = sorted(hrng.sample(sorted(terms), min(len(terms), hrng.randint(1, 4))))
            lo = min(terms[vid][0] for vid in chosen)
            hi = max(terms[vid][1] for vid in chosen)
            ordered = _at(
                today - timedelta(days=hrng.randint(hi + 10, HISTORY_DAYS)), hrng.uniform(9.0, 17.0)
            )
            expected = _at(ordered.date() + timedelta(days=hi), 14.0)
            received = _at(ordered.date() + timedelta(days=hrng.randint(lo, hi + 2)), hrng.uniform(8.0, 17.0))
            add_order(supplier, ordered, expected, received, [(vid, terms[vid][2]) for vid in chosen])
        if open_wanted:  # one open order per product, due within the longest lead time of its lines
            orng = _rng(seed, "open", pid)
            lo = min(terms[vid][0] for vid, _ in open_wanted)
            hi = max(terms[vid][1] for vid, _ in open_wanted)
            due = today + timedelta(days=orng.randint(2, hi))
            ordered_day = min(due - timedelta(days=orng.randint(lo, hi)), today - timedelta(days=1))
            add_order(supplier, _at(ordered_day, orng.uniform(9.0, 17.0)), _at(due, 14.0), None, open_wanted)
    rows["supplieritem"] = items
    rows["purchaseorder"] = orders
    rows["purchaseorderline"] = lines
    return {"supplieritem": len(items), "purchaseorder": len(orders), "purchaseorderline": len(lines)}
