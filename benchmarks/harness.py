"""Shared plumbing of the end-to-end benchmarks: a live server on a free port, shopper turns over the
WebSocket, and the same backend calls replayed directly (equal model work) as the baseline."""

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import websockets

from bot.llm.base import ChatBackend, TextDelta, Usage
from commerce.seed import seed_store
from server import create_app
from shopdesk.db import make_engine, migrate
from shopdesk.settings import Settings

CUSTOMER = "james_li_5688"


@dataclass
class Run:
    """One turn or one replay: wall seconds, seconds to the first visible token, tokens generated."""

    total: float
    first: float
    tokens: int = 0


@dataclass
class Recording:
    """Passes calls through to a backend and remembers them (and their usage), for the direct replay."""

    inner: ChatBackend
    calls: list[tuple[list[dict[str, Any]], dict[str, Any]]] = field(default_factory=list)
    completion_tokens: int = 0

    @property
    def name(self) -> str:
        return self.inner.name

    async def stream(self, messages, **kwargs):  # type: ignore[no-untyped-def]
        self.calls.append((messages, kwargs))
        async for event in self.inner.stream(messages, **kwargs):
            if isinstance(event, Usage):
                self.completion_tokens += event.completion_tokens
            yield event

    async def aclose(self) -> None:
        await self.inner.aclose()


async def direct_replay(backend: ChatBackend, calls) -> Run:  # type: ignore[no-untyped-def]
    """The recorded calls back to back. A shopper sees nothing of a decision (JSON): the first visible
    token is the answer call's first delta, or the decision's end when the reply is built from facts."""
    start = time.perf_counter()
    first = None
    tokens = 0
    for messages, kwargs in calls:
        async for event in backend.stream(messages, **kwargs):
            if first is None and kwargs.get("response_schema") is None and isinstance(event, TextDelta):
                first = time.perf_counter() - start
            if isinstance(event, Usage):
                tokens += event.completion_tokens
    total = time.perf_counter() - start
    return Run(total, first if first is not None else total, tokens)


async def ws_turn(base: str, token: str, text: str) -> Run:
    async with websockets.connect(f"{base.replace('http', 'ws', 1)}/ws/chat?token={token}") as ws:
        await ws.recv()  # ready
        start = time.perf_counter()
        await ws.send(json.dumps({"type": "message", "text": text}))
        first = None
        while True:
            event = json.loads(await ws.recv())
            if event["type"] == "token" and first is None:
                first = time.perf_counter() - start
            if event["type"] == "done":
                total = time.perf_counter() - start
                return Run(total, first if first is not None else total)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(settings: Settings, backend: Any) -> tuple[uvicorn.Server, str]:
    port = free_port()
    config = uvicorn.Config(
        create_app(settings, backend=backend), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"


def bench_store(tmp: Path, **overrides: Any) -> Settings:
    """A private copy of the demo store (the seeded var/ one if present, else seeded fresh)."""
    settings = Settings(var_dir=tmp, database_url=f"sqlite:///{tmp}/bench.db", **overrides)
    source = Settings().var_dir / "shopdesk.db"
    if source.exists():
        shutil.copy(source, tmp / "bench.db")
    engine = make_engine(settings.db_url)
    migrate(engine)
    if not source.exists():
        seed_store(engine, settings)
    engine.dispose()
    return settings.model_copy(update={"local_model_dir": Settings().model_dir})


def start_server_process(settings: Settings) -> tuple[subprocess.Popen, str]:
    """shopdesk as production runs it: its own process (no GIL shared with the benchmark's client)."""
    port = free_port()
    env = {
        **os.environ,
        "SHOPDESK_DATABASE_URL": settings.db_url,
        "SHOPDESK_VAR_DIR": str(settings.var_dir),
        "SHOPDESK_LLM_BACKEND": settings.llm_backend,
        "SHOPDESK_LLM_BASE_URLS": json.dumps(settings.llm_base_urls),
        "SHOPDESK_LLM_ANSWER_STYLE": settings.llm_answer_style,
        "SHOPDESK_LLM_MAX_TOKENS": str(settings.llm_max_tokens),
    }
    command = [sys.executable, "-m", "uvicorn", "--factory", "server:create_app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    process = subprocess.Popen(command, env=env, cwd=Path(__file__).resolve().parent.parent)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return process, base
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("shopdesk did not start")
