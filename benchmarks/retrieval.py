"""Retrieval cost: index build rate, query latency at 1k / 10k / 100k chunks, memory per chunk.

Same run, same queries, for each size:
  - hybrid      Retriever.search(mode="hybrid"): query embedding + FAISS + BM25 + RRF   (what /api/search does)
  - dense       Retriever.search(mode="dense"):  query embedding + FAISS
  - bm25        Retriever.search(mode="bm25")
  - faiss-flat  IndexFlatIP search alone, query vector given  (the baseline: exact search, nothing else)
  - faiss-hnsw  HNSW search alone, query vector given (+ its recall@10 against flat): where HNSW pays
  - embed       the query embedding alone
The query-embedding cache is off (every query is embedded), so "hybrid" excludes nothing.

Corpus: the store's policy pages plus synthetic product pages (made by the real `product_page`)
up to the size. Embedding 100k chunks on 2 shared cores takes ~30 min, so by default only
--unique chunks are embedded for real (that is the measured build rate); the vectors of bigger sizes
are those plus blends of two of them with a little noise (see `tile`), re-normalised. BM25 always
indexes every chunk's real text. The output says which sizes used tiled vectors; --embed-all embeds
everything instead.

    .venv/bin/python benchmarks/retrieval.py [--sizes 1000,10000,100000] [--unique 2000] [--queries 200]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import faiss  # noqa: E402

from commerce.models import Product, Variant  # noqa: E402
from retrieval.embed import Embedder  # noqa: E402
from retrieval.index import HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH, HNSW_M, HNSW_THRESHOLD, KnowledgeIndex  # noqa: E402
from retrieval.ingest import (  # noqa: E402
    Chunk,
    Document,
    chunk_documents,
    load_corpus,  # noqa: E402
)
from retrieval.knowledge import POLICIES_DIR, product_page  # noqa: E402
from retrieval.search import Retriever  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEV_SET = ROOT / "tests" / "data" / "retrieval_dev.jsonl"

ADJECTIVES = [
    "Compact",
    "Deluxe",
    "Classic",
    "Urban",
    "Alpine",
    "Coastal",
    "Smart",
    "Ultra",
    "Pro",
    "Eco",
    "Heritage",
    "Nordic",
    "Summit",
    "Rapid",
    "Silent",
    "Vintage",
    "Modular",
    "Foldable",
    "Cordless",
    "Insulated",
    "Rugged",
    "Featherweight",
    "Premium",
    "Studio",
    "Travel",
    "Outdoor",
    "Kids",
    "Family",
    "Wireless",
    "Digital",
    "Ceramic",
    "Bamboo",
    "Titanium",
    "Carbon",
    "Velvet",
    "Linen",
    "Wool",
    "Copper",
    "Granite",
    "Solar",
]
NOUNS = [
    "Backpack",
    "Blender",
    "Toaster",
    "Lantern",
    "Tent",
    "Kettle",
    "Jacket",
    "Sneaker",
    "Helmet",
    "Desk",
    "Chair",
    "Lamp",
    "Speaker",
    "Headset",
    "Router",
    "Monitor",
    "Keyboard",
    "Mouse",
    "Camera",
    "Tripod",
    "Drone",
    "Watch",
    "Bracelet",
    "Wallet",
    "Umbrella",
    "Pillow",
    "Blanket",
    "Rug",
    "Mattress",
    "Stroller",
    "Scooter",
    "Skateboard",
    "Bicycle",
    "Kayak",
    "Paddle",
    "Grill",
    "Smoker",
    "Cooler",
    "Thermos",
    "Mug",
    "Teapot",
    "Skillet",
    "Wok",
    "Knife",
    "Cutting-Board",
    "Mixer",
    "Juicer",
    "Vacuum",
    "Humidifier",
    "Heater",
    "Fan",
    "Purifier",
    "Projector",
    "Tablet",
    "Charger",
    "Cable",
    "Printer",
    "Shelf",
    "Planter",
    "Hose",
]
OPTION_POOL = {
    "color": ["black", "white", "red", "navy", "green", "grey", "sand", "teal", "orange", "purple"],
    "size": ["XS", "S", "M", "L", "XL", "small", "medium", "large"],
    "material": ["steel", "aluminium", "cotton", "polyester", "leather", "bamboo", "glass", "nylon"],
    "capacity": ["0.5L", "1L", "1.5L", "2L", "5L", "10L", "20L"],
    "power": ["battery", "USB-C", "AC adapter", "solar"],
    "connectivity": ["Bluetooth", "Wi-Fi", "wired", "Zigbee"],
    "finish": ["matte", "gloss", "satin", "brushed"],
    "pack": ["single", "2-pack", "4-pack"],
}
PRODUCT_QUERIES = [
    "do you have a {adj} {noun} in {color}?",
    "price of the {noun} with {material}",
    "is the {color} {noun} in stock",
    "{noun} {capacity} options",
    "cheapest {adj} {noun}",
    "which sizes does the {noun} come in",
]


def synthetic_products(n_products: int, seed: int = 7) -> list[Document]:
    rng = random.Random(seed)
    docs = []
    for i in range(n_products):
        name = f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {100 + i}"
        pid = f"9{i:09d}"
        keys = rng.sample(sorted(OPTION_POOL), rng.randint(2, 4))
        n_var = rng.randint(3, 20)
        base = rng.uniform(8, 900)
        variants = []
        for j in range(n_var):
            options = {k: rng.choice(OPTION_POOL[k]) for k in keys}
            variants.append(
                Variant(
                    id=f"{pid}{j:02d}",
                    product_id=pid,
                    options=options,
                    price=round(base * rng.uniform(0.85, 1.2), 2),
                    available=rng.random() < 0.7,
                    stock_on_hand=rng.randint(0, 40),
                )
            )
        product = Product(id=pid, name=name, description=f"{name}: {rng.choice(ADJECTIVES).lower()} design.")
        docs.append(
            Document(
                doc_id=f"products/synthetic-{pid}.md",
                text=product_page(product, variants),
                source_type="product",
                product_id=pid,
                title=name,
            )
        )
    return docs


def make_chunks(n: int) -> list[Chunk]:
    """Policy chunks + synthetic product-page chunks, cut to exactly n."""
    policies, _ = load_corpus(POLICIES_DIR, source_type="policy", prefix="policies/")
    chunks = chunk_documents(policies)
    per_product = 6  # about how many chunks a synthetic page gives
    products = synthetic_products(max(1, (n - len(chunks)) // per_product + 50))
    chunks += chunk_documents(products)
    while len(chunks) < n:  # rare: top up with more pages
        chunks += chunk_documents(synthetic_products(200, seed=len(chunks)))
    return chunks[:n]


def queries(count: int, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    dev = [json.loads(line)["query"] for line in DEV_SET.read_text().splitlines() if line.strip()]
    made = [
        rng.choice(PRODUCT_QUERIES).format(
            adj=rng.choice(ADJECTIVES).lower(),
            noun=rng.choice(NOUNS).lower(),
            color=rng.choice(OPTION_POOL["color"]),
            material=rng.choice(OPTION_POOL["material"]),
            capacity=rng.choice(OPTION_POOL["capacity"]),
        )
        for _ in range(count)
    ]
    mixed = dev + made
    rng.shuffle(mixed)
    return mixed[:count]


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], p: float) -> float:
    vs = sorted(values)
    return vs[min(len(vs) - 1, max(0, round(p / 100 * (len(vs) - 1))))]


def tile(unique: np.ndarray, n: int, seed: int = 3) -> np.ndarray:
    """n unit vectors: the real ones, then blends of two random real ones plus a little noise.

    Plain noisy copies would make clusters of near-duplicates (each real vector x100 at 100k), a
    pathological case for HNSW that real pages do not have; blends spread over the same region of
    the sphere as the real embeddings, with no two alike."""
    rng = np.random.default_rng(seed)
    extra = n - len(unique)
    if extra <= 0:
        return unique[:n].copy()
    i = rng.integers(0, len(unique), extra)
    j = rng.integers(0, len(unique), extra)
    w = rng.uniform(0.5, 1.0, size=(extra, 1)).astype(np.float32)
    blend = w * unique[i] + (1 - w) * unique[j]
    blend += rng.normal(0, 0.01, size=blend.shape).astype(np.float32)
    blend /= np.linalg.norm(blend, axis=1, keepdims=True)
    return np.vstack([unique, blend]).astype(np.float32)


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure_size(n: int, vectors_file: Path, n_queries: int, embed_all: bool) -> dict:
    """One corpus size, in its own process (so its memory growth is its own)."""
    faiss.omp_set_num_threads(1)  # single-query searches, as KnowledgeIndex.search_dense runs them
    embedder = Embedder(cache_size=0)  # no query cache: every query is embedded
    qs = queries(n_queries)
    qvecs = embedder.encode(qs)  # for the FAISS-alone rows
    unique_vecs = np.load(vectors_file)
    chunks = make_chunks(n)
    tiled = not embed_all and n > len(unique_vecs)
    if embed_all and n > len(unique_vecs):
        vecs = embedder.encode([c.index_text() for c in chunks])
    else:
        vecs = tile(unique_vecs, n) if tiled else unique_vecs[:n]
    gc.collect()
    rss0 = rss_mb()
    t = time.perf_counter()
    index = KnowledgeIndex(embedder.model_id, embedder.dim)  # "auto": flat, or HNSW from HNSW_THRESHOLD
    index.add_chunks(chunks, vecs)
    index._ensure_bm25()
    build_s = time.perf_counter() - t
    dense_kind = index.stats().index_type
    del chunks
    gc.collect()
    rss1 = rss_mb()
    retriever = Retriever(index, embedder)
    tmp = Path(tempfile.mkdtemp())
    retriever.save(tmp / "idx")
    disk = dir_bytes(tmp / "idx")
    shutil.rmtree(tmp)

    faiss.omp_set_num_threads(os.cpu_count() or 1)  # building the graph is a batch job
    t = time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(embedder.dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    hnsw.add(vecs)
    hnsw.hnsw.efSearch = HNSW_EF_SEARCH
    hnsw_build_s = time.perf_counter() - t
    faiss.omp_set_num_threads(1)
    flat = faiss.IndexFlatIP(embedder.dim)
    flat.add(vecs)

    kinds = ("hybrid", "dense", "bm25", "faiss-flat", "faiss-hnsw", "embed")
    timings: dict[str, list[float]] = {k: [] for k in kinds}
    recall_hits = 0
    score_loss: list[float] = []
    for rep in range(2):
        for i, q in enumerate(qs):
            qq = q if rep == 0 else q + " ?"  # a new string: no cache anywhere
            order = list(kinds)
            random.Random(i + rep).shuffle(order)  # no mode always runs right after another
            for what in order:
                s = time.perf_counter()
                if what in ("hybrid", "dense", "bm25"):
                    retriever.search(qq, k=5, mode=what)
                elif what == "faiss-flat":
                    flat.search(qvecs[i : i + 1], 10)
                elif what == "faiss-hnsw":
                    hnsw.search(qvecs[i : i + 1], 10)
                else:
                    embedder.encode_query(qq)
                timings[what].append((time.perf_counter() - s) * 1000)
            if rep == 0:
                f_scores, f_ids = flat.search(qvecs[i : i + 1], 10)
                h_scores, h_ids = hnsw.search(qvecs[i : i + 1], 10)
                recall_hits += len(set(f_ids[0]) & set(h_ids[0]))
                score_loss.append(1.0 - float(h_scores[0].sum()) / float(f_scores[0].sum()))
    bm25_bytes = sum(getattr(a, "nbytes", 0) for a in index._bm25.scores.values())
    return {
        "chunks": n,
        "tiled_vectors": tiled,
        "build_s_without_embedding": round(build_s, 2),
        "hnsw_build_s": round(hnsw_build_s, 2),
        "dense_index": dense_kind,
        "hnsw_recall@10_vs_flat": round(recall_hits / (10 * len(qs)), 4),
        "hnsw_top10_score_loss": round(statistics.mean(score_loss), 5),
        "latency_ms": {
            k: {"p50": round(statistics.median(v), 3), "p99": round(pct(v, 99), 3)}
            for k, v in timings.items()
        },
        "memory_per_chunk_bytes": {
            "process_rss_growth": round((rss1 - rss0) * 1024 * 1024 / n),
            "on_disk": round(disk / n),
            "vector": embedder.dim * 4 + 8,
            "bm25_matrix": round(bm25_bytes / n),
        },
        "load_avg": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--unique", type=int, default=1000, help="chunks embedded for real (the build rate)")
    ap.add_argument("--embed-all", action="store_true", help="embed every chunk of every size (slow)")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--json", action="store_true", help="also print the results as one JSON object")
    ap.add_argument("--one-size", type=int, help=argparse.SUPPRESS)  # internal: a child process
    ap.add_argument("--vectors", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one_size:
        print(json.dumps(measure_size(args.one_size, args.vectors, args.queries, args.embed_all)))
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} (shared with other jobs)")
    embedder = Embedder(cache_size=0)

    # ---- build rate: chunk + embed + FAISS + BM25, for real, on --unique chunks ----------------------
    t0 = time.perf_counter()
    unique_chunks = make_chunks(args.unique)
    chunk_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    unique_vecs = embedder.encode([c.index_text() for c in unique_chunks])
    embed_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    probe = KnowledgeIndex(embedder.model_id, embedder.dim)
    probe.add_chunks(unique_chunks, unique_vecs)
    probe._ensure_bm25()
    index_s = time.perf_counter() - t1
    total_s = chunk_s + embed_s + index_s
    tokens = statistics.mean(
        len(ids)
        for ids in embedder.tokenizer([c.index_text() for c in unique_chunks], truncation=True)["input_ids"]
    )
    build = {
        "chunks": len(unique_chunks),
        "mean_tokens_per_chunk": round(tokens, 1),
        "embed_chunks_per_s": round(len(unique_chunks) / embed_s, 1),
        "faiss_bm25_chunks_per_s": round(len(unique_chunks) / index_s, 1),
        "end_to_end_chunks_per_s": round(len(unique_chunks) / total_s, 1),
    }
    print(
        f"\nindex build, {len(unique_chunks):,} real chunks ({tokens:.0f} tokens on average): "
        f"{build['end_to_end_chunks_per_s']:.0f} chunks/s end to end "
        f"(chunking {chunk_s:.1f} s, embedding {embed_s:.1f} s = {build['embed_chunks_per_s']:.0f} chunks/s, "
        f"FAISS + BM25 {index_s:.2f} s = {build['faiss_bm25_chunks_per_s']:,.0f} chunks/s)"
    )
    del probe, embedder
    vectors_file = Path(tempfile.mkdtemp()) / "unique.npy"
    np.save(vectors_file, unique_vecs)

    results: dict = {"build": build, "sizes": {}}
    header = f"{'chunks':>8}  {'what':<11} {'p50 ms':>8} {'p99 ms':>8}"
    rows: list[str] = []
    for n in sizes:
        cmd = [sys.executable, __file__, "--one-size", str(n), "--vectors", str(vectors_file)]
        cmd += ["--queries", str(args.queries)] + (["--embed-all"] if args.embed_all else [])
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        results["sizes"][n] = r
        mem = r["memory_per_chunk_bytes"]
        note = " (vectors: real ones + blends of two real ones)" if r["tiled_vectors"] else " (real vectors)"
        block = [
            f"-- {n:,} chunks{note}; hybrid/dense use a {r['dense_index']} index; load average {r['load_avg']:.1f}"
        ]
        block += [
            f"{n:>8}  {what:<11} {st['p50']:>8.2f} {st['p99']:>8.2f}" for what, st in r["latency_ms"].items()
        ]
        block.append(
            f"{'':>8}  memory/chunk: {mem['process_rss_growth']:,} B process RSS growth, {mem['on_disk']:,} B on disk "
            f"(vector {mem['vector']} B, BM25 matrix {mem['bm25_matrix']} B); FAISS+BM25 build "
            f"{r['build_s_without_embedding']:.1f} s; HNSW build {r['hnsw_build_s']:.1f} s, "
            f"recall@10 vs flat {r['hnsw_recall@10_vs_flat']:.3f} (top-10 score sum {100 * r['hnsw_top10_score_loss']:.2f} % lower)"
        )
        rows += block
        print(f"\n{header}\n" + "\n".join(block), flush=True)
    vectors_file.unlink()

    print("\n== summary ==")
    print(header)
    print("\n".join(rows))
    hybrid_10k = results["sizes"].get(10000, {}).get("latency_ms", {}).get("hybrid")
    if hybrid_10k:
        verdict = "meets" if hybrid_10k["p50"] <= 10 else "MISSES"
        print(f"\nhybrid p50 at 10k chunks: {hybrid_10k['p50']:.2f} ms ({verdict} the 10 ms target)")
    print(f"HNSW_THRESHOLD in retrieval/index.py: {HNSW_THRESHOLD:,} chunks")
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
