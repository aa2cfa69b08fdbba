"""``make shared-demo``: a whole shared deployment on loopback, end to end, then gone.

``python -m kortix_lab.shared.demo`` starts (or finds) Redis and Postgres with
``scripts/services.sh``, creates and migrates a fresh database
(``kortix_demo_…``), starts two ``kortix-lab worker`` commands and a Jupyter
server in shared mode on free loopback ports, runs a batch of runs on the
scripted ``slow`` model through the server's REST API (several threads,
each thread's runs one after another, streamed over SSE), prints what
happened — runs per status, which worker executed each (the run record's
``owner``), wall time, events relayed — and removes everything it made:
server and workers stopped, Redis keys under its own prefix deleted, the
database dropped, throwaway services stopped. Also on Ctrl-C, SIGTERM or a
failure. It never flushes or restarts a Redis or Postgres it did not start.

``Deployment`` is the reusable part (``benchmarks/bench_shared.py`` uses it
too): everything it starts is recorded as it starts and undone by ``close``
in reverse order, each step on its own so one failure does not leave the rest.

``--front manager`` enqueues from an in-process ``RunManager`` instead of the
server (what a server does in shared mode, without HTTP).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parents[2]
SERVICES_SH = REPO / "scripts" / "services.sh"
READY = re.compile(r"kortix-lab worker (\S+) ready")
# A database left by a demo or benchmark that was killed (SIGKILL) is dropped by a
# later one after this long.
STALE_DATABASE_S = 6 * 3600

Say = Callable[[str], None]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def with_database(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{dbname}"))


def kortix_lab_command() -> list[str]:
    """The ``kortix-lab`` command of this interpreter's environment."""
    script = Path(sys.executable).with_name("kortix-lab")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from kortix_lab.cli import main; "
            "sys.exit(main())"]


@dataclass
class Process:
    """A child process in its own session (a terminal's Ctrl-C reaches only us; we stop it)."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    processes: int = 1  # worker processes a `kortix-lab worker` command starts

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def owners(self) -> list[str]:
        """Owners (``host:pid:start``) of this worker's processes that said they are ready."""
        return READY.findall(self.log_text())

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self, timeout: float) -> int | None:
        """SIGTERM (a worker lets its runs finish for its grace, then stops them with a
        reason); still running after ``timeout``: SIGKILL to its process group, which is
        this process and its children (it was started in a session of its own)."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
        return self.popen.returncode


@dataclass
class Deployment:
    """Redis + Postgres (via ``scripts/services.sh``), a fresh migrated database, a Redis
    prefix of its own, and the worker and server processes started on them."""

    label: str = "demo"
    account_id: str = "demo"
    redis_url: str = ""
    admin_url: str = ""
    database_url: str = ""
    prefix: str = ""
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="kortix-shared-")))
    workers: list[Process] = field(default_factory=list)
    server: Process | None = None
    services_note: str = ""
    _services_dir: str | None = None
    _undo: list[tuple[str, Callable[[], object]]] = field(default_factory=list)
    _closed: bool = False

    # ---- set-up ------------------------------------------------------------------------
    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Services, a fresh database (migrated) and a Redis prefix."""
        self._undo.append(("work folder", lambda: shutil.rmtree(self.workdir, True)))
        self._services()
        self._database()
        self.prefix = f"kortix-{self.label}-{uuid.uuid4().hex[:10]}:"
        self._undo.append(("Redis keys", self._delete_keys))
        self.migrate()

    def _services(self) -> None:
        """Use the URLs the tests use when they are set, else ``services.sh start``."""
        redis_url = os.environ.get("KORTIX_LAB_TEST_REDIS_URL")
        admin_url = os.environ.get("KORTIX_LAB_TEST_DATABASE_URL")
        if redis_url and admin_url:
            self.redis_url, self.admin_url = redis_url, admin_url
            self.services_note = "given by KORTIX_LAB_TEST_*_URL"
            return
        already = os.environ.get("KORTIX_LAB_SERVICES_DIR")
        result = subprocess.run(["bash", str(SERVICES_SH), "start"], capture_output=True,
                                text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"scripts/services.sh start failed:\n{result.stderr.strip()}")
        exports = dict(re.findall(r"export (\w+)='([^']*)'", result.stdout))
        self.redis_url = exports["KORTIX_LAB_TEST_REDIS_URL"]
        self.admin_url = exports["KORTIX_LAB_TEST_DATABASE_URL"]
        started = [line.removeprefix("services: ") for line in result.stderr.splitlines()
                   if line.startswith("services: ")]
        self.services_note = "; ".join(started)
        if not already:  # ours to stop (it stops only servers it started)
            self._services_dir = exports.get("KORTIX_LAB_SERVICES_DIR")
            self._undo.append(("services", self._stop_services))

    def _stop_services(self) -> None:
        if self._services_dir:
            subprocess.run(["bash", str(SERVICES_SH), "stop"], check=False,
                           capture_output=True,
                           env={**os.environ, "KORTIX_LAB_SERVICES_DIR": self._services_dir})

    def _database(self) -> None:
        import psycopg

        name = f"kortix_{self.label}_{int(time.time())}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10) as conn:
            self._drop_stale(conn)
            conn.execute(f'CREATE DATABASE "{name}"')
        self.database_url = with_database(self.admin_url, name)
        self._undo.append(("database", self._drop_database))

    def _drop_stale(self, conn: Any) -> None:
        cutoff = time.time() - STALE_DATABASE_S
        pattern = f"kortix\\_{self.label}\\_%"
        for (name,) in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                                    [pattern]).fetchall():
            try:
                created = int(str(name).split("_")[2])
            except (IndexError, ValueError):
                continue
            if created < cutoff:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _drop_database(self) -> None:
        import psycopg

        name = urlsplit(self.database_url).path.lstrip("/")
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _delete_keys(self) -> int:
        import redis

        client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=5)
        try:
            deleted = 0
            batch: list[bytes] = []
            for key in client.scan_iter(match=f"{self.prefix}*", count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    deleted += int(client.delete(*batch))
                    batch.clear()
            if batch:
                deleted += int(client.delete(*batch))
            return deleted
        finally:
            client.close()

    def migrate(self) -> str:
        result = subprocess.run([*kortix_lab_command(), "db", "migrate", "--database-url",
                                 self.database_url], capture_output=True, text=True,
                                check=False, env=self.env())
        if result.returncode != 0:
            raise RuntimeError(f"kortix-lab db migrate failed:\n{result.stdout}{result.stderr}")
        return result.stdout.strip()

    # ---- processes ---------------------------------------------------------------------
    def env(self, **extra: str) -> dict[str, str]:
        """The environment of every process of the deployment (servers and workers read
        the same variables)."""
        env = {**os.environ,
               "KORTIX_LAB_DATABASE_URL": self.database_url,
               "KORTIX_LAB_REDIS_URL": self.redis_url,
               "KORTIX_LAB_REDIS_PREFIX": self.prefix,
               "KORTIX_LAB_ACCOUNT_ID": self.account_id,
               "KORTIX_LAB_SANDBOX": "none",
               # Nothing of the deployment may touch the user's own local store.
               "KORTIX_LAB_STORE": str(self.workdir / "unused.duckdb"),
               "LITELLM_LOCAL_MODEL_COST_MAP": "True",
               "LITELLM_OFFLINE_MODE": "true",
               "PYTHONUNBUFFERED": "1"}
        env.update(extra)
        return env

    def _spawn(self, name: str, argv: list[str], env: dict[str, str], *,
               processes: int = 1) -> Process:
        log_path = self.workdir / f"{name}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     cwd=self.workdir)
        return Process(name, popen, log_path, processes)

    def start_worker(self, name: str, *, processes: int = 1, threads: int = 4,
                     grace_s: float = 5.0, **env: str) -> Process:
        worker = self._spawn(name, [*kortix_lab_command(), "worker", "--processes",
                                    str(processes), "--threads", str(threads),
                                    "--grace", str(grace_s)],
                             self.env(**env), processes=processes)
        self.workers.append(worker)
        self._undo.append((name, lambda: self.stop_worker(worker)))
        return worker

    def stop_worker(self, worker: Process, *, timeout: float = 30.0) -> None:
        worker.stop(timeout)
        if worker in self.workers:
            self.workers.remove(worker)

    def wait_workers_ready(self, *workers: Process, timeout: float = 60.0) -> None:
        """Until every process of each worker logged that it is ready."""
        deadline = time.monotonic() + timeout
        for worker in workers:
            while len(worker.owners()) < worker.processes:
                if worker.popen.poll() is not None:
                    raise RuntimeError(f"{worker.name} exited with {worker.popen.returncode}:\n"
                                       f"{worker.tail()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{worker.name} was not ready within {timeout:.0f} s:\n"
                                       f"{worker.tail()}")
                time.sleep(0.05)

    def start_server(self, *, model: str, port: int | None = None, **env: str) -> ServerProcess:
        """``jupyter server`` with the extension in shared mode: runs are queued for the
        workers and streams relayed from Redis."""
        port = port or free_port()
        token = uuid.uuid4().hex
        config = self.workdir / "jupyter-config"
        config.mkdir(exist_ok=True)
        (config / "jupyter_server_config.json").write_text(json.dumps({
            "ServerApp": {"jpserver_extensions": {"kortix_lab.server": True},
                          "port": port, "port_retries": 0, "ip": "127.0.0.1",
                          "open_browser": False, "allow_root": True,
                          "root_dir": str(self.workdir), "log_level": "WARN"},
            "IdentityProvider": {"token": token},
            "KortixLabApp": {"database_url": self.database_url, "redis_url": self.redis_url,
                             "redis_prefix": self.prefix, "account_id": self.account_id,
                             "sandbox_backend": "none", "default_model": model,
                             "max_parallel_runs": 64, "export_kernel_env": False}}))
        env_all = self.env(JUPYTER_CONFIG_DIR=str(config),
                           JUPYTER_DATA_DIR=str(self.workdir / "jupyter-data"),
                           JUPYTER_RUNTIME_DIR=str(self.workdir / "jupyter-runtime"), **env)
        process = self._spawn("server", [sys.executable, "-m", "jupyter_server"], env_all)
        server = ServerProcess(process.name, process.popen, process.log_path,
                               url=f"http://127.0.0.1:{port}/", token=token)
        self.server = server
        self._undo.append(("server", lambda: server.stop(30)))
        return server

    # ---- tear-down ---------------------------------------------------------------------
    def close(self) -> list[str]:
        """Undo everything, newest first; returns one line per step (failures included)."""
        if self._closed:
            return []
        self._closed = True
        # A second Ctrl-C must not cut the clean-up short.
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        try:
            return self._undo_all()
        finally:
            if main:
                signal.signal(signal.SIGINT, previous)

    def _undo_all(self) -> list[str]:
        done: list[str] = []
        while self._undo:
            what, undo = self._undo.pop()
            try:
                result = undo()
            except Exception as exc:  # keep going: the other steps still matter
                done.append(f"{what}: FAILED ({type(exc).__name__}: {exc})")
                continue
            if what == "Redis keys":
                done.append(f"{result} Redis keys under {self.prefix!r} deleted")
            elif what == "database":
                done.append(f"database {urlsplit(self.database_url).path.lstrip('/')} dropped")
            elif what == "services":
                done.append("services stopped (only those services.sh started)")
            elif what != "work folder":
                done.append(f"{what} stopped")
        return done


@dataclass
class ServerProcess(Process):
    url: str = ""
    token: str = ""

    @property
    def api(self) -> str:
        return f"{self.url}kortix-lab/api/"

    async def wait_ready(self, client: Any, within_s: float = 60.0) -> None:
        import httpx

        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"the Jupyter server exited with {self.popen.returncode}:\n"
                                   f"{self.tail()}")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("status")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"the Jupyter server did not answer within {within_s:.0f} s:\n"
                           f"{self.tail()}")


# ---- fronts: where runs are started and streams read -----------------------------------
class Front(Protocol):
    async def create_thread(self, name: str) -> str: ...
    async def start(self, thread_id: str, prompt: str) -> str: ...
    def stream(self, run_id: str) -> AsyncIterator[dict[str, Any]]: ...
    async def aclose(self) -> None: ...


class ServerFront:
    """The server's REST API and SSE stream (docs/api.md), as any client uses them."""

    def __init__(self, server: ServerProcess) -> None:
        import httpx

        self.server = server
        self.client = httpx.AsyncClient(
            base_url=server.api, headers={"Authorization": f"token {server.token}"},
            timeout=httpx.Timeout(60.0), limits=httpx.Limits(max_connections=200,
                                                             max_keepalive_connections=200))

    async def wait_ready(self) -> None:
        await self.server.wait_ready(self.client)

    async def create_thread(self, name: str) -> str:
        response = await self.client.post("threads", json={"name": name})
        response.raise_for_status()
        return str(response.json()["thread_id"])

    async def start(self, thread_id: str, prompt: str) -> str:
        response = await self.client.post(f"thread/{thread_id}/agent/start",
                                          json={"message": prompt})
        if response.status_code != 201:
            raise RuntimeError(f"starting a run: {response.status_code} {response.text}")
        return str(response.json()["run_id"])

    async def stream(self, run_id: str) -> AsyncIterator[dict[str, Any]]:
        async with self.client.stream("GET", f"agent-run/{run_id}/stream") as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    event: dict[str, Any] = json.loads(line[6:])
                    yield event
                    if event.get("type") == "run_finished":
                        return

    async def aclose(self) -> None:
        await self.client.aclose()


class ManagerFront:
    """An in-process ``RunManager`` that dispatches to the queue: the server's part in
    shared mode, without HTTP."""

    def __init__(self, deployment: Deployment, model: str) -> None:
        from ..config import Settings, SharedSettings
        from ..store.postgres_store import PostgresStore
        from ..workbench import Workbench
        from .control import RedisControl
        from .locks import RedisLeaseLock
        from .queue import RunQueue
        from .redis_event_log import RedisEventLog

        d = deployment
        shared = SharedSettings(database_url=d.database_url, redis_url=d.redis_url,
                                redis_prefix=d.prefix, account_id=d.account_id)
        self.queue = RunQueue(shared)
        self.events = RedisEventLog(d.redis_url, prefix=d.prefix)
        self.control = RedisControl(d.redis_url, prefix=d.prefix)
        self.leases = RedisLeaseLock(d.redis_url, prefix=d.prefix)
        store = PostgresStore(d.database_url, account_id=d.account_id)
        self.bench = Workbench(
            Settings(store=str(d.workdir / "unused.duckdb"), model=model, sandbox="none",
                     max_parallel_runs=1000),
            store=store, tool_providers=[], manager_options={
                "event_log": self.events, "control": self.control, "leases": self.leases,
                "lease_s": shared.lease_s, "dispatch": self.queue.dispatcher(d.account_id)})

    async def create_thread(self, name: str) -> str:
        thread = await asyncio.to_thread(self.bench.resolve_thread, name)
        return thread.thread_id

    async def start(self, thread_id: str, prompt: str) -> str:
        run = await self.bench.start(prompt, thread=thread_id)
        return run.run_id

    async def stream(self, run_id: str) -> AsyncIterator[dict[str, Any]]:
        async for event in self.bench.manager.subscribe(run_id):
            yield event.to_dict()

    async def aclose(self) -> None:
        await self.bench.close()
        for part in (self.events, self.control, self.leases):
            await part.aclose()
        self.queue.close()


# ---- the demo ------------------------------------------------------------------------------
@dataclass
class RunResult:
    run_id: str
    thread: str
    events: int = 0
    status: str = "?"
    owner: str | None = None
    worker: str = "?"
    seconds: float = 0.0  # start request -> run_finished, as the client saw it
    created: float = 0.0
    waited: float = 0.0  # queued -> started (the record's timestamps)
    ran: float = 0.0  # started -> finished
    error: str | None = None


async def _thread_runs(front: Front, thread: str, runs: int, results: list[RunResult]) -> None:
    """One thread's runs, one after another (a thread has one active run at a time)."""
    thread_id = await front.create_thread(thread)
    for i in range(runs):
        t0 = time.perf_counter()
        run_id = await front.start(thread_id, f"Run {i + 1} on {thread}: report progress.")
        result = RunResult(run_id, thread)
        results.append(result)
        async for event in front.stream(run_id):
            result.events += 1
            if event.get("type") == "run_finished":
                result.status = str(event.get("status"))
                result.error = event.get("reason") if result.status != "completed" else None
        result.seconds = time.perf_counter() - t0


def _owners(deployment: Deployment, results: list[RunResult]) -> None:
    """Each run's ``owner`` from its Postgres record, named after the worker whose process
    it is (each worker logged its processes' owners when they were ready)."""
    from ..store.postgres_store import PostgresStore

    names = {owner: w.name for w in deployment.workers for owner in w.owners()}
    with PostgresStore(deployment.database_url, account_id=deployment.account_id,
                       min_size=0, max_size=1, auto_migrate=False) as store:
        for result in results:
            run = store.get_run(result.run_id)
            result.owner = run.owner
            result.status = run.status  # the record is the truth; the stream agreed
            result.worker = names.get(run.owner or "", run.owner or "none")
            result.created = run.created_at.timestamp()
            if run.started_at is not None:
                result.waited = (run.started_at - run.created_at).total_seconds()
                if run.finished_at is not None:
                    result.ran = (run.finished_at - run.started_at).total_seconds()


def _table(results: list[RunResult]) -> list[str]:
    lines = [f"  {'run':<10}{'thread':<9}{'status':<11}{'executed by (pid)':<20}"
             f"{'queued':>8}{'ran':>8}{'events':>8}"]
    for r in results:
        pid = r.owner.split(":")[1] if r.owner and r.owner.count(":") >= 2 else "-"
        lines.append(f"  {r.run_id[:8]:<10}{r.thread:<9}{r.status:<11}"
                     f"{f'{r.worker} ({pid})':<20}{r.waited:>7.2f}s{r.ran:>7.2f}s"
                     f"{r.events:>8}")
    return lines


async def _demo_runs(deployment: Deployment, args: argparse.Namespace, say: Say
                     ) -> dict[str, Any]:
    front: Front
    if args.front == "server":
        t0 = time.perf_counter()
        server = deployment.start_server(model=args.model)
        server_front = ServerFront(server)
        front = server_front
        try:
            await server_front.wait_ready()
        except BaseException:
            await server_front.aclose()
            raise
        say(f"  server     {server.url} (pid {server.pid}), shared mode, ready in "
            f"{time.perf_counter() - t0:.1f} s")
    else:
        front = ManagerFront(deployment, args.model)
        say("  front      an in-process RunManager dispatching to the queue")
    try:
        per_thread = [args.runs // args.threads + (i < args.runs % args.threads)
                      for i in range(args.threads)]
        say(f"\n{args.runs} runs on {args.threads} threads (model {args.model}), each "
            f"thread's runs one after another, streamed "
            f"{'over SSE from the server' if args.front == 'server' else 'from Redis'} …")
        results: list[RunResult] = []
        t0 = time.perf_counter()
        async with asyncio.timeout(args.timeout), asyncio.TaskGroup() as group:
            for i, n in enumerate(per_thread):
                if n:
                    group.create_task(_thread_runs(front, f"demo-{i + 1}", n, results))
        wall = time.perf_counter() - t0
    finally:
        await front.aclose()
    await asyncio.to_thread(_owners, deployment, results)
    results.sort(key=lambda r: r.created)
    for line in _table(results):
        say(line)
    statuses = Counter(r.status for r in results)
    per_worker = Counter(r.worker for r in results)
    events = sum(r.events for r in results)
    waits = sorted(r.waited for r in results)
    return {"runs": len(results), "statuses": dict(statuses), "workers": dict(per_worker),
            "worker_names": [w.name for w in deployment.workers], "wall_s": wall,
            "queued_p50_s": waits[len(waits) // 2], "queued_max_s": waits[-1],
            "ran_total_s": sum(r.ran for r in results),
            "events": events, "front": args.front, "model": args.model,
            "database": urlsplit(deployment.database_url).path.lstrip("/"),
            "prefix": deployment.prefix,
            "pids": [p.pid for p in deployment.workers] + [
                int(owner.split(":")[1]) for w in deployment.workers for owner in w.owners()] + (
                [deployment.server.pid] if deployment.server else []),
            "runs_detail": [r.__dict__ for r in results]}


def _summary(summary: dict[str, Any], say: Say) -> bool:
    runs, statuses, workers = summary["runs"], summary["statuses"], summary["workers"]
    completed = statuses.get("completed", 0)
    say("\nSummary")
    say("  runs       " + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
        + f" (of {runs})")
    say("  workers    " + ", ".join(f"{name} executed {workers.get(name, 0)}"
                                    for name in summary["worker_names"])
        + "".join(f", {name} executed {n}" for name, n in workers.items()
                  if name not in summary["worker_names"]))
    say(f"  events     {summary['events']} relayed "
        f"({'server-sent events' if summary['front'] == 'server' else 'Redis Streams'})")
    say(f"  wall time  {summary['wall_s']:.2f} s for {runs} runs "
        f"({summary['ran_total_s']:.1f} s of running in all)")
    say(f"  queued     p50 {summary['queued_p50_s']:.2f} s, max {summary['queued_max_s']:.2f} s "
        "(from the start request to a worker taking the run)")
    ok = completed == runs and all(workers.get(n, 0) for n in summary["worker_names"])
    summary["ok"] = ok
    verdict = ("OK: all runs completed, on both workers" if ok else
               "NOT OK: " + ("not every run completed" if completed != runs
                             else "a worker executed no run"))
    say(f"  result     {verdict}")
    return ok


def raise_on_sigterm() -> None:
    """SIGTERM as Ctrl-C: the clean-up in ``finally`` blocks runs either way."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kortix_lab.shared.demo",
        description="A shared deployment on loopback (Redis, Postgres, two workers, a Jupyter "
                    "server), a batch of runs through it, a summary; then everything removed.")
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--threads", type=int, default=6, help="agent threads (default 6)")
    parser.add_argument("--model", default="scripted/slow")
    parser.add_argument("--worker-threads", type=int, default=2,
                        help="runs each worker executes at once (default 2)")
    parser.add_argument("--front", choices=("server", "manager"), default="server",
                        help="start runs through the Jupyter server (default) or an "
                             "in-process RunManager")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds the batch may take (default 120)")
    parser.add_argument("--json", metavar="PATH", help="also write the summary as JSON")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.threads < 1 or args.worker_threads < 1:
        parser.error("--runs, --threads and --worker-threads must be at least 1")

    def say(line: str) -> None:
        print(line, flush=True)

    raise_on_sigterm()
    say("Kortix Lab shared deployment demo")
    deployment = Deployment(label="demo")
    code = 1
    try:
        t0 = time.perf_counter()
        deployment.start()
        say(f"  services   {deployment.services_note}")
        say(f"  database   {urlsplit(deployment.database_url).path.lstrip('/')} "
            "(fresh, migrated by `kortix-lab db migrate`)")
        say(f"  redis      keys under {deployment.prefix!r}")
        workers = [deployment.start_worker(f"worker-{i}", processes=1,
                                           threads=args.worker_threads, grace_s=5)
                   for i in (1, 2)]
        deployment.wait_workers_ready(*workers)
        for w in workers:
            say(f"  {w.name:<10} `kortix-lab worker --processes 1 --threads "
                f"{args.worker_threads}` (pid {w.pid}), ready")
        say(f"  set-up     {time.perf_counter() - t0:.1f} s")
        summary = asyncio.run(_demo_runs(deployment, args, say))
        ok = _summary(summary, say)
        if args.json:
            Path(args.json).write_text(json.dumps(summary, indent=2, default=str))
        code = 0 if ok else 1
    except KeyboardInterrupt:
        say("\ninterrupted")
        code = 130
    except Exception as exc:
        say(f"\nthe demo failed: {type(exc).__name__}: {exc}")
        for process in [*deployment.workers, *([deployment.server] if deployment.server
                                               else [])]:
            say(f"--- last lines of {process.name}'s log ---\n{process.tail(15)}")
    finally:
        say("\nCleaning up")
        for line in deployment.close():
            say(f"  {line}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
