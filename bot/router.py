"""An embedding intent router for small models.

A 135M model under a grammar mostly picks the first branch it is offered. The router embeds the
shopper's message and each action's example utterances (all-MiniLM-L6-v2), and orders the decision's
branches by similarity, keeping only those close to the best: the model then chooses among the likely
actions and fills in their arguments. It never adds an action the session may not take, and never
fills an argument: those stay with the tool rules and the shopper's own words.
"""

import threading
from collections.abc import Iterable
from typing import Any

import numpy as np

SMALL_TALK = ("hi", "hello there", "thanks a lot", "good morning", "ok bye", "who are you?", "你好", "谢谢")
# Requests outside a store's service: declined politely by a fixed reply, never answered by the model.
OFF_TOPIC = (
    "write me a poem about the sea",
    "what's the weather tomorrow?",
    "help me with my math homework",
    "tell me a joke",
    "who won the football game last night?",
    "what is the capital of France?",
    "write python code to sort a list",
    "what do you think about the election?",
    "translate this sentence into German",
    "给我写一首诗",
    "今天天气怎么样",
)


class IntentRouter:
    def __init__(self, embedder: Any, utterances: dict[str, Iterable[str]], margin: float = 0.12):
        self.embedder = embedder
        self.margin = margin
        self._names: list[str] = []
        texts: list[str] = []
        for action, examples in utterances.items():
            for example in examples:
                self._names.append(action)
                texts.append(example)
        self._vectors = np.asarray(embedder.encode(texts), dtype=np.float32)
        self._lock = threading.Lock()

    def scores(self, text: str) -> dict[str, float]:
        """Best cosine similarity of `text` to each action's examples."""
        query = np.asarray(self.embedder.encode_query(text[:1000]), dtype=np.float32)
        sims = self._vectors @ query
        best: dict[str, float] = {}
        for name, sim in zip(self._names, sims, strict=True):
            best[name] = max(best.get(name, -1.0), float(sim))
        return best

    def rank(self, text: str, candidates: list[str]) -> list[str]:
        """The candidates close to the best match, best first (all of them when none has examples)."""
        scores = self.scores(text)
        known = [c for c in candidates if c in scores]
        if not known:
            return candidates
        ordered = sorted(known, key=lambda c: scores[c], reverse=True)
        top = scores[ordered[0]]
        return [c for c in ordered if scores[c] >= top - self.margin]


def default_router(tools: Any = None) -> IntentRouter:
    """The router over the bot's tools' example utterances, small talk and off-topic requests."""
    from bot.tools import default_tools
    from retrieval.embed import get_embedder

    registry = tools or default_tools()
    utterances = {t.name: t.utterances for t in registry.all()} | {"answer": SMALL_TALK, "decline": OFF_TOPIC}
    return IntentRouter(get_embedder(), utterances)
