"""Every table of the store and of the conversations, in one module.

Times are timezone-aware UTC (SQLModel stores datetimes as UTC and insists on a zone); money is a float rounded to cents at the edges.
Ids from the tau2 seed (customer ids, product/variant ids, "#W..." order ids) are kept as they are.
"""

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def _json(default: Any = None) -> Any:
    return Field(default_factory=lambda: default() if callable(default) else default, sa_column=Column(JSON))


# ---- customers ----------------------------------------------------------------------------------


class Customer(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=64)
    first_name: str = Field(max_length=100)
    last_name: str = Field(max_length=100)
    email: str = Field(index=True, unique=True, max_length=254)
    created_at: datetime


class Address(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    customer_id: str = Field(foreign_key="customer.id", index=True)
    is_default: bool = True
    address1: str
    address2: str = ""
    city: str
    state: str
    zip: str = Field(index=True, max_length=16)
    country: str = "USA"
    created_at: datetime


class PaymentMethod(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=64)  # e.g. "credit_card_7815826"
    customer_id: str = Field(foreign_key="customer.id", index=True)
    kind: str = Field(max_length=20)  # gift_card | paypal | credit_card
    brand: str | None = None  # credit cards only
    last_four: str | None = Field(default=None, max_length=4)  # never the full number
    balance: float | None = None  # gift cards only
    added_at: datetime


# ---- catalogue ----------------------------------------------------------------------------------


class Product(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=32)
    name: str = Field(index=True)
    description: str = ""


class Variant(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=32)  # tau2 "item_id"
    product_id: str = Field(foreign_key="product.id", index=True)
    options: dict[str, str] = _json(dict)
    price: float
    stock_on_hand: int = 0
    available: bool = True  # sellable now: stock_on_hand > 0 and not discontinued


# ---- orders -------------------------------------------------------------------------------------


class Order(SQLModel, table=True):
    __tablename__ = "orders"  # "order" is reserved in SQL

    id: str = Field(primary_key=True, max_length=16)  # "#W2611340"
    customer_id: str = Field(foreign_key="customer.id", index=True)
    status: str = Field(index=True, max_length=32)  # pending | processed | delivered | cancelled
    created_at: datetime = Field(index=True)
    updated_at: datetime
    ship_address1: str
    ship_address2: str = ""
    ship_city: str
    ship_state: str
    ship_zip: str
    ship_country: str = "USA"
    cancel_reason: str | None = None
    cancelled_at: datetime | None = None


class OrderItem(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    order_id: str = Field(foreign_key="orders.id", index=True)
    variant_id: str = Field(foreign_key="variant.id", index=True)
    product_id: str = Field(foreign_key="product.id")
    name: str
    price: float
    options: dict[str, str] = _json(dict)


class Shipment(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    order_id: str = Field(foreign_key="orders.id", index=True)
    carrier: str
    tracking_id: str = Field(index=True)
    status: str  # label_created | in_transit | out_for_delivery | delivered
    shipped_at: datetime | None = None
    estimated_delivery: date | None = None
    delivered_at: datetime | None = None
    variant_ids: list[str] = _json(list)


class ShipmentEvent(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    shipment_id: int = Field(foreign_key="shipment.id", index=True)
    at: datetime
    status: str
    location: str = ""
    description: str = ""


class Payment(SQLModel, table=True):
    """A payment or a refund against an order (refunds are negative flows of the same shape)."""

    id: int | None = Field(default=None, primary_key=True)
    order_id: str = Field(foreign_key="orders.id", index=True)
    kind: str = Field(max_length=10)  # payment | refund
    amount: float
    payment_method_id: str = Field(foreign_key="paymentmethod.id")
    created_at: datetime


class DailySales(SQLModel, table=True):
    variant_id: str = Field(foreign_key="variant.id", primary_key=True)
    day: date = Field(primary_key=True)
    units: int


# ---- conversations ------------------------------------------------------------------------------


class Conversation(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=36)
    # The identity the session is bound to: set by a signed token, or by a verified guest check.
    customer_id: str | None = Field(default=None, foreign_key="customer.id", index=True)
    identity: str = "guest"  # customer | guest | verified_guest
    state: str = "bot"  # bot | waiting | agent | closed
    pending_action: dict[str, Any] | None = _json(None)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Message(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("conversation_id", "client_id"),)

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: str = Field(foreign_key="conversation.id", index=True)
    role: str  # user | assistant | agent | system
    content: str
    client_id: str | None = Field(default=None, max_length=64)  # the widget's id, for dedup
    meta: dict[str, Any] = _json(dict)  # citations, cards, grounding result, latency
    created_at: datetime = Field(default_factory=utcnow)


class ToolCallRecord(SQLModel, table=True):
    """The audit trail of every tool the bot ran, proposed or was refused."""

    __table_args__ = (Index("ix_toolcall_conv_time", "conversation_id", "created_at"),)

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: str = Field(foreign_key="conversation.id")
    tool: str
    arguments: dict[str, Any] = _json(dict)  # redacted: no emails, addresses, card numbers
    outcome: str  # ok | refused | invalid | proposed | confirmed | declined | error
    result: dict[str, Any] = _json(dict)
    latency_ms: float = 0.0
    created_at: datetime = Field(default_factory=utcnow)
