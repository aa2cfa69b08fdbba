"""The Jupyter server extension: the run host of a Jupyter deployment.

For the server's lifetime it owns one ``Workbench`` (the store and the
RunManager), the sandbox provider the tools and the file routes share, and the
kernel token. Kernels it starts get ``KORTIX_LAB_SERVER_URL`` and
``KORTIX_LAB_TOKEN`` so the ``%%agent`` magic talks to it instead of running
agents itself.

Two deployments, chosen by configuration:

* **embedded** (default): the store is a DuckDB file (one process writes it)
  and runs execute in this server; on shutdown every in-flight run ends as
  ``stopped`` with the reason, before the store is closed.
* **shared** (``database_url`` and ``redis_url`` both set; one alone refuses to
  start): records live in Postgres under the server's ``account_id``, runs are
  queued for ``kortix-lab worker`` processes and relayed from Redis, so any
  server of the account relays, stops or answers any run and the account's
  limits hold across servers (``server/shared.py``). The server also sweeps
  runs whose worker died. On shutdown, runs on workers go on.

Configuration is traitlets (``c.KortixLabApp.…`` in a Jupyter config file or
``--KortixLabApp.…`` on the command line); each default comes from the same
environment variables the CLI and the workers read (``kortix_lab/config.py``).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Enum, Float, Int, TraitError, Unicode, default, validate

from ..agentpress.errors import ConfigError
from ..agentpress.model import ChatModel
from ..agentpress.runner import RunConfig
from ..config import Settings, SharedSettings
from . import kernel_env
from .admission import Admission
from .auth import KernelIdentityProvider, KernelScopeAuthorizer, KernelToken
from .files import SandboxFiles

if TYPE_CHECKING:
    from .shared import SharedParts

ModelFactory = Callable[[RunConfig], ChatModel | None]
SHUTDOWN_REASON = "the Jupyter server is shutting down"


class KortixLabApp(ExtensionApp):
    name = "kortix_lab"
    description = "Kortix Lab: agent runs, threads and sandboxes behind Jupyter's auth."
    load_other_extensions = True

    store = Unicode(help="The store: a DuckDB file path, duckdb:///path or :memory: "
                         "(default $KORTIX_LAB_STORE or ~/.kortix_lab/store.duckdb).",
                    ).tag(config=True)
    default_model = Unicode(help="Model for runs that name none (default $KORTIX_LAB_MODEL "
                                 "or scripted/demo).").tag(config=True)
    max_parallel_runs = Int(help="Runs executing at once (default $KORTIX_LAB_MAX_PARALLEL "
                                 "or 3).").tag(config=True)
    max_queued_runs = Int(0, help="Runs allowed to wait for a slot beyond max_parallel_runs; "
                                  "past both, starting a run is refused with 429.",
                          ).tag(config=True)
    daily_cost_budget = Float(None, allow_none=True,
                              help="Refuse new runs (429) once the runs of the last 24 hours "
                                   "cost this much (USD). None: no budget.").tag(config=True)
    sandbox_backend = Enum(["local", "none", "daytona"], "local",
                           help="Where the agent's sandbox tools run: local (bubblewrap), "
                                "none (no sandbox tools), daytona (needs DAYTONA_API_KEY and "
                                "kortix-lab[daytona]).",
                           ).tag(config=True)
    sandbox_root = Unicode("", help="Directory of local sandboxes (default "
                                    "~/.kortix_lab/sandboxes).").tag(config=True)
    database_url = Unicode(help="Postgres (or Supabase) of the shared deployment, "
                                "postgresql://… (default $KORTIX_LAB_DATABASE_URL). With "
                                "redis_url: records live there and runs are queued for "
                                "`kortix-lab worker`; set both or neither.").tag(config=True)
    redis_url = Unicode(help="Redis of the shared deployment, redis://… (default "
                             "$KORTIX_LAB_REDIS_URL): run queue, event streams, stops, "
                             "approvals, leases. Set with database_url.").tag(config=True)
    redis_prefix = Unicode(help="Prefix of every Redis key and of the queue (default "
                                "$KORTIX_LAB_REDIS_PREFIX or kortix:); servers and workers of "
                                "one deployment must agree.").tag(config=True)
    account_id = Unicode(help="Whose records this server reads and writes in the shared "
                              "deployment, and whose limits its runs count against (default "
                              "$KORTIX_LAB_ACCOUNT_ID, else $JUPYTERHUB_USER, else local).",
                         ).tag(config=True)
    max_runs_per_account = Int(help="Shared deployment: queued + running runs the account "
                                    "may have across every server; past it, 429 (default "
                                    "$KORTIX_LAB_MAX_RUNS_PER_ACCOUNT or 50).").tag(config=True)
    lease_seconds = Float(help="Shared deployment: a run's executor renews its lease within "
                               "this; the sweeper fails runs whose lease lapsed (default "
                               "$KORTIX_LAB_LEASE_S or 30).").tag(config=True)
    sweep_interval_seconds = Float(help="Shared deployment: how often this server looks for "
                                        "runs whose worker died (default "
                                        "$KORTIX_LAB_SWEEP_INTERVAL_S or 10).").tag(config=True)
    model_factory = Unicode("", help="Import path 'module:function' of a function taking a "
                                     "RunConfig and returning a ChatModel, or None for the "
                                     "default (LiteLLM). For custom adapters and tests.",
                            ).tag(config=True)
    export_kernel_env = Bool(True, help="Give kernels started by this server "
                                        "KORTIX_LAB_SERVER_URL and KORTIX_LAB_TOKEN.",
                             ).tag(config=True)
    warm_up = Bool(True, help="Import the model stack (LiteLLM, ≈2.5 s) in the background at "
                              "start, so the first run does not wait for it.").tag(config=True)
    heartbeat_seconds = Float(15.0, help="Quiet seconds before a stream sends a keep-alive "
                                         "comment.").tag(config=True)

    @default("store")
    def _default_store(self) -> str:
        return Settings().store

    @default("default_model")
    def _default_model(self) -> str:
        return Settings().model

    @default("max_parallel_runs")
    def _default_max_parallel(self) -> int:
        return Settings().max_parallel_runs

    @default("database_url")
    def _default_database_url(self) -> str:
        return SharedSettings().database_url or ""

    @default("redis_url")
    def _default_redis_url(self) -> str:
        return SharedSettings().redis_url or ""

    @default("redis_prefix")
    def _default_redis_prefix(self) -> str:
        return SharedSettings().redis_prefix

    @default("account_id")
    def _default_account(self) -> str:
        return SharedSettings().account_id or os.environ.get("JUPYTERHUB_USER") or "local"

    @default("max_runs_per_account")
    def _default_max_runs_per_account(self) -> int:
        return SharedSettings().max_runs_per_account

    @default("lease_seconds")
    def _default_lease(self) -> float:
        return SharedSettings().lease_s

    @default("sweep_interval_seconds")
    def _default_sweep_interval(self) -> float:
        return SharedSettings().sweep_interval_s

    @validate("max_runs_per_account")
    def _check_runs_per_account(self, proposal: Any) -> int:
        return _at_least(proposal, 1)

    @validate("lease_seconds", "sweep_interval_seconds")
    def _check_positive(self, proposal: Any) -> float:
        if not proposal["value"] > 0:
            raise TraitError(f"{proposal['trait'].name} must be > 0")
        return float(proposal["value"])

    @validate("max_parallel_runs")
    def _check_parallel(self, proposal: Any) -> int:
        return _at_least(proposal, 1)

    @validate("max_queued_runs")
    def _check_queued(self, proposal: Any) -> int:
        return _at_least(proposal, 0)

    @validate("heartbeat_seconds")
    def _check_heartbeat(self, proposal: Any) -> float:
        if not proposal["value"] > 0:
            raise TraitError("heartbeat_seconds must be > 0")
        return float(proposal["value"])

    @validate("model_factory")
    def _check_factory(self, proposal: Any) -> str:
        value = str(proposal["value"])
        if value and ":" not in value:
            raise TraitError(f"model_factory must be 'module:function', got {value!r}")
        return value

    def shared_settings(self) -> SharedSettings | None:
        """The shared deployment's settings, or None for the embedded one. One URL without
        the other is an error: running on the local store when a shared one was asked for
        would split a team's records between servers without a word."""
        database, redis = self.database_url, self.redis_url
        if not database and not redis:
            return None
        if not (database and redis):
            given, missing = ("database_url", "redis_url ($KORTIX_LAB_REDIS_URL)") if database \
                else ("redis_url", "database_url ($KORTIX_LAB_DATABASE_URL)")
            raise ConfigError(
                f"KortixLabApp.{given} is set but {missing} is not: the shared deployment "
                "needs both (records in Postgres, runs queued on Redis for `kortix-lab "
                "worker`); set both, or neither to use the local store")
        # checked here, not by trait validators: Jupyter would only log their error and
        # start without the extension (and values from the environment bypass them)
        _shared_url(database, ("postgresql", "postgres"), "database_url")
        _shared_url(redis, ("redis", "rediss", "unix"), "redis_url")
        if not self.account_id.strip():
            raise ConfigError("KortixLabApp.account_id is empty: the shared deployment keeps "
                              "each account's records apart and needs one")
        settings = SharedSettings(database_url=database, redis_url=redis,
                                  redis_prefix=self.redis_prefix, account_id=self.account_id,
                                  lease_s=self.lease_seconds,
                                  sweep_interval_s=self.sweep_interval_seconds,
                                  max_runs_per_account=self.max_runs_per_account)
        settings.check()
        return settings

    # ---- life cycle ------------------------------------------------------------------
    def initialize_settings(self) -> None:
        from .service import Service
        from .workbench import ServerWorkbench

        try:
            shared = self.shared_settings()
        except (ConfigError, TraitError, ValueError) as exc:
            # Not a warning and an extension quietly missing: a server that would run
            # agents on another store than its team's must not start.
            self.log.critical("kortix_lab: %s", exc)
            raise SystemExit(f"kortix_lab: {exc}") from None
        self.run_settings = Settings(store=self.store, model=self.default_model,
                                     max_parallel_runs=self.max_parallel_runs)
        provider = self.sandbox_provider = self._sandbox_provider()
        tools = None
        if provider is not None:
            from ..tools.provider import sandbox_tools

            tools = sandbox_tools(provider)
        self.shared: SharedParts | None = None
        if shared is None:
            self.workbench = ServerWorkbench(self.run_settings, sandbox=tools,
                                             model_factory=self._model_factory())
            self.admission = Admission(self.workbench.manager, self.workbench.store,
                                       max_parallel=self.max_parallel_runs,
                                       max_queued=self.max_queued_runs,
                                       daily_cost_budget=self.daily_cost_budget)
            self.service = Service(self.workbench, self.admission,
                                   sandbox_backend=self.sandbox_backend)
        else:  # runs execute on workers: the model factory is theirs
            from .shared import shared_server

            wired = shared_server(shared, self.account_id, self.run_settings, sandbox=tools,
                                  sandbox_backend=self.sandbox_backend,
                                  daily_cost_budget=self.daily_cost_budget)
            self.shared = wired.parts
            self.workbench, self.admission, self.service = \
                wired.workbench, wired.admission, wired.service
            problem = wired.parts.probe()
            if problem:  # it may come back: requests answer 503 until it does
                self.log.error("kortix_lab: %s", problem)
            self._start_background()
        self.files = SandboxFiles(provider, tools=tools, store=self.workbench.store)
        self.kernel_token = KernelToken()
        self.kernel_identity = KernelIdentityProvider(self.kernel_token, parent=self)
        self.kernel_authorizer = KernelScopeAuthorizer(parent=self)
        serverapp = self.serverapp
        assert serverapp is not None
        if self.export_kernel_env and not kernel_env.install(
                serverapp, lambda: kernel_env.kernel_env(serverapp, self.kernel_token.value)):
            self.log.warning("kortix_lab: kernels of this server will not find the API "
                             "(unix socket or gateway kernels); they run agents embedded")
        _share_handlers(self.log)
        if self.warm_up and self.shared is None:  # shared: workers make the models
            threading.Thread(target=_warm_model_stack, args=(self.default_model,),
                             name="kortix-lab-warm-up", daemon=True).start()
        if self.shared is not None:
            self.log.info("kortix_lab: shared deployment on %s; runs are queued for "
                          "kortix-lab worker, at most %d per account",
                          self.shared.describe(), self.admission.max_parallel)
        else:
            self.log.info("kortix_lab: store %s, default model %s, %d parallel runs",
                          self.store, self.default_model, self.max_parallel_runs)

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        """Called once the server's event loop runs."""
        self._start_background()

    def _start_background(self) -> None:
        """The sweeper needs a running loop: a real server has one only after start-up
        (``_start_jupyter_server_extension``); a test server initialises inside one."""
        if self.shared is None or getattr(self, "_stopped", False):
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        if not self.shared.sweeping:
            self.shared.start_sweeper(self.workbench.manager.owner)
            self.log.info("kortix_lab: sweeping runs whose worker died every %g s",
                          self.shared.settings.sweep_interval_s)

    def initialize_handlers(self) -> None:
        from .routes import handlers

        self.handlers.extend(handlers())

    async def stop_extension(self) -> None:
        """In-flight runs of this process end as stopped with the reason, then the store is
        closed. Runs on workers (shared deployment) go on; any server relays them."""
        workbench = getattr(self, "workbench", None)
        if workbench is None or getattr(self, "_stopped", False):
            return
        self._stopped = True
        if self.serverapp is not None:
            kernel_env.uninstall(self.serverapp)
        await workbench.manager.shutdown(SHUTDOWN_REASON)
        shared = getattr(self, "shared", None)
        if shared is not None:
            await shared.aclose()
        await workbench.close()  # the sandboxes' processes end; their files stay

    # ---- parts -------------------------------------------------------------------------
    def _sandbox_provider(self) -> Callable[[], Any] | None:
        """One provider, made on first use and shared by the tools and the file routes,
        so a project's sandbox is one object in this process."""
        if self.sandbox_backend == "none":
            return None
        root = Path(self.sandbox_root).expanduser() if self.sandbox_root else None
        made: list[Any] = []

        def provider() -> Any:
            if not made:
                from ..tools.backends import provider_factory
                from ..tools.provider import local_provider_factory

                factory = local_provider_factory(root) if self.sandbox_backend == "local" \
                    else provider_factory(self.sandbox_backend)
                assert factory is not None
                made.append(factory())
            return made[0]

        return provider

    def _model_factory(self) -> Callable[[RunConfig], ChatModel] | None:
        if not self.model_factory:
            return None
        module_name, _, attr = self.model_factory.partition(":")
        custom: ModelFactory = getattr(importlib.import_module(module_name), attr)

        def factory(config: RunConfig) -> ChatModel:
            from ..workbench import make_model

            return custom(config) or make_model(config, self.run_settings)

        return factory


def _warm_model_stack(model: str) -> None:
    """Runs in a thread: a failure here only means the first run pays the import."""
    try:
        import litellm  # noqa: F401

        if model.startswith("scripted/"):
            from ..models.scripted import register_scripted_provider

            register_scripted_provider()
    except Exception:  # the run that needs it reports the real error
        logging.getLogger("kortix_lab.server").debug("warm-up failed", exc_info=True)


def _share_handlers(app_log: logging.Logger | logging.LoggerAdapter[Any]) -> None:
    """Our loggers (``kortix_lab.server``: request and run lines with correlation ids)
    write where the server's log goes, in its format."""
    ours = logging.getLogger("kortix_lab.server")
    handlers = getattr(app_log, "handlers", [])
    if handlers and not ours.handlers:
        for handler in handlers:
            ours.addHandler(handler)
        ours.propagate = False
    if ours.level == logging.NOTSET:
        ours.setLevel(logging.INFO)


def _at_least(proposal: Any, low: int) -> int:
    value = int(proposal["value"])
    if value < low:
        raise TraitError(f"{proposal['trait'].name} must be at least {low}, got {value}")
    return value


def _shared_url(value: str, schemes: tuple[str, ...], name: str) -> str:
    """Check a URL's scheme; the error never echoes credentials."""
    if not value:
        return value
    scheme = value.partition("://")[0]
    if scheme not in schemes:
        raise TraitError(f"{name} must start with {' or '.join(s + '://' for s in schemes)}, "
                         f"got {value.split('@')[-1]!r}")
    return value
