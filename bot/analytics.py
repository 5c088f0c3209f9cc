"""What the conversations say about the bot: read-only numbers over the recorded turns.

One pass builds an `Outcome` per conversation (handed off? resolved? replies checked / repaired /
replaced, thumbs, rating, time to first token); the dashboard and the A/B report both aggregate those,
so a number means the same thing in both. Definitions (docs/admin.md):

- a conversation counts once the shopper wrote at least one message;
- handed off: it ever left the bot for a person (a HandoffEvent bot -> waiting/agent, or a handoff
  reason / state on the conversation);
- resolved without handoff: not handed off, the bot replied, and its last reply was not an
  unanswered turn (a clarification ask, the generic fallback, an error, a failed tool);
- unanswered question: a shopper message whose turn ended that way, grouped by normalised text.
"""

import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from bot.agent import ASK_TEXT, SAFE_FALLBACK, UNAVAILABLE_TEXT
from commerce.models import (
    Conversation,
    ConversationRating,
    HandoffEvent,
    Message,
    MessageFeedback,
    SuggestedReply,
    ToolCallRecord,
)
from shopdesk.stats import Estimate, mean_t, percentile, wilson

HUMAN_STATES = ("waiting", "agent")
_FALLBACK_TEXTS = (SAFE_FALLBACK, UNAVAILABLE_TEXT, ASK_TEXT["clarification"])


@dataclass
class Outcome:
    conversation_id: str
    day: date
    user_messages: int = 0
    replies: int = 0
    handed_off: bool = False
    handoff_trigger: str | None = None
    handoff_reason: str | None = None
    last_reply_unanswered: bool = False
    checked: int = 0
    repaired: int = 0
    replaced: int = 0
    thumbs_up: int = 0
    thumbs_down: int = 0
    rating: int | None = None
    ttft_ms: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)

    @property
    def engaged(self) -> bool:
        return self.user_messages > 0

    @property
    def resolved(self) -> bool:
        return self.engaged and not self.handed_off and self.replies > 0 and not self.last_reply_unanswered


def unanswered(meta: dict[str, Any], text: str) -> bool:
    """Did this bot reply fail to help? (read from the turn's recorded steps)."""
    if meta.get("failed"):
        return True
    for step in meta.get("steps") or []:
        kind = step.get("type")
        if kind == "error":
            return True
        if kind == "decision" and step.get("valid"):
            d = step.get("decision") or {}
            if d.get("action") == "ask" and (
                d.get("need") == "clarification" or d.get("need") not in ASK_TEXT
            ):
                return True
        if kind == "tool" and step.get("outcome") in ("invalid", "error"):
            return True
    return any(t in text for t in _FALLBACK_TEXTS)


def grounding_counts(meta: dict[str, Any]) -> tuple[int, int, int]:
    """(checked, repaired, replaced) for one reply: its grounding steps."""
    checked = repaired = replaced = 0
    for step in meta.get("steps") or []:
        if step.get("type") != "grounding":
            continue
        if step.get("attempt") == "draft":
            checked = 1
        elif step.get("attempt") == "regenerated":
            if step.get("ok"):
                repaired = 1
            else:
                replaced = 1
    return checked, repaired, replaced


def _window(since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    until = until or datetime.now(UTC)
    return since or until - timedelta(days=30), until


def _conversations(
    db: Session, since: datetime | None, until: datetime | None, ids: list[str] | None
) -> list[Conversation]:
    q = select(Conversation)
    if ids is not None:
        q = q.where(col(Conversation.id).in_(ids))
    else:
        lo, hi = _window(since, until)
        q = q.where(Conversation.created_at >= lo, Conversation.created_at < hi)
    return list(db.exec(q).all())


def conversation_outcomes(
    db: Session,
    since: datetime | None = None,
    until: datetime | None = None,
    ids: list[str] | None = None,
) -> list[Outcome]:
    """One Outcome per conversation created in [since, until) (default: the last 30 days), or in `ids`."""
    convs = _conversations(db, since, until, ids)
    out = {c.id: Outcome(c.id, c.created_at.date()) for c in convs}
    if not out:
        return []
    keys = list(out)
    for c in convs:
        o = out[c.id]
        if c.state in HUMAN_STATES or c.handoff_reason:
            o.handed_off = True
            o.handoff_reason = c.handoff_reason
    for chunk in _chunks(keys):
        events = db.exec(
            select(HandoffEvent)
            .where(col(HandoffEvent.conversation_id).in_(chunk), col(HandoffEvent.to_state).in_(HUMAN_STATES))
            .order_by(col(HandoffEvent.id))
        ).all()
        for e in events:
            o = out[e.conversation_id]
            if o.handoff_trigger is None:
                o.handed_off = True
                o.handoff_trigger = e.trigger
                o.handoff_reason = e.reason or o.handoff_reason
        rows = db.exec(
            select(Message.conversation_id, Message.role, Message.content, Message.meta)
            .where(col(Message.conversation_id).in_(chunk))
            .order_by(col(Message.id))
        ).all()
        for conv_id, role, content, meta in rows:
            o = out[conv_id]
            if role == "user":
                o.user_messages += 1
            elif role == "assistant" and not (meta or {}).get("handoff"):
                meta = meta or {}
                o.replies += 1
                o.last_reply_unanswered = unanswered(meta, content)
                checked, repaired, replaced = grounding_counts(meta)
                o.checked += checked
                o.repaired += repaired
                o.replaced += replaced
                if meta.get("ttft_ms") is not None:
                    o.ttft_ms.append(float(meta["ttft_ms"]))
                if meta.get("latency_ms") is not None:
                    o.latency_ms.append(float(meta["latency_ms"]))
        for conv_id, vote in db.exec(
            select(MessageFeedback.conversation_id, MessageFeedback.vote).where(
                col(MessageFeedback.conversation_id).in_(chunk)
            )
        ).all():
            if vote == "up":
                out[conv_id].thumbs_up += 1
            elif vote == "down":
                out[conv_id].thumbs_down += 1
        for conv_id, rating in db.exec(
            select(ConversationRating.conversation_id, ConversationRating.rating).where(
                col(ConversationRating.conversation_id).in_(chunk)
            )
        ).all():
            out[conv_id].rating = rating
    for o in out.values():
        if o.handed_off and o.handoff_trigger is None:
            o.handoff_trigger = "unrecorded"
    return list(out.values())


def _chunks(keys: list[str], size: int = 500) -> list[list[str]]:
    return [keys[i : i + size] for i in range(0, len(keys), size)]


def arm_metrics(outcomes: list[Outcome]) -> dict[str, Any]:
    """The A/B report's per-arm numbers (also the dashboard's headline), each with its interval."""
    engaged = [o for o in outcomes if o.engaged]
    n = len(engaged)
    up = sum(o.thumbs_up for o in engaged)
    votes = up + sum(o.thumbs_down for o in engaged)
    ratings = [float(o.rating) for o in engaged if o.rating is not None]
    checked = sum(o.checked for o in engaged)
    fixed = sum(o.repaired + o.replaced for o in engaged)
    return {
        "conversations": n,
        "resolution_without_handoff": wilson(sum(o.resolved for o in engaged), n),
        "handoff_rate": wilson(sum(o.handed_off for o in engaged), n),
        "thumbs_up_rate": wilson(up, votes),
        "satisfaction": mean_t(ratings),
        "grounding_fix_rate": wilson(fixed, checked),
    }


def _json(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v.to_dict() if isinstance(v, Estimate) else v for k, v in metrics.items()}


def normalise_question(text: str) -> str:
    """Group spellings of one question: case, width, punctuation, order ids and numbers folded."""
    t = unicodedata.normalize("NFKC", text).lower()
    t = re.sub(r"#?\bw\d{5,}\b", "#order", t)
    t = re.sub(r"\d+", "0", t)
    t = re.sub(r"[^\w\s#]", " ", t)
    return " ".join(t.split())[:200]


def unanswered_questions(
    db: Session, since: datetime | None = None, until: datetime | None = None, limit: int = 20
) -> list[dict[str, Any]]:
    """The shopper messages the bot most often could not help with, most frequent first."""
    lo, hi = _window(since, until)
    rows = db.exec(
        select(Message.conversation_id, Message.role, Message.content, Message.meta, Message.created_at)
        .join(Conversation, col(Conversation.id) == col(Message.conversation_id))
        .where(Conversation.created_at >= lo, Conversation.created_at < hi)
        .where(col(Message.role).in_(("user", "assistant")))
        .order_by(col(Message.conversation_id), col(Message.id))
    ).all()
    last_user: dict[str, tuple[str, datetime]] = {}
    groups: dict[str, list[tuple[str, datetime]]] = defaultdict(list)
    for conv_id, role, content, meta, created in rows:
        if role == "user":
            last_user[conv_id] = (content, created)
        elif conv_id in last_user and unanswered(meta or {}, content):
            question, at = last_user.pop(conv_id)
            key = normalise_question(question)
            if key:
                groups[key].append((question, at))
    ranked = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:limit]
    return [
        {
            "question": key,
            "count": len(items),
            "example": items[-1][0][:300],
            "last_at": max(at for _, at in items).isoformat(),
        }
        for key, items in ranked
    ]


def dashboard(db: Session, since: datetime | None = None, until: datetime | None = None) -> dict[str, Any]:
    """Everything the analytics page shows, for conversations created in [since, until)."""
    lo, hi = _window(since, until)
    outcomes = [o for o in conversation_outcomes(db, lo, hi) if o.engaged]
    ids = [o.conversation_id for o in outcomes]
    per_day: dict[date, Counter[str]] = defaultdict(Counter)
    for o in outcomes:
        per_day[o.day]["conversations"] += 1
        per_day[o.day]["handed_off"] += o.handed_off
        per_day[o.day]["resolved"] += o.resolved
    reasons = Counter((o.handoff_trigger, o.handoff_reason) for o in outcomes if o.handed_off)
    ttft = [t for o in outcomes for t in o.ttft_ms]
    latency = [t for o in outcomes for t in o.latency_ms]
    ratings = Counter(o.rating for o in outcomes if o.rating is not None)
    headline = arm_metrics(outcomes)
    checked = sum(o.checked for o in outcomes)
    repaired = sum(o.repaired for o in outcomes)
    replaced = sum(o.replaced for o in outcomes)
    up = sum(o.thumbs_up for o in outcomes)
    down = sum(o.thumbs_down for o in outcomes)
    return {
        "since": lo.isoformat(),
        "until": hi.isoformat(),
        **_json(headline),
        "per_day": [
            {"day": d.isoformat(), **{k: c[k] for k in ("conversations", "handed_off", "resolved")}}
            for d, c in sorted(per_day.items())
        ],
        "handoffs": sum(o.handed_off for o in outcomes),
        "handoff_reasons": [{"trigger": t, "reason": r, "count": n} for (t, r), n in reasons.most_common()],
        "ratings": {str(k): ratings.get(k, 0) for k in range(1, 6)},
        "thumbs": {"up": up, "down": down},
        "ttft_ms": _latency(ttft),
        "latency_ms": _latency(latency),
        "grounding": {
            "checked": checked,
            "repaired": repaired,
            "replaced": replaced,
            "repair_rate": wilson(repaired, checked).to_dict(),
            "replace_rate": wilson(replaced, checked).to_dict(),
        },
        "tools": tool_use(db, ids),
        "suggested_replies": suggested_replies(db, ids),
        "unanswered": unanswered_questions(db, lo, hi),
    }


def _latency(values: list[float]) -> dict[str, Any]:
    median, p95 = percentile(values, 0.5), percentile(values, 0.95)
    return {
        "n": len(values),
        "median": round(median, 1) if median is not None else None,
        "p95": round(p95, 1) if p95 is not None else None,
    }


def tool_use(db: Session, ids: list[str]) -> list[dict[str, Any]]:
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for chunk in _chunks(ids):
        for tool, outcome in db.exec(
            select(ToolCallRecord.tool, ToolCallRecord.outcome).where(
                col(ToolCallRecord.conversation_id).in_(chunk)
            )
        ).all():
            counts[tool][outcome] += 1
    return sorted(
        ({"tool": t, "calls": sum(c.values()), "outcomes": dict(c)} for t, c in counts.items()),
        key=lambda r: (-r["calls"], r["tool"]),
    )


def suggested_replies(db: Session, ids: list[str]) -> dict[str, Any]:
    status: Counter[str] = Counter()
    for chunk in _chunks(ids):
        status.update(
            db.exec(select(SuggestedReply.status).where(col(SuggestedReply.conversation_id).in_(chunk))).all()
        )
    total = sum(status.values())
    return {
        "offered": total,
        "accepted": status["accepted"],
        "edited": status["edited"],
        "ignored": status["ignored"],
        "acceptance_rate": wilson(status["accepted"], total).to_dict(),
        "edit_rate": wilson(status["edited"], total).to_dict(),
    }


CSV_COLUMNS = (
    "conversation_id",
    "day",
    "user_messages",
    "replies",
    "handed_off",
    "handoff_trigger",
    "handoff_reason",
    "resolved",
    "checked",
    "repaired",
    "replaced",
    "thumbs_up",
    "thumbs_down",
    "rating",
    "ttft_ms_median",
)


def csv_rows(outcomes: list[Outcome]) -> list[list[Any]]:
    """One row per conversation: the export an analyst can pivot any way they like."""
    return [
        [
            o.conversation_id,
            o.day.isoformat(),
            o.user_messages,
            o.replies,
            int(o.handed_off),
            o.handoff_trigger or "",
            o.handoff_reason or "",
            int(o.resolved),
            o.checked,
            o.repaired,
            o.replaced,
            o.thumbs_up,
            o.thumbs_down,
            "" if o.rating is None else o.rating,
            "" if not o.ttft_ms else round(percentile(o.ttft_ms, 0.5) or 0.0, 1),
        ]
        for o in outcomes
        if o.engaged
    ]
