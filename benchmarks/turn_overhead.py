"""What shopdesk adds on top of the model: one shopper turn through the WebSocket, end to end, versus the
very same backend calls made directly, in the same run.

The agent's calls (decision + answer, with their exact messages and schemas) are recorded during the
WebSocket turn and replayed straight against the backend: equal model work, so the difference is
shopdesk (frame parsing, session, tools, database, grounding, event streaming).

    .venv/bin/python benchmarks/turn_overhead.py [--backends scripted,local] [--turns 5]
"""

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bot.llm import create_backend  # noqa: E402
from bot.llm.base import ChatBackend, TextDelta  # noqa: E402
from bot.llm.scripted import ScriptedBackend  # noqa: E402
from commerce.seed import seed_store  # noqa: E402
from server import create_app  # noqa: E402
from shopdesk.db import make_engine, migrate  # noqa: E402
from shopdesk.settings import Settings  # noqa: E402

PROMPT = "Where is my order #W2611340?"
CUSTOMER = "james_li_5688"


class Recording:
    """Passes calls through to a backend and remembers them, for the direct replay."""

    def __init__(self, inner: ChatBackend):
        self.inner = inner
        self.name = inner.name
        self.calls: list[tuple[list[dict[str, Any]], dict[str, Any]]] = []

    def stream(self, messages, **kwargs):  # type: ignore[no-untyped-def]
        self.calls.append((messages, kwargs))
        return self.inner.stream(messages, **kwargs)

    async def aclose(self) -> None:
        await self.inner.aclose()


def scripted_policy(messages, tools, schema):  # type: ignore[no-untyped-def]
    if schema is not None:
        return {"action": "order_status", "order_id": "#W2611340"}
    return "Your order #W2611340 is processed and on its way with its tracking number shown in the card."


async def direct_replay(backend: ChatBackend, calls) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Total seconds and seconds to the first answer token, for the recorded calls made back to back."""
    start = time.perf_counter()
    first = None
    for i, (messages, kwargs) in enumerate(calls):
        async for event in backend.stream(messages, **kwargs):
            if first is None and i == len(calls) - 1 and isinstance(event, TextDelta):
                first = time.perf_counter() - start
    total = time.perf_counter() - start
    return total, first if first is not None else total


async def ws_turn(base: str, token: str) -> tuple[float, float]:
    async with websockets.connect(f"{base.replace('http', 'ws')}/ws/chat?token={token}") as ws:
        await ws.recv()  # ready
        start = time.perf_counter()
        await ws.send(json.dumps({"type": "message", "text": PROMPT}))
        first = None
        while True:
            event = json.loads(await ws.recv())
            if event["type"] == "token" and first is None:
                first = time.perf_counter() - start
            if event["type"] == "done":
                total = time.perf_counter() - start
                return total, first if first is not None else total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(settings: Settings, backend: ChatBackend) -> tuple[uvicorn.Server, str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, backend=backend), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"


async def measure(name: str, settings: Settings, turns: int) -> dict[str, float]:
    inner = ScriptedBackend(scripted_policy) if name == "scripted" else create_backend(settings, name)
    recording = Recording(inner)
    server, base = start_server(settings, recording)  # type: ignore[arg-type]
    ws_runs, direct_runs = [], []
    try:
        async with httpx.AsyncClient(base_url=base) as client:
            for i in range(turns + 1):  # the first round warms up both paths
                token = (await client.post("/api/session", json={"customer_id": CUSTOMER})).json()["token"]
                recording.calls.clear()
                ws = await ws_turn(base, token)
                direct = await direct_replay(inner, list(recording.calls))
                if i:
                    ws_runs.append(ws)
                    direct_runs.append(direct)
    finally:
        server.should_exit = True
        await inner.aclose()
    ws_total = statistics.median(r[0] for r in ws_runs)
    direct_total = statistics.median(r[0] for r in direct_runs)
    return {
        "ws_total_ms": ws_total * 1000,
        "direct_total_ms": direct_total * 1000,
        "overhead_ratio": ws_total / direct_total,
        "overhead_ms": (ws_total - direct_total) * 1000,
        "ws_ttft_ms": statistics.median(r[1] for r in ws_runs) * 1000,
        "direct_ttft_ms": statistics.median(r[1] for r in direct_runs) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="scripted,local")
    parser.add_argument("--turns", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(var_dir=Path(tmp), database_url=f"sqlite:///{tmp}/bench.db")
        source = Settings().var_dir / "shopdesk.db"
        if source.exists():
            shutil.copy(source, Path(tmp) / "bench.db")
        engine = make_engine(settings.db_url)
        migrate(engine)
        if not source.exists():
            seed_store(engine, settings)
        engine.dispose()
        settings = settings.model_copy(update={"local_model_dir": Settings().model_dir})
        print(
            f"{'backend':10} {'ws total':>10} {'direct':>10} {'ratio':>7} {'+ms':>8} {'ws ttft':>9} {'direct ttft':>12}"
        )
        for name in args.backends.split(","):
            r = asyncio.run(measure(name, settings, args.turns))
            print(
                f"{name:10} {r['ws_total_ms']:9.1f}ms {r['direct_total_ms']:9.1f}ms {r['overhead_ratio']:7.3f} "
                f"{r['overhead_ms']:7.1f} {r['ws_ttft_ms']:8.1f}ms {r['direct_ttft_ms']:11.1f}ms"
            )


if __name__ == "__main__":
    main()
