"""Every error Proctor raises, under one root.

    ProctorError
    ├── ConfigError          a home, a proctor.toml or an environment variable is wrong
    ├── LedgerError          the ledger refused or could not do something
    │   ├── EntryError       an entry is not in the restricted canonical form
    │   ├── ProofError       an inclusion or consistency proof does not verify
    │   ├── NoteError        a signed note or a key string is malformed or unverified
    │   ├── CheckpointError  a checkpoint body is malformed or does not match
    │   └── VerifyError      offline verification found the first thing that fails
    ├── StoreError           the database failed; the backend's error is the cause
    │   └── ConflictError    another writer moved the ledger's head first
    ├── PolicyError          a policy set or a decision request is unusable (denies)
    ├── TokenError           a task token is missing, malformed, expired or revoked
    ├── AuthError            unknown or duplicate person, wrong API key, or missing role
    ├── VaultError           a secret or the master key is missing or unreadable
    ├── TaskError            a task or approval is unknown or in the wrong state
    ├── GatewayError         a brokered call cannot go ahead
    └── QueryError           a search, filter or time range is malformed

Backends translate foreign exceptions at the boundary (``raise StoreError(...) from
exc``). Messages are lowercase and concrete and never carry a secret value.
"""

from __future__ import annotations


class ProctorError(Exception):
    """The root of every error Proctor raises on purpose."""


class ConfigError(ProctorError):
    """A home, a proctor.toml or an environment variable is wrong."""


class LedgerError(ProctorError):
    """The ledger refused or could not do something."""


class EntryError(LedgerError):
    """An entry is not in the restricted canonical form."""


class ProofError(LedgerError):
    """An inclusion or consistency proof does not verify."""


class NoteError(LedgerError):
    """A signed note or a key string is malformed or does not verify."""


class CheckpointError(LedgerError):
    """A checkpoint body is malformed or does not match the tree."""


class VerifyError(LedgerError):
    """Offline verification found something that does not hold.

    ``index`` names the first failing entry, ``checkpoint`` the first failing
    checkpoint's tree size; either may be None when the failure is not about one.
    """

    def __init__(
        self, message: str, *, index: int | None = None, checkpoint: int | None = None
    ) -> None:
        super().__init__(message)
        self.index = index
        self.checkpoint = checkpoint


class StoreError(ProctorError):
    """The database failed; the backend's own error is the cause."""


class ConflictError(StoreError):
    """Another writer moved the ledger's head since it was read."""


class PolicyError(ProctorError):
    """A policy set or a decision request is unusable; the call is denied."""


class TokenError(ProctorError):
    """A task token is missing, malformed, expired, revoked or for someone else.

    ``claims`` are the token's own when its signature held and only its use now is
    refused (expired, revoked, its task ended), so the refusal can name the task.
    """

    def __init__(self, message: str, *, claims: object = None) -> None:
        super().__init__(message)
        self.claims = claims


class AuthError(ProctorError):
    """A person is unknown or already exists, an API key is wrong, or a role missing."""


class VaultError(ProctorError):
    """A secret or the master key is missing or unreadable."""


class TaskError(ProctorError):
    """A task or approval is unknown or in the wrong state for what was asked."""


class GatewayError(ProctorError):
    """A brokered call cannot go ahead."""


class QueryError(ProctorError):
    """A search, a filter or a time range is malformed; nothing was looked up."""
