"""Request and response bodies of the REST API, as pydantic models.

They do two jobs from one definition: handlers validate request bodies with
them (a bad body is a 400 with the field named, never a 500), and
``openapi.py`` turns them into the document's schemas, so the document cannot
drift from what the code accepts. Unknown fields are refused so a typo in a
client is an error, not a silently ignored option.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Name = Field(min_length=1, max_length=200)
Id = Field(min_length=1, max_length=128)


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Out(BaseModel):
    """Responses may gain fields in a minor version; clients must ignore unknown ones."""

    model_config = ConfigDict(extra="allow")


# ---- requests ----------------------------------------------------------------------------

class ThreadCreate(Body):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    project_id: str | None = Field(default=None, min_length=1, max_length=128)
    metadata: dict[str, Any] = Field(default_factory=dict)
    get_or_create: bool = Field(default=False, description=(
        "Return the thread with this name (or id) when there is one (status 200) "
        "instead of making a new one (status 201)."))


class ThreadUpdate(Body):
    name: str = Name


class RunStartOptions(Body):
    """Per-run choices; each left out means the agent's or the server's default."""

    api_base: str | None = Field(default=None, max_length=2000)
    max_iterations: int | None = Field(default=None, ge=1, le=1000)
    budget_cost: float | None = Field(default=None, ge=0)
    budget_tokens: int | None = Field(default=None, ge=1)
    xml_tools: bool | None = None
    tools: dict[str, bool] = Field(default_factory=dict, description=(
        "Enable (true) or disable (false) tools by name or group; {\"*\": false, ...} "
        "keeps only those named true. Names that match nothing are reported as a status "
        "event."))
    approval_default: Literal["auto", "ask", "deny"] | None = None
    sandbox: Literal["local", "daytona", "none"] | None = Field(default=None, description=(
        "none: no sandbox tools in this run. Otherwise it must be the server's backend "
        "(KortixLabApp.sandbox_backend)."))
    temporary_messages: list[dict[str, Any]] = Field(default_factory=list, max_length=50)


class RunStart(Body):
    message: str = Field(min_length=1, max_length=1_000_000)
    model: str | None = Field(default=None, min_length=1, max_length=500)
    agent_id: str | None = Field(default=None, min_length=1, max_length=200,
                                 description="An agent id or name.")
    options: RunStartOptions = Field(default_factory=RunStartOptions)


class RunStop(Body):
    reason: str = Field(default="stopped by request", min_length=1, max_length=500)


class ApprovalDecision(Body):
    call_id: str = Field(min_length=1, max_length=200)
    approved: bool
    reason: str = Field(default="", max_length=2000)
    remember: bool = Field(default=False, description=(
        "Approve this tool for the rest of the run."))


class AgentCreate(Body):
    name: str = Name
    system_prompt: str = Field(default="", max_length=200_000)
    model: str | None = Field(default=None, min_length=1, max_length=500)
    configured_mcps: list[dict[str, Any]] = Field(default_factory=list)
    custom_mcps: list[dict[str, Any]] = Field(default_factory=list)
    agentpress_tools: dict[str, Any] = Field(default_factory=dict)


class AgentUpdate(Body):
    """A partial update: the fields given replace the current version's; the result is a
    new version."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    system_prompt: str | None = Field(default=None, max_length=200_000)
    model: str | None = Field(default=None, min_length=1, max_length=500)
    configured_mcps: list[dict[str, Any]] | None = None
    custom_mcps: list[dict[str, Any]] | None = None
    agentpress_tools: dict[str, Any] | None = None


class ProjectCreate(Body):
    name: str = Name
    metadata: dict[str, Any] = Field(default_factory=dict)


# ---- responses ---------------------------------------------------------------------------

class Error(Out):
    error: str = Field(description="Why the request failed, for a person to read.")
    status: int
    request_id: str | None = None


class ThreadOut(Out):
    thread_id: str
    name: str | None
    project_id: str | None
    created_at: str
    updated_at: str
    metadata: dict[str, Any]
    active_run_id: str | None = None


class ThreadList(Out):
    threads: list[ThreadOut]


class MessageOut(Out):
    message_id: str
    thread_id: str
    seq: int
    type: str
    content: dict[str, Any]
    is_llm_message: bool
    run_id: str | None
    created_at: str
    metadata: dict[str, Any]


class MessagePage(Out):
    messages: list[MessageOut]
    total: int
    next_after_seq: int | None = Field(description=(
        "Pass as after_seq for the next page; null on the last page."))


class RunOut(Out):
    run_id: str
    thread_id: str
    status: Literal["queued", "running", "completed", "failed", "stopped"]
    model: str
    agent_id: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    error: str | None
    usage: dict[str, int]
    cost: float
    active: bool = Field(description=(
        "Queued or executing now: in this server, or (shared deployment) on any worker."))
    pending_approvals: list[str] = Field(default_factory=list)


class RunStartOut(RunOut):
    project_id: str | None


class RunList(Out):
    runs: list[RunOut]


class RunStopOut(Out):
    run_id: str
    stopping: bool = Field(description="False when the run had already finished.")
    status: str


class ApprovalOut(Out):
    run_id: str
    call_id: str
    approved: bool


class AgentOut(Out):
    agent_id: str
    version_id: str
    current_version_id: str
    version_number: int
    name: str
    system_prompt: str
    model: str | None
    configured_mcps: list[dict[str, Any]]
    custom_mcps: list[dict[str, Any]]
    agentpress_tools: dict[str, Any]
    created_at: str
    updated_at: str


class AgentList(Out):
    agents: list[AgentOut]


class AgentVersionList(Out):
    versions: list[AgentOut]


class ProjectOut(Out):
    project_id: str
    name: str
    created_at: str
    sandbox_id: str | None
    metadata: dict[str, Any]


class ProjectList(Out):
    projects: list[ProjectOut]


class FileEntry(Out):
    path: str
    name: str
    is_dir: bool
    size: int
    modified: str


class FileUpload(Body):
    path: str = Field(description="Where to put it: a sandbox path under /workspace.")
    data_base64: str = Field(description="The file's bytes, base64-encoded.")


class FileList(Out):
    path: str
    entries: list[FileEntry]


class FilePreview(Out):
    path: str
    size: int
    mime: str
    kind: Literal["text", "table", "image", "binary", "too_large"]
    text: str | None = None
    columns: list[str] | None = None
    rows: list[list[str]] | None = None
    data: str | None = Field(default=None, description="Base64 image bytes.")
    truncated: bool = False


class StatusOut(Out):
    api_version: str
    version: str
    default_model: str
    active_runs: int = Field(description=(
        "Queued and running runs: this server's, or (shared) the account's on all servers."))
    max_parallel_runs: int = Field(description=(
        "The limit past which starts are refused (429): this server's parallel runs, or "
        "(shared) the account's max_runs_per_account."))
    max_queued_runs: int
    sandbox_backend: str
    deployment: Literal["embedded", "shared"] = Field(default="embedded", description=(
        "embedded: runs execute in this server on its local store; shared: Postgres "
        "records, Redis streams, runs executed by kortix-lab worker processes."))
    account_id: str | None = Field(default=None, description=(
        "The account whose records this server reads and writes (shared deployment)."))
