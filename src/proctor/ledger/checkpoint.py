"""C2SP tlog-checkpoint: the note body that states a log's origin, size and root, its
strict parser, and signing and opening it as a signed note.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass

from proctor.errors import CheckpointError
from proctor.ledger.note import Signer, Verifier, decode_base64, open_note, sign_note

MAX_SIZE = 2**64 - 1
ROOT_SIZE = 32

_SIZE = re.compile(r"0|[1-9][0-9]*")
_CONTROL = re.compile(r"[\x00-\x1f]")


@dataclass(frozen=True)
class Checkpoint:
    """A log's tree head: origin line, tree size, root hash and extension lines.

    Construction checks every field and raises CheckpointError.
    """

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_line("origin", self.origin)
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise CheckpointError(f"tree size must be an int, got {self.size!r}")
        if not 0 <= self.size <= MAX_SIZE:
            raise CheckpointError(f"tree size {self.size} is outside 0 .. 2**64 - 1")
        if not isinstance(self.root, bytes) or len(self.root) != ROOT_SIZE:
            raise CheckpointError(f"root hash must be {ROOT_SIZE} bytes")
        # A list would make the frozen value unhashable; keep a tuple.
        object.__setattr__(self, "extensions", tuple(self.extensions))
        for number, extension in enumerate(self.extensions, 1):
            _check_line(f"extension line {number}", extension)

    def to_text(self) -> bytes:
        """Return the note text: one line each for origin, size, root and extensions."""
        lines = [
            self.origin,
            str(self.size),
            base64.b64encode(self.root).decode(),
            *self.extensions,
        ]
        return "".join(line + "\n" for line in lines).encode()

    @classmethod
    def from_text(cls, text: bytes) -> Checkpoint:
        """Parse a checkpoint body strictly (C2SP tlog-checkpoint §Note text).

        At least three non-empty lines, each ending in a newline: the origin, the
        size in decimal without sign or leading zeros, the root as canonical base64
        of 32 bytes; any further lines are non-empty extensions.

        Raises CheckpointError naming the line at fault.
        """
        try:
            decoded = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CheckpointError("checkpoint is not valid utf-8") from exc
        if not decoded.endswith("\n"):
            raise CheckpointError("checkpoint does not end in a newline")
        lines = decoded[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointError(
                f"checkpoint has {len(lines)} lines, expected origin, size and root"
            )
        origin, size, root, *extensions = lines

        return cls(origin, _parse_size(size), _parse_root(root), tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, signer: Signer) -> bytes:
    """Return the checkpoint as a signed note carrying ``signer``'s signature line."""
    return sign_note(checkpoint.to_text(), signer)


def open_checkpoint(
    note: bytes, verifiers: Iterable[Verifier], *, origin: str | None = None
) -> Checkpoint:
    """Verify a signed checkpoint note and parse its body.

    Raises NoteError when the note is malformed or no known key verifies it, and
    CheckpointError when the body is malformed or its origin is not ``origin``.
    """
    checkpoint = Checkpoint.from_text(open_note(note, verifiers).text)
    if origin is not None and checkpoint.origin != origin:
        raise CheckpointError(
            f"checkpoint origin {checkpoint.origin!r} is not the expected {origin!r}"
        )

    return checkpoint


def _check_line(what: str, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise CheckpointError(f"checkpoint {what} must be a non-empty string")
    if _CONTROL.search(value):
        raise CheckpointError(f"checkpoint {what} holds a newline or control character")


def _parse_size(line: str) -> int:
    # C2SP tlog-checkpoint: ASCII decimal, no leading zeros unless the tree is empty.
    if not _SIZE.fullmatch(line):
        raise CheckpointError(
            f"checkpoint size {line[:40]!r} is not a canonical decimal"
        )
    # Checking the length first keeps int() away from huge digit strings.
    if len(line) > len(str(MAX_SIZE)) or int(line) > MAX_SIZE:
        raise CheckpointError(f"checkpoint size {line[:40]} does not fit in 64 bits")

    return int(line)


def _parse_root(line: str) -> bytes:
    try:
        root = decode_base64(line)
    except ValueError as exc:
        raise CheckpointError(f"checkpoint root hash is {exc}") from exc
    if len(root) != ROOT_SIZE:
        raise CheckpointError(
            f"checkpoint root hash is {len(root)} bytes, expected {ROOT_SIZE}"
        )

    return root
