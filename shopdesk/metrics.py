"""Process metrics (prometheus-client): what the bot did, for dashboards and alerts.

Counters live in the default registry, so one `/metrics` endpoint exposes every module's numbers.
"""

from prometheus_client import Counter

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
