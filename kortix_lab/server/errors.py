"""How failures become HTTP statuses.

Handlers never pick a status themselves: they raise, and ``http_status`` maps
the engine's error tree (``agentpress/errors.py``) and the sandbox errors to
the status the wire spec (docs/api.md) names. Anything unmapped is a bug and
the only way to a 500.
"""

from __future__ import annotations

import sys
from typing import Any

from ..agentpress.errors import ConfigError, KortixLabError, NotFound, StoreError
from ..runs.manager import ThreadBusy


class ApiError(KortixLabError):
    """A refusal with its HTTP status and extra fields for the error body."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra


class RunLimited(ApiError):
    """Over the parallel-run limit or a budget (429)."""

    def __init__(self, message: str, *, limit: str) -> None:
        super().__init__(429, message, limit=limit)


def http_status(exc: BaseException) -> tuple[int, dict[str, Any]] | None:
    """The status and extra body fields for ``exc``; None when it is a bug."""
    from ..sandbox.base import (
        PathOutsideWorkspace,
        SandboxError,
        SandboxNotFound,
        SandboxUnavailable,
    )

    if isinstance(exc, ApiError):
        return exc.status, dict(exc.extra)
    if isinstance(exc, ThreadBusy):
        return 409, {"run_id": exc.run_id, "thread_id": exc.thread_id}
    if isinstance(exc, NotFound | SandboxNotFound | FileNotFoundError):
        return 404, {}
    if isinstance(exc, ConfigError | PathOutsideWorkspace | IsADirectoryError |
                  NotADirectoryError):
        return 400, {}
    if isinstance(exc, SandboxUnavailable | StoreError) or _redis_unreachable(exc):
        return 503, {}
    if isinstance(exc, SandboxError):
        return 400, {}
    if isinstance(exc, KortixLabError):  # e.g. the run manager is shut down
        return 503, {}
    return None


def _redis_unreachable(exc: BaseException) -> bool:
    """Redis (shared deployment) not answering: a service outage, 503 like the store's.
    Only checked when redis-py is loaded; the embedded deployment never imports it."""
    if "redis" not in sys.modules:
        return False
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return isinstance(exc, RedisConnectionError | RedisTimeoutError)
