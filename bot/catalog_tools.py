"""Catalog tools: recommendations and stock outlook, for the shopper in the session.

Both answer from the store's data only: product names, prices, options, reasons and dates come from
recsys/ and commerce/, and the reply is a sentence built from them (nothing for a model to invent).
The shopper's words choose what to look at; whom it is for comes from the session.
"""

import re
from typing import Any

from pydantic import BaseModel

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


def variant_label(variant: Variant, product_name: str) -> str:
    return f"{product_name} ({_options_text(variant.options)})" if variant.options else product_name


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
    ]
