"""A real browser against the real app: Debian's Chromium driven by Playwright, and
``proctor serve``'s app under uvicorn on a free loopback port in a thread.

Playwright's own browser download cannot work on these machines, so the browser is
Debian's (``apt-get install chromium``); a missing one fails the run, never skips.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from proctor.runtime import Runtime
from proctor.serve import build_app
from tests.integration.web.scenario import Story, make_home, write_story

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
STARTUP_SECONDS = 20.0


class Server:
    """An app under a real uvicorn, in a thread, on a loopback port of its own."""

    def __init__(self, app: object) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        config = uvicorn.Config(
            app,  # type: ignore[arg-type]
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name="console-uvicorn",
            daemon=True,
        )

    def __enter__(self) -> Server:
        self._thread.start()
        deadline = time.monotonic() + STARTUP_SECONDS
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                pytest.fail(f"uvicorn did not start serving {self.url}")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)
        self._socket.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, launched once per module.

    Not once per session: Playwright's sync API keeps an event loop marked as
    running in this thread while it is open, and tests after this module run
    event loops of their own.
    """
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield launched
        launched.close()


@pytest.fixture
def story(tmp_path: Path) -> Iterator[Story]:
    """A ledger the real pipeline wrote: a breach, then a transfer held."""
    runtime = Runtime.open(make_home(tmp_path))
    try:
        yield write_story(runtime)
    finally:
        runtime.close()


@pytest.fixture
def served(story: Story) -> Iterator[str]:
    """The served app over the story's runtime; its base URL."""
    with Server(build_app(story.runtime)) as server:
        yield server.url


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser profile: no cookies from another test."""
    fresh = browser.new_context(viewport={"width": 1280, "height": 900})
    yield fresh
    fresh.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    """One tab."""
    return context.new_page()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where the screenshots of the main pages are kept (git-ignored)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
