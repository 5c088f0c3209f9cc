"""The app factory: builds the FastAPI app, mounts the routers, serves web/."""

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlmodel import Session, select

from api import chat_ws, platform, recommendations, shopper, storefront
from api import forecast as forecast_api
from api import fraud as fraud_api
from bot.agent import Agent
from bot.llm import ChatBackend, create_backend
from bot.router import default_router
from commerce.models import Customer
from shopdesk.db import get_engine
from shopdesk.redact import install_log_redaction
from shopdesk.settings import Settings, get_settings

WEB_DIR = Path(__file__).resolve().parent / "web"
log = logging.getLogger("shopdesk")


def _store_retriever(settings: Settings, engine):  # type: ignore[no-untyped-def]
    """The process's shared retriever over the store's documents (built on first use if missing)."""
    from retrieval.knowledge import get_store_retriever

    return get_store_retriever(settings, engine)


def create_app(
    settings: Settings | None = None,
    backend: ChatBackend | None = None,
    on_shutdown: list[Callable[[], None]] | None = None,
) -> FastAPI:
    """`on_shutdown` runs when the app stops, however the server was stopped (uvicorn re-raises
    SIGTERM after its graceful shutdown, so code after `uvicorn.run` is not a safe place)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        install_log_redaction()
        engine = get_engine(settings)
        with Session(engine) as db:
            if db.exec(select(Customer.id).limit(1)).first() is None:
                log.warning("the store is empty: run `shopdesk seed` first")
        chat_backend = backend or create_backend(settings)
        app.state.settings = settings
        app.state.engine = engine
        app.state.backend = chat_backend
        app.state.agent = Agent(
            chat_backend,
            engine,
            settings,
            retriever=lambda: _store_retriever(settings, engine),
            router=None if settings.llm_native_tools else default_router,
        )
        try:
            yield
        finally:
            await chat_backend.aclose()
            for cleanup in on_shutdown or []:
                cleanup()

    app = FastAPI(title="shopdesk", version="0.1.0", lifespan=lifespan)

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

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    return app
