"""Fraud scoring cost: training time, and p50 / p99 latency of POST /api/fraud/score in-process, with
the model and with rules alone (the baseline), same requests, same run.

Requests: a fixed mix drawn from the store (seeded): half order ids (a third of them with an action:
return / exchange / cancel / address_change), half checkout payloads copied from stored orders
(customer, items, payment method, address). Every request goes through the whole route: validation,
the store queries, the model (or not), the audit row and its commit. The client is httpx's ASGI
transport in the same process (no network, no test-client thread). Target: p99 <= 10 ms with the model.

The store is seeded fresh into a temp dir (the same store every run; a copy of var/shopdesk.db may
predate the fraud history or a migration).

    .venv/bin/python benchmarks/fraud.py [--requests 1000] [--warmup 100]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
from sqlmodel import Session, col, select  # noqa: E402

from bot.llm.scripted import ScriptedBackend  # noqa: E402
from commerce.fraud import ACTIONS, OrderPayload, score_order, score_payload, train_store_model  # noqa: E402
from commerce.models import Order, OrderItem, Payment  # noqa: E402
from commerce.seed import seed_store  # noqa: E402
from server import create_app  # noqa: E402
from shopdesk.db import make_engine, migrate  # noqa: E402
from shopdesk.settings import Settings  # noqa: E402


def requests_from_store(settings: Settings, n: int, seed: int = 7) -> list[dict[str, Any]]:
    """n request bodies: order ids (some with an action) and payloads rebuilt from stored orders."""
    rng = random.Random(seed)
    engine = make_engine(settings.db_url)
    with Session(engine) as db:
        orders = db.exec(select(Order).order_by(Order.id)).all()
        items: dict[str, list[str]] = {}
        for oid, vid in db.exec(select(OrderItem.order_id, OrderItem.variant_id).order_by(col(OrderItem.id))):
            items.setdefault(oid, []).append(vid)
        paid = dict(
            db.exec(
                select(Payment.order_id, Payment.payment_method_id).where(Payment.kind == "payment")
            ).all()
        )
    engine.dispose()
    bodies: list[dict[str, Any]] = []
    for _ in range(n):
        o = rng.choice(orders)
        if rng.random() < 0.5:
            action = rng.choice(ACTIONS) if rng.random() < 1 / 3 else None
            bodies.append({"order_id": o.id} | ({"action": action} if action else {}))
            continue
        bodies.append(
            {
                "customer_id": o.customer_id,
                "items": [{"variant_id": v} for v in items[o.id]],
                "payment_method_id": paid[o.id],
                "ship_address": {
                    "address1": o.ship_address1,
                    "address2": o.ship_address2,
                    "city": o.ship_city,
                    "state": o.ship_state,
                    "zip": o.ship_zip,
                },
            }
        )
    return bodies


async def _measure(
    settings: Settings, bodies: list[dict[str, Any]], warmup: int
) -> tuple[list[float], list[float], int]:
    app = create_app(settings, backend=ScriptedBackend())
    flagged = 0
    times: list[float] = []
    floor: list[float] = []
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for body in bodies[:warmup]:
                (await client.post("/api/fraud/score", json=body)).raise_for_status()
            for body in bodies:
                start = time.perf_counter()
                response = await client.post("/api/fraud/score", json=body)
                times.append((time.perf_counter() - start) * 1000)
                response.raise_for_status()
                flagged += response.json()["decision"] != "allow"
                start = time.perf_counter()
                await client.get("/healthz")
                floor.append((time.perf_counter() - start) * 1000)
    return times, floor, flagged


def measure(
    settings: Settings, bodies: list[dict[str, Any]], warmup: int
) -> tuple[list[float], list[float], int]:
    """Per-request milliseconds (after `warmup` requests), the same client's /healthz (the framework's
    floor), and how many answers were not 'allow'. httpx's ASGI transport calls the app directly:
    no sockets, no test-client thread."""
    return asyncio.run(_measure(settings, bodies, warmup))


def direct(settings: Settings, bodies: list[dict[str, Any]]) -> list[float]:
    """The same scoring called as a function (no HTTP, no audit row): what the bot's tools pay."""
    engine = make_engine(settings.db_url)
    times: list[float] = []
    with Session(engine) as db:
        for body in bodies:
            start = time.perf_counter()
            if "order_id" in body:
                score_order(db, settings, body["order_id"], body.get("action"))
            else:
                score_payload(db, settings, OrderPayload.model_validate(body))
            times.append((time.perf_counter() - start) * 1000)
    engine.dispose()
    return times


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 10) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            var_dir=Path(tmp),
            database_url=f"sqlite:///{tmp}/bench.db",
            llm_backend="scripted",
        )
        engine = make_engine(settings.db_url)
        migrate(engine)
        seed_store(engine, settings)
        start = time.perf_counter()
        report = train_store_model(engine, settings)
        train_s = time.perf_counter() - start
        engine.dispose()
        print(
            f"training: {train_s:.2f} s end to end (features {report.seconds['features']:.2f} s, "
            f"LightGBM {report.seconds['train']:.2f} s) on {report.n_train} orders; "
            f"validation AUPRC {report.metrics['auprc_model']:.3f} vs rules alone {report.metrics['auprc_rules_only']:.3f}"
        )
        bodies = requests_from_store(settings, args.requests)
        rules_only = settings.model_copy(update={"var_dir": Path(tmp) / "no-model"})
        results = {}
        for name, s in (("model + rules", settings), ("rules only", rules_only)):
            times, floor, flagged = measure(s, bodies, args.warmup)
            results[name] = times
            calls = direct(s, bodies)
            print(
                f"{name:>13}: p50 {pct(times, 50):.2f} ms, p90 {pct(times, 90):.2f} ms, p99 {pct(times, 99):.2f} ms, "
                f"mean {statistics.fmean(times):.2f} ms over {len(times)} requests ({flagged} not allowed); "
                f"GET /healthz on the same client: p50 {pct(floor, 50):.2f} ms, p99 {pct(floor, 99):.2f} ms; "
                f"as a function call: p50 {pct(calls, 50):.2f} ms, p99 {pct(calls, 99):.2f} ms"
            )
        model, rules = results["model + rules"], results["rules only"]
        print(
            f"ratio model/rules: p50 {pct(model, 50) / pct(rules, 50):.2f}x, p99 {pct(model, 99) / pct(rules, 99):.2f}x; "
            f"target p99 <= 10 ms: {'met' if pct(model, 99) <= 10 else 'NOT met'}"
        )


if __name__ == "__main__":
    main()
