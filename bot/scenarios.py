"""Conversation scenarios: YAML conversations run through the real agent and tools on a fresh store.

Each scenario gets its own copy of a freshly seeded demo store (writes never leak between scenarios)
and signs in through a session token exactly as the widget does. Every turn's expectations are
checked, and, whatever the expectations say, every reply's facts are checked against what the tools
returned and what the shopper wrote: a reply stating anything else is reported as `ungrounded`.
The format is documented in docs/scenarios.md.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from bot import grounding
from bot.agent import Agent
from bot.llm.base import ChatBackend
from bot.tools import ToolRegistry, ToolResult, default_tools
from commerce.models import Conversation, Customer, Order, ToolCallRecord
from shopdesk.db import copy_sqlite_file, make_engine, migrate
from shopdesk.security import read_token
from shopdesk.settings import Settings

TURN_TIMEOUT_S = 300.0


class ScenarioError(ValueError):
    """A scenario file that cannot be run (bad YAML, unknown key, unknown customer...)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Expect(_Strict):
    tools: list[str] = Field(default_factory=list)  # each must be called during the turn
    no_tools: list[str] = Field(default_factory=list)  # none may be called
    says_all: list[str] = Field(default_factory=list)
    says_any: list[str] = Field(default_factory=list)
    not_says: list[str] = Field(default_factory=list)
    handoff: bool | None = None
    confirm: bool | None = None  # the turn ends with an action waiting for the shopper's yes
    cites: bool | None = None


class Turn(_Strict):
    user: str = Field(min_length=1)
    expect: Expect = Field(default_factory=Expect)
    # What the scripted backend answers in this turn (decision JSON objects or text), in order: a
    # stand-in for a model that obeys an injection, say. Ignored by every other backend.
    scripted: list[dict[str, Any] | str] | None = None


class EndState(_Strict):
    order: str | None = None
    status: str | None = None
    conversation_state: str | None = None  # bot | waiting | agent | closed
    customer: str | None = None  # the customer the conversation is bound to ("none": still a guest)

    @field_validator("status", "conversation_state")
    @classmethod
    def _lower(cls, value: str | None) -> str | None:
        return value.lower() if value else value


class Scenario(_Strict):
    id: str = Field(min_length=1)
    customer: str | None = None
    tags: list[str] = Field(default_factory=list)
    turns: list[Turn] = Field(min_length=1)
    end_state: list[EndState] = Field(default_factory=list)
    source: str = ""  # the file it came from (set by the loader)


def load_scenarios(paths: list[Path]) -> list[Scenario]:
    """Every scenario in the given files and directories (*.yaml, *.yml), validated, ids unique."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml")))
        elif path.exists():
            files.append(path)
        else:
            raise ScenarioError(f"{path}: no such file or directory")
    if not files:
        raise ScenarioError("no scenario files found")
    scenarios: list[Scenario] = []
    seen: dict[str, str] = {}
    for file in files:
        try:
            raw = yaml.safe_load(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ScenarioError(f"{file}: not valid YAML: {exc}") from exc
        if raw is None:
            continue
        if isinstance(raw, dict) and "scenarios" in raw:
            raw = raw["scenarios"]
        if not isinstance(raw, list):
            raise ScenarioError(f"{file}: expected a list of scenarios")
        for index, item in enumerate(raw):
            try:
                scenario = Scenario.model_validate({**item, "source": str(file)})
            except ValidationError as exc:
                where = item.get("id", f"#{index + 1}") if isinstance(item, dict) else f"#{index + 1}"
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or 'scenario'}: {e['msg']}" for e in exc.errors()
                )
                raise ScenarioError(f"{file}: scenario {where}: {problems}") from exc
            except TypeError as exc:
                raise ScenarioError(f"{file}: scenario #{index + 1}: expected a mapping") from exc
            if scenario.id in seen:
                raise ScenarioError(
                    f"{file}: duplicate scenario id {scenario.id!r} (also in {seen[scenario.id]})"
                )
            seen[scenario.id] = str(file)
            scenarios.append(scenario)
    return scenarios


# ---- results ----------------------------------------------------------------------------------------


@dataclass
class TurnOutcome:
    text: str
    tools: list[str]
    handoff: bool
    confirm: bool
    citations: list[dict[str, Any]]
    ungrounded: list[str]
    latency_ms: float


@dataclass
class ScenarioResult:
    id: str
    tags: list[str]
    passed: bool
    turn: int | None = None  # 1-based turn of the first failure; None for end_state or a pass
    reason: str = ""
    ungrounded: list[dict[str, Any]] = field(default_factory=list)
    turns: list[TurnOutcome] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class RunReport:
    backend: str
    results: list[ScenarioResult]
    seconds: float

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.results)

    def by_tag(self) -> dict[str, dict[str, int]]:
        tags: dict[str, dict[str, int]] = {}
        for result in self.results:
            for tag in result.tags or ["untagged"]:
                entry = tags.setdefault(tag, {"total": 0, "passed": 0})
                entry["total"] += 1
                entry["passed"] += int(result.passed)
        return dict(sorted(tags.items()))

    def to_json(self) -> dict[str, Any]:
        total = len(self.results)
        return {
            "backend": self.backend,
            "total": total,
            "passed": self.passed,
            "pass_rate": round(self.passed / total, 4) if total else 0.0,
            "by_tag": self.by_tag(),
            "failures": [
                {"id": r.id, "turn": r.turn, "reason": r.reason} for r in self.results if not r.passed
            ],
            "ungrounded": [u for r in self.results for u in r.ungrounded],
            "seconds": round(self.seconds, 1),
        }


# ---- checking -------------------------------------------------------------------------------------


def check_turn(expect: Expect, outcome: TurnOutcome) -> str | None:
    """The first expectation the turn does not meet, as a sentence; None when all hold."""
    text = outcome.text.lower()
    for name in expect.tools:
        if name not in outcome.tools:
            return f"expected tool {name}, called {outcome.tools or 'none'}"
    for name in expect.no_tools:
        if name in outcome.tools:
            return f"tool {name} must not be called"
    for phrase in expect.says_all:
        if phrase.lower() not in text:
            return f"reply lacks {phrase!r}: {outcome.text[:160]!r}"
    if expect.says_any and not any(p.lower() in text for p in expect.says_any):
        return f"reply has none of {expect.says_any}: {outcome.text[:160]!r}"
    for phrase in expect.not_says:
        if phrase.lower() in text:
            return f"reply must not say {phrase!r}: {outcome.text[:160]!r}"
    if expect.handoff is not None and outcome.handoff != expect.handoff:
        return f"expected handoff={expect.handoff}, got {outcome.handoff}"
    if expect.confirm is not None and outcome.confirm != expect.confirm:
        return f"expected confirm={expect.confirm}, got {outcome.confirm}"
    if expect.cites is not None and bool(outcome.citations) != expect.cites:
        return f"expected cites={expect.cites}, got {len(outcome.citations)} citation(s)"
    return None


def check_end_state(db: Session, conversation_id: str, states: list[EndState]) -> str | None:
    from commerce.orders import normalize_order_id

    for state in states:
        if state.order is not None:
            order = db.get(Order, normalize_order_id(state.order) or state.order)
            if order is None:
                return f"end_state: order {state.order} does not exist"
            if state.status is not None and order.status.lower() != state.status:
                return f"end_state: order {order.id} is {order.status}, expected {state.status}"
        conv = db.get(Conversation, conversation_id)
        assert conv is not None
        if state.conversation_state is not None and conv.state != state.conversation_state:
            return f"end_state: conversation is {conv.state}, expected {state.conversation_state}"
        if state.customer is not None:
            expected = None if state.customer.lower() == "none" else state.customer
            if conv.customer_id != expected:
                return f"end_state: conversation bound to {conv.customer_id}, expected {expected}"
    return None


# ---- running --------------------------------------------------------------------------------------


class _SourceRecorder:
    """Wraps every tool's handlers to keep what they returned: the facts a reply may state."""

    def __init__(self, tools: ToolRegistry):
        self.texts: list[str] = []
        for tool in tools.all():
            tool.run = self._wrap(tool.run)
            if tool.execute is not None:
                tool.execute = self._wrap(tool.execute)

    def _wrap(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        async def recorded(args: Any, ctx: Any) -> ToolResult:
            result = await handler(args, ctx)
            self.texts.append(result.text)
            return result

        return recorded


def seed_template(settings: Settings, directory: Path) -> Path:
    """A freshly migrated and seeded demo store in `directory`, checkpointed so copies are complete."""
    from commerce.seed import seed_store

    path = directory / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    try:
        migrate(engine)
        seed_store(engine, settings.model_copy(update={"database_url": f"sqlite:///{path}"}))
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        engine.dispose()
    return path


class ScenarioRunner:
    """Runs scenarios on private copies of one seeded store, sharing a backend, router and retriever.

    `backend_factory` is called once per scenario: the scripted backend is cheap and per-scenario
    (its per-turn script must not be shared); a real model is built once and returned every time.
    """

    def __init__(
        self,
        settings: Settings,
        backend_factory: Callable[[], ChatBackend],
        backend_name: str,
        workdir: Path,
        template: Path,
        retriever: Callable[[], Any] | None = None,
        router: Callable[[], Any] | None = None,
        concurrency: int = 1,
    ):
        self.settings = settings
        self.backend_factory = backend_factory
        self.backend_name = backend_name
        self.workdir = workdir
        self.template = template
        self.retriever = retriever
        self.router = router
        self.concurrency = max(1, concurrency)

    def check_customers(self, scenarios: list[Scenario]) -> None:
        engine = make_engine(f"sqlite:///{self.template}")
        try:
            with Session(engine) as db:
                for scenario in scenarios:
                    if scenario.customer is not None and db.get(Customer, scenario.customer) is None:
                        raise ScenarioError(
                            f"{scenario.source}: scenario {scenario.id}: unknown customer {scenario.customer!r}"
                        )
        finally:
            engine.dispose()

    async def run(
        self, scenarios: list[Scenario], on_result: Callable[[ScenarioResult], None] | None = None
    ) -> RunReport:
        self.check_customers(scenarios)
        started = time.perf_counter()
        gate = asyncio.Semaphore(self.concurrency)
        results: list[ScenarioResult | None] = [None] * len(scenarios)

        async def one(index: int, scenario: Scenario) -> None:
            async with gate:
                result = await self.run_scenario(scenario, index)
            results[index] = result
            if on_result is not None:
                on_result(result)

        await asyncio.gather(*(one(i, s) for i, s in enumerate(scenarios)))
        done = [r for r in results if r is not None]
        return RunReport(self.backend_name, done, time.perf_counter() - started)

    async def run_scenario(self, scenario: Scenario, index: int = 0) -> ScenarioResult:
        started = time.perf_counter()
        db_path = self.workdir / f"scenario-{index}-{uuid.uuid4().hex[:8]}.db"
        copy_sqlite_file(self.template, db_path)
        url = f"sqlite:///{db_path}"
        engine = make_engine(url)
        settings = self.settings.model_copy(update={"database_url": url})
        backend = self.backend_factory()
        tools = default_tools()
        recorder = _SourceRecorder(tools)
        router = self.router
        agent = Agent(backend, engine, settings, tools=tools, retriever=self.retriever, router=router)
        result = ScenarioResult(id=scenario.id, tags=scenario.tags, passed=True)
        try:
            conversation_id = self._sign_in(engine, settings, scenario.customer)
            user_texts: list[str] = []
            for number, turn in enumerate(scenario.turns, start=1):
                if turn.scripted is not None and hasattr(backend, "reset"):
                    backend.reset()
                    backend.push(*turn.scripted)
                recorder.texts.clear()
                user_texts.append(turn.user)
                outcome = await self._run_turn(
                    agent, engine, conversation_id, turn.user, recorder, user_texts
                )
                result.turns.append(outcome)
                if outcome.ungrounded:
                    result.ungrounded.append(
                        {"id": scenario.id, "turn": number, "facts": outcome.ungrounded, "text": outcome.text}
                    )
                failure = check_turn(turn.expect, outcome)
                if failure and result.passed:
                    result.passed, result.turn, result.reason = False, number, failure
            if result.passed:
                with Session(engine) as db:
                    failure = check_end_state(db, conversation_id, scenario.end_state)
                if failure:
                    result.passed, result.reason = False, failure
        except TimeoutError:
            result.passed, result.reason = False, f"a turn took longer than {TURN_TIMEOUT_S:.0f} s"
        except Exception as exc:  # one broken scenario must not stop the measurement
            result.passed, result.reason = False, f"error: {type(exc).__name__}: {exc}"
        finally:
            engine.dispose()
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db_path}{suffix}").unlink(missing_ok=True)
        result.seconds = time.perf_counter() - started
        return result

    def _sign_in(self, engine: Engine, settings: Settings, customer_id: str | None) -> str:
        from bot.sessions import start_session

        with Session(engine) as db:
            customer = db.get(Customer, customer_id) if customer_id else None
            _conv, token = start_session(db, settings, customer)
        return read_token(token, settings).conversation_id

    async def _run_turn(
        self,
        agent: Agent,
        engine: Engine,
        conversation_id: str,
        text: str,
        recorder: _SourceRecorder,
        user_texts: list[str],
    ) -> TurnOutcome:
        with Session(engine) as db:
            last_audit = (
                db.exec(select(ToolCallRecord.id).order_by(col(ToolCallRecord.id).desc())).first() or 0
            )
        t0 = time.perf_counter()

        async def collect() -> list[dict[str, Any]]:
            return [event async for event in agent.run_turn(conversation_id, text, uuid.uuid4().hex)]

        events = await asyncio.wait_for(collect(), TURN_TIMEOUT_S)
        latency = (time.perf_counter() - t0) * 1000
        final = next((e for e in reversed(events) if e["type"] == "message"), {"text": "", "citations": []})
        with Session(engine) as db:
            calls = db.exec(
                select(ToolCallRecord.tool, ToolCallRecord.outcome)
                .where(ToolCallRecord.conversation_id == conversation_id, col(ToolCallRecord.id) > last_audit)
                .order_by(col(ToolCallRecord.id))
            ).all()
            conv = db.get(Conversation, conversation_id)
            assert conv is not None
            pending = conv.pending_action is not None
        # Only this turn's tool results and the shopper's words are sources, not earlier bot replies.
        check = grounding.check(final["text"], recorder.texts + user_texts)
        return TurnOutcome(
            text=final["text"],
            tools=[tool for tool, outcome in calls if outcome != "declined"],
            handoff=any(e["type"] == "handoff" for e in events),
            confirm=pending,
            citations=list(final.get("citations") or []),
            ungrounded=check.unsupported,
            latency_ms=round(latency, 1),
        )


def scripted_policy(messages: list[Any], tools: Any, schema: dict[str, Any] | None) -> Any:
    """The scripted backend's stand-in for a model: the grammar's first branch (the router's pick),
    the first value each argument may take; free text says nothing factual."""
    from bot.llm.scripted import minimal_instance

    if schema is not None:
        return minimal_instance(schema)
    return "I'm here to help with your orders, returns, delivery and payments. What can I do for you?"


def make_runner(
    settings: Settings,
    backend_name: str,
    workdir: Path | None = None,
    concurrency: int | None = None,
    template: Path | None = None,
) -> tuple[ScenarioRunner, Callable[[], None]]:
    """A runner on a freshly seeded store (or on copies of `template`, a seeded SQLite file), and the
    cleanup to call when done.

    `backend_name`: scripted, local or openai_compat (settings.llm_base_urls; `shopdesk eval chat
    --backend vllm` starts a server and passes openai_compat).
    """
    from bot.llm import create_backend
    from bot.llm.scripted import ScriptedBackend
    from bot.router import default_router
    from commerce import fraud
    from recsys import store as recsys_store
    from retrieval.knowledge import build_store_index, get_store_retriever

    holder = tempfile.TemporaryDirectory(prefix="shopdesk-eval-", dir=workdir)
    directory = Path(holder.name)
    template = template or seed_template(settings, directory)
    # The index lives in the eval cache (var_dir/eval/index): built once, then only checked by hash.
    eval_settings = settings.model_copy(
        update={
            "var_dir": settings.var_dir / "eval",
            "local_model_dir": settings.model_dir,
            "secret_key": settings.secret_key,
            "database_url": f"sqlite:///{template}",
        }
    )
    template_engine = make_engine(f"sqlite:///{template}")
    build_store_index(template_engine, eval_settings)
    # Recommendations as the product serves them: trained once on this store, reused while it holds.
    if not recsys_store.is_current(template_engine, eval_settings):
        recsys_store.train_store(template_engine, eval_settings)
    # The risk gate scores with the trained model, as in production (rules alone only as a fallback).
    if fraud.load_model(eval_settings) is None:
        fraud.train_store_model(template_engine, eval_settings)
    template_engine.dispose()
    router = None
    if not settings.llm_native_tools:
        shared_router = default_router()

        def router() -> Any:
            return shared_router

    backends: list[ChatBackend] = []
    if backend_name == "scripted":

        def factory() -> ChatBackend:
            return ScriptedBackend(scripted_policy)

        default_concurrency = 4
    else:
        shared = create_backend(settings, backend_name)
        backends.append(shared)

        def factory() -> ChatBackend:
            return shared

        default_concurrency = 4 if backend_name == "local" else 8

    runner = ScenarioRunner(
        eval_settings,
        factory,
        backend_name,
        directory,
        template,
        retriever=lambda: get_store_retriever(eval_settings),
        router=router,
        concurrency=concurrency or default_concurrency,
    )

    def cleanup() -> None:
        for backend in backends:
            # Called from plain code (the CLI) or from inside an event loop (async tests).
            with ThreadPoolExecutor(1) as pool:
                pool.submit(asyncio.run, backend.aclose()).result()
        holder.cleanup()

    return runner, cleanup
