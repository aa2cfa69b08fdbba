"""The ``kortix-lab`` command.

Exit codes: 0 the run completed; 1 it failed; 2 bad usage; 3 it was stopped
(budget, iteration limit, Ctrl-C).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

from .argtypes import positive_int

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_STOPPED = 0, 1, 2, 3


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="LiteLLM model name, e.g. openai/gpt-4o or scripted/demo "
                                   "(default: $KORTIX_LAB_MODEL or scripted/demo)")
    p.add_argument("--api-base", help="base URL of an OpenAI-compatible server")
    p.add_argument("--thread", help="thread name or id to continue (a new name creates it)")
    p.add_argument("--agent", help="agent name or id")
    p.add_argument("--store", help="store file (default: $KORTIX_LAB_STORE or "
                                   "~/.kortix_lab/store.duckdb)")
    p.add_argument("--xml-tools", action="store_true",
                   help="describe tools in the prompt and parse Kortix XML tool calls")
    p.add_argument("--max-iterations", type=positive_int, metavar="N")
    p.add_argument("--json", action="store_true", help="print one JSON event per line")
    p.add_argument("--mcp-config", metavar="FILE",
                   help="MCP servers for this run only (an mcpServers object or a list)")
    p.add_argument("--sandbox", choices=("local", "daytona", "none"),
                   help="where sandbox tools run (default: $KORTIX_LAB_SANDBOX or local)")
    p.add_argument("--approve-all", action="store_true",
                   help="approve every tool call that asks for approval (default: ask on the "
                        "terminal; deny when there is none)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kortix-lab",
                                     description="Kortix Lab: a Jupyter-native agent workbench.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run the agent on a prompt")
    run.add_argument("prompt", help="what to ask the agent")
    _run_options(run)
    demo = sub.add_parser("demo", help="run the offline demo on the scripted model")
    demo.add_argument("--store", help="store file (default: a temporary one)")
    demo.add_argument("--json", action="store_true", help="print one JSON event per line")
    threads = sub.add_parser("threads", help="list stored threads")
    threads.add_argument("--store")
    show = sub.add_parser("show", help="print a stored thread")
    show.add_argument("thread", help="thread name or id")
    show.add_argument("--store")
    from .sandbox.cli import add_sandbox_parser

    add_sandbox_parser(sub)
    from .mcp.cli import add_mcp_parser

    add_mcp_parser(sub)
    from .shared.cli import add_shared_parsers

    add_shared_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return asyncio.run(_run(args, args.prompt))
        if args.command == "demo":
            return _demo(args)
        if args.command == "threads":
            return _threads(args)
        if args.command == "show":
            return _show(args)
        if args.command in ("mcp", "serve-mcp"):
            from .mcp.cli import run_mcp_command

            return run_mcp_command(args)
        if args.command in ("worker", "db"):
            from .shared.cli import shared_command

            return shared_command(args)
        if args.command == "sandbox":
            from .sandbox.cli import sandbox_command

            return sandbox_command(args)
    except KeyboardInterrupt:
        return EXIT_STOPPED
    except Exception as exc:  # a clear line, not a traceback, for expected failures
        from .agentpress.errors import KortixLabError

        if isinstance(exc, KortixLabError | ValueError):
            print(f"kortix-lab: error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        raise
    return EXIT_USAGE


def _settings(store: str | None) -> Any:
    from .config import Settings

    settings = Settings()
    if store:
        settings.store = store
    return settings


async def _run(args: argparse.Namespace, prompt: str, *, tools: Sequence[Any] = (),
               model: str | None = None) -> int:
    from .agentpress import events as ev
    from .render import LiveRenderer
    from .workbench import Workbench

    mcp_config = getattr(args, "mcp_config", None)
    mcp_servers = None
    if mcp_config:
        from .mcp import load_mcp_config

        mcp_servers = load_mcp_config(mcp_config)  # a bad file fails before anything runs
    workbench = Workbench(_settings(args.store), tools=tools)
    render = None if args.json else LiveRenderer()
    status = "failed"
    try:
        run = await workbench.start(
            prompt, thread=getattr(args, "thread", None), agent=getattr(args, "agent", None),
            model=model or getattr(args, "model", None),
            api_base=getattr(args, "api_base", None),
            xml_tools=True if getattr(args, "xml_tools", False) else None,
            max_iterations=getattr(args, "max_iterations", None),
            sandbox=getattr(args, "sandbox", None), mcp_servers=mcp_servers)
        try:
            async for event in workbench.manager.subscribe(run.run_id):
                if render is None:
                    print(json.dumps(event.to_dict(), ensure_ascii=False, default=str),
                          flush=True)
                else:
                    render(event)
                if isinstance(event, ev.ApprovalRequested):
                    await _answer_approval(workbench, event, getattr(args, "approve_all", False))
                if isinstance(event, ev.RunFinished):
                    status = event.status
        except (asyncio.CancelledError, KeyboardInterrupt):
            await workbench.manager.stop_run(run.run_id, "interrupted (Ctrl-C)")
            await workbench.manager.wait(run.run_id)
            status = "stopped"
    finally:
        await workbench.close()
    return {"completed": EXIT_OK, "stopped": EXIT_STOPPED}.get(status, EXIT_FAILED)


async def _answer_approval(workbench: Any, event: Any, approve_all: bool) -> None:
    """Answer on the terminal; with no terminal, deny and say how to approve."""
    manager = workbench.manager
    if approve_all:
        manager.decide(event.run_id, event.call_id, approved=True, reason="--approve-all")
        return
    if not sys.stdin.isatty():
        manager.decide(event.run_id, event.call_id, approved=False,
                       reason="no terminal to ask; run with --approve-all to allow it")
        return
    question = (f"Allow {event.tool} {json.dumps(event.arguments)[:300]}? "
                "[y]es / [n]o / [a]lways this run: ")
    answer = (await asyncio.to_thread(input, question)).strip().lower()
    if answer in ("y", "yes", "a", "always"):
        manager.decide(event.run_id, event.call_id, approved=True,
                       remember=answer.startswith("a"))
    else:
        manager.decide(event.run_id, event.call_id, approved=False, reason="declined")


def _demo(args: argparse.Namespace) -> int:
    import tempfile

    from .demo import DEMO_PROMPT, demo_tools

    with tempfile.TemporaryDirectory(prefix="kortix-lab-demo-") as tmp:
        store = args.store or f"{tmp}/demo.duckdb"
        ns = argparse.Namespace(store=store, json=args.json, thread="demo", xml_tools=True)
        if not args.json:
            print(f"Kortix Lab demo — offline, on the scripted model.\n\n> {DEMO_PROMPT}\n")
        return asyncio.run(_run(ns, DEMO_PROMPT, tools=demo_tools(), model="scripted/demo"))


def _threads(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from .store import open_store

    store = open_store(args.store or None)
    try:
        table = Table("thread", "name", "updated", "messages", "runs", "cost")
        frame = store.threads_frame()
        for row in frame.to_dict("records"):
            table.add_row(str(row["thread_id"]), str(row["name"] or ""),
                          str(row["updated_at"])[:19], str(row["messages"]), str(row["runs"]),
                          f"${float(row['cost'] or 0):.4f}")
        Console().print(table)
    finally:
        store.close()
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape

    from .render import short
    from .store import open_store

    store = open_store(args.store or None)
    console = Console(highlight=False)
    try:
        thread = store.find_thread(args.thread)
        if thread is None:
            print(f"kortix-lab: error: no thread named or with id {args.thread!r}",
                  file=sys.stderr)
            return EXIT_FAILED
        console.rule(f"thread {thread.thread_id} {escape(thread.name or '')}")
        for m in store.get_messages(thread.thread_id):
            content = m.content.get("content")
            calls = m.content.get("tool_calls") or []
            label = {"user": "[bold]you[/bold]", "assistant": "[bold cyan]agent[/bold cyan]",
                     "tool": "[dim]tool[/dim]"}.get(m.type, m.type)
            console.print(f"{label}: {escape(short(content or '', 2000))}")
            for call in calls:
                fn = call.get("function", {})
                console.print(f"  [cyan]▶ {escape(str(fn.get('name')))}[/cyan] "
                              f"[dim]{escape(short(fn.get('arguments', ''), 300))}[/dim]")
        for run in store.list_runs(thread_id=thread.thread_id):
            console.print(f"[dim]run {run.run_id}: {run.status} · {run.model} · "
                          f"{run.usage.get('total_tokens', 0)} tokens · ${run.cost:.4f}"
                          f"{' · ' + escape(run.error) if run.error else ''}[/dim]")
    finally:
        store.close()
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
