"""Tools: a base class, a result type and a decorator that derives the schema.

A tool is an async method (or function) with type hints and a docstring. The
``@function`` decorator turns the signature into a JSON schema (via a pydantic
model, which also validates the model's arguments) and keeps usage examples for
the XML prompt. Nothing here knows about a particular tool or the loop.
"""

from __future__ import annotations

import copy
import inspect
import re
import textwrap
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast, get_type_hints, overload

import pydantic

ToolOutput = str | dict[str, Any] | list[Any] | None


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a tool call gave back. ``output`` is shown to the model and the user."""

    success: bool
    output: ToolOutput = None

    @classmethod
    def ok(cls, output: ToolOutput = None) -> ToolResult:
        return cls(True, output)

    @classmethod
    def fail(cls, reason: str) -> ToolResult:
        return cls(False, reason)


Handler = Callable[..., Awaitable[ToolResult]]
F = TypeVar("F", bound=Callable[..., Any])

_SPEC_ATTR = "__kortix_tool_spec__"


@dataclass(frozen=True, slots=True)
class FunctionMeta:
    """What ``@function`` records on a callable; bound to an instance at registration."""

    name: str | None
    description: str | None
    examples: tuple[str, ...]
    terminates: bool
    requires_approval: bool


@dataclass(slots=True)
class ToolSpec:
    """A callable tool with its schema, ready for the registry."""

    name: str
    description: str
    parameters: dict[str, Any]
    handler: Handler
    arguments_model: type[pydantic.BaseModel]
    examples: tuple[str, ...] = ()
    terminates: bool = False
    requires_approval: bool = False
    group: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def openai_schema(self) -> dict[str, Any]:
        return {"type": "function",
                "function": {"name": self.name, "description": self.description,
                             "parameters": self.parameters}}


@overload
def function(fn: F) -> F: ...


@overload
def function(
    *,
    name: str | None = None,
    description: str | None = None,
    examples: list[str] | tuple[str, ...] = (),
    terminates: bool = False,
    requires_approval: bool = False,
) -> Callable[[F], F]: ...


def function(
    fn: F | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    examples: list[str] | tuple[str, ...] = (),
    terminates: bool = False,
    requires_approval: bool = False,
) -> Any:
    """Mark an async method or function as a tool the model may call.

    ``examples`` are XML usage snippets shown in the XML-tools prompt.
    ``terminates=True`` ends the run after the call (``ask``, ``complete``).
    """

    def mark(f: F) -> F:
        setattr(f, _SPEC_ATTR, FunctionMeta(name, description, tuple(examples), terminates,
                                            requires_approval))
        return f

    return mark(fn) if fn is not None else mark


class Tool:
    """Base class of a tool group: each ``@function`` method is one callable tool."""

    group: str = ""

    def specs(self) -> list[ToolSpec]:
        out = []
        for attr in dir(type(self)):
            member = getattr(type(self), attr, None)
            if callable(member) and hasattr(member, _SPEC_ATTR):
                out.append(spec_from_callable(getattr(self, attr),
                                              group=self.group or type(self).__name__))
        return out


_ARGS_HEADER = re.compile(r"^\s*(Args|Arguments|Parameters):\s*$")
_ARG_LINE = re.compile(r"^\s*(\*{0,2}\w+)\s*(\([^)]*\))?\s*:\s*(.*)$")


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into a description and per-argument texts."""
    if not doc:
        return "", {}
    lines = textwrap.dedent(doc).strip().splitlines()
    desc: list[str] = []
    args: dict[str, str] = {}
    current: str | None = None
    in_args = False
    for line in lines:
        if _ARGS_HEADER.match(line):
            in_args = True
            continue
        if in_args:
            if line.strip() and not line.startswith((" ", "\t")) and line.rstrip().endswith(":"):
                in_args = False  # another section (Returns:, Raises:)
                continue
            m = _ARG_LINE.match(line)
            if m and (line.startswith("    ") or line.startswith("\t")) and \
                    len(line) - len(line.lstrip()) <= 4 + 4:
                current = m.group(1).lstrip("*")
                args[current] = m.group(3).strip()
            elif current and line.strip():
                args[current] += " " + line.strip()
        elif not any(line.strip().startswith(s) for s in ("Returns:", "Raises:")):
            desc.append(line)
        else:
            break
    return "\n".join(desc).strip(), args


def spec_from_callable(fn: Callable[..., Any], *, group: str = "") -> ToolSpec:
    """Build a ``ToolSpec`` from a ``@function``-marked (or plain) async callable.

    The name, schema and arguments model depend on the function only, not on the
    instance a method is bound to, so they are built once per function (pydantic's
    ``create_model`` + ``model_json_schema`` cost about a millisecond a tool, and every
    run registers its tools anew); each spec gets its own copy of the schema.
    """
    meta: FunctionMeta = getattr(fn, _SPEC_ATTR, None) or FunctionMeta(
        None, None, (), False, False)
    key: Any = getattr(fn, "__func__", fn)
    try:
        built = _SCHEMAS.get(key)
    except TypeError:  # not weakly referenceable: build it every time
        key, built = None, None
    if built is None:
        built = _build_schema(fn, meta)
        if key is not None:
            _SCHEMAS[key] = built
    name, description, schema, model = built
    handler = _wrap_sync(fn) if not inspect.iscoroutinefunction(fn) else fn
    return ToolSpec(name=name, description=description, parameters=copy.deepcopy(schema),
                    handler=handler, arguments_model=model, examples=meta.examples,
                    terminates=meta.terminates, requires_approval=meta.requires_approval,
                    group=group)


_Built = tuple[str, str, dict[str, Any], type[pydantic.BaseModel]]
_SCHEMAS: weakref.WeakKeyDictionary[Any, _Built] = weakref.WeakKeyDictionary()


def _build_schema(fn: Callable[..., Any], meta: FunctionMeta) -> _Built:
    name = meta.name or fn.__name__
    description, arg_docs = parse_docstring(inspect.getdoc(fn))
    hints = get_type_hints(fn)
    fields: dict[str, Any] = {}
    for pname, param in inspect.signature(fn).parameters.items():
        if pname == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = hints.get(pname, str)
        default = ... if param.default is param.empty else param.default
        fields[pname] = (annotation, pydantic.Field(default, description=arg_docs.get(pname)))
    model = cast(type[pydantic.BaseModel], pydantic.create_model(
        f"{name}_arguments", __config__=pydantic.ConfigDict(extra="forbid"), **fields))
    schema = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    schema.setdefault("properties", {})
    return name, meta.description or description or name, schema, model


def _wrap_sync(fn: Callable[..., Any]) -> Handler:
    import asyncio

    async def call(**kwargs: Any) -> ToolResult:
        result = await asyncio.to_thread(fn, **kwargs)
        return result if isinstance(result, ToolResult) else ToolResult.ok(result)

    return call
