"""The `Retriever`: `search(query, k, filters) -> list[Passage]` over a `KnowledgeIndex`.

Modes: "bm25" (lexical), "dense" (MiniLM cosine) and "hybrid" (default): reciprocal-rank fusion of
the two candidate lists, score = sum over lists of 1 / (rrf_k + rank), rrf_k = 60 (Cormack et al.).
Filters: {"source_type": "policy" | "product" | [...], "product_id": "..." | [...]}.
An empty query gives []; a query longer than MAX_QUERY_BYTES is cut there (the embedder reads 256
tokens anyway, and BM25 gains nothing from a pasted essay).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from retrieval.embed import Embedder, get_embedder
from retrieval.index import KnowledgeIndex
from retrieval.ingest import Document, chunk_documents

MODES = ("bm25", "dense", "hybrid")
MAX_QUERY_BYTES = 2048
RRF_K = 60
FILTER_KEYS = ("source_type", "product_id")
SOURCE_TYPES = ("policy", "product")


@dataclass
class Passage:
    id: str  # "<source>#<anchor>" (+ "~N" for the parts of a long section)
    source: str  # the document id: its path relative to the corpus ("policies/refunds.md")
    title: str  # the document's title
    anchor: str  # the section's GitHub-style anchor ("" when the text has no heading)
    text: str
    score: float
    source_type: str = "policy"
    product_id: str | None = None
    section: str = ""  # the section heading

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def url_fragment(self) -> str:
        return f"{self.source}#{self.anchor}" if self.anchor else self.source


def truncate_query(query: str, max_bytes: int = MAX_QUERY_BYTES) -> str:
    raw = query.encode("utf-8")
    if len(raw) <= max_bytes:
        return query
    return raw[:max_bytes].decode("utf-8", errors="ignore")


def _as_set(value: Any, key: str) -> set[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return {value}
    if isinstance(value, Iterable):
        return {str(v) for v in value}
    raise ValueError(f"filter {key!r} must be a string or a list of strings")


class Retriever:
    """Hybrid (BM25 + dense, RRF) search over a KnowledgeIndex; thread-safe for concurrent searches."""

    def __init__(
        self,
        index: KnowledgeIndex,
        embedder: Embedder | None = None,
        mode: str = "hybrid",
        rrf_k: int = RRF_K,
        candidates: int = 50,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.index = index
        self.embedder = embedder or get_embedder()
        index.check_embedder(self.embedder)
        self.mode = mode
        self.rrf_k = rrf_k
        self.candidates = candidates

    # ---- construction -----------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path, embedder: Embedder | None = None, **kwargs: Any) -> Retriever:
        """Open a persisted index; IndexModelMismatch if it was built with another embedding model."""
        embedder = embedder or get_embedder()
        index = KnowledgeIndex.load(path, model_id=embedder.model_id, dims=embedder.dim)
        return cls(index, embedder, **kwargs)

    @classmethod
    def from_documents(
        cls,
        docs: Sequence[Document],
        embedder: Embedder | None = None,
        progress: Callable[[int], None] | None = None,
        index_type: str = "auto",
        **kwargs: Any,
    ) -> Retriever:
        """A fresh in-memory index over `docs` (chunked, embedded, BM25-indexed)."""
        embedder = embedder or get_embedder()
        index = KnowledgeIndex(embedder.model_id, embedder.dim, index_type=index_type)
        chunks = chunk_documents(list(docs))
        vectors = embedder.encode([c.index_text() for c in chunks], progress=progress)
        index.add_chunks(chunks, vectors, doc_hashes={d.doc_id: d.content_hash for d in docs})
        return cls(index, embedder, **kwargs)

    def upsert(self, docs: Sequence[Document]) -> int:
        return self.index.upsert_documents(docs, self.embedder)

    def delete(self, doc_ids: Iterable[str]) -> int:
        return self.index.delete_documents(doc_ids)

    def save(self, path: str | Path) -> Path:
        return self.index.save(path)

    # ---- search -----------------------------------------------------------------------------------

    def search(
        self,
        query: str,
        k: int = 5,
        filters: dict[str, Any] | None = None,
        mode: str | None = None,
    ) -> list[Passage]:
        """The k best passages for `query`, best first ([] for an empty query)."""
        mode = mode or self.mode
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if k <= 0 or not query or not query.strip():
            return []
        query = truncate_query(query.strip())
        filters = filters or {}
        unknown = set(filters) - set(FILTER_KEYS)
        if unknown:
            raise ValueError(f"unknown filter(s) {sorted(unknown)}; allowed: {list(FILTER_KEYS)}")
        allowed = self.index.allowed_ids(
            _as_set(filters.get("source_type"), "source_type"),
            _as_set(filters.get("product_id"), "product_id"),
        )
        n = max(self.candidates, k)
        if mode == "bm25":
            ranked = self.index.search_bm25(query, k, allowed)
        elif mode == "dense":
            ranked = self.index.search_dense(self.embedder.encode_query(query), k, allowed)
        else:
            dense = self.index.search_dense(self.embedder.encode_query(query), n, allowed)
            sparse = self.index.search_bm25(query, n, allowed)
            ranked = self.fuse([dense, sparse])[:k]
        chunks = self.index.chunks
        return [self._passage(cid, score) for cid, score in ranked if cid in chunks]

    def fuse(self, lists: Sequence[list[tuple[int, float]]]) -> list[tuple[int, float]]:
        """Reciprocal-rank fusion; ties keep the order of the first list (dense)."""
        fused: dict[int, float] = {}
        first_seen: dict[int, int] = {}
        for ranked in lists:
            for rank, (cid, _score) in enumerate(ranked, start=1):
                fused[cid] = fused.get(cid, 0.0) + 1.0 / (self.rrf_k + rank)
                first_seen.setdefault(cid, len(first_seen))
        return sorted(fused.items(), key=lambda kv: (-kv[1], first_seen[kv[0]]))

    def _passage(self, cid: int, score: float) -> Passage:
        c = self.index.chunks[cid]
        return Passage(
            id=c.id,
            source=c.doc_id,
            title=c.title,
            anchor=c.anchor,
            text=c.text,
            score=round(float(score), 6),
            source_type=c.source_type,
            product_id=c.product_id,
            section=c.section,
        )
