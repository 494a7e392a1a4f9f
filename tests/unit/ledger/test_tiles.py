"""Tests for tlog-tiles: paths, the real tessera log, export round trips, tampering."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from proctor.errors import (
    CheckpointError,
    EntryError,
    LedgerError,
    NoteError,
    VerifyError,
)
from proctor.ledger.checkpoint import Checkpoint, sign_checkpoint
from proctor.ledger.note import Signer, Verifier
from proctor.ledger.tiles import (
    TileReader,
    bundle_path,
    encode_bundle,
    export_tiles,
    index_path,
    tile_counts,
    tile_path,
    verify_tiles,
)

TESSERA = "example.com/log/testdata"
TESSERA_ENTRIES = (
    b"one", b"two", b"three", b"four", b"five", b"six", b"seven", b"eit", b"nain",
    b"ten", b"ileven", b"twelf", b"threeten", b"fourten", b"fivten",
)  # fmt: skip
TESSERA_SIZES = range(16)
ORIGIN = "example.com/tiles"
BIG = 256 * 256 + 3


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _leaf(entry: bytes) -> bytes:
    return _sha(b"\x00" + entry)


def _mth(hashes: Sequence[bytes]) -> bytes:
    """RFC 9162 §2.1.1 MTH over leaf hashes, written here apart from the module."""
    if not hashes:
        return _sha(b"")
    if len(hashes) == 1:
        return hashes[0]
    split = 1 << ((len(hashes) - 1).bit_length() - 1)

    return _sha(b"\x01" + _mth(hashes[:split]) + _mth(hashes[split:]))


def _entries(count: int) -> list[bytes]:
    return [b"entry %d" % index for index in range(count)]


def _files(directory: Path) -> set[str]:
    return {
        path.relative_to(directory).as_posix()
        for path in directory.rglob("*")
        if path.is_file()
    }


def _copy_tree(source: Path, target: Path) -> Path:
    # Copy bytes only: the vectors are read-only and the copy must be writable.
    for path in source.rglob("*"):
        if path.is_file():
            destination = target / path.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(path.read_bytes())
    return target


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def tessera(vectors: Path) -> Path:
    """The published 15-entry tessera log."""
    return vectors / "tessera-log"


@pytest.fixture(scope="module")
def tessera_verifier(vectors: Path) -> Verifier:
    """The tessera log's published verifier key."""
    keys = json.loads((vectors / "notes" / "keys.json").read_text(encoding="utf-8"))
    vkey = next(key["vkey"] for key in keys["keys"] if key["name"] == TESSERA)
    return Verifier.from_key_string(vkey)


@pytest.fixture(scope="module")
def signer() -> Signer:
    """The key of the logs exported here."""
    return Signer.generate(ORIGIN)


def _export(
    directory: Path, signer: Signer, count: int, leaves: Sequence[bytes] = ()
) -> bytes:
    entries = _entries(count)
    root = _mth(leaves or [_leaf(entry) for entry in entries])
    note = sign_checkpoint(Checkpoint(ORIGIN, count, root), signer)
    export_tiles(directory, iter(entries), note)
    return note


@pytest.fixture
def small(tmp_path: Path, signer: Signer) -> Path:
    """A fresh export of 1000 entries: three full tiles and a partial one."""
    _export(tmp_path, signer, 1000)
    return tmp_path


@pytest.fixture(scope="module")
def big_leaves() -> list[bytes]:
    """The leaf hashes of the big log, computed here."""
    return [_leaf(entry) for entry in _entries(BIG)]


@pytest.fixture(scope="module")
def big(
    tmp_path_factory: pytest.TempPathFactory, signer: Signer, big_leaves: list[bytes]
) -> Path:
    """One export of 256 * 256 + 3 entries: three tile levels."""
    directory = tmp_path_factory.mktemp("big")
    _export(directory, signer, BIG, big_leaves)
    return directory


class TestPaths:
    """Tile and bundle paths follow C2SP tlog-tiles."""

    def test_spec_example(self, vectors: Path) -> None:
        """Index 1234067 is x001/x234/067, as in the spec."""
        examples = json.loads(
            (vectors / "notes" / "c2sp_parse_examples.json").read_text("utf-8")
        )
        paths = next(
            case for case in examples["cases"] if case["id"] == "tlog-tiles-paths"
        )
        first = paths["cases"][0]
        assert index_path(first["index"]) == first["path_component"]

    @pytest.mark.parametrize(
        ("index", "path"),
        [
            (0, "000"),
            (7, "007"),
            (999, "999"),
            (1000, "x001/000"),
            (10**6, "x001/x000/000"),
        ],
    )
    def test_groups_of_three(self, index: int, path: str) -> None:
        """Every group but the last starts with x; all are three digits."""
        assert index_path(index) == path

    def test_full_and_partial(self) -> None:
        """A full tile has no suffix; a partial one ends in .p/<width>."""
        assert tile_path(0, 5) == "tile/0/005"
        assert tile_path(2, 1234067, 17) == "tile/2/x001/x234/067.p/17"
        assert bundle_path(0, 15) == "tile/entries/000.p/15"
        assert bundle_path(1000) == "tile/entries/x001/000"

    @pytest.mark.parametrize("width", [0, 257, -1])
    def test_width_out_of_range(self, width: int) -> None:
        """Widths are 1..256."""
        with pytest.raises(LedgerError, match=r"outside 1\.\.256"):
            tile_path(0, 0, width)

    def test_negative_index_and_level(self) -> None:
        """Indexes and levels are not negative."""
        with pytest.raises(LedgerError, match="index -1 is negative"):
            bundle_path(-1)
        with pytest.raises(LedgerError, match="level -1 is negative"):
            tile_path(-1, 0)


class TestTileCounts:
    """The tiles of a tree size match the spec's examples."""

    def test_spec_examples(self, vectors: Path) -> None:
        """70,000 and 256 leaves give the tiles the spec lists."""
        examples = json.loads(
            (vectors / "notes" / "c2sp_parse_examples.json").read_text("utf-8")
        )
        paths = next(
            case for case in examples["cases"] if case["id"] == "tlog-tiles-paths"
        )
        for case in paths["cases"][1:]:
            tiles = case["tiles"]
            counts = tile_counts(case["tree_size"])
            for level, (full, partial) in enumerate(counts):
                assert full == tiles.get(f"level{level}_full", 0)
                assert partial == tiles.get(f"level{level}_partial_width", 0)
            assert len(counts) == 1 + max(int(key[5]) for key in tiles)

    def test_empty_tree(self) -> None:
        """An empty tree has no tiles."""
        assert tile_counts(0) == []


class TestBundles:
    """Bundles are uint16 length-prefixed entries."""

    def test_encoding(self, tessera: Path) -> None:
        """Encoding the first five entries gives tessera's bundle byte for byte."""
        published = (tessera / "tile/entries/000.p/5").read_bytes()
        assert encode_bundle(TESSERA_ENTRIES[:5]) == published

    def test_longest_entry(self) -> None:
        """An entry of 65535 bytes fits; 65536 does not."""
        assert encode_bundle([bytes(65535)])[:2] == b"\xff\xff"
        with pytest.raises(EntryError, match="65536 bytes does not fit"):
            encode_bundle([bytes(65536)])


class TestTesseraLog:
    """The real tessera log verifies at every published checkpoint."""

    @pytest.mark.parametrize("size", TESSERA_SIZES)
    def test_every_checkpoint(
        self, tessera: Path, tessera_verifier: Verifier, size: int
    ) -> None:
        """verify_tiles accepts the log at checkpoint.N given as an override."""
        note = (tessera / f"checkpoint.{size}").read_bytes()
        checkpoint = verify_tiles(tessera, [tessera_verifier], checkpoint=note)
        assert (checkpoint.origin, checkpoint.size) == (TESSERA, size)

    @pytest.mark.parametrize("size", TESSERA_SIZES)
    def test_every_checkpoint_as_the_checkpoint_file(
        self, tessera: Path, tessera_verifier: Verifier, tmp_path: Path, size: int
    ) -> None:
        """A copy whose checkpoint file is checkpoint.N verifies at size N."""
        copy = _copy_tree(tessera, tmp_path / "log")
        (copy / "checkpoint").write_bytes((copy / f"checkpoint.{size}").read_bytes())
        assert verify_tiles(copy, [tessera_verifier], origin=TESSERA).size == size

    def test_latest_checkpoint_file(
        self, tessera: Path, tessera_verifier: Verifier
    ) -> None:
        """The directory's own checkpoint is at size 15."""
        assert verify_tiles(tessera, [tessera_verifier]).size == 15

    def test_entries_and_hashes(self, tessera: Path) -> None:
        """The reader returns the entries and their leaf hashes in order."""
        reader = TileReader(tessera)
        assert tuple(reader.entries(15)) == TESSERA_ENTRIES
        assert list(reader.hashes(0, 15)) == [_leaf(e) for e in TESSERA_ENTRIES]
        assert list(reader.entries(0)) == []

    def test_export_reproduces_the_log(self, tessera: Path, tmp_path: Path) -> None:
        """Exporting under checkpoint.15 rebuilds the published files byte for byte."""
        note = (tessera / "checkpoint.15").read_bytes()
        checkpoint = export_tiles(tmp_path, iter(TESSERA_ENTRIES), note)
        assert checkpoint.size == 15
        assert _files(tmp_path) == {
            "checkpoint",
            "tile/0/000.p/15",
            "tile/entries/000.p/15",
        }
        for name in _files(tmp_path):
            assert (tmp_path / name).read_bytes() == (tessera / name).read_bytes()

    def test_changed_entry(
        self, tessera: Path, tessera_verifier: Verifier, tmp_path: Path
    ) -> None:
        """A changed byte in the last entry of the bundle names entry 14."""
        copy = _copy_tree(tessera, tmp_path / "log")
        bundle = copy / "tile/entries/000.p/15"
        _flip(bundle, bundle.stat().st_size - 1)
        with pytest.raises(VerifyError, match="entry 14 does not match") as caught:
            verify_tiles(copy, [tessera_verifier])
        assert caught.value.index == 14


class TestRoundTrip:
    """Exported logs have the spec's files and verify after re-reading."""

    def test_small_layout(self, small: Path) -> None:
        """1000 entries: three full tiles and bundles, partial 232, level 1 width 3."""
        assert _files(small) == {
            "checkpoint",
            *(f"tile/0/00{n}" for n in range(3)),
            "tile/0/003.p/232",
            *(f"tile/entries/00{n}" for n in range(3)),
            "tile/entries/003.p/232",
            "tile/1/000.p/3",
        }

    def test_small_level_one_hashes(self, small: Path) -> None:
        """Each level-1 hash is the MTH of one full level-0 tile."""
        leaves = [_leaf(entry) for entry in _entries(1000)]
        level_one = (small / "tile/1/000.p/3").read_bytes()
        expected = [_mth(leaves[n * 256 : (n + 1) * 256]) for n in range(3)]
        assert level_one == b"".join(expected)
        assert (small / "tile/0/003.p/232").read_bytes() == b"".join(leaves[768:])

    def test_small_verifies(self, small: Path, signer: Signer) -> None:
        """The export verifies and reads back its entries."""
        checkpoint = verify_tiles(small, [signer.verifier()], origin=ORIGIN)
        assert checkpoint.size == 1000
        assert list(TileReader(small).entries(1000)) == _entries(1000)

    def test_big_layout(self, big: Path) -> None:
        """256*256+3 entries: 256 full tiles, partial 3, full level 1, level 2 of 1."""
        files = _files(big)
        assert len([f for f in files if f.startswith("tile/0/")]) == 257
        assert len([f for f in files if f.startswith("tile/entries/")]) == 257
        assert {"tile/0/255", "tile/0/256.p/3", "tile/entries/256.p/3"} <= files
        assert {f for f in files if f.startswith(("tile/1/", "tile/2/"))} == {
            "tile/1/000",
            "tile/2/000.p/1",
        }

    def test_big_upper_levels(self, big: Path, big_leaves: list[bytes]) -> None:
        """Level 1 holds the 256 subtree roots; level 2 the root of the first 65536."""
        level_one = [_mth(big_leaves[n * 256 : (n + 1) * 256]) for n in range(256)]
        assert (big / "tile/1/000").read_bytes() == b"".join(level_one)
        # A perfect tree's root is the MTH of its equal subtrees' roots.
        assert (big / "tile/2/000.p/1").read_bytes() == _mth(level_one)
        assert (big / "tile/0/256.p/3").read_bytes() == b"".join(big_leaves[-3:])

    def test_big_verifies(self, big: Path, signer: Signer) -> None:
        """The big export verifies."""
        assert verify_tiles(big, [signer.verifier()]).size == BIG

    def test_reader_tile_widths(self, big: Path) -> None:
        """The reader yields exactly size // 256**L hashes at level L."""
        reader = TileReader(big)
        assert sum(1 for _ in reader.hashes(1, BIG)) == 256
        assert list(reader.hashes(2, BIG)) == [(big / "tile/2/000.p/1").read_bytes()]
        assert list(reader.hashes(3, BIG)) == []

    def test_empty_log(self, tmp_path: Path, signer: Signer) -> None:
        """An empty log is only its checkpoint, and verifies."""
        _export(tmp_path, signer, 0)
        assert _files(tmp_path) == {"checkpoint"}
        assert verify_tiles(tmp_path, [signer.verifier()]).size == 0

    def test_exactly_one_full_tile(self, tmp_path: Path, signer: Signer) -> None:
        """256 entries: one full tile and a level-1 partial tile of width 1."""
        _export(tmp_path, signer, 256)
        assert _files(tmp_path) == {
            "checkpoint",
            "tile/0/000",
            "tile/entries/000",
            "tile/1/000.p/1",
        }
        assert verify_tiles(tmp_path, [signer.verifier()]).size == 256

    def test_partial_falls_back_to_full(self, tmp_path: Path, signer: Signer) -> None:
        """An older checkpoint verifies from full or wider tiles without its own."""
        _export(tmp_path, signer, 512)
        leaves = [_leaf(entry) for entry in _entries(300)]
        older = sign_checkpoint(Checkpoint(ORIGIN, 300, _mth(leaves)), signer)
        assert not (tmp_path / "tile/0/001.p/44").exists()
        assert not (tmp_path / "tile/1/000.p/1").exists()
        assert (tmp_path / "tile/1/000.p/2").exists()
        assert verify_tiles(tmp_path, [signer.verifier()], checkpoint=older).size == 300
        assert list(TileReader(tmp_path).entries(300)) == _entries(300)

    def test_streams_any_iterable(self, tmp_path: Path, signer: Signer) -> None:
        """Entries may come from a generator longer than the checkpoint."""

        def endless() -> Iterator[bytes]:
            index = 0
            while True:
                yield b"entry %d" % index
                index += 1

        leaves = [_leaf(entry) for entry in _entries(300)]
        note = sign_checkpoint(Checkpoint(ORIGIN, 300, _mth(leaves)), signer)
        assert export_tiles(tmp_path, endless(), note, 300).size == 300
        assert verify_tiles(tmp_path, [signer.verifier()]).size == 300


class TestExportRefusals:
    """An export that would not match its checkpoint writes no checkpoint."""

    def test_entries_run_out(self, tmp_path: Path, signer: Signer) -> None:
        """Fewer entries than the checkpoint's size are refused."""
        note = sign_checkpoint(Checkpoint(ORIGIN, 10, bytes(32)), signer)
        with pytest.raises(CheckpointError, match="ran out after 9 entries"):
            export_tiles(tmp_path, iter(_entries(9)), note)
        assert not (tmp_path / "checkpoint").exists()

    def test_wrong_root(self, tmp_path: Path, signer: Signer) -> None:
        """Entries whose root is not the checkpoint's are refused."""
        note = sign_checkpoint(Checkpoint(ORIGIN, 10, bytes(32)), signer)
        with pytest.raises(CheckpointError, match="does not match the checkpoint"):
            export_tiles(tmp_path, iter(_entries(10)), note)
        assert not (tmp_path / "checkpoint").exists()

    def test_size_differs(self, tmp_path: Path, signer: Signer) -> None:
        """An explicit size must be the checkpoint's."""
        note = sign_checkpoint(Checkpoint(ORIGIN, 10, bytes(32)), signer)
        with pytest.raises(CheckpointError, match="export of 9 entries"):
            export_tiles(tmp_path, iter(_entries(10)), note, 9)

    def test_entry_too_long(self, tmp_path: Path, signer: Signer) -> None:
        """An entry beyond a uint16 length is refused, naming it."""
        note = sign_checkpoint(Checkpoint(ORIGIN, 2, bytes(32)), signer)
        with pytest.raises(EntryError, match="entry 1 is 65536 bytes"):
            export_tiles(tmp_path, iter([b"a", bytes(65536)]), note)

    def test_malformed_note(self, tmp_path: Path) -> None:
        """The checkpoint must be a well-formed note."""
        with pytest.raises(NoteError, match="no blank line"):
            export_tiles(tmp_path, iter([]), b"example.com/tiles\n0\n")

    def test_unwritable_directory(self, tmp_path: Path, signer: Signer) -> None:
        """A file where a folder must go is reported as a ledger error."""
        (tmp_path / "tile").write_bytes(b"in the way")
        with pytest.raises(LedgerError, match="cannot write tile/"):
            _export(tmp_path, signer, 300)

    def test_checkpoint_path_taken(self, tmp_path: Path, signer: Signer) -> None:
        """A folder named checkpoint stops the export and leaves no temporary file."""
        (tmp_path / "checkpoint").mkdir()
        with pytest.raises(LedgerError, match="cannot write checkpoint"):
            _export(tmp_path, signer, 3)
        assert _files(tmp_path) == {"tile/0/000.p/3", "tile/entries/000.p/3"}


class TestTampering:
    """Every change to an exported log is found and named."""

    def test_changed_bundle_byte(self, small: Path, signer: Signer) -> None:
        """A changed byte in a bundle names its entry."""
        _flip(small / "tile/entries/001", 2)
        with pytest.raises(VerifyError, match="entry 256 does not match") as caught:
            verify_tiles(small, [signer.verifier()])
        assert caught.value.index == 256

    def test_changed_leaf_hash(self, small: Path, signer: Signer) -> None:
        """A changed hash in tile/0 names its entry."""
        _flip(small / "tile/0/002", 32 * 10 + 5)
        with pytest.raises(VerifyError, match="entry 522 does not match") as caught:
            verify_tiles(small, [signer.verifier()])
        assert caught.value.index == 522

    def test_changed_level_one_hash(self, small: Path, signer: Signer) -> None:
        """A changed hash in tile/1 names the first entry of its subtree."""
        _flip(small / "tile/1/000.p/3", 32 + 1)
        with pytest.raises(
            VerifyError, match=r"hash 1 in tile/1 .* 256\.\.511"
        ) as caught:
            verify_tiles(small, [signer.verifier()])
        assert caught.value.index == 256

    def test_truncated_bundle(self, small: Path, signer: Signer) -> None:
        """A bundle cut short names the entry it cuts."""
        bundle = small / "tile/entries/003.p/232"
        bundle.write_bytes(bundle.read_bytes()[:-1])
        with pytest.raises(VerifyError, match="truncated in entry 999") as caught:
            verify_tiles(small, [signer.verifier()])
        assert caught.value.index == 999

    def test_bundle_with_extra_bytes(self, small: Path, signer: Signer) -> None:
        """Bytes after a bundle's last entry are refused."""
        bundle = small / "tile/entries/000"
        bundle.write_bytes(bundle.read_bytes() + b"\x00")
        with pytest.raises(VerifyError, match="1 bytes after its 256 entries"):
            verify_tiles(small, [signer.verifier()])

    def test_short_tile(self, small: Path, signer: Signer) -> None:
        """A tile of the wrong length is refused."""
        tile = small / "tile/0/001"
        tile.write_bytes(tile.read_bytes()[:-32])
        with pytest.raises(
            VerifyError, match="holds 8160 bytes, expected 8192"
        ) as caught:
            verify_tiles(small, [signer.verifier()])
        assert caught.value.index == 256

    def test_missing_bundle(self, small: Path, signer: Signer) -> None:
        """A missing bundle is named."""
        (small / "tile/entries/002").unlink()
        with pytest.raises(VerifyError, match="missing tile/entries/002") as caught:
            verify_tiles(small, [signer.verifier()])
        assert caught.value.index == 512

    def test_unreadable_bundle(self, small: Path, signer: Signer) -> None:
        """A bundle that cannot be read is named."""
        (small / "tile/entries/001").unlink()
        (small / "tile/entries/001").mkdir()
        with pytest.raises(VerifyError, match="cannot read tile/entries/001"):
            verify_tiles(small, [signer.verifier()])

    def test_missing_checkpoint(self, small: Path, signer: Signer) -> None:
        """A directory without its checkpoint is refused."""
        (small / "checkpoint").unlink()
        with pytest.raises(VerifyError, match="missing checkpoint"):
            verify_tiles(small, [signer.verifier()])

    def test_checkpoint_by_another_key(self, small: Path) -> None:
        """A checkpoint signed by another key does not open."""
        other = Signer.generate(ORIGIN)
        leaves = [_leaf(entry) for entry in _entries(1000)]
        note = sign_checkpoint(Checkpoint(ORIGIN, 1000, _mth(leaves)), other)
        (small / "checkpoint").write_bytes(note)
        with pytest.raises(NoteError, match="no verified signature"):
            verify_tiles(small, [Signer.generate(ORIGIN).verifier()])
        with pytest.raises(NoteError, match="no verified signature"):
            verify_tiles(small, [Signer.generate("example.com/x").verifier()])

    def test_checkpoint_with_another_root(self, small: Path, signer: Signer) -> None:
        """A validly signed checkpoint whose root differs names the checkpoint."""
        note = sign_checkpoint(Checkpoint(ORIGIN, 1000, bytes(32)), signer)
        with pytest.raises(VerifyError, match="root of the 1000 entries") as caught:
            verify_tiles(small, [signer.verifier()], checkpoint=note)
        assert caught.value.checkpoint == 1000

    def test_checkpoint_of_another_origin(self, small: Path, signer: Signer) -> None:
        """The expected origin is enforced."""
        with pytest.raises(CheckpointError, match="is not the expected"):
            verify_tiles(small, [signer.verifier()], origin="example.com/else")

    def test_entry_and_leaf_changed_together(self, small: Path, signer: Signer) -> None:
        """Changing an entry and its leaf hash together fails at the tile/1 hash."""
        _rewrite_first_entry(small)
        with pytest.raises(VerifyError, match=r"hash 0 in tile/1 .* 0\.\.255"):
            verify_tiles(small, [signer.verifier()])

    def test_entry_and_leaf_changed_below_one_tile(
        self, tmp_path: Path, signer: Signer
    ) -> None:
        """Without a tile/1 to catch it, the root does."""
        _export(tmp_path, signer, 100)
        _rewrite_first_entry(tmp_path)
        with pytest.raises(VerifyError, match="root of the 100 entries") as caught:
            verify_tiles(tmp_path, [signer.verifier()])
        assert caught.value.checkpoint == 100


def _rewrite_first_entry(directory: Path) -> None:
    # Replace entry 0 by another of the same length, and its leaf hash with it.
    bundle = next((directory / "tile/entries").glob("000*"))
    bundle = bundle if bundle.is_file() else next(bundle.iterdir())
    data = bytearray(bundle.read_bytes())
    data[2:9] = b"ENTRY 0"
    bundle.write_bytes(bytes(data))
    tile = next((directory / "tile/0").glob("000*"))
    tile = tile if tile.is_file() else next(tile.iterdir())
    tile.write_bytes(_leaf(b"ENTRY 0") + tile.read_bytes()[32:])
