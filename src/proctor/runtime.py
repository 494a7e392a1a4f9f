"""Everything one home needs at run time, opened together and closed together: the
ledger, the authority's projection and operations, people, the vault and the pipeline.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import timedelta

from proctor.config import Config
from proctor.errors import VaultError
from proctor.files import Stamp, stamp
from proctor.gateway.alerts import Alerts
from proctor.gateway.pipeline import Pipeline
from proctor.home import Home
from proctor.ledger.log import Ledger
from proctor.policy import OrgPolicies
from proctor.tasks.people import People
from proctor.tasks.service import Rules, TaskService
from proctor.tasks.state import Authority
from proctor.tasks.token import load_private_key
from proctor.vault import Masking, Redactor, Vault, load_master_key


@dataclass
class Secrets:
    """The vault, with a redactor and the latest values rebuilt whenever the vault
    file changes: each use looks at the file once, and nothing is decrypted twice."""

    vault: Vault
    _stamp: Stamp | None = None
    _redactor: Redactor = field(default_factory=Redactor)
    _latest: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def redactor(self) -> Redactor:
        return self._current()[0]

    def get(self, name: str) -> str:
        """Return the latest value of ``name`` for injection; raises VaultError."""
        value = self._current()[1].get(name)
        if value is None:
            raise VaultError(f"no secret named {name[:80]!r} in the vault")
        return value

    def scrub(self, value: object) -> object:
        """Remove every vault value, past or present, and every sensitive field."""
        return self.redactor.scrub(value)

    def scrub_text(self, text: str) -> str:
        return self.redactor.scrub_text(text)

    def masking(self) -> Masking:
        """A masker for one answer going back to an agent (see Redactor.masking)."""
        return self.redactor.masking()

    def _current(self) -> tuple[Redactor, dict[str, str]]:
        current = stamp(self.vault.path)
        with self._lock:
            if current != self._stamp:
                # Versions come oldest first, so the last one of each name stays.
                named = self.vault.named_values()
                self._redactor = Redactor(named=named)
                self._latest = dict(named)
                self._stamp = current
            return self._redactor, self._latest


@dataclass
class Runtime:
    """The open parts of one home."""

    home: Home
    config: Config
    ledger: Ledger
    service: TaskService
    people: People
    secrets: Secrets

    @classmethod
    def open(cls, home: Home) -> Runtime:
        """Open the home's ledger and everything built on it; raises ProctorError."""
        config = home.config()
        secrets = Secrets(Vault(home.vault, load_master_key(home.path)))
        org = OrgPolicies.load(home.policies)
        ledger = home.open_ledger()
        try:
            authority = Authority(ledger.store)
            ledger.listen(authority.fold_appended)
            authority.sync()
            service = TaskService(
                ledger,
                authority,
                org,
                load_private_key(home.token_key),
                redactor=secrets,
                rules=rules(config),
            )
        except BaseException:
            _close(ledger)
            raise

        return cls(home, config, ledger, service, People(home.people), secrets)

    def pipeline(self) -> Pipeline:
        """The pipeline that both front doors share."""
        alerts = Alerts(self.config.authority.webhook)
        return Pipeline(self.service, alerts=alerts, vault=self.secrets)

    def close(self) -> None:
        """Write what is queued, sign a last checkpoint and close the store."""
        _close(self.ledger)


def rules(config: Config) -> Rules:
    """The authority's rules from ``[authority]``."""
    authority = config.authority
    return Rules(
        task_ttl=timedelta(minutes=authority.task_ttl),
        token_ttl=timedelta(minutes=authority.token_ttl),
        approval_ttl=timedelta(minutes=authority.approval_ttl),
        user_may_approve=authority.user_may_approve,
        quarantine_on_breach=authority.quarantine_on_breach,
    )


def _close(ledger: Ledger) -> None:
    try:
        ledger.close()
    finally:
        ledger.store.close()
