"""Prompt A/B tests: which version of a prompt a conversation gets, decided once and kept.

The arm is a hash of (test id, conversation id) compared with the test's share for B, so it does not
depend on the order conversations arrive in and is the same in every server process; it is stored
(PromptAssignment) so the report knows who saw what, and so a changed share never moves a running
conversation. At most one test runs per prompt.
"""

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from bot import analytics
from commerce.models import PromptABTest, PromptAssignment, PromptVersion, utcnow
from shopdesk import stats

if TYPE_CHECKING:
    from bot.prompts import PromptStore


@dataclass(frozen=True)
class RunningTest:
    id: int
    prompt_name: str
    version_a: int
    version_b: int
    share_b: float


def arm_for(test_id: int, conversation_id: str, share_b: float) -> str:
    """'A' or 'B' from a hash: uniform in [0, 1), so a share of 0.3 sends ~30 % of conversations to B."""
    digest = hashlib.sha256(f"{test_id}:{conversation_id}".encode()).digest()
    return "B" if int.from_bytes(digest[:8], "big") / 2**64 < share_b else "A"


def running_tests(engine: Engine) -> dict[str, RunningTest]:
    with Session(engine) as db:
        rows = db.exec(select(PromptABTest).where(PromptABTest.status == "running")).all()
    return {
        t.prompt_name: RunningTest(t.id, t.prompt_name, t.version_a, t.version_b, t.share_b)  # type: ignore[arg-type]
        for t in rows
    }


_assigned: OrderedDict[tuple[int, str], int] = OrderedDict()  # a turn renders 2-3 prompts: ask the DB once
_assigned_lock = threading.Lock()
_ASSIGNED_MAX = 10_000


def assign(engine: Engine, test: RunningTest, conversation_id: str) -> int:
    """The version this conversation renders in this test (stored on first use)."""
    key = (test.id, conversation_id)
    with _assigned_lock:
        if key in _assigned:
            return _assigned[key]
    with Session(engine) as db:
        row = db.get(PromptAssignment, (test.id, conversation_id))
        if row is None:
            arm = arm_for(test.id, conversation_id, test.share_b)
            row = PromptAssignment(
                test_id=test.id,
                conversation_id=conversation_id,
                arm=arm,
                version=test.version_b if arm == "B" else test.version_a,
            )
            db.add(row)
            try:
                db.commit()
            except IntegrityError:  # another process assigned it first: theirs stands (same hash anyway)
                db.rollback()
                row = db.get(PromptAssignment, (test.id, conversation_id))
                assert row is not None
        version = row.version
    with _assigned_lock:
        _assigned[key] = version
        if len(_assigned) > _ASSIGNED_MAX:
            _assigned.popitem(last=False)
    return version


def version_text(engine: Engine, name: str, version: int) -> str | None:
    with Session(engine) as db:
        return version_text_in(db, name, version)


class ABTestError(ValueError):
    pass


def start_test(
    db: Session, prompt_name: str, version_a: int, version_b: int, share_b: float, created_by: int | None
) -> PromptABTest:
    if not 0.0 < share_b < 1.0:
        raise ABTestError("the share for B must be between 0 and 1 (e.g. 0.5)")
    if version_a == version_b:
        raise ABTestError("pick two different versions")
    known = set(
        db.exec(
            select(PromptVersion.version).where(
                PromptVersion.name == prompt_name, col(PromptVersion.version).in_([version_a, version_b])
            )
        ).all()
    )
    missing = sorted({version_a, version_b} - known)
    if missing:
        raise ABTestError(f"prompt {prompt_name!r} has no version {missing}")
    running = db.exec(
        select(PromptABTest).where(PromptABTest.prompt_name == prompt_name, PromptABTest.status == "running")
    ).first()
    if running is not None:
        raise ABTestError(f"test {running.id} already runs on {prompt_name!r}: stop it first")
    test = PromptABTest(
        prompt_name=prompt_name,
        version_a=version_a,
        version_b=version_b,
        share_b=share_b,
        created_by=created_by,
    )
    db.add(test)
    db.commit()
    db.refresh(test)
    return test


def report(db: Session, test: PromptABTest) -> dict[str, Any]:
    """Both arms' numbers with 95 % intervals, and B minus A (Newcombe for rates, Welch for means)."""
    rows = db.exec(select(PromptAssignment).where(PromptAssignment.test_id == test.id)).all()
    by_arm: dict[str, list[str]] = {"A": [], "B": []}
    for r in rows:
        by_arm[r.arm].append(r.conversation_id)
    outcomes = {
        arm: analytics.conversation_outcomes(db, ids=ids) if ids else [] for arm, ids in by_arm.items()
    }
    metrics = {arm: analytics.arm_metrics(o) for arm, o in outcomes.items()}
    ratings = {
        arm: [float(o.rating) for o in outs if o.engaged and o.rating is not None]
        for arm, outs in outcomes.items()
    }
    diff: dict[str, Any] = {}
    for key, value in metrics["A"].items():
        if key == "conversations":
            continue
        if key == "satisfaction":
            diff[key] = stats.mean_difference(ratings["A"], ratings["B"]).to_dict()
        else:
            diff[key] = stats.rate_difference(value, metrics["B"][key]).to_dict()
    return {
        "test": test.model_dump(mode="json"),
        "arms": {
            arm: {
                "version": test.version_a if arm == "A" else test.version_b,
                "assigned": len(by_arm[arm]),
                **{k: v.to_dict() if isinstance(v, stats.Estimate) else v for k, v in metrics[arm].items()},
            }
            for arm in ("A", "B")
        },
        "b_minus_a": diff,
        "higher_is_better": {
            "resolution_without_handoff": True,
            "handoff_rate": False,
            "thumbs_up_rate": True,
            "satisfaction": True,
            "grounding_fix_rate": False,
        },
    }


def stop_test(
    db: Session, store: "PromptStore", test: PromptABTest, promote: str | None, author_id: int | None
) -> PromptABTest:
    """End the test; with `promote` ('A' or 'B') that arm's version becomes the prompt (a new version
    unless it already is the newest text)."""
    from bot import prompt_versions

    if test.status != "running":
        raise ABTestError(f"test {test.id} is already stopped")
    if promote not in (None, "A", "B"):
        raise ABTestError("promote 'A', 'B' or nothing")
    if promote is not None:
        winner = test.version_a if promote == "A" else test.version_b
        text = version_text_in(db, test.prompt_name, winner)
        latest = prompt_versions.current(db, store, test.prompt_name)
        if text is not None and text != latest.text:
            prompt_versions.save(
                db, store, test.prompt_name, text, latest.version, author_id, "promote",
                f"winner of A/B test {test.id} (v{winner})",
            )  # fmt: skip
        test.winner = winner
    test.status = "stopped"
    test.stopped_at = utcnow()
    db.add(test)
    db.commit()
    db.refresh(test)
    store.tests_changed()
    return test


def version_text_in(db: Session, name: str, version: int) -> str | None:
    return db.exec(
        select(PromptVersion.text).where(PromptVersion.name == name, PromptVersion.version == version)
    ).first()
