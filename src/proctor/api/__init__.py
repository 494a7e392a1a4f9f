"""The HTTP API for people and agents: tasks, task tokens, reasoning and approvals,
with its OpenAPI document at ``openapi.json``. ``proctor serve`` mounts it at /v1."""

from __future__ import annotations

from fastapi import FastAPI

from proctor import __version__
from proctor.api import approvals, errors, tasks
from proctor.api.limits import Limits
from proctor.runtime import Runtime


def create_api(runtime: Runtime) -> FastAPI:
    """Build the API over an open runtime; the caller keeps and closes the runtime."""
    api = FastAPI(
        title="Proctor",
        summary="Tasks, task tokens, reasoning and approvals.",
        version=__version__,
        openapi_url="/openapi.json",
        # The interactive pages load scripts from a CDN; the document is enough.
        docs_url=None,
        redoc_url=None,
    )
    api.state.runtime = runtime
    errors.install(api)
    api.add_middleware(Limits)
    api.include_router(tasks.router)
    api.include_router(approvals.router)

    return api
