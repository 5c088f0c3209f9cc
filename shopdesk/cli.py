"""The `shopdesk` command: serve, seed, chat, llm prepare."""

import asyncio
import json
import os
import sys
import uuid
from typing import Annotated, Any

import typer
from rich.console import Console

from shopdesk.settings import Settings, get_settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

app = typer.Typer(help="shopdesk: the customer-service bot of an online store.", no_args_is_help=True)
llm_app = typer.Typer(help="The embedded model and model servers.", no_args_is_help=True)
app.add_typer(llm_app, name="llm")
console = Console()


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address")] = None,
    port: Annotated[int | None, typer.Option(help="Port")] = None,
    backend: Annotated[str | None, typer.Option(help="LLM backend: local, openai_compat, scripted")] = None,
) -> None:
    """Start the web server (shopper chat, demo page, REST)."""
    import uvicorn

    settings = get_settings()
    if backend:
        settings = settings.model_copy(update={"llm_backend": backend})
    from server import create_app

    bind_host, bind_port = host or settings.host, port or settings.port
    console.print(
        f"[bold green]shopdesk[/] on http://{bind_host}:{bind_port}/  (backend: {settings.llm_backend})"
    )
    uvicorn.run(create_app(settings), host=bind_host, port=bind_port, log_level="info", ws_max_size=1 << 20)


@app.command()
def seed(
    if_empty: Annotated[
        bool, typer.Option("--if-empty", help="Do nothing when the store already has data")
    ] = False,
) -> None:
    """Migrate the database and load the demo store (deterministic: twice gives the same store)."""
    from sqlmodel import Session, select

    from commerce.models import Customer
    from commerce.seed import seed_store
    from shopdesk.db import get_engine, migrate

    settings = get_settings()
    engine = get_engine(settings)
    migrate(engine)
    if if_empty:
        with Session(engine) as db:
            if db.exec(select(Customer.id).limit(1)).first() is not None:
                console.print("store already seeded")
                return
    report = seed_store(engine, settings)
    console.print(report)


@llm_app.command("prepare")
def llm_prepare() -> None:
    """Convert the embedded GGUF model once into a cached Hugging Face directory."""
    from bot.llm.prepare import prepare_model

    path = prepare_model(get_settings())
    console.print(f"model ready in {path}")


@app.command()
def chat(
    customer: Annotated[
        str | None, typer.Option(help="Sign in as this demo customer (default: guest)")
    ] = None,
    url: Annotated[
        str | None, typer.Option(help="Chat with a running server, e.g. http://127.0.0.1:8000")
    ] = None,
    backend: Annotated[
        str | None, typer.Option(help="In-process backend: local, openai_compat, scripted")
    ] = None,
) -> None:
    """A terminal chat: with a running server (--url) or in-process."""
    settings = get_settings()
    if backend:
        settings = settings.model_copy(update={"llm_backend": backend})
    runner = _chat_remote(url, customer) if url else _chat_local(settings, customer)
    try:
        asyncio.run(runner)
    except (KeyboardInterrupt, EOFError):
        console.print()


def _render(event: dict[str, Any]) -> None:
    kind = event.get("type")
    if kind == "token":
        sys.stdout.write(event["text"])
        sys.stdout.flush()
    elif kind == "message":
        if event.get("replaced"):
            console.print(f"\n[yellow](checked against the store:)[/] {event['text']}")
        else:
            console.print()
    elif kind == "card":
        console.print(f"\n[cyan][card][/] {json.dumps(event['card'])[:400]}")
    elif kind == "confirm":
        console.print(f"\n[magenta][confirm][/] {event['summary']} (yes/no)")
    elif kind in ("handoff", "error"):
        console.print(
            f"\n[red][{kind}][/] {event.get('message') or event.get('text') or event.get('reason')}"
        )


async def _chat_local(settings: Settings, customer_id: str | None) -> None:
    from bot.agent import Agent
    from bot.llm import create_backend
    from commerce.models import Conversation
    from shopdesk.db import get_engine, session_scope

    engine = get_engine(settings)
    agent = Agent(create_backend(settings), engine, settings)
    with session_scope(engine) as db:
        conv = Conversation(
            id=str(uuid.uuid4()), customer_id=customer_id, identity="customer" if customer_id else "guest"
        )
        db.add(conv)
    console.print(f"[dim]conversation {conv.id}; empty line to quit[/]")
    while text := await asyncio.to_thread(input, "\nyou> "):
        sys.stdout.write("bot> ")
        async for event in agent.run_turn(conv.id, text):
            _render(event)
    await agent.backend.aclose()


async def _chat_remote(base_url: str, customer_id: str | None) -> None:
    import httpx
    import websockets

    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        response = await client.post("/api/session", json={"customer_id": customer_id})
        response.raise_for_status()
        token = response.json()["token"]
    ws_url = base_url.replace("http", "ws", 1).rstrip("/") + f"/ws/chat?token={token}"
    async with websockets.connect(ws_url) as ws:
        console.print(f"[dim]{json.loads(await ws.recv())}; empty line to quit[/]")
        while text := await asyncio.to_thread(input, "\nyou> "):
            await ws.send(json.dumps({"type": "message", "text": text, "id": uuid.uuid4().hex}))
            sys.stdout.write("bot> ")
            while True:
                event = json.loads(await ws.recv())
                _render(event)
                if event.get("type") == "done":
                    break


if __name__ == "__main__":
    app()
