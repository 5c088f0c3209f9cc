"""Throughput and time to first token through shopdesk's WebSocket vs straight to vLLM, same run.

Each chat sends the same order question to a shopdesk server running in its own process, as in
production; the agent's calls to vLLM (decision + the model-phrased answer, same max tokens) are
recorded on a warm-up turn, and the direct baseline replays exactly those calls with the same
concurrency. Tokens/s for both come from vLLM's own generated-token counter. Also prints vLLM's
prefix-cache hit rate over the run, from its /metrics.
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
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sqlmodel import Session  # noqa: E402

from benchmarks.harness import (  # noqa: E402
    CUSTOMER,
    Recording,
    Run,
    bench_store,
    direct_replay,
    start_server_process,
    ws_turn,
)
from bot.agent import Agent  # noqa: E402
from bot.llm import create_backend  # noqa: E402
from commerce.models import Conversation  # noqa: E402
from shopdesk.db import make_engine  # noqa: E402
from shopdesk.settings import Settings  # noqa: E402

PROMPT = "Where is my order #W2611340?"
MAX_TOKENS = 64


async def vllm_counters(base_url: str) -> dict[str, float]:
    """vLLM's counters we need, summed over labels: generated tokens and prefix-cache hits/queries."""
    root = base_url.rstrip("/").removesuffix("/v1")
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{root}/metrics")).text
    totals = {"generation_tokens": 0.0, "prefix_cache_hits": 0.0, "prefix_cache_queries": 0.0}
    for line in text.splitlines():
        match = re.match(r"^vllm:([a-z_]+)_total(?:\{[^}]*\})?\s+([0-9.eE+-]+)$", line)
        if match and match.group(1) in totals:
            totals[match.group(1)] += float(match.group(2))
    return totals


async def one_level(url: str, base: str, inner, calls, chats: int, rounds: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Tokens/s from vLLM's own counter (the same meter for both paths) and first visible token."""
    ws_tps, direct_tps, ws_first, direct_first = [], [], [], []
    async with httpx.AsyncClient(base_url=base) as client:
        for _ in range(rounds):
            tokens = [
                (await client.post("/api/session", json={"customer_id": CUSTOMER})).json()["token"]
                for _ in range(chats)
            ]
            before = (await vllm_counters(url))["generation_tokens"]
            start = time.perf_counter()
            runs: list[Run] = await asyncio.gather(*(ws_turn(base, t, PROMPT) for t in tokens))
            wall = time.perf_counter() - start
            ws_tps.append(((await vllm_counters(url))["generation_tokens"] - before) / wall)
            ws_first.extend(r.first for r in runs)

            before = (await vllm_counters(url))["generation_tokens"]
            start = time.perf_counter()
            direct: list[Run] = await asyncio.gather(*(direct_replay(inner, calls) for _ in range(chats)))
            wall = time.perf_counter() - start
            direct_tps.append(((await vllm_counters(url))["generation_tokens"] - before) / wall)
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


async def record_calls(settings: Settings, inner) -> list:  # type: ignore[no-untyped-def]
    """The exact calls one turn makes (a warm-up turn, in process): what the direct path replays."""
    recording = Recording(inner)
    agent = Agent(recording, make_engine(settings.db_url), settings)  # type: ignore[arg-type]
    conversation_id = str(uuid.uuid4())
    with Session(agent.engine) as db:
        db.add(Conversation(id=conversation_id, customer_id=CUSTOMER, identity="customer"))
        db.commit()
    async for _ in agent.run_turn(conversation_id, PROMPT):
        pass
    return list(recording.calls)


async def run(url: str, levels: list[int], rounds: int, settings: Settings) -> None:
    inner = create_backend(settings, "openai_compat")
    calls = await record_calls(settings, inner)
    process, base = start_server_process(settings)
    try:
        async with httpx.AsyncClient(base_url=base) as client:  # warm both paths once
            token = (await client.post("/api/session", json={"customer_id": CUSTOMER})).json()["token"]
        await ws_turn(base, token, PROMPT)
        await direct_replay(inner, calls)
        counters0 = await vllm_counters(url)
        print(
            f"{'chats':>5} {'ws tok/s':>9} {'direct':>9} {'ratio':>6} {'ws ttft':>9} {'direct':>9} {'+ttft':>8}"
        )
        for chats in levels:
            r = await one_level(url, base, inner, calls, chats, rounds)
            print(
                f"{chats:5d} {r['ws_tps']:9.1f} {r['direct_tps']:9.1f} {r['throughput_ratio']:6.3f} "
                f"{r['ws_ttft_ms']:7.1f}ms {r['direct_ttft_ms']:7.1f}ms {r['ttft_overhead_ms']:6.1f}ms"
            )
        counters1 = await vllm_counters(url)
        hits = counters1["prefix_cache_hits"] - counters0["prefix_cache_hits"]
        queried = counters1["prefix_cache_queries"] - counters0["prefix_cache_queries"]
        rate = hits / queried if queried else float("nan")
        print(f"prefix-cache hit rate over the run: {rate:.1%} ({hits:.0f} of {queried:.0f} prompt tokens)")
    finally:
        process.terminate()
        process.wait(timeout=30)
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
