"""Evaluate every model and the hybrid on any interactions file (`shopdesk eval recsys`).

The data is split once (random / time / last-basket, see split.py); `train.fit_tuned` tunes and
fits on the training part only; each model then ranks the whole catalog (every item of the file) for
every user who has training history and relevant test items. Users without training history are
left out (no model but popularity could rank for them). Output: NDCG@k, Recall@20, coverage@k.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recsys.data import Interactions
from recsys.matrix import Index, build
from recsys.metrics import evaluate_scores, target
from recsys.split import split
from recsys.train import Bundle, Progress, fit_tuned


@dataclass
class EvalResult:
    metrics: dict[str, dict[str, float]]  # model name -> metric -> value (hybrid last)
    n_users: int
    n_items: int
    n_interactions: int
    split: str
    k: int
    n_test_users: int
    exclude_seen: bool
    skipped: dict[str, str] = field(default_factory=dict)
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "models": {m: {key: round(v, 6) for key, v in vals.items()} for m, vals in self.metrics.items()},
            "n_users": self.n_users,
            "n_items": self.n_items,
            "split": self.split,
        }


def embed_item_texts(
    index: Index, texts: dict[str, str], embed: Callable[[list[str]], np.ndarray] | None = None
) -> np.ndarray:
    """Vectors for the index's items in its order (zero rows for items without text)."""
    if embed is None:
        from retrieval.embed import get_embedder

        embedder = get_embedder()
        embed = embedder.encode
    have = [i for i, item in enumerate(index.item_ids.tolist()) if texts.get(item, "").strip()]
    vectors = embed([texts[index.item_ids[i]] for i in have])
    out = np.zeros((index.n_items, vectors.shape[1] if len(have) else 384), np.float32)
    if have:
        out[have] = vectors
    return out


def evaluate(
    inter: Interactions,
    split_kind: str = "random",
    k: int = 10,
    item_vectors: np.ndarray | None = None,
    index: Index | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> EvalResult:
    """`item_vectors` rows follow `index` (Index.of(inter) by default); None skips the content model."""
    start = time.perf_counter()
    index = index or Index.of(inter)
    sp_ = split(inter, split_kind, seed=seed)
    train_inter = inter.subset(sp_.train)
    bundle: Bundle = fit_tuned(
        train_inter,
        index,
        split_kind,
        exclude_seen=sp_.exclude_seen,
        item_vectors=item_vectors,
        k=k,
        seed=seed,
        progress=progress,
    )
    train = build(train_inter, index)
    test = build(inter.subset(sp_.test), index, t_now=train.t_now)
    t = target(train, test, sp_.exclude_seen)
    metrics: dict[str, dict[str, float]] = {}
    for name, model in bundle.models.items():
        metrics[name] = evaluate_scores(lambda rows, m=model: m.score(train.rows(rows)), t, index.n_items, k)
    hybrid = bundle.hybrid()
    metrics["hybrid"] = evaluate_scores(lambda rows: hybrid.score(train.rows(rows)), t, index.n_items, k)
    return EvalResult(
        metrics=metrics,
        n_users=index.n_users,
        n_items=index.n_items,
        n_interactions=len(inter),
        split=split_kind,
        k=k,
        n_test_users=len(t.users),
        exclude_seen=sp_.exclude_seen,
        skipped=bundle.skipped,
        params=bundle.params(),
        weights=bundle.weights,
        seconds=time.perf_counter() - start,
    )
