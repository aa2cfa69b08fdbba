"""A run's configuration as it travels to a worker: inside the run record, never in the queue.

In the shared deployment the server that takes a request is not the process
that executes it. The queue message carries only ``(account_id, run_id)``; the
``RunConfig`` rides in the run record's metadata (Postgres), so a message that
is redelivered, or a run re-read after a crash, always sees the same settings,
and Redis never holds more than ids.

Secrets never reach the record in clear: provider keys in ``model_params``
are dropped (workers read their own keys from the environment, as LiteLLM
does), and the credentials of per-run MCP servers are Fernet-encrypted with
the deployment's ``$KORTIX_LAB_SECRET_KEY`` (see ``mcp.secrets``), which every
server and worker of one deployment shares.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from ..agentpress.errors import ConfigError
from ..agentpress.runner import RunConfig

CONFIG_KEY = "config"
_SECRET_NAME = re.compile(r"(api_?key|token|secret|password|authorization)", re.IGNORECASE)
_FIELDS = {f.name for f in dataclasses.fields(RunConfig)}


def config_to_record(config: RunConfig) -> dict[str, Any]:
    """A JSON-able copy of ``config`` fit for storage (secrets dropped or encrypted)."""
    data = dataclasses.asdict(config)
    data["model_params"] = {k: v for k, v in config.model_params.items()
                            if not _SECRET_NAME.search(k)}
    if config.mcp_servers:
        from ..mcp.secrets import encrypt_entry

        data["mcp_servers"] = [encrypt_entry(entry) for entry in config.mcp_servers]
    return data


def config_from_record(data: dict[str, Any] | None) -> RunConfig:
    """The ``RunConfig`` a record holds; fields this version does not know are ignored
    (a newer server may have queued the run), a missing model is a ``ConfigError``."""
    if not isinstance(data, dict) or not data.get("model"):
        raise ConfigError("the run record holds no configuration (was it queued by a "
                          "server of another version?)")
    known = {k: v for k, v in data.items() if k in _FIELDS}
    if known.get("mcp_servers"):
        from ..mcp.secrets import decrypt_entry

        known["mcp_servers"] = [decrypt_entry(entry) for entry in known["mcp_servers"]]
    return RunConfig(**known)
