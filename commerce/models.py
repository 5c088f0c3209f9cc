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
    ship_zip: str = Field(index=True)  # the fraud check looks up who else ships to an address
    ship_country: str = "USA"
    ship_name: str | None = None  # the recipient when not the account holder (a fraud signal)
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
    # Indexed alone too: "the last day the feed reached" (demand.sales_through) is a max over all variants.
    day: date = Field(primary_key=True, index=True)
    units: int


# ---- purchasing ---------------------------------------------------------------------------------


class SupplierItem(SQLModel, table=True):
    """Who supplies a variant and how many days they take from our order to our dock: the restock
    estimate when no purchase order is open, and the lead time of the reorder maths."""

    variant_id: str = Field(foreign_key="variant.id", primary_key=True)
    supplier: str = Field(max_length=100)
    lead_time_min_days: int
    lead_time_max_days: int
    min_order_qty: int = 1
    discontinued: bool = False  # the supplier no longer makes it: no restock is coming
    updated_at: datetime


class PurchaseOrder(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=16)  # "PO-100001"
    supplier: str = Field(max_length=100)
    status: str = Field(index=True, max_length=16)  # open | received | cancelled
    ordered_at: datetime
    expected_arrival: datetime  # the supplier's promised delivery at our warehouse
    received_at: datetime | None = None


class PurchaseOrderLine(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    purchase_order_id: str = Field(foreign_key="purchaseorder.id", index=True)
    variant_id: str = Field(foreign_key="variant.id", index=True)
    quantity: int


# ---- fraud --------------------------------------------------------------------------------------


class AddressChange(SQLModel, table=True):
    """A shipping address changed on the account (order_id None) or on one order: a change shortly
    before or after an order is the classic account-takeover step, so the scorer reads this history."""

    id: int | None = Field(default=None, primary_key=True)
    customer_id: str = Field(foreign_key="customer.id", index=True)
    order_id: str | None = Field(default=None, foreign_key="orders.id", index=True)
    changed_at: datetime
    channel: str = Field(default="web", max_length=16)  # web | chat | agent | api
    old_address1: str = ""
    old_zip: str = ""
    address1: str
    address2: str = ""
    city: str
    state: str
    zip: str = Field(max_length=16)
    country: str = "USA"
    recipient_name: str | None = None


class FraudLabel(SQLModel, table=True):
    """Ground truth of the labelled history (commerce/fraud_history.py): one row per fraudulent order;
    every other order is legitimate."""

    order_id: str = Field(foreign_key="orders.id", primary_key=True, max_length=16)
    customer_id: str = Field(foreign_key="customer.id", index=True)
    # account_takeover | card_testing | refund_abuse | reshipping
    pattern: str = Field(max_length=32, index=True)
    case_id: str = Field(max_length=40, index=True)  # the orders of one fraud episode share it


class RiskAssessment(SQLModel, table=True):
    """A fraud score that was given (checkout or a bot action) with its decision and reasons: the audit.
    No foreign keys, so the record outlives a reseed of the store."""

    __table_args__ = (Index("ix_riskassessment_order_time", "order_id", "created_at"),)

    id: int | None = Field(default=None, primary_key=True)
    order_id: str | None = Field(default=None, max_length=16)
    customer_id: str | None = Field(default=None, max_length=64, index=True)
    action: str | None = Field(default=None, max_length=32)  # cancel | return | exchange | address_change
    score: float
    decision: str = Field(max_length=8)  # allow | review | block
    reasons: list[dict[str, Any]] = _json(list)
    model_version: str = Field(max_length=64)
    rules_only: bool = False
    conversation_id: str | None = Field(default=None, max_length=36)
    created_at: datetime = Field(default_factory=utcnow)


# ---- conversations ------------------------------------------------------------------------------


class StaffUser(SQLModel, table=True):
    """A support agent or an admin: signs in to the console / admin pages with a password (argon2 hash)."""

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(index=True, unique=True, max_length=64)
    display_name: str = Field(max_length=100)
    role: str = Field(max_length=8)  # agent | admin (an admin may also work the console)
    password_hash: str
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow)
    last_seen_at: datetime | None = None  # presence: the console's socket beats this


class Conversation(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=36)
    # The identity the session is bound to: set by a signed token, or by a verified guest check.
    customer_id: str | None = Field(default=None, foreign_key="customer.id", index=True)
    identity: str = "guest"  # customer | guest | verified_guest
    state: str = Field(default="bot", index=True)  # bot | waiting | agent | closed (bot/handoff.py)
    pending_action: dict[str, Any] | None = _json(None)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    # Handoff (bot/handoff.py): why a person was asked for, since when, and who took it.
    handoff_reason: str | None = Field(default=None, max_length=200)
    waiting_since: datetime | None = None
    assigned_agent_id: int | None = Field(default=None, foreign_key="staffuser.id")
    failed_turns: int = 0  # consecutive bot turns that did not help; two in a row ask for a person
    fraud_flag: bool = False  # a risk review or block happened in this conversation
    tags: list[str] = _json(list)
    close_note: str | None = Field(default=None, max_length=2000)
    closed_at: datetime | None = None


class HandoffEvent(SQLModel, table=True):
    """Every state change of a conversation: the analytics' handoff rate and reasons, and the audit."""

    __table_args__ = (Index("ix_handoffevent_conv_time", "conversation_id", "created_at"),)

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: str = Field(foreign_key="conversation.id")
    from_state: str = Field(max_length=8)
    to_state: str = Field(max_length=8)
    # shopper_request | failed_turns | negative_sentiment | error | fraud_review | take_over | hand_back | close | ...
    trigger: str = Field(max_length=32)
    reason: str | None = Field(default=None, max_length=200)
    agent_id: int | None = Field(default=None, foreign_key="staffuser.id")
    created_at: datetime = Field(default_factory=utcnow)


class Message(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("conversation_id", "client_id"),)

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: str = Field(foreign_key="conversation.id", index=True)
    role: str  # user | assistant | agent | system
    content: str
    client_id: str | None = Field(default=None, max_length=64)  # the widget's id, for dedup
    meta: dict[str, Any] = _json(dict)  # citations, cards, grounding result, latency
    sentiment: float | None = None  # shopper messages: VADER compound score, -1 (angry) .. 1
    agent_id: int | None = Field(default=None, foreign_key="staffuser.id")  # role "agent": who wrote it
    created_at: datetime = Field(default_factory=utcnow)


class ToolCallRecord(SQLModel, table=True):
    """The audit trail of every tool the bot ran, proposed or was refused."""

    __table_args__ = (Index("ix_toolcall_conv_time", "conversation_id", "created_at"),)

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: str = Field(foreign_key="conversation.id")
    tool: str
    arguments: dict[str, Any] = _json(dict)  # redacted: no emails, addresses, card numbers
    outcome: str  # ok | refused | invalid | ask | proposed | confirmed | declined | error
    result: dict[str, Any] = _json(dict)
    latency_ms: float = 0.0
    created_at: datetime = Field(default_factory=utcnow)


class MessageFeedback(SQLModel, table=True):
    """A shopper's thumbs up / down on one bot reply (the latest vote counts)."""

    __table_args__ = (UniqueConstraint("conversation_id", "message_id"),)

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: str = Field(foreign_key="conversation.id", index=True)
    message_id: int = Field(foreign_key="message.id")
    vote: str = Field(max_length=8)  # up | down
    created_at: datetime = Field(default_factory=utcnow)


class ConversationRating(SQLModel, table=True):
    """The 1-5 satisfaction rating a shopper gives when the chat ends (one per conversation)."""

    conversation_id: str = Field(foreign_key="conversation.id", primary_key=True, max_length=36)
    rating: int
    comment: str | None = Field(default=None, max_length=1000)
    created_at: datetime = Field(default_factory=utcnow)


class SuggestedReply(SQLModel, table=True):
    """A reply the bot drafted for an agent (bot/suggest.py), and what the agent did with it: the
    acceptance and edit rates of the analytics."""

    id: int | None = Field(default=None, primary_key=True)
    conversation_id: str = Field(foreign_key="conversation.id", index=True)
    message_id: int = Field(foreign_key="message.id")  # the shopper message it answers
    rank: int = 0
    text: str
    citations: list[dict[str, Any]] = _json(list)
    action: dict[str, Any] | None = _json(None)  # a proposed tool call: {tool, args, summary}
    status: str = Field(default="offered", max_length=8)  # offered | accepted | edited | ignored
    sent_text: str | None = None
    agent_id: int | None = Field(default=None, foreign_key="staffuser.id")
    created_at: datetime = Field(default_factory=utcnow)
    decided_at: datetime | None = None


# ---- admin: prompt versions and A/B tests (api/admin.py) ----------------------------------------


class PromptVersion(SQLModel, table=True):
    """Every saved text of a prompt file (front matter included): history, diff and rollback."""

    __table_args__ = (UniqueConstraint("name", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, max_length=64)
    version: int  # 1, 2, ... per name; a save names the version it started from (optimistic locking)
    text: str
    source: str = Field(default="save", max_length=16)  # file | save | rollback | promote
    note: str | None = Field(default=None, max_length=500)
    author_id: int | None = Field(default=None, foreign_key="staffuser.id")
    created_at: datetime = Field(default_factory=utcnow)


class PromptABTest(SQLModel, table=True):
    """Two versions of one prompt, split per conversation; stopped with a winner or without."""

    id: int | None = Field(default=None, primary_key=True)
    prompt_name: str = Field(index=True, max_length=64)
    version_a: int  # control
    version_b: int  # challenger
    share_b: float = 0.5  # the fraction of new conversations that get version_b
    status: str = Field(default="running", max_length=8)  # running | stopped
    winner: int | None = None  # the promoted version, when one was
    note: str | None = Field(default=None, max_length=500)
    created_by: int | None = Field(default=None, foreign_key="staffuser.id")
    created_at: datetime = Field(default_factory=utcnow)
    stopped_at: datetime | None = None


class PromptAssignment(SQLModel, table=True):
    """The arm a conversation got in a test: decided once by a hash of its id, then stored (sticky)."""

    test_id: int = Field(foreign_key="promptabtest.id", primary_key=True)
    conversation_id: str = Field(foreign_key="conversation.id", primary_key=True, max_length=36)
    arm: str = Field(max_length=1)  # A | B
    version: int
    created_at: datetime = Field(default_factory=utcnow)


class OrderExchange(SQLModel, table=True):
    """One item of a delivered order swapped for another version of the same product (the order is
    then "exchange requested"): what goes back, what is sent, and the price difference, settled on the
    method that paid for the order when the original item is back (> 0 charged, < 0 refunded)."""

    id: int | None = Field(default=None, primary_key=True)
    order_id: str = Field(foreign_key="orders.id", index=True, max_length=16)
    order_item_id: int = Field(foreign_key="orderitem.id")
    old_variant_id: str = Field(foreign_key="variant.id", max_length=32)
    new_variant_id: str = Field(foreign_key="variant.id", max_length=32)
    price_difference: float
    payment_method_id: str = Field(foreign_key="paymentmethod.id", max_length=64)
    channel: str = Field(default="chat", max_length=16)  # chat | agent | web | api
    requested_at: datetime = Field(default_factory=utcnow)
