"""Real Redis and Postgres for the shared-deployment tests (see tests/support/services.py),
and the harness of the worker tests (``tests/shared/test_workers*.py``): real
``kortix-lab worker`` processes beside a front ``Workbench`` that queues runs.

* ``WorkerProcess`` — one ``kortix-lab worker`` (Dramatiq's master and its worker
  processes, in a session of their own so ``kill9`` takes them all, like a machine
  dying); its output goes to a log file, quoted when a test fails.
* ``Deployment`` — one Postgres database, one Redis key prefix (and so one queue)
  and the settings every worker and front of a test share; short leases and sweep
  intervals so a dead worker's runs are swept within seconds.
* ``Front`` — what a Jupyter server holds: a ``Workbench`` whose manager dispatches
  to the queue, with the Redis event log, control channel and leases.
* ``Follower`` — one client's stream of a run (``RedisEventLog.read`` from seq 0).
* ``check_stream`` / ``check_thread`` — the invariants every run must keep.

Deadlines here are generous timeouts that fail a test, never performance checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from kortix_lab.agentpress import events as ev
from kortix_lab.agentpress.store import AgentRun
from kortix_lab.config import Settings, SharedSettings
from tests.support.services import (  # noqa: F401  (fixtures, by name)
    fresh_database,
    new_account,
    pg_admin_url,
    pg_database,
    private_postgres,
    private_redis,
    redis_prefix,
    redis_url,
)

ROOT = Path(__file__).resolve().parents[2]
TERMINAL = ("completed", "failed", "stopped")
READY = re.compile(r"kortix-lab worker (\S+) ready")


def kortix_lab_command() -> list[str]:
    script = Path(sys.executable).parent / "kortix-lab"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from kortix_lab.cli import main; "
                                  "sys.exit(main())"]


def pid_of(owner: str | None) -> int:
    """The pid in a run owner ``host:pid:start``."""
    assert owner, "the run has no owner"
    return int(owner.rsplit(":", 2)[1])


def _session_pids(sid: int) -> set[int]:
    """Processes of one session (the worker's master and the processes it forked)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[3]) == sid:  # state, ppid, pgrp, session
            found.add(int(entry.name))
    return found


class WorkerProcess:
    """One ``kortix-lab worker --processes N --threads M --grace S``."""

    def __init__(self, env: dict[str, str], log_path: Path, *, processes: int = 1,
                 threads: int = 4, grace_s: float = 5.0) -> None:
        self.log_path = log_path
        self.processes = processes
        self.argv = [*kortix_lab_command(), "worker", "--processes", str(processes),
                     "--threads", str(threads), "--grace", str(grace_s)]
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(self.argv, env=env, cwd=ROOT, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.killed = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self, tail: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def owners(self) -> list[str]:
        """The run owner of each of its worker processes that is ready."""
        return READY.findall(self.log(tail=10**7))

    def pids(self) -> set[int]:
        return _session_pids(self.pid) | {self.pid}

    def executes(self, owner: str | None) -> bool:
        return owner in self.owners()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.owners()) < self.processes:
            if self.proc.poll() is not None:
                pytest.fail(f"the worker exited with {self.proc.returncode} before it was "
                            f"ready:\n{self.log()}", pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f"the worker was not ready within {timeout:.0f} s:\n{self.log()}",
                            pytrace=False)
            time.sleep(0.05)

    async def ready(self, within: float = 60.0) -> WorkerProcess:
        await asyncio.to_thread(self.wait_ready, within)
        return self

    def kill9(self) -> None:
        """SIGKILL the master and every worker process at once (the machine died)."""
        self.killed = True
        pids = self.pids()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        for pid in pids:  # a process that left the group still dies
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self) -> None:
        """SIGTERM to the master, as a process supervisor sends it; it tells its workers."""
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the worker did not exit within {timeout:.0f} s:\n{self.log()}",
                        pytrace=False)

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.kill9()
        else:  # its worker processes may outlive a master that crashed
            for pid in _session_pids(self.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


class Deployment:
    """One database, one Redis prefix (one queue): the workers and fronts of a test."""

    def __init__(self, *, database_url: str, redis: str, prefix: str, folder: Path,
                 lease_s: float = 2.0, sweep_interval_s: float = 0.3,
                 queue_heartbeat_s: float = 3.0, env: dict[str, str] | None = None) -> None:
        self.settings = SharedSettings(
            database_url=database_url, redis_url=redis, redis_prefix=prefix,
            lease_s=lease_s, sweep_interval_s=sweep_interval_s,
            queue_heartbeat_s=queue_heartbeat_s)
        self.folder = folder
        self.extra_env = env or {}
        self.workers: list[WorkerProcess] = []
        self.fronts: list[Front] = []

    def env(self) -> dict[str, str]:
        s = self.settings
        assert s.database_url is not None and s.redis_url is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("KORTIX_LAB_")}
        env.update({
            "KORTIX_LAB_DATABASE_URL": s.database_url, "KORTIX_LAB_REDIS_URL": s.redis_url,
            "KORTIX_LAB_REDIS_PREFIX": s.redis_prefix, "KORTIX_LAB_LEASE_S": str(s.lease_s),
            "KORTIX_LAB_SWEEP_INTERVAL_S": str(s.sweep_interval_s),
            "KORTIX_LAB_QUEUE_HEARTBEAT_S": str(s.queue_heartbeat_s),
            "KORTIX_LAB_MODEL": "scripted/slow", "KORTIX_LAB_STORE": str(self.folder / "unused"),
            "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_OFFLINE_MODE": "true",
            "PYTHONUNBUFFERED": "1",
            # An idle worker polls the queue every 0.2 s at most (Dramatiq's default is
            # 1 s): runs start sooner, and the tests are shorter.
            "dramatiq_worker_timeout": "200", **self.extra_env})
        return env

    def migrate(self) -> None:
        from kortix_lab.store.pg_migrations import db_migrate

        assert self.settings.database_url is not None
        assert db_migrate(self.settings.database_url) == 0

    def start_worker(self, *, processes: int = 1, threads: int = 4,
                     grace_s: float = 5.0) -> WorkerProcess:
        log_path = self.folder / f"worker-{len(self.workers)}.log"
        worker = WorkerProcess(self.env(), log_path, processes=processes, threads=threads,
                               grace_s=grace_s)
        self.workers.append(worker)
        return worker

    async def start_workers(self, count: int, **options: Any) -> list[WorkerProcess]:
        workers = [self.start_worker(**options) for _ in range(count)]
        return list(await asyncio.gather(*(w.ready() for w in workers)))

    def front(self, account: str | None = None, *, model: str = "scripted/long") -> Front:
        front = Front(self.settings, account or new_account(), model=model)
        self.fronts.append(front)
        return front

    def logs(self) -> str:
        return "\n".join(f"--- {w.log_path.name} (pid {w.pid}, exit {w.proc.poll()})\n"
                         f"{w.log(3000)}" for w in self.workers)

    def worker_of(self, owner: str | None) -> WorkerProcess | None:
        for worker in self.workers:
            if worker.proc.poll() is None and worker.executes(owner):
                return worker
        return None

    async def aclose(self) -> None:
        for front in self.fronts:
            with contextlib.suppress(Exception):
                await front.aclose()
        for worker in self.workers:
            worker.cleanup()


class Front:
    """A server's side of the shared deployment: queues runs, follows, stops, decides."""

    def __init__(self, shared: SharedSettings, account: str, *, model: str) -> None:
        from kortix_lab.shared.control import RedisControl
        from kortix_lab.shared.locks import RedisLeaseLock
        from kortix_lab.shared.queue import RunQueue
        from kortix_lab.shared.redis_event_log import RedisEventLog
        from kortix_lab.store.postgres_store import PostgresStore
        from kortix_lab.workbench import Workbench

        assert shared.database_url is not None and shared.redis_url is not None
        url, prefix = shared.redis_url, shared.redis_prefix
        self.account = account
        self.queue = RunQueue(shared)
        self.store = PostgresStore(shared.database_url, account_id=account)
        self.events = RedisEventLog(url, prefix=prefix)
        self.control = RedisControl(url, prefix=prefix)
        self.leases = RedisLeaseLock(url, prefix=prefix)
        self.bench = Workbench(
            Settings(model=model, store=":memory:"), store=self.store, tool_providers=[],
            manager_options={"event_log": self.events, "control": self.control,
                             "leases": self.leases, "lease_s": shared.lease_s,
                             "dispatch": self.queue.dispatcher(account)})
        self.manager = self.bench.manager
        self.followers: dict[str, Follower] = {}

    async def start(self, prompt: str, *, thread: str | None = None, model: str | None = None,
                    **overrides: Any) -> tuple[AgentRun, Follower]:
        """Queue a run and follow its stream from the start, as a client would."""
        run = await self.bench.start(prompt, thread=thread or f"t-{uuid.uuid4().hex[:8]}",
                                     model=model, **overrides)
        follower = self.followers[run.run_id] = Follower(self.events, run.run_id)
        return run, follower

    async def run(self, run_id: str) -> AgentRun:
        return await asyncio.to_thread(self.store.get_run, run_id)

    async def until_terminal(self, run_id: str, within: float) -> AgentRun:
        """The run's record once it is completed, failed or stopped; fails past ``within``
        seconds."""
        deadline = time.monotonic() + within
        while True:
            run = await self.run(run_id)
            if run.status in TERMINAL:
                return run
            if time.monotonic() > deadline:
                pytest.fail(f"run {run_id} still {run.status} after {within:.0f} s",
                            pytrace=False)
            await asyncio.sleep(0.05)

    async def aclose(self) -> None:
        for follower in self.followers.values():
            follower.cancel()
        await self.bench.close()  # closes the store too
        for part in (self.events, self.control, self.leases):
            await part.aclose()
        self.queue.close()


class Follower:
    """A client reading one run's stream from its start until ``run_finished``."""

    def __init__(self, log: Any, run_id: str) -> None:
        self.run_id = run_id
        self.events: list[ev.Event] = []
        self.error: BaseException | None = None
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._follow(log), name=f"follow-{run_id}")

    async def _follow(self, log: Any) -> None:
        try:
            async for event in log.read(self.run_id):
                self.events.append(event)
                self._changed.set()
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self._changed.set()

    async def until(self, predicate: Callable[[list[ev.Event]], bool], within: float,
                    what: str = "the awaited event") -> list[ev.Event]:
        deadline = asyncio.get_running_loop().time() + within
        while not predicate(self.events):
            if self.task.done():
                pytest.fail(f"run {self.run_id}: the stream ended without {what} "
                            f"(error {self.error!r}); saw {[e.type for e in self.events]}",
                            pytrace=False)
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                pytest.fail(f"run {self.run_id}: no {what} within {within:.0f} s; saw "
                            f"{[e.type for e in self.events][-5:]}", pytrace=False)
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 1.0))
        return self.events

    async def until_type(self, kind: type[ev.Event], within: float, count: int = 1
                         ) -> list[ev.Event]:
        await self.until(lambda es: sum(isinstance(e, kind) for e in es) >= count, within,
                         what=f"{count} {kind.__name__}")
        return [e for e in self.events if isinstance(e, kind)]

    async def finished(self, within: float) -> list[ev.Event]:
        """Every event, once the stream ended; fails if it does not end in time."""
        try:
            await asyncio.wait_for(asyncio.shield(self.task), within)
        except TimeoutError:
            pytest.fail(f"run {self.run_id}: the stream did not end within {within:.0f} s; "
                        f"last events {[e.type for e in self.events][-5:]}", pytrace=False)
        return self.events

    def cancel(self) -> None:
        self.task.cancel()


def check_stream(events: list[ev.Event], *, complete: bool = True) -> ev.RunFinished:
    """One client's stream: seqs strictly increasing (none twice), one ``run_finished``,
    last. ``complete``: no event missing either (no Redis data was lost)."""
    seqs = [e.seq for e in events]
    assert seqs == sorted(set(seqs)), f"seqs repeat or go back: {seqs}"
    if complete:
        assert seqs == list(range(1, len(seqs) + 1)), f"events missing: {seqs}"
        assert events and isinstance(events[0], ev.RunStarted), [e.type for e in events[:3]]
    finished = [e for e in events if isinstance(e, ev.RunFinished)]
    assert len(finished) == 1 and events[-1] is finished[0], [e.type for e in events[-3:]]
    return finished[0]


def check_thread(store: Any, thread_id: str, run_ids: list[str]) -> list[Any]:
    """A thread's messages in Postgres: gapless seqs, one user message per run, no
    assistant message twice. Returns the messages."""
    messages = store.get_messages(thread_id)
    assert [m.seq for m in messages] == list(range(1, len(messages) + 1)), \
        [m.seq for m in messages]
    for run_id in run_ids:
        users = [m for m in messages if m.type == "user" and m.run_id == run_id]
        assert len(users) == 1, f"run {run_id}: {len(users)} user messages"
    assistants = [(m.run_id, str(m.content)) for m in messages if m.type == "assistant"]
    assert len(assistants) == len(set(assistants)), "an assistant message was stored twice"
    return messages


@pytest.fixture
def deployment_factory(tmp_path: Path) -> Iterator[Callable[..., Deployment]]:
    """Make ``Deployment`` objects; their workers are killed and fronts closed after."""
    made: list[Deployment] = []

    def make(**options: Any) -> Deployment:
        folder = tmp_path / f"deployment-{len(made)}"
        folder.mkdir()
        deployment = Deployment(folder=folder, **options)
        made.append(deployment)
        return deployment

    yield make
    for deployment in made:
        for worker in deployment.workers:
            worker.cleanup()


@pytest_asyncio.fixture
async def deployments(deployment_factory: Callable[..., Deployment]
                      ) -> AsyncIterator[Callable[..., Deployment]]:
    """``deployment_factory`` whose fronts are closed on the test's own event loop."""
    made: list[Deployment] = []

    def make(**options: Any) -> Deployment:
        deployment = deployment_factory(**options)
        made.append(deployment)
        return deployment

    yield make
    for deployment in made:
        await deployment.aclose()
