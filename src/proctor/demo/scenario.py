"""The finance scenario's files, read from the installed package, and how the demo
stages them into a fresh home: policies, the service and its route map, and the
configuration the story needs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources

from proctor.config import Config
from proctor.home import Home

EXAMPLE = "proctor.examples.finance"
USER = "ap-clerk@example.com"
CONTROLLER = "controller@example.com"
AGENT = "finance-agent"
REQUEST = "Pay ACME's March invoices."
SERVICE = "finance"
CREDENTIAL = "finance-api-key"
CONTROLLER_ROLE = "controller"
LIMIT = 50_000
"""Cents the scope lets the agent pay without an approver: $500.00."""

_BASE_URL = re.compile(r'^base_url = "[^"\n]*"$', re.MULTILINE)
_QUARANTINE = re.compile(r"^quarantine_on_breach = true$", re.MULTILINE)


@dataclass(frozen=True)
class Scenario:
    """What the story runs on: the service's route map (a proctor.toml fragment),
    the task's scope and the organisation's policy files by name."""

    services: str
    scope: str
    policies: Mapping[str, str]

    @classmethod
    def finance(cls) -> Scenario:
        """Read the finance example that installs with Proctor; raises OSError."""
        root = resources.files(EXAMPLE)
        folder = root / "policies"

        return cls(
            services=(root / "proctor.toml").read_text(encoding="utf-8"),
            scope=(root / "scope.toml").read_text(encoding="utf-8"),
            policies={
                item.name: item.read_text(encoding="utf-8")
                for item in folder.iterdir()
                if item.is_file()
            },
        )


def prepare(
    home: Home, scenario: Scenario, *, finance_url: str, alerts_url: str
) -> Config:
    """Put the scenario into a fresh home and return its configuration.

    Raises ValueError when the home's proctor.toml or the scenario's fragment does
    not read as expected, ConfigError when the result does not load.
    """
    for name, text in scenario.policies.items():
        (home.policies / name).write_text(text, encoding="utf-8")
    text = home.config_file.read_text(encoding="utf-8")
    text = configure(text, scenario.services, finance_url, alerts_url)
    home.config_file.write_text(text, encoding="utf-8")

    return home.config()


def configure(config: str, services: str, finance_url: str, alerts_url: str) -> str:
    """Return ``config`` with the demo's authority settings and the service added.

    The breach in step 3 must not quarantine the task before step 4, so
    ``quarantine_on_breach`` is turned off; breaches are announced to the demo's
    alert inbox. Raises ValueError when a setting is not where it should be.
    """
    authority = (
        "# The demo: the breach of step 3 must not stop the task before step 4.\n"
        "quarantine_on_breach = false\n"
        f'webhook = "{alerts_url}"'
    )
    config, found = _QUARANTINE.subn(authority, config)
    if found != 1:
        raise ValueError("proctor.toml has no line quarantine_on_breach = true")
    services, found = _BASE_URL.subn(f'base_url = "{finance_url}"', services)
    if found != 1:
        raise ValueError(f"the service fragment has {found} base_url lines, not 1")

    return f"{config.rstrip()}\n\n{services}"
