"""Recommendation REST (storefront and other services), over recsys.service.

- `GET /api/recommendations/{customer_id}?k=&q=`: for a customer; unknown customers (or none with
  orders) get the store's recent best sellers, marked `fallback`. Its reasons tell what the customer
  bought, so it wants the customer's own session token or X-API-Key = settings.recsys_api_key (unset:
  a demo store answers anyone); the product and cart routes say nothing personal and are open.
- `GET /api/products/{product_id}/similar?k=`: other products' variants like this one; 404 for an
  unknown product.
- `POST /api/recommendations/cart?k=`: body `["variant or product id", ...]` or
  `{"items": [...]}`: what completes the cart; 404 naming ids that are neither.
k is 1-50 (else 422). Items are available variants only, each with a reason and a fallback flag.

The routes are `async def` on purpose: a call is about 1 ms of CPU (two indexed reads and numpy over a
loaded artifact), less than the thread-pool hop a sync route costs, and the p99 target is 5 ms
(benchmarks/recsys.py: p99 2.9 ms async against 5.2 ms through the pool, idle 2-core box).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Response, status
from pydantic import BaseModel, Field

from api.deps import SessionDep, SettingsDep, require_customer_or_service
from recsys.serve import get_recommender
from recsys.service import (
    MAX_K,
    Recommendation,
    UnknownItems,
    UnknownProduct,
    complete_cart,
    recommend_for_customer,
    similar_to_product,
)

router = APIRouter(prefix="/api", tags=["recommendations"])

K = Annotated[int, Query(ge=1, le=MAX_K, description=f"How many items (1-{MAX_K})")]
Id = Annotated[str, Field(min_length=1, max_length=64)]


class RecommendationsOut(BaseModel):
    k: int
    model_version: str | None  # the artifact that ranked them (None: live popularity)
    fallback: bool  # every item is a fallback (nothing specific was known)
    items: list[Recommendation]


class CartIn(BaseModel):
    items: list[Id] = Field(max_length=200)


def _out(settings: SettingsDep, k: int, items: list[Recommendation]) -> Response:
    """Written out as built: `response_model` stays for the OpenAPI schema, but validating an answer
    made of validated models a second time cost a third of the route's time (benchmarks/recsys.py)."""
    rec = get_recommender(settings)
    out = RecommendationsOut(
        k=k,
        model_version=rec.version if rec is not None else None,
        fallback=bool(items) and all(i.fallback for i in items),
        items=items,
    )
    return Response(out.model_dump_json(), media_type="application/json")


@router.get(
    "/recommendations/{customer_id}",
    response_model=RecommendationsOut,
    dependencies=[Depends(require_customer_or_service("recsys_api_key"))],
)
async def for_customer(
    customer_id: Annotated[str, Path(min_length=1, max_length=64)],
    db: SessionDep,
    settings: SettingsDep,
    k: K = 10,
    q: Annotated[str | None, Query(max_length=500, description="What the shopper asked for")] = None,
) -> Response:
    """Available variants for this customer: hybrid picks, then buy-again slots."""
    return _out(settings, k, recommend_for_customer(db, settings, customer_id, k, query=q))


@router.get("/products/{product_id}/similar", response_model=RecommendationsOut)
async def similar(
    product_id: Annotated[str, Path(min_length=1, max_length=64)],
    db: SessionDep,
    settings: SettingsDep,
    k: K = 10,
) -> Response:
    """Variants of other products bought with, or reading like, this product."""
    try:
        items = similar_to_product(db, settings, product_id, k)
    except UnknownProduct as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    return _out(settings, k, items)


@router.post("/recommendations/cart", response_model=RecommendationsOut)
async def for_cart(
    cart: Annotated[list[Id] | CartIn, Body(description="Variant and/or product ids in the cart")],
    db: SessionDep,
    settings: SettingsDep,
    k: K = 10,
) -> Response:
    """Variants of other products that complete the cart (an empty cart gets best sellers)."""
    ids = cart.items if isinstance(cart, CartIn) else cart
    if len(ids) > 200:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, "at most 200 items in a cart")
    try:
        items = complete_cart(db, settings, list(ids), k)
    except UnknownItems as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    return _out(settings, k, items)
