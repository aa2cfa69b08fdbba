"""Admission (429 with the reason), and configuration that is refused up front."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from traitlets import TraitError

from kortix_lab.agentpress.errors import ConfigError
from kortix_lab.server.admission import Admission
from kortix_lab.server.app import KortixLabApp
from kortix_lab.server.errors import RunLimited

from .conftest import Fetch, kortix_config, payload


async def start(api: Fetch, **body: Any) -> Any:
    tid = payload(await api("POST", "threads", body={}))["thread_id"]
    return await api("POST", "thread", tid, "agent", "start", body={"message": "m", **body})


class TestParallelLimit:
    @pytest.fixture
    def jp_server_config(self, tmp_path: Path) -> dict[str, Any]:
        return kortix_config(tmp_path, max_parallel_runs=1, max_queued_runs=1)

    async def test_over_the_limit_is_429_with_the_reason(self, api: Fetch,
                                                         tmp_path: Path) -> None:
        gate = tmp_path / "gate"
        first = await start(api, model=f"fn/gate:{gate}")
        queued = await start(api, model="fn/echo")  # waits for the one slot
        assert first.code == queued.code == 201
        refused = await start(api, model="fn/echo")
        assert refused.code == 429
        body = payload(refused)
        assert body["limit"] == "parallel_runs" and "max_parallel_runs" in body["error"]
        status = payload(await api("GET", "status"))
        assert status["active_runs"] == 2 and status["max_parallel_runs"] == 1
        gate.touch()
        for run in (first, queued):
            r = await api("GET", "agent-run", payload(run)["run_id"], "stream")
            assert b'"run_finished"' in r.body
        assert (await start(api)).code == 201


    async def test_concurrent_starts_fill_the_slots_exactly(self, api: Fetch,
                                                           tmp_path: Path) -> None:
        gate = tmp_path / "gate"
        answers = await asyncio.gather(*(start(api, model=f"fn/gate:{gate}")
                                         for _ in range(3)))
        assert sorted(r.code for r in answers) == [201, 201, 429]
        gate.touch()
        for r in answers:
            if r.code == 201:
                await api("GET", "agent-run", payload(r)["run_id"], "stream")


class TestConcurrentStarts:
    @pytest.fixture
    def jp_server_config(self, tmp_path: Path) -> dict[str, Any]:
        return kortix_config(tmp_path, max_parallel_runs=2, max_queued_runs=2)

    async def test_many_concurrent_starts_admit_exactly_the_limit(
            self, api: Fetch, kortix: KortixLabApp, tmp_path: Path) -> None:
        """Starts are admitted without a lock held across the manager's store writes:
        whatever the interleaving, 12 starts against a limit of 4 give four 201s."""
        gate = tmp_path / "gate"
        threads = await asyncio.gather(*(api("POST", "threads", body={}) for _ in range(12)))
        answers = await asyncio.gather(*(
            api("POST", "thread", payload(t)["thread_id"], "agent", "start",
                body={"message": "m", "model": f"fn/gate:{gate}"}) for t in threads))
        codes = sorted(r.code for r in answers)
        assert codes == [201] * 4 + [429] * 8, codes
        assert len(kortix.workbench.manager.active_runs()) == 4
        for r in answers:
            if r.code == 429:
                assert payload(r)["limit"] == "parallel_runs"
        gate.touch()
        for r in answers:
            if r.code == 201:
                await api("GET", "agent-run", payload(r)["run_id"], "stream")
        assert (await start(api)).code == 201  # the slots are free again


class _SlowManager:
    """A manager whose starts take several event-loop turns (store writes) before the
    run is registered, as ``RunManager.start_run`` does."""

    dispatching = False

    def __init__(self) -> None:
        self.runs: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0

    def active_runs(self) -> list[str]:
        return list(self.runs)

    async def start(self, i: int) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        for _ in range(5):
            await asyncio.sleep(0)
        self.runs.append(f"run-{i}")
        self.in_flight -= 1


async def test_local_admission_admits_exactly_the_limit_while_starts_overlap() -> None:
    manager = _SlowManager()
    admission = Admission(manager, None, max_parallel=3, max_queued=2)  # type: ignore[arg-type]

    async def request(i: int) -> int:
        try:
            async with admission.admit():
                await manager.start(i)
        except RunLimited:
            return 429
        return 201

    codes = await asyncio.gather(*(request(i) for i in range(20)))
    assert sorted(codes) == [201] * 5 + [429] * 15
    assert len(manager.runs) == 5
    assert manager.most_in_flight == 5  # the admitted starts ran side by side
    # A failed start gives its reservation back.
    manager.runs.clear()

    async def failing() -> None:
        async with admission.admit():
            raise RuntimeError("store down")

    for _ in range(6):
        with pytest.raises(RuntimeError):
            await failing()
    assert await request(99) == 201


class TestBudget:
    @pytest.fixture
    def jp_server_config(self, tmp_path: Path) -> dict[str, Any]:
        return kortix_config(tmp_path, daily_cost_budget=0.0)

    async def test_a_spent_budget_is_429(self, api: Fetch) -> None:
        refused = await start(api)
        assert refused.code == 429
        assert payload(refused)["limit"] == "daily_cost_budget"
        assert "$0.00" in payload(refused)["error"]


class TestNoSandbox:
    @pytest.fixture
    def jp_server_config(self, tmp_path: Path) -> dict[str, Any]:
        return kortix_config(tmp_path, sandbox_backend="none")

    async def test_runs_and_files_say_sandboxes_are_off(self, api: Fetch) -> None:
        run = payload(await start(api))
        body = (await api("GET", "agent-run", run["run_id"], "stream")).body.decode()
        assert "sandbox_disabled" in body
        files = await api("GET", "projects", run["project_id"], "files")
        assert files.code == 404 and "disabled" in payload(files)["error"]
        assert (await start(api, options={"sandbox": "local"})).code == 400
        assert payload(await api("GET", "status"))["sandbox_backend"] == "none"


@pytest.mark.parametrize(("trait", "value", "words"), [
    ("max_runs_per_account", 0, "at least 1"),
    ("lease_seconds", 0.0, "> 0"),
    ("sweep_interval_seconds", -1.0, "> 0"),
    ("max_parallel_runs", 0, "at least 1"),
    ("max_queued_runs", -1, "at least 0"),
    ("heartbeat_seconds", 0.0, "> 0"),
    ("model_factory", "no_colon", "module:function"),
])
def test_bad_configuration_is_refused(trait: str, value: Any, words: str) -> None:
    with pytest.raises(TraitError, match=words) as caught:
        KortixLabApp(**{trait: value})
    assert "pw" not in str(caught.value)  # credentials in a URL are not echoed


SHARED_ENV = ("KORTIX_LAB_DATABASE_URL", "KORTIX_LAB_REDIS_URL", "KORTIX_LAB_REDIS_PREFIX",
              "KORTIX_LAB_ACCOUNT_ID", "JUPYTERHUB_USER", "KORTIX_LAB_MAX_RUNS_PER_ACCOUNT",
              "KORTIX_LAB_LEASE_S")


@pytest.fixture
def no_shared_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in SHARED_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_no_url_means_the_embedded_deployment(no_shared_env: pytest.MonkeyPatch) -> None:
    assert KortixLabApp().shared_settings() is None


@pytest.mark.parametrize(("trait", "missing"), [("redis_url", "database_url"),
                                                 ("database_url", "redis_url")])
def test_one_shared_url_alone_is_refused(no_shared_env: pytest.MonkeyPatch, trait: str,
                                         missing: str) -> None:
    value = {"redis_url": "redis://user:pw@127.0.0.1:6379/0",
             "database_url": "postgresql://user:pw@127.0.0.1/kortix"}[trait]
    with pytest.raises(ConfigError, match="needs both") as caught:
        KortixLabApp(**{trait: value}).shared_settings()
    assert f"KortixLabApp.{trait} is set but {missing}" in str(caught.value)
    assert "pw" not in str(caught.value)


@pytest.mark.parametrize(("trait", "value"), [
    ("redis_url", "http://user:pw@127.0.0.1"),
    ("database_url", "mysql://user:pw@127.0.0.1/kortix"),
])
def test_a_shared_url_of_another_kind_is_refused(no_shared_env: pytest.MonkeyPatch, trait: str,
                                                value: str) -> None:
    urls = {"redis_url": "redis://127.0.0.1:6379/0",
            "database_url": "postgresql://127.0.0.1/kortix", trait: value}
    with pytest.raises(TraitError, match=f"{trait} must start with") as caught:
        KortixLabApp(**urls).shared_settings()
    assert "pw" not in str(caught.value)


def test_shared_settings_come_from_the_environment(no_shared_env: pytest.MonkeyPatch) -> None:
    no_shared_env.setenv("KORTIX_LAB_DATABASE_URL", "postgresql://127.0.0.1/kortix")
    no_shared_env.setenv("KORTIX_LAB_REDIS_URL", "redis://127.0.0.1:6379/3")
    no_shared_env.setenv("KORTIX_LAB_REDIS_PREFIX", "team:")
    no_shared_env.setenv("JUPYTERHUB_USER", "ada")
    no_shared_env.setenv("KORTIX_LAB_MAX_RUNS_PER_ACCOUNT", "7")
    no_shared_env.setenv("KORTIX_LAB_LEASE_S", "12")
    shared = KortixLabApp().shared_settings()
    assert shared is not None
    assert (shared.database_url, shared.redis_url, shared.redis_prefix, shared.account_id,
            shared.max_runs_per_account, shared.lease_s) == (
        "postgresql://127.0.0.1/kortix", "redis://127.0.0.1:6379/3", "team:", "ada", 7, 12.0)
    no_shared_env.setenv("KORTIX_LAB_ACCOUNT_ID", "team-1")  # wins over the hub user
    assert KortixLabApp().account_id == "team-1"
    no_shared_env.setenv("KORTIX_LAB_REDIS_URL", "http://127.0.0.1:6379")  # checked too
    with pytest.raises(TraitError, match="must start with"):
        KortixLabApp().shared_settings()
    no_shared_env.delenv("KORTIX_LAB_ACCOUNT_ID")
    no_shared_env.delenv("JUPYTERHUB_USER")
    assert KortixLabApp().account_id == "local"


async def test_kernel_env_hook_is_installed_and_removed(jp_serverapp: Any,
                                                        kortix: KortixLabApp) -> None:
    from kortix_lab.server import kernel_env

    manager = jp_serverapp.kernel_manager
    assert hasattr(manager, "_kortix_lab_original_start_kernel")
    env = kernel_env.kernel_env(jp_serverapp, kortix.kernel_token.value)
    assert env["KORTIX_LAB_SERVER_URL"] == f"http://127.0.0.1:{jp_serverapp.port}" \
                                           f"{jp_serverapp.base_url}"
    await kortix.stop_extension()
    assert not hasattr(manager, "_kortix_lab_original_start_kernel")


class TestNoKernelEnv:
    @pytest.fixture
    def jp_server_config(self, tmp_path: Path) -> dict[str, Any]:
        return kortix_config(tmp_path, export_kernel_env=False)

    async def test_kernels_are_left_alone(self, jp_serverapp: Any, kortix: KortixLabApp) -> None:
        assert not hasattr(jp_serverapp.kernel_manager, "_kortix_lab_original_start_kernel")
