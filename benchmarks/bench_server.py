"""The server extension's cost: latency, concurrency and stream throughput.

A real ``jupyter server`` process with the extension (store in a temp dir,
sandboxes off) and, for comparison, an in-process ``Workbench`` on its own
store — the embedded mode a kernel without a server uses. Models are plain
async generators loaded by the server through ``KortixLabApp.model_factory``
(this module's ``model_factory``), so LiteLLM is not measured:

1. First-event latency: from "start a run" to the first event in hand, through
   the server (POST start, GET stream, first SSE message, over one keep-alive
   HTTP client as the kernel's ``ServerClient`` uses) against embedded
   (``RunManager.start_run`` then ``subscribe``). Goal: ≤ 5 ms added (median).
2. 200 concurrent runs whose model takes 200 ms: wall time from the first
   start to the last ``run_finished``, against the ideal (the 200 ms model
   latency: every run in parallel, nothing else costing anything). Goal ≤ 1.2×.
   Each run has an HTTP client of its own, as runs from many kernels do: one
   client's pool of 400 connections would cost the load generator more CPU (its
   pool scans every connection per request) than the server spends.
   The same load in-process shows how much of the gap is the store, not HTTP;
   it is measured like the server's: sandboxes off, threads made before the clock.
3. Events per second one SSE stream sustains: replaying a finished run of
   20 000 events (the stream path alone), and following a live run (the engine
   producing them is then the bound).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from kortix_lab.agentpress.model import (  # noqa: E402
    ChatModel,
    Finish,
    FunctionModel,
    ModelDelta,
    ModelRequest,
    TextChunk,
    Usage,
)
from kortix_lab.agentpress.runner import RunConfig  # noqa: E402

LATENCY_RUNS = 60
CONCURRENT = 200
MODEL_LATENCY = 0.2
STREAM_EVENTS = 20_000


# ---- models (also imported by the server process) --------------------------------------
def model_factory(config: RunConfig) -> ChatModel | None:
    """``bench/first``, ``bench/slow:<ms>``, ``bench/chatty:<n>``."""
    kind, _, arg = config.model.removeprefix("bench/").partition(":")
    if kind == "first":
        return FunctionModel(_first)
    if kind == "slow":
        return FunctionModel(lambda r: _slow(r, int(arg) / 1000))
    if kind == "chatty":
        return FunctionModel(lambda r: _chatty(r, int(arg)))
    return None


async def _first(request: ModelRequest) -> AsyncIterator[ModelDelta]:
    yield TextChunk("hi")
    yield Finish("stop", Usage(1, 1))


async def _slow(request: ModelRequest, seconds: float) -> AsyncIterator[ModelDelta]:
    await asyncio.sleep(seconds)
    yield TextChunk("done")
    yield Finish("stop", Usage(1, 1))


async def _chatty(request: ModelRequest, n: int) -> AsyncIterator[ModelDelta]:
    for _ in range(n):
        yield TextChunk("x")
    yield Finish("stop", Usage(1, n))


# ---- the server ----------------------------------------------------------------------
class Server:
    def __init__(self, tmp: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.token = uuid.uuid4().hex
        self.url = f"http://127.0.0.1:{self.port}/kortix-lab/api/"
        config = tmp / "config"
        config.mkdir()
        (config / "jupyter_server_config.json").write_text(json.dumps({
            "ServerApp": {"jpserver_extensions": {"kortix_lab.server": True},
                          "port": self.port, "port_retries": 0, "ip": "127.0.0.1",
                          "open_browser": False, "allow_root": True, "root_dir": str(tmp),
                          "log_level": "WARN"},
            "IdentityProvider": {"token": self.token},
            "KortixLabApp": {"store": str(tmp / "server.duckdb"), "sandbox_backend": "none",
                             "max_parallel_runs": CONCURRENT + 8, "warm_up": False,
                             "default_model": "bench/first",
                             "model_factory": "bench_server:model_factory"}}))
        env = {**os.environ, "JUPYTER_CONFIG_DIR": str(config),
               "JUPYTER_DATA_DIR": str(tmp / "data"), "JUPYTER_RUNTIME_DIR": str(tmp / "rt"),
               "PYTHONPATH": f"{REPO}{os.pathsep}{HERE}"}
        self.log = (tmp / "server.log").open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "jupyter_server"], env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    async def wait_ready(self, client: Any) -> None:
        import httpx

        for _ in range(600):
            try:
                if (await client.get("status")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
        raise RuntimeError("the server did not start")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


async def first_event(client: Any, thread_id: str, model: str) -> tuple[float, float, float]:
    """Seconds from the start request to the first SSE message, and of that: the start
    request's round trip and the stream request's until its headers."""
    t0 = time.perf_counter()
    r = await client.post(f"thread/{thread_id}/agent/start",
                          json={"message": "m", "model": model})
    t1 = time.perf_counter()
    run_id = r.json()["run_id"]
    elapsed = opened = 0.0
    async with client.stream("GET", f"agent-run/{run_id}/stream") as response:
        opened = time.perf_counter() - t1
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                if not elapsed:
                    elapsed = time.perf_counter() - t0
                if '"run_finished"' in line:
                    break
    return elapsed, t1 - t0, opened


async def follow(client: Any, thread_id: str, model: str) -> int:
    r = await client.post(f"thread/{thread_id}/agent/start",
                          json={"message": "m", "model": model})
    if r.status_code != 201:
        raise RuntimeError(r.text)
    count = 0
    async with client.stream("GET", f"agent-run/{r.json()['run_id']}/stream") as response:
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                count += 1
    return count


async def server_side(tmp: Path) -> dict[str, Any]:
    import httpx

    server = Server(tmp)
    out: dict[str, Any] = {}
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=server.headers,
                                     timeout=120) as client:
            await server.wait_ready(client)

            async def thread() -> str:
                return str((await client.post("threads", json={})).json()["thread_id"])

            timings = []
            for i in range(LATENCY_RUNS + 5):
                timing = await first_event(client, await thread(), "bench/first")
                if i >= 5:  # the first few warm the server's imports and connections
                    timings.append(timing)
            out["latency"] = [t[0] for t in timings]
            out["start_rtt"] = [t[1] for t in timings]
            out["open_rtt"] = [t[2] for t in timings]
            out["status_rtt"] = []
            for _ in range(LATENCY_RUNS):
                t0 = time.perf_counter()
                await client.get("status")
                out["status_rtt"].append(time.perf_counter() - t0)

            threads = [await thread() for _ in range(CONCURRENT)]
            clients = [httpx.AsyncClient(base_url=server.url, headers=server.headers,
                                         timeout=120) for _ in threads]
            try:
                t0 = time.perf_counter()
                counts = await asyncio.gather(*(follow(c, t, f"bench/slow:"
                                                       f"{int(MODEL_LATENCY * 1000)}")
                                                for c, t in zip(clients, threads, strict=True)))
                out["concurrent_wall"] = time.perf_counter() - t0
            finally:
                await asyncio.gather(*(c.aclose() for c in clients))
            assert all(c >= 3 for c in counts), counts

            t = await thread()
            t0 = time.perf_counter()
            live = await follow(client, t, f"bench/chatty:{STREAM_EVENTS}")
            out["live_eps"] = live / (time.perf_counter() - t0)
            runs = (await client.get(f"threads/{t}/runs")).json()["runs"]
            t0 = time.perf_counter()
            replayed = 0
            async with client.stream("GET", f"agent-run/{runs[-1]['run_id']}/stream") as resp:
                async for line in resp.aiter_lines():
                    if line.startswith("data: "):
                        replayed += 1
            out["replay_eps"] = replayed / (time.perf_counter() - t0)
    finally:
        server.stop()
    return out


async def embedded_side(tmp: Path) -> dict[str, Any]:
    from kortix_lab.config import Settings
    from kortix_lab.workbench import Workbench

    # As the server is configured: sandboxes off, so both sides build the same tools.
    settings = Settings(store=str(tmp / "embedded.duckdb"), model="bench/first",
                        max_parallel_runs=CONCURRENT + 8, sandbox="none")
    workbench = Workbench(settings, model_factory=lambda c: model_factory(c) or
                          FunctionModel(_first))
    out: dict[str, Any] = {}
    try:
        async def thread() -> str:
            return (await asyncio.to_thread(workbench.resolve_thread, None)).thread_id

        async def one(model: str, thread_id: str | None = None) -> float:
            thread_id = thread_id or await thread()
            t0 = time.perf_counter()
            run = await workbench.manager.start_run(
                thread_id, "m", workbench.run_config(model=model))
            elapsed = 0.0
            async for _ in workbench.manager.subscribe(run.run_id):
                elapsed = elapsed or time.perf_counter() - t0
            return elapsed

        latencies = [await one("bench/first") for _ in range(LATENCY_RUNS + 5)]
        out["latency"] = latencies[5:]
        # The server side makes its threads before the clock starts: so does this one.
        threads = [await thread() for _ in range(CONCURRENT)]
        t0 = time.perf_counter()
        await asyncio.gather(*(one(f"bench/slow:{int(MODEL_LATENCY * 1000)}", t)
                               for t in threads))
        out["concurrent_wall"] = time.perf_counter() - t0
    finally:
        await workbench.close()
    return out


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = asyncio.run(server_side(Path(tmp)))
        embedded = asyncio.run(embedded_side(Path(tmp)))
    s_med, e_med = statistics.median(server["latency"]), statistics.median(embedded["latency"])
    s_p90 = statistics.quantiles(server["latency"], n=10)[-1]
    e_p90 = statistics.quantiles(embedded["latency"], n=10)[-1]
    print(f"first event, median of {LATENCY_RUNS}: server {ms(s_med)}, embedded {ms(e_med)}, "
          f"added {ms(s_med - e_med)} (goal <= 5 ms)")
    print(f"first event, p90: server {ms(s_p90)}, embedded {ms(e_p90)}, "
          f"added {ms(s_p90 - e_p90)}")
    med = statistics.median
    print(f"  of which (medians): start request {ms(med(server['start_rtt']))}, stream "
          f"request to headers {ms(med(server['open_rtt']))}; a bare authenticated request "
          f"(GET /status) {ms(med(server['status_rtt']))}")
    ideal = MODEL_LATENCY
    print(f"{CONCURRENT} concurrent runs, {ms(MODEL_LATENCY)} model: server "
          f"{server['concurrent_wall']:.3f} s = {server['concurrent_wall'] / ideal:.2f}x ideal "
          f"(goal <= 1.2x); embedded {embedded['concurrent_wall']:.3f} s = "
          f"{embedded['concurrent_wall'] / ideal:.2f}x ideal")
    print(f"one SSE stream: {server['replay_eps']:,.0f} events/s replaying a finished run, "
          f"{server['live_eps']:,.0f} events/s following a live run "
          f"({STREAM_EVENTS:,} deltas)")


if __name__ == "__main__":
    main()
