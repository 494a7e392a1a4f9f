"""Reading proctor.toml, with ``PROCTOR_*`` environment variables taking precedence."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proctor.errors import ConfigError

DATABASE_URL_ENV = "PROCTOR_DATABASE_URL"


@dataclass(frozen=True)
class LedgerConfig:
    """Where the ledger lives and how often it signs a checkpoint."""

    origin: str
    checkpoint_every: int = 1000
    checkpoint_interval: float = 10.0
    database_url: str | None = None

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> LedgerConfig:
        """Build from the ``[ledger]`` table; raises ConfigError."""
        origin = table.get("origin")
        if not isinstance(origin, str) or not origin or " " in origin or "+" in origin:
            raise ConfigError("[ledger] origin must be a string without spaces or '+'")
        every = _number(table, "checkpoint_every", 1000, int)
        interval = _number(table, "checkpoint_interval", 10.0, float)
        if every < 1 or interval < 0:
            raise ConfigError("[ledger] checkpoint_every must be >= 1, interval >= 0")
        url = os.environ.get(DATABASE_URL_ENV) or table.get("database_url")
        if url is not None and not isinstance(url, str):
            raise ConfigError("[ledger] database_url must be a string")

        return cls(origin, int(every), float(interval), url or None)


@dataclass(frozen=True)
class Config:
    """The whole of proctor.toml, one typed part per concept."""

    ledger: LedgerConfig
    raw: Mapping[str, Any]

    @classmethod
    def load(cls, path: Path) -> Config:
        """Read and check proctor.toml; raises ConfigError naming what is wrong."""
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(
                f"no configuration at {path}; run `proctor init`"
            ) from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc
        ledger = raw.get("ledger")
        if not isinstance(ledger, dict):
            raise ConfigError(f"{path} has no [ledger] table")

        return cls(LedgerConfig.from_table(ledger), raw)


def _number(table: Mapping[str, Any], key: str, default: float, kind: type) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"[ledger] {key} must be a number, got {value!r}")
    if kind is int and not isinstance(value, int):
        raise ConfigError(f"[ledger] {key} must be a whole number, got {value!r}")

    return float(value)
