"""The interaction-matrix layer every model reads: users x items, scipy sparse, over any id space.

`Index` fixes the id -> row/column mapping once (all users and items of a data set, or the store's
whole catalog), so a train part, a test part and a served history line up column for column.
`Matrix` holds, per (user, item) pair, the summed weight (`X`: purchase counts on the store,
1 per rating on MovieLens) and the newest timestamp (`last`, same sparsity pattern), plus the time
the data ends (`t_now`) and its span, which recency-based models use to scale half-lives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from recsys.data import Interactions


@dataclass
class Index:
    """Ids in a fixed order; `user_pos`/`item_pos` map ids back to rows/columns."""

    user_ids: np.ndarray  # str
    item_ids: np.ndarray  # str

    def __post_init__(self) -> None:
        # Sorted and unique: codes() looks ids up with a binary search.
        self.user_ids = np.unique(np.asarray(self.user_ids, dtype=str))
        self.item_ids = np.unique(np.asarray(self.item_ids, dtype=str))
        self.user_pos = {u: i for i, u in enumerate(self.user_ids.tolist())}
        self.item_pos = {it: i for i, it in enumerate(self.item_ids.tolist())}

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @classmethod
    def of(cls, inter: Interactions, extra_items: np.ndarray | list[str] | None = None) -> Index:
        """Every user and item of `inter` (plus `extra_items`, e.g. catalog items nobody bought), sorted."""
        items = (
            inter.items
            if extra_items is None
            else np.concatenate([inter.items, np.asarray(extra_items, str)])
        )
        return cls(np.unique(inter.users), np.unique(items))

    def codes(self, inter: Interactions) -> tuple[np.ndarray, np.ndarray]:
        """Row and column of every interaction (ids missing from the index raise KeyError)."""
        u = np.searchsorted(self.user_ids, inter.users)
        i = np.searchsorted(self.item_ids, inter.items)
        if len(inter) and (
            (u >= self.n_users).any()
            or (i >= self.n_items).any()
            or (self.user_ids[np.minimum(u, self.n_users - 1)] != inter.users).any()
            or (self.item_ids[np.minimum(i, self.n_items - 1)] != inter.items).any()
        ):
            raise KeyError("interactions contain ids that are not in the index")
        return u, i


@dataclass
class Matrix:
    """Users x items: summed weights `X` (float32 CSR) and newest timestamps `last` (float64 CSR)."""

    index: Index
    X: sp.csr_matrix
    last: sp.csr_matrix
    t_now: float
    t_span: float

    @property
    def shape(self) -> tuple[int, int]:
        return self.X.shape  # type: ignore[return-value]

    @property
    def nnz(self) -> int:
        return int(self.X.nnz)

    def binary(self) -> sp.csr_matrix:
        B = self.X.copy()
        B.data[:] = 1.0
        return B

    def rows(self, users: np.ndarray) -> History:
        """The histories of the given user rows, for scoring."""
        return History(self.X[users], self.last[users], self.t_now)


@dataclass
class History:
    """What a model scores from: some users' rows of X and `last`, and "now" for recency."""

    X: sp.csr_matrix
    last: sp.csr_matrix
    t_now: float

    @property
    def n(self) -> int:
        return int(self.X.shape[0])

    def binary(self) -> sp.csr_matrix:
        B = self.X.copy()
        B.data[:] = 1.0
        return B


def build(inter: Interactions, index: Index, t_now: float | None = None) -> Matrix:
    """Sum the weights of repeated (user, item) rows and keep their newest timestamp."""
    n_u, n_i = index.n_users, index.n_items
    u, i = index.codes(inter)
    X = sp.csr_matrix((inter.weights.astype(np.float32), (u, i)), shape=(n_u, n_i), dtype=np.float32)
    X.sum_duplicates()
    # Newest timestamp per pair: sort by time, keep each pair's last occurrence, same pattern as X.
    last = _max_per_pair(u, i, inter.timestamps, (n_u, n_i))
    ts = inter.timestamps
    lo = float(ts.min()) if len(ts) else 0.0
    hi = float(ts.max()) if len(ts) else 0.0
    now = hi if t_now is None else t_now
    return Matrix(index, X, last, now, max(now - lo, 1e-9))


def _max_per_pair(u: np.ndarray, i: np.ndarray, t: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    if not len(u):
        return sp.csr_matrix(shape, dtype=np.float64)
    order = np.lexsort((t, i, u))
    u, i, t = u[order], i[order], t[order]
    last_of_pair = np.ones(len(u), bool)
    last_of_pair[:-1] = (u[1:] != u[:-1]) | (i[1:] != i[:-1])
    m = sp.csr_matrix((t[last_of_pair], (u[last_of_pair], i[last_of_pair])), shape=shape, dtype=np.float64)
    m.sort_indices()
    return m


def history(
    index: Index, items: list[str], timestamps: list[float], weights: list[float], t_now: float
) -> History:
    """One user's history (items outside the index are ignored): the served-request path, so the
    two 1-row CSR matrices are assembled directly (no COO round trip)."""
    n_i = index.n_items
    kept = [
        (pos, t, w)
        for pos, t, w in zip((index.item_pos.get(i) for i in items), timestamps, weights, strict=True)
        if pos is not None and w > 0
    ]
    if not kept:
        empty = np.zeros(0, np.int32), np.zeros(2, np.int32)
        X = sp.csr_matrix((np.zeros(0, np.float32), *empty), shape=(1, n_i))
        return History(X, sp.csr_matrix((np.zeros(0, np.float64), *empty), shape=(1, n_i)), t_now)
    cols = np.fromiter((c for c, _, _ in kept), np.int32, len(kept))
    ts = np.fromiter((t for _, t, _ in kept), np.float64, len(kept))
    ws = np.fromiter((w for _, _, w in kept), np.float32, len(kept))
    order = np.argsort(cols, kind="stable")
    cols, ts, ws = cols[order], ts[order], ws[order]
    uniq, start = np.unique(cols, return_index=True)
    indptr = np.array([0, len(uniq)], np.int32)
    X = sp.csr_matrix((np.add.reduceat(ws, start), uniq, indptr), shape=(1, n_i))
    last = sp.csr_matrix((np.maximum.reduceat(ts, start), uniq.copy(), indptr.copy()), shape=(1, n_i))
    return History(X, last, t_now)
