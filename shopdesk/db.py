"""Engine and sessions: one place that knows how to reach the database."""

import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

from shopdesk.settings import Settings, get_settings


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL syncs at checkpoints, not at every commit: no corruption risk, and a
            # commit stops costing an fsync on the event loop of every chat turn.
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


@lru_cache
def _engine_for(url: str) -> Engine:
    return make_engine(url)


def get_engine(settings: Settings | None = None) -> Engine:
    settings = settings or get_settings()
    if settings.db_url.startswith("sqlite:///"):
        settings.var_dir.mkdir(parents=True, exist_ok=True)
    return _engine_for(settings.db_url)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except Exception:
            session.rollback()
            raise


def migrate(engine_or_url: Engine | str, revision: str = "head") -> None:
    """Upgrade the database to `revision` (default: the newest) with the repo's alembic scripts.

    Works from any working directory: the script location is resolved from this file, and the
    migrations run on the given engine (or a throwaway engine for a URL), not on Settings().
    """
    from alembic import command
    from alembic.config import Config

    root = Path(__file__).resolve().parent.parent
    ini = root / "alembic.ini"
    cfg = Config(str(ini)) if ini.exists() else Config()
    cfg.set_main_option("script_location", str(root / "migrations"))
    cfg.attributes["programmatic"] = True  # env.py leaves the host's logging alone
    if isinstance(engine_or_url, str):
        if engine_or_url.startswith("sqlite:///") and engine_or_url != "sqlite:///:memory:":
            Path(engine_or_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = make_engine(engine_or_url)
        try:
            migrate(engine, revision)
        finally:
            engine.dispose()
        return
    with engine_or_url.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def copy_sqlite_file(src: Path, dst: Path) -> None:
    """A consistent copy of a SQLite database file (a private store for a test or an eval scenario)."""
    wal = src.with_name(src.name + "-wal")
    if not wal.exists() or wal.stat().st_size == 0:
        shutil.copyfile(src, dst)
        return
    with sqlite3.connect(src) as source, sqlite3.connect(dst) as target:  # pending WAL: copy by backup
        source.backup(target)
