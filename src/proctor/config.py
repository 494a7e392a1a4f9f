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
DATABASE_SCHEMA_ENV = "PROCTOR_DATABASE_SCHEMA"


@dataclass(frozen=True)
class LedgerConfig:
    """Where the ledger lives and how often it signs a checkpoint."""

    origin: str
    checkpoint_every: int = 1000
    checkpoint_interval: float = 10.0
    database_url: str | None = None
    database_schema: str = "proctor"

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
        schema = os.environ.get(DATABASE_SCHEMA_ENV) or table.get("database_schema")
        if schema is not None and (not isinstance(schema, str) or not schema):
            raise ConfigError("[ledger] database_schema must be a non-empty string")

        return cls(
            origin, int(every), float(interval), url or None, schema or "proctor"
        )


@dataclass(frozen=True)
class AuthorityConfig:
    """Lifetimes and duties from ``[authority]``; minutes in the file."""

    task_ttl: float = 480.0
    token_ttl: float = 15.0
    approval_ttl: float = 30.0
    user_may_approve: bool = False
    quarantine_on_breach: bool = True
    webhook: str | None = None

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> AuthorityConfig:
        """Build from the ``[authority]`` table; raises ConfigError."""
        task, token, approval = (
            _number(table, key, getattr(cls, key), float, "authority")
            for key in ("task_ttl", "token_ttl", "approval_ttl")
        )
        if min(task, token, approval) <= 0:
            raise ConfigError("[authority] lifetimes must be positive minutes")
        webhook = table.get("webhook")
        if webhook is not None and not isinstance(webhook, str):
            raise ConfigError("[authority] webhook must be a URL string")

        return cls(
            task,
            token,
            approval,
            _flag(table, "user_may_approve", cls.user_may_approve),
            _flag(table, "quarantine_on_breach", cls.quarantine_on_breach),
            webhook or None,
        )


@dataclass(frozen=True)
class ServeConfig:
    """Where ``proctor serve`` listens, from ``[serve]``: loopback by default."""

    host: str = "127.0.0.1"
    port: int = 8750

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> ServeConfig:
        host = table.get("host", cls.host)
        if not isinstance(host, str) or not host:
            raise ConfigError("[serve] host must be a string")
        port = int(_number(table, "port", cls.port, int, "serve"))
        if not 0 < port < 65536:
            raise ConfigError(f"[serve] port must be 1-65535, got {port}")

        return cls(host, port)


@dataclass(frozen=True)
class Config:
    """The whole of proctor.toml, one typed part per concept."""

    ledger: LedgerConfig
    authority: AuthorityConfig
    serve: ServeConfig
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

        return cls(
            LedgerConfig.from_table(ledger),
            AuthorityConfig.from_table(_table(raw, "authority")),
            ServeConfig.from_table(_table(raw, "serve")),
            raw,
        )


def _table(raw: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    table = raw.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"[{name}] must be a table")
    return table


def _number(
    table: Mapping[str, Any],
    key: str,
    default: float,
    kind: type,
    section: str = "ledger",
) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"[{section}] {key} must be a number, got {value!r}")
    if kind is int and not isinstance(value, int):
        raise ConfigError(f"[{section}] {key} must be a whole number, got {value!r}")

    return float(value)


def _flag(table: Mapping[str, Any], key: str, default: bool) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"[authority] {key} must be true or false, got {value!r}")
    return value
