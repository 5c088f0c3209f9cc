"""The knowledge index: FAISS (dense) + BM25 (bm25s) over chunks, persisted with its embedding model id.

- Dense: `IndexIDMap2` over `IndexFlatIP` (exact inner product on unit vectors = cosine). At
  `HNSW_THRESHOLD` chunks and above it switches to HNSW (`IndexHNSWFlat`, M=32, efConstruction=200,
  efSearch=256): see the benchmark (`benchmarks/retrieval.py`) for where exact search stops being
  cheap next to the query embedding. It switches back to flat below half the threshold.
- Sparse: BM25 (bm25s, Lucene variant) over lower-cased, stop-worded, Snowball-stemmed tokens of the
  chunk's title + heading + text. The tokenised corpus is kept, so an upsert re-indexes BM25 from it
  without re-tokenising or re-embedding anything.
- Incremental: `upsert_documents` / `delete_documents` replace a document's chunks by doc id. Flat
  FAISS removes ids in place; HNSW cannot remove, so deleted ids become tombstones (skipped at
  search time) until they pass 10 % of the index, when the graph is rebuilt from the stored vectors.
- Persisted to a directory: `manifest.json` (format, embedding model id, dims, index type, documents
  with their content hashes, every chunk's metadata and text), `dense.faiss`, `bm25/`. Loading an
  index made by another embedding model raises `IndexModelMismatch` (rebuild with
  `shopdesk index --rebuild`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np

from retrieval.ingest import CHUNKER, Chunk, Document, chunk_document

if TYPE_CHECKING:
    from retrieval.embed import Embedder

FORMAT_VERSION = 1
# Exact search below, HNSW from here on. Measured by benchmarks/retrieval.py on this 2-core box (one
# search thread): a flat search costs ~0.12 ms per 1k chunks (1.1 ms at 10k, 11.5 ms at 100k) while
# HNSW stays ~0.5 ms (recall@10 ~0.98 of exact at 100k) and embedding the query costs ~5-8 ms. At
# 20k chunks exact search would add ~2.5 ms (a third) to a query: there the graph starts paying off.
HNSW_THRESHOLD = 20_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 200  # 80 gave recall@10 0.89-0.95 at 100k chunks; 200: 0.98 (build 3x slower)
HNSW_EF_SEARCH = 256  # ~0.5 ms at 100k chunks, one thread
TOMBSTONE_FRACTION = 0.10

# Lucene's English stop words plus the words every shopper question has ("don't" -> "don", "t").
_STOP_TEXT = """
a an and are as at be but by for if in into is it no not of on or such that the their then there
these they this to was will with i me my mine we our us you your yours he she him her his its
do does did doing done don can could would should shall may might must have has had having am been
being what which who whom whose when where why how hi hello please thanks thank so just also
about any some all get got here s t m ve ll d re
"""
STOPWORDS = frozenset(_STOP_TEXT.split())
_TOKEN = re.compile(r"[a-z0-9]+")


class RetrievalIndexError(RuntimeError):
    """Base class of the index's own errors."""


class IndexNotFound(RetrievalIndexError, FileNotFoundError):
    """No index at that directory."""


class IndexModelMismatch(RetrievalIndexError):
    """The index on disk was built with another embedding model (or dimensions, or format)."""


_stemmer = None
_stemmer_lock = threading.Lock()


def _stem(words: list[str]) -> list[str]:
    global _stemmer
    if _stemmer is None:
        with _stemmer_lock:
            try:
                import Stemmer  # PyStemmer (Snowball, C)

                _stemmer = Stemmer.Stemmer("english")
            except ImportError:  # pragma: no cover - PyStemmer is a dependency
                _stemmer = False
    return _stemmer.stemWords(words) if _stemmer else words


def tokenize(text: str) -> list[str]:
    """BM25 tokens: lower case alphanumerics, stop words removed, stemmed ("returns" -> "return")."""
    words = [w for w in _TOKEN.findall(text.lower()) if w not in STOPWORDS]
    return _stem(words)


@dataclass
class IndexStats:
    chunks: int
    documents: int
    index_type: str
    tombstones: int
    model_id: str
    dims: int


class KnowledgeIndex:
    """Chunks with their vectors (FAISS) and tokens (BM25); one embedding model per index."""

    def __init__(
        self,
        model_id: str,
        dims: int,
        index_type: str = "auto",
        hnsw_threshold: int = HNSW_THRESHOLD,
    ) -> None:
        if index_type not in ("auto", "flat", "hnsw"):
            raise ValueError(f"index_type must be auto, flat or hnsw, not {index_type!r}")
        self.model_id = model_id
        self.dims = dims
        self.index_type = index_type
        self.hnsw_threshold = hnsw_threshold
        self.chunker = CHUNKER  # how the stored chunks were cut (a different one: re-chunk everything)
        self.chunks: dict[int, Chunk] = {}
        self.docs: dict[str, dict[str, Any]] = {}  # doc_id -> {"hash", "source_type", "product_id", "ids"}
        self.next_id = 0
        self.tombstones: set[int] = set()
        self._tokens: dict[int, list[str]] = {}
        self._dense = self._new_dense("flat")
        self._dense_kind = "flat"
        self._bm25: Any = None
        self._bm25_ids = np.zeros(0, dtype=np.int64)
        self._bm25_dirty = True
        self._by_source_type: dict[str, set[int]] = {}
        self._by_product: dict[str, set[int]] = {}
        self._tombstone_sel: Any = None  # (IDSelectorNot, its IDSelectorBatch): both kept alive
        self._lock = threading.RLock()
        self.created_at = time.time()
        self.updated_at = self.created_at

    # ---- dense structure --------------------------------------------------------------------------

    def _new_dense(self, kind: str) -> faiss.IndexIDMap2:
        if kind == "hnsw":
            inner = faiss.IndexHNSWFlat(self.dims, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            inner.hnsw.efSearch = HNSW_EF_SEARCH
        else:
            inner = faiss.IndexFlatIP(self.dims)
        return faiss.IndexIDMap2(inner)

    def _wanted_kind(self, n: int) -> str:
        if self.index_type != "auto":
            return self.index_type
        if self._dense_kind == "hnsw":  # hysteresis: no flip-flopping around the threshold
            return "hnsw" if n >= self.hnsw_threshold // 2 else "flat"
        return "hnsw" if n >= self.hnsw_threshold else "flat"

    def _all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of everything in the dense index, tombstones excluded."""
        n = self._dense.ntotal
        if n == 0:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.dims), dtype=np.float32)
        ids = faiss.vector_to_array(self._dense.id_map).astype(np.int64)
        vecs = self._dense.index.reconstruct_n(0, n)
        if self.tombstones:
            keep = ~np.isin(ids, np.fromiter(self.tombstones, dtype=np.int64))
            ids, vecs = ids[keep], vecs[keep]
        return ids, vecs

    def _rebuild_dense(self, kind: str) -> None:
        ids, vecs = self._all_vectors()
        dense = self._new_dense(kind)
        if len(ids):
            dense.add_with_ids(np.ascontiguousarray(vecs, dtype=np.float32), ids)
        self._dense, self._dense_kind = dense, kind
        self.tombstones.clear()
        self._tombstone_sel = None

    def _maybe_restructure(self) -> None:
        live = len(self.chunks)
        kind = self._wanted_kind(live)
        too_many_tombstones = bool(self.tombstones) and len(self.tombstones) > TOMBSTONE_FRACTION * max(
            1, self._dense.ntotal
        )
        if kind != self._dense_kind or too_many_tombstones:
            self._rebuild_dense(kind)

    # ---- writes -----------------------------------------------------------------------------------

    def add_chunks(
        self,
        chunks: Sequence[Chunk],
        vectors: np.ndarray,
        doc_hashes: dict[str, str] | None = None,
        tokens: Sequence[list[str]] | None = None,
    ) -> list[int]:
        """Add chunks (whose documents are not in the index) with their unit vectors."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dims)
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        with self._lock:
            ids = np.arange(self.next_id, self.next_id + len(chunks), dtype=np.int64)
            self.next_id += len(chunks)
            for i, (cid, chunk) in enumerate(zip(ids.tolist(), chunks, strict=True)):
                self.chunks[cid] = chunk
                self._tokens[cid] = tokens[i] if tokens is not None else tokenize(chunk.index_text())
                doc = self.docs.setdefault(
                    chunk.doc_id,
                    {"hash": "", "source_type": chunk.source_type, "product_id": chunk.product_id, "ids": []},
                )
                doc["ids"].append(cid)
                self._by_source_type.setdefault(chunk.source_type, set()).add(cid)
                if chunk.product_id:
                    self._by_product.setdefault(chunk.product_id, set()).add(cid)
            for doc_id, h in (doc_hashes or {}).items():
                if doc_id in self.docs:
                    self.docs[doc_id]["hash"] = h
            if len(ids):
                self._dense.add_with_ids(vectors, ids)
            self._bm25_dirty = True
            self._maybe_restructure()
            self.updated_at = time.time()
            return ids.tolist()

    def delete_documents(self, doc_ids: Iterable[str]) -> int:
        """Remove every chunk of these documents; returns how many chunks went. Unknown ids: ignored."""
        with self._lock:
            gone: list[int] = []
            for doc_id in doc_ids:
                doc = self.docs.pop(doc_id, None)
                if doc:
                    gone.extend(doc["ids"])
            if not gone:
                return 0
            for cid in gone:
                chunk = self.chunks.pop(cid)
                self._tokens.pop(cid, None)
                self._by_source_type.get(chunk.source_type, set()).discard(cid)
                if chunk.product_id:
                    self._by_product.get(chunk.product_id, set()).discard(cid)
            arr = np.asarray(gone, dtype=np.int64)
            if self._dense_kind == "flat":
                self._dense.remove_ids(arr)
            else:
                self.tombstones.update(gone)
                self._tombstone_sel = None
            self._bm25_dirty = True
            self._maybe_restructure()
            self.updated_at = time.time()
            return len(gone)

    def upsert_documents(
        self,
        docs: Sequence[Document],
        embedder: Embedder,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Replace (or add) these documents: chunk, embed, drop their old chunks, add the new ones."""
        self.check_embedder(embedder)
        chunks: list[Chunk] = []
        hashes: dict[str, str] = {}
        for doc in docs:
            chunks.extend(chunk_document(doc))
            hashes[doc.doc_id] = doc.content_hash
        vectors = embedder.encode([c.index_text() for c in chunks], progress=progress)
        with self._lock:
            self.delete_documents(hashes)
            self.add_chunks(chunks, vectors, doc_hashes=hashes)
        return len(chunks)

    def check_embedder(self, embedder: Embedder) -> None:
        if embedder.model_id != self.model_id or embedder.dim != self.dims:
            raise IndexModelMismatch(
                f"this index was built with embedding model {self.model_id!r} ({self.dims} dims), "
                f"not {embedder.model_id!r} ({embedder.dim} dims): rebuild it with `shopdesk index --rebuild`"
            )

    # ---- reads ------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.chunks)

    def stats(self) -> IndexStats:
        return IndexStats(
            chunks=len(self.chunks),
            documents=len(self.docs),
            index_type=self._dense_kind,
            tombstones=len(self.tombstones),
            model_id=self.model_id,
            dims=self.dims,
        )

    def allowed_ids(self, source_types: set[str] | None, product_ids: set[str] | None) -> set[int] | None:
        """Chunk ids passing the filters (None: no filter)."""
        if source_types is None and product_ids is None:
            return None
        with self._lock:
            allowed: set[int] | None = None
            if source_types is not None:
                allowed = set().union(*(self._by_source_type.get(s, set()) for s in source_types))
            if product_ids is not None:
                by_product = set().union(*(self._by_product.get(p, set()) for p in product_ids))
                allowed = by_product if allowed is None else allowed & by_product
            return allowed

    def _ensure_bm25(self) -> None:
        if not self._bm25_dirty:
            return
        import bm25s

        ids = sorted(self.chunks)
        self._bm25_ids = np.asarray(ids, dtype=np.int64)
        if not ids:
            self._bm25 = None
        else:
            for cid in ids:
                if cid not in self._tokens:
                    self._tokens[cid] = tokenize(self.chunks[cid].index_text())
            bm25 = bm25s.BM25()
            bm25.index([self._tokens[cid] for cid in ids], show_progress=False)
            self._bm25 = bm25
        self._bm25_dirty = False

    def search_bm25(self, query: str, n: int, allowed: set[int] | None = None) -> list[tuple[int, float]]:
        """Top-n (chunk id, BM25 score) with a positive score, best first."""
        tokens = tokenize(query)
        with self._lock:
            self._ensure_bm25()
            if self._bm25 is None or n <= 0:
                return []
            known = [t for t in tokens if t in self._bm25.vocab_dict]
            if not known:
                return []
            scores = self._bm25.get_scores(known)
            ids = self._bm25_ids
        if allowed is not None:
            mask = np.isin(ids, np.fromiter(allowed, dtype=np.int64, count=len(allowed)))
            scores = np.where(mask, scores, 0.0)
        n = min(n, len(scores))
        top = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(ids[i]), float(scores[i])) for i in top if scores[i] > 0]

    def search_dense(
        self, vector: np.ndarray, n: int, allowed: set[int] | None = None
    ) -> list[tuple[int, float]]:
        """Top-n (chunk id, cosine) for a unit query vector, best first."""
        q = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, self.dims)
        with self._lock:
            live = len(self.chunks)
            if live == 0 or n <= 0 or (allowed is not None and not allowed):
                return []
            if allowed is not None:
                allowed = allowed - self.tombstones if self.tombstones else allowed
                if self._dense_kind == "hnsw" and len(allowed) <= 4096:
                    # a narrow filter on a graph: score the few allowed vectors exactly instead
                    ids = np.fromiter(allowed, dtype=np.int64, count=len(allowed))
                    vecs = np.vstack([self._dense.reconstruct(int(i)) for i in ids])
                    scores = vecs @ q[0]
                    order = np.argsort(-scores, kind="stable")[:n]
                    return [(int(ids[i]), float(scores[i])) for i in order]
                sel = faiss.IDSelectorBatch(np.fromiter(allowed, dtype=np.int64, count=len(allowed)))
                n = min(n, len(allowed))
            elif self.tombstones:
                if self._tombstone_sel is None:
                    batch = faiss.IDSelectorBatch(np.fromiter(self.tombstones, dtype=np.int64))
                    self._tombstone_sel = (faiss.IDSelectorNot(batch), batch)
                sel = self._tombstone_sel[0]
            else:
                sel = None
            n = min(n, live)
            if self._dense_kind == "hnsw":
                params: Any = faiss.SearchParametersHNSW()
                params.efSearch = max(HNSW_EF_SEARCH, n)
            else:
                params = faiss.SearchParameters()
            if sel is not None:
                params.sel = sel
            # One query: a single OpenMP thread. faiss ships its own OpenMP runtime next to torch's;
            # two threads per search on 2 shared cores made 10k-chunk searches 50x slower (barrier
            # waits) and left spinning workers that slowed the next query embedding.
            threads = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1)
            try:
                scores, ids = self._dense.search(q, n, params=params)
            finally:
                faiss.omp_set_num_threads(threads)
        return [(cid, s) for cid, s in zip(ids[0].tolist(), scores[0].tolist(), strict=True) if cid >= 0]

    # ---- persistence ------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the index to `path` (atomically: a temp dir swapped in place)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        with self._lock:
            self._ensure_bm25()
            manifest = {
                "format": FORMAT_VERSION,
                "embedding_model_id": self.model_id,
                "dims": self.dims,
                "chunker": self.chunker,
                "index_type": self.index_type,
                "dense_kind": self._dense_kind,
                "hnsw_threshold": self.hnsw_threshold,
                "n_chunks": len(self.chunks),
                "n_documents": len(self.docs),
                "next_id": self.next_id,
                "tombstones": sorted(self.tombstones),
                "created_at": self.created_at,
                "updated_at": self.updated_at,
                "documents": self.docs,
                "chunks": [{"int_id": cid, **c.to_dict()} for cid, c in sorted(self.chunks.items())],
            }
            faiss.write_index(self._dense, str(tmp / "dense.faiss"))
            if self._bm25 is not None:
                self._bm25.save(str(tmp / "bm25"), show_progress=False)
                np.save(tmp / "bm25" / "chunk_ids.npy", self._bm25_ids)
        (tmp / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False))
        old = path.with_name(f".{path.name}.old-{os.getpid()}-{threading.get_ident()}")
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        if old.exists():
            shutil.rmtree(old, ignore_errors=True)
        return path

    @staticmethod
    def read_manifest(path: str | Path) -> dict[str, Any]:
        file = Path(path) / "manifest.json"
        if not file.exists():
            raise IndexNotFound(f"no index at {path} (build it with `shopdesk index`)")
        try:
            return json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise IndexModelMismatch(
                f"the index manifest at {file} is unreadable ({exc}): rebuild it with `shopdesk index --rebuild`"
            ) from exc

    @classmethod
    def load(cls, path: str | Path, model_id: str | None = None, dims: int | None = None) -> KnowledgeIndex:
        """Read an index; with `model_id`/`dims`, refuse one built by a different embedding model."""
        path = Path(path)
        m = cls.read_manifest(path)
        if m.get("format") != FORMAT_VERSION:
            raise IndexModelMismatch(
                f"the index at {path} has format {m.get('format')!r}, this version reads {FORMAT_VERSION}: "
                "rebuild it with `shopdesk index --rebuild`"
            )
        if (model_id is not None and m.get("embedding_model_id") != model_id) or (
            dims is not None and m.get("dims") != dims
        ):
            raise IndexModelMismatch(
                f"the index at {path} was built with embedding model {m.get('embedding_model_id')!r} "
                f"({m.get('dims')} dims), but this installation embeds queries with {model_id!r} "
                f"({dims} dims): its vectors cannot be compared. Rebuild it with `shopdesk index --rebuild`."
            )
        idx = cls(m["embedding_model_id"], int(m["dims"]), m.get("index_type", "auto"))
        idx.hnsw_threshold = int(m.get("hnsw_threshold", HNSW_THRESHOLD))
        idx.chunker = m.get("chunker", "")
        idx.next_id = int(m["next_id"])
        idx.created_at = m.get("created_at", idx.created_at)
        idx.updated_at = m.get("updated_at", idx.updated_at)
        idx.docs = {k: dict(v) for k, v in m["documents"].items()}
        idx.tombstones = set(m.get("tombstones", []))
        for row in m["chunks"]:
            cid = int(row.pop("int_id"))
            chunk = Chunk.from_dict(row)
            idx.chunks[cid] = chunk
            idx._by_source_type.setdefault(chunk.source_type, set()).add(cid)
            if chunk.product_id:
                idx._by_product.setdefault(chunk.product_id, set()).add(cid)
        idx._dense = faiss.read_index(str(path / "dense.faiss"))
        idx._dense_kind = m.get("dense_kind", "flat")
        if idx._dense_kind == "hnsw":
            faiss.downcast_index(idx._dense.index).hnsw.efSearch = HNSW_EF_SEARCH
        if (path / "bm25" / "chunk_ids.npy").exists():
            import bm25s

            idx._bm25 = bm25s.BM25.load(str(path / "bm25"), show_progress=False)
            idx._bm25_ids = np.load(path / "bm25" / "chunk_ids.npy")
            idx._bm25_dirty = False
        # tokens are recomputed lazily, only when an upsert re-indexes BM25
        return idx
