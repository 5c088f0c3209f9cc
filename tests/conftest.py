"""Shared fixtures: a seeded store on SQLite for everyone, and PostgreSQL for `postgres` tests.

Store (SQLite, fast; the default seed and store_today, independent of SHOPDESK_* env and .env):

- ``store_settings`` (session): the Settings the store was seeded with (var_dir in a temp dir).
- ``seeded_engine`` (session): an Engine on a temp SQLite file, migrated and seeded once per test
  session. Shared by every test: READ-ONLY. Use ``store_db`` to write.
- ``seed_report`` (session): the SeedReport of that seeding (counts, fingerprint, seconds).
- ``store_db`` (function): an Engine on a private file copy of the seeded database, so writes never
  leak between tests; ``str(store_db.url)`` is a file URL another engine or app can open.
- ``store_session`` (function): a Session on ``store_db`` (closed after the test; commit if you want
  a second session to see your writes).

PostgreSQL (127.0.0.1:5432, database ``test``; override with SHOPDESK_TEST_PG_URL):

- ``pg_url`` (session): a URL whose search_path is a fresh schema created for this test session and
  dropped (CASCADE) at the end. Skips when PostgreSQL is unreachable, unless
  SHOPDESK_REQUIRE_POSTGRES=1, which turns that into a failure (use it in CI).
- ``pg_schema_url`` (session): a factory making more fresh schemas (same cleanup), for tests that
  need an empty database of their own.
- ``pg_engine`` (session): an Engine on ``pg_url``, migrated to head (empty store).
"""

import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session

from commerce.demand import store_spec as STORE_SPEC  # the real one, whatever a test patches in
from commerce.forecast import ForecastSpec
from commerce.seed import SeedReport, seed_store
from shopdesk.db import copy_sqlite_file, make_engine, migrate
from shopdesk.settings import Settings

PG_URL = os.environ.get("SHOPDESK_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


# ---- SQLite store ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def store_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    var = tmp_path_factory.mktemp("store")
    defaults = Settings.model_fields
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        var_dir=var,
        database_url=f"sqlite:///{var / 'seeded.db'}",
        seed=defaults["seed"].default,
        store_today=defaults["store_today"].default,
        seed_file=defaults["seed_file"].default,
    )


@pytest.fixture(scope="session")
def _seeded(store_settings: Settings) -> Iterator[tuple[Engine, SeedReport, Path]]:
    path = Path(make_url(store_settings.db_url).database or "")
    engine = make_engine(store_settings.db_url)
    migrate(engine)
    report = seed_store(engine, store_settings)
    with engine.connect() as conn:  # fold the WAL into the file, so a plain copy is complete
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    yield engine, report, path
    engine.dispose()


@pytest.fixture(scope="session")
def seeded_engine(_seeded: tuple[Engine, SeedReport, Path]) -> Engine:
    return _seeded[0]


@pytest.fixture(scope="session")
def seed_report(_seeded: tuple[Engine, SeedReport, Path]) -> SeedReport:
    return _seeded[1]


@pytest.fixture
def store_db(_seeded: tuple[Engine, SeedReport, Path], tmp_path: Path) -> Iterator[Engine]:
    dst = tmp_path / "store.db"
    copy_sqlite_file(_seeded[2], dst)
    engine = make_engine(f"sqlite:///{dst}")
    yield engine
    engine.dispose()


@pytest.fixture
def store_session(store_db: Engine) -> Iterator[Session]:
    with Session(store_db) as session:
        yield session


# ---- PostgreSQL ------------------------------------------------------------------------------------


def _pg_admin() -> Engine:
    return create_engine(PG_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})


@pytest.fixture(scope="session")
def pg_schema_url() -> Iterator[Callable[[], str]]:
    admin = _pg_admin()
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001
        admin.dispose()
        if os.environ.get("SHOPDESK_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL required but unreachable at {PG_URL}: {exc}")
        pytest.skip(f"PostgreSQL unreachable at {PG_URL}: {exc}")
    created: list[str] = []

    def new_schema() -> str:
        name = f"shopdesk_test_{os.getpid()}_{secrets.token_hex(4)}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{name}"'))
        created.append(name)
        sep = "&" if "?" in PG_URL else "?"
        return f"{PG_URL}{sep}options={quote(f'-csearch_path={name}')}"

    yield new_schema
    with admin.connect() as conn:
        for name in created:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
    admin.dispose()


@pytest.fixture(scope="session")
def pg_url(pg_schema_url: Callable[[], str]) -> str:
    return pg_schema_url()


@pytest.fixture(scope="session")
def pg_engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url)
    migrate(engine)
    yield engine
    engine.dispose()


# ---- Redis ------------------------------------------------------------------------------------------

REDIS_URL = os.environ.get("SHOPDESK_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """Redis for the bus tests (127.0.0.1:6379). Skips when unreachable, unless
    SHOPDESK_REQUIRE_POSTGRES=1 (CI: every service of the project must be there), which fails."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001
        if os.environ.get("SHOPDESK_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"Redis required but unreachable at {REDIS_URL}: {exc}")
        pytest.skip(f"Redis unreachable at {REDIS_URL}: {exc}")
    return REDIS_URL


@pytest.fixture
def redis_prefix() -> str:
    """Channel names of this test only (a shared Redis may carry other runs)."""
    return f"shopdesk-test-{secrets.token_hex(4)}:"


# ---- vLLM (real server, CPU) -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def vllm_server():
    """One real vLLM OpenAI-compatible server for the whole session (tests marked `vllm`).

    Builds var/vllm-venv on first use (bot.llm.vllm_server.ensure_vllm_env, about 70 s from
    scratch), serves the prepared SmolLM2 directory on a free port from 18001 up, yields a
    `VllmServer` (base_url, port, process, settings, timings) and stops the server at the end. Never
    skips: an env that cannot be built or a server that does not come up fails the tests using it.
    """
    import time as _time

    from bot.llm.vllm_server import (
        VllmError,
        VllmServer,
        ensure_vllm_env,
        find_free_port,
        log_tail,
        start_vllm,
        stop_vllm,
        wait_ready,
    )

    settings = Settings()
    started = _time.monotonic()
    try:
        ensure_vllm_env(settings)
    except VllmError as exc:
        pytest.fail(f"cannot build the vLLM env under {settings.var_dir}: {exc}", pytrace=False)
    env_s = _time.monotonic() - started
    port = find_free_port(18001)
    process = start_vllm(settings, port)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        start_s = wait_ready(base_url, timeout=600, process=process)
    except VllmError as exc:
        stop_vllm(process)
        pytest.fail(f"{exc}\nlast lines of the vLLM log:\n{log_tail(settings, port)}", pytrace=False)
    server = VllmServer(base_url, port, process, settings, env_s=env_s, start_s=start_s)
    print(f"\nvLLM session server {base_url} (pid {process.pid}): env {env_s:.0f} s, start {start_s:.0f} s")
    yield server
    stop_vllm(process)


# ---- shared conversation shapes ---------------------------------------------------------------------


@pytest.fixture
def tool_round_trip() -> list[dict]:
    """A question, the assistant's tool call and the tool's result: the OpenAI-format history every
    backend must render and answer in text."""
    return [
        {"role": "user", "content": "Where is my order #W2378156?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_order_status", "arguments": '{"order_id": "#W2378156"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"status": "shipped", "eta": "2026-11-24"}'},
    ]


# ---- chatting with the agent on the seeded store (risk gate and order-write tests) ------------------


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Scripted backend, no fraud model artifact under var_dir: the gate scores with the rules.
    Test modules that need other settings define their own `settings` fixture, which wins."""
    return Settings(_env_file=None, var_dir=tmp_path, llm_backend="scripted")  # type: ignore[call-arg]


def conversation(engine: Engine, customer_id: str | None, state: str = "bot") -> str:
    """A new conversation signed in as `customer_id` (as a session token does; None: a guest)."""
    import uuid

    from commerce.models import Conversation

    with Session(engine) as db:
        conv = Conversation(
            id=str(uuid.uuid4()),
            customer_id=customer_id,
            identity="customer" if customer_id else "guest",
            state=state,
        )
        db.add(conv)
        db.commit()
        return conv.id


async def say(agent: Any, conv: str, text: str) -> list[dict[str, Any]]:
    """One shopper turn: every event the agent yields."""
    return [e async for e in agent.run_turn(conv, text)]


def reply(events: list[dict[str, Any]]) -> str:
    return next(e for e in events if e["type"] == "message")["text"]


def status(engine: Engine, order_id: str) -> str:
    from commerce.models import Order

    with Session(engine) as db:
        return db.get(Order, order_id).status  # type: ignore[union-attr]


# ---- pages in headless Chromium (Playwright) ------------------------------------------------------

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "var" / "test-artifacts"


def cheap_spec(settings: Settings, *, n_jobs: int | None = None) -> ForecastSpec:
    """The store's forecast spec with only the cheap models (monkeypatched over `demand.store_spec`):
    the reorder list's plumbing, in seconds instead of a minute."""
    return replace(
        STORE_SPEC(settings, n_jobs=n_jobs),
        candidates=("seasonal_naive", "croston_optimized", "adida"),
        n_windows=2,
    )


def screenshot(page: Any, folder: str, name: str) -> None:
    """A state of a page as a test artifact: var/test-artifacts/<folder>/<name>.png (CI uploads them)."""
    out = ARTIFACTS / folder
    out.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out / f"{name}.png"))


@pytest.fixture
def live_settings(store_db: Engine) -> Settings:
    """What `live_server` runs with; a module overrides it (e.g. prompts in a temp dir)."""
    return Settings(llm_backend="scripted", database_url=str(store_db.url))


@pytest.fixture
def live_app_setup() -> Callable[[Any], None] | None:
    """Run on the live app once it started (its lifespan built `app.state`); a module overrides it,
    e.g. to give the agent a small policy retriever: `app.state.agent.retriever = ...`."""
    return None


@pytest.fixture
def live_server(
    live_settings: Settings, backend: Any, live_app_setup: Callable[[Any], None] | None
) -> Iterator[str]:
    """The real app on a free port in a thread, with the module's `backend` fixture as the model
    (None: the backend `live_settings` names)."""
    import socket
    import threading
    import time

    import uvicorn

    from server import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(live_settings, backend=backend)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    if live_app_setup is not None:
        live_app_setup(app)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser context; dialogs are dismissed and recorded, page errors fail the test, and a
    final screenshot goes to var/test-artifacts/<module without test_>/."""
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    pg = context.new_page()
    pg.dialogs = []  # type: ignore[attr-defined]
    pg.errors = []  # type: ignore[attr-defined]
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    yield pg
    out = ARTIFACTS / request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    out.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(out / f"{request.node.name}-final.png"))
    context.close()
    assert not pg.errors, pg.errors
