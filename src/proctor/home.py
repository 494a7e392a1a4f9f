"""A Proctor home: the folder holding proctor.toml, the keys and the embedded ledger."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from proctor.config import Config
from proctor.errors import ConfigError
from proctor.files import read_private, write_private
from proctor.ledger.log import CheckpointPolicy, Ledger
from proctor.ledger.note import Signer, Verifier
from proctor.storage.interface import Store
from proctor.storage.postgres import PostgresStore
from proctor.storage.sqlite import SqliteStore

HOME_ENV = "PROCTOR_HOME"
DEFAULT_HOME = Path(".proctor")

CONFIG_TEMPLATE = """\
# Proctor configuration. Environment variables PROCTOR_* take precedence.

[ledger]
# The checkpoint origin: names this ledger in every signed checkpoint.
origin = "{origin}"
# Sign a checkpoint every N entries, or every T seconds while entries wait (0: off).
checkpoint_every = 1000
checkpoint_interval = 10
# PostgreSQL instead of the embedded SQLite ledger (or set PROCTOR_DATABASE_URL):
# database_url = "postgresql://proctor@127.0.0.1:5432/proctor"
"""


@dataclass(frozen=True)
class Home:
    """The paths of one Proctor home."""

    path: Path

    @classmethod
    def locate(cls, path: Path | None = None) -> Home:
        """Use ``path``, else ``$PROCTOR_HOME``, else ``./.proctor``."""
        return cls(path or Path(os.environ.get(HOME_ENV) or DEFAULT_HOME))

    @property
    def config_file(self) -> Path:
        return self.path / "proctor.toml"

    @property
    def log_key(self) -> Path:
        return self.path / "log.key"

    @property
    def log_vkey(self) -> Path:
        return self.path / "log.vkey"

    @property
    def ledger_db(self) -> Path:
        return self.path / "ledger.db"

    def config(self) -> Config:
        """Read this home's proctor.toml; raises ConfigError."""
        return Config.load(self.config_file)

    def signer(self) -> Signer:
        """Load the ledger's signing key; raises ConfigError."""
        text = read_private(self.log_key).decode("ascii").strip()
        return Signer.from_private_key_string(text)

    def verifier(self) -> Verifier:
        """Load the ledger's public verifier key; raises ConfigError."""
        try:
            text = self.log_vkey.read_text(encoding="ascii").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the verifier key {self.log_vkey}") from exc

        return Verifier.from_key_string(text)

    def open_store(self) -> Store:
        """Open the ledger's store: PostgreSQL when a URL is set, else SQLite."""
        url = self.config().ledger.database_url
        if url:
            return PostgresStore(url)

        return SqliteStore(self.ledger_db)

    def open_ledger(self) -> Ledger:
        """Open the ledger for appending, with the home's key and schedule."""
        config = self.config().ledger
        policy = CheckpointPolicy(config.checkpoint_every, config.checkpoint_interval)

        return Ledger(
            self.open_store(), self.signer(), origin=config.origin, policy=policy
        )


def init(home: Home, *, origin: str | None = None) -> Home:
    """Create a new home with its configuration, log key and empty ledger.

    Raises ConfigError when the folder already holds a home or anything else.
    """
    if home.path.exists() and any(home.path.iterdir()):
        raise ConfigError(f"{home.path} already exists and is not empty; not touched")
    origin = origin or f"proctor.local/{secrets.token_hex(6)}"
    home.path.mkdir(parents=True, exist_ok=True, mode=0o700)
    signer = Signer.generate(origin)
    write_private(home.log_key, (signer.private_key_string() + "\n").encode())
    home.log_vkey.write_text(signer.verifier_key_string() + "\n", encoding="ascii")
    home.config_file.write_text(CONFIG_TEMPLATE.format(origin=origin), encoding="utf-8")
    home.open_store().close()

    return home
