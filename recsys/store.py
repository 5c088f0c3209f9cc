"""The store as recsys data: customers x variants from orders, and training the store's artifact.

- Users are customers, items are variants (the sellable items); a variant's group ("product type")
  is its Product. Every order item of an order that was not cancelled is one interaction of weight
  1 at the order's creation time, so buying a thing twice counts twice.
- `train_store(engine, settings)` fits every model (validation: each customer's last basket, carved
  from the orders themselves) and writes a new version under settings.var_dir / "recsys".
- Item text for the content model: product name, the variant's options and the product description.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from commerce.models import Order, OrderItem, Product, Variant
from recsys import artifact
from recsys.data import Interactions
from recsys.matrix import Index
from recsys.train import Bundle, Progress, fit_tuned
from shopdesk.settings import Settings

VALIDATION_SPLIT = "last-basket"


def recsys_dir(settings: Settings) -> Path:
    return settings.var_dir / "recsys"


def store_interactions(db: Session) -> Interactions:
    rows = db.exec(
        select(Order.customer_id, OrderItem.variant_id, Order.created_at)
        .join(Order, col(Order.id) == col(OrderItem.order_id))
        .where(col(Order.status) != "cancelled")
    ).all()
    inter = Interactions.from_rows(
        [r[0] for r in rows], [r[1] for r in rows], [r[2].timestamp() for r in rows]
    )
    inter.timestamp_kind = "number"
    inter.meta["source"] = "store"
    return inter


@dataclass
class Catalog:
    """Every variant (sorted by id) with its product; texts for the content model."""

    variant_ids: np.ndarray
    product_ids: np.ndarray
    variant_texts: dict[str, str]  # product name + the variant's options (short: cheap to embed)
    product_texts: dict[str, str]  # product name + description, once per product


def variant_text(name: str, options: dict[str, Any]) -> str:
    opts = ", ".join(f"{k}: {v}" for k, v in options.items())
    return f"{name}. {opts}".strip(". ")


def load_catalog(db: Session) -> Catalog:
    rows = db.exec(
        select(Variant.id, Variant.product_id, Variant.options, Product.name, Product.description)
        .join(Product, col(Product.id) == col(Variant.product_id))
        .order_by(col(Variant.id))
    ).all()
    return Catalog(
        np.asarray([r[0] for r in rows], dtype=str),
        np.asarray([r[1] for r in rows], dtype=str),
        {r[0]: variant_text(r[3], r[2] or {}) for r in rows},
        {r[1]: f"{r[3]}. {r[4] or ''}".strip() for r in rows},
    )


def embed_catalog(
    catalog: Catalog, index: Index, embed: Callable[[list[str]], np.ndarray] | None = None
) -> np.ndarray:
    """A unit vector per variant (index order): its own text's vector plus its product's, normalised,
    so options and the product description both count while each description is embedded once."""
    from recsys.eval import embed_item_texts
    from recsys.models import normalize_rows

    own = embed_item_texts(index, catalog.variant_texts, embed)
    products = sorted(catalog.product_texts)
    pindex = Index(np.zeros(0, str), np.asarray(products, dtype=str))
    pvec = embed_item_texts(pindex, catalog.product_texts, embed)
    group = dict(zip(catalog.variant_ids.tolist(), catalog.product_ids.tolist(), strict=True))
    rows = [pindex.item_pos[group[v]] for v in index.item_ids.tolist()]
    return normalize_rows(own + pvec[rows])


@dataclass
class TrainReport:
    path: Path
    version: str
    bundle: Bundle
    n_customers: int
    n_variants: int
    n_interactions: int
    seconds: float


def train_store(
    engine: Engine,
    settings: Settings,
    *,
    content: bool = True,
    embed: Callable[[list[str]], np.ndarray] | None = None,
    progress: Progress | None = None,
    seed: int = 0,
) -> TrainReport:
    """Fit on the store's orders and write a new artifact version (see recsys.artifact)."""
    start = time.perf_counter()
    with Session(engine) as db:
        inter = store_interactions(db)
        catalog = load_catalog(db)
    index = Index(np.unique(inter.users), catalog.variant_ids)
    # Order items whose variant left the catalog cannot be recommended: keep them out of the matrix.
    known = np.isin(inter.items, index.item_ids)
    inter = inter.subset(np.flatnonzero(known))
    vectors = None
    if content and index.n_items:
        if progress:
            progress(0, 1, f"embedding {index.n_items} variant texts")
        vectors = embed_catalog(catalog, index, embed)
    group_of = dict(zip(catalog.variant_ids.tolist(), catalog.product_ids.tolist(), strict=True))
    groups = np.asarray([group_of[v] for v in index.item_ids.tolist()], dtype=str)
    if len(inter):
        bundle = fit_tuned(
            inter,
            index,
            VALIDATION_SPLIT,
            exclude_seen=True,
            item_vectors=vectors,
            seed=seed,
            progress=progress,
        )
    else:  # a store without orders: nothing to learn; serving falls back to popularity (all zero)
        bundle = _empty_bundle(index, vectors)
    meta = {
        "source": "store",
        "validation_split": VALIDATION_SPLIT,
        "n_interactions": len(inter),
        "embedding_model_id": _embedding_model_id() if vectors is not None else None,
    }
    path = artifact.save(
        recsys_dir(settings),
        bundle,
        index,
        data_hash=_store_hash(inter, catalog),
        item_groups=groups,
        meta=meta,
    )
    return TrainReport(
        path=path,
        version=path.name,
        bundle=bundle,
        n_customers=index.n_users,
        n_variants=index.n_items,
        n_interactions=len(inter),
        seconds=time.perf_counter() - start,
    )


def _empty_bundle(index: Index, vectors: np.ndarray | None) -> Bundle:
    from recsys.matrix import build
    from recsys.models import Content, Popularity

    empty = build(Interactions.from_rows([], [], []), index)
    models: dict[str, Any] = {"popularity": Popularity().fit(empty)}
    if vectors is not None:
        models["content"] = Content().fit(empty, vectors)
    return Bundle(models, {"popularity": 1.0}, tuned=False)


def is_current(engine: Engine, settings: Settings) -> bool:
    """Whether the newest artifact was trained on exactly this store's orders and catalog."""
    from recsys.artifact import latest

    path = latest(recsys_dir(settings))
    if path is None:
        return False
    manifest = json.loads((path / "manifest.json").read_text())
    with Session(engine) as db:
        return manifest.get("data_hash") == _store_hash(store_interactions(db), load_catalog(db))


def _store_hash(inter: Interactions, catalog: Catalog) -> str:
    import hashlib

    h = hashlib.sha256(inter.data_hash().encode())
    h.update("\x1f".join(catalog.variant_ids.tolist()).encode())
    h.update("\x1f".join(catalog.product_ids.tolist()).encode())
    return h.hexdigest()


def _embedding_model_id() -> str:
    from retrieval.embed import default_model_id

    return default_model_id()
