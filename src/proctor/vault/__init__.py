"""The vault: the master key, secrets sealed at rest, their injection into calls, and
the redactor that keeps their values out of every entry and log line."""

from proctor.vault.inject import AUTHORIZATION, Injection, Outbound, Style, apply
from proctor.vault.masterkey import (
    MASTER_KEY_BYTES,
    MASTER_KEY_ENV,
    MASTER_KEY_FILENAME,
    MasterKey,
    create_master_key,
    load_master_key,
    master_key_path,
)
from proctor.vault.redact import (
    DEFAULT_SENSITIVE_FIELDS,
    DEFAULT_SENSITIVE_SUFFIXES,
    MIN_SECRET_LENGTH,
    REDACTED,
    Masking,
    Redactor,
    check_value,
    encoded_forms,
    is_sensitive_name,
)
from proctor.vault.vault import (
    NAME_PATTERN,
    VAULT_FILENAME,
    SecretInfo,
    SecretVersion,
    Vault,
    check_name,
)

__all__ = [
    "AUTHORIZATION",
    "DEFAULT_SENSITIVE_FIELDS",
    "DEFAULT_SENSITIVE_SUFFIXES",
    "MASTER_KEY_BYTES",
    "MASTER_KEY_ENV",
    "MASTER_KEY_FILENAME",
    "MIN_SECRET_LENGTH",
    "NAME_PATTERN",
    "REDACTED",
    "VAULT_FILENAME",
    "Injection",
    "Masking",
    "MasterKey",
    "Outbound",
    "Redactor",
    "SecretInfo",
    "SecretVersion",
    "Style",
    "Vault",
    "apply",
    "check_name",
    "check_value",
    "create_master_key",
    "encoded_forms",
    "is_sensitive_name",
    "load_master_key",
    "master_key_path",
]
