"""The store's knowledge: policy pages (knowledge/policies/*.md) + a product page per catalog product.

- `product_page(product, variants)`: Markdown built from the catalog (options, price range,
  availability, every version with its price and item id). Not stored as files: generated at index
  time from the database, so the index follows the catalog.
- `store_documents(engine)`: the policy pages ("policies/<file>.md") and product pages
  ("products/<name-slug>.md", source_type "product", product_id set).
- `build_store_index(engine, settings)`: brings settings.var_dir/"index" up to date. Without
  `rebuild` it is incremental: only documents whose content hash changed are re-embedded, documents
  that disappeared are deleted. An index built with another embedding model raises
  IndexModelMismatch (use rebuild=True / `shopdesk index --rebuild`).
- `load_store_retriever(settings, engine)`: a new Retriever over that index, built first if missing.
- `get_store_retriever(settings, engine)`: the process's shared one (what /api/search and the agent
  should use): loaded once, reopened when the index on disk changes.
- `update_store_documents(settings, engine, upsert=..., delete=...)`: a few documents changed (the
  admin's knowledge-base edits): re-embeds only those, in the shared retriever, and saves the index.
- `export_store_corpus(engine, out_dir)`: the same documents as files, to evaluate on
  (`shopdesk eval retrieval --corpus out_dir ...`): doc ids there equal the index's doc ids.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from commerce.models import Product, Variant
from retrieval.embed import DIMS, Embedder, default_model_id, get_embedder
from retrieval.index import IndexNotFound, KnowledgeIndex
from retrieval.ingest import CHUNKER, CorpusReport, Document, chunk_document, load_corpus, slugify
from retrieval.search import Retriever
from shopdesk.settings import ROOT, Settings

log = logging.getLogger(__name__)

KNOWLEDGE_DIR = ROOT / "knowledge"
POLICIES_DIR = KNOWLEDGE_DIR / "policies"
LOW_STOCK = 3

Progress = Callable[[int, int], None]  # (chunks embedded so far, chunks to embed)


def store_index_dir(settings: Settings) -> Path:
    return settings.var_dir / "index"


def _natural(value: str) -> tuple[float, str]:
    m = re.match(r"^\s*(\d+(?:\.\d+)?)", value)
    return (float(m.group(1)), value.lower()) if m else (float("inf"), value.lower())


def _money(x: float) -> str:
    return f"${x:,.2f}"


def _label(options: dict[str, str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in options.items()) or "standard"


def product_page(product: Product, variants: Sequence[Variant]) -> str:
    """The product's page in Markdown: description, options, prices, availability, versions."""
    variants = sorted(variants, key=lambda v: v.id)
    name = product.name
    keys: list[str] = []
    values: dict[str, set[str]] = {}
    for v in variants:
        for k, val in (v.options or {}).items():
            if k not in values:
                keys.append(k)
                values[k] = set()
            values[k].add(str(val))
    lines = [f"# {name}", ""]
    if product.description:
        lines += [product.description.strip(), ""]
    lines += [f"Product id: {product.id}.", ""]

    lines += ["## Options", ""]
    if keys:
        lines.append(f"The {name} comes in {len(variants)} versions. You can choose:")
        lines += [f"- {k}: {', '.join(sorted(values[k], key=_natural))}" for k in keys]
    else:
        lines.append(f"The {name} comes in a single version.")
    lines.append("")

    lines += ["## Price", ""]
    if variants:
        cheapest = min(variants, key=lambda v: (v.price, v.id))
        dearest = max(variants, key=lambda v: (v.price, v.id))
        if cheapest.price == dearest.price:
            lines.append(f"Every version of the {name} costs {_money(cheapest.price)}.")
        else:
            lines.append(
                f"The {name} costs from {_money(cheapest.price)} to {_money(dearest.price)}, "
                "depending on the options. Shipping is included."
            )
            lines.append(
                f"The lowest price, {_money(cheapest.price)}, is for {_label(cheapest.options)}; "
                f"the highest, {_money(dearest.price)}, is for {_label(dearest.options)}."
            )
    else:
        lines.append(f"The {name} is not on sale at the moment.")
    lines.append("")

    available = [v for v in variants if v.available]
    lines += ["## Availability", ""]
    if not variants or not available:
        lines.append(f"The {name} is sold out in every version right now.")
    elif len(available) == len(variants):
        lines.append(f"Every version of the {name} is in stock.")
    else:
        lines.append(
            f"{len(available)} of the {len(variants)} versions of the {name} are in stock; "
            f"{len(variants) - len(available)} are sold out."
        )
    sold_out_values = [
        f"{k} {val}"
        for k in keys
        for val in sorted(values[k], key=_natural)
        if not any(v.available and str((v.options or {}).get(k)) == val for v in variants)
    ]
    if available and sold_out_values:
        lines.append(f"Sold out in every version with: {'; '.join(sold_out_values)}.")
    low = [v for v in available if 0 < v.stock_on_hand <= LOW_STOCK]
    if low:
        lines.append("Only a few left: " + "; ".join(_label(v.options) for v in low) + ".")
    lines.append("")

    if variants:
        lines += ["## Versions and prices", ""]
        for v in variants:
            state = "in stock" if v.available else "sold out"
            lines.append(f"- {_label(v.options)}: {_money(v.price)}, {state} (item id {v.id})")
        lines.append("")
    return "\n".join(lines)


def product_documents(engine: Engine, product_ids: Sequence[str] | None = None) -> list[Document]:
    """A product page Document per product (doc id "products/<slug of the name>.md")."""
    with Session(engine) as db:
        q = select(Product).order_by(col(Product.id))
        if product_ids is not None:
            q = q.where(col(Product.id).in_(list(product_ids)))
        products = db.exec(q).all()
        vq = select(Variant).order_by(col(Variant.id))
        if product_ids is not None:
            vq = vq.where(col(Variant.product_id).in_(list(product_ids)))
        by_product: dict[str, list[Variant]] = {}
        for v in db.exec(vq).all():
            by_product.setdefault(v.product_id, []).append(v)
        all_names = [n for n in db.exec(select(Product.name)).all()]
    taken = {slugify(n) for n in all_names}
    dupes = {s for s in taken if [slugify(n) for n in all_names].count(s) > 1}
    docs = []
    for p in products:
        slug = slugify(p.name) or p.id
        if slug in dupes:
            slug = f"{slug}-{p.id}"
        docs.append(
            Document(
                doc_id=f"products/{slug}.md",
                text=product_page(p, by_product.get(p.id, [])),
                source_type="product",
                product_id=p.id,
                title=p.name,
            )
        )
    return docs


def policy_documents(policies_dir: Path = POLICIES_DIR) -> tuple[list[Document], CorpusReport]:
    return load_corpus(policies_dir, source_type="policy", prefix="policies/")


def store_documents(engine: Engine, policies_dir: Path = POLICIES_DIR) -> list[Document]:
    policies, _ = policy_documents(policies_dir)
    return policies + product_documents(engine)


@dataclass
class BuildReport:
    path: Path
    rebuilt: bool
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: int = 0
    chunks_embedded: int = 0
    chunks_total: int = 0
    documents_total: int = 0
    seconds: float = 0.0

    @property
    def chunks_per_s(self) -> float:
        return self.chunks_embedded / self.seconds if self.seconds else 0.0


def build_store_index(
    engine: Engine,
    settings: Settings,
    rebuild: bool = False,
    embedder: Embedder | None = None,
    progress: Progress | None = None,
    policies_dir: Path | None = None,
) -> BuildReport:
    """Create or update var_dir/index from the policy pages (default: settings.policies_dir) and the
    catalog; returns what changed."""
    started = time.perf_counter()
    path = store_index_dir(settings)
    docs = store_documents(engine, policies_dir or settings.policies_dir)
    # The model loads only when something has to be embedded: an up-to-date index costs a hash pass.
    model_id = embedder.model_id if embedder else default_model_id()
    dims = embedder.dim if embedder else DIMS
    index: KnowledgeIndex | None = None
    if not rebuild:
        try:
            index = KnowledgeIndex.load(path, model_id=model_id, dims=dims)
        except IndexNotFound:
            index = None
    report = BuildReport(path=path, rebuilt=index is None)
    if index is None:
        index = KnowledgeIndex(model_id, dims)
    current = {d.doc_id: d for d in docs}
    changed = []
    rechunk = index.chunker != CHUNKER  # the chunker changed since the index was written
    index.chunker = CHUNKER
    for d in docs:
        known = index.docs.get(d.doc_id)
        if known is None:
            report.added.append(d.doc_id)
            changed.append(d)
        elif rechunk or known.get("hash") != d.content_hash:
            report.updated.append(d.doc_id)
            changed.append(d)
        else:
            report.unchanged += 1
    report.deleted = sorted(set(index.docs) - set(current))
    if report.deleted:
        index.delete_documents(report.deleted)
    if changed:
        total = sum(len(chunk_document(d)) for d in changed)
        done = 0

        def step(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(done, total)

        if progress is not None:
            progress(0, total)
        report.chunks_embedded = index.upsert_documents(changed, embedder or get_embedder(), progress=step)
    if changed or report.deleted or report.rebuilt:
        index.save(path)
    report.chunks_total = len(index)
    report.documents_total = len(index.docs)
    report.seconds = time.perf_counter() - started
    log.info(
        "index %s: %d added, %d updated, %d deleted, %d chunks embedded in %.1f s",
        path,
        len(report.added),
        len(report.updated),
        len(report.deleted),
        report.chunks_embedded,
        report.seconds,
    )
    return report


def load_store_retriever(
    settings: Settings, engine: Engine | None = None, embedder: Embedder | None = None, **kwargs
) -> Retriever:
    """The store's Retriever from var_dir/index; builds the index first when there is none."""
    embedder = embedder or get_embedder()
    path = store_index_dir(settings)
    if not (path / "manifest.json").exists():
        if engine is None:
            from shopdesk.db import get_engine

            engine = get_engine(settings)
        build_store_index(engine, settings, embedder=embedder)
    return Retriever.load(path, embedder=embedder, **kwargs)


_cache: dict[Path, tuple[float, Retriever]] = {}
_cache_lock = threading.Lock()


def _manifest_mtime(path: Path) -> float:
    try:
        return (path / "manifest.json").stat().st_mtime
    except OSError:
        return -1.0


def get_store_retriever(settings: Settings, engine: Engine | None = None) -> Retriever:
    """The process's shared store Retriever (one per index directory), built if missing, and reopened
    when `shopdesk index` has rewritten the index since it was loaded. Cheap to call per request."""
    path = store_index_dir(settings)
    cached = _cache.get(path)
    if cached is not None and cached[0] == _manifest_mtime(path):
        return cached[1]
    with _cache_lock:
        cached = _cache.get(path)
        if cached is not None and cached[0] == _manifest_mtime(path):
            return cached[1]
        for attempt in range(3):  # an index being swapped in by `shopdesk index` right now: retry
            try:
                retriever = load_store_retriever(settings, engine)
                break
            except (FileNotFoundError, OSError):
                if attempt == 2:
                    raise
                time.sleep(0.2)
        _cache[path] = (_manifest_mtime(path), retriever)
        return retriever


def update_store_documents(
    settings: Settings,
    engine: Engine | None = None,
    upsert: Sequence[Document] = (),
    delete: Sequence[str] = (),
) -> Retriever:
    """Add, replace or remove a few documents in the process's shared retriever and persist the index.

    The admin's knowledge-base edits go through here: only the changed pages are embedded, the very
    next search in this process (the agent's tool, /api/search) sees them, and other processes reopen
    the index when they notice the new manifest.
    """
    path = store_index_dir(settings)
    retriever = get_store_retriever(settings, engine)
    with _cache_lock:
        if delete:
            retriever.delete(delete)
        if upsert:
            retriever.upsert(upsert)
        retriever.save(path)
        _cache[path] = (_manifest_mtime(path), retriever)
    return retriever


def export_store_corpus(engine: Engine, out_dir: str | Path, policies_dir: Path = POLICIES_DIR) -> list[Path]:
    """Write the policy and product pages under out_dir (doc id = relative path), for evaluation."""
    out = Path(out_dir)
    written = []
    for d in store_documents(engine, policies_dir):
        target = out / d.doc_id
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(d.text, encoding="utf-8")
        written.append(target)
    return written
