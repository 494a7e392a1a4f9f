"""Tests for private files: atomic 0600 writes, permission checks, stamps and locks."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from proctor.errors import ConfigError
from proctor.files import locked, read_private, stamp, write_private


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that would leave new files readable by everyone."""
    previous = os.umask(0)
    yield
    os.umask(previous)


class TestWritePrivate:
    """Files are replaced in one step and readable by the owner only."""

    @pytest.mark.usefixtures("open_umask")
    def test_mode_is_0600_whatever_the_umask(self, tmp_path: Path) -> None:
        """A new file gets mode 0600 even under umask 0."""
        path = tmp_path / "secret.json"
        write_private(path, b"{}")
        assert _mode(path) == 0o600
        assert path.read_bytes() == b"{}"

    def test_replaces_and_tightens_an_existing_file(self, tmp_path: Path) -> None:
        """Rewriting a world-readable file leaves new content with mode 0600."""
        path = tmp_path / "secret.json"
        path.write_bytes(b"old")
        path.chmod(0o644)
        write_private(path, b"new")
        assert path.read_bytes() == b"new"
        assert _mode(path) == 0o600

    def test_leaves_no_temporary_file(self, tmp_path: Path) -> None:
        """Only the target remains in the folder after a write."""
        write_private(tmp_path / "a", b"1")
        write_private(tmp_path / "a", b"2")
        assert [child.name for child in tmp_path.iterdir()] == ["a"]

    def test_exclusive_refuses_an_existing_file(self, tmp_path: Path) -> None:
        """With exclusive, an existing file is neither replaced nor touched."""
        path = tmp_path / "master.key"
        write_private(path, b"first", exclusive=True)
        with pytest.raises(ConfigError, match="already exists; refusing to overwrite"):
            write_private(path, b"second", exclusive=True)
        assert path.read_bytes() == b"first"
        assert [child.name for child in tmp_path.iterdir()] == ["master.key"]

    def test_missing_folder_is_a_config_error(self, tmp_path: Path) -> None:
        """A folder that does not exist gives ConfigError, not OSError."""
        with pytest.raises(ConfigError, match="cannot write"):
            write_private(tmp_path / "nowhere" / "file", b"x")


class TestReadPrivate:
    """Only regular files closed to group and others are read."""

    def test_reads_a_private_file(self, tmp_path: Path) -> None:
        """A 0600 file is read whole."""
        path = tmp_path / "key"
        write_private(path, b"\x00\x01\x02")
        assert read_private(path) == b"\x00\x01\x02"

    @pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602, 0o644, 0o666])
    def test_refuses_group_or_world_access(self, tmp_path: Path, mode: int) -> None:
        """Any group or world bit, read or write, makes the file refused."""
        path = tmp_path / "key"
        write_private(path, b"k")
        path.chmod(mode)
        with pytest.raises(ConfigError, match=f"mode {mode:04o} and is open to group"):
            read_private(path)

    def test_message_says_how_to_fix(self, tmp_path: Path) -> None:
        """The refusal names the chmod that fixes it."""
        path = tmp_path / "key"
        write_private(path, b"k")
        path.chmod(0o640)
        with pytest.raises(ConfigError, match=r"run `chmod 600 .*key`"):
            read_private(path)

    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing file is a ConfigError naming it."""
        with pytest.raises(ConfigError, match=r"missing\.key does not exist"):
            read_private(tmp_path / "missing.key")

    def test_refuses_a_folder(self, tmp_path: Path) -> None:
        """A folder at the path is refused, not read."""
        folder = tmp_path / "folder"
        folder.mkdir(mode=0o700)
        with pytest.raises(ConfigError, match="not a regular file"):
            read_private(folder)

    def test_refuses_a_fifo_without_hanging(self, tmp_path: Path) -> None:
        """A FIFO planted at the path is refused at once instead of blocking."""
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo, 0o600)
        with pytest.raises(ConfigError, match="not a regular file"):
            read_private(fifo)


class TestStamp:
    """A stamp changes whenever a cached reading could be stale or unsafe."""

    def test_missing_file_has_no_stamp(self, tmp_path: Path) -> None:
        """A missing file stamps as None."""
        assert stamp(tmp_path / "none") is None

    def test_changes_on_rewrite(self, tmp_path: Path) -> None:
        """Rewriting with the same length still changes the stamp (new inode)."""
        path = tmp_path / "f"
        write_private(path, b"aaaa")
        before = stamp(path)
        write_private(path, b"bbbb")
        assert stamp(path) != before

    def test_changes_on_chmod(self, tmp_path: Path) -> None:
        """A chmod changes the stamp, so a cache notices a file opened to others."""
        path = tmp_path / "f"
        write_private(path, b"aaaa")
        before = stamp(path)
        path.chmod(0o644)
        assert stamp(path) != before


class TestLocked:
    """One writer at a time holds a file's lock."""

    def test_lock_file_is_private(self, tmp_path: Path) -> None:
        """The lock file beside the data is created with mode 0600."""
        with locked(tmp_path / "vault.json"):
            assert _mode(tmp_path / "vault.json.lock") == 0o600

    def test_second_holder_waits(self, tmp_path: Path) -> None:
        """A second locker blocks until the first releases the lock."""
        path = tmp_path / "vault.json"
        entered = threading.Event()

        def second() -> None:
            with locked(path):
                entered.set()

        with locked(path):
            worker = threading.Thread(target=second)
            worker.start()
            assert not entered.wait(0.2)
        assert entered.wait(5)
        worker.join(5)
