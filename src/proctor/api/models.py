"""The API's request and response bodies; the OpenAPI document is built from these."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from proctor.tasks.service import MAX_REASONING

MAX_TTL_MINUTES = 366 * 24 * 60
MAX_SCOPE_CHARS = 32_768
MAX_REQUEST_CHARS = 8_192
MAX_REASON_CHARS = 2_000
MAX_NAME_CHARS = 200


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpenTaskBody(_Body):
    """A task to open: who acts, what the user asked for, and the scope as written."""

    agent: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    request: str = Field(
        min_length=1,
        max_length=MAX_REQUEST_CHARS,
        description="The user's request, in their own words.",
    )
    scope: str = Field(
        min_length=1, max_length=MAX_SCOPE_CHARS, description="The scope's text."
    )
    format: Literal["toml", "cedar"] = "toml"
    ttl: int | None = Field(
        default=None,
        ge=1,
        le=MAX_TTL_MINUTES,
        description="Minutes until the task expires (default: the home's task_ttl).",
    )
    user: str | None = Field(
        default=None,
        max_length=254,
        description="The user the task is for; only an admin may name another.",
    )


class ReasonBody(_Body):
    """Why a person did what they did; recorded as said."""

    reason: str = Field(min_length=1, max_length=MAX_REASON_CHARS)


class CloseBody(_Body):
    """Why a task is closed."""

    reason: str = Field(default="done", min_length=1, max_length=MAX_REASON_CHARS)


class ReasoningBody(_Body):
    """One reasoning step of the agent, recorded before the calls it leads to."""

    text: str = Field(min_length=1, max_length=MAX_REASONING)
    trace: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    tool_call: str | None = Field(default=None, max_length=MAX_NAME_CHARS)


class ScopeOut(BaseModel):
    format: str | None
    digest: str
    actions: list[str]
    text: str | None = None
    cedar: str | None = None


class TaskEntries(BaseModel):
    opened: int
    approved: int | None
    ended: int | None


class TaskOut(BaseModel):
    """A task and where it stands now."""

    id: str
    state: str
    user: str
    agent: str
    request: str
    expires: str
    roles: list[str] = Field(description="The approval roles its scope needs.")
    approver: str | None
    scope: ScopeOut
    entries: TaskEntries


class TaskChange(BaseModel):
    """A task after a change, and the entry that records the change."""

    entry: int
    task: TaskOut


class ApprovalEntries(BaseModel):
    requested: int
    decided: int | None
    used: int | None


class ApprovalOut(BaseModel):
    """One exact call that waits for, or was released by, a person."""

    id: str
    task: str
    state: str
    action: str
    resource: str
    request_digest: str
    context: dict[str, Any]
    roles: list[str]
    granted_roles: list[str]
    approvers: list[str]
    reason: str
    expires: str
    entries: ApprovalEntries


class ApprovalChange(BaseModel):
    """An approval after an answer, and the entry that records it."""

    entry: int
    approval: ApprovalOut


class TokenOut(BaseModel):
    """A task token for the task's agent, and the entry that records handing it out."""

    token: str
    task: str
    jti: str
    expires: str
    entry: int


class EntryOut(BaseModel):
    """The index of the entry that records what was asked."""

    entry: int


class ErrorOut(BaseModel):
    """Why a request was refused, in one line."""

    error: str
    reason: str
