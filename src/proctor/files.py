"""Private files in the Proctor home: written atomically with mode 0600, read only when
no one but the owner can reach them, and locked while a writer changes them."""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from proctor.errors import ConfigError

PRIVATE_MODE = 0o600

Stamp = tuple[int, int, int, int, int, int]
"""What changes when a file is replaced, rewritten or chmod-ed: device, inode, size,
modification and change times, mode."""


def write_private(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` atomically, readable by the owner only.

    The bytes go to a temporary file beside ``path``, reach the disk, then take its
    place in one rename, so a reader sees the old file or the new one, never half.
    With ``exclusive`` an existing file is refused instead of replaced. Raises
    ConfigError when the file exists (``exclusive``) or the folder refuses the write.
    """
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from exc
    try:
        _fill(fd, data, path)
        _publish(Path(temporary), path, exclusive=exclusive)
    finally:
        # Gone already after a rename; still there after a link or a failure.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    _sync_folder(path.parent)


def read_private(path: Path) -> bytes:
    """Return the bytes of ``path`` after checking that only its owner can reach it.

    Raises ConfigError when the file is missing, unreadable, not a regular file, or
    its mode grants group or others any access (the message says how to fix it).
    """
    try:
        # O_NONBLOCK: opening a FIFO planted at the path must not hang the reader.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path} does not exist") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        # Check the file that was opened, not the path, so a swap cannot slip past.
        check_private_mode(path, os.fstat(fd))
    except ConfigError:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as file:
        try:
            return file.read()
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc


def check_private_mode(path: Path, info: os.stat_result) -> None:
    """Refuse a file that is not regular or that group or others may access.

    Group or world write access is refused as well as read access: whoever can
    replace a key file can make Proctor use their key. Raises ConfigError.
    """
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{path} is not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"{path} has mode {mode:04o} and is open to group or others; "
            f"run `chmod 600 {path}`"
        )


def stamp(path: Path) -> Stamp | None:
    """Return what identifies the current content of ``path``, or None if missing.

    A cache holding a file's parsed content stays valid while the stamp is equal;
    ``write_private`` always makes a new inode, and a chmod changes the stamp too.
    Raises ConfigError when the path cannot be examined.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot examine {path}: {exc.strerror}") from exc

    return (
        info.st_dev,
        info.st_ino,
        info.st_size,
        info.st_mtime_ns,
        info.st_ctime_ns,
        info.st_mode,
    )


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<path>.lock`` for one read-modify-write of ``path``.

    Two writers that each read, change and rewrite the same file would otherwise
    lose one change. Raises ConfigError when the lock file cannot be opened.
    """
    lock = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_MODE)
    except OSError as exc:
        raise ConfigError(f"cannot open the lock {lock}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _fill(fd: int, data: bytes, path: Path) -> None:
    """Write all of ``data`` to the new file meant for ``path`` and force it to disk."""
    with os.fdopen(fd, "wb") as file:
        try:
            os.fchmod(fd, PRIVATE_MODE)
            file.write(data)
            file.flush()
            os.fsync(fd)
        except OSError as exc:
            raise ConfigError(f"cannot write {path}: {exc.strerror}") from exc


def _publish(temporary: Path, path: Path, *, exclusive: bool) -> None:
    """Move the finished temporary file to ``path`` in one step."""
    try:
        if exclusive:
            # A hard link fails on an existing name, where a rename would replace it.
            os.link(temporary, path)
        else:
            os.replace(temporary, path)
    except FileExistsError as exc:
        raise ConfigError(f"{path} already exists; refusing to overwrite it") from exc
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from exc


def _sync_folder(folder: Path) -> None:
    """Force the folder's entry for the new file to the disk, so a crash keeps it."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"cannot sync {folder}: {exc.strerror}") from exc
    try:
        os.fsync(fd)
    except OSError as exc:
        raise ConfigError(f"cannot sync {folder}: {exc.strerror}") from exc
    finally:
        os.close(fd)
