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
from proctor.tasks.token import generate_token_key
from proctor.vault.masterkey import create_master_key, master_key_path

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
# database_schema = "proctor"    # or PROCTOR_DATABASE_SCHEMA

[authority]
# Lifetimes in minutes.
task_ttl = 480
token_ttl = 15
approval_ttl = 30
# Separation of duties: may the user who asked for a task approve its scope or calls?
user_may_approve = false
# Quarantine a task (its tokens stop working) the moment it breaches its scope.
quarantine_on_breach = true
# POST a JSON alert here on every breach:
# webhook = "http://127.0.0.1:9000/alerts"

[serve]
host = "127.0.0.1"
port = 8750
"""

BASE_SCHEMA = """\
// Proctor's own types. Add your services' namespaces beside this file, and Cedar
// policy files (*.cedar) that forbid what no task may do.
namespace Proctor {
  entity AgentGroup;
  entity Agent in [AgentGroup];
  entity Task;

  // Decided when a task opens: an @approval forbid on it makes the task wait for
  // a named approver, e.g. when
  // context.actions.contains("Payments::Action::\\"Pay\\"").
  action OpenTask appliesTo {
    principal: [Agent],
    resource: [Task],
    context: { task: String, user: String, approved: Bool, actions: Set<String> }
  };
}
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

    @property
    def token_key(self) -> Path:
        return self.path / "token.key"

    @property
    def policies(self) -> Path:
        return self.path / "policies"

    @property
    def people(self) -> Path:
        return self.path / "people.json"

    @property
    def vault(self) -> Path:
        return self.path / "vault.json"

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
        config = self.config().ledger
        if config.database_url:
            return PostgresStore(config.database_url, schema=config.database_schema)

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
    generate_token_key(home.token_key)
    key_file = master_key_path(home.path)
    if not key_file.exists():
        create_master_key(key_file)
    home.policies.mkdir(mode=0o700)
    (home.policies / "schema.cedarschema").write_text(BASE_SCHEMA, encoding="utf-8")
    home.open_store().close()
    if home.ledger_db.exists():
        # The ledger holds requests as sent; SQLite gives its journal files the
        # database file's mode, so they stay private too.
        home.ledger_db.chmod(0o600)

    return home
