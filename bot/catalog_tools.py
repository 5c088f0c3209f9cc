"""Catalog tools: recommendations and stock outlook, for the shopper in the session.

Both answer from the store's data only: product names, prices, options, reasons and dates come from
recsys/ and commerce/, and the reply is a sentence built from them (nothing for a model to invent).
The shopper's words choose what to look at; whom it is for comes from the session.
"""

import asyncio
import re
from typing import Any

from pydantic import BaseModel
from sqlmodel import Session

from bot.tools import Tool, ToolContext, ToolResult
from commerce.models import Variant

# Words that ask for a recommendation without saying what for: not a search query.
_BOILERPLATE = re.compile(
    r"\b(can|could|would|will|you|please|recommend\w*|suggest\w*|some|something|anything|any|me|my|i|"
    r"what|which|should|buy|get|next|for|a|an|the|to|do|have|got|ideas?|picks?|products?|items?|"
    r"stuff|things?|else|other|like|might|may|want|need|with|goes|go|your|store|shop|good|nice|"
    r"also|us|it|is|are|there|show|give|of|on|in|and|or|that|this|these|those|new)\b|[?!.,;:？！，。]|推荐|一些|商品|什么|东西|你|我|有|的|吗|吧|呢|给|买|好",
    re.IGNORECASE,
)


class RecommendArgs(BaseModel):
    pass


def recommendation_query(text: str) -> str | None:
    """What the shopper is looking for ("something for hiking" -> "hiking"); None for a plain ask."""
    rest = " ".join(_BOILERPLATE.sub(" ", text).split())
    return rest if len(rest) >= 3 else None


def _options_text(options: dict[str, str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in options.items())


async def recommend_products(args: RecommendArgs, ctx: ToolContext) -> ToolResult:
    from recsys.service import recommend_for_customer
    from shopdesk.settings import get_settings

    settings = ctx.settings or get_settings()
    query = recommendation_query(ctx.user_texts[-1] if ctx.user_texts else "")
    picks = recommend_for_customer(ctx.db, settings, ctx.customer_id or "", k=4, query=query)
    if not picks:
        return ToolResult(
            outcome="refused",
            text="I couldn't find products to suggest right now.",
            audit={"reason": "no_recommendations"},
        )
    items: list[dict[str, Any]] = [
        {
            "variant_id": p.variant_id,
            "product_id": p.product_id,
            "name": p.name,
            "price": p.price,
            "options": p.options,
            "reason": p.reason,
            "reason_kind": p.reason_kind,
        }
        for p in picks
    ]
    lines = [f"- {p.name} ({_options_text(p.options)}), ${p.price:.2f}: {p.reason}" for p in picks]
    opening = (
        "Here are some of our popular products right now:"
        if all(p.fallback for p in picks)
        else "Here are some picks for you:"
    )
    return ToolResult(
        outcome="ok",
        text=opening + "\n" + "\n".join(lines),
        data={"items": items, "query": query},
        card={"kind": "products", "items": items},
        audit={"query": query, "fallback": all(p.fallback for p in picks)},
    )


class StockArgs(BaseModel):
    pass


MAX_OUTLOOKS = 4


def _outlook_sentence(outlook: Any, discontinued: bool) -> str:
    """One sentence for the shopper: in stock, a restock window, or plainly no date (no internals)."""
    label = (
        f"{outlook.product_name} ({_options_text(outlook.options)})"
        if outlook.options
        else outlook.product_name
    )
    if outlook.in_stock:
        return f"{label} is in stock."
    if outlook.restock_earliest and outlook.restock_latest:
        window = f"between {outlook.restock_earliest.isoformat()} and {outlook.restock_latest.isoformat()}"
        if outlook.basis == "purchase_order":
            return f"{label} is out of stock; a delivery is on its way and we expect it back {window}."
        return f"{label} is out of stock; no delivery is scheduled yet, so our best estimate is {window}."
    if discontinued:
        return f"{label} is out of stock and is no longer made, so it will not be restocked."
    return f"{label} is out of stock, and we don't have a restock date for it yet."


async def stock_outlook(args: StockArgs, ctx: ToolContext) -> ToolResult:
    """Stock and restock dates of the variants the shopper named ("the blue M t-shirt")."""
    from commerce.inventory import find_variants
    from commerce.inventory import stock_outlook as outlook_of
    from commerce.models import SupplierItem
    from shopdesk.settings import get_settings

    settings = ctx.settings or get_settings()
    variants: list[Variant] = []
    for text in reversed(ctx.user_texts[-3:]):  # this message first, then what came just before
        variants = find_variants(ctx.db, text)
        if variants:
            break
    if not variants:
        return ToolResult(
            outcome="invalid",
            text="Which product do you mean? Tell me its name and, if you know them, the options (like colour and size).",
            audit={"reason": "no_product"},
        )
    ids = [v.id for v in variants]

    def outlooks_of() -> list[Any]:
        with Session(ctx.db.get_bind()) as db:
            return [outlook_of(db, settings, vid) for vid in ids]

    # In a thread, with its own session: an uncached forecast is up to a second of CPU per variant,
    # which on the event loop would stall every other chat's stream.
    outlooks = await asyncio.to_thread(outlooks_of)
    # In-stock versions first: a shopper asking "is it available" wants those; then the rest.
    outlooks.sort(key=lambda o: (not o.in_stock, o.restock_earliest or o.as_of))
    shown = outlooks[:MAX_OUTLOOKS]
    sentences = []
    for outlook in shown:
        supplier = ctx.db.get(SupplierItem, outlook.variant_id)
        sentences.append(_outlook_sentence(outlook, bool(supplier and supplier.discontinued)))
    more = len(outlooks) - len(shown)
    if more:
        sentences.append(
            f"{more} more version{'s' if more != 1 else ''} of it match; tell me the options to narrow it down."
        )
    items = [
        {
            "variant_id": o.variant_id,
            "name": o.product_name,
            "options": o.options,
            "in_stock": o.in_stock,
            "restock_earliest": o.restock_earliest.isoformat() if o.restock_earliest else None,
            "restock_latest": o.restock_latest.isoformat() if o.restock_latest else None,
            "has_estimate": o.restock_earliest is not None,
        }
        for o in shown
    ]
    text = " ".join(sentences)
    return ToolResult(
        outcome="ok",
        text=text,
        data={"outlooks": [o.model_dump(mode="json") for o in shown]},
        card={"kind": "restock", "label": shown[0].product_name, "text": text, "items": items},
        audit={"variants": [o.variant_id for o in shown], "bases": [o.basis for o in shown]},
    )


def catalog_tools() -> list[Tool]:
    return [
        Tool(
            "recommend_products",
            "Suggest available products for the shopper (from their purchases, or what is popular).",
            RecommendArgs,
            recommend_products,
            needs_identity=False,
            utterances=(
                "can you recommend something?",
                "what goes well with my hiking boots?",
                "any gift ideas?",
                "what should I buy next?",
                "show me products similar to my backpack",
                "suggest something for camping",
                "你有什么推荐的商品吗？",
            ),
            example='"can you recommend something?" -> {"action":"recommend_products"}',
        ),
        Tool(
            "stock_outlook",
            "Whether a product the shopper names is in stock, and when a sold-out one is expected back.",
            StockArgs,
            stock_outlook,
            needs_identity=False,
            utterances=(
                "when will the blue M t-shirt be back in stock?",
                "is the black office chair available?",
                "do you have the hiking boots in size 10?",
                "when do you restock the electric kettle?",
                "is this item sold out?",
                "这个商品什么时候有货？",
            ),
            # Only on offer when the shopper asks about stock in so many words.
            triggers=re.compile(
                r"stock|availab|sold out|back in|\bdo you (?:still )?have\b|\bin size\b|有货|库存|到货|缺货|补货",
                re.IGNORECASE,
            ),
            example='"when is the red kettle back in stock?" -> {"action":"stock_outlook"}',
        ),
    ]
