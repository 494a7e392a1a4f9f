"""The vault: named secrets encrypted at rest with AES-256-GCM in one private JSON file,
every version kept, so a rotation never loses a value the redactor must still remove.

``vault.json`` (mode 0600, replaced atomically on every change)::

    {
      "format": "proctor-vault/1",
      "master_key_id": "<16 hex: which master key wrote this file>",
      "secrets": {
        "<name>": [
          {"version": 1, "created": "2026-12-03T15:33:16.123456Z",
           "nonce": "<base64, 12 bytes>", "ciphertext": "<base64, value + 16-byte tag>",
           "fingerprint": "<16 hex>"}
        ]
      }
    }

Keys are derived from the master key with HKDF-SHA256: ``proctor vault encryption``
for AES-256-GCM, ``proctor fingerprint`` for the HMAC-SHA256 fingerprints. The
associated data binds each ciphertext to its name and version, so a ciphertext copied
to another name or version does not decrypt.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import hashlib
import hmac
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from proctor.errors import ConfigError, VaultError
from proctor.files import Stamp, locked, read_private, stamp, write_private
from proctor.vault.masterkey import MasterKey
from proctor.vault.redact import check_value

VAULT_FORMAT = "proctor-vault/1"
VAULT_FILENAME = "vault.json"
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")
FINGERPRINT_HEX = 16

_ENCRYPTION_INFO = "proctor vault encryption"
_FINGERPRINT_INFO = "proctor fingerprint"
_NONCE_BYTES = 12  # NIST SP 800-38D §8.2: 96-bit random nonces


@dataclass(frozen=True)
class SecretVersion:
    """One version of a secret as anyone may see it: never its value."""

    name: str
    version: int
    fingerprint: str
    created: str


SecretInfo = SecretVersion
"""What ``Vault.list`` returns per secret: its latest version."""


@dataclass(frozen=True)
class _Sealed:
    """One version as stored: the ciphertext and what describes it."""

    version: int
    created: str
    nonce: bytes
    ciphertext: bytes
    fingerprint: str

    def to_json(self) -> dict[str, object]:
        return {
            "version": self.version,
            "created": self.created,
            "nonce": base64.b64encode(self.nonce).decode("ascii"),
            "ciphertext": base64.b64encode(self.ciphertext).decode("ascii"),
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_json(cls, name: str, raw: object) -> _Sealed:
        """Read one stored version; raises VaultError naming what is wrong."""
        if not isinstance(raw, dict):
            raise VaultError(f"secret {name!r} has a version that is not an object")
        version, created = raw.get("version"), raw.get("created")
        fingerprint = raw.get("fingerprint")
        if isinstance(version, bool) or not isinstance(version, int):
            raise VaultError(f"secret {name!r} has a version without a number")
        if not isinstance(created, str) or not isinstance(fingerprint, str):
            raise VaultError(f"secret {name!r} version {version} lacks its metadata")
        nonce = _unbase64(raw.get("nonce"), name, version, "nonce")
        if len(nonce) != _NONCE_BYTES:
            raise VaultError(f"secret {name!r} version {version} has a bad nonce")
        ciphertext = _unbase64(raw.get("ciphertext"), name, version, "ciphertext")

        return cls(version, created, nonce, ciphertext, fingerprint)


_Contents = dict[str, tuple[_Sealed, ...]]


def check_name(name: str) -> None:
    """Raise VaultError unless ``name`` is 1 to 64 of ``A-Z a-z 0-9 _ . -``."""
    if not NAME_PATTERN.fullmatch(name):
        raise VaultError(
            f"secret name {name[:80]!r} is not 1 to 64 letters, digits, '_', '.', '-'"
        )


class Vault:
    """The secrets in one ``vault.json``, sealed under one master key.

    Reads are cached until the file changes; each ``set`` re-reads the file under
    a lock, so two writers never lose each other's versions.
    """

    def __init__(self, path: Path, master_key: MasterKey) -> None:
        self._path = path
        self._key_id = master_key.key_id
        self._aead = AESGCM(master_key.derive(_ENCRYPTION_INFO))
        self._fingerprint_key = master_key.derive(_FINGERPRINT_INFO)
        self._cache: tuple[Stamp, _Contents] | None = None

    @property
    def path(self) -> Path:
        return self._path

    def set(self, name: str, value: str) -> SecretVersion:
        """Store ``value`` as the next version of ``name`` and describe it.

        Setting an existing name rotates it: earlier versions stay, readable with
        ``reveal`` and removed by the redactor. Raises VaultError when the name is
        not allowed, the value is too short to redact (see ``redact``), or the file
        cannot be read or written.
        """
        check_name(name)
        check_value(value, name=name)
        try:
            with locked(self._path):
                contents = self._load(self._path_stamp())
                sealed = self._seal(name, len(contents.get(name, ())) + 1, value)
                contents = {**contents, name: (*contents.get(name, ()), sealed)}
                write_private(self._path, self._dump(contents))
        except ConfigError as exc:
            raise VaultError(f"cannot write the vault: {exc}") from exc

        return _describe(name, sealed)

    def get(self, name: str) -> str:
        """Return the latest value of ``name``; raises VaultError."""
        return self.reveal(name)

    def reveal(self, name: str, version: int | None = None) -> str:
        """Return ``version`` of ``name`` (the latest when None), decrypted.

        Raises VaultError when the secret or version is unknown, or the stored
        ciphertext was altered, moved or sealed under another master key.
        """
        sealed = self._version(name, version)
        try:
            plain = self._aead.decrypt(
                sealed.nonce, sealed.ciphertext, _associated(name, sealed.version)
            )
        except InvalidTag as exc:
            raise VaultError(
                f"secret {name!r} version {sealed.version} does not decrypt: the "
                "vault file was altered or the entry moved from another name"
            ) from exc

        return plain.decode("utf-8")

    def latest(self, name: str) -> SecretVersion:
        """Describe the latest version of ``name``; raises VaultError if unknown."""
        return _describe(name, self._version(name, None))

    def versions(self, name: str) -> builtins.list[SecretVersion]:
        """Describe every version of ``name``, oldest first; raises VaultError."""
        return [_describe(name, sealed) for sealed in self._versions(name)]

    def list(self) -> builtins.list[SecretInfo]:
        """Describe the latest version of every secret, by name; raises VaultError."""
        contents = self._contents()
        return [_describe(name, contents[name][-1]) for name in sorted(contents)]

    def values(self) -> builtins.list[str]:
        """Return every value ever stored, current and past, for the redactor."""
        return [value for _, value in self.named_values()]

    def named_values(self) -> builtins.list[tuple[str, str]]:
        """Return ``(name, value)`` for every version of every secret."""
        contents = self._contents()
        return [
            (name, self.reveal(name, sealed.version))
            for name in sorted(contents)
            for sealed in contents[name]
        ]

    def _version(self, name: str, version: int | None) -> _Sealed:
        versions = self._versions(name)
        if version is None:
            return versions[-1]
        if not 1 <= version <= len(versions):
            raise VaultError(
                f"secret {name!r} has no version {version}; "
                f"versions are 1 to {len(versions)}"
            )

        return versions[version - 1]

    def _versions(self, name: str) -> tuple[_Sealed, ...]:
        versions = self._contents().get(name)
        if not versions:
            raise VaultError(f"no secret named {name[:80]!r} in the vault")

        return versions

    def _contents(self) -> _Contents:
        """Return the parsed file, re-reading it only when it changed."""
        try:
            current = self._path_stamp()
            if self._cache is not None and self._cache[0] == current:
                return self._cache[1]
            contents = self._load(current)
        except ConfigError as exc:
            raise VaultError(f"cannot read the vault: {exc}") from exc
        if current is not None:
            self._cache = (current, contents)

        return contents

    def _path_stamp(self) -> Stamp | None:
        return stamp(self._path)

    def _load(self, current: Stamp | None) -> _Contents:
        """Read and check the file; a missing file is an empty vault."""
        if current is None:
            return {}
        try:
            document = json.loads(read_private(self._path))
        except (ValueError, UnicodeDecodeError) as exc:
            raise VaultError(f"vault {self._path} is not valid JSON") from exc

        return self._parse(document)

    def _parse(self, document: object) -> _Contents:
        if not isinstance(document, dict) or document.get("format") != VAULT_FORMAT:
            raise VaultError(f"vault {self._path} is not a {VAULT_FORMAT} file")
        written_by = document.get("master_key_id")
        if written_by != self._key_id:
            raise VaultError(
                f"vault {self._path} was written under master key {written_by!r}, "
                f"this master key is {self._key_id!r}; check the master key file"
            )
        secrets = document.get("secrets")
        if not isinstance(secrets, dict):
            raise VaultError(f"vault {self._path} has no secrets object")

        return {name: _parse_versions(name, raw) for name, raw in secrets.items()}

    def _dump(self, contents: Mapping[str, tuple[_Sealed, ...]]) -> bytes:
        document = {
            "format": VAULT_FORMAT,
            "master_key_id": self._key_id,
            "secrets": {
                name: [sealed.to_json() for sealed in versions]
                for name, versions in sorted(contents.items())
            },
        }

        return (json.dumps(document, indent=2) + "\n").encode("utf-8")

    def _seal(self, name: str, version: int, value: str) -> _Sealed:
        plain = value.encode("utf-8")
        # NIST SP 800-38D §8.2.2: a fresh random 96-bit nonce for every encryption.
        nonce = os.urandom(_NONCE_BYTES)
        ciphertext = self._aead.encrypt(nonce, plain, _associated(name, version))
        fingerprint = hmac.new(self._fingerprint_key, plain, hashlib.sha256)

        return _Sealed(
            version=version,
            created=_now(),
            nonce=nonce,
            ciphertext=ciphertext,
            fingerprint=fingerprint.hexdigest()[:FINGERPRINT_HEX],
        )


def _parse_versions(name: object, raw: object) -> tuple[_Sealed, ...]:
    """Read one secret's versions, which must be numbered 1, 2, 3 in order."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise VaultError(f"the vault holds a secret with a bad name {name!r}")
    if not isinstance(raw, list) or not raw:
        raise VaultError(f"secret {name!r} has no versions")
    versions = tuple(_Sealed.from_json(name, item) for item in raw)
    numbers = [sealed.version for sealed in versions]
    if numbers != list(range(1, len(versions) + 1)):
        raise VaultError(f"secret {name!r} has versions {numbers}, expected 1 to n")

    return versions


def _associated(name: str, version: int) -> bytes:
    """Bind a ciphertext to its place: the format, the secret's name and version."""
    return f"{VAULT_FORMAT}\x00{name}\x00{version}".encode("ascii")


def _describe(name: str, sealed: _Sealed) -> SecretVersion:
    return SecretVersion(name, sealed.version, sealed.fingerprint, sealed.created)


def _unbase64(text: object, name: str, version: int, what: str) -> bytes:
    if not isinstance(text, str):
        raise VaultError(f"secret {name!r} version {version} has no {what}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise VaultError(f"secret {name!r} version {version} has a bad {what}") from exc


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
