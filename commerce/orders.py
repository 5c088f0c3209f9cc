"""Order services: look-up, a JSON-able view, cancellation with refunds, returns, exchanges and address
changes (tau2 retail policy).

Plain functions over a SQLModel Session; writes flush inside the caller's transaction and never
commit, so a tool or a REST route decides when the change becomes visible.
"""

import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, select

from commerce.addresses import ShippingAddress
from commerce.models import (
    AddressChange,
    Order,
    OrderExchange,
    OrderItem,
    Payment,
    PaymentMethod,
    Shipment,
    ShipmentEvent,
    Variant,
)

CANCEL_REASONS: tuple[str, ...] = ("no longer needed", "ordered by mistake")
_ORDER_ID = re.compile(r"^#?\s*[Ww]?\s*(\d{7})$")


class OrderNotFound(LookupError):
    def __init__(self, order_id: str) -> None:
        super().__init__(f"order {order_id!r} not found")
        self.order_id = order_id


class OrderNotCancellable(Exception):
    """Only pending orders can be cancelled; `status` is the order's actual status."""

    def __init__(self, status: str) -> None:
        super().__init__(f"only pending orders can be cancelled; this order is {status}")
        self.status = status


def normalize_order_id(text: str | None) -> str | None:
    """ "W2611340", "#w2611340", " 2611340 " -> "#W2611340"; None unless it holds exactly 7 digits."""
    if not text:
        return None
    m = _ORDER_ID.match(text.strip())
    return f"#W{m.group(1)}" if m else None


def get_order(db: Session, order_id: str) -> Order | None:
    oid = normalize_order_id(order_id)
    return db.get(Order, oid) if oid else None


def list_orders(db: Session, customer_id: str) -> list[Order]:
    """The customer's orders, newest first."""
    stmt = (
        select(Order)
        .where(Order.customer_id == customer_id)
        .order_by(col(Order.created_at).desc(), col(Order.id).desc())
    )
    return list(db.exec(stmt))


def _iso(value: datetime | date | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat(timespec="seconds") + "Z"
    return value.isoformat()


def _for_column(column: Any, value: datetime) -> datetime:
    """A datetime in the form the column takes: aware UTC for timezone columns, else naive UTC."""
    value = value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return value if getattr(column.type, "timezone", False) else value.replace(tzinfo=None)


def order_view(db: Session, order: Order) -> dict[str, Any]:
    """A JSON-able summary of an order for tools, cards and REST: no address, no payment details."""
    items = db.exec(select(OrderItem).where(OrderItem.order_id == order.id).order_by(col(OrderItem.id))).all()
    shipments = db.exec(
        select(Shipment).where(Shipment.order_id == order.id).order_by(col(Shipment.id))
    ).all()
    ship_views = []
    for s in shipments:
        last = db.exec(
            select(ShipmentEvent)
            .where(ShipmentEvent.shipment_id == s.id)
            .order_by(col(ShipmentEvent.at).desc(), col(ShipmentEvent.id).desc())
        ).first()
        ship_views.append(
            {
                "carrier": s.carrier,
                "tracking_id": s.tracking_id,
                "status": s.status,
                "shipped_at": _iso(s.shipped_at),
                "estimated_delivery": _iso(s.estimated_delivery),
                "delivered_at": _iso(s.delivered_at),
                "item_ids": list(s.variant_ids or []),
                "last_event": (
                    {
                        "at": _iso(last.at),
                        "status": last.status,
                        "location": last.location,
                        "description": last.description,
                    }
                    if last
                    else None
                ),
            }
        )
    total = round(sum(i.price for i in items), 2)
    return {
        "id": order.id,
        "status": order.status,
        "created_at": _iso(order.created_at),
        "items": [
            {
                "item_id": i.variant_id,
                "product_id": i.product_id,
                "name": i.name,
                "options": dict(i.options or {}),
                "price": round(i.price, 2),
            }
            for i in items
        ],
        "total": total,
        "shipments": ship_views,
        "cancel_reason": order.cancel_reason,
        "cancelled_at": _iso(order.cancelled_at),
    }


def cancel_order(db: Session, order_id: str, reason: str, *, now: datetime | None = None) -> Order:
    """Cancel a pending order and refund every payment to the method that paid it.

    Raises OrderNotFound, OrderNotCancellable(status) unless the order is pending, and ValueError
    unless `reason` is one of CANCEL_REASONS. Gift-card refunds go back on the card's balance at
    once. Flushes, never commits: the caller's transaction decides. `now` defaults to the clock.
    """
    oid = normalize_order_id(order_id)
    # Lock the row (PostgreSQL) so two concurrent cancels cannot refund twice.
    order = db.exec(select(Order).where(Order.id == oid).with_for_update()).first() if oid else None
    if order is None:
        raise OrderNotFound(order_id)
    if order.status != "pending":
        raise OrderNotCancellable(order.status)
    norm_reason = " ".join((reason or "").lower().split())
    if norm_reason not in CANCEL_REASONS:
        raise ValueError(
            f"reason must be one of {', '.join(repr(r) for r in CANCEL_REASONS)}; got {reason!r}"
        )
    at = now or datetime.now(UTC)

    payments = db.exec(select(Payment).where(Payment.order_id == order.id).order_by(col(Payment.id))).all()
    net: dict[str, float] = {}
    for p in payments:
        sign = 1.0 if p.kind == "payment" else -1.0
        net[p.payment_method_id] = net.get(p.payment_method_id, 0.0) + sign * p.amount
    created_col = Payment.__table__.c.created_at  # type: ignore[attr-defined]
    for method_id in sorted(net, key=lambda m: min(p.id or 0 for p in payments if p.payment_method_id == m)):
        amount = round(net[method_id], 2)
        if amount <= 0:
            continue
        db.add(
            Payment(
                order_id=order.id,
                kind="refund",
                amount=amount,
                payment_method_id=method_id,
                created_at=_for_column(created_col, at),
            )
        )
        method = db.get(PaymentMethod, method_id)
        if method is not None and method.kind == "gift_card":
            method.balance = round((method.balance or 0.0) + amount, 2)
            db.add(method)

    table = Order.__table__  # type: ignore[attr-defined]
    order.status = "cancelled"
    order.cancel_reason = norm_reason
    order.cancelled_at = _for_column(table.c.cancelled_at, at)
    order.updated_at = _for_column(table.c.updated_at, at)
    db.add(order)
    db.flush()
    return order


RETURN_WINDOW_DAYS = 30  # knowledge/policies/returns-and-exchanges.md: "within 30 days of the delivery date"


class OrderNotReturnable(Exception):
    """Why an order cannot be returned now: its status, or the window has closed."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


def delivered_on(db: Session, order: Order) -> datetime | None:
    """When the order's last parcel arrived (None while any parcel is on its way)."""
    shipments = db.exec(select(Shipment).where(Shipment.order_id == order.id)).all()
    dates = [s.delivered_at for s in shipments]
    if not dates or any(d is None for d in dates):
        return None
    latest = max(d for d in dates if d is not None)
    return latest if latest.tzinfo else latest.replace(tzinfo=UTC)


def check_returnable(db: Session, order: Order, *, now: datetime | None = None) -> datetime:
    """The delivery date of a returnable order; raises OrderNotReturnable otherwise."""
    if order.status != "delivered":
        raise OrderNotReturnable(f"it is {order.status}; only delivered orders can be returned")
    delivered = delivered_on(db, order)
    if delivered is None:
        raise OrderNotReturnable("it has no delivery date yet")
    at = now or datetime.now(UTC)
    if (at - delivered).days > RETURN_WINDOW_DAYS:
        raise OrderNotReturnable(
            f"it was delivered on {delivered.date().isoformat()}, more than {RETURN_WINDOW_DAYS} days ago"
        )
    return delivered


def request_return(db: Session, order_id: str, *, now: datetime | None = None) -> Order:
    """Mark a delivered order "return requested" (the label and the refund follow when the parcel is
    back). Raises OrderNotFound and OrderNotReturnable. Flushes, never commits."""
    oid = normalize_order_id(order_id)
    order = db.exec(select(Order).where(Order.id == oid).with_for_update()).first() if oid else None
    if order is None:
        raise OrderNotFound(order_id)
    check_returnable(db, order, now=now)
    order.status = "return requested"
    order.updated_at = now or datetime.now(UTC)
    db.add(order)
    db.flush()
    return order


# ---- exchanges (tau2 retail: same product, another version, delivered orders only) ---------------


class OrderNotExchangeable(Exception):
    """Why this exchange cannot happen: the order's status or age, or the version asked for."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


@dataclass(frozen=True)
class ExchangeLine:
    """One order item and the version it becomes, with both prices."""

    order_item_id: int
    name: str
    old_variant_id: str
    old_options: dict[str, str]
    old_price: float
    new_variant_id: str
    new_options: dict[str, str]
    new_price: float

    @property
    def difference(self) -> float:
        return round(self.new_price - self.old_price, 2)


@dataclass(frozen=True)
class ExchangeQuote:
    """What an exchange swaps and how its price difference is settled (> 0: the shopper pays)."""

    order_id: str
    lines: tuple[ExchangeLine, ...]
    payment_method_id: str
    payment_method: str  # "PayPal", "gift card", "Visa card ending 1234": what the shopper recognises

    @property
    def difference(self) -> float:
        return round(sum(line.difference for line in self.lines), 2)


def check_exchangeable(db: Session, order: Order, *, now: datetime | None = None) -> datetime:
    """The delivery date of an order that may be exchanged (delivered, within the return window);
    raises OrderNotExchangeable otherwise. An order is exchanged once: its status then changes."""
    if order.status != "delivered":
        raise OrderNotExchangeable(f"it is {order.status}; only delivered orders can be exchanged")
    try:
        return check_returnable(db, order, now=now)
    except OrderNotReturnable as exc:
        raise OrderNotExchangeable(exc.why) from exc


def order_items(db: Session, order: Order) -> list[OrderItem]:
    return list(db.exec(select(OrderItem).where(OrderItem.order_id == order.id).order_by(col(OrderItem.id))))


def exchange_options(db: Session, item: OrderItem) -> list[Variant]:
    """The other versions of the item's product, available ones first (the shopper picks among them)."""
    variants = db.exec(
        select(Variant).where(Variant.product_id == item.product_id, Variant.id != item.variant_id)
    ).all()
    return sorted(variants, key=lambda v: (not v.available, v.id))


def payment_method_label(method: PaymentMethod) -> str:
    if method.kind == "credit_card":
        card = f"{method.brand.capitalize()} card" if method.brand else "credit card"
        return f"{card} ending {method.last_four}" if method.last_four else card
    return {"paypal": "PayPal", "gift_card": "gift card"}.get(method.kind, method.kind.replace("_", " "))


def original_payment_method(db: Session, order: Order) -> PaymentMethod:
    """The method that paid for the order (its first payment): price differences settle on it."""
    method_id = db.exec(
        select(Payment.payment_method_id)
        .where(Payment.order_id == order.id, Payment.kind == "payment")
        .order_by(col(Payment.id))
    ).first()
    method = db.get(PaymentMethod, method_id) if method_id else None
    if method is None:
        raise OrderNotExchangeable("it has no payment on record to settle a price difference with")
    return method


def quote_exchange(db: Session, order: Order, swaps: dict[int, str]) -> ExchangeQuote:
    """Check each swap (order item id -> new variant id) and price it; raises OrderNotExchangeable.

    The new version must be the same product, another version, and available now. A gift card that
    paid for the order must hold enough balance for a positive difference (tau2 retail policy)."""
    if not swaps:
        raise OrderNotExchangeable("no item was chosen")
    items = {i.id: i for i in order_items(db, order)}
    lines = []
    for item_id, variant_id in swaps.items():
        item = items.get(item_id)
        new = db.get(Variant, variant_id)
        if item is None:
            raise OrderNotExchangeable("that item is not in this order")
        if new is None or new.product_id != item.product_id:
            raise OrderNotExchangeable(
                f"an item can only be exchanged for another version of the {item.name}"
            )
        if new.id == item.variant_id:
            raise OrderNotExchangeable(f"that is the version of the {item.name} you already have")
        if not new.available:
            raise OrderNotExchangeable(
                f"that version of the {item.name} ({_options(new.options)}) is not available"
            )
        lines.append(
            ExchangeLine(
                order_item_id=item_id,
                name=item.name,
                old_variant_id=item.variant_id,
                old_options=dict(item.options or {}),
                old_price=round(item.price, 2),
                new_variant_id=new.id,
                new_options=dict(new.options or {}),
                new_price=round(new.price, 2),
            )
        )
    method = original_payment_method(db, order)
    quote = ExchangeQuote(order.id, tuple(lines), method.id, payment_method_label(method))
    if method.kind == "gift_card" and quote.difference > (method.balance or 0.0):
        raise OrderNotExchangeable(
            f"the gift card that paid for it has ${method.balance or 0.0:.2f} left, "
            f"less than the ${quote.difference:.2f} difference"
        )
    return quote


def _options(options: dict[str, str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in options.items())


def _take_stock(db: Session, quote: ExchangeQuote) -> None:
    """Take the replacements out of stock at once, each in one conditional UPDATE: of two exchanges
    racing for the last unit only one gets it (the other reads as not available), and the stock-outs
    this causes reach the shop and the reorder list now, not at the next stock feed. Nothing is taken
    unless every replacement is (what was taken is put back), so the caller's transaction holds
    either the whole exchange or none of it."""
    wanted = Counter(line.new_variant_id for line in quote.lines)
    taken: list[tuple[str, int]] = []
    for variant_id, units in sorted(wanted.items()):
        table = Variant.__table__  # type: ignore[attr-defined]
        result = db.execute(
            update(table)
            .where(table.c.id == variant_id, table.c.available.is_(True), table.c.stock_on_hand >= units)
            .values(stock_on_hand=table.c.stock_on_hand - units, available=table.c.stock_on_hand > units)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            for back_id, back_units in taken:
                db.execute(
                    update(table)
                    .where(table.c.id == back_id)
                    .values(stock_on_hand=table.c.stock_on_hand + back_units, available=True)
                )
            line = next(x for x in quote.lines if x.new_variant_id == variant_id)
            raise OrderNotExchangeable(
                f"that version of the {line.name} ({_options(line.new_options)}) has just sold out"
            )
        taken.append((variant_id, units))
    for variant_id in wanted:  # the ORM's copies of these rows are stale now
        variant = db.get(Variant, variant_id)
        if variant is not None:
            db.refresh(variant)


def request_exchange(
    db: Session, order_id: str, swaps: dict[int, str], *, channel: str = "chat", now: datetime | None = None
) -> tuple[Order, ExchangeQuote]:
    """Record the swaps (OrderExchange rows), take the replacements out of stock and mark the order
    "exchange requested"; the replacement ships and the difference settles once the originals are
    back. Raises OrderNotFound and OrderNotExchangeable. Flushes, never commits."""
    oid = normalize_order_id(order_id)
    order = db.exec(select(Order).where(Order.id == oid).with_for_update()).first() if oid else None
    if order is None:
        raise OrderNotFound(order_id)
    check_exchangeable(db, order, now=now)
    quote = quote_exchange(db, order, swaps)
    _take_stock(db, quote)  # first: when it fails, nothing of the exchange has been added
    at = now or datetime.now(UTC)
    for line in quote.lines:
        db.add(
            OrderExchange(
                order_id=order.id,
                order_item_id=line.order_item_id,
                old_variant_id=line.old_variant_id,
                new_variant_id=line.new_variant_id,
                price_difference=line.difference,
                payment_method_id=quote.payment_method_id,
                channel=channel,
                requested_at=at,
            )
        )
    order.status = "exchange requested"
    order.updated_at = at
    db.add(order)
    db.flush()
    return order, quote


# ---- shipping address of a pending order ----------------------------------------------------------


class AddressNotChangeable(Exception):
    """Why the order's address cannot change: it has left the warehouse, or it is the same address."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


def check_address_changeable(order: Order) -> None:
    if order.status != "pending":
        raise AddressNotChangeable(
            f"it is {order.status}; the address can only be changed before the order ships (pending)"
        )


def change_address(
    db: Session,
    order_id: str,
    address: ShippingAddress,
    *,
    channel: str = "chat",
    now: datetime | None = None,
) -> Order:
    """Ship a pending order to `address` and keep the change (AddressChange: the fraud scorer reads
    that history). Raises OrderNotFound and AddressNotChangeable. Flushes, never commits."""
    oid = normalize_order_id(order_id)
    order = db.exec(select(Order).where(Order.id == oid).with_for_update()).first() if oid else None
    if order is None:
        raise OrderNotFound(order_id)
    check_address_changeable(order)
    if ships_to(order, address):
        raise AddressNotChangeable("it already ships to that address")
    at = now or datetime.now(UTC)
    db.add(
        AddressChange(
            customer_id=order.customer_id,
            order_id=order.id,
            changed_at=at,
            channel=channel,
            old_address1=order.ship_address1,
            old_zip=order.ship_zip,
            address1=address.address1,
            address2=address.address2,
            city=address.city,
            state=address.state,
            zip=address.zip,
            country=address.country,
        )
    )
    order.ship_address1, order.ship_address2 = address.address1, address.address2
    order.ship_city, order.ship_state, order.ship_zip = address.city, address.state, address.zip
    order.ship_country = address.country
    order.updated_at = at
    db.add(order)
    db.flush()
    return order


def ships_to(order: Order, address: ShippingAddress) -> bool:
    """Whether the order already goes to this address (case and spacing aside)."""
    current = (order.ship_address1, order.ship_address2, order.ship_city, order.ship_state, order.ship_zip)
    wanted = (address.address1, address.address2, address.city, address.state, address.zip)
    return [" ".join(p.lower().split()) for p in current] == [" ".join(p.lower().split()) for p in wanted]
