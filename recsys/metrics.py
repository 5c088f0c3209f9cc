"""Ranking metrics over score matrices: NDCG@k, Recall@k and catalog coverage.

Binary relevance: an item is relevant if it is in the user's test part. NDCG@k divides by the ideal
DCG of min(k, |relevant|) hits. Recall@k is hits / min(k, |relevant|) (the normalisation of Liang et
al. 2018 and Steck 2019, so a user with 50 test items can still reach 1.0). Coverage is the share of
the catalog that appears in at least one evaluated user's top k.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from recsys.matrix import Matrix

RECALL_K = 20


def top_k(scores: np.ndarray, k: int, exclude: sp.csr_matrix | None = None) -> np.ndarray:
    """Column indices of each row's k best scores, best first (excluded cells never rank)."""
    S = scores
    if exclude is not None and exclude.nnz:
        S = scores.copy()
        rows = np.repeat(np.arange(exclude.shape[0]), np.diff(exclude.indptr))
        S[rows, exclude.indices] = -np.inf
    k = min(k, S.shape[1])
    part = np.argpartition(-S, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(S, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def _hits(top: np.ndarray, truth: sp.csr_matrix | np.ndarray) -> np.ndarray:
    dense = truth if isinstance(truth, np.ndarray) else truth.toarray() > 0
    return np.take_along_axis(dense, top, axis=1)


def ndcg_recall(
    top: np.ndarray, truth: sp.csr_matrix | np.ndarray, k: int, recall_k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row NDCG@k and Recall@recall_k of rankings `top` (needs >= max(k, recall_k) columns);
    `truth` is the relevant items as CSR rows or as a dense boolean matrix."""
    hits = _hits(top[:, : max(k, recall_k)], truth)
    n_rel = truth.sum(axis=1) if isinstance(truth, np.ndarray) else np.diff(truth.indptr)
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    shown = hits[:, :k]  # fewer than k columns when the catalog is smaller than k
    dcg = (shown * discount[: shown.shape[1]]).sum(axis=1)
    ideal = np.cumsum(discount)[np.minimum(n_rel, k) - 1]
    ndcg = dcg / ideal
    recall = hits[:, :recall_k].sum(axis=1) / np.minimum(n_rel, recall_k)
    return ndcg, recall


@dataclass
class Target:
    """Who is evaluated: users with training history and at least one relevant test item."""

    users: np.ndarray  # user rows
    truth: sp.csr_matrix  # their relevant items (rows aligned with `users`)
    exclude: sp.csr_matrix | None  # their training items, when rankings skip them


def target(train: Matrix, test: Matrix, exclude_seen: bool) -> Target:
    truth = test.binary()
    if exclude_seen:
        truth = truth - truth.multiply(train.binary())
        truth.eliminate_zeros()
    has_train = np.diff(train.X.indptr) > 0
    has_test = np.diff(truth.indptr) > 0
    users = np.flatnonzero(has_train & has_test)
    return Target(users, truth[users].tocsr(), train.binary()[users].tocsr() if exclude_seen else None)


def evaluate_scores(
    score: Callable[[np.ndarray], np.ndarray],
    t: Target,
    n_items: int,
    k: int = 10,
    recall_k: int = RECALL_K,
    batch: int = 1024,
) -> dict[str, float]:
    """Mean NDCG@k and Recall@recall_k over the target users, and coverage@k; `score(user_rows)`
    returns the score matrix of those rows (batched to bound memory)."""
    if not len(t.users):
        return {f"ndcg@{k}": 0.0, f"recall@{recall_k}": 0.0, "coverage": 0.0}
    ndcgs, recalls = [], []
    shown = np.zeros(n_items, bool)
    batch = max(16, min(batch, 25_000_000 // max(n_items, 1)))  # a dense batch stays ~100 MB
    depth = max(k, recall_k)
    for start in range(0, len(t.users), batch):
        sl = slice(start, start + batch)
        S = score(t.users[sl])
        top = top_k(S, depth, None if t.exclude is None else t.exclude[sl])
        nd, rc = ndcg_recall(top, t.truth[sl], k, recall_k)
        ndcgs.append(nd)
        recalls.append(rc)
        shown[top[:, :k].ravel()] = True
    return {
        f"ndcg@{k}": float(np.concatenate(ndcgs).mean()),
        f"recall@{recall_k}": float(np.concatenate(recalls).mean()),
        "coverage": float(shown.mean()),
    }
