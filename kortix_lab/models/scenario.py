"""Scenario files for the scripted model: the format, the loader and the reply picker.

A scenario says what an offline "model" answers, so notebooks and tests run
without provider keys and still exercise the real runner, tools and stream
parsers. Nothing here imports LiteLLM: the format can be loaded, validated and
listed cheaply (the kernel extension lists scenarios at ``%load_ext`` time).

The reply picker is stateless on purpose: everything it needs is derived from
the messages of the request, so re-running a notebook, resuming a run in
another process or replaying a thread gives the same answer. The documented
format lives in ``docs/scenarios.md``.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kortix_lab.agentpress.errors import ConfigError

SCENARIO_DIR_ENV = "KORTIX_LAB_SCENARIO_DIR"
"""Extra directories (``os.pathsep``-separated) searched for scenarios by bare name."""

SUFFIXES = (".yaml", ".yml", ".json")
XML_RESULTS_PREFIX = "<function_results>"
CONTEXT_PREFIX = "<context>"  # run context the thread manager sends before a prompt
"""XML-mode tool results come back as ``user`` messages; this prefix tells them apart."""

DEFAULT_FALLBACK = "I have nothing scripted for that."
FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


class ScenarioError(ConfigError):
    """A scenario file that cannot be read or does not follow the format."""


class ScenarioNotFound(ScenarioError):
    """No scenario by that name or path; the message lists the names that do exist."""


# --------------------------------------------------------------------------- format


class _Strict(BaseModel):
    # Typos in hand-written files ("tool_call:", "respones:") must fail loudly,
    # not silently produce a model that says nothing.
    model_config = ConfigDict(extra="forbid", frozen=True)


class UsageSpec(_Strict):
    """Token counts to report; ``auto`` estimates len/4 so cost accounting has numbers."""

    prompt_tokens: int | Literal["auto"] = Field(default="auto")
    completion_tokens: int | Literal["auto"] = Field(default="auto")


class ToolCallSpec(_Strict):
    """One native tool call. ``raw_arguments`` is sent verbatim, to script malformed JSON."""

    name: str = Field(min_length=1)
    arguments: dict[str, Any] | None = None
    raw_arguments: str | None = None
    id: str | None = None

    @model_validator(mode="after")
    def _one_argument_form(self) -> ToolCallSpec:
        if self.arguments is not None and self.raw_arguments is not None:
            raise ValueError("give either 'arguments' or 'raw_arguments', not both")
        return self


class ResponseSpec(_Strict):
    """What the model says on one call: text, native tool calls, how it stops."""

    text: str = ""
    tool_calls: list[ToolCallSpec] = Field(default_factory=list)
    finish_reason: FinishReason | None = None
    usage: UsageSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        # A bare string is a text-only response; a top-level name + (raw_)arguments
        # is a single tool call. Both keep hand-written files short.
        if isinstance(data, str):
            return {"text": data}
        if isinstance(data, dict) and "name" in data:
            data = dict(data)
            call = {key: data.pop(key) for key in ("name", "arguments", "raw_arguments", "id")
                    if key in data}
            data["tool_calls"] = [*data.get("tool_calls", []), call]
        return data


class TurnSpec(_Strict):
    """The responses to one user message, one per model call within the turn."""

    match: str | None = None
    responses: list[ResponseSpec] = Field(min_length=1)

    @field_validator("match")
    @classmethod
    def _valid_regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {value!r}: {exc}") from exc
        return value


class Scenario(_Strict):
    """A whole scripted conversation; see ``docs/scenarios.md``."""

    name: str = ""
    description: str = ""
    chunk_size: int = Field(default=12, ge=1)
    # Pacing, to stand in for a real model's latency (benchmarks, the shared demo,
    # the worker tests): wait before the first chunk, and between chunks.
    latency_ms: float = Field(default=0.0, ge=0, le=600_000)
    chunk_delay_ms: float = Field(default=0.0, ge=0, le=60_000)
    usage: UsageSpec = Field(default_factory=UsageSpec)
    turns: list[TurnSpec] = Field(default_factory=list)
    fallback: str = DEFAULT_FALLBACK


# --------------------------------------------------------------------------- loading


def builtin_dir() -> Path:
    """Where the scenarios shipped in the wheel live."""
    return Path(str(resources.files("kortix_lab.models") / "scenarios"))


def _search_dirs() -> list[Path]:
    # Configured directories come first so a project can shadow a built-in name.
    extra = [Path(p).expanduser() for p in os.environ.get(SCENARIO_DIR_ENV, "").split(os.pathsep)
             if p.strip()]
    return [*extra, builtin_dir()]


def _names_in(directory: Path) -> set[str]:
    if not directory.is_dir():
        return set()
    return {p.stem for p in directory.iterdir() if p.suffix in SUFFIXES and p.is_file()}


def builtin_scenarios() -> list[str]:
    """Names of the scenarios shipped with the package."""
    return sorted(_names_in(builtin_dir()))


def list_scenarios() -> list[str]:
    """Every name ``scripted/<name>`` resolves: built-ins plus ``KORTIX_LAB_SCENARIO_DIR``."""
    names: set[str] = set()
    for directory in _search_dirs():
        names |= _names_in(directory)
    return sorted(names)


def _looks_like_path(spec: str) -> bool:
    return spec.endswith(SUFFIXES) or "/" in spec or os.sep in spec or spec.startswith("~")


def resolve_scenario(spec: str) -> Path:
    """Turn the part after ``scripted/`` into a file.

    A bare name is looked up in ``KORTIX_LAB_SCENARIO_DIR`` and then among the
    built-ins; anything that looks like a path (has a slash or a suffix) is a
    file, relative to the working directory or else to the search directories.
    """
    spec = spec.strip()
    if not spec:
        raise ScenarioNotFound(_not_found_message(spec))
    if _looks_like_path(spec):
        path = Path(spec).expanduser()
        candidates = [path] if path.is_absolute() else [
            path, *(d / path for d in _search_dirs()[:-1])]
    else:
        candidates = [d / f"{spec}{suffix}" for d in _search_dirs() for suffix in SUFFIXES]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise ScenarioNotFound(_not_found_message(spec))


def _not_found_message(spec: str) -> str:
    dirs = os.environ.get(SCENARIO_DIR_ENV)
    where = f" or in {SCENARIO_DIR_ENV}={dirs}" if dirs else ""
    return (f"unknown scenario {spec!r}: no such built-in scenario{where} and no such file. "
            f"Built-in scenarios: {', '.join(builtin_scenarios()) or '(none)'}. "
            f"Use scripted/<name> or scripted/<path to a .yaml or .json file>.")


_cache: dict[Path, tuple[int, int, Scenario]] = {}
_cache_lock = threading.Lock()


def load_scenario(spec: str | Path) -> Scenario:
    """Resolve and parse a scenario, reusing the parsed one while the file is unchanged.

    The cache key includes mtime and size so editing a scenario between two
    notebook cells takes effect without restarting the kernel.
    """
    path = spec.resolve() if isinstance(spec, Path) else resolve_scenario(spec)
    try:
        stat = path.stat()
    except OSError as exc:
        raise ScenarioNotFound(_not_found_message(str(spec))) from exc
    with _cache_lock:
        hit = _cache.get(path)
        if hit is not None and hit[:2] == (stat.st_mtime_ns, stat.st_size):
            return hit[2]
    scenario = parse_scenario(path.read_text(encoding="utf-8"), source=path)
    with _cache_lock:
        _cache[path] = (stat.st_mtime_ns, stat.st_size, scenario)
    return scenario


def parse_scenario(text: str, *, source: Path | str = "<string>") -> Scenario:
    """Parse YAML or JSON text (JSON is YAML, but JSON error messages are clearer)."""
    source_path = Path(source)
    try:
        data = (json.loads(text) if source_path.suffix == ".json" else yaml.safe_load(text))
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        kind = "JSON" if source_path.suffix == ".json" else "YAML"
        raise ScenarioError(f"scenario {source}: not valid {kind}: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ScenarioError(f"scenario {source}: the top level must be a mapping, "
                            f"got {type(data).__name__}")
    data.setdefault("name", source_path.stem if source != "<string>" else "")
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
            for err in exc.errors())
        raise ScenarioError(f"scenario {source}: {problems}") from exc


# --------------------------------------------------------------------------- replies


@dataclass(frozen=True, slots=True)
class PlannedToolCall:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Reply:
    """One model response, fully decided before a single chunk is streamed."""

    text: str
    tool_calls: tuple[PlannedToolCall, ...]
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    turn: int | None
    """Index into ``Scenario.turns``; ``None`` when the fallback answered."""
    step: int
    """Index of the response within the turn (assistant messages since the user spoke)."""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def message_text(message: dict[str, Any]) -> str:
    """The text of a chat message, whether its content is a string or a list of parts."""
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content
                       if isinstance(part, dict) and part.get("type", "text") == "text"
                       and isinstance(part.get("text"), str))
    return str(content)


def is_real_user_message(message: dict[str, Any]) -> bool:
    """A user message a person wrote: not an XML tool result fed back as ``user``, and
    not run context (``<context>…``, e.g. a notebook's variables) sent beside it."""
    if message.get("role") != "user":
        return False
    text = message_text(message).lstrip()
    return not text.startswith(XML_RESULTS_PREFIX) and not is_context_message(message)


def is_context_message(message: dict[str, Any]) -> bool:
    return message.get("role") == "user" and \
        message_text(message).lstrip().startswith(CONTEXT_PREFIX)


def _is_tool_result(message: dict[str, Any]) -> bool:
    return message.get("role") == "tool" or (
        message.get("role") == "user" and
        message_text(message).lstrip().startswith(XML_RESULTS_PREFIX))


_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def _fill(template: str, values: dict[str, str]) -> str:
    # Unknown names are left alone: a scenario may need to write Jinja templates.
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def _fill_json(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        return _fill(value, values)
    if isinstance(value, list):
        return [_fill_json(v, values) for v in value]
    if isinstance(value, dict):
        return {k: _fill_json(v, values) for k, v in value.items()}
    return value


def estimate_tokens(text: str) -> int:
    """The len/4 rule of thumb: good enough for budgets and cost displays offline."""
    return math.ceil(len(text) / 4) if text else 0


def _pick_turn(scenario: Scenario, user_text: str, user_count: int) -> int | None:
    for index, turn in enumerate(scenario.turns):
        if turn.match is not None and re.search(turn.match, user_text):
            return index
    unmatched = [i for i, turn in enumerate(scenario.turns) if turn.match is None]
    position = user_count - 1
    return unmatched[position] if 0 <= position < len(unmatched) else None


def plan_reply(scenario: Scenario, messages: list[dict[str, Any]]) -> Reply:
    """Decide the next response from the request's messages alone.

    Turn: the first turn whose ``match`` finds the latest real user message,
    else the n-th turn without ``match`` where n counts real user messages.
    Step: the number of assistant messages after that user message, so each
    call after tool results moves one response further.
    """
    last_user = max((i for i, m in enumerate(messages) if is_real_user_message(m)), default=-1)
    user_text = message_text(messages[last_user]) if last_user >= 0 else ""
    user_count = sum(1 for m in messages if is_real_user_message(m))
    step = sum(1 for m in messages[last_user + 1:] if m.get("role") == "assistant")
    trailing: list[str] = []
    for message in reversed(messages[last_user + 1:]):
        if not _is_tool_result(message):
            break
        trailing.insert(0, message_text(message))
    tool_result = "\n".join(trailing)

    turn = _pick_turn(scenario, user_text, user_count)
    context = "\n\n".join(message_text(m) for m in messages if is_context_message(m))
    values = {"user": user_text, "n": str(user_count), "step": str(step + 1),
              "tool_result": tool_result, "scenario": scenario.name, "context": context}
    prompt_estimate = estimate_tokens("".join(message_text(m) for m in messages))

    spec: ResponseSpec | None = None
    if turn is not None and step < len(scenario.turns[turn].responses):
        spec = scenario.turns[turn].responses[step]
    if spec is None:
        text = _fill(scenario.fallback, values)
        return Reply(text=text, tool_calls=(), finish_reason="stop",
                     prompt_tokens=_count(scenario.usage.prompt_tokens, prompt_estimate),
                     completion_tokens=_count(scenario.usage.completion_tokens,
                                              estimate_tokens(text)),
                     turn=None, step=step)

    text = _fill(spec.text, values)
    calls = tuple(
        PlannedToolCall(
            # Deterministic ids keep re-runs identical; the user count makes them
            # unique within a thread.
            id=_fill(call.id, values) if call.id else f"call_{user_count}_{step + 1}_{k + 1}",
            name=call.name,
            arguments=(_fill(call.raw_arguments, values) if call.raw_arguments is not None
                       else json.dumps(_fill_json(call.arguments or {}, values),
                                       ensure_ascii=False)))
        for k, call in enumerate(spec.tool_calls))
    completion_estimate = estimate_tokens(text + "".join(c.name + c.arguments for c in calls))
    return Reply(text=text, tool_calls=calls,
                 finish_reason=spec.finish_reason or ("tool_calls" if calls else "stop"),
                 prompt_tokens=_count(_usage(scenario, spec, "prompt_tokens"), prompt_estimate),
                 completion_tokens=_count(_usage(scenario, spec, "completion_tokens"),
                                          completion_estimate),
                 turn=turn, step=step)


def _usage(scenario: Scenario, spec: ResponseSpec,
           key: Literal["prompt_tokens", "completion_tokens"]) -> int | Literal["auto"]:
    # A response's usage overrides only the counts it states; the rest come
    # from the scenario, so one fixed prompt size can hold for every response.
    source = spec.usage if spec.usage and key in spec.usage.model_fields_set else scenario.usage
    value: int | Literal["auto"] = getattr(source, key)
    return value


def _count(spec: int | Literal["auto"], estimate: int) -> int:
    return estimate if spec == "auto" else spec
