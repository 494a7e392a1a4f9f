"""Fixtures shared by every test: where the conformance vectors live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def vectors() -> Path:
    """The shared conformance vectors; a missing folder fails the run, never skips."""
    folder = Path(os.environ.get("PROCTOR_VECTORS", REPO.parent / "shared" / "vectors"))
    if not (folder / "README.md").is_file():
        pytest.fail(f"conformance vectors not found at {folder}; set PROCTOR_VECTORS")
    return folder
