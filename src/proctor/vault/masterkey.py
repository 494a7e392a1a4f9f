"""The master key: 32 random bytes in a private file, from which every vault key is
derived (HKDF-SHA256, RFC 5869), so no key is ever used for two purposes."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from proctor.errors import ConfigError, VaultError
from proctor.files import read_private, write_private

MASTER_KEY_BYTES = 32
MASTER_KEY_ENV = "PROCTOR_MASTER_KEY_FILE"
MASTER_KEY_FILENAME = "master.key"

_KEY_ID_INFO = "proctor master key id"


class MasterKey:
    """The vault's root secret; its repr shows only a non-secret key id."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        """Hold ``key``; raises VaultError unless it is exactly 32 bytes."""
        if len(key) != MASTER_KEY_BYTES:
            raise VaultError(
                f"a master key is {MASTER_KEY_BYTES} bytes, got {len(key)} bytes"
            )
        self._key = bytes(key)

    @classmethod
    def generate(cls) -> MasterKey:
        """Return a new key from the operating system's random source."""
        return cls(secrets.token_bytes(MASTER_KEY_BYTES))

    @classmethod
    def from_file(cls, path: Path) -> MasterKey:
        """Read the raw 32-byte key file at ``path``.

        Raises VaultError when the file is missing, open to group or others, or not
        exactly 32 bytes long.
        """
        try:
            data = read_private(path)
        except ConfigError as exc:
            raise VaultError(f"cannot use the master key: {exc}") from exc
        if len(data) != MASTER_KEY_BYTES:
            raise VaultError(
                f"master key file {path} holds {len(data)} bytes, "
                f"expected exactly {MASTER_KEY_BYTES} raw bytes"
            )

        return cls(data)

    def derive(self, info: str) -> bytes:
        """Return the 32-byte key for the purpose named by ``info``."""
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info.encode())
        return hkdf.derive(self._key)

    @property
    def key_id(self) -> str:
        """A short public name for this key, to tell two keys apart in messages."""
        return self.derive(_KEY_ID_INFO).hex()[:16]

    def __repr__(self) -> str:
        return f"MasterKey(key_id={self.key_id!r})"


def master_key_path(home: Path, environ: Mapping[str, str] | None = None) -> Path:
    """Return the key file named by ``PROCTOR_MASTER_KEY_FILE``, else the home's.

    Raises VaultError when the variable is set but empty, rather than quietly
    falling back to another key.
    """
    environ = os.environ if environ is None else environ
    named = environ.get(MASTER_KEY_ENV)
    if named is None:
        return home / MASTER_KEY_FILENAME
    if not named.strip():
        raise VaultError(f"{MASTER_KEY_ENV} is set but empty")

    return Path(named)


def load_master_key(home: Path, environ: Mapping[str, str] | None = None) -> MasterKey:
    """Read the master key for ``home`` (see ``master_key_path``); raises VaultError."""
    return MasterKey.from_file(master_key_path(home, environ))


def create_master_key(path: Path) -> MasterKey:
    """Write a new random master key to ``path`` with mode 0600 and return it.

    Raises VaultError when ``path`` already exists (a key is never overwritten: the
    secrets under it would be lost) or cannot be written.
    """
    key = secrets.token_bytes(MASTER_KEY_BYTES)
    try:
        write_private(path, key, exclusive=True)
    except ConfigError as exc:
        raise VaultError(f"cannot create the master key: {exc}") from exc

    return MasterKey(key)
