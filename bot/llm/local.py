"""The embedded backend: SmolLM2-135M-Instruct through transformers on the CPU, no server needed.

One worker thread owns the model and runs a continuous-batching decode loop: every step feeds the
last token of each active request through the model together (left-padded KV cache + attention
mask + explicit position ids), new requests join between steps (their prompt is prefilled alone,
then their cache is merged into the batch), finished or abandoned requests leave at the next step.
Results cross into asyncio through `loop.call_soon_threadsafe` onto one queue per request.

Structured output is enforced with xgrammar: a JSON schema (or, with `tools`, an anyOf of
`{"name": <tool>, "arguments": <its parameters>}` shapes) is compiled once against the tokenizer and
a per-request GrammarMatcher masks the logits at every step, so the text is always valid under the
schema (unless cut short by max_tokens: then `finish_reason` is "length").
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.llm import register
from bot.llm.base import BackendError, Event, Message, TextDelta, ToolCall, ToolSpec, Usage
from bot.llm.prepare import prepare_model
from shopdesk.settings import Settings

log = logging.getLogger(__name__)

LOAD_TIMEOUT_S = 600.0  # first use converts the GGUF file (~20 s here); later loads take ~2 s


# ---------------------------------------------------------------------------------------------
# Prompt rendering (pure functions: no model needed)
# ---------------------------------------------------------------------------------------------


def content_text(content: Any) -> str:
    """OpenAI message content (a string, None, or a list of parts) as plain text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict):
                parts.append(str(part.get("text", "")))
            else:
                parts.append(str(part))
        return "".join(parts)
    return str(content)


def tool_function(tool: ToolSpec) -> dict[str, Any]:
    """The function part of an OpenAI tool spec (also accepts the bare `{"name", "parameters"}` form)."""
    fn = tool.get("function", tool)
    if not isinstance(fn, dict) or not fn.get("name"):
        raise BackendError(f"tool spec without a function name: {tool!r}")
    return fn


def _hoist_defs(schema: dict[str, Any], prefix: str, defs: dict[str, Any]) -> dict[str, Any]:
    """`schema` without its `$defs`/`definitions`, which move into `defs` renamed `<prefix>__<name>`.

    Nesting a schema (a tool's parameters) inside a bigger one breaks its `#/$defs/...` references
    (pydantic writes them for enums and nested models): they must point at the new root.
    """
    local = {**schema.get("definitions", {}), **schema.get("$defs", {})}
    if not local:
        return schema

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if key in ("$defs", "definitions") and node is schema:
                    continue
                if key == "$ref" and isinstance(value, str):
                    for root in ("#/$defs/", "#/definitions/"):
                        if value.startswith(root):
                            value = f"#/$defs/{prefix}__{value[len(root) :]}"
                out[key] = rewrite(value)
            return out
        if isinstance(node, list):
            return [rewrite(item) for item in node]
        return node

    for name, definition in local.items():
        defs[f"{prefix}__{name}"] = rewrite(definition)
    return rewrite(schema)


def tool_call_schema(tools: list[ToolSpec], answer_schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON schema of one call to one of `tools`: an anyOf over `{"name": const, "arguments": params}`.

    With `answer_schema`, a value valid under it is a further choice (the model may answer instead).
    """
    defs: dict[str, Any] = {}
    branches = []
    for i, tool in enumerate(tools):
        fn = tool_function(tool)
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        branches.append(
            {
                "type": "object",
                "properties": {
                    "name": {"const": fn["name"]},
                    "arguments": _hoist_defs(params, f"tool{i}", defs),
                },
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    if answer_schema is not None:
        branches.append(_hoist_defs(answer_schema, "answer", defs))
    schema = branches[0] if len(branches) == 1 else {"anyOf": branches}
    return {**schema, "$defs": defs} if defs else schema


def tools_instructions(tools: list[ToolSpec]) -> str:
    """What the model is told about the tools (the SmolLM2 template has no tools section)."""
    lines = [
        "You can call exactly one of these tools. Reply only with a JSON object "
        '{"name": <tool name>, "arguments": <arguments object>}.',
        "Tools:",
    ]
    for tool in tools:
        fn = tool_function(tool)
        params = json.dumps(fn.get("parameters") or {"type": "object", "properties": {}})
        lines.append(f"- {fn['name']}: {fn.get('description', '').strip()} Arguments schema: {params}")
    return "\n".join(lines)


def normalize_messages(
    messages: list[Message], *, tools: list[ToolSpec] | None = None, tool_role: bool = False
) -> list[dict[str, str]]:
    """OpenAI-format messages as plain `{"role", "content"}` pairs the chat template can render.

    Assistant tool calls become their JSON text (the form the model is constrained to produce);
    `tool` results become user messages naming the tool unless the template knows the role.
    """
    call_names: dict[str, str] = {}
    out: list[dict[str, str]] = []
    for message in messages:
        role = message.get("role", "user")
        content = content_text(message.get("content"))
        if role == "assistant" and message.get("tool_calls"):
            rendered = []
            for call in message["tool_calls"]:
                fn = call.get("function", call)
                args = fn.get("arguments", {})
                if isinstance(args, str):
                    with contextlib.suppress(ValueError):
                        args = json.loads(args)
                call_names[call.get("id", "")] = fn.get("name", "")
                rendered.append(json.dumps({"name": fn.get("name", ""), "arguments": args}))
            content = "\n".join([content, *rendered] if content else rendered)
        elif role == "tool":
            name = message.get("name") or call_names.get(message.get("tool_call_id", ""), "") or "tool"
            if not tool_role:
                role, content = "user", f"[Result of tool {name}]\n{content}"
        elif role not in ("system", "user", "assistant"):
            role = "user"
        out.append({"role": role, "content": content})
    if tools:
        extra = tools_instructions(tools)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{extra}".strip()}
        else:
            out.insert(0, {"role": "system", "content": extra})
    return out


def schema_key(schema: dict[str, Any]) -> str:
    # Not sort_keys: the grammar emits properties in the schema's declared order.
    return json.dumps(schema, separators=(",", ":"))


# ---------------------------------------------------------------------------------------------
# Requests and the batching engine (runs in the worker thread)
# ---------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Request:
    prompt_ids: list[int]
    max_tokens: int
    matcher: Any = None  # xgrammar.GrammarMatcher when the output is constrained
    bitmask: Any = None  # (1, W) int32: allowed next tokens, kept up to date for constrained requests
    buffered: bool = False  # tool calls: text is parsed at the end instead of streamed
    tool_names: frozenset[str] = frozenset()
    # bound to the consumer
    loop: asyncio.AbstractEventLoop | None = None
    queue: asyncio.Queue | None = None
    # state (worker thread)
    cancelled: bool = False
    done: bool = False
    sampled: int = 0
    generated: list[int] = field(default_factory=list)
    last_token: int = 0
    seq_len: int = 0  # real tokens in this request's KV cache
    decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace"))
    submitted_at: float = 0.0
    first_token_at: float = 0.0

    def post(self, item: tuple) -> None:
        """Hand an item to the consumer's event loop (called from the worker thread)."""
        if self.loop is None or self.queue is None:
            return
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the consumer's loop is closed: nobody is listening any more
            self.cancelled = True


class LocalBackend:
    """SmolLM2 embedded through transformers, batched across concurrent chats.

    Loading is lazy (the first `stream()` starts the worker, which prepares and loads the model);
    call `load()` to do it up front. The backend is not bound to one event loop.
    """

    name = "local"

    def __init__(
        self,
        settings: Settings,
        *,
        model_dir: Path | None = None,
        max_batch: int | None = None,
    ) -> None:
        self.settings = settings
        self.model_dir = Path(model_dir) if model_dir else None
        self.max_batch = max(1, int(max_batch or settings.local_max_batch))
        self.default_max_tokens = max(1, int(settings.llm_max_tokens))
        self.temperature = float(settings.llm_temperature)
        self.load_seconds: float | None = None
        # set by the worker once loaded
        self.model: Any = None
        self.tokenizer: Any = None
        self._torch: Any = None
        self._xgr: Any = None
        self._compiler: Any = None
        self._grammars: dict[str, Any] = {}
        self._grammar_lock = threading.Lock()
        self._tok_lock = threading.Lock()
        self._token_bytes: list[bytes] = []
        self._stop_ids: frozenset[int] = frozenset()
        self._banned_ids: list[int] = []
        self._nonstop_bits: Any = None
        self._tool_role = False
        self._max_positions = 8192
        self._generator: Any = None
        self._cache_cls: Any = None
        # worker state
        self._cond = threading.Condition()
        self._pending: deque[_Request] = deque()
        self._active: list[_Request] = []
        self._admitting: list[_Request] = []  # popped from _pending, prefilling, not yet in _active
        self._cache: Any = None
        self._mask: Any = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._load_error: str | None = None
        self._stopping = False
        self.steps = 0  # decode steps run (batched forward passes), for tests and metrics
        self.peak_batch = 0  # the most requests decoded together in one step

    # ---- public API ----------------------------------------------------------------------

    @property
    def active_requests(self) -> int:
        """Requests waiting for or holding a batch slot."""
        with self._cond:
            return len(self._pending) + len(self._admitting) + len(self._active)

    def load(self, timeout: float = LOAD_TIMEOUT_S) -> None:
        """Start the worker and block until the model is loaded (raises BackendError on failure)."""
        self._ensure_started()
        if not self._ready.wait(timeout):
            raise BackendError(f"local model did not load within {timeout:.0f} s")
        if self._load_error:
            raise BackendError(self._load_error)

    def render_prompt(self, messages: list[Message], tools: list[ToolSpec] | None = None) -> list[int]:
        """The prompt token ids for `messages` (chat template with the assistant generation prompt)."""
        self.load()
        normalized = normalize_messages(messages, tools=tools, tool_role=self._tool_role)
        with self._tok_lock:
            try:
                text = self.tokenizer.apply_chat_template(
                    normalized, tokenize=False, add_generation_prompt=True
                )
                return list(self.tokenizer.encode(text, add_special_tokens=False))
            except Exception as exc:
                raise BackendError(f"could not render the chat prompt: {exc}") from exc

    def compiled_grammar(self, schema: dict[str, Any]) -> Any:
        """The xgrammar grammar for a JSON schema (compiled once per distinct schema)."""
        self.load()
        key = schema_key(schema)
        with self._grammar_lock:
            grammar = self._grammars.get(key)
        if grammar is None:
            try:
                grammar = self._compiler.compile_json_schema(key, any_whitespace=False, strict_mode=True)
            except Exception as exc:
                raise BackendError(f"cannot compile the JSON schema into a grammar: {exc}") from exc
            with self._grammar_lock:
                grammar = self._grammars.setdefault(key, grammar)
        return grammar

    async def stream(
        self,
        messages: list[Message],
        *,
        tools: list[ToolSpec] | None = None,
        response_schema: dict[str, Any] | None = None,
        max_tokens: int | None = None,
    ) -> AsyncIterator[Event]:
        self._ensure_started()
        try:
            req = await asyncio.to_thread(self._build_request, messages, tools, response_schema, max_tokens)
        except BackendError:
            raise
        except Exception as exc:  # malformed messages, tool specs, schemas...
            raise BackendError(f"the local model cannot take this request: {exc}") from exc
        req.loop = asyncio.get_running_loop()
        req.queue = asyncio.Queue()
        self._submit(req)
        text_parts: list[str] = []
        try:
            while True:
                kind, *payload = await req.queue.get()
                if kind == "delta":
                    if req.buffered:
                        text_parts.append(payload[0])
                    else:
                        yield TextDelta(payload[0])
                elif kind == "error":
                    raise BackendError(payload[0])
                elif kind == "done":
                    finish_reason, extra = payload
                    if req.buffered:
                        for event in self._tool_events("".join(text_parts), req, finish_reason):
                            if isinstance(event, ToolCall):
                                finish_reason = "tool_calls"  # as OpenAI-compatible servers report it
                            yield event
                    yield Usage(
                        prompt_tokens=len(req.prompt_ids),
                        completion_tokens=req.sampled,
                        finish_reason=finish_reason,
                        extra=extra,
                    )
                    return
        finally:
            if not req.done:
                req.cancelled = True
                with self._cond:
                    self._cond.notify_all()

    def close(self, timeout: float = 30.0) -> None:
        """Stop the worker (requests still running end with a BackendError)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    # ---- request preparation (caller side, in a thread) ------------------------------------

    def _build_request(
        self,
        messages: list[Message],
        tools: list[ToolSpec] | None,
        response_schema: dict[str, Any] | None,
        max_tokens: int | None,
    ) -> _Request:
        self.load()
        if not messages:
            raise BackendError("no messages to answer")
        limit = self.default_max_tokens if max_tokens is None else int(max_tokens)
        if limit < 1:
            raise BackendError(f"max_tokens must be at least 1, got {max_tokens}")
        if tools and messages[-1].get("role") == "tool":
            # The model has the tool result: it answers now (as with tool_choice "auto"). SmolLM2
            # cannot choose between calling and answering, and calling again would loop forever.
            tools = None
        prompt_ids = self.render_prompt(messages, tools)
        if len(prompt_ids) + limit > self._max_positions:
            raise BackendError(
                f"prompt too long for the local model: {len(prompt_ids)} tokens + {limit} to generate "
                f"> {self._max_positions}"
            )
        req = _Request(prompt_ids=prompt_ids, max_tokens=limit, submitted_at=time.perf_counter())
        schema: dict[str, Any] | None = None
        if tools:
            schema = tool_call_schema(tools, response_schema)
            req.buffered = True
            req.tool_names = frozenset(tool_function(t)["name"] for t in tools)
        elif response_schema is not None:
            schema = response_schema
        if schema is not None:
            xgr = self._xgr
            req.matcher = xgr.GrammarMatcher(self.compiled_grammar(schema))
            req.bitmask = xgr.allocate_token_bitmask(1, self.model.config.vocab_size)
            req.matcher.fill_next_token_bitmask(req.bitmask)
        return req

    def _tool_events(self, text: str, req: _Request, finish_reason: str) -> list[Event]:
        if finish_reason == "length":
            raise BackendError(f"the tool call was cut off at max_tokens={req.max_tokens}: {text[:200]!r}")
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise BackendError(f"the model produced no valid tool call: {text[:200]!r}") from exc
        if (
            isinstance(value, dict)
            and set(value) == {"name", "arguments"}
            and value["name"] in req.tool_names
            and isinstance(value["arguments"], dict)
        ):
            return [
                ToolCall(name=value["name"], arguments=value["arguments"], id=f"call_{uuid.uuid4().hex[:16]}")
            ]
        return [TextDelta(text)]  # tools together with a response_schema: the model chose to answer

    # ---- worker --------------------------------------------------------------------------

    def _ensure_started(self) -> None:
        with self._cond:
            if self._stopping:
                raise BackendError("the local backend is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="shopdesk-local-llm", daemon=True)
                self._thread.start()

    def _submit(self, req: _Request) -> None:
        with self._cond:
            if self._stopping:
                raise BackendError("the local backend is closed")
            self._pending.append(req)
            self._cond.notify_all()

    def _load(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        started = time.perf_counter()
        import numpy as np
        import torch
        import xgrammar as xgr
        from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

        model_dir = self.model_dir or prepare_model(self.settings)
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, local_files_only=True)
        model.eval()
        config = model.config
        vocab_size = config.vocab_size

        vocab = tokenizer.get_vocab()
        stop_ids = {vocab[t] for t in ("<|im_end|>", "<|endoftext|>", tokenizer.eos_token) if t in vocab}
        eos = config.eos_token_id
        stop_ids.update([eos] if isinstance(eos, int) else list(eos or []))
        stop_ids = {t for t in stop_ids if 0 <= t < vocab_size}
        if not stop_ids:
            raise BackendError("the local model has no end-of-turn token")
        special = {tid for tid, tok in tokenizer.added_tokens_decoder.items() if tok.special}
        special.update(tokenizer.all_special_ids)

        info = xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=sorted(stop_ids)
        )
        token_bytes = list(info.decoded_vocab)
        for tid in special:
            if 0 <= tid < len(token_bytes):
                token_bytes[tid] = b""  # never shown (as with skip_special_tokens=True)
        token_bytes += [b""] * (vocab_size - len(token_bytes))

        # Every token's bit except the stop tokens': a grammar whose mask allows none of them is done.
        bits = np.full((vocab_size + 31) // 32, 0xFFFFFFFF, dtype=np.uint32)
        for tid in stop_ids:
            bits[tid // 32] &= np.uint32(~(1 << (tid % 32)) & 0xFFFFFFFF)
        nonstop = torch.from_numpy(bits.view(np.int32).copy())

        template = getattr(tokenizer, "chat_template", None) or ""
        self._tool_role = "tool" in template
        self._max_positions = int(getattr(config, "max_position_embeddings", 8192) or 8192)
        self._torch, self._xgr, self._cache_cls = torch, xgr, DynamicCache
        self._compiler = xgr.GrammarCompiler(info, max_threads=2)
        self._token_bytes = token_bytes
        self._stop_ids = frozenset(stop_ids)
        self._banned_ids = sorted(special - stop_ids)
        self._nonstop_bits = nonstop
        self._generator = torch.Generator().manual_seed(int(self.settings.seed))
        self.tokenizer, self.model = tokenizer, model
        with torch.inference_mode():  # warm the kernels (prefill and masked decode) before the first chat
            cache = DynamicCache(config=config)
            model(input_ids=torch.tensor([[min(stop_ids)] * 4]), past_key_values=cache, logits_to_keep=1)
            for step in range(2):
                model(
                    input_ids=torch.tensor([[min(stop_ids)]]),
                    attention_mask=torch.ones((1, 5 + step), dtype=torch.long),
                    position_ids=torch.tensor([[4 + step]]),
                    past_key_values=cache,
                )
        self.load_seconds = time.perf_counter() - started
        log.info("local model loaded from %s in %.1f s", model_dir, self.load_seconds)

    def _run(self) -> None:
        try:
            self._load()
        except Exception as exc:
            self._load_error = f"could not load the local model: {exc}"
            log.exception("local model failed to load")
            self._ready.set()
            self._fail_all(self._load_error)
            return
        self._ready.set()
        with self._torch.inference_mode():
            while True:
                with self._cond:
                    while not self._stopping and not self._pending and not self._active:
                        self._cond.wait()
                    if self._stopping:
                        break
                    if any(r.cancelled for r in self._pending):  # abandoned before they got a slot
                        self._pending = deque(r for r in self._pending if not r.cancelled)
                    room = self.max_batch - len(self._active)
                    admitted = [self._pending.popleft() for _ in range(min(room, len(self._pending)))]
                    self._admitting = list(admitted)
                try:
                    self._drop_finished()
                    for req in admitted:
                        self._admit(req)
                        with self._cond:
                            self._admitting.remove(req)
                    if self._active:
                        self._decode_step()
                except Exception as exc:  # a failed step fails the requests in it, not the worker
                    log.exception("local model step failed")
                    for req in admitted + self._active:
                        self._finish(req, error=f"local model failed: {exc}")
                    with self._cond:
                        self._admitting = []
                    self._reset_batch()
        self._fail_all("the local backend was closed")

    def _fail_all(self, message: str) -> None:
        with self._cond:
            reqs = list(self._pending) + self._active
            self._pending.clear()
        for req in reqs:
            self._finish(req, error=message)
        self._reset_batch()

    def _reset_batch(self) -> None:
        with self._cond:
            self._active = []
        self._cache = self._mask = None

    def _finish(self, req: _Request, *, reason: str = "stop", error: str | None = None) -> None:
        if req.done:
            return
        req.done = True
        if error is not None:
            req.post(("error", error))
            return
        tail = req.decoder.decode(b"", final=True)
        if tail:
            req.post(("delta", tail))
        now = time.perf_counter()
        extra = {
            "model": self.settings.llm_model,
            "time_to_first_token_s": round((req.first_token_at or now) - req.submitted_at, 4),
            "total_s": round(now - req.submitted_at, 4),
        }
        req.post(("done", reason, extra))

    # ---- the decode loop -----------------------------------------------------------------

    def _admit(self, req: _Request) -> None:
        """Prefill one new request alone, take its first token, and merge its cache into the batch."""
        if req.cancelled:
            req.done = True
            return
        torch = self._torch
        cache = self._cache_cls(config=self.model.config)
        out = self.model(
            input_ids=torch.tensor([req.prompt_ids]), past_key_values=cache, use_cache=True, logits_to_keep=1
        )
        req.seq_len = len(req.prompt_ids)
        logits = out.logits[:, -1, :].float()
        token = self._sample(logits, [req])[0]
        if not self._accept(req, token):
            return
        mask = torch.ones((1, req.seq_len), dtype=torch.long)
        if self._cache is None:
            self._cache, self._mask = cache, mask
        else:
            self._cache, self._mask = _merge(self._cache, self._mask, cache, mask, torch)
        with self._cond:
            self._active.append(req)

    def _decode_step(self) -> None:
        torch = self._torch
        reqs = list(self._active)
        self.peak_batch = max(self.peak_batch, len(reqs))
        input_ids = torch.tensor([[r.last_token] for r in reqs], dtype=torch.long)
        positions = torch.tensor([[r.seq_len] for r in reqs], dtype=torch.long)
        self._mask = torch.cat([self._mask, torch.ones((len(reqs), 1), dtype=torch.long)], dim=1)
        out = self.model(
            input_ids=input_ids,
            attention_mask=self._mask,
            position_ids=positions,
            past_key_values=self._cache,
            use_cache=True,
        )
        self.steps += 1
        logits = out.logits[:, -1, :].float()
        tokens = self._sample(logits, reqs)
        for req, token in zip(reqs, tokens, strict=True):
            req.seq_len += 1
            self._accept(req, token)
        self._drop_finished()

    def _sample(self, logits: Any, reqs: list[_Request]) -> list[int]:
        torch = self._torch
        if self._banned_ids:
            logits[:, self._banned_ids] = float("-inf")
        constrained = [i for i, r in enumerate(reqs) if r.matcher is not None]
        if constrained:
            bitmask = torch.cat([reqs[i].bitmask for i in constrained], dim=0)
            if len(constrained) == len(reqs):
                self._xgr.apply_token_bitmask_inplace(logits, bitmask)
            else:
                full = self._xgr.allocate_token_bitmask(len(reqs), logits.shape[-1])
                full[constrained] = bitmask
                self._xgr.apply_token_bitmask_inplace(logits, full, indices=constrained)
        if self.temperature <= 0:
            return logits.argmax(dim=-1).tolist()
        probs = torch.softmax(logits / self.temperature, dim=-1)
        return torch.multinomial(probs, 1, generator=self._generator).squeeze(-1).tolist()

    def _accept(self, req: _Request, token: int) -> bool:
        """Record a sampled token; False when the request is finished."""
        if req.cancelled:
            req.done = True
            return False
        req.sampled += 1
        if req.first_token_at == 0.0:
            req.first_token_at = time.perf_counter()
        if req.matcher is not None and not req.matcher.accept_token(token):
            self._finish(req, error=f"the grammar rejected token {token} (output so far {req.generated!r})")
            return False
        if token in self._stop_ids:
            self._finish(req, reason="stop")
            return False
        req.generated.append(token)
        req.last_token = token
        text = req.decoder.decode(self._token_bytes[token])
        if text:
            req.post(("delta", text))
        if req.matcher is not None:
            if req.matcher.is_terminated():
                self._finish(req, reason="stop")
                return False
            req.matcher.fill_next_token_bitmask(req.bitmask)
            if not bool((req.bitmask[0] & self._nonstop_bits).any()):  # only the end is left
                self._finish(req, reason="stop")
                return False
        if len(req.generated) >= req.max_tokens:
            self._finish(req, reason="length")
            return False
        return True

    def _drop_finished(self) -> None:
        """Remove finished or abandoned requests from the batch (and their rows from the cache)."""
        for req in self._active:
            if req.cancelled and not req.done:
                req.done = True
        keep = [i for i, r in enumerate(self._active) if not r.done]
        if len(keep) == len(self._active):
            return
        with self._cond:
            self._active = [self._active[i] for i in keep]
        if not keep:
            self._cache = self._mask = None
            return
        torch = self._torch
        index = torch.tensor(keep, dtype=torch.long)
        mask = self._mask.index_select(0, index)
        first = int((mask.sum(dim=0) > 0).nonzero()[0])  # columns that are padding for every row left
        self._mask = mask[:, first:]
        for layer in self._cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, first:]
            layer.values = layer.values.index_select(0, index)[:, :, first:]


def _merge(cache: Any, mask: Any, new_cache: Any, new_mask: Any, torch: Any) -> tuple[Any, Any]:
    """Stack two KV caches along the batch, left-padding the shorter one."""
    length = max(mask.shape[1], new_mask.shape[1])

    def pad(t: Any, n: int) -> Any:  # (B, H, T, D): pad T on the left
        return t if n == 0 else torch.nn.functional.pad(t, (0, 0, n, 0))

    pad_old, pad_new = length - mask.shape[1], length - new_mask.shape[1]
    for layer, new_layer in zip(cache.layers, new_cache.layers, strict=True):
        layer.keys = torch.cat([pad(layer.keys, pad_old), pad(new_layer.keys, pad_new)], dim=0)
        layer.values = torch.cat([pad(layer.values, pad_old), pad(new_layer.values, pad_new)], dim=0)
    merged_mask = torch.cat(
        [
            torch.nn.functional.pad(mask, (pad_old, 0)),
            torch.nn.functional.pad(new_mask, (pad_new, 0)),
        ],
        dim=0,
    )
    return cache, merged_mask


@register("local")
def _factory(settings: Settings) -> LocalBackend:
    return LocalBackend(settings)


__all__ = [
    "LocalBackend",
    "content_text",
    "normalize_messages",
    "tool_call_schema",
    "tools_instructions",
]
