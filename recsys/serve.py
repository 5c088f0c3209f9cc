"""Serving: the process's loaded artifact and scoring one history, one item set or one query.

`get_recommender(settings)` returns the newest artifact under settings.var_dir/"recsys", loaded once
and kept; it is reloaded when `shopdesk train recsys` writes a new version (LATEST changes; one
stat() per call). With no artifact it returns None and the service answers from live popularity
(marked fallback) instead of training inside a request: training embeds every variant text, which
takes seconds to minutes, so it belongs in `shopdesk train recsys` (run by `make run` setups).

No database here: the service (recsys/service.py) reads histories and availability and calls
`Recommender.blend(...)`.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys import artifact
from recsys.matrix import History, history
from recsys.models import ALS, EASE, Content, ItemKNN, zscore
from shopdesk.settings import Settings

log = logging.getLogger(__name__)

QUERY_WEIGHT = 3.0  # a shopper's own words outweigh the history they are asked beside


@dataclass
class Blend:
    """Scores over the artifact's items: the weighted sum, and each component's weighted z-scores."""

    total: np.ndarray
    parts: dict[str, np.ndarray]

    def top_part(self, i: int) -> str:
        """The component that contributed most to item i (the reason shown)."""
        return max(self.parts, key=lambda n: float(self.parts[n][i])) if self.parts else "popularity"


class Recommender:
    """A loaded artifact plus what serving needs precomputed."""

    def __init__(self, art: artifact.Artifact) -> None:
        self.artifact = art
        self.index = art.index
        self.models = art.models
        self.weights = art.weights
        self.version = art.version
        self.groups = art.item_groups
        pop = self.models.get("popularity")
        self.popularity = pop.scores if pop is not None else np.zeros(self.index.n_items, np.float32)  # type: ignore[attr-defined]
        content = self.models.get("content")
        self.content: Content | None = content if isinstance(content, Content) else None

    @property
    def n_items(self) -> int:
        return self.index.n_items

    def history(self, items: list[str], timestamps: list[float], t_now: float) -> History:
        return history(self.index, items, timestamps, [1.0] * len(items), t_now)

    def positions(self, items: list[str]) -> list[int]:
        return [p for p in (self.index.item_pos.get(i) for i in items) if p is not None]

    def blend(self, h: History, query_vector: np.ndarray | None = None) -> Blend:
        """The hybrid's weighted z-scores for one history (the user's own items excluded from the
        statistics, since they are never shown as hybrid picks), plus the query's, if any."""
        parts: dict[str, np.ndarray] = {}
        exclude = h.X if h.X.nnz else None
        for name, w in self.weights.items():
            model = self.models[name]
            if name == "buy_again" or (not h.X.nnz and model.personal):
                continue  # buy-again has its own slots; without a history only popularity speaks
            parts[name] = w * zscore(model.score(h), exclude)[0]
        if not parts and "popularity" in self.models:
            parts["popularity"] = zscore(self.popularity[None, :])[0]
        if query_vector is not None:
            parts["query"] = QUERY_WEIGHT * zscore(query_vector[None, :].astype(np.float32))[0]
        total = np.zeros(self.n_items, np.float32)
        for v in parts.values():
            total += v
        return Blend(total, parts)

    def buy_again(self, h: History) -> np.ndarray:
        """Frequency x recency of the user's own items (zero elsewhere)."""
        model = self.models.get("buy_again")
        if model is None:
            return np.asarray(h.X.toarray()[0], np.float32)
        return model.score(h)[0]

    def query_scores(self, query: str) -> np.ndarray | None:
        """Cosine of the query to every item's text vector (None without a content model)."""
        if self.content is None:
            return None
        from retrieval.embed import get_embedder

        return self.content.query_scores(get_embedder().encode_query(query))

    def explain(self, items: list[int], own: list[int]) -> dict[int, int]:
        """For each item, which of the user's (or cart's) items it is most like: the X of "similar to
        X". Uses the hybrid's own item-item evidence first (heaviest weight first), then any model's."""
        if not own or not items:
            return {}
        cols, targets = np.asarray(own), np.asarray(items)
        explainable = ("ease", "itemknn_cosine", "itemknn_bm25", "content", "als")
        weighted = sorted((n for n in self.weights if n in explainable), key=lambda n: -self.weights[n])
        out: dict[int, int] = {}
        nearest: dict[int, int] = {}  # the first model's argmax whatever its sign: the last resort
        for name in [*weighted, *(n for n in explainable if n not in weighted)]:
            model = self.models.get(name)
            if model is None:
                continue
            if isinstance(model, EASE):
                affinity = model.B[np.ix_(cols, targets)]
            elif isinstance(model, ItemKNN):
                affinity = model.S[cols].toarray()[:, targets]
            elif isinstance(model, Content):
                affinity = model.V[cols] @ model.V[targets].T
            elif isinstance(model, ALS):
                affinity = model.Y[cols] @ model.Y[targets].T
            else:
                continue
            best = affinity.argmax(axis=0)
            for t, b, value in zip(
                targets.tolist(), best.tolist(), affinity.max(axis=0).tolist(), strict=True
            ):
                nearest.setdefault(t, int(cols[b]))
                if t not in out and value > 0:
                    out[t] = int(cols[b])
            if len(out) == len(targets):
                break
        return nearest | out


_cache: dict[Path, tuple[tuple[int, int, int], Recommender | None]] = {}
_lock = threading.Lock()


def _stamp(root: Path) -> tuple[int, int, int]:
    """Identifies the current LATEST file without reading it: `artifact.save` replaces it atomically
    (new inode), so one stat() per request notices a new version."""
    try:
        st = (root / "LATEST").stat()
    except OSError:
        return (0, 0, len(artifact.versions(root)))
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def get_recommender(settings: Settings) -> Recommender | None:
    """The newest artifact under settings.var_dir/"recsys", cached; None when there is none."""
    root = settings.var_dir / "recsys"
    stamp = _stamp(root)
    cached = _cache.get(root)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    with _lock:
        cached = _cache.get(root)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        path = artifact.latest(root)
        rec: Recommender | None = None
        if path is None:
            log.warning(
                "no recommendation artifact under %s: serving popularity; run `shopdesk train recsys`", root
            )
        else:
            try:
                rec = Recommender(artifact.load(path))
            except artifact.ArtifactError as exc:
                log.error("cannot load %s (%s): serving popularity", path, exc)
        _cache[root] = (stamp, rec)
        return rec


def clear_cache() -> None:
    with _lock:
        _cache.clear()
