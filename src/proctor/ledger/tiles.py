"""C2SP tlog-tiles on disk: export the ledger as a checkpoint, hash tiles and entry
bundles, read them back, and verify them offline against a signed checkpoint.
"""

from __future__ import annotations

import functools
import itertools
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from proctor.errors import CheckpointError, EntryError, LedgerError, VerifyError
from proctor.ledger import merkle
from proctor.ledger.checkpoint import Checkpoint, open_checkpoint
from proctor.ledger.note import Verifier, parse_note

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
"""C2SP tlog-tiles §Merkle Tree: a full tile holds 256 hashes, a bundle 256 entries."""

HASH_SIZE = merkle.HASH_SIZE
MAX_ENTRY_SIZE = 0xFFFF
"""C2SP tlog-tiles §Log entries: each entry carries a big-endian uint16 length."""

CHECKPOINT = "checkpoint"


def index_path(index: int) -> str:
    """Return a tile index as 3-digit path elements, all but the last with an ``x``.

    C2SP tlog-tiles §Merkle Tree: 1234067 is ``x001/x234/067``. Raises LedgerError
    for a negative index.
    """
    if index < 0:
        raise LedgerError(f"tile index {index} is negative")
    digits = str(index)
    digits = digits.zfill(-(-len(digits) // 3) * 3)
    groups = [digits[at : at + 3] for at in range(0, len(digits), 3)]

    return "/".join([*(f"x{group}" for group in groups[:-1]), groups[-1]])


def tile_path(level: int, index: int, width: int = TILE_WIDTH) -> str:
    """Return ``tile/<L>/<N>``, with ``.p/<W>`` for a partial tile of ``width``.

    Raises LedgerError for a negative level or a width outside 1..256.
    """
    if level < 0:
        raise LedgerError(f"tile level {level} is negative")
    return f"tile/{level}/{index_path(index)}{_partial(width)}"


def bundle_path(index: int, width: int = TILE_WIDTH) -> str:
    """Return ``tile/entries/<N>``, with ``.p/<W>`` for a partial bundle.

    Raises LedgerError for a negative index or a width outside 1..256.
    """
    return f"tile/entries/{index_path(index)}{_partial(width)}"


def tile_counts(size: int) -> list[tuple[int, int]]:
    """Return per level, from 0 up, the full tiles and the partial width (0: none).

    C2SP tlog-tiles §Partial Tiles: level ``l`` of a tree of ``size`` leaves has
    ``size // 256**l`` hashes; levels without a hash are left out.
    """
    counts: list[tuple[int, int]] = []
    hashes = size
    while hashes > 0:
        counts.append(divmod(hashes, TILE_WIDTH))
        hashes //= TILE_WIDTH

    return counts


def encode_bundle(entries: Iterable[bytes]) -> bytes:
    """Return an entry bundle: each entry as uint16 big-endian length || entry.

    Raises EntryError when an entry is longer than 65535 bytes.
    """
    parts: list[bytes] = []
    for entry in entries:
        if len(entry) > MAX_ENTRY_SIZE:
            raise EntryError(
                f"entry of {len(entry)} bytes does not fit a bundle's uint16 length"
            )
        parts += (len(entry).to_bytes(2), entry)

    return b"".join(parts)


def export_tiles(
    directory: str | os.PathLike[str],
    entries: Iterable[bytes],
    checkpoint_note: bytes,
    size: int | None = None,
) -> Checkpoint:
    """Write a checkpoint's log under ``directory`` as C2SP tlog-tiles.

    Streams the first ``size`` entries (the checkpoint's size when None) into entry
    bundles and hash tiles at every level, holding at most one tile per level, then
    writes the ``checkpoint`` file last. The note's signatures are not verified
    here, only its form. Returns the checkpoint.

    Raises NoteError or CheckpointError when the note is malformed, ``size``
    differs from it, the entries run out, or their root is not the checkpoint's;
    EntryError for an entry too long for a bundle; LedgerError when a file cannot
    be written.
    """
    checkpoint = Checkpoint.from_text(parse_note(checkpoint_note)[0])
    if size is not None and size != checkpoint.size:
        raise CheckpointError(
            f"export of {size} entries asked with a checkpoint at size "
            f"{checkpoint.size}"
        )
    writer = _TileWriter(Path(directory))
    for entry in itertools.islice(entries, checkpoint.size):
        writer.append(entry)
    if writer.size != checkpoint.size:
        raise CheckpointError(
            f"the log ran out after {writer.size} entries; the checkpoint covers "
            f"{checkpoint.size}"
        )
    writer.finish()

    if writer.root() != checkpoint.root:
        raise CheckpointError(
            f"the root of the {checkpoint.size} exported entries does not match "
            "the checkpoint"
        )
    writer.write(CHECKPOINT, checkpoint_note)

    return checkpoint


class TileReader:
    """Read a tlog-tiles directory: the checkpoint, hash tiles and entry bundles.

    Every read checks the file's exact length or entry count against its width;
    a missing partial tile or bundle falls back to the full one or a wider partial
    one. Reads raise VerifyError naming the file and the first entry it covers.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def checkpoint(self) -> bytes:
        """Return the signed checkpoint note as stored, unverified."""
        return self._read(CHECKPOINT, None)

    def tile(self, level: int, index: int, width: int = TILE_WIDTH) -> bytes:
        """Return the concatenated hashes of one tile of ``width`` hashes."""
        start = index << (TILE_HEIGHT * (level + 1))
        path, data, found = self._read_covering(
            functools.partial(tile_path, level, index), width, start
        )
        if len(data) != found * HASH_SIZE:
            raise VerifyError(
                f"{path} holds {len(data)} bytes, expected {found * HASH_SIZE}",
                index=start,
            )

        return data[: width * HASH_SIZE]

    def bundle(self, index: int, width: int = TILE_WIDTH) -> list[bytes]:
        """Return the ``width`` entries of one entry bundle."""
        start = index << TILE_HEIGHT
        path, data, found = self._read_covering(
            functools.partial(bundle_path, index), width, start
        )

        return _split_bundle(data, found, start, path)[:width]

    def hashes(self, level: int, size: int) -> Iterator[bytes]:
        """Yield the hashes at tile level ``level`` of a tree of ``size`` leaves."""
        count = size >> (TILE_HEIGHT * level)
        for index, width in _tiles(count):
            data = self.tile(level, index, width)
            for offset in range(0, len(data), HASH_SIZE):
                yield data[offset : offset + HASH_SIZE]

    def entries(self, size: int) -> Iterator[bytes]:
        """Yield the first ``size`` entries, one bundle in memory at a time."""
        for index, width in _tiles(size):
            yield from self.bundle(index, width)

    def _read_covering(
        self, path_of: Callable[[int], str], width: int, start: int
    ) -> tuple[str, bytes, int]:
        # C2SP tlog-tiles §Partial Tiles: a tile of W hashes is a prefix of every
        # wider tile of the same index, and a log may delete a partial tile once
        # the full one exists; so read the exact, the full or a wider partial one.
        for found in (width, TILE_WIDTH, *range(width + 1, TILE_WIDTH)):
            path = path_of(found)
            if (self.directory / path).is_file():
                return path, self._read(path, start), found

        return path_of(width), self._read(path_of(width), start), width

    def _read(self, relative: str, start: int | None) -> bytes:
        try:
            return (self.directory / relative).read_bytes()
        except FileNotFoundError as exc:
            raise VerifyError(f"missing {relative}", index=start) from exc
        except OSError as exc:
            raise VerifyError(
                f"cannot read {relative}: {exc.strerror}", index=start
            ) from exc


def verify_tiles(
    directory: str | os.PathLike[str],
    verifiers: Iterable[Verifier],
    *,
    checkpoint: bytes | None = None,
    origin: str | None = None,
) -> Checkpoint:
    """Verify a tlog-tiles directory against its signed checkpoint, streaming.

    Opens the checkpoint (the ``checkpoint`` file, or the note given) with
    ``verifiers``; hashes every entry of the bundles and compares it with tile/0;
    compares each completed 256**L subtree with its hash in tile/L; and compares
    the recomputed root with the checkpoint's. Returns the checkpoint.

    Raises NoteError or CheckpointError when the checkpoint does not open, and
    VerifyError naming the first failing entry (``index``) or the checkpoint
    (``checkpoint``) otherwise.
    """
    reader = TileReader(directory)
    note = reader.checkpoint() if checkpoint is None else checkpoint
    opened = open_checkpoint(note, verifiers, origin=origin)

    size = opened.size
    upper = {
        level: reader.hashes(level, size) for level in range(1, len(tile_counts(size)))
    }
    edge = merkle.CompactRange()
    pairs = zip(reader.entries(size), reader.hashes(0, size), strict=True)
    for index, (entry, stored) in enumerate(pairs):
        leaf = merkle.leaf_hash(entry)
        if leaf != stored:
            raise VerifyError(
                f"entry {index} does not match its leaf hash in tile/0", index=index
            )
        for level, node, digest in edge.append(leaf):
            if level and level % TILE_HEIGHT == 0:
                _check_upper(
                    upper[level // TILE_HEIGHT], level // TILE_HEIGHT, node, digest
                )

    if edge.root() != opened.root:
        raise VerifyError(
            f"the root of the {size} entries does not match the checkpoint",
            checkpoint=size,
        )

    return opened


class _TileWriter:
    """Hash tiles and bundles under construction: one buffer per level at most."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._edge = merkle.CompactRange()
        self._bundle: list[bytes] = []
        self._tiles: list[list[bytes]] = []
        self._counts: list[int] = []

    @property
    def size(self) -> int:
        return self._edge.size

    def root(self) -> bytes:
        return self._edge.root()

    def append(self, entry: bytes) -> None:
        if len(entry) > MAX_ENTRY_SIZE:
            raise EntryError(
                f"entry {self.size} is {len(entry)} bytes; a bundle holds at most "
                f"{MAX_ENTRY_SIZE}"
            )
        self._bundle.append(entry)
        # A tile at level L holds the subtrees of height 8 * L that the tree completes.
        for level, _, digest in self._edge.append(merkle.leaf_hash(entry)):
            if level % TILE_HEIGHT == 0:
                self._add_hash(level // TILE_HEIGHT, digest)
        if len(self._bundle) == TILE_WIDTH:
            index = (self.size - 1) >> TILE_HEIGHT
            self.write(bundle_path(index), encode_bundle(self._bundle))
            self._bundle.clear()

    def finish(self) -> None:
        if self._bundle:
            index = self.size >> TILE_HEIGHT
            width = len(self._bundle)
            self.write(bundle_path(index, width), encode_bundle(self._bundle))
        for level, tile in enumerate(self._tiles):
            if tile:
                index = self._counts[level] >> TILE_HEIGHT
                self.write(tile_path(level, index, len(tile)), b"".join(tile))

    def write(self, relative: str, data: bytes) -> None:
        path = self._directory / relative
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write aside, then rename: a reader never sees half a tile or checkpoint.
            with tempfile.NamedTemporaryFile(
                dir=path.parent, prefix=f".{path.name}.", delete=False
            ) as handle:
                handle.write(data)
            try:
                os.replace(handle.name, path)
            except OSError:
                os.unlink(handle.name)
                raise
        except OSError as exc:
            raise LedgerError(f"cannot write {relative}: {exc.strerror}") from exc

    def _add_hash(self, level: int, digest: bytes) -> None:
        if level == len(self._tiles):
            self._tiles.append([])
            self._counts.append(0)
        tile = self._tiles[level]
        tile.append(digest)
        self._counts[level] += 1
        if len(tile) == TILE_WIDTH:
            index = (self._counts[level] - 1) >> TILE_HEIGHT
            self.write(tile_path(level, index), b"".join(tile))
            tile.clear()


def _partial(width: int) -> str:
    if not 1 <= width <= TILE_WIDTH:
        raise LedgerError(f"tile width {width} is outside 1..{TILE_WIDTH}")
    return "" if width == TILE_WIDTH else f".p/{width}"


def _tiles(count: int) -> Iterator[tuple[int, int]]:
    # The tiles holding ``count`` hashes or entries: full ones, then one partial.
    full, rest = divmod(count, TILE_WIDTH)
    for index in range(full):
        yield index, TILE_WIDTH
    if rest:
        yield full, rest


def _split_bundle(data: bytes, count: int, start: int, path: str) -> list[bytes]:
    entries: list[bytes] = []
    offset = 0
    for number in range(start, start + count):
        length = int.from_bytes(data[offset : offset + 2])
        end = offset + 2 + length
        if end > len(data):
            raise VerifyError(f"{path} is truncated in entry {number}", index=number)
        entries.append(data[offset + 2 : end])
        offset = end
    if offset != len(data):
        raise VerifyError(
            f"{path} has {len(data) - offset} bytes after its {count} entries",
            index=start + count - 1,
        )

    return entries


def _check_upper(stored: Iterator[bytes], level: int, node: int, digest: bytes) -> None:
    first = node << (TILE_HEIGHT * level)
    if next(stored, None) != digest:
        last = first + (1 << (TILE_HEIGHT * level)) - 1
        raise VerifyError(
            f"hash {node} in tile/{level} does not match entries {first}..{last}",
            index=first,
        )
