"""The agent loop: call the model, run its tools, feed results back, decide to go on.

A run ends, with a final status and a reason, on the first of:
- a terminating tool (``ask``, ``complete`` — any tool marked ``terminates``) → completed
- a response with no tool calls (the model is done)                          → completed
- a stop signal, honoured within one event                                   → stopped
- a budget (tokens or cost for this run)                                     → stopped
- the iteration limit                                                        → stopped
- a model error after retries and fallback, or a bug                         → failed
A response cut off for length is continued automatically (bounded).

Each step's messages (the assistant message and its tool results) are stored
in one transaction before the step's ``assistant_message`` event, so a crash
never leaves half a step and every event a client saw is backed by the store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from . import events as ev
from ._store_pool import in_store_thread
from .approval import DEFAULT_APPROVAL_TIMEOUT, ApprovalGate, AskUser
from .errors import LLMError
from .model import ChatModel, ModelRequest, Usage
from .processor import ResponseProcessor, StepResult, Strategy
from .registry import ToolRegistry
from .scope import RunScope, enter_scope, exit_scope
from .store import Store
from .thread_manager import ThreadManager

Emit = Callable[[ev.Event], Awaitable[None]]
FinalStatus = Literal["completed", "failed", "stopped"]

DEFAULT_SYSTEM_PROMPT = (
    "You are Kortix Lab, an agent that works in a data scientist's notebook. Use the tools "
    "you have. When the task is done, call `complete` with a short summary; when you need "
    "the user's input, call `ask`."
)


@dataclass(slots=True)
class RunConfig:
    model: str
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_iterations: int = 25
    xml_tools: bool = False
    tool_strategy: Strategy = "parallel"
    max_auto_continues: int = 3
    budget_tokens: int | None = None
    budget_cost: float | None = None
    api_base: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    model_params: dict[str, Any] = field(default_factory=dict)
    # Sent with every call of the run, before the user's prompt, never stored
    # (a notebook's --context). Tools add one-call messages through the run scope.
    temporary_messages: list[dict[str, Any]] = field(default_factory=list)
    context_tokens: int | None = None  # override the model's context window
    approval_policy: dict[str, str] = field(default_factory=dict)  # tool -> auto|ask|deny
    approval_default: str | None = None  # applies to every tool not named in the policy
    approval_timeout: float = DEFAULT_APPROVAL_TIMEOUT
    sandbox: str | None = None  # backend for this run's sandbox tools (local|daytona|none)
    mcp_servers: list[dict[str, Any]] = field(default_factory=list)  # extra, this run only
    # Enable (True) / disable (False) tools by name or group for this run; {"*": False}
    # keeps only those named True (the magic's --tools, the API's options.tools).
    tool_choices: dict[str, bool] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunOutcome:
    status: FinalStatus
    reason: str
    usage: Usage
    iterations: int


class AgentRunner:
    """Runs one turn on a thread: make one per run. ``stop`` is that run's stop signal."""

    def __init__(self, *, store: Store, model: ChatModel, registry: ToolRegistry, emit: Emit,
                 run_id: str, thread_id: str, config: RunConfig,
                 stop: asyncio.Event | None = None,
                 thread_manager: ThreadManager | None = None,
                 project_id: str | None = None, announce: bool = True,
                 ask_user: AskUser | None = None) -> None:
        self._store = store
        self._model = model
        self._registry = registry
        self._emit = emit
        self.run_id = run_id
        self.thread_id = thread_id
        self.config = config
        self.stop = stop or asyncio.Event()
        self._threads = thread_manager or ThreadManager(store)
        self.usage = Usage()
        self.scope = RunScope(run_id, thread_id, emit, project_id)
        self._announce = announce
        self.approvals = ApprovalGate(config.approval_policy, config.approval_default,
                                      config.approval_timeout, ask_user)

    async def run(self) -> RunOutcome:
        """Emit ``run_started`` … ``run_finished`` around the loop; never raises but
        ``CancelledError`` (after ``run_finished`` with status stopped)."""
        started = time.perf_counter()
        token = enter_scope(self.scope)  # tool tasks started from here inherit it
        try:
            outcome = await self._run_announced(started)
        finally:
            exit_scope(token)
        return outcome

    async def _run_announced(self, started: float) -> RunOutcome:
        if self._announce:
            await self._emit(ev.RunStarted(thread_id=self.thread_id, model=self.config.model))
        try:
            outcome = await self._loop()
        except asyncio.CancelledError:
            await self._finish(RunOutcome("stopped", "cancelled", self.usage, 0), started)
            raise
        except Exception as exc:  # a bug must end the run visibly, not hang it
            await self._emit(ev.ErrorEvent(code="internal_error",
                                           message=f"{type(exc).__name__}: {exc}"))
            outcome = RunOutcome("failed", f"internal error: {type(exc).__name__}: {exc}",
                                 self.usage, 0)
        await self._finish(outcome, started)
        return outcome

    async def _loop(self) -> RunOutcome:
        config = self.config
        continues = 0
        iteration = 0
        try:
            while True:
                if self.stop.is_set():
                    return self._outcome("stopped", "stopped by request", iteration)
                if iteration >= config.max_iterations:
                    return self._outcome("stopped", "reached the iteration limit "
                                         f"({config.max_iterations})", iteration)
                iteration += 1
                step = await self._step()
                self.usage = self.usage + step.usage
                await self._store_step(step)
                if step.stopped:
                    return self._outcome("stopped", "stopped by request", iteration)
                if (tool := step.terminating_tool) is not None:
                    return self._outcome("completed", f"the agent called {tool}", iteration)
                if (over := _over_budget(config, self.usage)) is not None:
                    return self._outcome("stopped", over, iteration)
                if step.finish_reason == "length" and not step.executions:
                    if continues >= config.max_auto_continues:
                        return self._outcome("stopped", "the reply was cut off for length "
                                             f"{continues + 1} times", iteration)
                    continues += 1
                    await self._emit(ev.Status(code="auto_continue", message=(
                        f"the reply hit the length limit; continuing ({continues}/"
                        f"{config.max_auto_continues})")))
                    continue
                if not step.executions:
                    return self._outcome("completed", "the agent finished its reply", iteration)
        except LLMError as exc:
            await self._emit(ev.ErrorEvent(code="llm_error", message=str(exc)))
            return self._outcome("failed", f"model call failed: {exc}", iteration)

    def _outcome(self, status: FinalStatus, reason: str, iterations: int) -> RunOutcome:
        return RunOutcome(status, reason, self.usage, iterations)

    async def _step(self) -> StepResult:
        config = self.config
        system = config.system_prompt
        if config.xml_tools and len(self._registry):
            system = f"{system}\n\n{self._registry.xml_usage()}"
        messages, report = await in_store_thread(
            self._threads.build_prompt, self.thread_id, system_prompt=system,
            model=config.model, context_messages=config.temporary_messages,
            temporary_messages=self.scope.take_temporary_messages(),
            context_tokens=config.context_tokens)
        if report.trimmed or report.omitted:
            await self._emit(ev.Status(code="context_trimmed", message=report.describe()))
        request = ModelRequest(
            model=config.model, messages=messages,
            tools=None if config.xml_tools or not len(self._registry)
            else self._registry.openai_schemas(),
            api_base=config.api_base, max_tokens=config.max_tokens,
            temperature=config.temperature, extra=dict(config.model_params))
        processor = ResponseProcessor(self._registry, self._emit, xml_tools=config.xml_tools,
                                      strategy=config.tool_strategy, stop=self.stop,
                                      approvals=self.approvals)
        return await processor.process(self._model.stream(request))

    async def _store_step(self, step: StepResult) -> None:
        if not step.text and not step.executions:
            return
        stored = await in_store_thread(self._store.add_messages, self.thread_id,
                                       step.messages(self.run_id))
        self._threads.remember(self.thread_id, stored)
        await self._emit(ev.AssistantMessage(
            message_id=stored[0].message_id, text=step.text,
            tool_calls=[{"id": ex.call_id, "name": ex.name, "arguments": ex.arguments,
                         "format": ex.format} for ex in step.executions]))

    async def _finish(self, outcome: RunOutcome, started: float) -> None:
        await self._emit(ev.RunFinished(
            status=outcome.status, thread_id=self.thread_id, reason=outcome.reason,
            usage=outcome.usage.as_dict(), cost=round(outcome.usage.cost, 8),
            duration_ms=round((time.perf_counter() - started) * 1000, 3)))


def _over_budget(config: RunConfig, usage: Usage) -> str | None:
    if config.budget_tokens is not None and usage.total_tokens > config.budget_tokens:
        return (f"token budget reached: {usage.total_tokens} tokens used, budget "
                f"{config.budget_tokens}")
    if config.budget_cost is not None and usage.cost > config.budget_cost:
        return f"cost budget reached: ${usage.cost:.4f} spent, budget ${config.budget_cost:.4f}"
    return None
