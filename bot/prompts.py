"""Prompts live in prompts/ as files admins edit; the bot re-reads a file when it changes on disk."""

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml

from shopdesk.settings import ROOT

PROMPTS_DIR = ROOT / "prompts"
_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)


class PromptError(ValueError):
    pass


@dataclass(frozen=True)
class Prompt:
    name: str
    description: str
    variables: tuple[str, ...]
    max_length: int
    template: jinja2.Template
    source: str

    def render(self, **values: Any) -> str:
        missing = [v for v in self.variables if v not in values]
        if missing:
            raise PromptError(f"prompt {self.name!r} needs {missing}")
        return self.template.render(**values).strip()


def parse_prompt(text: str, fallback_name: str = "") -> Prompt:
    """Split the front matter (between --- lines) from the Jinja body and compile it."""
    header: dict[str, Any] = {}
    body = text
    if text.startswith("---"):
        _, raw_header, body = text.split("---", 2)
        header = yaml.safe_load(raw_header) or {}
    try:
        template = _ENV.from_string(body.strip())
    except jinja2.TemplateSyntaxError as exc:
        raise PromptError(f"prompt {fallback_name!r} does not compile: {exc}") from exc
    return Prompt(
        name=header.get("name", fallback_name),
        description=header.get("description", ""),
        variables=tuple(header.get("variables", [])),
        max_length=int(header.get("max_length", 8000)),
        template=template,
        source=body.strip(),
    )


class PromptStore:
    def __init__(self, directory: Path = PROMPTS_DIR):
        self.directory = directory
        self._cache: dict[str, tuple[float, Prompt]] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Prompt:
        path = self.directory / f"{name}.md"
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError as exc:
            raise PromptError(f"no prompt file {path}") from exc
        with self._lock:
            cached = self._cache.get(name)
            if cached and cached[0] == mtime:
                return cached[1]
            prompt = parse_prompt(path.read_text(encoding="utf-8"), name)
            self._cache[name] = (mtime, prompt)
            return prompt

    def render(self, name: str, **values: Any) -> str:
        return self.get(name).render(**values)
