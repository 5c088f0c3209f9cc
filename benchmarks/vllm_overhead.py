"""Throughput and time to first token through shopdesk's WebSocket vs straight to vLLM, same run.

Each chat sends the same order question; the agent's calls to vLLM (decision + the model-phrased answer,
same max tokens) are recorded on a warm-up turn, and the direct baseline replays exactly those calls
with the same concurrency. Also prints vLLM's prefix-cache hit rate over the run, from its /metrics.
Targets (issue 3): throughput through shopdesk >= 95 % of direct; first-token overhead <= 30 ms.

    .venv/bin/python benchmarks/vllm_overhead.py [--url http://127.0.0.1:8001/v1] [--chats 1,8] [--rounds 3]

Without a server at --url it starts one (`shopdesk llm serve` does the same) and stops it at the end.
"""

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.harness import CUSTOMER, Recording, Run, bench_store, direct_replay, start_server, ws_turn  # noqa: E402
from bot.llm import create_backend  # noqa: E402
from shopdesk.settings import Settings  # noqa: E402

PROMPT = "Where is my order #W2611340?"
MAX_TOKENS = 64


async def prefix_cache_counters(base_url: str) -> tuple[float, float]:
    """(hits, queries) summed over vLLM's prefix-cache counters, whatever their exact names."""
    root = base_url.rstrip("/").removesuffix("/v1")
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{root}/metrics")).text
    hits = queries = 0.0
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.match(r"^([a-zA-Z_:]+)(?:\{[^}]*\})?\s+([0-9.eE+-]+)$", line)
        if not match:
            continue
        name, value = match.group(1), float(match.group(2))
        if "prefix_cache_hits" in name and name.endswith("_total"):
            hits += value
        elif "prefix_cache_queries" in name and name.endswith("_total"):
            queries += value
    return hits, queries


async def one_level(
    base: str, inner, recording: Recording, calls, chats: int, rounds: int
) -> dict[str, float]:  # type: ignore[no-untyped-def]
    ws_tps, direct_tps, ws_first, direct_first = [], [], [], []
    async with httpx.AsyncClient(base_url=base) as client:
        for _ in range(rounds):
            tokens = [
                (await client.post("/api/session", json={"customer_id": CUSTOMER})).json()["token"]
                for _ in range(chats)
            ]
            before = recording.completion_tokens
            start = time.perf_counter()
            runs: list[Run] = await asyncio.gather(*(ws_turn(base, t, PROMPT) for t in tokens))
            wall = time.perf_counter() - start
            ws_tps.append((recording.completion_tokens - before) / wall)
            ws_first.extend(r.first for r in runs)

            start = time.perf_counter()
            direct: list[Run] = await asyncio.gather(*(direct_replay(inner, calls) for _ in range(chats)))
            wall = time.perf_counter() - start
            direct_tps.append(sum(r.tokens for r in direct) / wall)
            direct_first.extend(r.first for r in direct)
    ws_t, direct_t = statistics.median(ws_tps), statistics.median(direct_tps)
    ws_f, direct_f = statistics.median(ws_first), statistics.median(direct_first)
    return {
        "ws_tps": ws_t,
        "direct_tps": direct_t,
        "throughput_ratio": ws_t / direct_t,
        "ws_ttft_ms": ws_f * 1000,
        "direct_ttft_ms": direct_f * 1000,
        "ttft_overhead_ms": (ws_f - direct_f) * 1000,
    }


async def run(url: str, levels: list[int], rounds: int, settings: Settings) -> None:
    inner = create_backend(settings, "openai_compat")
    recording = Recording(inner)
    server, base = start_server(settings, recording)
    try:
        async with httpx.AsyncClient(base_url=base) as client:
            token = (await client.post("/api/session", json={"customer_id": CUSTOMER})).json()["token"]
        recording.calls.clear()
        await ws_turn(base, token, PROMPT)  # warm-up, and the calls the direct baseline replays
        calls = list(recording.calls)
        await direct_replay(inner, calls)
        hits0, queries0 = await prefix_cache_counters(url)
        print(
            f"{'chats':>5} {'ws tok/s':>9} {'direct':>9} {'ratio':>6} {'ws ttft':>9} {'direct':>9} {'+ttft':>8}"
        )
        for chats in levels:
            r = await one_level(base, inner, recording, calls, chats, rounds)
            print(
                f"{chats:5d} {r['ws_tps']:9.1f} {r['direct_tps']:9.1f} {r['throughput_ratio']:6.3f} "
                f"{r['ws_ttft_ms']:7.1f}ms {r['direct_ttft_ms']:7.1f}ms {r['ttft_overhead_ms']:6.1f}ms"
            )
        hits1, queries1 = await prefix_cache_counters(url)
        queried = queries1 - queries0
        rate = (hits1 - hits0) / queried if queried else float("nan")
        print(f"prefix-cache hit rate over the run: {rate:.1%} ({hits1 - hits0:.0f} of {queried:.0f} tokens)")
    finally:
        server.should_exit = True
        await inner.aclose()


async def reachable(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=3) as client:
            return (await client.get(f"{url.rstrip('/')}/models")).status_code == 200
    except httpx.HTTPError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8001/v1")
    parser.add_argument("--chats", default="1,8")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    process = None
    if not asyncio.run(reachable(args.url)):
        from bot.llm.vllm_server import ensure_vllm_env, start_vllm, wait_ready

        port = int(args.url.rsplit(":", 1)[1].split("/")[0])
        ensure_vllm_env(Settings())
        process = start_vllm(Settings(), port)
        wait_ready(args.url, timeout=600)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            settings = bench_store(
                Path(tmp),
                llm_backend="openai_compat",
                llm_base_urls=[args.url],
                llm_answer_style="model",
                llm_max_tokens=MAX_TOKENS,
            )
            asyncio.run(run(args.url, [int(c) for c in args.chats.split(",")], args.rounds, settings))
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=60)


if __name__ == "__main__":
    main()
