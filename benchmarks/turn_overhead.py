"""What shopdesk adds on top of the model: one shopper turn through the WebSocket, end to end, versus the
very same backend calls made directly, in the same run.

The agent's calls (decision, and answer when the model phrases it) are recorded during the WebSocket
turn and replayed straight against the backend: equal model work, so the difference is shopdesk
(frame parsing, session, tools, database, grounding, event streaming).

    .venv/bin/python benchmarks/turn_overhead.py [--backends scripted,local] [--turns 5]
"""

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.harness import CUSTOMER, Recording, bench_store, direct_replay, start_server, ws_turn  # noqa: E402
from bot.llm import create_backend  # noqa: E402
from bot.llm.scripted import ScriptedBackend  # noqa: E402
from shopdesk.settings import Settings  # noqa: E402

PROMPT = "Where is my order #W2611340?"


def scripted_policy(messages, tools, schema):  # type: ignore[no-untyped-def]
    if schema is not None:
        return {"action": "order_status", "order_id": "#W2611340"}
    return "Your order #W2611340 is processed and on its way with its tracking number shown in the card."


async def measure(name: str, settings: Settings, turns: int) -> dict[str, float]:
    inner = ScriptedBackend(scripted_policy) if name == "scripted" else create_backend(settings, name)
    recording = Recording(inner)
    server, base = start_server(settings, recording)
    ws_runs, direct_runs = [], []
    try:
        async with httpx.AsyncClient(base_url=base) as client:
            for i in range(turns + 1):  # the first round warms up both paths
                token = (await client.post("/api/session", json={"customer_id": CUSTOMER})).json()["token"]
                recording.calls.clear()
                ws = await ws_turn(base, token, PROMPT)
                direct = await direct_replay(inner, list(recording.calls))
                if i:
                    ws_runs.append(ws)
                    direct_runs.append(direct)
    finally:
        server.should_exit = True
        await inner.aclose()
    ws_total = statistics.median(r.total for r in ws_runs)
    direct_total = statistics.median(r.total for r in direct_runs)
    return {
        "ws_total_ms": ws_total * 1000,
        "direct_total_ms": direct_total * 1000,
        "overhead_ratio": ws_total / direct_total,
        "overhead_ms": (ws_total - direct_total) * 1000,
        "ws_ttft_ms": statistics.median(r.first for r in ws_runs) * 1000,
        "direct_ttft_ms": statistics.median(r.first for r in direct_runs) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="scripted,local")
    parser.add_argument("--turns", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = bench_store(Path(tmp))
        header = ("backend", "ws total", "direct", "ratio", "+ms", "ws ttft", "direct ttft")
        print("{:10} {:>10} {:>10} {:>7} {:>8} {:>9} {:>12}".format(*header))
        for name in args.backends.split(","):
            r = asyncio.run(measure(name, settings, args.turns))
            print(
                f"{name:10} {r['ws_total_ms']:9.1f}ms {r['direct_total_ms']:9.1f}ms {r['overhead_ratio']:7.3f} "
                f"{r['overhead_ms']:7.1f} {r['ws_ttft_ms']:8.1f}ms {r['direct_ttft_ms']:11.1f}ms"
            )


if __name__ == "__main__":
    main()
