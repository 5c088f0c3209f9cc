"""Prompts live in prompts/ as files admins edit; the bot re-reads a file when it changes on disk.

A file is a YAML front matter (name, description, the variables the code passes, max_length, and
`sample` values for previews) between `---` lines, then a Jinja2 body. `validate_prompt` is what
the admin page runs before a save: a prompt that would fail at run time is refused with a message
saying why. `PromptStore.render(name, conversation_id=...)` renders the version an A/B test assigned
to that conversation (bot/abtest.py), else the file.
"""

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import jinja2.nodes
import jinja2.sandbox
import yaml
from sqlalchemy.engine import Engine

from shopdesk.settings import ROOT

PROMPTS_DIR = ROOT / "prompts"
HARD_MAX_LENGTH = 20_000  # no header may allow a longer body: every turn pays for the prompt
# Prompts are edited through the admin page: a template is data, not code. The sandbox refuses
# attribute walks such as `x.__class__.__mro__`, and without globals (lipsum, cycler, range...) a body
# can reach nothing but the variables the bot passes.
_ENV = jinja2.sandbox.ImmutableSandboxedEnvironment(
    undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False
)
_ENV.globals.clear()
_HEADER_KEYS = {"name", "description", "variables", "max_length", "sample"}


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
    sample: dict[str, Any] = field(default_factory=dict)

    def render(self, **values: Any) -> str:
        missing = [v for v in self.variables if v not in values]
        if missing:
            raise PromptError(f"prompt {self.name!r} needs {missing}")
        return self.template.render(**values).strip()

    def render_sample(self) -> str:
        """The prompt with its header's sample values: what the admin page previews."""
        return self.render(**self.sample)


def split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    """(header, body); PromptError when the header is not a YAML mapping between `---` lines."""
    if not text.startswith("---"):
        return {}, text
    parts = text.split("---", 2)
    if len(parts) < 3:
        raise PromptError("the header starts with --- but has no closing --- line")
    try:
        header = yaml.safe_load(parts[1]) or {}
    except yaml.YAMLError as exc:
        raise PromptError(f"the header is not valid YAML: {exc}") from exc
    if not isinstance(header, dict):
        raise PromptError("the header must be a YAML mapping (key: value lines)")
    return header, parts[2]


def parse_prompt(text: str, fallback_name: str = "") -> Prompt:
    """Split the front matter (between --- lines) from the Jinja body and compile it."""
    header, body = split_front_matter(text)
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
        sample=dict(header.get("sample") or {}),
    )


@dataclass
class Validation:
    ok: bool
    errors: list[str]
    used: list[str]  # the variables the body references
    rendered_sample: str | None = None


def _private_names(tree: jinja2.nodes.Template) -> list[str]:
    """Attributes and keys starting with "_" (`x.__class__`, `x['_y']`): the sandbox refuses them at
    render time; the editor should hear it when saving, sample values or not."""
    names = {node.attr for node in tree.find_all(jinja2.nodes.Getattr) if node.attr.startswith("_")}
    for node in tree.find_all(jinja2.nodes.Getitem):
        if isinstance(node.arg, jinja2.nodes.Const) and str(node.arg.value).startswith("_"):
            names.add(str(node.arg.value))
    return sorted(names)


def validate_prompt(text: str, name: str, provided: tuple[str, ...] | None = None) -> Validation:
    """Everything that would make the bot fail or misbehave at run time, as messages for a person.

    `provided` is the variables the code passes to this prompt (the current file's header): the header
    of an edit must declare exactly those, every one must be used, and nothing else may be referenced.
    """
    errors: list[str] = []
    try:
        header, body = split_front_matter(text)
    except PromptError as exc:
        return Validation(False, [str(exc)], [])
    if not text.startswith("---"):
        errors.append(
            "the file must start with a header between --- lines (name, description, variables, max_length)"
        )
    unknown_keys = sorted(set(header) - _HEADER_KEYS)
    if unknown_keys:
        errors.append(f"unknown header key(s) {unknown_keys}; allowed: {sorted(_HEADER_KEYS)}")
    if header.get("name", name) != name:
        errors.append(f"the header's name is {header.get('name')!r}, but this prompt is {name!r}")
    declared = header.get("variables", [])
    if not isinstance(declared, list) or not all(isinstance(v, str) for v in declared):
        errors.append("variables must be a list of names, e.g. [facts, store_name]")
        declared = []
    if provided is not None and sorted(declared) != sorted(provided):
        errors.append(
            f"the variables are fixed by the code: declare exactly {sorted(provided)} (not {sorted(declared)})"
        )
    expected = set(provided if provided is not None else declared)
    max_length = header.get("max_length", 8000)
    if not isinstance(max_length, int) or not 1 <= max_length <= HARD_MAX_LENGTH:
        errors.append(f"max_length must be a whole number from 1 to {HARD_MAX_LENGTH}")
        max_length = HARD_MAX_LENGTH
    sample = header.get("sample") or {}
    if not isinstance(sample, dict):
        errors.append("sample must be a mapping of variable: value")
        sample = {}
    body = body.strip()
    if not body:
        errors.append("the prompt is empty")
    if len(body) > max_length:
        errors.append(f"the prompt is {len(body)} characters long; the limit is {max_length}")
    try:
        tree = _ENV.parse(body)
    except jinja2.TemplateSyntaxError as exc:
        errors.append(f"the template does not compile: {exc.message} (line {exc.lineno} of the body)")
        return Validation(False, errors, [])
    used = sorted(jinja2.meta.find_undeclared_variables(tree))
    errors += [
        f"{{{{ ...{name} }}}}: names starting with _ are internals, not prompt text"
        for name in _private_names(tree)
    ]
    for var in sorted(expected - set(used)):
        errors.append(f"the required variable {{{{ {var} }}}} is not used")
    for var in sorted(set(used) - expected):
        errors.append(
            f"unknown variable {{{{ {var} }}}}: the bot does not provide it (available: {sorted(expected) or 'none'})"
        )
    rendered: str | None = None
    if not errors and expected <= set(sample):
        try:
            rendered = _ENV.from_string(body).render(**sample).strip()
        except jinja2.TemplateError as exc:  # SecurityError included
            errors.append(f"rendering with the sample values fails: {exc}")
    return Validation(not errors, errors, used, rendered)


class PromptStore:
    """The bot's prompts: files re-read when they change, and A/B versions per conversation.

    The file's cache key is (mtime, size, inode): a save replaces the file atomically (new inode), so
    even two saves within one clock tick are told apart.
    """

    TESTS_TTL_S = 2.0  # other processes' test starts/stops are seen within this; this one's at once

    def __init__(self, directory: Path = PROMPTS_DIR, engine: Engine | None = None):
        self.directory = Path(directory)
        self.engine = engine
        self._cache: dict[str, tuple[tuple[int, int, int], Prompt]] = {}
        self._versions: dict[tuple[str, int], Prompt] = {}
        self._tests: dict[str, Any] = {}
        self._tests_at = -1e9
        self._overrides: dict[str, Prompt] = {}
        self._lock = threading.Lock()

    def path(self, name: str) -> Path:
        if not name.replace("_", "").isalnum():
            raise PromptError(f"not a prompt name: {name!r}")
        return self.directory / f"{name}.md"

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.directory.glob("*.md") if p.stem.replace("_", "").isalnum())

    def get(self, name: str) -> Prompt:
        if name in self._overrides:
            return self._overrides[name]
        path = self.path(name)
        try:
            st = path.stat()
        except FileNotFoundError as exc:
            raise PromptError(f"no prompt file {path}") from exc
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._lock:
            cached = self._cache.get(name)
            if cached and cached[0] == key:
                return cached[1]
            prompt = parse_prompt(path.read_text(encoding="utf-8"), name)
            self._cache[name] = (key, prompt)
            return prompt

    def render(self, name: str, conversation_id: str | None = None, **values: Any) -> str:
        """The prompt for this conversation: its A/B arm's version when a test runs on `name`."""
        return self.for_conversation(name, conversation_id).render(**values)

    def for_conversation(self, name: str, conversation_id: str | None) -> Prompt:
        if conversation_id is None or self.engine is None or name in self._overrides:
            return self.get(name)
        test = self._running_tests().get(name)
        if test is None:
            return self.get(name)
        from bot import abtest

        version = abtest.assign(self.engine, test, conversation_id)
        return self.version(name, version)

    def version(self, name: str, version: int) -> Prompt:
        """A stored version (immutable, so cached for good)."""
        key = (name, version)
        cached = self._versions.get(key)
        if cached is not None:
            return cached
        from bot import abtest

        text = abtest.version_text(self.engine, name, version)  # type: ignore[arg-type]
        if text is None:
            return self.get(name)
        prompt = parse_prompt(text, name)
        self._versions[key] = prompt
        return prompt

    def _running_tests(self) -> dict[str, Any]:
        now = time.monotonic()
        if now - self._tests_at > self.TESTS_TTL_S:
            from bot import abtest

            self._tests = abtest.running_tests(self.engine)  # type: ignore[arg-type]
            self._tests_at = now
        return self._tests

    def tests_changed(self) -> None:
        """A test was started or stopped in this process: the next render sees it."""
        self._tests_at = -1e9

    def with_override(self, name: str, text: str) -> "PromptStore":
        """A copy whose `name` renders from `text` (the admin's unsaved edit): for previews."""
        copy = PromptStore(self.directory, None)
        copy._overrides = {**self._overrides, name: parse_prompt(text, name)}
        return copy


def greeting(prompts: PromptStore, conversation_id: str, store_name: str) -> str | None:
    """The first words a shopper sees; None (no greeting) rather than a broken socket if it fails."""
    try:
        return prompts.render("greeting", conversation_id, store_name=store_name) or None
    except (PromptError, jinja2.TemplateError, OSError):
        return None
