"""The storage seam: records and the ``Store`` Protocol the engine writes through.

The engine never imports a database driver; it gets a ``Store``. Implementations
live in ``kortix_lab.store`` (DuckDB for one machine, Postgres for shared
deployments) and all pass ``tests/store/contract.py``.

Methods are synchronous and thread-safe; async callers hop to a thread (the engine
uses ``_store_pool.in_store_thread``, a pool of its own, or ``asyncio.to_thread``).
That keeps DuckDB (a synchronous driver) simple, and notebooks can call them
directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pandas as pd

MessageType = Literal["user", "assistant", "tool", "status", "summary", "system"]


@dataclass(frozen=True, slots=True)
class Project:
    project_id: str
    name: str
    created_at: datetime
    sandbox_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Thread:
    thread_id: str
    name: str | None
    project_id: str | None
    created_at: datetime
    updated_at: datetime
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message not yet stored. ``content`` is an OpenAI-format message dict when
    ``is_llm_message``; otherwise free-form (status notes shown to users only)."""

    type: MessageType
    content: dict[str, Any]
    is_llm_message: bool = True
    run_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Message:
    message_id: str
    thread_id: str
    seq: int  # position in the thread, strictly increasing, assigned by the store
    type: MessageType
    content: dict[str, Any]
    is_llm_message: bool
    run_id: str | None
    created_at: datetime
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AgentRun:
    run_id: str
    thread_id: str
    status: str  # queued | running | completed | failed | stopped
    model: str
    agent_id: str | None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    cost: float = 0.0
    owner: str | None = None  # "host:pid:start" of the process executing it
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """One version of an agent. Editing an agent makes a new version."""

    name: str
    system_prompt: str = ""
    model: str | None = None
    configured_mcps: list[dict[str, Any]] = field(default_factory=list)
    custom_mcps: list[dict[str, Any]] = field(default_factory=list)
    agentpress_tools: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Agent:
    """One version of an agent: ``version_id`` is this version, ``current_version_id``
    the agent's current one (equal unless an old version was asked for)."""

    agent_id: str
    current_version_id: str
    version_number: int
    config: AgentConfig
    created_at: datetime
    updated_at: datetime
    version_id: str = ""


@dataclass(frozen=True, slots=True)
class RunStart:
    """What ``Store.begin_run`` did: the thread, and either the run it created (with the
    stored message) or the thread's active runs that kept it from creating one."""

    thread: Thread
    busy: list[AgentRun]
    run: AgentRun | None
    message: Message | None


@runtime_checkable
class Store(Protocol):
    # projects
    def create_project(self, name: str, *, metadata: dict[str, Any] | None = None) -> Project: ...
    def get_project(self, project_id: str) -> Project: ...
    def set_project_sandbox(self, project_id: str, sandbox_id: str | None) -> None: ...
    def list_projects(self) -> list[Project]: ...

    # threads
    def create_thread(self, *, name: str | None = None, project_id: str | None = None,
                      metadata: dict[str, Any] | None = None) -> Thread: ...
    def get_thread(self, thread_id: str) -> Thread: ...
    def find_thread(self, name_or_id: str) -> Thread | None: ...
    def list_threads(self, *, project_id: str | None = None) -> list[Thread]: ...
    def rename_thread(self, thread_id: str, name: str) -> Thread: ...
    def delete_thread(self, thread_id: str) -> None: ...

    # messages: one call is one transaction (a step is never half-stored)
    def add_messages(self, thread_id: str, messages: Sequence[NewMessage]) -> list[Message]: ...
    def get_messages(self, thread_id: str, *, last: int | None = None,
                     after_seq: int | None = None, llm_only: bool = False) -> list[Message]: ...
    def get_message(self, message_id: str) -> Message: ...
    def count_messages(self, thread_id: str) -> int: ...

    # runs
    def create_run(self, thread_id: str, *, model: str, agent_id: str | None = None,
                   status: str = "queued", metadata: dict[str, Any] | None = None) -> AgentRun: ...
    def update_run(self, run_id: str, *, status: str | None = None, error: str | None = None,
                   usage: dict[str, int] | None = None, cost: float | None = None,
                   owner: str | None = None, started: bool = False,
                   finished: bool = False) -> AgentRun: ...
    def begin_run(self, thread_id: str, *, model: str, agent_id: str | None = None,
                  metadata: dict[str, Any] | None = None, owner: str | None = None,
                  message: NewMessage | None = None, ignore: Sequence[str] = (),
                  ) -> RunStart:
        """In one transaction: unless the thread has queued/running runs (but those in
        ``ignore``), create a queued run with ``owner`` and store ``message`` (its
        ``run_id`` defaulting to the new run's); else return them in ``busy`` and create
        nothing. Two concurrent calls on one thread never both create a run."""
        ...
    def get_run(self, run_id: str) -> AgentRun: ...
    def list_runs(self, *, thread_id: str | None = None,
                  statuses: Sequence[str] | None = None) -> list[AgentRun]: ...

    # agents (versioned)
    def create_agent(self, config: AgentConfig) -> Agent: ...
    def update_agent(self, agent_id: str, config: AgentConfig) -> Agent: ...
    def get_agent(self, agent_id: str, *, version_id: str | None = None) -> Agent: ...
    def find_agent(self, name_or_id: str) -> Agent | None: ...
    def list_agents(self) -> list[Agent]: ...
    def list_agent_versions(self, agent_id: str) -> list[Agent]: ...
    def delete_agent(self, agent_id: str) -> None: ...

    # data frames for notebooks
    def thread_frame(self, thread_id: str) -> pd.DataFrame: ...
    def runs_frame(self) -> pd.DataFrame: ...
    def threads_frame(self) -> pd.DataFrame: ...

    def close(self) -> None: ...
