"""Tests for the master key: creation, strict loading, derivation and where it lives."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from proctor.errors import VaultError
from proctor.vault import (
    MASTER_KEY_ENV,
    MasterKey,
    create_master_key,
    load_master_key,
    master_key_path,
)


class TestCreate:
    """A new key is 32 random bytes in a 0600 file that is never overwritten."""

    def test_writes_32_bytes_with_mode_0600(self, tmp_path: Path) -> None:
        """The key file holds exactly 32 bytes and only its owner can read it."""
        path = tmp_path / "master.key"
        create_master_key(path)
        assert len(path.read_bytes()) == 32
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    def test_returns_the_key_it_wrote(self, tmp_path: Path) -> None:
        """Loading the file back gives the same key as the one returned."""
        path = tmp_path / "master.key"
        created = create_master_key(path)
        assert MasterKey.from_file(path).key_id == created.key_id

    def test_two_keys_differ(self, tmp_path: Path) -> None:
        """Each creation draws new random bytes."""
        first = create_master_key(tmp_path / "a.key")
        second = create_master_key(tmp_path / "b.key")
        assert first.key_id != second.key_id

    def test_refuses_to_overwrite(self, tmp_path: Path) -> None:
        """An existing key file is refused and left as it was."""
        path = tmp_path / "master.key"
        create_master_key(path)
        before = path.read_bytes()
        with pytest.raises(VaultError, match="refusing to overwrite"):
            create_master_key(path)
        assert path.read_bytes() == before


class TestFromFile:
    """Only a private file of exactly 32 bytes is accepted."""

    def test_refuses_a_group_readable_key(self, tmp_path: Path) -> None:
        """A key file readable by the group is refused with the fix in the message."""
        path = tmp_path / "master.key"
        create_master_key(path)
        path.chmod(0o640)
        with pytest.raises(VaultError, match="open to group or others; run `chmod"):
            MasterKey.from_file(path)

    def test_refuses_a_world_readable_key(self, tmp_path: Path) -> None:
        """A key file readable by everyone is refused."""
        path = tmp_path / "master.key"
        create_master_key(path)
        path.chmod(0o604)
        with pytest.raises(VaultError, match="cannot use the master key"):
            MasterKey.from_file(path)

    @pytest.mark.parametrize("size", [0, 31, 33, 64])
    def test_refuses_a_wrong_length(self, tmp_path: Path, size: int) -> None:
        """A file that is not exactly 32 bytes is refused, with both lengths named."""
        path = tmp_path / "master.key"
        path.write_bytes(b"k" * size)
        path.chmod(0o600)
        with pytest.raises(
            VaultError, match=f"holds {size} bytes, expected exactly 32"
        ):
            MasterKey.from_file(path)

    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing key file is a VaultError naming the path."""
        with pytest.raises(VaultError, match=r"master\.key does not exist"):
            MasterKey.from_file(tmp_path / "master.key")


class TestMasterKey:
    """The key derives separate subkeys and never shows its bytes."""

    @pytest.mark.parametrize("size", [0, 16, 31, 33])
    def test_constructor_checks_length(self, size: int) -> None:
        """Only 32 bytes make a master key."""
        with pytest.raises(VaultError, match=f"32 bytes, got {size} bytes"):
            MasterKey(bytes(size))

    def test_repr_hides_the_key(self) -> None:
        """The repr names the key id and not the key's bytes in any usual form."""
        raw = bytes(range(32))
        shown = repr(MasterKey(raw))
        assert raw.hex() not in shown
        assert repr(raw) not in shown
        assert shown.startswith("MasterKey(key_id=")

    def test_derive_separates_purposes(self) -> None:
        """Different purposes give different 32-byte keys, and the same one repeats."""
        key = MasterKey(bytes(range(32)))
        first, second = key.derive("one"), key.derive("two")
        assert len(first) == len(second) == 32
        assert first != second
        assert key.derive("one") == first

    def test_key_id_is_public_and_stable(self) -> None:
        """The key id is 16 hex digits, the same for equal keys."""
        key_id = MasterKey(bytes(range(32))).key_id
        assert len(key_id) == 16
        assert int(key_id, 16) >= 0
        assert MasterKey(bytes(range(32))).key_id == key_id


class TestMasterKeyPath:
    """The key comes from PROCTOR_MASTER_KEY_FILE, else the home's master.key."""

    def test_defaults_to_the_home(self, tmp_path: Path) -> None:
        """Without the variable the key is the home's master.key."""
        assert master_key_path(tmp_path, {}) == tmp_path / "master.key"

    def test_variable_wins(self, tmp_path: Path) -> None:
        """The variable names the key file wherever it is."""
        elsewhere = tmp_path / "keys" / "proctor.key"
        environ = {MASTER_KEY_ENV: str(elsewhere)}
        assert master_key_path(tmp_path, environ) == elsewhere

    def test_empty_variable_is_refused(self, tmp_path: Path) -> None:
        """A set but empty variable is an error rather than a silent fallback."""
        with pytest.raises(VaultError, match="is set but empty"):
            master_key_path(tmp_path, {MASTER_KEY_ENV: " "})

    def test_load_reads_the_named_file(self, tmp_path: Path) -> None:
        """load_master_key follows the variable to the file it names."""
        path = tmp_path / "other.key"
        created = create_master_key(path)
        loaded = load_master_key(tmp_path, {MASTER_KEY_ENV: str(path)})
        assert loaded.key_id == created.key_id

    def test_load_reads_the_process_environment(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without an explicit mapping the process environment is used."""
        path = tmp_path / "env.key"
        created = create_master_key(path)
        monkeypatch.setenv(MASTER_KEY_ENV, str(path))
        assert load_master_key(tmp_path / "home").key_id == created.key_id
