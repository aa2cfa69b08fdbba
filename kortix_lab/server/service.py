"""What the API does, with no HTTP in it.

Handlers parse a request, call one method here and write what it returns; all
decisions (which thread, which agent, may this run start, what a page of
messages is) live here, where they can be read and tested without a server.
The store is synchronous (DuckDB, Postgres), so every store call hops to a thread.

The same service runs both deployments; only its ``RunManager`` differs. In
the shared one (``server/shared.py``) the manager dispatches runs to workers,
so "is this run active", "how many runs are active", stop and approval answer
for runs anywhere — ``RunManager.is_active`` / ``count_active`` /
``stop_run`` / ``send_decision`` — and a run's events come from Redis, so any
server relays any run of its account. Pending approvals of a run on a worker
are read from its event log (requested, not yet decided).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any, cast

from ..agentpress import events as ev
from ..agentpress._store_pool import in_store_thread
from ..agentpress.errors import ConfigError, NotFound
from ..agentpress.events import Event
from ..agentpress.store import Agent, AgentConfig, AgentRun, Project, Thread
from ..workbench import approval_policy
from . import models as m
from .admission import Admission
from .errors import ApiError
from .serialize import agent_json, message_json, project_json, run_json, thread_json
from .workbench import NO_SANDBOX, ServerWorkbench

log = logging.getLogger("kortix_lab.server")

MAX_PAGE = 1000
PROJECT_CACHE = 10_000
# A relay whose Redis log vanished (a flush) while its run is still going waits this
# long between looks: the run's next event recreates the log.
LOG_GONE_POLL_S = 0.5


class Service:
    def __init__(self, workbench: ServerWorkbench, admission: Admission, *,
                 sandbox_backend: str = "local", account_id: str | None = None) -> None:
        self.workbench = workbench
        self.store = workbench.store
        self.manager = workbench.manager
        self.admission = admission
        self.sandbox_backend = sandbox_backend
        self.account_id = account_id
        # Runs execute on workers; events come from Redis (shared deployment).
        self.shared = self.manager.dispatching
        # thread -> project: fixed for a thread's life, and asked for on every start;
        # remembering it saves a store round trip on the path to a run's first event.
        self._projects: OrderedDict[str, str | None] = OrderedDict()

    # ---- threads ------------------------------------------------------------------------
    async def create_thread(self, body: m.ThreadCreate) -> tuple[dict[str, Any], bool]:
        """The thread and whether it is new; a new thread gets its own project (which
        owns its sandbox) unless it names one."""
        if body.get_or_create and body.name:
            found = await in_store_thread(self.store.find_thread, body.name)
            if found is not None:
                return await self._thread_out(found), False

        def create() -> Thread:
            project_id = body.project_id
            if project_id is None:
                project_id = self.store.create_project(body.name or "untitled").project_id
            return self.store.create_thread(name=body.name, project_id=project_id,
                                            metadata=body.metadata)

        thread = await in_store_thread(create)
        self._remember(thread)
        return thread_json(thread), True

    async def list_threads(self, project_id: str | None) -> dict[str, Any]:
        threads = await in_store_thread(self.store.list_threads, project_id=project_id)
        return {"threads": [thread_json(t) for t in threads]}

    async def get_thread(self, thread_id: str) -> dict[str, Any]:
        return await self._thread_out(await in_store_thread(self.store.get_thread, thread_id))

    async def rename_thread(self, thread_id: str, body: m.ThreadUpdate) -> dict[str, Any]:
        thread = await in_store_thread(self.store.rename_thread, thread_id, body.name)
        return await self._thread_out(thread)

    async def delete_thread(self, thread_id: str) -> None:
        await in_store_thread(self.store.get_thread, thread_id)
        active = await self._active_run_of(thread_id)
        if active is not None:
            raise ApiError(409, f"thread {thread_id} has an active run ({active}); stop it "
                                "before deleting the thread", run_id=active)
        await in_store_thread(self.store.delete_thread, thread_id)
        self._projects.pop(thread_id, None)

    async def messages(self, thread_id: str, *, after_seq: int, limit: int) -> dict[str, Any]:
        """One page in seq order. The store has no "first N after", so a page reads the
        rest of the thread after ``after_seq``; threads are hundreds of messages, not
        millions, and deltas never reach the store."""
        if not 1 <= limit <= MAX_PAGE:
            raise ConfigError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
        if after_seq < 0:
            raise ConfigError(f"after_seq must be >= 0, got {after_seq}")

        def read() -> tuple[list[Any], int]:
            self.store.get_thread(thread_id)
            rest = self.store.get_messages(thread_id, after_seq=after_seq)
            return rest, self.store.count_messages(thread_id)

        rest, total = await in_store_thread(read)
        page = rest[:limit]
        more = len(rest) > limit
        return {"messages": [message_json(msg) for msg in page], "total": total,
                "next_after_seq": page[-1].seq if more and page else None}

    async def thread_runs(self, thread_id: str) -> dict[str, Any]:
        def read() -> list[AgentRun]:
            self.store.get_thread(thread_id)
            return self.store.list_runs(thread_id=thread_id)

        runs = await in_store_thread(read)
        return {"runs": [await self._run_out(r) for r in runs]}

    async def _thread_out(self, thread: Thread) -> dict[str, Any]:
        self._remember(thread)
        return thread_json(thread, active_run_id=await self._active_run_of(thread.thread_id))

    async def _active_run_of(self, thread_id: str) -> str | None:
        runs = await in_store_thread(self.store.list_runs, thread_id=thread_id,
                                       statuses=["queued", "running"])
        return next((r.run_id for r in runs if self.manager.is_active(r)), None)

    # ---- runs ---------------------------------------------------------------------------
    async def start_run(self, thread_id: str, body: m.RunStart, *,
                        request_id: str = "") -> dict[str, Any]:
        overrides = self._run_overrides(body.options)
        async with self.admission.admit():
            agent = None
            if body.agent_id is not None:
                agent = await in_store_thread(self._agent_named, body.agent_id)
            config = self.workbench.run_config(agent=agent, model=body.model, **overrides)
            # the manager reads the thread first: NotFound (404) when there is none
            run = await self.manager.start_run(thread_id, body.message, config,
                                               agent_id=agent.agent_id if agent else None)
        log.info(json.dumps({"event": "run_started", "request_id": request_id,
                             "run_id": run.run_id, "thread_id": run.thread_id,
                             "model": run.model}))
        out = run_json(run, active=True)  # just queued: nothing can wait for a decision yet
        out["project_id"] = await self._project_of(thread_id)
        return out

    async def _project_of(self, thread_id: str) -> str | None:
        if thread_id not in self._projects:
            thread = await in_store_thread(self.store.get_thread, thread_id)
            self._remember(thread)
        return self._projects[thread_id]

    def _remember(self, thread: Thread) -> None:
        self._projects[thread.thread_id] = thread.project_id
        while len(self._projects) > PROJECT_CACHE:
            self._projects.popitem(last=False)

    def _agent_named(self, name_or_id: str | None) -> Agent | None:
        if name_or_id is None:
            return None
        agent = self.store.find_agent(name_or_id)
        if agent is None:
            raise NotFound(f"no agent named or with id {name_or_id!r}")
        return agent

    def _run_overrides(self, options: m.RunStartOptions) -> dict[str, Any]:
        """``RunConfig`` overrides. Everything a run needs rides in its config (tool
        choices, the sandbox backend): in the shared deployment a worker executes it and
        sees nothing else of this request."""
        if options.sandbox not in (None, NO_SANDBOX, self.sandbox_backend):
            raise ConfigError(f"options.sandbox={options.sandbox!r}: this server's sandboxes "
                              f"are {self.sandbox_backend!r} (KortixLabApp.sandbox_backend); "
                              "a run may use them or none")
        fields = ("api_base", "max_iterations", "budget_cost", "budget_tokens", "xml_tools",
                  "approval_default")
        overrides = {name: getattr(options, name) for name in fields}
        overrides["sandbox"] = NO_SANDBOX if options.sandbox == NO_SANDBOX \
            else self.sandbox_backend
        if options.tools:
            overrides["tool_choices"] = dict(options.tools)
        if options.temporary_messages:
            overrides["temporary_messages"] = options.temporary_messages
        return overrides

    async def get_run(self, run_id: str) -> dict[str, Any]:
        return await self._run_out(await in_store_thread(self.store.get_run, run_id))

    async def stop_run(self, run_id: str, body: m.RunStop) -> dict[str, Any]:
        """Wherever the run executes: here, or (shared) on a worker, through the control
        channel and the stop recorded on the run in Postgres; a run still queued is
        ended at once."""
        await in_store_thread(self.store.get_run, run_id)  # 404, or another account's
        stopping = await self.manager.stop_run(run_id, body.reason)
        run = await in_store_thread(self.store.get_run, run_id)
        return {"run_id": run_id, "stopping": stopping, "status": run.status}

    async def decide(self, run_id: str, body: m.ApprovalDecision) -> dict[str, Any]:
        run = await in_store_thread(self.store.get_run, run_id)
        if self.shared and (not self.manager.is_active(run) or
                            body.call_id not in await self._logged_pending(run_id)):
            raise ApiError(409, f"run {run_id} has no approval request {body.call_id!r} "
                                "waiting")
        try:
            await self.manager.send_decision(run_id, body.call_id, approved=body.approved,
                                             reason=body.reason, remember=body.remember)
        except NotFound as exc:  # the run exists; the question is gone or never was
            raise ApiError(409, str(exc)) from None
        return {"run_id": run_id, "call_id": body.call_id, "approved": body.approved}

    async def open_stream(self, run_id: str, after_seq: int) -> AsyncIterator[Event]:
        """The run's events after ``after_seq`` (404: no such run; 410: its events are no
        longer kept, e.g. it ran before this server started, or its Redis log expired)."""
        if self.shared:
            return await self._open_shared_stream(run_id, after_seq)
        if self.manager.events.has_run(run_id):  # the common case needs no store read
            return self.manager.subscribe(run_id, after_seq)
        run = await in_store_thread(self.store.get_run, run_id)
        if not self.manager.events.has_run(run_id):
            raise _log_gone(run)
        return self.manager.subscribe(run_id, after_seq)

    async def _open_shared_stream(self, run_id: str, after_seq: int) -> AsyncIterator[Event]:
        """Any run of the account, whichever server started it: the store says whose run
        it is (another account's is 404 even though its log is in the same Redis)."""
        run = await in_store_thread(self.store.get_run, run_id)
        if not await in_store_thread(self.manager.events.has_run, run_id):
            raise _log_gone(run)
        return self._follow(run_id, after_seq)

    async def _follow(self, run_id: str, after_seq: int) -> AsyncIterator[Event]:
        """Relay from Redis. If the log vanishes while followed (Redis flushed), the store
        decides: a finished run's stream ends with a ``run_finished`` from its record; a
        run still going is followed again once its next event recreates the log."""
        last = after_seq
        while True:
            events = self.manager.subscribe(run_id, last)
            try:
                async for event in events:
                    last = event.seq
                    yield event
                return
            except KeyError:  # RunLogGone, or gone between the check and the read
                run = await in_store_thread(self.store.get_run, run_id)
                if not self.manager.is_active(run):
                    yield _finished_from_record(run, last + 1)
                    return
                await asyncio.sleep(LOG_GONE_POLL_S)
            finally:
                await _aclose(events)

    async def _run_out(self, run: AgentRun) -> dict[str, Any]:
        active = self.manager.is_active(run)
        pending: list[str] = []
        if active:
            pending = self.manager.pending_approvals(run.run_id)
            if not pending and self.shared:  # it executes on a worker: ask its log
                pending = await self._logged_pending(run.run_id)
        return run_json(run, active=active, pending=pending)

    async def _logged_pending(self, run_id: str) -> list[str]:
        """Approval requests of the run's log with no decision yet, oldest first."""
        pending: dict[str, None] = {}
        events = self.manager.events.read(run_id, 0, follow=False)
        try:
            async for event in events:
                if isinstance(event, ev.ApprovalRequested):
                    pending[event.call_id] = None
                elif isinstance(event, ev.ApprovalDecided):
                    pending.pop(event.call_id, None)
        except KeyError:  # the log is gone: nothing can be answered through it
            return []
        finally:
            await _aclose(events)
        return list(pending)

    # ---- agents -------------------------------------------------------------------------
    async def list_agents(self) -> dict[str, Any]:
        agents = await in_store_thread(self.store.list_agents)
        return {"agents": [agent_json(a) for a in agents]}

    async def create_agent(self, body: m.AgentCreate) -> dict[str, Any]:
        config = _sealed(AgentConfig(**body.model_dump()))
        return agent_json(await in_store_thread(self.store.create_agent, config))

    async def get_agent(self, agent_id: str, version_id: str | None = None) -> dict[str, Any]:
        agent = await in_store_thread(self.store.get_agent, agent_id, version_id=version_id)
        return agent_json(agent)

    async def update_agent(self, agent_id: str, body: m.AgentUpdate | m.AgentCreate
                           ) -> dict[str, Any]:
        """Every update is a new version; ``current_version_id`` moves to it."""
        changes = body.model_dump(exclude_unset=isinstance(body, m.AgentUpdate))
        changes = {k: v for k, v in changes.items() if v is not None or k == "model"}

        def update() -> Agent:
            current = self.store.get_agent(agent_id)
            return self.store.update_agent(agent_id, _sealed(replace(current.config, **changes)))

        return agent_json(await in_store_thread(update))

    async def delete_agent(self, agent_id: str) -> None:
        await in_store_thread(self.store.delete_agent, agent_id)

    async def agent_versions(self, agent_id: str) -> dict[str, Any]:
        versions = await in_store_thread(self.store.list_agent_versions, agent_id)
        return {"versions": [agent_json(a) for a in versions]}

    # ---- projects -----------------------------------------------------------------------
    async def list_projects(self) -> dict[str, Any]:
        projects = await in_store_thread(self.store.list_projects)
        return {"projects": [project_json(p) for p in projects]}

    async def create_project(self, body: m.ProjectCreate) -> dict[str, Any]:
        project = await in_store_thread(self.store.create_project, body.name,
                                          metadata=body.metadata)
        return project_json(project)

    async def get_project(self, project_id: str) -> Project:
        return await in_store_thread(self.store.get_project, project_id)

    # ---- meta ---------------------------------------------------------------------------
    async def status(self) -> dict[str, Any]:
        """In the shared deployment ``active_runs`` and ``max_parallel_runs`` are the
        account's, across every server."""
        from .. import __version__
        from .openapi import API_VERSION

        return {"api_version": API_VERSION, "version": __version__,
                "default_model": self.workbench.settings.model,
                "active_runs": await self.manager.count_active(),
                "max_parallel_runs": self.admission.max_parallel,
                "max_queued_runs": self.admission.max_queued,
                "sandbox_backend": self.sandbox_backend,
                "deployment": "shared" if self.shared else "embedded",
                "account_id": self.account_id}


def _log_gone(run: AgentRun) -> ApiError:
    return ApiError(410, f"the events of run {run.run_id} are no longer kept (it ran before "
                         f"this server started, or long ago); its status is {run.status}",
                    status_of_run=run.status)


def _finished_from_record(run: AgentRun, seq: int) -> Event:
    """The end of a stream whose log is gone, told from the run's stored record."""
    status = cast(ev.FinalStatus, run.status if run.status in ("completed", "failed",
                                                               "stopped") else "failed")
    return ev.RunFinished(status=status, thread_id=run.thread_id, reason=run.error or "",
                          usage=dict(run.usage), cost=run.cost).stamped(run.run_id, seq)


async def _aclose(events: AsyncIterator[Event]) -> None:
    """Close a log reader however its iteration ended: a generator left suspended would
    hold its Redis connection until it is collected."""
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()


def _sealed(config: AgentConfig) -> AgentConfig:
    """Check the tool policy now (400, not a failed run later) and encrypt MCP
    credentials before they reach the store."""
    from ..mcp.secrets import encrypt_entry

    approval_policy(config.agentpress_tools)
    entries = [*config.configured_mcps, *config.custom_mcps]
    if "\u2022\u2022\u2022\u2022" in json.dumps(entries, ensure_ascii=False):
        raise ConfigError("an MCP entry holds a masked credential (••••): send the secret "
                          "itself, or leave configured_mcps/custom_mcps out to keep them")
    return replace(config,
                   configured_mcps=[encrypt_entry(e) for e in config.configured_mcps],
                   custom_mcps=[encrypt_entry(e) for e in config.custom_mcps])
