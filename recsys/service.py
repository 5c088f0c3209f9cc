"""Recommendations for the store: one implementation behind the REST routes and the bot's tool.

- `recommend_for_customer(db, settings, customer_id, k, query=None)`: up to k available variants
  for a customer. Slots: the hybrid's picks first, then buy-again slots (min(2, k // 3) of the
  customer's own past items by frequency x recency, reason "bought before"). Every item the customer
  ever bought is kept out of the hybrid's slots, so a past item only ever appears labelled as such,
  and a just-bought item only in a buy-again slot. With a `query` the shopper's words are blended in
  (content vectors; word match on names without them), matches are not spread over products, and
  there are no buy-again slots.
- `similar_to_product(db, settings, product_id, k)`: other products' variants like this product's
  (raises UnknownProduct).
- `complete_cart(db, settings, item_ids, k)`: variants that go with a cart of variant and/or product
  ids; the cart's products are left out (raises UnknownItems).

Every list holds only available variants, one per product first (diversity), then more by score.
Each item says why: "bought before", "similar to X", "popular in Y" (Y: its product) or "matches
'query'"; `fallback` is true when nothing specific to the customer or items was known (unknown
customer, no history, no model artifact, items nobody bought and no text model): the list is then
the store's recent best sellers. Without an artifact, popularity is computed from the orders
(recency-weighted, cached five minutes).

Reads per request: the customer's order items, and one live read of availability and price for the
head of the ranking. Names, options and product ids come from a per-process catalog cache (refreshed
every minute, and at once for a variant it has not seen), so availability and price are never stale.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel
from sqlalchemy import bindparam
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from commerce.models import Order, OrderItem, Product, Variant
from recsys.serve import Blend, Recommender, get_recommender
from shopdesk.settings import Settings

ReasonKind = Literal["bought_before", "similar", "popular", "query"]
MAX_K = 50
CATALOG_TTL_S = 60.0
LIVE_POPULARITY_TTL_S = 300.0
LIVE_HALF_LIFE_DAYS = 90.0


class Recommendation(BaseModel):
    variant_id: str
    product_id: str
    name: str  # the product's name
    price: float
    options: dict[str, str]
    score: float
    reason: str
    reason_kind: ReasonKind
    fallback: bool


class UnknownProduct(LookupError):
    def __init__(self, product_id: str) -> None:
        super().__init__(f"unknown product: {product_id}")
        self.product_id = product_id


class UnknownItems(LookupError):
    def __init__(self, ids: list[str]) -> None:
        super().__init__(f"unknown variant or product ids: {', '.join(ids)}")
        self.ids = ids


# ---- reading the store --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Item:
    product_id: str
    name: str
    options: dict[str, str]


_catalogs: dict[str, tuple[float, dict[str, _Item]]] = {}
_catalog_lock = threading.Lock()


def _catalog(db: Session, need: Iterable[str] = ()) -> dict[str, _Item]:
    """Every variant's product, name and options (cached; re-read when stale or missing a variant)."""
    key = str(db.get_bind().url)
    hit = _catalogs.get(key)
    if hit is not None and hit[0] > time.monotonic() and all(v in hit[1] for v in need):
        return hit[1]
    rows = db.exec(
        select(Variant.id, Variant.product_id, Product.name, Variant.options).join(
            Product, col(Product.id) == col(Variant.product_id)
        )
    ).all()
    items = {r[0]: _Item(r[1], r[2], {str(a): str(b) for a, b in (r[3] or {}).items()}) for r in rows}
    with _catalog_lock:
        _catalogs[key] = (time.monotonic() + CATALOG_TTL_S, items)
    return items


_VARIANT = Variant.__table__  # type: ignore[attr-defined]
_ORDER = Order.__table__  # type: ignore[attr-defined]
_ITEM = OrderItem.__table__  # type: ignore[attr-defined]
# Core statements built once: SQLAlchemy caches their compiled form, and skipping the ORM layer makes
# the two reads of a request ~5x cheaper (they are most of its latency).
_AVAILABLE = sa_select(_VARIANT.c.id, _VARIANT.c.price).where(
    _VARIANT.c.id.in_(bindparam("ids", expanding=True)), _VARIANT.c.available
)
_HISTORY = (
    sa_select(_ITEM.c.variant_id, _ORDER.c.created_at, _ITEM.c.name)
    .join(_ORDER, _ORDER.c.id == _ITEM.c.order_id)
    .where(_ORDER.c.customer_id == bindparam("customer"), _ORDER.c.status != "cancelled")
)


def _available(db: Session, ids: Iterable[str]) -> dict[str, float]:
    """variant id -> price, for the given variants that are available now (read live, never cached)."""
    ids = list(dict.fromkeys(ids))
    if not ids:
        return {}
    return {r[0]: float(r[1]) for r in db.connection().execute(_AVAILABLE, {"ids": ids})}


def _history(db: Session, customer_id: str) -> list[tuple[str, float, str]]:
    """(variant id, order time, product name) of every item of the customer's non-cancelled orders."""
    rows = db.connection().execute(_HISTORY, {"customer": customer_id})
    return [(r[0], r[1].timestamp(), r[2]) for r in rows]


# ---- choosing ---------------------------------------------------------------------------------------


class _Shelf:
    """Available variants of one request: the live prices read so far, and the catalog."""

    def __init__(self, db: Session, ids: Iterable[str]) -> None:
        self.db = db
        self.prices: dict[str, float] = {}
        self.read: set[str] = set()
        self.catalog: dict[str, _Item] = {}
        self.read_more(ids)

    def product(self, v: str) -> str:
        return self.catalog[v].product_id

    def read_more(self, ids: Iterable[str]) -> None:
        new = [v for v in ids if v not in self.read]
        if new or not self.catalog:
            self.read.update(new)
            self.prices |= _available(self.db, new)
            self.catalog = _catalog(self.db, self.prices)

    def pick(
        self,
        ranked: list[str],
        k: int,
        skip_products: set[str],
        taken: Sequence[str] = (),
        diverse: bool = True,
    ) -> list[str]:
        """The first k available variants of `ranked`, one per product first (unless not `diverse`),
        then the rest by rank; the products of `taken` count as already shown."""
        chosen = set(taken)
        groups = {self.product(v) for v in taken} | skip_products
        cand = [
            v for v in ranked if v in self.prices and v not in chosen and self.product(v) not in skip_products
        ]
        picked: list[str] = []
        for v in cand if diverse else []:  # one per product
            if len(picked) == k:
                break
            if self.product(v) not in groups:
                picked.append(v)
                chosen.add(v)
                groups.add(self.product(v))
        for v in cand:  # then the best of what is left
            if len(picked) == k:
                break
            if v not in chosen:
                picked.append(v)
                chosen.add(v)
        return picked

    def recommendation(
        self, v: str, score: float, reason: str, kind: ReasonKind, fallback: bool
    ) -> Recommendation:
        item = self.catalog[v]
        return Recommendation(
            variant_id=v,
            product_id=item.product_id,
            name=item.name,
            price=round(self.prices[v], 2),
            options=item.options,
            score=round(float(score), 4),
            reason=reason,
            reason_kind=kind,
            fallback=fallback,
        )


def _head(ranked: np.ndarray, k: int) -> int:
    """How much of the ranking the first availability read covers (a third or so is sold out)."""
    return min(len(ranked), max(24, 4 * k))


def _pick_ranked(
    shelf: _Shelf,
    ranked: np.ndarray,
    item_ids: np.ndarray,
    k: int,
    skip: set[str],
    taken: Sequence[str] = (),
    diverse: bool = True,
) -> list[str]:
    """`_Shelf.pick` over a growing prefix of the ranking: a few rows are read per call, more only
    when the head has too few available variants."""
    depth = _head(ranked, k)
    while True:
        prefix = item_ids[ranked[:depth]].tolist()
        shelf.read_more(prefix)
        picked = shelf.pick(prefix, k, skip, taken, diverse)
        if len(picked) == k or depth >= len(ranked):
            return picked
        depth = min(len(ranked), depth * 4)


def _rank(scores: np.ndarray, exclude: list[int]) -> np.ndarray:
    s = scores.astype(np.float64, copy=True)
    if exclude:
        s[np.asarray(exclude)] = -np.inf
    order = np.argsort(-s, kind="stable")
    return order[np.isfinite(s[order])]


def _reasoned(
    shelf: _Shelf,
    rec: Recommender,
    picked: list[str],
    blend: Blend,
    own: list[int],
    names: dict[int, str],
    query: str | None,
    fallback: bool,
) -> list[Recommendation]:
    positions = [rec.index.item_pos[v] for v in picked]
    parts = [blend.top_part(i) for i in positions]
    explained = rec.explain(
        [i for i, part in zip(positions, parts, strict=True) if part != "popularity"], own
    )
    out = []
    for v, i, part in zip(picked, positions, parts, strict=True):
        j = explained.get(i)
        if part == "query" and query:
            out.append(shelf.recommendation(v, blend.total[i], f"matches '{query}'", "query", fallback))
        elif part != "popularity" and j is not None and names.get(j):
            out.append(shelf.recommendation(v, blend.total[i], f"similar to {names[j]}", "similar", fallback))
        else:
            name = shelf.catalog[v].name
            out.append(shelf.recommendation(v, blend.total[i], f"popular in {name}", "popular", fallback))
    return out


# ---- query ------------------------------------------------------------------------------------------

_WORD = re.compile(r"[a-z0-9]+")


def _query_vector(db: Session, rec: Recommender, query: str) -> np.ndarray:
    """How well each item matches the shopper's words: text-vector cosine, or word overlap with the
    product name and options when the artifact has no content model."""
    vec = rec.query_scores(query)
    if vec is not None:
        return vec
    words = {w for w in _WORD.findall(query.lower()) if len(w) > 2}
    out = np.zeros(rec.n_items, np.float32)
    for v, item in _catalog(db).items():
        pos = rec.index.item_pos.get(v)
        if pos is not None:
            text = " ".join([item.name, *item.options.values()]).lower()
            out[pos] = len(words & set(_WORD.findall(text)))
    return out


# ---- popularity -------------------------------------------------------------------------------------

_live: dict[str, tuple[float, np.ndarray, np.ndarray]] = {}
_live_lock = threading.Lock()


def _live_popularity(db: Session) -> tuple[np.ndarray, np.ndarray]:
    """Variants by recency-weighted units sold (half-life 90 days before the newest order), cached."""
    key = str(db.get_bind().url)
    hit = _live.get(key)
    if hit is not None and hit[0] > time.monotonic():
        return hit[1], hit[2]
    rows = db.exec(
        select(OrderItem.variant_id, Order.created_at)
        .join(Order, col(Order.id) == col(OrderItem.order_id))
        .where(col(Order.status) != "cancelled")
    ).all()
    scores: dict[str, float] = {}
    if rows:
        newest = max(r[1].timestamp() for r in rows)
        half = LIVE_HALF_LIFE_DAYS * 86400.0
        for v, at in rows:
            scores[v] = scores.get(v, 0.0) + 0.5 ** ((newest - at.timestamp()) / half)
    top = max(scores.values(), default=1.0)
    ordered = sorted(scores, key=lambda v: (-scores[v], v))
    ids = np.asarray(ordered, dtype=str)
    values = np.asarray([scores[v] / top for v in ordered], dtype=np.float64)
    with _live_lock:
        _live[key] = (time.monotonic() + LIVE_POPULARITY_TTL_S, ids, values)
    return ids, values


def _popular(
    db: Session, ids: np.ndarray, scores: np.ndarray, k: int, skip: set[str]
) -> list[Recommendation]:
    """Best sellers (`ids` ranked, `scores` aligned), one per product first: "popular in <product>"."""
    shelf = _Shelf(db, [])
    picked = _pick_ranked(shelf, np.arange(len(ids)), ids, k, skip)
    score_of = dict(zip(ids.tolist(), scores.tolist(), strict=True))
    return [
        shelf.recommendation(v, score_of[v], f"popular in {shelf.catalog[v].name}", "popular", True)
        for v in picked
    ]


def _popular_fallback(db: Session, k: int, skip_products: set[str]) -> list[Recommendation]:
    ids, scores = _live_popularity(db)
    return _popular(db, ids, scores, k, skip_products)


def _popular_from(db: Session, rec: Recommender, k: int, skip_products: set[str]) -> list[Recommendation]:
    ranked = _rank(np.where(rec.popularity > 0, rec.popularity, -np.inf), [])
    return _popular(db, rec.index.item_ids[ranked], rec.popularity[ranked], k, skip_products)


# ---- the three entry points --------------------------------------------------------------------------


def _check_k(k: int) -> int:
    if not 1 <= k <= MAX_K:
        raise ValueError(f"k must be between 1 and {MAX_K}")
    return k


def recommend_for_customer(
    db: Session, settings: Settings, customer_id: str, k: int = 5, *, query: str | None = None
) -> list[Recommendation]:
    """Up to k available variants for this customer, each with its reason (see the module doc)."""
    _check_k(k)
    query = (query or "").strip()[:500] or None
    rec = get_recommender(settings)
    hist = _history(db, customer_id)
    if rec is None:
        return _popular_fallback(db, k, set())
    t_now = max([time.time(), *(t for _, t, _ in hist)])
    h = rec.history([v for v, _, _ in hist], [t for _, t, _ in hist], t_now)
    own = sorted(set(rec.positions([v for v, _, _ in hist])))
    names = {rec.index.item_pos[v]: name for v, _, name in hist if v in rec.index.item_pos}
    qvec = _query_vector(db, rec, query) if query else None
    if not own and qvec is None:
        return _popular_from(db, rec, k, set())
    blend = rec.blend(h, qvec)
    n_again = 0 if query or not own else min(2, k // 3)
    buy = rec.buy_again(h) if n_again else np.zeros(rec.n_items, np.float32)
    again_ranked = rec.index.item_ids[_rank(np.where(buy > 0, buy, -np.inf), [])].tolist()
    # Past items only ever appear in buy-again slots; the hybrid fills the rest. One live read covers
    # the buy-again candidates and the head of the hybrid's ranking.
    ranked = _rank(blend.total, own)
    shelf = _Shelf(db, rec.index.item_ids[ranked[: _head(ranked, k)]].tolist() + again_ranked)
    again = shelf.pick(again_ranked, n_again, set(), diverse=False)
    picked = _pick_ranked(shelf, ranked, rec.index.item_ids, k - len(again), set(), again, diverse=not query)
    out = _reasoned(shelf, rec, picked, blend, own, names, query, fallback=not own)
    for v in again:
        out.append(
            shelf.recommendation(
                v, float(buy[rec.index.item_pos[v]]), "bought before", "bought_before", False
            )
        )
    return out


def _item_based(
    db: Session, rec: Recommender, variant_ids: list[str], names: dict[int, str], k: int, skip: set[str]
) -> list[Recommendation]:
    """Ranked by the hybrid over a pseudo-history made of the given variants."""
    own = sorted(set(rec.positions(variant_ids)))
    now = time.time()
    h = rec.history([rec.index.item_ids[i] for i in own], [now] * len(own), now)
    blend = rec.blend(h)
    signal = [float(np.abs(v).max()) for name, v in blend.parts.items() if name != "popularity"]
    if not own or not any(s > 1e-9 for s in signal):  # nothing known about these items: best sellers
        return _popular_from(db, rec, k, skip)
    shelf = _Shelf(db, [])
    picked = _pick_ranked(shelf, _rank(blend.total, own), rec.index.item_ids, k, skip)
    return _reasoned(shelf, rec, picked, blend, own, names, None, fallback=False)


def similar_to_product(db: Session, settings: Settings, product_id: str, k: int = 10) -> list[Recommendation]:
    """Variants of other products that people buy with, or that read like, this product."""
    _check_k(k)
    product = db.get(Product, product_id)
    if product is None:
        raise UnknownProduct(product_id)
    rec = get_recommender(settings)
    if rec is None:
        return _popular_fallback(db, k, {product_id})
    variants = [v for v, item in _catalog(db).items() if item.product_id == product_id]
    names = {p: product.name for p in rec.positions(variants)}
    return _item_based(db, rec, variants, names, k, {product_id})


def complete_cart(db: Session, settings: Settings, item_ids: list[str], k: int = 10) -> list[Recommendation]:
    """Variants of other products that go with the cart (variant ids and/or product ids)."""
    _check_k(k)
    ids = list(dict.fromkeys(i.strip() for i in item_ids if i.strip()))
    catalog = _catalog(db)
    products = {item.product_id: item.name for item in catalog.values()}
    if any(i not in catalog and i not in products for i in ids):  # maybe added since the cache was read
        catalog = _catalog(db, [i for i in ids if i not in products][:100])
        products = {item.product_id: item.name for item in catalog.values()}
    unknown = [i for i in ids if i not in catalog and i not in products]
    if unknown:
        raise UnknownItems(unknown)
    variants = [v for v in ids if v in catalog]
    whole = {i for i in ids if i not in catalog}  # product ids: every variant of them
    cart_products = {catalog[v].product_id for v in variants} | whole
    rec = get_recommender(settings)
    if rec is None:
        return _popular_fallback(db, k, cart_products)
    if not ids:
        return _popular_from(db, rec, k, cart_products)
    variants += [v for v, item in catalog.items() if item.product_id in whole and v not in variants]
    names = {rec.index.item_pos[v]: catalog[v].name for v in variants if v in rec.index.item_pos}
    return _item_based(db, rec, variants, names, k, cart_products)
