"""The demo storefront and the widget's own REST: products, a reply's thumbs up / down, the chat's
rating, and the policy pages that citations link to (rendered safely: every text is escaped)."""

import html
import re
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field
from sqlalchemy import case
from sqlmodel import col, func, select

from api.deps import ROW_ID_MAX, RowId, SessionDep, SettingsDep, ShopperSession
from commerce.models import ConversationRating, Message, MessageFeedback, Product, Variant, utcnow
from retrieval.ingest import slugify

router = APIRouter(tags=["storefront"])
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,80}$")


def _variant(v: Variant) -> dict[str, Any]:
    return {
        "id": v.id,
        "options": v.options,
        "price": round(v.price, 2),
        "available": bool(v.available and v.stock_on_hand > 0),
        "stock": v.stock_on_hand,
    }


@router.get("/api/products")
def list_products(
    db: SessionDep,
    q: str | None = Query(None, max_length=100),
    limit: int = Query(60, ge=1, le=200),
    offset: int = Query(0, ge=0, le=ROW_ID_MAX),
) -> dict[str, Any]:
    """The catalogue for the storefront grid: price range and availability over each product's variants."""
    available = func.sum(case((col(Variant.available) & (col(Variant.stock_on_hand) > 0), 1), else_=0))
    query = (
        select(
            Product.id,
            Product.name,
            func.min(Variant.price),
            func.max(Variant.price),
            func.count(col(Variant.id)),
            available,
        )
        .join(Variant, col(Variant.product_id) == col(Product.id))
        .group_by(col(Product.id), col(Product.name))
        .order_by(col(Product.name), col(Product.id))
    )
    if q:
        query = query.where(col(Product.name).ilike(f"%{q}%"))
    rows = db.exec(query.offset(offset).limit(limit)).all()
    return {
        "products": [
            {
                "id": r[0],
                "name": r[1],
                "price_min": round(r[2], 2),
                "price_max": round(r[3], 2),
                "variants": r[4],
                "available_variants": int(r[5] or 0),
                "available": bool(r[5]),
            }
            for r in rows
        ]
    }


@router.get("/api/products/{product_id}")
def product_detail(product_id: str, db: SessionDep) -> dict[str, Any]:
    product = db.get(Product, product_id)
    if product is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown product {product_id!r}")
    variants = db.exec(
        select(Variant).where(Variant.product_id == product.id).order_by(col(Variant.price), col(Variant.id))
    ).all()
    prices = [v.price for v in variants] or [0.0]
    return {
        "id": product.id,
        "name": product.name,
        "description": product.description,
        "price_min": round(min(prices), 2),
        "price_max": round(max(prices), 2),
        "available": any(v.available and v.stock_on_hand > 0 for v in variants),
        "variants": [_variant(v) for v in variants],
    }


class FeedbackRequest(BaseModel):
    message_id: RowId
    vote: Literal["up", "down"]


class RatingRequest(BaseModel):
    rating: int = Field(ge=1, le=5)
    comment: str | None = Field(default=None, max_length=1000)


@router.post("/api/conversation/feedback")
def message_feedback(body: FeedbackRequest, shopper: ShopperSession, db: SessionDep) -> dict[str, Any]:
    """A thumbs up / down on one of the bot's replies in the token's own conversation (latest vote wins)."""
    msg = db.get(Message, body.message_id)
    if msg is None or msg.conversation_id != shopper.conversation_id or msg.role != "assistant":
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such reply in this conversation")
    row = db.exec(
        select(MessageFeedback).where(
            MessageFeedback.conversation_id == shopper.conversation_id,
            MessageFeedback.message_id == msg.id,
        )
    ).first()
    if row is None:
        row = MessageFeedback(conversation_id=shopper.conversation_id, message_id=msg.id or 0, vote=body.vote)
    else:
        row.vote, row.created_at = body.vote, utcnow()
    db.add(row)
    db.commit()
    return {"message_id": msg.id, "vote": row.vote}


@router.post("/api/conversation/rating")
def conversation_rating(body: RatingRequest, shopper: ShopperSession, db: SessionDep) -> dict[str, Any]:
    """The shopper's 1-5 satisfaction rating when the chat ends (a second rating replaces the first)."""
    row = db.get(ConversationRating, shopper.conversation_id)
    if row is None:
        row = ConversationRating(conversation_id=shopper.conversation_id, rating=body.rating)
    row.rating, row.comment, row.created_at = body.rating, body.comment, utcnow()
    db.add(row)
    db.commit()
    return {"conversation_id": shopper.conversation_id, "rating": row.rating}


# ---- policy pages -------------------------------------------------------------------------------

_INLINE = re.compile(r"\*\*(.+?)\*\*|`([^`]+)`")


def _inline(text: str) -> str:
    """Escaped text with **bold** and `code`; nothing else of the source becomes markup."""
    out, last = [], 0
    for m in _INLINE.finditer(text):
        out.append(html.escape(text[last : m.start()]))
        out.append(f"<strong>{html.escape(m[1])}</strong>" if m[1] else f"<code>{html.escape(m[2])}</code>")
        last = m.end()
    out.append(html.escape(text[last:]))
    return "".join(out)


def render_policy(markdown: str) -> tuple[str, str]:
    """(title, body html): headings with the same anchors the retriever cites, paragraphs, lists, tables."""
    out: list[str] = []
    seen: dict[str, int] = {}
    title = ""
    para: list[str] = []
    lst: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        if para:
            out.append(f"<p>{_inline(' '.join(para))}</p>")
            para.clear()
        if lst:
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in lst) + "</ul>")
            lst.clear()
        if table:
            rows = [r for r in table if not all(re.fullmatch(r":?-{3,}:?", c) for c in r)]
            head, body = rows[0], rows[1:]
            out.append(
                "<table><thead><tr>"
                + "".join(f"<th>{_inline(c)}</th>" for c in head)
                + "</tr></thead><tbody>"
                + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body)
                + "</tbody></table>"
            )
            table.clear()

    for line in markdown.splitlines():
        stripped = line.strip()
        heading = re.match(r"^(#{1,6})\s+(.*)$", stripped)
        if heading:
            flush()
            level, text = len(heading[1]), heading[2].strip()
            anchor = slugify(text)
            if anchor in seen:
                seen[anchor] += 1
                anchor = f"{anchor}-{seen[anchor]}"
            else:
                seen[anchor] = 0
            title = title or text
            out.append(f'<h{level} id="{html.escape(anchor)}">{_inline(text)}</h{level}>')
        elif not stripped:
            flush()
        elif stripped.startswith("|"):
            if para or lst:
                flush()
            table.append([c.strip() for c in stripped.strip("|").split("|")])
        elif re.match(r"^([-*]|\d+\.)\s+", stripped):
            if para or table:
                flush()
            lst.append(re.sub(r"^([-*]|\d+\.)\s+", "", stripped))
        elif lst and line.startswith((" ", "\t")):
            lst[-1] += " " + stripped
        else:
            if lst or table:
                flush()
            para.append(stripped)
    flush()
    return title, "\n".join(out)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><link rel="stylesheet" href="/static/widget.css"></head>
<body class="sd-policy"><nav><a href="/">&larr; Store</a></nav><main>{body}</main></body></html>"""


@router.get("/policies/{name}", response_class=HTMLResponse, include_in_schema=False)
def policy_page(name: str, settings: SettingsDep) -> HTMLResponse:
    """A store policy (`settings.policies_dir/<name>.md`, where the admin's KB pages live too); section
    anchors match the citations' `anchor`."""
    name = name.removesuffix(".md")
    path = Path(settings.policies_dir) / f"{name}.md"
    if not _NAME.match(name) or not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such policy page")
    title, body = render_policy(path.read_text(encoding="utf-8", errors="replace"))
    return HTMLResponse(_PAGE.format(title=html.escape(title or name), body=body))
