"""Fit every model with hyper-parameters and hybrid weights chosen on a validation split.

`fit_tuned(interactions, index, split_kind, ...)`:
1. carves a validation split out of the given (training) interactions, the same kind as the
   evaluation's split, with its own seed;
2. fits each model for each point of its small grid (`Model.grid`) on the rest, keeps the point with
   the best validation NDCG@k;
3. chooses the hybrid's weights by coordinate ascent on the same validation users, starting from the
   best single model alone (weight 1, others 0), so on validation the hybrid is never worse than
   the best single model;
4. refits every model with its chosen parameters on all the given interactions.
When the data is too small for a validation split, models keep their defaults and the hybrid gets
`DEFAULT_WEIGHTS`. Nothing here ever sees a test part: callers split it off before.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recsys.data import Interactions
from recsys.matrix import Index, Matrix, build
from recsys.metrics import RECALL_K, Target, ndcg_recall, target, top_k
from recsys.models import MODELS, Hybrid, Model, ModelSkipped, zscore
from recsys.split import SplitError, split

Progress = Callable[[int, int, str], None]  # (steps done, steps in all, what runs now)

DEFAULT_WEIGHTS = {"ease": 1.0, "als": 0.5, "itemknn_cosine": 0.5, "content": 0.5, "popularity": 0.25}
WEIGHT_GRID = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)
MAX_VALIDATION_CELLS = 25_000_000  # validation users x items held per model (~100 MB of float32)


@dataclass
class Bundle:
    """Fitted models, the hybrid's weights and what validation said about each."""

    models: dict[str, Model]
    weights: dict[str, float]
    validation: dict[str, dict[str, float]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    fit_seconds: dict[str, float] = field(default_factory=dict)
    tuned: bool = True
    exclude_seen: bool = True

    def hybrid(self) -> Hybrid:
        return Hybrid(self.models, self.weights, self.exclude_seen)

    def params(self) -> dict[str, dict[str, Any]]:
        return {n: dict(m.params) for n, m in self.models.items()}


def _metrics(S: np.ndarray, t: Target, k: int) -> dict[str, float]:
    top = top_k(S, max(k, RECALL_K), t.exclude)
    nd, rc = ndcg_recall(top, t.truth, k, RECALL_K)
    return {f"ndcg@{k}": float(nd.mean()), f"recall@{RECALL_K}": float(rc.mean())}


def _masked(S: np.ndarray, t: Target) -> np.ndarray:
    """Scores with the excluded (already seen) cells pushed to the bottom once, for repeated ranking."""
    out = np.array(S, dtype=np.float32, copy=True)
    if t.exclude is not None and t.exclude.nnz:
        rows = np.repeat(np.arange(t.exclude.shape[0]), np.diff(t.exclude.indptr))
        out[rows, t.exclude.indices] = -1e9
    return out


def tune_weights(
    Z: dict[str, np.ndarray], t: Target, k: int, grid: tuple[float, ...] = WEIGHT_GRID, rounds: int = 3
) -> tuple[dict[str, float], float]:
    """Coordinate ascent over per-model weights, from the best single model; returns (weights, NDCG)."""
    truth = t.truth.toarray() > 0

    def ndcg(S: np.ndarray) -> float:
        return float(ndcg_recall(top_k(S, k), truth, k, k)[0].mean())

    names = list(Z)
    singles = {n: ndcg(_masked(Z[n], t)) for n in names}
    anchor = max(names, key=lambda n: singles[n])
    weights = {n: 1.0 if n == anchor else 0.0 for n in names}
    blend = _masked(Z[anchor], t)
    best = singles[anchor]
    for _ in range(rounds):
        improved = False
        for n in names:
            for w in grid:
                if w == weights[n] or (w == 0.0 and all(weights[o] == 0.0 for o in names if o != n)):
                    continue
                trial = blend + (w - weights[n]) * Z[n]
                value = ndcg(trial)
                if value > best + 1e-6:
                    best, blend, weights[n], improved = value, trial, w, True
        if not improved:
            break
    return {n: w for n, w in weights.items() if w}, best


def fit_tuned(
    inter: Interactions,
    index: Index,
    split_kind: str,
    *,
    exclude_seen: bool,
    item_vectors: np.ndarray | None = None,
    k: int = 10,
    seed: int = 0,
    names: list[str] | None = None,
    progress: Progress | None = None,
) -> Bundle:
    names = list(names or MODELS)
    report = progress or (lambda done, total, what: None)
    val_m = fit_m = None
    t: Target | None = None
    try:
        vs = split(inter, split_kind, seed=seed + 1)
        fit_m = build(inter.subset(vs.train), index)
        val_m = build(inter.subset(vs.test), index, t_now=fit_m.t_now)
        t = target(fit_m, val_m, exclude_seen)
        cap = max(50, MAX_VALIDATION_CELLS // max(index.n_items, 1))
        if len(t.users) > cap:  # a seeded sample of validation users bounds the memory
            keep = np.sort(np.random.default_rng(seed).choice(len(t.users), cap, replace=False))
            t = Target(t.users[keep], t.truth[keep], None if t.exclude is None else t.exclude[keep])
        if not len(t.users):
            t = None
    except SplitError:
        t = None

    steps = (sum(len(MODELS[n].grid) for n in names) if t is not None else 0) + len(names) + 1
    done = 0
    chosen: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    validation: dict[str, dict[str, float]] = {}
    Z: dict[str, np.ndarray] = {}
    for name in names:
        cls = MODELS[name]
        if t is None or fit_m is None:
            chosen[name] = {}
            continue
        best: tuple[float, dict[str, Any], np.ndarray, dict[str, float]] | None = None
        for point in cls.grid:
            report(done, steps, f"tuning {name} {point or ''}".strip())
            done += 1
            if name in skipped:
                continue
            try:
                model = cls(**point).fit(fit_m, item_vectors, seed)
            except ModelSkipped as exc:
                skipped[name] = str(exc)
                continue
            S = model.score(fit_m.rows(t.users))
            scores = _metrics(S, t, k)
            if best is None or scores[f"ndcg@{k}"] > best[0]:
                best = (scores[f"ndcg@{k}"], point, S, scores)
        if best is not None:
            chosen[name] = dict(best[1])
            Z[name] = zscore(best[2], t.exclude)
            validation[name] = best[3]

    if t is not None and Z:
        report(done, steps, "tuning hybrid weights")
        weights, value = tune_weights(Z, t, k)
        blend = sum(w * Z[n] for n, w in weights.items())
        validation["hybrid"] = _metrics(np.asarray(blend, np.float32), t, k)
    else:
        weights = dict(DEFAULT_WEIGHTS)
    done += 1
    del Z

    full: Matrix = build(inter, index)
    models: dict[str, Model] = {}
    seconds: dict[str, float] = {}
    for name in names:
        report(done, steps, f"fitting {name}")
        done += 1
        if name in skipped:
            continue
        start = time.perf_counter()
        try:
            models[name] = MODELS[name](**chosen.get(name, {})).fit(full, item_vectors, seed)
        except ModelSkipped as exc:
            skipped[name] = str(exc)
            continue
        seconds[name] = time.perf_counter() - start
    report(steps, steps, "done")
    weights = {n: w for n, w in weights.items() if n in models}
    if not weights and models:
        weights = {"popularity": 1.0} if "popularity" in models else {next(iter(models)): 1.0}
    return Bundle(
        models,
        weights,
        validation,
        skipped,
        seconds,
        tuned=t is not None,
        exclude_seen=exclude_seen,
    )
