"""The workbench: a store, a run manager, a model factory and the tools, wired once.

Every surface (the ``kortix-lab`` command, the ``%%agent`` magic, the server
extension) builds one of these instead of wiring the parts itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from .agentpress import events as ev
from .agentpress.builtin_tools import ExpandMessageTool, MessageTool
from .agentpress.errors import ConfigError
from .agentpress.model import ChatModel
from .agentpress.registry import ToolRegistry
from .agentpress.runner import RunConfig
from .agentpress.store import Agent, AgentRun, Store, Thread
from .agentpress.tool import Tool, ToolSpec
from .config import Settings
from .runs.manager import Emit, RunContext, RunManager

if TYPE_CHECKING:
    from .mcp.manager import McpManager

ToolSource = Tool | ToolSpec | Callable[..., Any]
# A source of tools prepared per run (MCP servers, a sandbox): given the run and a way to
# report what could not be had, it returns the tools to register. It must not raise for
# an unavailable service: it reports a status and returns what it has.
ToolProvider = Callable[[RunContext, Emit], Awaitable[Sequence[ToolSource]]]


def make_model(config: RunConfig, settings: Settings) -> ChatModel:
    """A LiteLLM-backed model; the scripted provider is registered when asked for."""
    from .agentpress.llm import LiteLLMModel

    if config.model.startswith("scripted/") or (
            settings.fallback_model or "").startswith("scripted/"):
        from .models.scripted import register_scripted_provider

        register_scripted_provider()
    return LiteLLMModel(retries=settings.llm_retries, fallback_model=settings.fallback_model)


def default_tool_providers(settings: Settings) -> list[ToolProvider]:
    """The sandbox tools on the configured backend (``--sandbox`` may change it per run)."""
    from .tools.backends import SandboxChooser

    return [SandboxChooser(settings.sandbox)]


class Workbench:
    def __init__(self, settings: Settings | None = None, *, store: Store | None = None,
                 tools: Sequence[ToolSource] = (),
                 tool_providers: Sequence[ToolProvider] | None = None,
                 model_factory: Callable[[RunConfig], ChatModel] | None = None,
                 mcp_manager: McpManager | None = None,
                 manager_options: dict[str, Any] | None = None) -> None:
        """``tool_providers`` None means the defaults (sandbox tools on the configured
        backend). MCP tools are always provided: an agent without servers costs nothing.
        A given ``mcp_manager`` is shared and left open on ``close``.
        ``manager_options`` go to the ``RunManager`` (the shared deployment's event log,
        control channel, leases, queue)."""
        self.settings = settings or Settings()
        if store is None:
            from .store import open_store

            store = open_store(self.settings.store)
        self.store = store
        self._tools: list[ToolSource] = list(tools)
        self._providers: list[ToolProvider] = list(
            default_tool_providers(self.settings) if tool_providers is None else tool_providers)
        from .mcp.manager import McpManager
        from .mcp.provider import mcp_tools

        self._own_mcp = mcp_manager is None
        self.mcp = mcp_manager or McpManager()
        self._providers.append(mcp_tools(self.mcp))
        options: dict[str, Any] = {"max_parallel": self.settings.max_parallel_runs,
                                   **(manager_options or {})}
        self.manager = RunManager(
            store, model_factory=model_factory or (lambda c: make_model(c, self.settings)),
            tools_factory=self.build_tools, **options)
        self.manager.recover_orphans()

    def add_tool(self, tool: ToolSource) -> None:
        """Make a tool (a ``Tool`` group or a decorated function) available to every run."""
        ToolRegistry().register(tool)  # fail now, not at the first run, on a bad schema
        self._tools.append(tool)

    def add_tool_provider(self, provider: ToolProvider) -> None:
        self._providers.append(provider)

    async def build_tools(self, context: RunContext, emit: Emit) -> ToolRegistry:
        """Built-ins, then the workbench's tools, then each provider's (in parallel); then
        the agent's tool set, then the run's own choices (``RunConfig.tool_choices``).

        The choices ride in the run's config, so they reach a worker in another process
        exactly as they reach a run here; a name that matches nothing is reported as a
        ``status`` event (``tools_option``)."""
        registry = ToolRegistry()
        registry.register(MessageTool())
        registry.register(ExpandMessageTool(context.store, context.thread_id))
        provided = await asyncio.gather(*(p(context, emit) for p in self._providers))
        for tool in [*self._tools, *(t for group in provided for t in group)]:
            registry.register(tool, replace=True)
        enabled = _enabled_tools(context)
        if enabled is not None:
            for name in registry.names():
                spec = registry.get(name)
                group = spec.group if spec is not None else ""
                if spec is not None and "mcp_server" in spec.metadata:
                    continue  # MCP tools are chosen per server in the agent's MCP config
                if name not in enabled and group not in enabled and name not in ALWAYS_ON:
                    registry.unregister(name)
        if context.config.tool_choices:
            for problem in apply_tool_choices(registry, context.config.tool_choices):
                await emit(ev.Status(code="tools_option", message=problem))
        return registry

    def resolve_thread(self, name_or_id: str | None, *, create: bool = True,
                       project_id: str | None = None) -> Thread:
        """Find a thread by name or id, or make one; a new thread gets its own project
        (the project owns the sandbox) unless ``project_id`` is given."""
        if name_or_id:
            found = self.store.find_thread(name_or_id)
            if found is not None:
                return found
            if not create:
                raise ConfigError(f"no thread named or with id {name_or_id!r}")
        if project_id is None:
            project_id = self.store.create_project(name_or_id or "untitled").project_id
        return self.store.create_thread(name=name_or_id, project_id=project_id)

    def resolve_agent(self, name_or_id: str | None) -> Agent | None:
        if not name_or_id:
            return None
        agent = self.store.find_agent(name_or_id)
        if agent is None:
            raise ConfigError(f"no agent named or with id {name_or_id!r}")
        return agent

    def run_config(self, *, agent: Agent | None = None, model: str | None = None,
                   **overrides: Any) -> RunConfig:
        base_model = model or (agent.config.model if agent else None) or self.settings.model
        config = RunConfig(model=base_model, max_iterations=self.settings.max_iterations,
                           api_base=self.settings.api_base)
        if agent is not None:
            if agent.config.system_prompt:
                config.system_prompt = agent.config.system_prompt
            config.approval_policy = approval_policy(agent.config.agentpress_tools)
        for key, value in overrides.items():
            if value is None:
                continue
            if not hasattr(config, key):
                raise ConfigError(f"unknown run option {key!r}")
            setattr(config, key, value)
        return config

    async def start(self, prompt: str, *, thread: str | None = None, agent: str | None = None,
                    model: str | None = None, **overrides: Any) -> AgentRun:
        the_thread = await asyncio.to_thread(self.resolve_thread, thread)
        the_agent = await asyncio.to_thread(self.resolve_agent, agent)
        config = self.run_config(agent=the_agent, model=model, **overrides)
        return await self.manager.start_run(
            the_thread.thread_id, prompt, config,
            agent_id=the_agent.agent_id if the_agent else None)

    async def close(self) -> None:
        await self.manager.shutdown("the workbench closed")
        for provider in self._providers:
            aclose = getattr(provider, "aclose", None)
            if aclose is not None:
                await aclose()
        if self._own_mcp:
            await self.mcp.aclose()
        self.store.close()


# Tools a run always has, whatever an agent or a --tools option says.
ALWAYS_ON = frozenset({"ask", "complete", "expand_message"})


def apply_tool_choices(registry: ToolRegistry, choices: dict[str, bool]) -> list[str]:
    """Enable/disable tools by name or group; returns what could not be applied."""
    exclusive = choices.get("*") is False
    known = set(registry.names())
    known |= {spec.group for name in registry.names() if (spec := registry.get(name))}
    problems = [f"--tools: no tool or group named {name!r} in this run"
                for name in choices if name != "*" and name not in known]
    for name in registry.names():
        spec = registry.get(name)
        if name in ALWAYS_ON or spec is None:
            continue
        verdict = choices.get(name, choices.get(spec.group))
        if verdict is False or (exclusive and verdict is None):
            registry.unregister(name)
    return problems


def approval_policy(agentpress_tools: dict[str, Any]) -> dict[str, str]:
    """``{"tool": {"approval": "ask"}}`` entries of an agent's tools, checked."""
    from .agentpress.approval import POLICIES

    policy = {}
    for name, entry in agentpress_tools.items():
        if isinstance(entry, dict) and "approval" in entry:
            value = str(entry["approval"])
            if value not in POLICIES:
                raise ConfigError(f"agent tool {name!r}: approval must be one of "
                                  f"{', '.join(sorted(POLICIES))}, not {value!r}")
            policy[name] = value
    return policy


def _enabled_tools(context: RunContext) -> set[str] | None:
    """The agent's ``agentpress_tools`` (Kortix's ``{name: bool}`` or ``{name: {"enabled":
    bool}}``); None when it says nothing, which enables every tool."""
    if context.agent_id is None:
        return None
    agent = context.store.get_agent(context.agent_id)  # fast: one indexed row
    tools = agent.config.agentpress_tools
    if not tools:
        return None
    return {name for name, on in tools.items()
            if (on.get("enabled", True) if isinstance(on, dict) else bool(on))}
