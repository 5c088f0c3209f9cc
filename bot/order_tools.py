"""Write tools on a delivered or pending order: exchange an item for another version, change the
shipping address.

Like cancel and return: the order is the session customer's or reads as not found, the risk gate
(bot/risk.py) scores the action before anything is proposed, and the change runs only after the
shopper's yes. What to exchange, for what, and where to ship come from the shopper's own words: a
model may name them (each word must be the shopper's), and otherwise the tool reads them from what
the shopper wrote. When the words leave a choice open, the tool asks instead of guessing.
"""

import re
from dataclasses import dataclass
from typing import Any

from pydantic import Field
from sqlmodel import Session

from bot import slots
from bot.tools import OrderArgs, Tool, ToolContext, ToolResult, _owned_order, not_found, order_card, propose
from commerce import orders
from commerce.addresses import InvalidAddress, ShippingAddress, validate_address
from commerce.models import Order, OrderItem, Variant

MAX_CHOICES = 6  # versions listed when the shopper has to pick one


class ExchangeArgs(OrderArgs):
    item: str | None = Field(
        default=None,
        max_length=100,
        description="The item to exchange, as the shopper named it: its product name or item id",
        json_schema_extra={"slot": "phrase"},
    )
    new_options: str | None = Field(
        default=None,
        max_length=200,
        description="The option values the shopper wants instead, in their words (like 'linear switches')",
        json_schema_extra={"slot": "phrase"},
    )
    new_item_id: str | None = Field(
        default=None,
        pattern=r"^[0-9]{10}$",
        description="The item id of the version the shopper wants, if they wrote it",
        json_schema_extra={"slot": "item_id"},
    )


class AddressArgs(OrderArgs):
    street: str | None = Field(
        default=None,
        max_length=120,
        description="House number and street",
        json_schema_extra={"slot": "phrase"},
    )
    address2: str | None = Field(
        default=None, max_length=50, description="Apartment or suite", json_schema_extra={"slot": "phrase"}
    )
    city: str | None = Field(default=None, max_length=60, json_schema_extra={"slot": "phrase"})
    state: str | None = Field(default=None, max_length=30, json_schema_extra={"slot": "phrase"})
    zip: str | None = Field(default=None, max_length=12, json_schema_extra={"slot": "phrase"})


def _options_text(options: dict[str, str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in options.items())


def _ask(text: str, reason: str, view: dict[str, Any]) -> ToolResult:
    """A question back to the shopper: nothing is proposed until their words settle it."""
    return ToolResult(outcome="ask", text=text, data=view, card=order_card(view), audit={"reason": reason})


def _refuse(text: str, reason: str, view: dict[str, Any]) -> ToolResult:
    return ToolResult(
        outcome="refused", text=text, data=view, card=order_card(view), audit={"reason": reason}
    )


# ---- which item, which version --------------------------------------------------------------------


def _phrase(text: str) -> re.Pattern[str]:
    """A value or name as a whole phrase: any spacing, no letter or digit glued on either side."""
    body = r"\s+".join(re.escape(w) for w in text.split())
    return re.compile(rf"(?<![A-Za-z0-9]){body}(?![A-Za-z0-9])", re.IGNORECASE)


def _name_score(item: OrderItem, text: str) -> int:
    """2: the product's full name or item id is in the text; 1: its head noun ("keyboard"); 0: neither."""
    if item.variant_id in text or _phrase(item.name).search(text) or _phrase(item.name + "s").search(text):
        return 2
    head = re.split(r"[\s-]+", item.name)[-1]
    return (
        1 if len(head) > 2 and re.search(rf"(?<![A-Za-z]){re.escape(head)}s?(?![A-Za-z])", text, re.I) else 0
    )


def named_items(items: list[OrderItem], texts: list[str]) -> list[OrderItem]:
    """The order's items the shopper named (one per version), from their latest words that name any;
    the only version when the order has one."""
    distinct = list({i.variant_id: i for i in items}.values())
    if len(distinct) == 1:
        return distinct
    for text in reversed(texts):
        scores = {i.variant_id: _name_score(i, text) for i in distinct}
        best = max(scores.values())
        if best:
            return [i for i in distinct if scores[i.variant_id] == best]
    return distinct


def _mentions(options: dict[str, set[str]], text: str) -> dict[str, set[str]]:
    """Option values written in `text`, by option. Short values ("L") count only after their option's
    name ("size L"); "none" also as "no backlight" / "without backlight"."""
    found: dict[str, set[str]] = {}
    for key, values in options.items():
        for value in values:
            pattern = _phrase(value) if len(value) > 2 else _phrase(f"{key} {value}")
            hit = pattern.search(text) or (
                value.lower() == "none" and re.search(rf"\b(?:no|without)\s+{re.escape(key)}\b", text, re.I)
            )
            if hit:
                found.setdefault(key, set()).add(value)
    return found


@dataclass
class Wanted:
    """What the shopper asked the item to become: option -> value, or why that is not settled."""

    options: dict[str, str]
    unclear: dict[str, list[str]]


def wanted_options(item: OrderItem, variants: list[Variant], texts: list[str]) -> Wanted:
    """The option values the shopper wants that differ from the item's, from their latest words that
    name any (a value they already have, "my clicky keyboard", is not a wish)."""
    current = dict(item.options or {})
    values: dict[str, set[str]] = {}
    for v in variants:
        for key, value in (v.options or {}).items():
            values.setdefault(key, set()).add(value)
    for text in reversed(texts):
        new = {k: vs - {current.get(k)} for k, vs in _mentions(values, text).items()}
        new = {k: vs for k, vs in new.items() if vs}
        if new:
            return Wanted(
                options={k: next(iter(vs)) for k, vs in new.items() if len(vs) == 1},
                unclear={k: sorted(vs) for k, vs in new.items() if len(vs) > 1},
            )
    return Wanted({}, {})


def _choices(item: OrderItem, variants: list[Variant], wanted: dict[str, str]) -> str:
    """Available versions (those with the wanted values first), with prices: what the shopper can pick."""
    available = [v for v in variants if v.available and v.id != item.variant_id]
    matching = [v for v in available if all((v.options or {}).get(k) == val for k, val in wanted.items())]
    shown = (matching or available)[:MAX_CHOICES]
    return "; ".join(f"{_options_text(v.options or {})} (${v.price:.2f})" for v in shown)


@dataclass
class ExchangePlan:
    item: OrderItem | None = None
    variant: Variant | None = None
    question: str = ""  # set: ask this instead
    reason: str = ""


def _item_for(order: Order, items: list[OrderItem], args: ExchangeArgs, texts: list[str]) -> ExchangePlan:
    picked = named_items(items, [args.item] if args.item else texts)
    if len(picked) == 1:
        return ExchangePlan(item=picked[0])
    listed = ", ".join(f"the {i.name} ({_options_text(i.options or {})})" for i in picked)
    return ExchangePlan(
        question=f"Which item of order {order.id} would you like to exchange: {listed}? "
        "An order can be exchanged only once, so please name the item and the option you want.",
        reason="which_item",
    )


def plan_exchange(db: Session, order: Order, args: ExchangeArgs, texts: list[str]) -> ExchangePlan:
    """The item and the version it should become, or the question that settles them."""
    plan = _item_for(order, orders.order_items(db, order), args, texts)
    if plan.item is None:
        return plan
    item = plan.item
    variants = [db.get(Variant, item.variant_id), *orders.exchange_options(db, item)]
    variants = [v for v in variants if v is not None]
    if args.new_item_id:
        chosen = next((v for v in variants if v.id == args.new_item_id), None)
        if chosen is None:
            return ExchangePlan(
                item=item,
                question=f"Item {args.new_item_id} is not a version of the {item.name}. "
                f"Available versions: {_choices(item, variants, {})}.",
                reason="other_product",
            )
        return ExchangePlan(item=item, variant=chosen)
    wanted = wanted_options(item, variants, [args.new_options] if args.new_options else texts)
    if wanted.unclear:
        key, values = next(iter(wanted.unclear.items()))
        return ExchangePlan(
            item=item, question=f"Which {key} would you like: {' or '.join(values)}?", reason="which_option"
        )
    if not wanted.options:
        return ExchangePlan(
            item=item,
            question=f"Which version of the {item.name} would you like instead of "
            f"{_options_text(item.options or {})}? Available: {_choices(item, variants, {})}.",
            reason="which_version",
        )
    target = {**(item.options or {}), **wanted.options}
    exact = next((v for v in variants if (v.options or {}) == target), None)
    if exact is None or not exact.available:
        state = "is not available" if exact is not None else "does not exist"
        choices = _choices(item, variants, wanted.options)
        return ExchangePlan(
            item=item,
            variant=exact,
            question=f"The {item.name} with {_options_text(target)} {state}. "
            + (f"Available versions: {choices}." if choices else "No other version is available."),
            reason="unavailable" if exact is not None else "no_such_version",
        )
    return ExchangePlan(item=item, variant=exact)


def _settlement(quote: orders.ExchangeQuote) -> str:
    """How the price difference settles, in words, on the method that paid for the order."""
    diff = quote.difference
    if diff > 0:
        return f"The new version costs ${diff:.2f} more, charged to your {quote.payment_method}."
    if diff < 0:
        return (
            f"The new version costs ${-diff:.2f} less: we refund ${-diff:.2f} to your {quote.payment_method}."
        )
    return "The price is the same, so nothing is charged or refunded."


def _exchange_summary(order: Order, quote: orders.ExchangeQuote) -> str:
    line = quote.lines[0]
    changed = {k: v for k, v in line.new_options.items() if line.old_options.get(k) != v}
    return (
        f"Exchange the {line.name} ({_options_text(line.old_options)}, ${line.old_price:.2f}) in order "
        f"{order.id} for the version with {_options_text(changed)} (item {line.new_variant_id}, "
        f"${line.new_price:.2f}). {_settlement(quote)} We email you instructions to send the original back. "
        "An order can be exchanged only once."
    )


async def propose_exchange(args: ExchangeArgs, ctx: ToolContext) -> ToolResult:
    order, why = _owned_order(ctx, args.order_id)
    if order is None:
        return not_found(args.order_id, why)
    view = orders.order_view(ctx.db, order)
    try:
        orders.check_exchangeable(ctx.db, order, now=ctx.now())
    except orders.OrderNotExchangeable as exc:
        return _refuse(f"Order {order.id} can't be exchanged: {exc.why}.", "not_exchangeable", view)
    plan = plan_exchange(ctx.db, order, args, ctx.user_texts)
    if plan.item is None or plan.variant is None or plan.question:
        return _ask(plan.question, plan.reason, view)
    try:
        quote = orders.quote_exchange(ctx.db, order, {plan.item.id: plan.variant.id})  # type: ignore[dict-item]
    except orders.OrderNotExchangeable as exc:
        return _refuse(f"Order {order.id} can't be exchanged: {exc.why}.", "not_exchangeable", view)
    settled = ExchangeArgs(order_id=order.id, item=plan.item.variant_id, new_item_id=plan.variant.id)
    from bot import risk

    stopped = risk.gate(ctx, order, "exchange", "exchange_items", settled.model_dump())
    if stopped is not None:
        return stopped
    return propose("exchange_items", settled, ctx, view, _exchange_summary(order, quote))


async def execute_exchange(args: ExchangeArgs, ctx: ToolContext) -> ToolResult:
    order, why = _owned_order(ctx, args.order_id)
    if order is None:
        return not_found(args.order_id, why)
    plan = plan_exchange(ctx.db, order, args, [])
    if plan.item is None or plan.variant is None or plan.question:
        return ToolResult(outcome="refused", text=f"Order {order.id} can no longer be exchanged that way.")
    try:
        order, quote = orders.request_exchange(
            ctx.db, order.id, {plan.item.id: plan.variant.id}, now=ctx.now()
        )  # type: ignore[dict-item]
    except orders.OrderNotExchangeable as exc:
        return ToolResult(outcome="refused", text=f"Order {order.id} can no longer be exchanged: {exc.why}.")
    view = orders.order_view(ctx.db, order)
    line = quote.lines[0]
    return ToolResult(
        outcome="confirmed",
        text=f"Done: the exchange of the {line.name} in order {order.id} is requested (new item "
        f"{line.new_variant_id}). {_settlement(quote)} We'll email you instructions to send the original back.",
        data={**view, "exchange": {"old_item_id": line.old_variant_id, "new_item_id": line.new_variant_id}},
        card=order_card(view),
    )


# ---- the shipping address of a pending order -----------------------------------------------------

ASK_ADDRESS = (
    "What is the new shipping address for order {order_id}? Please write it on one line: house number "
    "and street, city, state and zip code."
)


def _address_parts(args: AddressArgs, texts: list[str]) -> dict[str, str] | None:
    """The new address: the model's arguments when it gave any, else the shopper's latest one-line address."""
    if any((args.street, args.city, args.state, args.zip)):
        return {
            "street": args.street or "",
            "address2": args.address2 or "",
            "city": args.city or "",
            "state": args.state or "",
            "zip": args.zip or "",
        }
    for text in reversed(texts):
        found = slots.addresses(text)
        if found:
            return found[-1]
    return None


def _validated(parts: dict[str, str]) -> ShippingAddress:
    street, unit = parts["street"], parts.get("address2", "")
    if not unit and "," in street:  # "445 Maple Drive, Suite 394" in one argument
        street, unit = (p.strip() for p in street.split(",", 1))
    return validate_address(street, parts["city"], parts["state"], parts["zip"], unit)


def _invalid_text(exc: InvalidAddress) -> str:
    problems = "; ".join(f"{field}: {why}" for field, why in exc.errors.items())
    return f"That address doesn't look right ({problems}). Could you write it again?"


async def propose_address_change(args: AddressArgs, ctx: ToolContext) -> ToolResult:
    order, why = _owned_order(ctx, args.order_id)
    if order is None:
        return not_found(args.order_id, why)
    view = orders.order_view(ctx.db, order)
    try:
        orders.check_address_changeable(order)
    except orders.AddressNotChangeable as exc:
        return _refuse(f"The address of order {order.id} can't be changed: {exc.why}.", "not_pending", view)
    parts = _address_parts(args, ctx.user_texts)
    if parts is None:
        return _ask(ASK_ADDRESS.format(order_id=order.id), "no_address", view)
    try:
        address = _validated(parts)
    except InvalidAddress as exc:
        return _ask(_invalid_text(exc), "invalid_address", view)
    if orders.ships_to(order, address):
        return _refuse(f"Order {order.id} already ships to that address.", "same_address", view)
    settled = AddressArgs(
        order_id=order.id,
        street=address.address1,
        address2=address.address2 or None,
        city=address.city,
        state=address.state,
        zip=address.zip,
    )
    from bot import risk

    stopped = risk.gate(ctx, order, "address_change", "change_address", settled.model_dump())
    if stopped is not None:
        return stopped
    summary = f"Ship order {order.id} to {address.one_line()} instead. This changes this order only."
    return propose("change_address", settled, ctx, view, summary)


async def execute_address_change(args: AddressArgs, ctx: ToolContext) -> ToolResult:
    order, why = _owned_order(ctx, args.order_id)
    if order is None:
        return not_found(args.order_id, why)
    parts = _address_parts(args, [])
    try:
        address = _validated(parts or {})
        order = orders.change_address(ctx.db, order.id, address, channel="chat", now=ctx.now())
    except (InvalidAddress, KeyError):
        return ToolResult(outcome="refused", text="That address can no longer be used; nothing was changed.")
    except orders.AddressNotChangeable as exc:
        return ToolResult(
            outcome="refused", text=f"The address of order {order.id} can't be changed: {exc.why}."
        )
    view = orders.order_view(ctx.db, order)
    return ToolResult(
        outcome="confirmed",
        text=f"Done: order {order.id} will ship to {address.one_line()}.",
        data=view,
        card=order_card(view),
    )


# ---- registration ---------------------------------------------------------------------------------

EXCHANGE_TRIGGERS = re.compile(
    r"\bexchang|\bswap|\btrade (?:it|them|this|my)\b|换货|调换|换成|换一?个|换(?:尺码|颜色|大小|款)",
    re.IGNORECASE,
)
ADDRESS_TRIGGERS = re.compile(
    r"\b(?:change|update|correct|fix|modify|edit|new|different|wrong)\b[^.?!\n]{0,40}\baddress"
    r"|\baddress\b[^.?!\n]{0,30}\b(?:change|update|wrong|instead)"
    r"|\b(?:ship|send|deliver)\w*\b[^.?!\n]{0,40}\bto\s+\d{1,6}\s+\w"
    r"|(?:改|更改|修改|更换|换)[^。？！]{0,8}地址|地址[^。？！]{0,6}(?:改|换)|寄到|送到",
    re.IGNORECASE,
)


def order_write_tools() -> list[Tool]:
    return [
        Tool(
            "exchange_items",
            "Exchange an item of one of the shopper's delivered orders for another version (size, colour, "
            "other options) of the same product; the price difference settles on the original payment "
            "method (asks for confirmation).",
            ExchangeArgs,
            propose_exchange,
            execute=execute_exchange,
            arg_sets=[["order_id"]],
            utterances=(
                "I want to exchange the keyboard in order #W1234567 for linear switches",
                "please exchange my order #W7654321 for a different size",
                "swap the T-shirt from order #W1234567 for size L in blue",
                "exchange the item in my order #W1234567 for the black one",
                "我想把订单#W1234567的衣服换成大号",
                "订单#W7654321换货，换成黑色的",
            ),
            triggers=EXCHANGE_TRIGGERS,
            example=(
                '"exchange the keyboard in #W7654321 for linear switches" -> '
                '{"action":"exchange_items","order_id":"#W7654321"}'
            ),
        ),
        Tool(
            "change_address",
            "Change the shipping address of one of the shopper's pending orders (asks for confirmation).",
            AddressArgs,
            propose_address_change,
            execute=execute_address_change,
            arg_sets=[["order_id"]],
            utterances=(
                "please change the shipping address of order #W1234567 to 445 Maple Drive, Fort Worth, TX 76165",
                "ship my order #W7654321 to 12 Oak Street, Austin, TX 78701 instead",
                "I moved, update the address on #W1234567",
                "wrong address on order #W7654321, it should go to 9 Elm Court, Boston, MA 02118",
                "请把订单#W1234567的收货地址改成 445 Maple Drive, Fort Worth, TX 76165",
                "修改订单#W7654321的地址",
            ),
            triggers=ADDRESS_TRIGGERS,
            example=(
                '"change the address of #W7654321 to 12 Oak Street, Austin, TX 78701" -> '
                '{"action":"change_address","order_id":"#W7654321"}'
            ),
        ),
    ]
