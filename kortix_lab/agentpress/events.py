"""Run events: the one log every consumer reads.

A run emits an ordered list of events. The store keeps only final messages;
the terminal, the notebook widget, the side panel and the stream API all
render this log. Events are stamped (``run_id``, ``seq``, ``ts``) by the event
log when appended, so the runner never has to count.

The wire form (``to_dict``) is flat: ``{"type", "run_id", "seq", "ts", ...fields}``
and is exactly what ``kortix-lab run --json`` prints, one per line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

RunStatus = Literal["queued", "running", "completed", "failed", "stopped"]
FinalStatus = Literal["completed", "failed", "stopped"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "stopped"})


def utc_now_iso() -> str:
    """ISO-8601 UTC with milliseconds: sortable as text and readable in a log."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, kw_only=True, slots=True)
class Event:
    """Base of every run event; subclasses add their payload fields."""

    type: ClassVar[str] = "event"
    run_id: str = ""
    seq: int = 0
    ts: str = ""

    def stamped(self, run_id: str, seq: int, ts: str | None = None) -> Event:
        return dataclasses.replace(self, run_id=run_id, seq=seq, ts=ts or utc_now_iso())

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "run_id": self.run_id, "seq": self.seq,
                               "ts": self.ts}
        for f in dataclasses.fields(self):
            if f.name not in out:
                out[f.name] = getattr(self, f.name)
        return out


@dataclass(frozen=True, kw_only=True, slots=True)
class RunStarted(Event):
    type: ClassVar[str] = "run_started"
    thread_id: str
    model: str
    agent_id: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class TextDelta(Event):
    type: ClassVar[str] = "text_delta"
    text: str


@dataclass(frozen=True, kw_only=True, slots=True)
class AssistantMessage(Event):
    """One model response, complete: its text and the tool calls it made."""

    type: ClassVar[str] = "assistant_message"
    message_id: str
    text: str
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolStarted(Event):
    type: ClassVar[str] = "tool_started"
    call_id: str
    tool: str
    arguments: dict[str, Any]


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolFinished(Event):
    type: ClassVar[str] = "tool_finished"
    call_id: str
    tool: str
    success: bool
    output: Any
    duration_ms: float


@dataclass(frozen=True, kw_only=True, slots=True)
class ApprovalRequested(Event):
    """A tool call waits for the user's decision (policy ``ask``)."""

    type: ClassVar[str] = "approval_requested"
    call_id: str
    tool: str
    arguments: dict[str, Any]
    timeout_s: float


@dataclass(frozen=True, kw_only=True, slots=True)
class ApprovalDecided(Event):
    type: ClassVar[str] = "approval_decided"
    call_id: str
    tool: str
    approved: bool
    reason: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class FileChanged(Event):
    """A tool created, modified or deleted a file in the sandbox workspace."""

    type: ClassVar[str] = "file_changed"
    path: str
    kind: Literal["created", "modified", "deleted"]
    size: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Status(Event):
    """Something the user should know that is not an error (retrying, trimmed context…)."""

    type: ClassVar[str] = "status"
    message: str
    code: str = "info"


@dataclass(frozen=True, kw_only=True, slots=True)
class ErrorEvent(Event):
    type: ClassVar[str] = "error"
    message: str
    code: str = "error"


@dataclass(frozen=True, kw_only=True, slots=True)
class RunFinished(Event):
    type: ClassVar[str] = "run_finished"
    status: FinalStatus
    thread_id: str
    reason: str = ""
    usage: dict[str, int] = field(default_factory=dict)
    cost: float = 0.0
    duration_ms: float = 0.0


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (RunStarted, TextDelta, AssistantMessage, ToolStarted, ToolFinished,
                ApprovalRequested, ApprovalDecided, FileChanged, Status, ErrorEvent, RunFinished)
}


def event_from_dict(data: dict[str, Any]) -> Event:
    """Inverse of ``Event.to_dict``; raises ``ValueError`` on an unknown type."""
    payload = dict(data)
    kind = payload.pop("type", None)
    cls = EVENT_TYPES.get(str(kind))
    if cls is None:
        raise ValueError(f"unknown event type: {kind!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in payload.items() if k in names})
