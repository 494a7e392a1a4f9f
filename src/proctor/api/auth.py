"""Who is asking: a person by their API key, or an agent by its task token.

A person's key (``Authorization: Bearer pk_...``) opens reading to anyone holding a
role, approving to approvers, and managing to admins and to a task's own user. A
task token opens only its own task's reasoning endpoint here.
"""

from __future__ import annotations

import logging
from typing import Annotated, cast

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from proctor.errors import AuthError, TokenError
from proctor.runtime import Runtime
from proctor.tasks.people import Person, Role
from proctor.tasks.state import Task
from proctor.tasks.token import TaskClaims

log = logging.getLogger(__name__)

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="A person's API key (pk_...), or a task token for reasoning.",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def runtime_of(request: Request) -> Runtime:
    """The home's runtime that the API was built over."""
    return cast(Runtime, request.app.state.runtime)


RuntimeDep = Annotated[Runtime, Depends(runtime_of)]


def person(runtime: RuntimeDep, credentials: Credentials) -> Person:
    """Authenticate a person's API key; answers 401 for a missing or bad one."""
    key = _presented(credentials, "a person's api key")
    try:
        return runtime.people.authenticate(key)
    except AuthError as exc:
        log.warning("api key refused reason=%s", exc)
        raise unauthenticated(str(exc)) from exc


PersonDep = Annotated[Person, Depends(person)]


def approver(who: PersonDep) -> Person:
    """Require the approver role; answers 403 without it."""
    if not who.has_role(Role.APPROVER):
        raise forbidden(f"{who.email} is not an approver")
    return who


ApproverDep = Annotated[Person, Depends(approver)]


def task_token(
    task_id: str, runtime: RuntimeDep, credentials: Credentials
) -> tuple[TaskClaims, Task]:
    """Authenticate the task token of the task in the path; 401, or 403 for another."""
    token = _presented(credentials, "the task's token")
    try:
        claims, task = runtime.service.authenticate(token)
    except TokenError as exc:
        raise unauthenticated(str(exc)) from exc
    if claims.task != task_id:
        raise forbidden(f"this task token is for task {claims.task}, not {task_id}")

    return claims, task


TaskTokenDep = Annotated[tuple[TaskClaims, Task], Depends(task_token)]


def require_manager(who: Person, task: Task) -> None:
    """Let an admin or the task's own user manage it; answers 403 otherwise."""
    if who.has_role(Role.ADMIN) or who.email == task.user:
        return
    raise forbidden(f"only an admin or {task.user} may manage task {task.id}")


def unauthenticated(reason: str) -> HTTPException:
    return HTTPException(401, reason, headers={"WWW-Authenticate": "Bearer"})


def forbidden(reason: str) -> HTTPException:
    return HTTPException(403, reason)


def _presented(credentials: HTTPAuthorizationCredentials | None, what: str) -> str:
    if credentials is None or not credentials.credentials:
        raise unauthenticated(f"send Authorization: Bearer <{what}>")
    return credentials.credentials
