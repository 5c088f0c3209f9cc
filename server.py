"""The app factory: builds the FastAPI app, mounts the routers, serves web/."""

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlmodel import Session, select

from api import admin as admin_api
from api import agent as agent_api
from api import agent_ws, chat_ws, platform, recommendations, shopper, staff, storefront
from api import forecast as forecast_api
from api import fraud as fraud_api
from api import orders as orders_api
from api.nul_guard import NulGuard
from bot.agent import Agent
from bot.llm import ChatBackend, create_backend
from bot.prompts import PromptStore
from bot.router import default_router
from commerce.demand import keep_warm
from commerce.models import Customer
from shopdesk.bus import create_bus
from shopdesk.db import get_engine
from shopdesk.redact import install_log_redaction
from shopdesk.settings import Settings, get_settings

WEB_DIR = Path(__file__).resolve().parent / "web"
log = logging.getLogger("shopdesk")


def _store_retriever(settings: Settings, engine):  # type: ignore[no-untyped-def]
    """The process's shared retriever over the store's documents (built on first use if missing)."""
    from retrieval.knowledge import get_store_retriever

    return get_store_retriever(settings, engine)


def _warm(agent: Agent) -> None:
    try:
        _ = agent.router
        if agent.retriever is not None:
            agent.retriever()
    except Exception:  # a missing index is built (or reported) on first use instead
        log.exception("warm-up failed")


def create_app(
    settings: Settings | None = None,
    backend: ChatBackend | None = None,
    on_shutdown: list[Callable[[], None]] | None = None,
    warm_up: bool = False,
) -> FastAPI:
    """`on_shutdown` runs when the app stops, however the server was stopped (uvicorn re-raises
    SIGTERM after its graceful shutdown, so code after `uvicorn.run` is not a safe place).
    `warm_up` loads the intent router and the retriever in a thread at start, so the first chats do
    not wait for them on the event loop, and fills the forecast cache at low priority (the server
    does; tests need not)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        install_log_redaction()
        engine = get_engine(settings)
        with Session(engine) as db:
            if db.exec(select(Customer.id).limit(1)).first() is None:
                log.warning("the store is empty: run `shopdesk seed` first")
        chat_backend = backend or create_backend(settings)
        bus = create_bus(settings.redis_url, settings.redis_prefix)
        app.state.bus = bus
        app.state.settings = settings
        app.state.engine = engine
        app.state.backend = chat_backend
        # One prompt store for the bot and the admin routes: a save is seen by the very next turn.
        app.state.prompts = PromptStore(settings.prompts_dir, engine)
        app.state.agent = Agent(
            chat_backend,
            engine,
            settings,
            retriever=lambda: _store_retriever(settings, engine),
            router=None if settings.llm_native_tools else default_router,
            prompts=app.state.prompts,
            bus=bus,
        )
        warming = asyncio.create_task(asyncio.to_thread(_warm, app.state.agent)) if warm_up else None
        stop_forecasts = threading.Event()
        if warm_up and settings.forecast_warm_on_start:
            # Its own thread, not the shared pool: it lowers its own CPU priority for the whole batch.
            app.state.forecast_warming = threading.Thread(
                target=keep_warm, args=(engine, settings, stop_forecasts), name="forecast-warm", daemon=True
            )
            app.state.forecast_warming.start()
        try:
            yield
        finally:
            if warming is not None:
                warming.cancel()
            stop_forecasts.set()  # a batch under way finishes (daemon thread); no next day is waited for
            await chat_backend.aclose()
            await bus.aclose()
            for cleanup in on_shutdown or []:
                cleanup()

    app = FastAPI(title="shopdesk", version="0.1.0", lifespan=lifespan)
    app.add_middleware(NulGuard, max_body_bytes=settings.max_request_bytes)

    @app.exception_handler(RequestValidationError)
    async def _bad_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"][1:]) or "body", "message": e["msg"]}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": "invalid request", "errors": errors}, status_code=422)

    app.include_router(shopper.router)
    app.include_router(chat_ws.router)
    app.include_router(platform.router)
    app.include_router(fraud_api.router)
    app.include_router(recommendations.router)
    app.include_router(storefront.router)
    app.include_router(forecast_api.router)
    app.include_router(orders_api.router)
    app.include_router(admin_api.router)
    app.include_router(staff.router)
    app.include_router(agent_api.router)
    app.include_router(agent_ws.router)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html")

    @app.get("/admin", include_in_schema=False)
    def admin_page() -> FileResponse:
        return FileResponse(WEB_DIR / "admin.html")

    @app.get("/agent", include_in_schema=False)
    def agent_page() -> FileResponse:
        return FileResponse(WEB_DIR / "agent.html")

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        """Prometheus exposition of every module's counters and histograms (shopdesk/metrics.py)."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    return app
