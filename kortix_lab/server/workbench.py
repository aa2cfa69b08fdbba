"""The server's workbench: the server's sandbox tools, and runs that may say "no sandbox".

Per-run choices (``options.tools``, ``options.sandbox: none``) travel in the
run's ``RunConfig`` (``tool_choices``, ``sandbox="none"``), not in this
process's memory: in the shared deployment the run executes on a worker that
only sees its record, and the choices must mean the same there as here.
``Workbench.build_tools`` applies ``tool_choices``; ``sandbox="none"`` is
honoured below (and by the worker's ``SandboxChooser``).

In the shared deployment this workbench never executes a run (its
``RunManager`` dispatches them to the queue); its sandbox provider still
serves the project file routes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..agentpress import events as ev
from ..agentpress.model import ChatModel
from ..agentpress.runner import RunConfig
from ..agentpress.store import Store
from ..config import Settings
from ..runs.manager import Emit, RunContext
from ..workbench import ToolSource, Workbench

if TYPE_CHECKING:
    from ..tools.provider import SandboxTools

NO_SANDBOX = "none"


class ServerWorkbench(Workbench):
    def __init__(self, settings: Settings, *, sandbox: SandboxTools | None,
                 model_factory: Callable[[RunConfig], ChatModel] | None = None,
                 store: Store | None = None,
                 manager_options: dict[str, Any] | None = None) -> None:
        super().__init__(settings, store=store, model_factory=model_factory,
                         tool_providers=[self._sandbox_tools],
                         manager_options=manager_options)
        self.sandbox = sandbox

    async def _sandbox_tools(self, context: RunContext, emit: Emit) -> Sequence[ToolSource]:
        if self.sandbox is None or context.config.sandbox == NO_SANDBOX:
            await emit(ev.Status(code="sandbox_disabled", message=(
                "sandbox disabled: no shell, file, code or image tools in this run")))
            return []
        return await self.sandbox(context, emit)

    async def close(self) -> None:
        await super().close()
        if self.sandbox is not None:
            await self.sandbox.aclose()
