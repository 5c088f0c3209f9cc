"""Retrieval evaluation on any corpus: Recall@1, Recall@5, MRR@k and nDCG@k for bm25, dense, hybrid.

Corpus: a directory of Markdown/text files; a document's id is its path relative to the directory.
Queries: JSONL, one `{"query": "...", "relevant": ["path/of/doc.md", ...]}` per line (blank lines
and lines starting with "//" are ignored). A hit is any chunk of a relevant document: the ranked
chunks are reduced to documents (first occurrence wins) before scoring, so a document with five
matching sections counts once. Gains are binary; nDCG's ideal ranking puts all relevant docs first.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrieval.embed import Embedder, get_embedder
from retrieval.ingest import CorpusReport, load_corpus
from retrieval.search import MODES, Retriever


class QueryFileError(ValueError):
    """A malformed queries file; names the line."""

    def __init__(self, path: Path, line: int, message: str) -> None:
        super().__init__(f"{path}, line {line}: {message}")
        self.path, self.line = path, line


@dataclass
class Query:
    query: str
    relevant: list[str]
    line: int = 0


def load_queries(path: str | Path) -> list[Query]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"queries file not found: {path}")
    out: list[Query] = []
    with path.open(encoding="utf-8", errors="replace") as fh:
        for no, raw in enumerate(fh, start=1):
            line = raw.strip()
            if not line or line.startswith("//"):
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise QueryFileError(path, no, f"not valid JSON ({exc.msg})") from exc
            if not isinstance(obj, dict):
                raise QueryFileError(path, no, "expected a JSON object with 'query' and 'relevant'")
            q, rel = obj.get("query"), obj.get("relevant")
            if not isinstance(q, str) or not q.strip():
                raise QueryFileError(path, no, "'query' must be a non-empty string")
            if isinstance(rel, str):
                rel = [rel]
            if not isinstance(rel, list) or not rel or not all(isinstance(r, str) and r for r in rel):
                raise QueryFileError(path, no, "'relevant' must be a non-empty list of document paths")
            out.append(Query(q, [r.strip().lstrip("./") for r in rel], no))
    if not out:
        raise QueryFileError(path, 0, "no queries in the file")
    return out


def dedupe_docs(doc_ids: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for d in doc_ids:
        if d not in seen:
            seen.add(d)
            out.append(d)
    return out


def recall_at(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    return len(set(ranked[:k]) & relevant) / len(relevant) if relevant else 0.0


def mrr_at(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    for i, d in enumerate(ranked[:k], start=1):
        if d in relevant:
            return 1.0 / i
    return 0.0


def ndcg_at(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    dcg = sum(1.0 / math.log2(i + 1) for i, d in enumerate(ranked[:k], start=1) if d in relevant)
    ideal = sum(1.0 / math.log2(i + 1) for i in range(1, min(len(relevant), k) + 1))
    return dcg / ideal if ideal else 0.0


def score_run(rankings: Sequence[Sequence[str]], queries: Sequence[Query], k: int = 10) -> dict[str, float]:
    """Mean metrics over queries; `rankings[i]` are doc ids (already deduped) for queries[i]."""
    n = len(queries)
    sums = {"recall@1": 0.0, "recall@5": 0.0, f"mrr@{k}": 0.0, f"ndcg@{k}": 0.0}
    for ranked, q in zip(rankings, queries, strict=True):
        rel = set(q.relevant)
        sums["recall@1"] += recall_at(ranked, rel, 1)
        sums["recall@5"] += recall_at(ranked, rel, 5)
        sums[f"mrr@{k}"] += mrr_at(ranked, rel, k)
        sums[f"ndcg@{k}"] += ndcg_at(ranked, rel, k)
    return {name: round(total / n, 4) if n else 0.0 for name, total in sums.items()}


@dataclass
class EvalResult:
    metrics: dict[str, dict[str, float]]  # mode -> metric -> value
    n_queries: int
    corpus: CorpusReport
    unknown_relevant: list[str]  # relevant paths that are no document of the corpus
    per_query: dict[str, list[list[str]]]  # mode -> ranked doc ids per query

    def as_json(self) -> dict[str, Any]:
        """The `--json` object: {"bm25": {...}, "dense": {...}, "hybrid": {...}, "n_queries": N}."""
        return {**{m: self.metrics[m] for m in self.metrics}, "n_queries": self.n_queries}


def evaluate(
    corpus_dir: str | Path,
    queries: str | Path | Sequence[Query],
    k: int = 10,
    modes: Sequence[str] = MODES,
    embedder: Embedder | None = None,
    progress: Callable[[int], None] | None = None,
) -> EvalResult:
    """Index `corpus_dir` fresh (in memory) and score every mode on the queries."""
    if k < 5:
        raise ValueError("k must be at least 5 (Recall@5 is reported)")
    qs = load_queries(queries) if isinstance(queries, str | Path) else list(queries)
    docs, report = load_corpus(corpus_dir)
    if not docs:
        raise FileNotFoundError(f"no readable .md/.txt documents in {corpus_dir}")
    retriever = Retriever.from_documents(docs, embedder or get_embedder(), progress=progress)
    known = {d.doc_id for d in docs}
    unknown = sorted({r for q in qs for r in q.relevant} - known)
    depth = k * 8  # chunks fetched, enough for k distinct documents in practice
    metrics: dict[str, dict[str, float]] = {}
    per_query: dict[str, list[list[str]]] = {}
    for mode in modes:
        rankings = []
        for q in qs:
            passages = retriever.search(q.query, k=depth, mode=mode)
            rankings.append(dedupe_docs([p.source for p in passages])[:k])
        metrics[mode] = score_run(rankings, qs, k)
        per_query[mode] = rankings
    return EvalResult(metrics, len(qs), report, unknown, per_query)
