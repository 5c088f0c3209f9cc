"""Claim: the embedded `local` backend batches concurrent chats, so N chats at once generate clearly
more tokens per second in total than the same chats one after another.

Both sides run in the same process on the same loaded model, with the same prompts and the same
max_tokens (greedy), alternating for a few rounds; we print every round and the best of each side
(the machine may be shared, so the best round is the least disturbed one).

    .venv/bin/python benchmarks/local_batching.py [--chats 4] [--max-tokens 64] [--rounds 2]
"""

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.llm.base import collect_text  # noqa: E402
from bot.llm.local import LocalBackend  # noqa: E402
from shopdesk.settings import Settings  # noqa: E402

PROMPTS = [
    "Where is my order #W2378156? It was supposed to arrive yesterday.",
    "Do you sell waterproof running shoes in size 42?",
    "How do I return a desk lamp that arrived broken?",
    "Can I change the shipping address of an order I placed this morning?",
    "What is your refund policy for opened headphones?",
    "Is the blue backpack back in stock soon?",
    "My promo code SAVE10 does not work at checkout, why?",
    "Which of your coffee makers is the quietest?",
]


async def run_chats(backend: LocalBackend, prompts: list[str], max_tokens: int, concurrent: bool):
    async def one(prompt: str):
        return await collect_text(
            backend.stream([{"role": "user", "content": prompt}], max_tokens=max_tokens)
        )

    started = time.perf_counter()
    if concurrent:
        results = await asyncio.gather(*(one(p) for p in prompts))
    else:
        results = [await one(p) for p in prompts]
    elapsed = time.perf_counter() - started
    tokens = sum(usage.completion_tokens for _, _, usage in results)
    return tokens, elapsed, [text for text, _, _ in results]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chats", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    settings = Settings(llm_temperature=0.0, local_max_batch=max(args.chats, 1))
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.chats)]
    backend = LocalBackend(settings)
    started = time.perf_counter()
    backend.load()
    print(f"model load: {time.perf_counter() - started:.2f} s (worker reported {backend.load_seconds:.2f} s)")
    await collect_text(backend.stream([{"role": "user", "content": "Hi"}], max_tokens=4))  # warm-up

    best = {False: 0.0, True: 0.0}
    same = True
    for round_no in range(1, args.rounds + 1):
        seq_tokens, seq_s, seq_texts = await run_chats(backend, prompts, args.max_tokens, concurrent=False)
        backend.peak_batch = 0
        con_tokens, con_s, con_texts = await run_chats(backend, prompts, args.max_tokens, concurrent=True)
        same = same and seq_texts == con_texts
        for concurrent, tokens, secs in ((False, seq_tokens, seq_s), (True, con_tokens, con_s)):
            best[concurrent] = max(best[concurrent], tokens / secs)
        print(
            f"round {round_no}: 1 chat at a time {seq_tokens} tokens in {seq_s:.2f} s"
            f" = {seq_tokens / seq_s:.1f} tok/s | {args.chats} concurrent {con_tokens} tokens"
            f" in {con_s:.2f} s = {con_tokens / con_s:.1f} tok/s"
            f" (peak batch {backend.peak_batch})"
        )
    await backend.aclose()
    print(f"1 chat:  {best[False]:.1f} tokens/s (best of {args.rounds})")
    print(f"{args.chats} chats: {best[True]:.1f} tokens/s total (best of {args.rounds})")
    print(f"ratio:   {best[True] / best[False]:.2f}x")
    print(f"greedy outputs identical alone and batched: {same}")


if __name__ == "__main__":
    asyncio.run(main())
