"""One settings object for the whole product (env prefix SHOPDESK_)."""

import secrets
from datetime import UTC, date, datetime, time
from functools import lru_cache
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent
LIVE_DAY = "live"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHOPDESK_", env_file=".env", extra="ignore")

    var_dir: Path = ROOT / "var"
    database_url: str = ""  # empty: SQLite file under var_dir
    seed_file: Path = ROOT / "data" / "seed" / "db.json"
    seed: int = 20261122
    # The store's "today" for forecasts, restock dates and the seed: an ISO date (the demo's, where the
    # generated history ends, so seeding is reproducible) or "live", the current date where the store is.
    store_today: str = "2026-11-20"
    # Where the store's day turns (IANA name): a live store day, the sales feed's "not after today" check
    # and the nightly forecast refit follow the store's midnight, not the server's.
    store_timezone: str = "UTC"

    llm_backend: Literal["local", "openai_compat", "scripted"] = "local"
    llm_base_urls: list[str] = Field(default_factory=lambda: ["http://127.0.0.1:8001/v1"])
    llm_model: str = "smollm2-135m-instruct"
    llm_api_key: SecretStr = SecretStr("EMPTY")
    llm_timeout_s: float = 60.0
    llm_max_tokens: int = 160
    llm_temperature: float = 0.0
    # Small models cannot call tools natively: they get a grammar-constrained decision instead.
    llm_native_tools: bool = False
    # After a tool ran: "facts" replies with the store's own sentences (right for a 135M model, which
    # contradicts them); "model" lets the model phrase them, checked to state every key fact.
    llm_answer_style: Literal["facts", "model"] = "facts"
    local_model_dir: Path | None = None  # default: var_dir / "models" / "smollm2-135m-instruct"
    local_max_batch: int = 8

    secret_key: SecretStr | None = None  # default: a random key kept in var_dir/secret.key
    token_ttl_s: int = 7 * 24 * 3600
    staff_token_ttl_s: int = 12 * 3600  # one shift
    demo_mode: bool = True  # lets POST /api/session sign in as any demo customer

    max_frame_bytes: int = 16 * 1024
    # Any HTTP request body (api/nul_guard.py): the sales feed's 50,000-row batch is ~4 MB.
    max_request_bytes: int = Field(default=16 * 1024 * 1024, ge=64 * 1024)
    max_history_messages: int = 12

    # Fraud (commerce/fraud.py): the calibrated score decides allow / review (step-up or a human) / block.
    fraud_review_threshold: float = Field(default=0.35, ge=0.0, le=1.0)
    fraud_block_threshold: float = Field(default=0.9, ge=0.0, le=1.0)
    # POST /api/fraud/score wants this key in X-API-Key; unset, only a demo store answers it.
    fraud_api_key: SecretStr | None = None
    # GET /api/recommendations/{customer_id} (what a customer bought shows through) wants this key in
    # X-API-Key, or that customer's own session token; unset, only a demo store answers without one.
    recsys_api_key: SecretStr | None = None
    # The orders REST (api/orders.py) wants this key in X-API-Key; unset, only a demo store answers it.
    orders_api_key: SecretStr | None = None

    # Demand forecast and purchasing (commerce/demand.py, commerce/inventory.py). Their REST wants an
    # admin's bearer token, or this key in X-API-Key from other services; unset, a demo store is open.
    inventory_api_key: SecretStr | None = None
    forecast_horizon_days: int = Field(default=28, ge=7, le=120)
    forecast_history_days: int = Field(default=364, ge=56)  # fit on the last year: bounds the fit time
    forecast_n_jobs: int = Field(default=2, ge=1)
    # `shopdesk serve` fills the forecast cache in a low-priority background thread at start, so the
    # first reorder list does not wait for every variant's fit.
    forecast_warm_on_start: bool = True
    inventory_service_level: float = Field(default=0.95, gt=0.5, lt=1.0)  # P(no stock-out in a lead time)
    inventory_review_days: int = Field(default=14, ge=1)  # an order covers demand until the next review
    inventory_default_lead_days: int = Field(default=21, ge=1)  # reorder maths without a supplier on record
    restock_receiving_days: int = Field(default=2, ge=0)  # a delivery's arrival to sellable stock

    # Conversation events between server processes (api/bus.py): Redis pub/sub when set, else in-process.
    redis_url: str = ""
    redis_prefix: str = "shopdesk:"  # channel names: several stores (or test runs) may share one Redis
    # Handoff triggers (bot/handoff.py).
    handoff_failed_turns: int = Field(default=2, ge=1)
    handoff_sentiment: float = Field(default=-0.6, ge=-1.0, le=0.0)  # VADER compound at or below: a person

    # Admin (api/admin.py): where the editable prompts and the policy pages live, and the upload limit.
    prompts_dir: Path = ROOT / "prompts"
    policies_dir: Path = ROOT / "knowledge" / "policies"
    kb_max_bytes: int = Field(default=200 * 1024, ge=1024)

    host: str = "127.0.0.1"
    port: int = 8000

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.var_dir / 'shopdesk.db'}"

    def signing_key(self) -> str:
        """The token key: the configured one, or one made once per installation (never a shared default)."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        path = self.var_dir / "secret.key"
        if not path.exists():
            self.var_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(secrets.token_hex(32))
            tmp.chmod(0o600)
            tmp.replace(path)
        return path.read_text().strip()

    @property
    def model_dir(self) -> Path:
        return self.local_model_dir or self.var_dir / "models" / "smollm2-135m-instruct"

    @field_validator("store_today")
    @classmethod
    def _day_or_live(cls, value: str) -> str:
        if value != LIVE_DAY:
            try:
                date.fromisoformat(value)
            except ValueError:
                raise ValueError(f"store_today must be a date (YYYY-MM-DD) or {LIVE_DAY!r}") from None
        return value

    @field_validator("store_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"store_timezone must be an IANA time zone such as 'Europe/Berlin', not {value!r}"
            ) from None
        return value

    @property
    def store_zone(self) -> ZoneInfo:
        return ZoneInfo(self.store_timezone)

    @property
    def store_day_is_live(self) -> bool:
        return self.store_today == LIVE_DAY

    def store_day(self) -> date:
        """The store's today (see `store_today`): when live, the current date in the store's time zone."""
        return (
            datetime.now(self.store_zone).date()
            if self.store_day_is_live
            else date.fromisoformat(self.store_today)
        )

    def store_now(self) -> datetime:
        """The clock the store's rules read (return and exchange windows, an action's risk), aware UTC:
        the real time for a live store day; for a fixed day, noon of it, where the seeded history
        ends, so a demo store's windows stay where its seed put them however long after it runs."""
        if self.store_day_is_live:
            return datetime.now(UTC)
        return datetime.combine(self.store_day(), time(12, 0), tzinfo=UTC)


@lru_cache
def get_settings() -> Settings:
    return Settings()
