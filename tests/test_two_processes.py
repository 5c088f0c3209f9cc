"""Two real shopdesk processes on different ports, one PostgreSQL store and real Redis: a shopper on
one and an agent on the other share a conversation, and messages flow both ways, in order."""

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session
from websockets.sync.client import ClientConnection, connect

from commerce.seed import seed_store
from retrieval.knowledge import build_store_index
from shopdesk.db import make_engine, migrate
from shopdesk.settings import Settings
from shopdesk.staff import create_staff

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "two processes, one bus"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def servers(pg_schema_url, redis_url, seeded_engine, tmp_path_factory) -> Iterator[tuple[str, str]]:  # type: ignore[no-untyped-def]
    url = pg_schema_url()
    engine = make_engine(url)
    migrate(engine)
    var = tmp_path_factory.mktemp("two-processes")
    settings = Settings(_env_file=None, var_dir=var, database_url=url)  # type: ignore[call-arg]
    seed_store(engine, settings)
    with Session(engine) as db:
        create_staff(db, "alex", "Alex", "agent", PASSWORD)
    engine.dispose()
    build_store_index(seeded_engine, settings)  # the suggested replies' help pages (same catalogue)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "SHOPDESK_DATABASE_URL": url,
        "SHOPDESK_VAR_DIR": str(var),
        "SHOPDESK_REDIS_URL": redis_url,
        "SHOPDESK_REDIS_PREFIX": f"shopdesk-test-{secrets.token_hex(4)}:",
        "SHOPDESK_SECRET_KEY": secrets.token_hex(32),  # both processes sign and read the same tokens
        "SHOPDESK_LLM_ANSWER_STYLE": "facts",
        "SHOPDESK_FORECAST_WARM_ON_START": "false",  # a 20 s batch beside the chats: not what this tests
    }
    ports = [free_port(), free_port()]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "shopdesk.cli", "serve", "--backend", "scripted", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(var / f"server-{port}.log", "w"),  # noqa: SIM115
        )
        for port in ports
    ]
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        deadline = time.monotonic() + 120
        for base, proc in zip(bases, procs, strict=True):
            while True:
                assert proc.poll() is None, (var / f"server-{base.rsplit(':', 1)[1]}.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "server did not start"
                try:
                    if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.3)
        yield bases[0], bases[1]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


HTTP = httpx.Client(timeout=60)


def ws_url(base: str, path: str, token: str) -> str:
    return base.replace("http://", "ws://") + f"{path}?token={token}"


def until(ws: ClientConnection, kind: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {kind} event within {timeout} s"
        event = json.loads(ws.recv(timeout=remaining))
        if event["type"] == kind:
            return event


def test_an_agent_on_one_process_serves_a_shopper_on_the_other(servers: tuple[str, str]) -> None:
    shopper_base, agent_base = servers
    session = HTTP.post(shopper_base + "/api/session", json={"customer_id": "james_li_5688"}).json()
    conv = session["conversation_id"]
    login = HTTP.post(agent_base + "/api/staff/login", json={"username": "alex", "password": PASSWORD}).json()
    auth = {"Authorization": f"Bearer {login['token']}"}

    with (
        connect(ws_url(shopper_base, "/ws/chat", session["token"])) as chat,
        connect(ws_url(agent_base, "/ws/agent", login["token"])) as console,
    ):
        assert until(chat, "ready")["state"] == "bot"
        assert until(console, "ready")["agent"]["name"] == "Alex"
        chat.send(json.dumps({"type": "message", "text": "I want to talk to a person", "id": "s0"}))
        assert until(chat, "handoff")["state"] == "waiting"
        until(chat, "done")
        # The queue on the other process sees it (the state is in the shared database) and is told.
        assert until(console, "queue_changed")["conversation_id"] == conv
        queue = HTTP.get(agent_base + "/api/agent/queue", headers=auth).json()["conversations"]
        assert [c["state"] for c in queue if c["id"] == conv] == ["waiting"]

        console.send(json.dumps({"type": "watch", "conversation_id": conv}))
        until(console, "watching")
        taken = HTTP.post(f"{agent_base}/api/agent/conversations/{conv}/take-over", headers=auth)
        assert taken.status_code == 200, taken.text
        joined = until(chat, "handoff")
        assert joined["state"] == "agent" and joined["agent"] == "Alex"

        # Agent -> shopper, across processes, in order.
        for i in range(5):
            sent = HTTP.post(
                f"{agent_base}/api/agent/conversations/{conv}/messages",
                headers=auth,
                json={"text": f"agent says {i}"},
            )
            assert sent.status_code == 201, sent.text
        assert [until(chat, "agent_message")["text"] for _ in range(5)] == [
            f"agent says {i}" for i in range(5)
        ]

        # Shopper -> agent, in order, each stored once.
        for i in range(5):
            chat.send(json.dumps({"type": "message", "text": f"shopper says {i}", "id": f"s{i + 1}"}))
        got = [until(console, "shopper_message")["message"]["text"] for _ in range(5)]
        assert got == [f"shopper says {i}" for i in range(5)]
        # Suggested replies for the latest message reach the agent's process too.
        assert until(console, "suggestions", timeout=60)["suggestions"]

        back = HTTP.post(f"{agent_base}/api/agent/conversations/{conv}/hand-back", headers=auth)
        assert back.status_code == 200
        assert until(chat, "handoff")["state"] == "bot"

    history = HTTP.get(
        shopper_base + "/api/conversation/messages", headers={"Authorization": f"Bearer {session['token']}"}
    ).json()["messages"]
    talk = [m["text"] for m in history if m["role"] in ("user", "agent")]
    assert talk == [
        "I want to talk to a person",
        *[f"agent says {i}" for i in range(5)],
        *[f"shopper says {i}" for i in range(5)],
    ]
