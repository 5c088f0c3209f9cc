"""Orders REST for the rest of the platform (the storefront's account pages, the warehouse, the CRM):
the same services the bot's tools run (commerce/orders.py), with the same store rules.

- `GET /api/orders/{order_id}`: the order (items, shipments with their last event, refunds' reason).
- `GET /api/customers/{customer_id}/orders`: the customer's orders, newest first.
- `POST /api/orders/{order_id}/cancel` `{"reason"}`: a pending order; every payment refunded.
- `POST /api/orders/{order_id}/return`: a delivered order within the return window.
- `POST /api/orders/{order_id}/exchange/quote` and `.../exchange` `{"items": [{"item_id",
  "new_item_id"}]}`: the price difference and how it settles; then the exchange itself, which takes
  the replacements out of stock at once.
- `PUT /api/orders/{order_id}/address`: the shipping address of a pending order, validated field by field.

The caller is a service that has already decided who may do this (the storefront signed its shopper
in; the platform's checkout scores risk with `POST /api/fraud/score`): X-API-Key = settings.orders_api_key
(unset: only a demo store answers). The store's rules are checked here: unknown order or customer 404,
a body that names no such item 422, an order whose status or age forbids the change 409 with the
reason (a retried cancel reads "this order is cancelled", and nothing is refunded twice). Each write
is one transaction. Nothing an address or a payment holds is logged.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, status
from pydantic import BaseModel, Field
from sqlmodel import Session, col, select

from api.deps import SessionDep, SettingsDep, require_service
from commerce import orders
from commerce.addresses import InvalidAddress, validate_address
from commerce.models import Customer, Order, Payment, PaymentMethod

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api", tags=["orders"], dependencies=[Depends(require_service("orders_api_key"))])

OrderId = Annotated[
    str, Path(max_length=32, description='"#W2611340" (as %23W2611340), "W2611340" or "2611340"')
]
CustomerId = Annotated[str, Path(min_length=1, max_length=64)]
ItemId = Annotated[str, Field(pattern=r"^[0-9]{10}$", description="a variant's item id")]


class CancelIn(BaseModel):
    reason: Literal["no longer needed", "ordered by mistake"]


class Swap(BaseModel):
    item_id: ItemId  # the version in the order
    new_item_id: ItemId  # the version it becomes


class ExchangeIn(BaseModel):
    items: list[Swap] = Field(min_length=1, max_length=50)


class AddressIn(BaseModel):
    address1: str = Field(min_length=1, max_length=200)
    address2: str = Field(default="", max_length=200)
    city: str = Field(min_length=1, max_length=200)
    state: str = Field(min_length=1, max_length=60)
    zip: str = Field(min_length=1, max_length=20)
    country: Literal["USA", "US"] = "USA"  # the store ships within the United States only


def _order(db: Session, order_id: str) -> Order:
    order = orders.get_order(db, order_id)
    if order is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown order '{order_id}'")
    return order


def _conflict(order_id: str, action: str, why: str) -> HTTPException:
    return HTTPException(status.HTTP_409_CONFLICT, f"order {order_id} cannot be {action}: {why}")


def _view(db: Session, order: Order) -> dict[str, Any]:
    return {**orders.order_view(db, order), "customer_id": order.customer_id}


def _refunds(db: Session, order: Order) -> list[dict[str, Any]]:
    rows = db.exec(
        select(Payment, PaymentMethod)
        .join(PaymentMethod, col(PaymentMethod.id) == col(Payment.payment_method_id))
        .where(Payment.order_id == order.id, Payment.kind == "refund")
        .order_by(col(Payment.id))
    ).all()
    return [{"amount": round(p.amount, 2), "payment_method": orders.payment_method_label(m)} for p, m in rows]


@router.get("/orders/{order_id}")
def get_order(order_id: OrderId, db: SessionDep) -> dict[str, Any]:
    return _view(db, _order(db, order_id))


@router.get("/customers/{customer_id}/orders")
def customer_orders(customer_id: CustomerId, db: SessionDep) -> dict[str, Any]:
    if db.get(Customer, customer_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown customer '{customer_id}'")
    found = orders.list_orders(db, customer_id)
    return {"customer_id": customer_id, "count": len(found), "orders": [_view(db, o) for o in found]}


@router.post("/orders/{order_id}/cancel")
def cancel(order_id: OrderId, body: CancelIn, db: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    order = _order(db, order_id)
    try:
        order = orders.cancel_order(db, order.id, body.reason, now=settings.store_now())
    except orders.OrderNotCancellable as exc:
        db.rollback()
        raise _conflict(order.id, "cancelled", str(exc)) from exc
    db.commit()
    log.info("order %s cancelled over REST (%s)", order.id, body.reason)
    return {"order": _view(db, order), "refunds": _refunds(db, order)}


@router.post("/orders/{order_id}/return")
def request_return(order_id: OrderId, db: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    order = _order(db, order_id)
    try:
        order = orders.request_return(db, order.id, now=settings.store_now())
    except orders.OrderNotReturnable as exc:
        db.rollback()
        raise _conflict(order.id, "returned", exc.why) from exc
    db.commit()
    log.info("order %s: return requested over REST", order.id)
    return {"order": _view(db, order)}


def _swaps(db: Session, order: Order, body: ExchangeIn) -> dict[int, str]:
    """Order item rows for the body's item ids: an id listed twice takes two of that version in the
    order. An id the order does not hold (that many times) is a 422."""
    rows: dict[str, list[int]] = {}
    for item in orders.order_items(db, order):
        rows.setdefault(item.variant_id, []).append(item.id)  # type: ignore[arg-type]
    asked = Counter(s.item_id for s in body.items)
    missing = [i for i, n in asked.items() if len(rows.get(i, [])) < n]
    if missing:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"order {order.id} holds no (or not that many) item {', '.join(missing)}",
        )
    return {rows[s.item_id].pop(0): s.new_item_id for s in body.items}


def _quote_view(quote: orders.ExchangeQuote) -> dict[str, Any]:
    return {
        "lines": [
            {
                "item_id": line.old_variant_id,
                "name": line.name,
                "options": line.old_options,
                "price": line.old_price,
                "new_item_id": line.new_variant_id,
                "new_options": line.new_options,
                "new_price": line.new_price,
                "difference": line.difference,
            }
            for line in quote.lines
        ],
        "difference": quote.difference,  # > 0 charged, < 0 refunded, when the originals are back
        "payment_method": quote.payment_method,
    }


@router.post("/orders/{order_id}/exchange/quote")
def quote_exchange(
    order_id: OrderId, body: ExchangeIn, db: SessionDep, settings: SettingsDep
) -> dict[str, Any]:
    """What the exchange would swap and cost; nothing changes."""
    order = _order(db, order_id)
    swaps = _swaps(db, order, body)
    try:
        orders.check_exchangeable(db, order, now=settings.store_now())
        quote = orders.quote_exchange(db, order, swaps)
    except orders.OrderNotExchangeable as exc:
        raise _conflict(order.id, "exchanged", exc.why) from exc
    return {"order_id": order.id, "exchange": _quote_view(quote)}


@router.post("/orders/{order_id}/exchange")
def exchange(order_id: OrderId, body: ExchangeIn, db: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    order = _order(db, order_id)
    swaps = _swaps(db, order, body)
    try:
        order, quote = orders.request_exchange(db, order.id, swaps, channel="api", now=settings.store_now())
    except orders.OrderNotExchangeable as exc:
        db.rollback()
        raise _conflict(order.id, "exchanged", exc.why) from exc
    db.commit()
    log.info("order %s: exchange of %d item(s) requested over REST", order.id, len(quote.lines))
    return {"order": _view(db, order), "exchange": _quote_view(quote)}


@router.put("/orders/{order_id}/address")
def change_address(
    order_id: OrderId, body: AddressIn, db: SessionDep, settings: SettingsDep
) -> dict[str, Any]:
    order = _order(db, order_id)
    try:
        address = validate_address(body.address1, body.city, body.state, body.zip, body.address2)
    except InvalidAddress as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, {"invalid_fields": exc.errors}) from exc
    try:
        order = orders.change_address(db, order.id, address, channel="api", now=settings.store_now())
    except orders.AddressNotChangeable as exc:
        db.rollback()
        raise _conflict(order.id, "sent elsewhere", exc.why) from exc
    db.commit()
    log.info("order %s: shipping address changed over REST", order.id)
    return {"order": _view(db, order), "shipping_address": address.as_dict()}
