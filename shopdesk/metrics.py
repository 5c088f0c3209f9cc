"""Process metrics (prometheus-client): what the bot did, for dashboards and alerts.

Counters live in the default registry, so one `/metrics` endpoint exposes every module's numbers.
"""

from prometheus_client import Counter, Histogram

REPLIES_CHECKED = Counter(
    "shopdesk_replies_checked_total", "Model-written replies checked by the groundedness guard"
)
REPLIES_REPAIRED = Counter(
    "shopdesk_replies_repaired_total",
    "Replies with an unsupported fact that passed after one regeneration under a stricter instruction",
)
REPLIES_REPLACED = Counter(
    "shopdesk_replies_replaced_total",
    "Replies still unsupported after regeneration, replaced by a reply composed from the sources",
)

# Seconds buckets from a scripted turn (~10 ms) to a slow CPU model (~30 s).
_TURN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TURN_SECONDS = Histogram(
    "shopdesk_turn_seconds", "Shopper turn: message stored to reply saved", buckets=_TURN_BUCKETS
)
TTFT_SECONDS = Histogram(
    "shopdesk_time_to_first_token_seconds",
    "Shopper turn: message stored to first streamed token",
    buckets=_TURN_BUCKETS,
)
PROMPT_SAVES = Counter("shopdesk_prompt_saves_total", "Prompt versions saved from the admin page", ["source"])
PROMPT_CONFLICTS = Counter(
    "shopdesk_prompt_conflicts_total", "Prompt saves refused because another admin saved first"
)
KB_CHANGES = Counter(
    "shopdesk_kb_changes_total", "Knowledge-base documents changed from the admin page", ["change"]
)


def observe_turn(latency_ms: float, ttft_ms: float | None) -> None:
    TURN_SECONDS.observe(latency_ms / 1000)
    if ttft_ms is not None:
        TTFT_SECONDS.observe(ttft_ms / 1000)
