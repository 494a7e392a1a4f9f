"""Fixtures for the vault tests: a master key, a vault in a temporary folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from proctor.vault import MasterKey, Vault


@pytest.fixture
def canary() -> str:
    """A secret value that no file, message or repr may ever contain."""
    return "canary-7f3e9b1c-must-never-show"


@pytest.fixture
def master_key() -> MasterKey:
    """A fresh random master key."""
    return MasterKey.generate()


@pytest.fixture
def vault_path(tmp_path: Path) -> Path:
    """Where the vault file goes."""
    return tmp_path / "vault.json"


@pytest.fixture
def vault(vault_path: Path, master_key: MasterKey) -> Vault:
    """An empty vault under ``master_key``."""
    return Vault(vault_path, master_key)
