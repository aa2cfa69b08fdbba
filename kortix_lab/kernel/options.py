"""Options of ``%%agent`` / ``%agent``: parsed before anything runs.

A bad option must print the usage and run nothing, so parsing is a pure
function of the magic's line that raises ``UsageError`` (IPython shows it
without a traceback) and never exits. Values may start with ``-`` (``--tools
-shell,+files``): argparse would take those for options, so every
value-taking option is glued to its value (``--tools=-shell,+files``) first.
"""

from __future__ import annotations

import argparse
import re
import shlex
from dataclasses import dataclass, field
from typing import Any, NoReturn

from IPython.core.error import UsageError

from ..argtypes import positive_int

SANDBOXES = ("local", "daytona", "none")
APPROVALS = ("auto", "ask", "deny")
DISPLAYS = ("auto", "widgets", "static")
_NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(slots=True)
class AgentArgs:
    """What one ``%%agent`` cell asked for; None means "the default"."""

    prompt: str = ""
    thread: str | None = None
    new: bool = False
    agent: str | None = None
    model: str | None = None
    api_base: str | None = None
    tools: dict[str, bool] = field(default_factory=dict)
    context: list[str] = field(default_factory=list)
    max_iterations: int | None = None
    budget: float | None = None
    budget_tokens: int | None = None
    sandbox: str | None = None
    approve: str | None = None
    quiet: bool = False
    display: str = "auto"
    xml_tools: bool = False


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}\n\n{self.format_help()}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        # --help: show the help as the "error" so nothing runs and nothing exits.
        raise UsageError(message or self.format_help())


def _budget(text: str) -> float:
    try:
        value = float(text.lstrip("$"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected dollars, e.g. 0.50, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text!r}")
    return value


def parse_tools(spec: str) -> dict[str, bool]:
    """``shell,files`` (only these), ``-shell`` (all but shell), ``+files`` (keep files).

    Names are tool names or groups (``shell``, ``files``, ``code``, ``vision``); a
    bare name makes the list exclusive, recorded as ``{"*": False}``.
    """
    choices: dict[str, bool] = {}
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        sign, name = (item[0], item[1:]) if item[0] in "+-" else ("", item)
        if not _NAME.match(name):
            raise argparse.ArgumentTypeError(f"bad tool or group name {item!r}")
        choices[name] = sign != "-"
        if not sign:
            choices["*"] = False
    if not choices:
        raise argparse.ArgumentTypeError("empty tool list")
    return choices


def _context(spec: str) -> list[str]:
    names = [n.strip() for n in spec.split(",") if n.strip()]
    for name in names:
        if not _IDENT.match(name):
            raise argparse.ArgumentTypeError(f"{name!r} is not a variable name")
    if not names:
        raise argparse.ArgumentTypeError("no variable named")
    return names


def build_parser(prog: str = "%%agent") -> argparse.ArgumentParser:
    p = _Parser(prog=prog, add_help=True, allow_abbrev=False,
                description="Run the Kortix Lab agent on the cell's text (a new turn on the "
                            "notebook's thread unless --thread or --new says otherwise).")
    p.add_argument("--thread", metavar="NAME_OR_ID",
                   help="thread to continue; a new name creates it (default: this notebook's)")
    p.add_argument("--new", action="store_true", help="start a new thread for this notebook")
    p.add_argument("--agent", metavar="NAME_OR_ID", help="a saved agent (kortix_lab.Agent)")
    p.add_argument("--model", help="LiteLLM model, e.g. openai/gpt-4o or scripted/demo")
    p.add_argument("--api-base", metavar="URL", help="an OpenAI-compatible server (Ollama, vLLM…)")
    p.add_argument("--tools", type=parse_tools, metavar="SPEC", default={},
                   help="tools or groups: 'shell,files' only these; '-shell' all but shell")
    p.add_argument("--context", type=_context, metavar="VAR[,VAR…]", default=[],
                   help="kernel variables to show the agent (DataFrames as schema, head, stats)")
    p.add_argument("--max-iterations", type=positive_int, metavar="N")
    p.add_argument("--budget", type=_budget, metavar="DOLLARS", help="cost cap for this run")
    p.add_argument("--budget-tokens", type=positive_int, metavar="N",
                   help="token cap for this run (prompt + completion, all model calls)")
    p.add_argument("--sandbox", choices=SANDBOXES, help="where tools run (default: local)")
    p.add_argument("--approve", choices=APPROVALS,
                   help="approval policy for every tool: auto, ask (buttons) or deny")
    p.add_argument("--quiet", action="store_true", help="show only the final reply")
    p.add_argument("--display", choices=DISPLAYS, default="auto",
                   help="widgets (live) or static (a transcript at the end); auto detects")
    p.add_argument("--xml-tools", action="store_true",
                   help="describe tools in the prompt and parse Kortix XML tool calls")
    return p


def _value_options(parser: argparse.ArgumentParser) -> set[str]:
    return {opt for action in parser._actions if action.nargs != 0
            for opt in action.option_strings}


def _glue_values(tokens: list[str], takes_value: set[str]) -> list[str]:
    out: list[str] = []
    it = iter(tokens)
    for token in it:
        if token in takes_value:
            value = next(it, None)
            out.append(token if value is None else f"{token}={value}")
        else:
            out.append(token)
    return out


def _split(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"cannot read the options: {exc}\n\n"
                         f"{build_parser().format_usage()}") from None


def parse_cell(line: str, cell: str) -> AgentArgs:
    """``%%agent LINE`` followed by ``CELL`` (the prompt)."""
    parser = build_parser("%%agent")
    ns = parser.parse_args(_glue_values(_split(line), _value_options(parser)))
    args = _to_args(ns, cell.strip())
    if not args.prompt:
        parser.error("the cell is empty: write what to ask the agent below %%agent")
    return args


_OPTION = re.compile(r"""\s*(--(?:[A-Za-z][A-Za-z-]*(?:=(?:"[^"]*"|'[^']*'|\S*))?)?)(?=\s|$)""")
_VALUE = re.compile(r"""\s+("[^"]*"|'[^']*'|\S+)""")


def parse_line(line: str) -> AgentArgs:
    """``%agent [options] PROMPT…``: options first; the rest of the line is the prompt,
    verbatim (apostrophes and all)."""
    parser = build_parser("%agent")
    takes_value = _value_options(parser)
    tokens: list[str] = []
    pos = 0
    while True:
        m = _OPTION.match(line, pos)
        if m is None:
            break
        token, pos = m.group(1), m.end()
        if token == "--":
            break
        if token in takes_value:
            v = _VALUE.match(line, pos)
            if v is not None:
                token, pos = f"{token}={v.group(1)}", v.end()
        tokens.extend(_split(token))
    ns = parser.parse_args(tokens)
    args = _to_args(ns, line[pos:].strip())
    if not args.prompt:
        parser.error("no prompt: write it after the options, e.g. %agent --thread demo hello")
    return args


def _to_args(ns: Any, prompt: str) -> AgentArgs:
    return AgentArgs(prompt=prompt, thread=ns.thread, new=ns.new, agent=ns.agent,
                     model=ns.model, api_base=ns.api_base, tools=dict(ns.tools),
                     context=list(ns.context), max_iterations=ns.max_iterations,
                     budget=ns.budget, budget_tokens=ns.budget_tokens, sandbox=ns.sandbox,
                     approve=ns.approve,
                     quiet=ns.quiet, display=ns.display, xml_tools=ns.xml_tools)
