"""``EmbeddedClient``: the ``AgentClient`` that runs the agent inside the kernel.

It owns a ``Workbench`` (RunManager on the local DuckDB store, the sandbox
tools) and must be used from one asyncio loop: the kernel runtime keeps it on
a background thread's loop (``runtime.LoopThread``) so runs go on while the
cell's own loop waits, renders and answers widget clicks.

Per-run choices — which tools (``--tools``) and which sandbox (``--sandbox``)
— ride in the run's ``RunConfig`` (``tool_choices``, ``sandbox``), as they do
through the server and on a worker. Files the run touched are read back
through the project's sandbox (``read_file``), and large ``--context`` data is
written into it (``write_file``) before the run starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..agentpress import events as ev
from ..agentpress.errors import NotFound
from ..client import RunHandle, RunOptions
from ..config import Settings
from ..workbench import ToolSource, Workbench

if TYPE_CHECKING:
    from ..agentpress.store import Store, Thread
    from ..runs.manager import Emit, RunContext
    from ..sandbox.base import Sandbox, SandboxProvider
    from ..tools.provider import SandboxTools

DEFAULT_SANDBOX = "local"
SANDBOX_ROOT_ENV = "KORTIX_LAB_SANDBOX_ROOT"


@dataclass(frozen=True, slots=True)
class ThreadRef:
    thread_id: str
    project_id: str | None
    name: str | None


async def _ignore(_event: ev.Event) -> None:
    return None


def _daytona_factory() -> SandboxProvider:
    from ..sandbox.base import SandboxUnavailable

    try:
        from ..sandbox.daytona import DaytonaSandboxProvider
    except ImportError:
        raise SandboxUnavailable("the Daytona sandbox backend is not available in this "
                                 "installation; use --sandbox local") from None
    provider: SandboxProvider = DaytonaSandboxProvider()
    return provider


class KernelWorkbench(Workbench):
    """A workbench whose sandbox and tool set can change per run."""

    def __init__(self, settings: Settings | None = None, *,
                 store: Store | None = None) -> None:
        super().__init__(settings, store=store, tool_providers=[self._sandbox_tools])
        self._sandboxes: dict[str, SandboxTools] = {}

    def sandboxes(self, kind: str) -> SandboxTools:
        """The sandbox tools (and their pool) of one backend, made on first need."""
        if kind not in self._sandboxes:
            from ..tools.provider import local_provider_factory, sandbox_tools

            factory: Callable[[], SandboxProvider] | None
            if kind == "none":
                factory = None
            elif kind == "daytona":
                factory = _daytona_factory
            else:
                factory = local_provider_factory(os.environ.get(SANDBOX_ROOT_ENV) or None)
            self._sandboxes[kind] = sandbox_tools(factory)
        return self._sandboxes[kind]

    @property
    def default_sandbox(self) -> str:
        return str(getattr(self.settings, "sandbox", None) or DEFAULT_SANDBOX)

    async def _sandbox_tools(self, context: RunContext, emit: Emit) -> Sequence[ToolSource]:
        kind = context.config.sandbox or self.default_sandbox
        return await self.sandboxes(kind)(context, emit)

    async def close(self) -> None:
        await super().close()
        await asyncio.gather(*(s.aclose() for s in self._sandboxes.values()),
                             return_exceptions=True)


class EmbeddedClient:
    """``AgentClient`` over an in-process ``Workbench``; use from one event loop."""

    def __init__(self, workbench: Workbench | None = None, *,
                 settings: Settings | None = None,
                 stop_reason: str = "stopped from the notebook") -> None:
        self._workbench = workbench
        self._settings = settings
        self.stop_reason = stop_reason
        self._project_kind: dict[str, str] = {}

    @property
    def workbench(self) -> Workbench:
        """Made on first use (opens the store; recovers runs orphaned by dead kernels)."""
        if self._workbench is None:
            self._workbench = KernelWorkbench(self._settings)
        return self._workbench

    @property
    def store(self) -> Store:
        return self.workbench.store

    def add_tool(self, tool: ToolSource) -> None:
        self.workbench.add_tool(tool)

    # ---- threads ------------------------------------------------------------------------
    async def prepare_thread(self, name_or_id: str | None, *, new: bool = False) -> ThreadRef:
        """Find or create the thread a run will use. ``new`` makes a fresh thread, named
        ``name_or_id`` when given, so later lookups by that name find it (the most recently
        updated thread of a name wins)."""
        wb = self.workbench
        if new:
            def create() -> Thread:
                project = wb.store.create_project(name_or_id or "notebook")
                return wb.store.create_thread(name=name_or_id, project_id=project.project_id)

            thread = await asyncio.to_thread(create)
        else:
            thread = await asyncio.to_thread(wb.resolve_thread, name_or_id)
        return ThreadRef(thread.thread_id, thread.project_id, thread.name)

    # ---- the AgentClient protocol ---------------------------------------------------------
    async def start_run(self, prompt: str, *, thread: str | None = None,
                        agent: str | None = None,
                        options: RunOptions | None = None) -> RunHandle:
        opts = options or RunOptions()
        wb = self.workbench
        the_thread = await asyncio.to_thread(wb.resolve_thread, thread)
        the_agent = await asyncio.to_thread(wb.resolve_agent, agent)
        config = wb.run_config(
            agent=the_agent, model=opts.model, api_base=opts.api_base,
            max_iterations=opts.max_iterations, budget_cost=opts.budget_cost,
            budget_tokens=opts.budget_tokens, xml_tools=opts.xml_tools,
            approval_default=opts.approval_default,
            temporary_messages=list(opts.temporary_messages) or None,
            tool_choices=dict(opts.tools) or None, sandbox=opts.sandbox)
        if the_thread.project_id:
            self._project_kind[the_thread.project_id] = opts.sandbox or self._default_kind()
        run = await wb.manager.start_run(
            the_thread.thread_id, prompt, config,
            agent_id=the_agent.agent_id if the_agent else None)
        return RunHandle(run.run_id, the_thread.thread_id, the_thread.project_id)

    def events(self, run_id: str, after_seq: int = 0) -> AsyncIterator[ev.Event]:
        return self.workbench.manager.subscribe(run_id, after_seq)

    async def stop_run(self, run_id: str, reason: str | None = None) -> None:
        await self.workbench.manager.stop_run(run_id, reason or self.stop_reason)

    async def decide(self, run_id: str, call_id: str, *, approved: bool, reason: str = "",
                     remember: bool = False) -> None:
        # NotFound: decided already (a timeout, a second click); nothing waits any more.
        with contextlib.suppress(NotFound):
            self.workbench.manager.decide(run_id, call_id, approved=approved, reason=reason,
                                          remember=remember)

    async def close(self) -> None:
        if self._workbench is not None:
            await self._workbench.close()

    # ---- sandbox files ----------------------------------------------------------------------
    def _default_kind(self) -> str:
        wb = self.workbench
        return wb.default_sandbox if isinstance(wb, KernelWorkbench) else DEFAULT_SANDBOX

    async def _sandbox(self, project_id: str, *, create: bool) -> Sandbox | None:
        wb = self.workbench
        if not isinstance(wb, KernelWorkbench):
            return None
        kind = self._project_kind.get(project_id) or self._default_kind()
        pool = wb.sandboxes(kind).pool
        if pool is None:
            return None
        project = await asyncio.to_thread(wb.store.get_project, project_id)
        if project.sandbox_id is None and not create:
            return None
        from ..tools.handle import SandboxHandle

        handle = SandboxHandle(pool, wb.store, project_id, _ignore)
        return await handle.get()

    async def read_file(self, project_id: str, path: str) -> bytes:
        """The bytes of a workspace file of the project's sandbox (the files panel)."""
        sandbox = await self._sandbox(project_id, create=False)
        if sandbox is None:
            raise FileNotFoundError(f"{path}: this project has no sandbox")
        return await sandbox.read_file(path)

    async def write_file(self, project_id: str, path: str, data: bytes) -> str | None:
        """Put ``data`` in the project's workspace (``--context`` uploads); the sandbox
        path, or None when the project's sandbox is off or unavailable."""
        from ..sandbox.base import WORKSPACE, SandboxError

        try:
            sandbox = await self._sandbox(project_id, create=True)
            if sandbox is None:
                return None
            await sandbox.write_file(path, data)
        except SandboxError:
            return None
        return f"{WORKSPACE}/{path}"

    def use_sandbox(self, project_id: str, kind: str) -> None:
        """Which backend ``write_file`` / ``read_file`` use for a project before its run."""
        self._project_kind[project_id] = kind


def describe_workbench(client: Any) -> str:
    """A one-line description for notes: where runs execute."""
    if isinstance(client, EmbeddedClient):
        return f"embedded (store {client.workbench.settings.store})"
    return type(client).__name__
