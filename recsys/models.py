"""The recommenders. Each one fits on a `Matrix` and scores `History` rows: (n users, n items) float32.

Every model keeps its learned state as plain numpy arrays plus JSON-able params (`arrays()`,
`state()`, `restore()`), so an artifact is .npz + manifest.json and loading one runs no pickled code.
Users are never baked into a model: item-based models score any history, and ALS folds a history
in with one exact least-squares step against the item factors, so a customer who ordered after
training (or was never trained on) is scored from what they bought, by the same code in eval and
serving.

| name | idea | hyper-parameters tried on validation |
| --- | --- | --- |
| popularity | recency-decayed counts (half-life as a share of the data's time span) | half_life |
| itemknn_cosine | co-occurrence cosine between item columns, top-N neighbours per item | neighbours |
| itemknn_bm25 | dot product of BM25-weighted item vectors (implicit's BM25Recommender) | neighbours, k1 |
| als | implicit ALS (Hu et al.), CPU, fixed random_state | factors, alpha |
| ease | closed form: B = I - P / diag(P), P = (X'X + l2 I)^-1 (Steck 2019) | l2 |
| buy_again | the user's own items, frequency x recency | half_life |
| content | all-MiniLM-L6-v2 item-text vectors; user profile = mean of their items | - |
"""

from __future__ import annotations

import os
import warnings
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from recsys.matrix import History, Matrix

MAX_EASE_ITEMS = 20_000  # the closed form inverts an items x items matrix: O(n^3) time, O(n^2) memory


class ModelSkipped(RuntimeError):
    """This model cannot run on this data (no item texts, too many items for EASE, ...)."""


class Model:
    name: ClassVar[str]
    defaults: ClassVar[dict[str, Any]] = {}
    grid: ClassVar[list[dict[str, Any]]] = [{}]
    personal: ClassVar[bool] = True  # scores differ by user (popularity does not)

    def __init__(self, **params: Any) -> None:
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise TypeError(f"{self.name}: unknown parameters {sorted(unknown)}")
        self.params: dict[str, Any] = {**self.defaults, **params}
        self.n_items = 0

    def fit(self, m: Matrix, item_vectors: np.ndarray | None = None, seed: int = 0) -> Model:
        raise NotImplementedError

    def score(self, h: History) -> np.ndarray:
        raise NotImplementedError

    def arrays(self) -> dict[str, np.ndarray]:
        return {}

    def state(self) -> dict[str, Any]:
        return {}

    def _load(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        pass

    @classmethod
    def restore(
        cls, params: dict[str, Any], state: dict[str, Any], arrays: dict[str, np.ndarray], n_items: int
    ) -> Model:
        model = cls(**params)
        model.n_items = n_items
        model._load(state, arrays)
        return model

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays().values())


def _decay(age: np.ndarray, half_life: float | None) -> np.ndarray:
    if not half_life:
        return np.ones_like(age)
    return np.power(0.5, np.maximum(age, 0.0) / half_life)


# ---- popularity ------------------------------------------------------------------------------------


class Popularity(Model):
    """What many people bought lately: each (user, item) weight decays with the age of its last row."""

    name = "popularity"
    defaults = {"half_life": 0.25}
    grid = [{"half_life": None}, {"half_life": 0.5}, {"half_life": 0.25}, {"half_life": 0.1}]
    personal = False

    def fit(self, m: Matrix, item_vectors: np.ndarray | None = None, seed: int = 0) -> Popularity:
        self.n_items = m.shape[1]
        hl = self.params["half_life"]
        coo = m.X.tocoo()
        age = m.t_now - m.last.tocoo().data
        w = coo.data * _decay(age, hl * m.t_span if hl else None)
        scores = np.bincount(coo.col, weights=w, minlength=self.n_items).astype(np.float32)
        self.scores = scores / scores.max() if scores.size and scores.max() > 0 else scores
        return self

    def score(self, h: History) -> np.ndarray:
        return np.broadcast_to(self.scores, (h.n, self.n_items)).copy()

    def arrays(self) -> dict[str, np.ndarray]:
        return {"scores": self.scores}

    def _load(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.scores = arrays["scores"].astype(np.float32)


# ---- item-kNN ----------------------------------------------------------------------------------------


def _prune_topn(W: sp.csr_matrix, neighbours: int) -> sp.csr_matrix:
    """S = W W' (items x items) without its diagonal, keeping each row's `neighbours` largest entries.

    Computed in row blocks so the dense intermediate stays ~64 MB whatever the catalog size."""
    n = W.shape[0]
    WT = W.T.tocsc()
    block = max(1, (1 << 24) // max(n, 1))
    indptr = [0]
    indices: list[np.ndarray] = []
    data: list[np.ndarray] = []
    keep = min(neighbours, max(n - 1, 0))
    for start in range(0, n, block):
        stop = min(n, start + block)
        dense = (W[start:stop] @ WT).toarray().astype(np.float32)
        dense[np.arange(stop - start), np.arange(start, stop)] = 0.0
        if keep < n:
            top = (
                np.argpartition(-dense, keep - 1, axis=1)[:, :keep]
                if keep
                else np.zeros((stop - start, 0), int)
            )
        else:
            top = np.tile(np.arange(n), (stop - start, 1))
        for r in range(stop - start):
            cols = np.sort(top[r])
            vals = dense[r, cols]
            nz = vals > 0
            indices.append(cols[nz])
            data.append(vals[nz])
            indptr.append(indptr[-1] + int(nz.sum()))
    return sp.csr_matrix(
        (
            np.concatenate(data) if data else np.zeros(0, np.float32),
            np.concatenate(indices) if indices else np.zeros(0, np.int32),
            np.asarray(indptr),
        ),
        shape=(n, n),
    )


def bm25_weight(items_users: sp.csr_matrix, k1: float, b: float) -> sp.csr_matrix:
    """BM25 weighting of item vectors over users (as implicit.nearest_neighbours.bm25_weight):
    users with many items count less (idf), items with many users are length-normalised."""
    X = items_users.tocoo(copy=True)
    n_items = float(X.shape[0])
    idf = np.log(n_items) - np.log1p(np.bincount(X.col, minlength=X.shape[1]))
    row_sums = np.ravel(items_users.sum(axis=1))
    length_norm = (1.0 - b) + b * row_sums / max(row_sums.mean(), 1e-9)
    X.data = X.data * (k1 + 1.0) / (k1 * length_norm[X.row] + X.data) * idf[X.col]
    return X.tocsr()


class ItemKNN(Model):
    """Items bought by the same people: score(i) = sum over the user's items j of sim(j, i)."""

    name = "itemknn_cosine"
    defaults = {"neighbours": 100}
    grid = [{"neighbours": 20}, {"neighbours": 100}, {"neighbours": 400}]

    def _weighted(self, m: Matrix) -> sp.csr_matrix:
        items_users = m.binary().T.tocsr()
        norms = np.sqrt(np.ravel(items_users.multiply(items_users).sum(axis=1)))
        norms[norms == 0] = 1.0
        return sp.diags(1.0 / norms).dot(items_users).tocsr().astype(np.float32)

    def fit(self, m: Matrix, item_vectors: np.ndarray | None = None, seed: int = 0) -> ItemKNN:
        self.n_items = m.shape[1]
        self.S = _prune_topn(self._weighted(m), int(self.params["neighbours"]))
        return self

    def score(self, h: History) -> np.ndarray:
        return np.asarray((h.binary() @ self.S).toarray(), dtype=np.float32)

    def arrays(self) -> dict[str, np.ndarray]:
        S = self.S
        return {"data": S.data.astype(np.float32), "indices": S.indices, "indptr": S.indptr}

    def _load(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.S = sp.csr_matrix(
            (arrays["data"], arrays["indices"], arrays["indptr"]), shape=(self.n_items, self.n_items)
        )


class ItemKNNBM25(ItemKNN):
    name = "itemknn_bm25"
    defaults = {"neighbours": 100, "k1": 100.0, "b": 0.8}
    grid = [
        {"neighbours": 100, "k1": 1.2},
        {"neighbours": 100, "k1": 100.0},
        {"neighbours": 400, "k1": 1.2},
        {"neighbours": 400, "k1": 100.0},
    ]

    def _weighted(self, m: Matrix) -> sp.csr_matrix:
        items_users = m.binary().T.tocsr()
        return bm25_weight(items_users, float(self.params["k1"]), float(self.params["b"])).astype(np.float32)


# ---- ALS (implicit) ------------------------------------------------------------------------------------


class ALS(Model):
    """Matrix factorisation for implicit feedback (implicit's CPU ALS); confidence = alpha x weight."""

    name = "als"
    defaults = {"factors": 64, "regularization": 0.05, "alpha": 10.0, "iterations": 15}
    grid = [
        {"factors": 32, "alpha": 2.0},
        {"factors": 32, "alpha": 10.0},
        {"factors": 64, "alpha": 2.0},
        {"factors": 64, "alpha": 10.0},
    ]

    def fit(self, m: Matrix, item_vectors: np.ndarray | None = None, seed: int = 0) -> ALS:
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        self.n_items = m.shape[1]
        p = self.params
        # implicit's own threads do the work: BLAS threads on top would oversubscribe (and it warns).
        with threadpool_limits(1, "blas"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = AlternatingLeastSquares(
                factors=int(p["factors"]),
                regularization=float(p["regularization"]),
                alpha=float(p["alpha"]),
                iterations=int(p["iterations"]),
                random_state=seed,
                num_threads=min(2, os.cpu_count() or 1),
            )
            model.fit(m.X.astype(np.float32), show_progress=False)
        self.Y = np.asarray(model.item_factors, dtype=np.float32)
        self._prepare()
        return self

    def _prepare(self) -> None:
        Y = self.Y.astype(np.float64)
        self._Y64 = Y
        self._YtY = Y.T @ Y + float(self.params["regularization"]) * np.eye(Y.shape[1])

    def user_factors(self, h: History) -> np.ndarray:
        """One exact ALS user step per history row: x = (Y'C_uY + reg I)^-1 Y'C_u p_u."""
        alpha = float(self.params["alpha"])
        out = np.zeros((h.n, self.Y.shape[1]), np.float64)
        X = h.X
        for r in range(h.n):
            lo, hi = X.indptr[r], X.indptr[r + 1]
            if lo == hi:
                continue
            cols = X.indices[lo:hi]
            c = alpha * X.data[lo:hi].astype(np.float64)
            Yu = self._Y64[cols]
            A = self._YtY + (Yu.T * (c - 1.0)) @ Yu
            out[r] = np.linalg.solve(A, Yu.T @ c)
        return out

    def score(self, h: History) -> np.ndarray:
        return (self.user_factors(h) @ self._Y64.T).astype(np.float32)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"item_factors": self.Y}

    def _load(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.Y = arrays["item_factors"].astype(np.float32)
        self._prepare()


# ---- EASE ------------------------------------------------------------------------------------------------


class EASE(Model):
    """Embarrassingly Shallow Autoencoder (Steck 2019): an item-item weight matrix in closed form."""

    name = "ease"
    defaults = {"l2": 500.0}
    grid = [{"l2": 100.0}, {"l2": 250.0}, {"l2": 500.0}, {"l2": 1000.0}]

    def fit(self, m: Matrix, item_vectors: np.ndarray | None = None, seed: int = 0) -> EASE:
        self.n_items = n = m.shape[1]
        if n > MAX_EASE_ITEMS:
            raise ModelSkipped(
                f"EASE inverts an items x items matrix: {n:,} items is over {MAX_EASE_ITEMS:,}"
            )
        X = m.binary()
        G = (X.T @ X).toarray().astype(np.float64)
        G[np.diag_indices(n)] += float(self.params["l2"])
        P = np.linalg.inv(G)
        B = P / (-np.diag(P))
        B[np.diag_indices(n)] = 0.0
        self.B = B.astype(np.float32)
        return self

    def score(self, h: History) -> np.ndarray:
        return np.asarray(h.binary() @ self.B, dtype=np.float32)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"B": self.B}

    def _load(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.B = arrays["B"].astype(np.float32)


# ---- buy-again -----------------------------------------------------------------------------------------


class BuyAgain(Model):
    """The user's own items: how often (summed weight) x how recently (half-life decay)."""

    name = "buy_again"
    defaults = {"half_life": 0.25}
    grid = [{"half_life": None}, {"half_life": 0.25}, {"half_life": 0.05}]

    def fit(self, m: Matrix, item_vectors: np.ndarray | None = None, seed: int = 0) -> BuyAgain:
        self.n_items = m.shape[1]
        hl = self.params["half_life"]
        self.half_life_s = float(hl * m.t_span) if hl else 0.0
        return self

    def score(self, h: History) -> np.ndarray:
        X = h.X.copy().astype(np.float32)
        age = h.t_now - h.last.data
        X.data = (X.data * _decay(age, self.half_life_s or None)).astype(np.float32)
        return X.toarray()

    def state(self) -> dict[str, Any]:
        return {"half_life_s": self.half_life_s}

    def _load(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.half_life_s = float(state.get("half_life_s", 0.0))


# ---- content ------------------------------------------------------------------------------------------


class Content(Model):
    """Items whose text reads like the user's items (all-MiniLM-L6-v2 vectors): works for items and
    users nobody has co-purchase data for yet. Items without text have a zero vector (never scored)."""

    name = "content"

    def fit(self, m: Matrix, item_vectors: np.ndarray | None = None, seed: int = 0) -> Content:
        if item_vectors is None:
            raise ModelSkipped("no item texts (pass --items FILE with item,text)")
        self.n_items = m.shape[1]
        if item_vectors.shape[0] != self.n_items:
            raise ValueError(f"{item_vectors.shape[0]} item vectors for {self.n_items} items")
        self.V = normalize_rows(np.asarray(item_vectors, dtype=np.float32))
        return self

    def score(self, h: History) -> np.ndarray:
        profile = normalize_rows(np.asarray(h.binary() @ self.V, dtype=np.float32))
        return profile @ self.V.T

    def query_scores(self, vector: np.ndarray) -> np.ndarray:
        return self.V @ (vector / max(float(np.linalg.norm(vector)), 1e-12))

    def arrays(self) -> dict[str, np.ndarray]:
        return {"vectors": self.V}

    def _load(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.V = arrays["vectors"].astype(np.float32)


def normalize_rows(M: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(M, axis=1, keepdims=True)
    return M / np.maximum(norms, 1e-12)


MODELS: dict[str, type[Model]] = {
    cls.name: cls for cls in (Popularity, ItemKNN, ItemKNNBM25, ALS, EASE, BuyAgain, Content)
}


# ---- hybrid --------------------------------------------------------------------------------------------


def zscore(S: np.ndarray, exclude: sp.csr_matrix | None = None) -> np.ndarray:
    """Per row: (s - mean) / std, so models on different scales can be added; flat rows become 0.

    With `exclude` (the rows' own items, when the ranking will skip them) mean and std come from the
    rankable items only: a user's own items score high in item-based models and would squash the rest.
    """
    if exclude is None or not exclude.nnz:
        mean = S.mean(axis=1, keepdims=True)
        std = S.std(axis=1, keepdims=True)
    else:
        keep = np.ones(S.shape, bool)
        rows = np.repeat(np.arange(exclude.shape[0]), np.diff(exclude.indptr))
        keep[rows, exclude.indices] = False
        n = np.maximum(keep.sum(axis=1, keepdims=True), 1)
        mean = np.where(keep, S, 0.0).sum(axis=1, keepdims=True) / n
        std = np.sqrt(np.where(keep, (S - mean) ** 2, 0.0).sum(axis=1, keepdims=True) / n)
    return np.where(std > 1e-12, (S - mean) / np.where(std > 1e-12, std, 1.0), 0.0).astype(np.float32)


class Hybrid:
    """A weighted sum of the models' per-user z-scores; weights are chosen on validation (train.py)."""

    name = "hybrid"

    def __init__(
        self, models: dict[str, Model], weights: dict[str, float], exclude_seen: bool = True
    ) -> None:
        self.models = models
        self.weights = {n: w for n, w in weights.items() if w and n in models}
        self.exclude_seen = exclude_seen

    def components(self, h: History) -> dict[str, np.ndarray]:
        exclude = h.X if self.exclude_seen else None
        return {n: zscore(self.models[n].score(h), exclude) for n in self.weights}

    def score(self, h: History) -> np.ndarray:
        total = np.zeros((h.n, next(iter(self.models.values())).n_items), np.float32)
        for n, Z in self.components(h).items():
            total += self.weights[n] * Z
        return total
