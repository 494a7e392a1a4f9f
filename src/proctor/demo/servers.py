"""The servers the demo starts in its own process: each ASGI app under a real uvicorn
in a background thread, on a loopback port the kernel picked; the security team's
alert inbox; and the server logs, kept in a file rather than mixed into the story."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

LOOPBACK = "127.0.0.1"
STARTUP_SECONDS = 20.0
STOP_SECONDS = 15.0
GRACE_SECONDS = 1
"""How long a stopping server waits for its open connections: all of them are the
demo's own, and a client that keeps one alive must not hold up Ctrl-C."""
LOGGERS = ("proctor", "uvicorn")


class Served:
    """An app served on ``url`` while the ``with`` block runs.

    The socket is bound before uvicorn starts, so the port cannot be taken in
    between. Raises RuntimeError when the server does not start.
    """

    def __init__(self, name: str, app: ASGIApp, **options: Any) -> None:
        self.name = name
        self._socket = socket.socket()
        self._socket.bind((LOOPBACK, 0))
        self.port = int(self._socket.getsockname()[1])
        self.url = f"http://{LOOPBACK}:{self.port}"
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=GRACE_SECONDS,
            **options,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name=f"demo-{name}",
            daemon=True,
        )

    def __enter__(self) -> Served:
        self._thread.start()
        deadline = time.monotonic() + STARTUP_SECONDS
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._socket.close()
                raise RuntimeError(f"the {self.name} server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=STOP_SECONDS)
        self._socket.close()

    def settle(self) -> None:
        """Wait until no request is in flight: an outcome is recorded after the
        last byte of the answer has gone, so a finished client is not enough."""
        deadline = time.monotonic() + STARTUP_SECONDS
        while self._server.server_state.tasks and time.monotonic() < deadline:
            time.sleep(0.01)


class Inbox:
    """The security team's alert webhook: keeps every breach alert it receives."""

    def __init__(self) -> None:
        self._alerts: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    @property
    def alerts(self) -> list[dict[str, Any]]:
        """The alerts received so far, oldest first."""
        with self._lock:
            return list(self._alerts)

    def app(self) -> Starlette:
        """The webhook: ``POST /alerts`` with ``{"breach": {...}}``."""
        return Starlette(routes=[Route("/alerts", self._receive, methods=["POST"])])

    async def _receive(self, request: Request) -> Response:
        body = await request.json()
        breach = body.get("breach") if isinstance(body, dict) else None
        if not isinstance(breach, dict):
            return Response(status_code=400)
        with self._lock:
            self._alerts.append(breach)
        return Response(status_code=204)


@contextmanager
def logs_to(path: Path) -> Iterator[None]:
    """Send the servers' log lines to ``path`` while the block runs."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    loggers = [logging.getLogger(name) for name in LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)
        handler.close()
