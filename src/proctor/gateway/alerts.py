"""Breach alerts: a warning in the log always, and a JSON POST to a webhook if set."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

TIMEOUT = aiohttp.ClientTimeout(total=3)
RECENT = 100


class Alerts:
    """Sends breach alerts; a failing webhook is logged and never blocks the call."""

    def __init__(self, webhook: str | None = None) -> None:
        self.webhook = webhook
        self.recent: deque[Mapping[str, Any]] = deque(maxlen=RECENT)

    async def breach(self, alert: Mapping[str, Any]) -> None:
        """Announce a breach: who, which task, which action, which entry."""
        log.warning(
            "breach task=%s agent=%s action=%s entry=%s quarantine=%s",
            alert.get("task"),
            alert.get("agent"),
            alert.get("action"),
            alert.get("entry"),
            alert.get("quarantine"),
        )
        self.recent.append(alert)
        if not self.webhook:
            return
        try:
            async with (
                aiohttp.ClientSession(timeout=TIMEOUT) as session,
                session.post(self.webhook, json={"breach": dict(alert)}) as reply,
            ):
                if reply.status >= 400:
                    log.error("breach webhook answered status=%d", reply.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.error("breach webhook failed error=%s", exc)
