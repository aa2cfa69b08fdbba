"""The server extension in the shared deployment: Postgres records, Redis streams, real workers.

Every test here runs against real services (``scripts/services.sh``; never
skipped) and a real ``kortix-lab worker`` process: the server enqueues, the
worker executes, the server relays from Redis. The module has a deployment of
its own (database + Redis prefix) and one worker; each test's server has an
account of its own, so limits and clean-up never cross tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kortix_lab.agentpress.events import RunFinished
from kortix_lab.config import Settings, SharedSettings
from kortix_lab.server.app import KortixLabApp
from kortix_lab.server.errors import RunLimited
from kortix_lab.server.models import RunStart, ThreadCreate
from kortix_lab.server.shared import SharedServer, shared_server
from kortix_lab.shared.redis_event_log import RedisEventLog
from kortix_lab.store.postgres_store import PostgresStore
from tests.support.services import new_account, pg_admin_url, redis_url  # noqa: F401

from .conftest import Fetch, kortix_config, parse_sse, payload
from .live import LiveServer
from .shared_support import (
    Deployment,
    Worker,
    make_deployment,
    remove_deployment,
    stop_account_runs,
    stop_account_runs_async,
)

pytestmark = pytest.mark.slow

Event = dict[str, Any]


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def deployment(pg_admin_url: str, redis_url: str,  # noqa: F811
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    made = make_deployment(pg_admin_url, redis_url, tmp_path_factory.mktemp("shared"))
    yield made
    remove_deployment(pg_admin_url, made)


@pytest.fixture(scope="module")
def worker(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Worker]:
    started = Worker(deployment, tmp_path_factory.mktemp("worker") / "worker.log").start()
    yield started
    started.stop()


@pytest.fixture
def account(deployment: Deployment, worker: Worker) -> Iterator[str]:
    """This test's account; whatever it leaves running is stopped afterwards."""
    name = new_account()
    yield name
    stop_account_runs(deployment, name)


@pytest.fixture
def limit() -> int:
    return 50


@pytest.fixture
def jp_server_config(tmp_path: Path, deployment: Deployment, account: str,
                     limit: int) -> dict[str, Any]:
    return kortix_config(tmp_path, **deployment.server_traits(
        account, max_runs_per_account=limit))


def other_server(deployment: Deployment, account_id: str, *, limit: int = 50) -> SharedServer:
    """Another server's service on the same deployment (as ``KortixLabApp`` wires it)."""
    settings = SharedSettings(database_url=deployment.database_url,
                              redis_url=deployment.redis_url, redis_prefix=deployment.prefix,
                              account_id=account_id, max_runs_per_account=limit)
    return shared_server(settings, account_id, Settings(model="scripted/echo"))


# ---------------------------------------------------------------------- helpers


async def new_thread(api: Fetch) -> str:
    return str(payload(await api("POST", "threads", body={}))["thread_id"])


async def start(api: Fetch, tid: str | None = None, **body: Any) -> Any:
    tid = tid or await new_thread(api)
    return await api("POST", "thread", tid, "agent", "start", body={"message": "hi", **body})


async def started(api: Fetch, tid: str | None = None, **body: Any) -> dict[str, Any]:
    r = await start(api, tid, **body)
    assert r.code == 201, r.body
    return dict(payload(r))


async def whole_stream(api: Fetch, run_id: str, **kwargs: Any) -> list[Event]:
    r = await api("GET", "agent-run", run_id, "stream", request_timeout=120, **kwargs)
    assert r.code == 200, r.body
    events = parse_sse(r.body.decode())
    assert [i for i, _ in events] == [e["seq"] for _, e in events]
    return [e for _, e in events]


class Follow:
    """A live SSE stream of a run on the test server, read as far as a test wants."""

    def __init__(self, server_url: str, auth: dict[str, str], run_id: str) -> None:
        self.url = f"{server_url}kortix-lab/api/agent-run/{run_id}/stream"
        self.auth = auth
        self.seen: list[Event] = []

    async def __aenter__(self) -> Follow:
        self.client = httpx.AsyncClient(headers=self.auth, timeout=60)
        self.response = await self.client.send(self.client.build_request("GET", self.url),
                                               stream=True)
        assert self.response.status_code == 200
        self.lines = self.response.aiter_lines()
        return self

    async def until(self, kind: str) -> Event:
        async for line in self.lines:
            if line.startswith("data: "):
                self.seen.append(json.loads(line[6:]))
                if self.seen[-1]["type"] == kind:
                    return self.seen[-1]
        raise AssertionError(f"the stream ended before a {kind} event: {self.seen}")

    async def __aexit__(self, *exc: object) -> None:
        await self.response.aclose()
        await self.client.aclose()


def owner_pid(owner: str | None) -> int:
    assert owner, "the run has no owner"
    return int(owner.rsplit(":", 2)[1])


# ---------------------------------------------------------------------- one server


async def test_a_run_is_executed_by_a_worker_and_relayed(
        api: Fetch, kortix: KortixLabApp, worker: Worker, account: str) -> None:
    status = payload(await api("GET", "status"))
    assert status["deployment"] == "shared" and status["account_id"] == account
    assert status["active_runs"] == 0 and status["max_parallel_runs"] == 50
    tid = await new_thread(api)
    run = await started(api, tid, message="hello from the server")
    assert run["status"] == "queued" and run["active"] is True and run["project_id"]
    events = await whole_stream(api, run["run_id"])
    assert [e["type"] for e in events][0] == "run_started"
    assert events[-1]["type"] == "run_finished" and events[-1]["status"] == "completed"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert "".join(e["text"] for e in events if e["type"] == "text_delta") == \
        "You said: hello from the server"
    # executed by the worker process, not by this server
    record = kortix.workbench.store.get_run(run["run_id"])
    assert owner_pid(record.owner) in worker.pids() and owner_pid(record.owner) != os.getpid()
    assert kortix.workbench.manager.active_runs() == []
    out = payload(await api("GET", "agent-run", run["run_id"]))
    assert out["status"] == "completed" and out["active"] is False
    assert out["usage"]["total_tokens"] > 0
    page = payload(await api("GET", "threads", tid, "messages"))
    assert [(m["type"], m["content"]["content"]) for m in page["messages"]] == [
        ("user", "hello from the server"), ("assistant", "You said: hello from the server")]
    assert payload(await api("GET", "threads", tid))["active_run_id"] is None
    assert [r["run_id"] for r in payload(await api("GET", "threads", tid, "runs"))["runs"]] \
        == [run["run_id"]]
    resumed = await whole_stream(api, run["run_id"], headers={"Last-Event-ID": "2"})
    assert resumed == events[2:]


async def test_run_choices_ride_in_the_config_to_the_worker(api: Fetch,
                                                           kortix: KortixLabApp) -> None:
    run = await started(api, options={"tools": {"no_such_tool": False}, "sandbox": "none"})
    events = await whole_stream(api, run["run_id"])
    statuses = {e["code"]: e["message"] for e in events if e["type"] == "status"}
    assert "sandbox_disabled" in statuses
    assert "no_such_tool" in statuses["tools_option"]
    assert events[-1]["status"] == "completed"
    config = kortix.workbench.store.get_run(run["run_id"]).metadata["config"]
    assert config["sandbox"] == "none" and config["tool_choices"] == {"no_such_tool": False}


async def test_a_stop_from_the_server_reaches_the_run_on_the_worker(
        api: Fetch, server_url: str, auth: dict[str, str]) -> None:
    tid = await new_thread(api)
    run = await started(api, tid, model="scripted/hold")
    async with Follow(server_url, auth, run["run_id"]) as stream:
        await stream.until("text_delta")  # the worker is executing it
        out = payload(await api("GET", "agent-run", run["run_id"]))
        assert out["status"] == "running" and out["active"] is True
        assert payload(await api("GET", "threads", tid))["active_run_id"] == run["run_id"]
        assert (await api("DELETE", "threads", tid)).code == 409
        busy = await start(api, tid)
        assert busy.code == 409 and payload(busy)["run_id"] == run["run_id"]
        asked = time.monotonic()
        stopped = await api("POST", "agent-run", run["run_id"], "stop",
                            body={"reason": "enough from the server"})
        assert stopped.code == 200 and payload(stopped)["stopping"] is True
        final = await stream.until("run_finished")
    assert time.monotonic() - asked < 5
    assert final["status"] == "stopped" and final["reason"] == "enough from the server"
    out = payload(await api("GET", "agent-run", run["run_id"]))
    assert out["status"] == "stopped" and out["error"] == "enough from the server"
    assert out["active"] is False
    again = payload(await api("POST", "agent-run", run["run_id"], "stop"))
    assert again == {"run_id": run["run_id"], "stopping": False, "status": "stopped"}
    assert (await start(api, tid)).code == 201  # the thread is free again


async def test_an_approval_decision_reaches_the_run_on_the_worker(
        api: Fetch, server_url: str, auth: dict[str, str]) -> None:
    run = await started(api, model="scripted/hello", options={"approval_default": "ask"})
    run_id = run["run_id"]
    async with Follow(server_url, auth, run_id) as stream:
        asked = await stream.until("approval_requested")
        assert asked["tool"] == "complete"
        out = payload(await api("GET", "agent-run", run_id))
        assert out["pending_approvals"] == [asked["call_id"]] and out["active"] is True
        assert (await api("POST", "agent-run", run_id, "approval",
                          body={"call_id": asked["call_id"]})).code == 400
        wrong = await api("POST", "agent-run", run_id, "approval",
                          body={"call_id": "no-such-call", "approved": True})
        assert wrong.code == 409
        ok = await api("POST", "agent-run", run_id, "approval",
                       body={"call_id": asked["call_id"], "approved": True, "reason": "fine"})
        assert ok.code == 200
        assert payload(ok) == {"run_id": run_id, "call_id": asked["call_id"], "approved": True}
        decided = await stream.until("approval_decided")
        assert decided["approved"] is True and decided["reason"] == "fine"
        late = await api("POST", "agent-run", run_id, "approval",
                         body={"call_id": asked["call_id"], "approved": False})
        assert late.code == 409  # decided already
        final = await stream.until("run_finished")
    assert final["status"] == "completed"
    assert "tool_finished" in [e["type"] for e in stream.seen]
    assert payload(await api("GET", "agent-run", run_id))["pending_approvals"] == []


class TestAccountLimit:
    @pytest.fixture
    def limit(self) -> int:
        return 2

    async def test_runs_of_every_server_count_and_other_accounts_do_not(
            self, api: Fetch, deployment: Deployment, account: str, worker: Worker) -> None:
        elsewhere = other_server(deployment, account, limit=2)  # same account
        stranger_account = new_account()
        stranger = other_server(deployment, stranger_account, limit=2)
        try:
            thread = await elsewhere.service.create_thread(_thread_body())
            first = await elsewhere.service.start_run(
                thread[0]["thread_id"], RunStart(message="m", model="scripted/hold"))
            second = await started(api, model="scripted/hold")
            refused = await start(api, model="scripted/hold")
            assert refused.code == 429
            body = payload(refused)
            assert body["limit"] == "parallel_runs"
            assert f"2 runs of account {account!r}" in body["error"]
            assert "max_runs_per_account" in body["error"]
            status = payload(await api("GET", "status"))
            assert status["active_runs"] == 2 and status["max_parallel_runs"] == 2
            with pytest.raises(RunLimited):  # the other server is refused as well
                thread = await elsewhere.service.create_thread(_thread_body())
                await elsewhere.service.start_run(thread[0]["thread_id"], RunStart(message="m"))
            # another account is not limited by this one's runs, nor counted here
            for _ in range(2):
                theirs = await stranger.service.create_thread(_thread_body())
                await stranger.service.start_run(theirs[0]["thread_id"],
                                                 RunStart(message="m", model="scripted/hold"))
            assert payload(await api("GET", "status"))["active_runs"] == 2
            # a run stopped on any server frees its slot for all of them
            asked = time.monotonic()
            assert (await api("POST", "agent-run", first["run_id"], "stop")).code == 200
            done = await asyncio.wait_for(elsewhere.workbench.manager.wait(first["run_id"]),
                                          30)
            assert done.status == "stopped", done
            assert time.monotonic() - asked < 10, (done, worker.log()[-3000:])
            assert (await start(api)).code == 201
            assert payload(await api("GET", "agent-run", second["run_id"]))["active"] is True
        finally:
            await stop_account_runs_async(deployment, stranger_account)
            await elsewhere.aclose()
            await stranger.aclose()

    async def test_concurrent_starts_on_two_servers_fill_the_account_exactly(
            self, api: Fetch, deployment: Deployment, account: str) -> None:
        elsewhere = other_server(deployment, account, limit=2)
        try:
            threads = [(await elsewhere.service.create_thread(_thread_body()))[0]["thread_id"]
                       for _ in range(3)]

            async def there(tid: str) -> int:
                try:
                    await elsewhere.service.start_run(
                        tid, RunStart(message="m", model="scripted/hold"))
                except RunLimited:
                    return 429
                return 201

            async def here(tid: str) -> int:
                return int((await start(api, tid, model="scripted/hold")).code)

            api_threads = [await new_thread(api) for _ in range(3)]
            codes = await asyncio.gather(*(there(t) for t in threads),
                                         *(here(t) for t in api_threads))
            assert sorted(codes) == [201, 201, 429, 429, 429, 429]
            assert await elsewhere.workbench.manager.count_active() == 2
        finally:
            await elsewhere.aclose()


def _thread_body() -> ThreadCreate:
    return ThreadCreate()


async def test_another_accounts_run_is_not_found_and_a_lost_log_is_gone(
        api: Fetch, kortix: KortixLabApp, deployment: Deployment) -> None:
    stranger_account = new_account()
    stranger = other_server(deployment, stranger_account)
    try:
        theirs = await stranger.service.create_thread(_thread_body())
        run = await stranger.service.start_run(theirs[0]["thread_id"], RunStart(message="m"))
        await stranger.workbench.manager.wait(run["run_id"])
        for method, path, body in (("GET", (), None), ("GET", ("stream",), None),
                                   ("POST", ("stop",), {}),
                                   ("POST", ("approval",), {"call_id": "c",
                                                            "approved": True})):
            r = await api(method, "agent-run", run["run_id"], *path, body=body)
            assert r.code == 404, (method, path)
    finally:
        await stranger.aclose()
    mine = await started(api)
    events = await whole_stream(api, mine["run_id"])
    assert events[-1]["status"] == "completed"
    log = kortix.workbench.manager.events
    assert isinstance(log, RedisEventLog)
    log.redis.sync.delete(log.stream_key(mine["run_id"]), log.meta_key(mine["run_id"]))
    gone = await api("GET", "agent-run", mine["run_id"], "stream")
    assert gone.code == 410 and payload(gone)["status_of_run"] == "completed"


async def test_a_flushed_log_ends_the_relay_from_the_stored_record(
        api: Fetch, kortix: KortixLabApp, server_url: str, auth: dict[str, str]) -> None:
    """The run's Redis keys vanish while a client follows it (a flush): the relay goes on
    with what the worker writes next; and when they vanish once the run has finished,
    the stream ends with the final status the worker stored."""
    run = await started(api, model="scripted/drip")
    log = kortix.workbench.manager.events
    assert isinstance(log, RedisEventLog)
    async with Follow(server_url, auth, run["run_id"]) as stream:
        await stream.until("text_delta")
        log.redis.sync.delete(log.stream_key(run["run_id"]), log.meta_key(run["run_id"]))
        final = await stream.until("run_finished")
    assert final["status"] == "completed"
    seqs = [e["seq"] for e in stream.seen]
    assert seqs == sorted(set(seqs))  # never a seq twice, never backwards
    assert payload(await api("GET", "agent-run", run["run_id"]))["status"] == "completed"
    # a finished run whose log vanishes as a client resumes: its stored record ends it
    whole = await whole_stream(api, run["run_id"])
    resumed = await kortix.service.open_stream(run["run_id"], whole[-2]["seq"])
    log.redis.sync.delete(log.stream_key(run["run_id"]), log.meta_key(run["run_id"]))
    [end] = [event async for event in resumed]
    assert isinstance(end, RunFinished) and end.status == "completed"
    assert end.seq == whole[-1]["seq"] and end.run_id == run["run_id"]


async def test_server_shutdown_leaves_worker_runs_alone(
        api: Fetch, kortix: KortixLabApp, deployment: Deployment, account: str,
        server_url: str, auth: dict[str, str]) -> None:
    run = await started(api, model="scripted/drip")
    async with Follow(server_url, auth, run["run_id"]) as stream:
        await stream.until("text_delta")
    await kortix.stop_extension()
    log = RedisEventLog(deployment.redis_url, prefix=deployment.prefix)
    try:
        final = [e async for e in log.read(run["run_id"], stream.seen[-1]["seq"])][-1]
    finally:
        await log.aclose()
    assert isinstance(final, RunFinished) and final.status == "completed"
    store = PostgresStore(deployment.database_url, account_id=account, min_size=0)
    try:
        assert store.get_run(run["run_id"]).status == "completed"
    finally:
        store.close()


class TestRedisDown:
    """Redis does not answer (here: nothing listens on its port): the server starts, says
    so in its log, and answers 503 to what needs Redis; Postgres-only requests work."""

    @pytest.fixture
    def jp_server_config(self, tmp_path: Path, deployment: Deployment,
                         account: str) -> dict[str, Any]:
        from tests.support.services import free_port

        traits = deployment.server_traits(account)
        traits["redis_url"] = f"redis://127.0.0.1:{free_port()}/0"
        return kortix_config(tmp_path, **traits)

    async def test_requests_that_need_redis_are_503(self, api: Fetch) -> None:
        assert payload(await api("GET", "status"))["deployment"] == "shared"
        tid = await new_thread(api)
        refused = await start(api, tid)
        assert refused.code == 503, refused.body
        assert payload(await api("GET", "threads", tid))["active_run_id"] is None


# ---------------------------------------------------------------------- a worker dies


class TestDeadWorker:
    """A deployment of its own: its one worker is killed, so only the server can sweep."""

    @pytest.fixture
    def dying(self, pg_admin_url: str, redis_url: str,  # noqa: F811
              tmp_path: Path) -> Iterator[tuple[Deployment, Worker]]:
        made = make_deployment(pg_admin_url, redis_url, tmp_path)
        doomed = Worker(made, tmp_path / "worker.log", KORTIX_LAB_LEASE_S="2",
                        KORTIX_LAB_SWEEP_INTERVAL_S="0.5").start()
        yield made, doomed
        doomed.stop()
        remove_deployment(pg_admin_url, made)

    @pytest.fixture
    def jp_server_config(self, tmp_path: Path, dying: tuple[Deployment, Worker]
                         ) -> dict[str, Any]:
        return kortix_config(tmp_path, **dying[0].server_traits(
            new_account(), lease_seconds=2.0, sweep_interval_seconds=0.5))

    async def test_the_server_sweeps_a_run_whose_worker_died(
            self, api: Fetch, dying: tuple[Deployment, Worker], server_url: str,
            auth: dict[str, str]) -> None:
        _, doomed = dying
        run = await started(api, model="scripted/hold")
        async with Follow(server_url, auth, run["run_id"]) as stream:
            await stream.until("text_delta")
            doomed.kill()
            died = time.monotonic()
            final = await stream.until("run_finished")
        assert time.monotonic() - died < 15
        assert final["status"] == "failed" and "sweeper" in final["reason"]
        out = payload(await api("GET", "agent-run", run["run_id"]))
        assert out["status"] == "failed" and out["active"] is False


# ---------------------------------------------------------------------- real servers


def read_events(client: httpx.Client, run_id: str, *, after: int | None = None,
                stop_after: int | None = None) -> list[Event]:
    """Events of the run's stream from a server; with ``stop_after``, the connection is
    dropped after that many events (a client that lost its network)."""
    headers = {"Last-Event-ID": str(after)} if after is not None else {}
    seen: list[Event] = []
    with client.stream("GET", f"kortix-lab/api/agent-run/{run_id}/stream",
                       headers=headers) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
                if seen[-1]["type"] == "run_finished" or len(seen) == stop_after:
                    break
    return seen


@pytest.fixture
def two_servers(deployment: Deployment, worker: Worker, account: str,
                tmp_path: Path) -> Iterator[tuple[LiveServer, LiveServer]]:
    servers = [LiveServer(tmp_path / name, **deployment.server_traits(account, warm_up=False))
               for name in ("a", "b")]
    for server in servers:
        server.tmp.mkdir()
    errors: list[BaseException] = []

    def boot(server: LiveServer) -> None:
        try:
            server.start()
        except BaseException as exc:  # reported below, on the test's thread
            errors.append(exc)

    booting = [threading.Thread(target=boot, args=(s,)) for s in servers]
    for thread in booting:
        thread.start()
    for thread in booting:
        thread.join()
    try:
        if errors:
            raise errors[0]
        yield servers[0], servers[1]
    finally:
        for server in servers:
            if server.proc is not None:
                server.stop()


def test_two_jupyter_servers_relay_the_same_run(two_servers: tuple[LiveServer, LiveServer],
                                                account: str) -> None:
    a, b = two_servers
    with a.client() as on_a, b.client() as on_b:
        assert on_b.get("kortix-lab/api/status").json()["account_id"] == account
        tid = on_a.post("kortix-lab/api/threads", json={}).json()["thread_id"]
        run = on_a.post(f"kortix-lab/api/thread/{tid}/agent/start",
                        json={"message": "relay me", "model": "scripted/drip"}).json()
        run_id = run["run_id"]
        results: dict[str, list[Event]] = {}

        def client(name: str, first: httpx.Client, then: httpx.Client) -> None:
            part = read_events(first, run_id, stop_after=4)
            assert part[-1]["type"] != "run_finished"  # the run was live when it dropped
            results[name] = part + read_events(then, run_id, after=part[-1]["seq"])

        readers = [threading.Thread(target=client, args=("a-then-b", on_a, on_b)),
                   threading.Thread(target=client, args=("b-then-a", on_b, on_a))]
        for reader in readers:
            reader.start()
        whole_on_b = read_events(on_b, run_id)
        for reader in readers:
            reader.join(120)
        assert set(results) == {"a-then-b", "b-then-a"}
        for events in (results["a-then-b"], results["b-then-a"], whole_on_b):
            assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
            assert events[-1]["type"] == "run_finished"
            assert events[-1]["status"] == "completed"
        assert results["a-then-b"] == results["b-then-a"] == whole_on_b
        # the thread and the run read the same on either server
        on_b_run = on_b.get(f"kortix-lab/api/agent-run/{run_id}").json()
        assert on_b_run["status"] == "completed"
        assert on_b_run == on_a.get(f"kortix-lab/api/agent-run/{run_id}").json()
        messages = on_b.get(f"kortix-lab/api/threads/{tid}/messages").json()["messages"]
        assert [m["type"] for m in messages] == ["user", "assistant"]

        # a run started on B is stopped from A, and B's stream says so
        other = on_b.post(f"kortix-lab/api/thread/{tid}/agent/start",
                          json={"message": "hold", "model": "scripted/hold"}).json()
        first = read_events(on_b, other["run_id"], stop_after=3)
        stop = on_a.post(f"kortix-lab/api/agent-run/{other['run_id']}/stop",
                         json={"reason": "stopped from server A"})
        assert stop.status_code == 200 and stop.json()["stopping"] is True
        rest = read_events(on_b, other["run_id"], after=first[-1]["seq"])
    assert rest[-1]["type"] == "run_finished" and rest[-1]["status"] == "stopped"
    assert rest[-1]["reason"] == "stopped from server A"
    for server in (a, b):  # each real server sweeps for dead workers
        assert "sweeping runs whose worker died" in server.log()


def test_one_shared_url_alone_stops_the_server(tmp_path: Path, redis_url: str,  # noqa: F811
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KORTIX_LAB_DATABASE_URL", raising=False)
    server = LiveServer(tmp_path, redis_url=redis_url, warm_up=False)
    with pytest.raises(RuntimeError, match="exited") as caught:
        server.start()
    assert server.proc is not None and server.proc.returncode != 0
    assert "KortixLabApp.redis_url is set but database_url" in str(caught.value)
