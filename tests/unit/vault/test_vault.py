"""Tests for the vault: sealing at rest, tamper detection, rotation and no leaks."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from proctor.errors import VaultError
from proctor.vault import MasterKey, SecretVersion, Vault


def _document(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _rewrite(path: Path, document: Any) -> None:
    path.write_text(json.dumps(document), encoding="utf-8")
    path.chmod(0o600)


class TestRoundTrip:
    """What is set comes back, and only through get or reveal."""

    def test_set_then_get(self, vault: Vault, canary: str) -> None:
        """The latest value comes back unchanged."""
        vault.set("stripe", canary)
        assert vault.get("stripe") == canary

    def test_unicode_value(self, vault: Vault) -> None:
        """Any Unicode text survives the round trip."""
        value = "pässwörd-🔑-秘密-\t-end"
        vault.set("unicode", value)
        assert vault.get("unicode") == value

    def test_another_instance_reads_it(
        self, vault: Vault, vault_path: Path, master_key: MasterKey, canary: str
    ) -> None:
        """A second Vault over the same file and key reads what the first wrote."""
        vault.set("stripe", canary)
        assert Vault(vault_path, master_key).get("stripe") == canary

    def test_set_describes_without_the_value(self, vault: Vault, canary: str) -> None:
        """set returns the name, version 1, a 16-hex fingerprint and a UTC time."""
        described = vault.set("stripe", canary)
        assert (described.name, described.version) == ("stripe", 1)
        assert len(described.fingerprint) == 16
        int(described.fingerprint, 16)
        assert described.created.endswith("Z")

    def test_missing_file_is_an_empty_vault(self, vault: Vault) -> None:
        """Before the first set there are no secrets and no file."""
        assert vault.list() == []
        assert vault.values() == []
        assert not vault.path.exists()

    def test_unknown_secret(self, vault: Vault) -> None:
        """Asking for an unknown name is a VaultError naming it."""
        vault.set("known", "value-long-enough")
        with pytest.raises(VaultError, match="no secret named 'unknown'"):
            vault.get("unknown")


class TestAtRest:
    """The file on disk is private and holds no value in any readable form."""

    def test_file_mode_is_0600(self, vault: Vault, vault_path: Path) -> None:
        """The vault file is readable by its owner only."""
        vault.set("stripe", "sk_live_abcdefgh")
        assert stat.S_IMODE(vault_path.stat().st_mode) == 0o600

    def test_value_absent_from_the_file(
        self, vault: Vault, vault_path: Path, canary: str
    ) -> None:
        """Neither the value nor its base64 or hex appears in the file."""
        vault.set("stripe", canary)
        vault.set("stripe", canary + "-v2")
        raw = vault_path.read_bytes()
        assert canary.encode() not in raw
        assert base64.b64encode(canary.encode()) not in raw
        assert canary.encode().hex().encode() not in raw

    def test_file_format(self, vault: Vault, vault_path: Path) -> None:
        """The file holds the format, the master key id and each version's fields."""
        vault.set("stripe", "sk_live_abcdefgh")
        document = _document(vault_path)
        assert document["format"] == "proctor-vault/1"
        assert len(document["master_key_id"]) == 16
        (version,) = document["secrets"]["stripe"]
        assert set(version) == {
            "version",
            "created",
            "nonce",
            "ciphertext",
            "fingerprint",
        }
        assert len(base64.b64decode(version["nonce"])) == 12
        # 16 value bytes plus the 16-byte GCM tag.
        assert len(base64.b64decode(version["ciphertext"])) == 32

    def test_nonce_is_fresh_each_time(self, vault: Vault, vault_path: Path) -> None:
        """Setting the same value twice uses two nonces and two ciphertexts."""
        vault.set("same", "identical-value")
        vault.set("same", "identical-value")
        first, second = _document(vault_path)["secrets"]["same"]
        assert first["nonce"] != second["nonce"]
        assert first["ciphertext"] != second["ciphertext"]

    def test_group_readable_vault_is_refused(
        self, vault: Vault, vault_path: Path, master_key: MasterKey
    ) -> None:
        """A vault file opened to the group is not read."""
        vault.set("stripe", "sk_live_abcdefgh")
        vault_path.chmod(0o640)
        with pytest.raises(VaultError, match="open to group or others"):
            Vault(vault_path, master_key).get("stripe")

    def test_chmod_after_reading_is_noticed(
        self, vault: Vault, vault_path: Path
    ) -> None:
        """A vault already read and cached refuses once the file is opened up."""
        vault.set("stripe", "sk_live_abcdefgh")
        vault.get("stripe")
        vault_path.chmod(0o644)
        with pytest.raises(VaultError, match="open to group or others"):
            vault.get("stripe")

    def test_missing_folder(self, master_key: MasterKey, tmp_path: Path) -> None:
        """A vault in a folder that does not exist cannot be written."""
        vault = Vault(tmp_path / "absent" / "vault.json", master_key)
        with pytest.raises(VaultError, match="cannot write the vault"):
            vault.set("stripe", "sk_live_abcdefgh")


class TestTamper:
    """Any change to a sealed version makes it fail to open, never open wrongly."""

    def test_flipped_ciphertext_bit(
        self, vault: Vault, vault_path: Path, canary: str
    ) -> None:
        """One flipped bit in the ciphertext is detected."""
        vault.set("stripe", canary)
        document = _document(vault_path)
        sealed = document["secrets"]["stripe"][0]
        data = bytearray(base64.b64decode(sealed["ciphertext"]))
        data[0] ^= 0x01
        sealed["ciphertext"] = base64.b64encode(bytes(data)).decode()
        _rewrite(vault_path, document)
        with pytest.raises(VaultError, match="'stripe' version 1 does not decrypt"):
            vault.get("stripe")

    def test_changed_nonce(self, vault: Vault, vault_path: Path, canary: str) -> None:
        """A different nonce is detected."""
        vault.set("stripe", canary)
        document = _document(vault_path)
        document["secrets"]["stripe"][0]["nonce"] = base64.b64encode(bytes(12)).decode()
        _rewrite(vault_path, document)
        with pytest.raises(VaultError, match="does not decrypt"):
            vault.get("stripe")

    def test_moved_to_another_name(
        self, vault: Vault, vault_path: Path, canary: str
    ) -> None:
        """A version copied under another name does not open there."""
        vault.set("stripe", canary)
        vault.set("github", "ghp_abcdefghijkl")
        document = _document(vault_path)
        document["secrets"]["github"] = document["secrets"]["stripe"]
        _rewrite(vault_path, document)
        with pytest.raises(VaultError, match="'github' version 1 does not decrypt"):
            vault.get("github")

    def test_moved_to_another_version(
        self, vault: Vault, vault_path: Path, canary: str
    ) -> None:
        """An old version relabelled as the latest does not open (no rollback)."""
        vault.set("stripe", canary)
        vault.set("stripe", canary + "-rotated")
        document = _document(vault_path)
        first, second = document["secrets"]["stripe"]
        second["nonce"], second["ciphertext"] = first["nonce"], first["ciphertext"]
        _rewrite(vault_path, document)
        with pytest.raises(VaultError, match="'stripe' version 2 does not decrypt"):
            vault.get("stripe")
        assert vault.reveal("stripe", 1) == canary

    def test_wrong_master_key(
        self, vault: Vault, vault_path: Path, canary: str
    ) -> None:
        """Another master key is refused up front, naming both key ids."""
        vault.set("stripe", canary)
        other = MasterKey.generate()
        with pytest.raises(VaultError, match="was written under master key"):
            Vault(vault_path, other).get("stripe")

    def test_wrong_master_key_cannot_write(
        self, vault: Vault, vault_path: Path, canary: str
    ) -> None:
        """Another master key cannot add secrets that the real key could not read."""
        vault.set("stripe", canary)
        with pytest.raises(VaultError, match="was written under master key"):
            Vault(vault_path, MasterKey.generate()).set("other", "value-long-enough")

    def test_wrong_key_with_forged_key_id(
        self, vault: Vault, vault_path: Path, canary: str
    ) -> None:
        """Even with the key id forged to match, a wrong key cannot decrypt."""
        vault.set("stripe", canary)
        other = MasterKey.generate()
        document = _document(vault_path)
        document["master_key_id"] = other.key_id
        _rewrite(vault_path, document)
        with pytest.raises(VaultError, match="does not decrypt"):
            Vault(vault_path, other).get("stripe")

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            (lambda d: d.update(format="other/1"), "not a proctor-vault/1 file"),
            (lambda d: d.update(secrets=[]), "has no secrets object"),
            (lambda d: d["secrets"]["stripe"][0].pop("nonce"), "has no nonce"),
            (lambda d: d["secrets"]["stripe"][0].update(nonce="@@"), "bad nonce"),
            (lambda d: d["secrets"]["stripe"][0].update(version=2), "expected 1 to n"),
            (lambda d: d["secrets"].update(stripe=[]), "has no versions"),
            (lambda d: d["secrets"].update({"bad name": []}), "bad name"),
        ],
    )
    def test_malformed_file(
        self,
        vault: Vault,
        vault_path: Path,
        change: Any,
        message: str,
    ) -> None:
        """A structurally wrong file is refused with what is wrong."""
        vault.set("stripe", "sk_live_abcdefgh")
        document = _document(vault_path)
        change(document)
        _rewrite(vault_path, document)
        with pytest.raises(VaultError, match=message):
            vault.list()

    def test_not_json(self, vault: Vault, vault_path: Path) -> None:
        """A file that is not JSON is refused."""
        vault_path.write_text("{not json", encoding="utf-8")
        vault_path.chmod(0o600)
        with pytest.raises(VaultError, match="is not valid JSON"):
            vault.list()


class TestRotation:
    """Setting a name again adds a version and keeps every earlier one."""

    def test_versions_accumulate(self, vault: Vault) -> None:
        """Three sets make versions 1, 2, 3, each revealable."""
        for number in range(1, 4):
            assert vault.set("stripe", f"sk_live_value_{number}").version == number
        assert vault.get("stripe") == "sk_live_value_3"
        assert [vault.reveal("stripe", n) for n in (1, 2, 3)] == [
            "sk_live_value_1",
            "sk_live_value_2",
            "sk_live_value_3",
        ]
        assert [v.version for v in vault.versions("stripe")] == [1, 2, 3]

    def test_fingerprints_differ(self, vault: Vault) -> None:
        """Two different values have different fingerprints."""
        first = vault.set("stripe", "sk_live_value_1")
        second = vault.set("stripe", "sk_live_value_2")
        assert first.fingerprint != second.fingerprint
        assert vault.latest("stripe") == second

    def test_fingerprint_follows_the_value(self, vault: Vault) -> None:
        """The same value under two names has the same fingerprint, to spot reuse."""
        first = vault.set("one", "shared-value-123")
        second = vault.set("two", "shared-value-123")
        assert first.fingerprint == second.fingerprint

    def test_fingerprint_is_keyed(self, vault_path: Path, tmp_path: Path) -> None:
        """Under another master key the same value has another fingerprint."""
        first = Vault(vault_path, MasterKey.generate()).set("a", "shared-value-123")
        other = Vault(tmp_path / "other.json", MasterKey.generate())
        assert other.set("a", "shared-value-123").fingerprint != first.fingerprint

    def test_unknown_version(self, vault: Vault) -> None:
        """A version outside 1..latest is a VaultError naming the range."""
        vault.set("stripe", "sk_live_value_1")
        with pytest.raises(VaultError, match="has no version 3; versions are 1 to 1"):
            vault.reveal("stripe", 3)
        with pytest.raises(VaultError, match="has no version 0"):
            vault.reveal("stripe", 0)

    def test_values_include_past_versions(self, vault: Vault) -> None:
        """values() returns every version of every secret, for the redactor."""
        vault.set("b", "second-secret-1")
        vault.set("a", "first-secret-1")
        vault.set("a", "first-secret-2")
        assert vault.values() == ["first-secret-1", "first-secret-2", "second-secret-1"]
        assert vault.named_values() == [
            ("a", "first-secret-1"),
            ("a", "first-secret-2"),
            ("b", "second-secret-1"),
        ]

    def test_two_writers_keep_both_versions(
        self, vault_path: Path, master_key: MasterKey
    ) -> None:
        """A writer with a stale cache still appends after the other's version."""
        first, second = Vault(vault_path, master_key), Vault(vault_path, master_key)
        first.list()
        second.list()
        first.set("stripe", "sk_live_value_1")
        assert second.set("stripe", "sk_live_value_2").version == 2
        assert first.values() == ["sk_live_value_1", "sk_live_value_2"]


class TestNames:
    """Names are 1 to 64 of letters, digits, '_', '.', '-'."""

    @pytest.mark.parametrize("name", ["a", "A.b-c_9", "x" * 64, "stripe.live"])
    def test_accepted(self, vault: Vault, name: str) -> None:
        """Allowed names are stored and read back."""
        vault.set(name, "value-long-enough")
        assert vault.get(name) == "value-long-enough"

    @pytest.mark.parametrize("name", ["", "a b", "x" * 65, "ü", "a/b", "a\n", "a:b"])
    def test_refused(self, vault: Vault, name: str) -> None:
        """Other names are refused before anything is written."""
        with pytest.raises(VaultError, match="is not 1 to 64 letters"):
            vault.set(name, "value-long-enough")
        assert not vault.path.exists()


class TestValues:
    """A value must be long enough to be redacted."""

    @pytest.mark.parametrize("value", ["", "Q", "1234567"])
    def test_short_value_refused(self, vault: Vault, value: str) -> None:
        """Values under 8 characters are refused, naming the secret only."""
        with pytest.raises(
            VaultError, match=r"'pin' is too short to redact: .* at least 8"
        ) as caught:
            vault.set("pin", value)
        if value:
            assert value not in str(caught.value)

    def test_lone_surrogate_refused(self, vault: Vault) -> None:
        """A string that cannot be UTF-8 is refused."""
        with pytest.raises(VaultError, match="not valid unicode"):
            vault.set("broken", "abcdefgh\ud800")

    def test_marker_value_refused(self, vault: Vault) -> None:
        """A value the redaction marker would reproduce is refused."""
        with pytest.raises(VaultError, match="shows in a redaction marker"):
            vault.set("odd", "redacted")


class TestNoLeak:
    """Nothing the vault returns or raises carries a value."""

    def test_descriptions_never_hold_values(self, vault: Vault, canary: str) -> None:
        """repr and str of every description lack the value."""
        described: list[SecretVersion] = [
            vault.set("stripe", canary),
            vault.set("stripe", canary + "-2"),
        ]
        described += vault.list() + vault.versions("stripe") + [vault.latest("stripe")]
        for item in described:
            assert canary not in repr(item)
            assert canary not in str(item)
            assert canary not in str(vars(item))

    def test_list_describes_latest(self, vault: Vault, canary: str) -> None:
        """list() gives each secret's latest version, by name."""
        vault.set("b", canary)
        vault.set("a", "first-secret-1")
        vault.set("a", "first-secret-2")
        assert [(i.name, i.version) for i in vault.list()] == [("a", 2), ("b", 1)]

    def test_errors_never_hold_values(
        self, vault: Vault, vault_path: Path, canary: str
    ) -> None:
        """A decryption failure's message and causes lack the value."""
        vault.set("stripe", canary)
        document = _document(vault_path)
        document["secrets"]["stripe"][0]["nonce"] = base64.b64encode(bytes(12)).decode()
        _rewrite(vault_path, document)
        with pytest.raises(VaultError, match="does not decrypt") as caught:
            vault.get("stripe")
        error: BaseException | None = caught.value
        while error is not None:
            assert canary not in str(error)
            error = error.__cause__

    def test_vault_repr_holds_no_key(self, vault: Vault, master_key: MasterKey) -> None:
        """The vault's attributes show the master key id, not its bytes."""
        assert "MasterKey(key_id=" in repr(master_key)
        assert master_key.derive("proctor vault encryption").hex() not in repr(vault)
