"""Retrieval (issue 4): chunking, the three search modes, filters, incremental updates, persistence,
bad input, the eval command, the LangChain wrapper and GET /api/search.

Fast: one MiniLM load and one small policy index per module (the store's ten policy pages plus three
hand-made product pages). The full store index (50 product pages) and the dev-set evaluation are
marked slow.
"""

import json
import warnings
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from commerce.models import Product, Variant
from retrieval import knowledge
from retrieval.embed import get_embedder
from retrieval.eval import (
    Query,
    QueryFileError,
    dedupe_docs,
    evaluate,
    load_queries,
    mrr_at,
    ndcg_at,
    recall_at,
    score_run,
)
from retrieval.index import IndexModelMismatch, KnowledgeIndex
from retrieval.ingest import Document, chunk_document, load_corpus, slugify
from retrieval.knowledge import POLICIES_DIR, product_documents, product_page
from retrieval.langchain import ShopdeskLangChainRetriever
from retrieval.search import MAX_QUERY_BYTES, Passage, Retriever, truncate_query
from shopdesk import cli
from shopdesk.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEV_SET = ROOT / "tests" / "data" / "retrieval_dev.jsonl"


def _product(pid: str, name: str, variants: list[tuple[str, dict[str, str], float, bool]]) -> Document:
    product = Product(id=pid, name=name, description=f"{name}. A fine {name.lower()}.")
    vs = [
        Variant(id=vid, product_id=pid, options=opts, price=price, available=avail, stock_on_hand=5 * avail)
        for vid, opts, price, avail in variants
    ]
    return Document(
        doc_id=f"products/{slugify(name)}.md",
        text=product_page(product, vs),
        source_type="product",
        product_id=pid,
        title=name,
    )


PRODUCTS = [
    _product(
        "111",
        "Trail Backpack",
        [
            ("1001", {"color": "navy", "size": "large"}, 89.0, True),
            ("1002", {"color": "red", "size": "small"}, 79.5, False),
        ],
    ),
    _product("222", "Espresso Machine", [("2001", {"pressure": "15 bar", "type": "manual"}, 399.0, True)]),
    _product(
        "333",
        "Wool Socks",
        [("3001", {"size": "M"}, 12.0, True), ("3002", {"size": "L"}, 12.0, True)],
    ),
]


@pytest.fixture(scope="module")
def embedder():
    return get_embedder()


@pytest.fixture(scope="module")
def docs() -> list[Document]:
    policies, _ = load_corpus(POLICIES_DIR, source_type="policy", prefix="policies/")
    return policies + PRODUCTS


@pytest.fixture(scope="module")
def retriever(docs, embedder) -> Retriever:
    return Retriever.from_documents(docs, embedder)


# ---- embeddings -----------------------------------------------------------------------------------


def test_embedder_reproduces_the_reference_all_minilm_l6_v2_similarities(embedder):
    # sentence-transformers' README example for this model: 0.6660, 0.1046, 0.1411
    v = embedder.encode(
        ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
    )
    sims = v @ v.T
    assert sims[0, 1] == pytest.approx(0.6660, abs=1e-3)
    assert sims[0, 2] == pytest.approx(0.1046, abs=1e-3)
    assert sims[1, 2] == pytest.approx(0.1411, abs=1e-3)
    assert embedder.dim == 384 and embedder.model_id == "sentence-transformers/all-MiniLM-L6-v2"
    q = embedder.encode_query("It's so sunny outside!")  # the single-query path (frozen model)
    assert float(q @ v[1]) == pytest.approx(1.0, abs=1e-5)
    assert embedder.encode_query("It's so sunny outside!") is q  # LRU cache hit


# ---- chunking -------------------------------------------------------------------------------------


def test_slugify_is_github_style():
    assert slugify("How long you have") == "how-long-you-have"
    assert slugify("Returns & exchanges (US)") == "returns--exchanges-us"
    assert slugify("Step 2: *ship* it") == "step-2-ship-it"
    assert slugify("Don't panic!") == "dont-panic"
    assert slugify("e-mail_address") == "e-mail_address"


def test_chunking_keeps_headings_anchors_and_metadata():
    text = (
        "# Store rules\n\nIntro paragraph.\n\n## Returns & exchanges\n\nThirty days.\n\n"
        "```\n# not a heading\n```\n\n### Sub part\n\nDetails.\n\n## FAQ\n\nOne.\n\n## FAQ\n\nTwo.\n\n"
        "## Empty\n\n## Long one\n\n" + "\n\n".join(f"Paragraph {i} " + "word " * 60 for i in range(6))
    )
    chunks = chunk_document(Document("rules/store.md", text, source_type="policy"))
    by_id = {c.id: c for c in chunks}
    assert all(c.title == "Store rules" and c.doc_id == "rules/store.md" for c in chunks)
    assert "rules/store.md#store-rules" in by_id  # the intro under the H1
    ret = by_id["rules/store.md#returns--exchanges"]
    assert ret.section == "Returns & exchanges" and ret.anchor == "returns--exchanges"
    assert "# not a heading" in ret.text  # a fenced '#' line is no heading
    assert by_id["rules/store.md#sub-part"].text.startswith("### Sub part")
    assert by_id["rules/store.md#faq"].text.endswith("One.")
    assert by_id["rules/store.md#faq-1"].text.endswith("Two.")  # duplicate headings get -1
    assert not any(c.anchor == "empty" for c in chunks)  # nothing under it: no chunk
    long_parts = [c for c in chunks if c.anchor == "long-one"]
    assert len(long_parts) > 1 and all(c.text.startswith("## Long one") for c in long_parts)
    assert [c.id for c in long_parts][1] == "rules/store.md#long-one~2"
    assert all(len(c.text) <= 700 + 20 for c in long_parts)
    assert ret.index_text().startswith("Store rules - Returns & exchanges\n")


def test_a_text_without_headings_is_one_chunk_titled_by_its_file():
    [chunk] = chunk_document(Document("notes/opening_hours.txt", "We open at 9."))
    assert (chunk.title, chunk.anchor, chunk.id) == ("opening hours", "", "notes/opening_hours.txt#")


def test_policy_pages_have_sections_with_anchors(docs):
    policies = [d for d in docs if d.source_type == "policy"]
    assert len(policies) >= 9
    for doc in policies:
        chunks = chunk_document(doc)
        assert len(chunks) >= 3, doc.doc_id
        assert all(c.anchor and c.section for c in chunks), doc.doc_id


# ---- search -----------------------------------------------------------------------------------------

QUESTIONS = [
    ("how do I cancel my order?", "policies/cancellations-and-order-changes.md"),
    ("fedex delivery time", "policies/shipping-and-delivery.md"),
    ("do you price match amazon", "policies/price-adjustments.md"),
    ("how do I file a warranty claim", "policies/warranty.md"),
    ("do gift cards have an expiration date", "policies/payment-methods-and-gift-cards.md"),
]


@pytest.mark.parametrize("mode", ["bm25", "dense", "hybrid"])
def test_each_mode_finds_the_right_policy(retriever, mode):
    for question, source in QUESTIONS:
        passages = retriever.search(question, k=3, mode=mode)
        assert passages, (mode, question)
        assert passages[0].source == source, (mode, question, [p.id for p in passages])
        assert passages[0].score >= passages[-1].score


def test_the_return_window_question_cites_the_return_section(retriever):
    passages = retriever.search("how long do I have to return a delivered item?", k=3)
    assert passages[0].source == "policies/returns-and-exchanges.md"
    anchors = [p.anchor for p in passages if p.source == "policies/returns-and-exchanges.md"]
    assert "how-long-you-have" in anchors
    p = passages[0]
    assert isinstance(p, Passage) and p.title == "Returns and exchanges" and p.source_type == "policy"
    assert p.id == f"{p.source}#{p.anchor}"


def test_filters_by_source_type_and_product(retriever):
    products = retriever.search("is the red backpack in stock?", k=5, filters={"source_type": "product"})
    assert products and all(p.source_type == "product" for p in products)
    assert products[0].product_id == "111"
    policies = retriever.search("is the red backpack in stock?", k=5, filters={"source_type": "policy"})
    assert policies and all(p.source_type == "policy" for p in policies)
    for mode in ("bm25", "dense", "hybrid"):
        only = retriever.search("price", k=10, filters={"product_id": "222"}, mode=mode)
        assert only and {p.product_id for p in only} == {"222"}, mode
    both = retriever.search("size", k=20, filters={"product_id": ["111", "333"], "source_type": "product"})
    assert {p.product_id for p in both} <= {"111", "333"}
    assert retriever.search("size", filters={"product_id": "nope"}) == []
    with pytest.raises(ValueError, match="unknown filter"):
        retriever.search("size", filters={"colour": "red"})


def test_empty_and_huge_queries(retriever):
    assert retriever.search("") == []
    assert retriever.search("   \n\t") == []
    assert retriever.search("refund", k=0) == []
    huge = "how long do refunds take to reach my credit card? " * 200  # ~10 KB
    assert len(huge.encode()) >= 10_000
    passages = retriever.search(huge, k=3)
    assert passages and passages[0].source == "policies/refunds.md"
    cut = truncate_query("é" * 5000)
    assert len(cut.encode()) <= MAX_QUERY_BYTES and set(cut) == {"é"}


def test_upsert_and_delete_change_results_without_a_rebuild(embedder):
    policies, _ = load_corpus(POLICIES_DIR, source_type="policy", prefix="policies/")
    small = [d for d in policies if d.doc_id.endswith(("refunds.md", "warranty.md"))]
    retriever = Retriever.from_documents(small, embedder)
    index = retriever.index
    warranty_ids = {cid for cid, c in index.chunks.items() if c.doc_id == "policies/warranty.md"}
    encoded: list[int] = []
    original = embedder.encode

    def counting_encode(texts, **kw):
        encoded.append(len(texts))
        return original(texts, **kw)

    loyalty = Document(
        "policies/loyalty.md",
        "# Loyalty points\n\n## Earning points\n\nEvery dollar spent earns one loyalty point.\n",
    )
    embedder.encode = counting_encode  # type: ignore[method-assign]
    try:
        assert retriever.upsert([loyalty]) == 1
        assert encoded == [1]  # only the new document was embedded
        for mode in ("bm25", "dense", "hybrid"):
            top = retriever.search("how do I earn loyalty points", k=1, mode=mode)[0]
            assert top.source == "policies/loyalty.md", mode

        changed = Document(
            "policies/loyalty.md",
            "# Loyalty points\n\n## Points expire\n\nLoyalty points expire after twelve months.\n",
        )
        retriever.upsert([changed])
        top = retriever.search("when do loyalty points expire", k=1)[0]
        assert top.id == "policies/loyalty.md#points-expire" and "twelve months" in top.text
        all_ids = {c.id for c in index.chunks.values()}
        assert "policies/loyalty.md#earning-points" not in all_ids  # the old version is gone

        assert retriever.delete(["policies/loyalty.md"]) == 1
        for mode in ("bm25", "dense", "hybrid"):
            hits = retriever.search("loyalty points", k=5, mode=mode)
            assert all(p.source != "policies/loyalty.md" for p in hits), mode
        assert retriever.delete(["policies/never-existed.md"]) == 0
    finally:
        del embedder.encode
    # untouched documents kept their chunks (no rebuild renumbered them)
    assert warranty_ids <= set(index.chunks)
    assert sum(encoded) == 2


def test_hnsw_index_deletes_with_tombstones_then_compacts(embedder, monkeypatch, tmp_path):
    import retrieval.index as index_module

    retriever = Retriever.from_documents(PRODUCTS, embedder, index_type="hnsw")
    index = retriever.index
    assert index.stats().index_type == "hnsw"
    monkeypatch.setattr(index_module, "TOMBSTONE_FRACTION", 0.99)  # keep tombstones around
    retriever.delete(["products/wool-socks.md"])
    assert index.stats().tombstones > 0
    for mode in ("dense", "hybrid"):
        assert all(p.product_id != "333" for p in retriever.search("wool socks", k=20, mode=mode))
    assert retriever.search("wool socks", filters={"product_id": "333"}, mode="dense") == []
    narrow = retriever.search("price", k=3, filters={"product_id": "111"}, mode="dense")
    assert narrow and {p.product_id for p in narrow} == {"111"}
    retriever.save(tmp_path / "idx")
    loaded = Retriever.load(tmp_path / "idx", embedder)
    assert loaded.index.stats().tombstones == index.stats().tombstones
    assert all(p.product_id != "333" for p in loaded.search("wool socks", k=20, mode="dense"))

    monkeypatch.setattr(index_module, "TOMBSTONE_FRACTION", 0.0)  # the next delete compacts the graph
    retriever.delete(["products/espresso-machine.md"])
    stats = index.stats()
    assert stats.tombstones == 0 and stats.index_type == "hnsw"
    assert {p.product_id for p in retriever.search("anything", k=50, mode="dense")} == {"111"}


def test_persistence_round_trip(retriever, embedder, tmp_path):
    retriever.save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["embedding_model_id"] == embedder.model_id and manifest["dims"] == 384
    assert manifest["n_chunks"] == len(retriever.index) == len(manifest["chunks"])
    assert {"id", "doc_id", "title", "section", "anchor", "source_type", "product_id"} <= set(
        manifest["chunks"][0]
    )
    loaded = Retriever.load(tmp_path / "idx", embedder)
    for mode in ("bm25", "dense", "hybrid"):
        for question, _ in QUESTIONS:
            a = retriever.search(question, k=5, mode=mode)
            b = loaded.search(question, k=5, mode=mode)
            assert [p.id for p in a] == [p.id for p in b], (mode, question)
            assert [p.score for p in a] == pytest.approx([p.score for p in b], abs=1e-5)
    # the loaded index keeps working incrementally (BM25 re-indexed from the stored chunks)
    loaded.upsert(
        [Document("policies/gift-wrap.md", "# Gift wrap\n\n## Wrapping\n\nWe gift wrap for free.\n")]
    )
    assert loaded.search("gift wrap", k=1, mode="bm25")[0].source == "policies/gift-wrap.md"
    loaded.save(tmp_path / "idx")
    again = Retriever.load(tmp_path / "idx", embedder)
    assert again.search("gift wrap", k=1)[0].source == "policies/gift-wrap.md"


def test_an_index_built_by_another_model_is_refused(retriever, embedder, tmp_path):
    path = retriever.save(tmp_path / "idx")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["embedding_model_id"] = "BAAI/bge-small-en-v1.5"
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexModelMismatch) as err:
        Retriever.load(path, embedder)
    message = str(err.value)
    assert "BAAI/bge-small-en-v1.5" in message and embedder.model_id in message
    assert "shopdesk index --rebuild" in message
    with pytest.raises(IndexModelMismatch):
        KnowledgeIndex.load(path, model_id=embedder.model_id, dims=768)


def test_non_utf8_and_empty_files_in_a_corpus(tmp_path, embedder):
    (tmp_path / "latin1.md").write_bytes(
        "# Café hours\n\nThe café opens at nine. Prix: 5 €\n".encode("cp1252")
    )
    (tmp_path / "empty.md").write_bytes(b"")
    (tmp_path / "blank.txt").write_text("  \n\n ")
    (tmp_path / "ok.md").write_text("# Parking\n\nFree parking behind the shop.\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        docs, report = load_corpus(tmp_path)
    assert report.decoded_with_replacement == ["latin1.md"]
    assert sorted(report.skipped_empty) == ["blank.txt", "empty.md"]
    assert any("latin1.md" in str(w.message) for w in caught)
    assert [d.doc_id for d in docs] == ["latin1.md", "ok.md"]
    assert "\ufffd" in docs[0].text
    retriever = Retriever.from_documents(docs, embedder)
    assert retriever.search("when does it open", k=1)[0].source == "latin1.md"


# ---- evaluation -------------------------------------------------------------------------------------


def test_metrics_on_deduped_documents():
    ranked = dedupe_docs(["a.md", "a.md", "b.md", "c.md", "b.md"])
    assert ranked == ["a.md", "b.md", "c.md"]
    assert recall_at(ranked, {"b.md"}, 1) == 0 and recall_at(ranked, {"b.md"}, 5) == 1
    assert recall_at(ranked, {"b.md", "z.md"}, 5) == 0.5
    assert mrr_at(ranked, {"c.md"}, 10) == pytest.approx(1 / 3)
    assert mrr_at(ranked, {"z.md"}, 10) == 0
    assert ndcg_at(ranked, {"a.md"}, 10) == 1.0
    assert ndcg_at(ranked, {"b.md"}, 10) == pytest.approx(1 / 1.5849625, rel=1e-6)
    assert ndcg_at(ranked, {"a.md", "b.md"}, 10) == 1.0
    scores = score_run([ranked, ["x.md"]], [Query("q1", ["a.md"]), Query("q2", ["y.md"])])
    assert scores == {"recall@1": 0.5, "recall@5": 0.5, "mrr@10": 0.5, "ndcg@10": 0.5}


def test_one_file_corpus(tmp_path, embedder):
    (tmp_path / "only.md").write_text("# Only page\n\n## Hours\n\nOpen daily.\n")
    result = evaluate(tmp_path, [Query("when are you open", ["only.md"])], embedder=embedder)
    assert result.n_queries == 1
    for mode in ("bm25", "dense", "hybrid"):
        assert result.metrics[mode]["recall@5"] == 1.0 or mode == "bm25"  # no shared word for BM25
    assert result.metrics["dense"] == {"recall@1": 1.0, "recall@5": 1.0, "mrr@10": 1.0, "ndcg@10": 1.0}


def _tiny_corpus(root: Path) -> tuple[Path, Path]:
    corpus = root / "corpus"
    (corpus / "faq").mkdir(parents=True)
    (corpus / "faq" / "returns.md").write_text("# Returns\n\n## Window\n\nReturn within 30 days.\n")
    (corpus / "faq" / "shipping.md").write_text("# Shipping\n\n## Carriers\n\nWe ship with UPS and FedEx.\n")
    (corpus / "hours.txt").write_text("Our shop is open from 9 to 5 on weekdays.")
    queries = root / "queries.jsonl"
    queries.write_text(
        "\n".join(
            json.dumps(q)
            for q in [
                {"query": "how many days to send something back", "relevant": ["faq/returns.md"]},
                {"query": "which carriers do you use", "relevant": ["faq/shipping.md"]},
                {"query": "opening times", "relevant": ["hours.txt"]},
            ]
        )
        + "\n"
    )
    return corpus, queries


def test_eval_cli_prints_the_json_shape(tmp_path):
    corpus, queries = _tiny_corpus(tmp_path)
    result = CliRunner().invoke(
        cli.app, ["eval", "retrieval", "--corpus", str(corpus), "--queries", str(queries), "--json"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert list(out) == ["bm25", "dense", "hybrid", "n_queries"]
    assert out["n_queries"] == 3
    for mode in ("bm25", "dense", "hybrid"):
        assert list(out[mode]) == ["recall@1", "recall@5", "mrr@10", "ndcg@10"]
        assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in out[mode].values())
    assert out["hybrid"]["recall@5"] == 1.0


def test_eval_cli_table_and_bad_input(tmp_path):
    corpus, queries = _tiny_corpus(tmp_path)
    runner = CliRunner()
    table = runner.invoke(cli.app, ["eval", "retrieval", "--corpus", str(corpus), "--queries", str(queries)])
    assert table.exit_code == 0, table.output
    assert "hybrid" in table.stdout and "ndcg@10" in table.stdout

    missing = runner.invoke(
        cli.app, ["eval", "retrieval", "--corpus", str(tmp_path / "nope"), "--queries", str(queries)]
    )
    assert missing.exit_code != 0 and "corpus directory not found" in missing.output

    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"query": "a", "relevant": ["hours.txt"]}\n\n{"query": "b", "relevant": ["x.md"]}\n{"query": "c",\n'
    )
    broken = runner.invoke(cli.app, ["eval", "retrieval", "--corpus", str(corpus), "--queries", str(bad)])
    assert broken.exit_code != 0 and "line 4" in broken.output
    with pytest.raises(QueryFileError, match="line 1: 'relevant'"):
        bad.write_text('{"query": "a", "relevant": []}\n')
        load_queries(bad)


# ---- store knowledge ---------------------------------------------------------------------------------


def test_product_page_from_the_catalog():
    page = PRODUCTS[0].text
    assert page.startswith("# Trail Backpack\n")
    assert "## Options" in page and "- color: navy, red" in page and "- size: large, small" in page
    assert "from $79.50 to $89.00" in page
    assert "1 of the 2 versions of the Trail Backpack are in stock; 1 are sold out." in page
    assert "Sold out in every version with: color red; size small." in page
    assert "color red, size small: $79.50, sold out (item id 1002)" in page
    single = PRODUCTS[1].text
    assert "Every version of the Espresso Machine costs $399.00." in single
    chunks = chunk_document(PRODUCTS[0])
    assert {c.anchor for c in chunks} >= {"options", "price", "availability", "versions-and-prices"}
    assert all(c.product_id == "111" and c.source_type == "product" for c in chunks)


def test_product_documents_cover_the_seeded_catalog(seeded_engine):
    docs = product_documents(seeded_engine)
    assert len(docs) == 50
    by_id = {d.doc_id: d for d in docs}
    laptop = by_id["products/laptop.md"]
    assert laptop.product_id == "4760268021" and laptop.source_type == "product"
    assert "- processor: i5, i7, i9" in laptop.text and "## Availability" in laptop.text


def test_build_store_index_is_incremental(store_db, tmp_path, monkeypatch, embedder):
    from sqlmodel import Session, select

    settings = Settings(_env_file=None, var_dir=tmp_path, database_url=str(store_db.url))  # type: ignore[call-arg]
    policies, _ = load_corpus(POLICIES_DIR, source_type="policy", prefix="policies/")
    keep = {"policies/refunds.md", "policies/warranty.md"}
    products = ["4760268021", "9523456873"]  # Laptop, T-Shirt
    monkeypatch.setattr(
        knowledge,
        "store_documents",
        lambda engine, policies_dir=POLICIES_DIR: (
            [d for d in policies if d.doc_id in keep] + product_documents(engine, products)
        ),
    )
    first = knowledge.build_store_index(store_db, settings, embedder=embedder)
    assert first.rebuilt and len(first.added) == 4 and first.chunks_embedded == first.chunks_total
    same = knowledge.build_store_index(store_db, settings, embedder=embedder)
    assert (same.added, same.updated, same.deleted, same.chunks_embedded) == ([], [], [], 0)

    with Session(store_db) as db:  # a price change re-indexes that product's page only
        variant = db.exec(select(Variant).where(Variant.product_id == "9523456873")).first()
        variant.price = 1.23
        db.add(variant)
        db.commit()
    keep.discard("policies/warranty.md")
    update = knowledge.build_store_index(store_db, settings, embedder=embedder)
    assert update.updated == ["products/t-shirt.md"] and update.deleted == ["policies/warranty.md"]
    assert 0 < update.chunks_embedded < first.chunks_embedded
    retriever = knowledge.load_store_retriever(settings, store_db, embedder=embedder)
    hits = retriever.search("t-shirt price", k=10, filters={"product_id": "9523456873"})
    assert any("$1.23" in p.text for p in hits)
    assert all(p.source != "policies/warranty.md" for p in retriever.search("warranty", k=10))

    manifest = settings.var_dir / "index" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["embedding_model_id"] = "someone/else"
    manifest.write_text(json.dumps(data))
    monkeypatch.setattr(cli, "get_settings", lambda: settings)
    result = CliRunner().invoke(cli.app, ["index"])
    assert result.exit_code == 1 and "--rebuild" in result.output and "someone/else" in result.output
    rebuilt = knowledge.build_store_index(store_db, settings, rebuild=True, embedder=embedder)
    assert rebuilt.rebuilt and Retriever.load(settings.var_dir / "index", embedder)


# ---- LangChain and REST ----------------------------------------------------------------------------------


def test_langchain_retriever_returns_documents(retriever):
    from langchain_core.documents import Document as LCDocument
    from langchain_core.retrievers import BaseRetriever

    lc = ShopdeskLangChainRetriever(retriever=retriever, k=2, filters={"source_type": "policy"})
    assert isinstance(lc, BaseRetriever)
    docs = lc.invoke("how long does a refund to my credit card take")
    assert len(docs) == 2 and all(isinstance(d, LCDocument) for d in docs)
    top = docs[0]
    assert top.metadata["source"] == "policies/refunds.md" and top.metadata["anchor"]
    assert {"id", "title", "score", "source_type", "product_id", "section"} <= set(top.metadata)
    assert "text" not in top.metadata and "business days" in top.page_content
    assert lc.batch(["", "warranty"])[0] == []


@pytest.fixture
def api(store_db, tmp_path, retriever):
    retriever.save(tmp_path / "index")  # a prebuilt index: the app loads it instead of embedding the store
    from server import create_app

    settings = Settings(llm_backend="scripted", database_url=str(store_db.url), var_dir=tmp_path)
    with TestClient(create_app(settings)) as client:
        yield client


def test_api_search(api):
    r = api.get("/api/search", params={"q": "how long do I have to return a delivered item?", "k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["k"] == 3 and len(body["passages"]) == 3
    top = body["passages"][0]
    assert top["source"] == "policies/returns-and-exchanges.md"
    assert set(top) == {
        "id",
        "source",
        "title",
        "section",
        "anchor",
        "text",
        "score",
        "source_type",
        "product_id",
    }
    products = api.get("/api/search", params={"q": "espresso", "type": "product"}).json()["passages"]
    assert products and all(p["source_type"] == "product" for p in products)
    assert products[0]["product_id"] == "222"
    policies = api.get("/api/search", params={"q": "espresso", "type": "policy", "k": 50}).json()
    assert policies["passages"] and all(p["source_type"] == "policy" for p in policies["passages"])
    huge = api.get("/api/search", params={"q": "refund " * 1500})
    assert huge.status_code == 200 and huge.json()["passages"]


@pytest.mark.parametrize(
    "params, field",
    [
        ({"q": ""}, "q"),
        ({"q": "   "}, "q"),
        ({}, "q"),
        ({"q": "refund", "k": 0}, "k"),
        ({"q": "refund", "k": 51}, "k"),
        ({"q": "refund", "k": "many"}, "k"),
        ({"q": "refund", "type": "blog"}, "type"),
    ],
)
def test_api_search_bad_input(api, params, field):
    r = api.get("/api/search", params=params)
    assert r.status_code == 422, r.text
    errors = r.json()["errors"]
    assert any(e["field"] == field for e in errors), errors
    if field == "q":
        assert errors[0]["message"] == "q must not be empty"


def test_api_builds_the_index_when_missing(store_db, tmp_path, monkeypatch):
    from server import create_app

    small = [
        Document("policies/hours.md", "# Hours\n\n## Opening hours\n\nWe are open 24/7 online.\n"),
        PRODUCTS[2],
    ]
    monkeypatch.setattr(knowledge, "store_documents", lambda engine, policies_dir=POLICIES_DIR: small)
    settings = Settings(llm_backend="scripted", database_url=str(store_db.url), var_dir=tmp_path)
    with TestClient(create_app(settings)) as client:
        r = client.get("/api/search", params={"q": "socks", "k": 1})
        assert r.status_code == 200 and r.json()["passages"][0]["product_id"] == "333"
        assert (tmp_path / "index" / "manifest.json").exists()
        first = client.app.state.retriever
        client.get("/api/search", params={"q": "hours"})
        assert client.app.state.retriever is first  # loaded once per app


def test_api_reports_an_index_from_another_model(store_db, tmp_path, retriever):
    from server import create_app

    path = retriever.save(tmp_path / "index")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["embedding_model_id"] = "intfloat/e5-small-v2"
    (path / "manifest.json").write_text(json.dumps(manifest))
    settings = Settings(llm_backend="scripted", database_url=str(store_db.url), var_dir=tmp_path)
    with TestClient(create_app(settings)) as client:
        r = client.get("/api/search", params={"q": "refund"})
    assert r.status_code == 503
    assert "intfloat/e5-small-v2" in r.json()["detail"] and "shopdesk index --rebuild" in r.json()["detail"]


# ---- slow: the whole store ------------------------------------------------------------------------------


@pytest.mark.slow
def test_store_index_answers_the_return_window_question(store_db, tmp_path, embedder):
    settings = Settings(_env_file=None, var_dir=tmp_path, database_url=str(store_db.url))  # type: ignore[call-arg]
    report = knowledge.build_store_index(store_db, settings, embedder=embedder)
    assert report.documents_total == 60
    retriever = knowledge.load_store_retriever(settings, store_db, embedder=embedder)
    top = retriever.search("how long do I have to return a delivered item?", k=3)
    assert top[0].source == "policies/returns-and-exchanges.md"
    assert "30 days" in " ".join(p.text for p in top)


@pytest.mark.slow
def test_dev_set_scores(seeded_engine, tmp_path, embedder):
    knowledge.export_store_corpus(seeded_engine, tmp_path / "corpus")
    queries = load_queries(DEV_SET)
    assert len(queries) >= 150
    result = evaluate(tmp_path / "corpus", queries, embedder=embedder)
    assert result.unknown_relevant == []
    for mode in ("bm25", "dense", "hybrid"):
        assert result.metrics[mode]["ndcg@10"] >= 0.85, result.metrics
    assert result.metrics["hybrid"]["recall@5"] >= result.metrics["bm25"]["recall@5"]
