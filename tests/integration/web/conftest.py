"""The served app over a home holding the scenario's story, driven in process through
httpx's ASGI transport, with a cookie jar per client like a browser's."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from proctor.runtime import Runtime
from proctor.serve import build_app

from .scenario import Story, make_home, write_story

_CSRF = re.compile(r'name="csrf" value="([^"]*)"')


class Browser:
    """A cookie-keeping client of the served app, one event loop for its life."""

    def __init__(self, app: Any, base_url: str = "http://127.0.0.1:8750") -> None:
        self._runner = asyncio.Runner()
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=base_url
        )

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self._runner.run(self.client.get(path, **kwargs))

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self._runner.run(self.client.post(path, **kwargs))

    def csrf(self, path: str = "/console/sign-in") -> str:
        """The CSRF token a page's forms carry."""
        found = _CSRF.search(self.get(path).text)
        if found is None:
            raise AssertionError(f"no csrf token on {path}")
        return found.group(1)

    def sign_in(self, key: str) -> httpx.Response:
        """Sign in through the form, as a person would."""
        token = self.csrf()
        return self.post(
            "/console/sign-in", data={"csrf": token, "api_key": key, "next": ""}
        )

    def close(self) -> None:
        self._runner.run(self.client.aclose())
        self._runner.close()


@pytest.fixture
def story(tmp_path: Path) -> Iterator[Story]:
    """A runtime whose ledger the real pipeline wrote; closed afterwards."""
    runtime = Runtime.open(make_home(tmp_path))
    try:
        yield write_story(runtime)
    finally:
        runtime.close()


@pytest.fixture
def app(story: Story) -> Any:
    """What ``proctor serve`` serves over the story's runtime."""
    return build_app(story.runtime)


@pytest.fixture
def browser(app: Any) -> Iterator[Browser]:
    """A signed-out visitor."""
    visitor = Browser(app)
    yield visitor
    visitor.close()


@pytest.fixture
def controller(app: Any, story: Story) -> Iterator[Browser]:
    """The controller, an approver who may approve the held transfer, signed in."""
    person = Browser(app)
    person.sign_in(story.keys["controller"])
    yield person
    person.close()


@pytest.fixture
def auditor(app: Any, story: Story) -> Iterator[Browser]:
    """An auditor, who reads everything and approves nothing, signed in."""
    person = Browser(app)
    person.sign_in(story.keys["auditor"])
    yield person
    person.close()
