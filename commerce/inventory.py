"""Inventory answers from the demand forecast: days of cover, reorder point and order quantity per
variant, restock estimates for sold-out ones, and finding a variant from a shopper's words.

Used by the bot's `stock_outlook` tool and by `GET /api/inventory/reorder` (one implementation, two
doors). The maths, per variant (L = lead time in days, the mean of the supplier's range):

- demand over the lead time  D_L = the forecast summed over the next L days;
- safety stock  SS = z * sqrt(L * s_d^2 + d^2 * s_L^2), z for the service level (settings),
  s_d = the chosen model's backtest RMSE per day (its real forecast error), d = mean daily forecast,
  s_L = (max - min) / 4 (the supplier's range read as +-2 standard deviations);
- reorder point  ROP = D_L + SS; reorder now when on hand + on order <= ROP;
- order quantity  Q = ROP + demand over the review period - (on hand + on order), rounded up to the
  supplier's minimum order quantity (an order-up-to policy: no ordering costs are known, so no EOQ).

Restock dates for a sold-out variant: an open purchase order gives [its expected arrival, arrival +
receiving days]; else the supplier's lead time from ordering today, [today + min, today + max +
receiving days]; a discontinued variant or one with no supplier on record has no estimate, said so.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from statistics import NormalDist
from typing import Literal

from pydantic import BaseModel
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from commerce.demand import DemandForecast, UnknownVariant, forecast_all, forecast_variant
from commerce.models import Product, PurchaseOrder, PurchaseOrderLine, SupplierItem, Variant
from shopdesk.settings import Settings

__all__ = [
    "ReorderLine",
    "StockOutlook",
    "UnknownVariant",
    "days_of_cover",
    "find_variants",
    "order_quantity",
    "plan_variant",
    "reorder_list",
    "reorder_point",
    "safety_stock",
    "stock_outlook",
]


# ---- the maths (pure) ---------------------------------------------------------------------------


def safety_stock(
    service_level: float, lead_days: float, sigma_daily: float, mean_daily: float, lead_sd: float
) -> float:
    """Units held against demand and lead-time uncertainty for the given chance of not running out."""
    z = NormalDist().inv_cdf(service_level)
    return max(0.0, z * math.sqrt(lead_days * sigma_daily**2 + (mean_daily * lead_sd) ** 2))


def reorder_point(demand_over_lead: float, safety: float) -> float:
    return demand_over_lead + safety


def order_quantity(rop: float, review_demand: float, position: float, min_order_qty: int = 1) -> int:
    """Order-up-to ROP + review-period demand, in whole multiples of the minimum order quantity."""
    gap = rop + review_demand - position
    if gap <= 0:
        return 0
    moq = max(1, min_order_qty)
    return int(math.ceil(gap / moq) * moq)


def days_of_cover(stock: float, daily: list[float]) -> float | None:
    """Days until `stock` is used up at the daily forecast (its mean rate past the horizon);
    None when no demand is forecast (it does not run out)."""
    if stock <= 0:
        return 0.0
    left = float(stock)
    for i, d in enumerate(daily):
        if d > 0 and left <= d:
            return round(i + left / d, 1)
        left -= max(d, 0.0)
    rate = sum(daily) / len(daily) if daily else 0.0
    if rate <= 0:
        return None
    return round(len(daily) + left / rate, 1)


# ---- store data ---------------------------------------------------------------------------------


def _engine(db: Session) -> Engine:
    bind = db.get_bind()
    return bind if isinstance(bind, Engine) else bind.engine


def _day(dt: datetime) -> date:
    return (dt.astimezone(UTC) if dt.tzinfo else dt).date()


def _open_orders(
    db: Session, variant_ids: list[str] | None = None
) -> dict[str, list[tuple[PurchaseOrder, int]]]:
    """Open purchase orders per variant, soonest first, with the quantity of that variant on each."""
    stmt = (
        select(PurchaseOrderLine.variant_id, PurchaseOrderLine.quantity, PurchaseOrder)
        .join(PurchaseOrder, col(PurchaseOrder.id) == col(PurchaseOrderLine.purchase_order_id))
        .where(PurchaseOrder.status == "open")
        .order_by(col(PurchaseOrder.expected_arrival), col(PurchaseOrder.id))
    )
    if variant_ids is not None:
        stmt = stmt.where(col(PurchaseOrderLine.variant_id).in_(variant_ids))
    out: dict[str, list[tuple[PurchaseOrder, int]]] = defaultdict(list)
    for vid, qty, po in db.exec(stmt):
        out[vid].append((po, qty))
    return out


def _options_text(options: dict[str, str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in options.items())


def _rate(x: float) -> str:
    return f"{x:.0f}" if x >= 10 else f"{x:.1f}" if x >= 1 else f"{x:.2f}"


def _units(n: int) -> str:
    return f"{n} unit{'s' if n != 1 else ''}"


# ---- stock outlook (the bot's tool) ------------------------------------------------------------------


class StockOutlook(BaseModel):
    """What a shopper may be told about one variant's stock, every field from the store's data."""

    variant_id: str
    product_name: str
    options: dict[str, str]
    in_stock: bool
    stock_on_hand: int
    days_of_cover: float | None  # at forecast demand; 0 when out of stock; None: no demand forecast
    restock_earliest: date | None
    restock_latest: date | None
    basis: Literal["purchase_order", "lead_time", "none"]
    explanation: str
    as_of: date


def stock_outlook(db: Session, settings: Settings, variant_id: str) -> StockOutlook:
    """Stock, days of cover and (when sold out) the restock window of one variant; UnknownVariant if
    there is no such variant."""
    variant = db.get(Variant, variant_id)
    if variant is None:
        raise UnknownVariant(variant_id)
    product = db.get(Product, variant.product_id)
    name = product.name if product else variant.product_id
    label = f"{name} ({_options_text(variant.options)})" if variant.options else name
    today = settings.store_day()
    in_stock = bool(variant.available and variant.stock_on_hand > 0)
    supplier = db.get(SupplierItem, variant_id)
    orders = _open_orders(db, [variant_id]).get(variant_id, [])
    base = dict(
        variant_id=variant_id,
        product_name=name,
        options=dict(variant.options),
        in_stock=in_stock,
        stock_on_hand=variant.stock_on_hand,
        as_of=today,
    )
    if in_stock:
        cover, rate = None, None
        try:
            fc = forecast_variant(_engine(db), settings, variant_id)
            cover, rate = days_of_cover(variant.stock_on_hand, [p.mean for p in fc.points]), fc.daily_mean
        except LookupError:
            pass
        text = f"{label} is in stock: {_units(variant.stock_on_hand)} on hand."
        if cover is not None and rate is not None:
            lasts = (
                "less than a day" if cover < 1 else f"about {cover:.0f} day{'s' if round(cover) != 1 else ''}"
            )
            text += f" At the forecast demand of about {_rate(rate)} a day that lasts {lasts}."
        elif rate is not None:
            text += " No sales are forecast, so it is not expected to run out."
        if orders:
            po, qty = orders[0]
            text += f" Another {_units(qty)} are on order, due {_day(po.expected_arrival).isoformat()}."
        return StockOutlook(
            **base,
            days_of_cover=cover,
            restock_earliest=None,
            restock_latest=None,
            basis="none",
            explanation=text,
        )
    receiving = settings.restock_receiving_days
    if orders:
        po, qty = orders[0]
        due = _day(po.expected_arrival)
        if due > today:
            earliest, latest = due, due + timedelta(days=receiving)
            text = (
                f"{label} is out of stock. A purchase order for {_units(qty)} ({po.id}, {po.supplier}) is due on "
                f"{due.isoformat()}; allowing {receiving} days to receive it, it should be back between "
                f"{earliest.isoformat()} and {latest.isoformat()}."
            )
        else:  # overdue: the supplier is late, so only the receiving time is known
            earliest, latest = today + timedelta(days=1), today + timedelta(days=1 + receiving)
            text = (
                f"{label} is out of stock. A purchase order for {_units(qty)} ({po.id}, {po.supplier}) was due on "
                f"{due.isoformat()} and is late; if it arrives now it would be back between "
                f"{earliest.isoformat()} and {latest.isoformat()}."
            )
        return StockOutlook(
            **base,
            days_of_cover=0.0,
            restock_earliest=earliest,
            restock_latest=latest,
            basis="purchase_order",
            explanation=text,
        )
    if supplier is not None and not supplier.discontinued:
        lo, hi = supplier.lead_time_min_days, supplier.lead_time_max_days
        earliest, latest = today + timedelta(days=lo), today + timedelta(days=hi + receiving)
        text = (
            f"{label} is out of stock and no purchase order is open for it yet. {supplier.supplier} delivers "
            f"{lo}-{hi} days after an order, so if it is ordered today it would be back between "
            f"{earliest.isoformat()} and {latest.isoformat()}."
        )
        return StockOutlook(
            **base,
            days_of_cover=0.0,
            restock_earliest=earliest,
            restock_latest=latest,
            basis="lead_time",
            explanation=text,
        )
    if supplier is not None:
        text = f"{label} is out of stock and has been discontinued by its supplier: no restock is expected."
    else:
        text = (
            f"{label} is out of stock, and there is no purchase order or supplier on record for it, "
            "so there is no restock date yet."
        )
    return StockOutlook(
        **base, days_of_cover=0.0, restock_earliest=None, restock_latest=None, basis="none", explanation=text
    )


# ---- reorder list (purchasing) ----------------------------------------------------------------------------


class ReorderLine(BaseModel):
    """One variant to reorder now, with the numbers behind it."""

    variant_id: str
    product_name: str
    options: dict[str, str]
    supplier: str | None
    stock_on_hand: int
    on_order: int
    daily_demand: float  # mean of the forecast over the horizon
    days_of_cover: float | None
    stockout_date: date | None
    lead_time_days: tuple[int, int]
    safety_stock: float
    reorder_point: float
    order_qty: int
    urgency_days: float  # days of cover minus the longest lead time: below 0 runs out before an order lands
    model: str
    note: str


@dataclass(frozen=True)
class _Plan:
    rop: float
    safety: float
    qty: int
    cover: float | None


def plan_variant(
    fc: DemandForecast,
    stock: int,
    on_order: int,
    lead: tuple[int, int],
    min_order_qty: int,
    settings: Settings,
) -> _Plan:
    """Reorder point, safety stock, order quantity and days of cover of one variant."""
    lo, hi = lead
    lead_days = (lo + hi) / 2.0
    daily = [p.mean for p in fc.points]
    mean_daily = fc.daily_mean
    sigma = fc.backtest.rmse if fc.backtest.rmse is not None else math.sqrt(max(mean_daily, 0.0))
    safety = safety_stock(settings.inventory_service_level, lead_days, sigma, mean_daily, (hi - lo) / 4.0)
    rop = reorder_point(fc.cumulative(lead_days), safety)
    review = fc.cumulative(lead_days + settings.inventory_review_days) - fc.cumulative(lead_days)
    position = stock + on_order
    qty = order_quantity(rop, review, position, min_order_qty) if position <= rop else 0
    return _Plan(rop=rop, safety=safety, qty=qty, cover=days_of_cover(stock, daily))


def reorder_list(db: Session, settings: Settings) -> list[ReorderLine]:
    """Variants whose stock plus open orders is at or under their reorder point, most urgent first
    (discontinued ones never)."""
    today = settings.store_day()
    batch = forecast_all(_engine(db), settings)
    suppliers = {s.variant_id: s for s in db.exec(select(SupplierItem))}
    orders = _open_orders(db)
    names = {p.id: p.name for p in db.exec(select(Product))}
    lines: list[ReorderLine] = []
    for v in db.exec(select(Variant).order_by(col(Variant.id))):
        fc = batch.forecasts.get(v.id)
        sup = suppliers.get(v.id)
        if fc is None or (sup is not None and sup.discontinued):
            continue
        lead = (
            (sup.lead_time_min_days, sup.lead_time_max_days)
            if sup
            else (settings.inventory_default_lead_days,) * 2
        )
        on_order = sum(q for _, q in orders.get(v.id, []))
        stock = max(v.stock_on_hand, 0) if v.available else 0
        plan = plan_variant(fc, stock, on_order, lead, sup.min_order_qty if sup else 1, settings)
        if plan.qty <= 0:
            continue
        cover = plan.cover
        urgency = (cover if cover is not None else math.inf) - lead[1]
        note = f"on hand + on order {stock + on_order} <= reorder point {plan.rop:.1f}"
        if sup is None:
            note += f"; no supplier on record (lead time assumed {lead[0]} days)"
        lines.append(
            ReorderLine(
                variant_id=v.id,
                product_name=names.get(v.product_id, v.product_id),
                options=dict(v.options),
                supplier=sup.supplier if sup else None,
                stock_on_hand=stock,
                on_order=on_order,
                daily_demand=round(fc.daily_mean, 3),
                days_of_cover=cover,
                stockout_date=today + timedelta(days=math.floor(cover)) if cover is not None else None,
                lead_time_days=lead,
                safety_stock=round(plan.safety, 2),
                reorder_point=round(plan.rop, 2),
                order_qty=plan.qty,
                urgency_days=round(urgency, 1),
                model=fc.model,
                note=note,
            )
        )
    lines.sort(key=lambda r: (r.urgency_days, -r.daily_demand, r.variant_id))
    return lines


# ---- finding a variant from a shopper's words ------------------------------------------------------


_SEP = r"[\s\-_/]*"
_LEFT, _RIGHT = r"(?<![a-z0-9'’.])", r"(?![a-z0-9'’])"
_SIZE_WORDS = {
    "xs": ("extra small", "x small", "xsmall"),
    "s": ("small",),
    "m": ("medium", "med"),
    "l": ("large",),
    "xl": ("extra large", "x large", "xlarge"),
    "xxl": ("extra extra large", "xx large", "xxlarge", "2xl"),
}
_PRODUCT_WORDS = {"t-shirt": ("tee", "tshirt"), "smartphone": ("phone", "cell phone", "mobile phone")}
# Values that are ordinary words or bare numbers count only when their option's name is mentioned too
# ("size 10", "no ventilation"... ): "no" or "10" alone say nothing about a variant.
_NEEDS_KEY = {"yes", "no", "none", "full", "half", "art", "plain", "custom", "fixed", "standard", "basic",
              "light", "dark", "high", "low", "fresh"}  # fmt: skip


def _phrase(text: str, plural: bool = False) -> str:
    parts = re.findall(r"[a-z]+|\d+(?:\.\d+)?", text.lower())
    body = _SEP.join(re.escape(p) for p in parts)
    return _LEFT + body + (r"(?:e?s)?" if plural else "") + _RIGHT


def _normalise(text: str) -> str:
    return text.lower().replace("’", "'")


def _product_score(name: str, text: str) -> int:
    """2: the full name (or a known synonym) is mentioned; 1: only its head noun; 0: neither."""
    low = name.lower()
    if re.search(_phrase(low, plural=True), text):
        return 2
    if any(re.search(_phrase(s, plural=True), text) for s in _PRODUCT_WORDS.get(low, ())):
        return 2
    head = re.findall(r"[a-z]+", low)[-1]
    return 1 if len(head) > 2 and re.search(_phrase(head, plural=True), text) else 0


@dataclass(frozen=True)
class _Mention:
    key: str
    value: str
    span: tuple[int, int]
    exact: bool


_NEGATION = r"(?:not|non|no|isn't|without)"


def _value_mentions(key: str, value: str, text: str) -> list[_Mention]:
    low = value.lower()
    key_re = _phrase(key.rstrip("s"), plural=True)
    if low in ("yes", "no"):  # "waterproof" / "not waterproof" answer a yes/no option
        found = []
        for m in re.finditer(key_re, text):
            negated = re.search(_NEGATION + r"[\s\-]*$", text[: m.start()]) is not None
            if negated == (low == "no"):
                found.append(_Mention(key, value, m.span(), True))
        return found
    is_generic = low in _NEEDS_KEY or re.fullmatch(r"\d+(?:\.\d+)?%?", low) is not None
    if is_generic and not re.search(key_re, text):
        return []
    found = [_Mention(key, value, m.span(), True) for m in re.finditer(_phrase(low), text)]
    if "size" in key.lower():
        for word in _SIZE_WORDS.get(low, ()):
            found += [_Mention(key, value, m.span(), False) for m in re.finditer(_phrase(word), text)]
    return found


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def find_variants(db: Session, text: str) -> list[Variant]:
    """Variants of the product the text names, narrowed by the option values it mentions.

    "the blue M t-shirt" -> the T-Shirt variants with color blue and size M. A mentioned value that is
    one of the product's options but matches none of its variants ("green t-shirt") gives [] rather
    than every T-shirt. No product named -> [].
    """
    said = _normalise(text or "")
    if not said.strip():
        return []
    products = list(db.exec(select(Product).order_by(col(Product.id))))
    scores = {p.id: _product_score(p.name, said) for p in products}
    best = max(scores.values(), default=0)
    if best == 0:
        return []
    chosen = [p for p in products if scores[p.id] == best]
    variants = list(
        db.exec(
            select(Variant)
            .where(col(Variant.product_id).in_([p.id for p in chosen]))
            .order_by(col(Variant.product_id), col(Variant.id))
        )
    )
    # Every value of each option key across the catalogue: "green" is a color even if no T-shirt is green.
    vocabulary: dict[str, set[str]] = defaultdict(set)
    for opts in db.exec(select(Variant.options)):
        for k, val in (opts or {}).items():
            vocabulary[k].add(val)
    own: dict[str, set[str]] = defaultdict(set)
    for v in variants:
        for k, val in v.options.items():
            own[k].add(val)
    found = [m for k in sorted(own) for val in sorted(vocabulary[k]) for m in _value_mentions(k, val, said)]
    # The product's own values first: "medium" is its size M, not the size "medium" of some other product.
    mentions = [m for m in found if m.value in own[m.key]]
    mentions += [
        m for m in found if m.value not in own[m.key] and not any(_overlaps(m.span, o.span) for o in mentions)
    ]
    # A span inside a longer one ("large" in "extra large") and a synonym where some value is said exactly
    # give way.
    kept: list[_Mention] = []
    for m in mentions:
        beaten = any(
            o is not m
            and o.span[0] <= m.span[0]
            and m.span[1] <= o.span[1]
            and (o.span != m.span or (o.exact and not m.exact))
            for o in mentions
        )
        if not beaten:
            kept.append(m)
    by_span: dict[tuple[int, int], set[tuple[str, str]]] = defaultdict(set)
    for m in kept:
        by_span[m.span].add((m.key, m.value))
    wanted: dict[str, set[str]] = defaultdict(set)  # "blue or red": one key, any of its values
    either: list[set[tuple[str, str]]] = []  # "black" sunglasses: frame color or lens color
    for alts in by_span.values():
        if len({k for k, _ in alts}) == 1:
            for k, val in alts:
                wanted[k].add(val)
        else:
            either.append(alts)
    return [
        v
        for v in variants
        if all(v.options.get(k) in vals for k, vals in wanted.items())
        and all(any(v.options.get(k) == val for k, val in alts) for alts in either)
    ]
