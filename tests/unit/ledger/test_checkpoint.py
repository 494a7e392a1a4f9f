"""Tests for checkpoints: the strict body format, signing and opening."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from proctor.errors import CheckpointError, NoteError
from proctor.ledger.checkpoint import (
    MAX_SIZE,
    Checkpoint,
    open_checkpoint,
    sign_checkpoint,
)
from proctor.ledger.note import Signer, Verifier, parse_note, sign_note

ROOT = bytes(range(32))
ROOT_B64 = base64.b64encode(ROOT).decode()
TESSERA_SIZES = range(16)
TESSERA = "example.com/log/testdata"


def _load(vectors: Path, name: str) -> Any:
    return json.loads((vectors / "notes" / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def examples(vectors: Path) -> dict[str, dict[str, Any]]:
    """The C2SP parse-only examples by id."""
    loaded = _load(vectors, "c2sp_parse_examples.json")
    return {case["id"]: case for case in loaded["cases"]}


@pytest.fixture(scope="module")
def tessera_key(vectors: Path) -> dict[str, Any]:
    """The published test key of the tessera log."""
    found: dict[str, Any] = next(
        key for key in _load(vectors, "keys.json")["keys"] if key["name"] == TESSERA
    )
    return found


@pytest.fixture
def signer() -> Signer:
    """A fresh log key."""
    return Signer.generate("example.com/log")


class TestFromText:
    """Published checkpoint bodies parse to their stated fields."""

    @pytest.mark.parametrize("size", TESSERA_SIZES)
    def test_tessera_checkpoints(self, vectors: Path, size: int) -> None:
        """Each tessera checkpoint body parses and prints back unchanged."""
        note = (vectors / "tessera-log" / f"checkpoint.{size}").read_bytes()
        text, _ = parse_note(note)
        checkpoint = Checkpoint.from_text(text)
        assert (checkpoint.origin, checkpoint.size) == (TESSERA, size)
        assert checkpoint.to_text() == text

    def test_c2sp_checkpoint_example(self, examples: dict[str, dict[str, Any]]) -> None:
        """The C2SP tlog-checkpoint example gives its origin, size and root."""
        example = examples["tlog-checkpoint-example"]
        text, _ = parse_note(example["text"].encode())
        checkpoint = Checkpoint.from_text(text)
        want = example["want"]
        assert checkpoint.origin == want["origin"]
        assert checkpoint.size == want["size"]
        assert checkpoint.root == base64.b64decode(want["root_b64"])
        assert checkpoint.extensions == ()

    def test_witness_request_carries_a_signed_checkpoint(
        self, examples: dict[str, dict[str, Any]]
    ) -> None:
        """After the add-checkpoint header, the rest is a signed checkpoint note."""
        example = examples["tlog-witness-add-checkpoint-request"]
        header, _, note = example["text"].encode().partition(b"\n\n")
        old, *proof = header.decode().split("\n")
        text, signatures = parse_note(note)
        checkpoint = Checkpoint.from_text(text)
        assert old == f"old {example['want']['old_size']}"
        assert len(proof) == example["want"]["proof_lines"]
        assert checkpoint.size == example["want"]["checkpoint_size"]
        assert len(signatures) == 2

    def test_tlog_proof_carries_a_checkpoint_body(
        self, examples: dict[str, dict[str, Any]]
    ) -> None:
        """The tlog-proof example ends with a checkpoint body that parses."""
        example = examples["tlog-proof-example-header"]
        header, _, body = example["text"].encode().partition(b"\n\n")
        checkpoint = Checkpoint.from_text(body)
        assert checkpoint.size == example["want"]["checkpoint_size"]
        assert checkpoint.origin == "example.com/fancylog"
        assert f"index {example['want']['index']}" in header.decode()

    def test_extension_lines_are_kept(self) -> None:
        """Lines after the root are extensions, in order."""
        text = f"log\n5\n{ROOT_B64}\nfirst ext\nsecond\n".encode()
        checkpoint = Checkpoint.from_text(text)
        assert checkpoint.extensions == ("first ext", "second")
        assert checkpoint.to_text() == text

    def test_largest_size(self) -> None:
        """The size may be 2**64 - 1."""
        text = f"log\n{MAX_SIZE}\n{ROOT_B64}\n".encode()
        assert Checkpoint.from_text(text).size == MAX_SIZE

    def test_origin_may_differ_from_the_key_name(self) -> None:
        """Any non-empty origin is accepted: the key name only SHOULD match."""
        text = f"go.sum database tree\n0\n{ROOT_B64}\n".encode()
        assert Checkpoint.from_text(text).origin == "go.sum database tree"


class TestStrictness:
    """Anything but the exact format is refused, naming the line."""

    @pytest.mark.parametrize(
        ("size", "reason"),
        [
            ("01", "canonical decimal"),
            ("00", "canonical decimal"),
            ("+1", "canonical decimal"),
            ("-1", "canonical decimal"),
            ("-0", "canonical decimal"),
            (" 1", "canonical decimal"),
            ("1 ", "canonical decimal"),
            ("1.0", "canonical decimal"),
            ("0x10", "canonical decimal"),
            ("1_000", "canonical decimal"),
            ("\u0661", "canonical decimal"),
            ("", "canonical decimal"),
            (str(2**64), "does not fit in 64 bits"),
            ("9" * 5000, "does not fit in 64 bits"),
        ],
    )
    def test_bad_sizes(self, size: str, reason: str) -> None:
        """The size is ASCII decimal without sign or leading zeros, below 2**64."""
        with pytest.raises(CheckpointError, match=reason):
            Checkpoint.from_text(f"log\n{size}\n{ROOT_B64}\n".encode())

    @pytest.mark.parametrize(
        ("root", "reason"),
        [
            (base64.b64encode(bytes(31)).decode(), "31 bytes, expected 32"),
            (base64.b64encode(bytes(33)).decode(), "33 bytes, expected 32"),
            (ROOT_B64.rstrip("="), "not valid base64"),
            (ROOT_B64[:-2] + "B=", "not canonical base64"),
            (" " + ROOT_B64, "not valid base64"),
            ("", "0 bytes, expected 32"),
            (ROOT.hex(), "not valid base64|bytes, expected 32"),
        ],
    )
    def test_bad_roots(self, root: str, reason: str) -> None:
        """The root is canonical base64 of exactly 32 bytes."""
        with pytest.raises(CheckpointError, match=reason):
            Checkpoint.from_text(f"log\n1\n{root}\n".encode())

    @pytest.mark.parametrize(
        ("text", "reason"),
        [
            (f"log\n1\n{ROOT_B64}", "does not end in a newline"),
            ("log\n1\n", "2 lines"),
            ("", "does not end in a newline"),
            (f"\n1\n{ROOT_B64}\n", "origin must be a non-empty"),
            (f"log\n1\n{ROOT_B64}\n\n", "extension line 1 must be a non-empty"),
            (f"log\n1\n{ROOT_B64}\next\n\nmore\n", "extension line 2"),
            (f"l\tog\n1\n{ROOT_B64}\n", "origin holds a newline or control"),
            (f"log\n1\n{ROOT_B64}\ne\rx\n", "extension line 1 holds"),
        ],
    )
    def test_bad_bodies(self, text: str, reason: str) -> None:
        """Lines are non-empty, at least three, and the body ends in a newline."""
        with pytest.raises(CheckpointError, match=reason):
            Checkpoint.from_text(text.encode())

    def test_invalid_utf8(self) -> None:
        """The body is UTF-8."""
        with pytest.raises(CheckpointError, match="not valid utf-8"):
            Checkpoint.from_text(b"l\xffog\n1\n" + ROOT_B64.encode() + b"\n")


class TestConstruction:
    """A Checkpoint value cannot hold a field the format could not carry."""

    @pytest.mark.parametrize(
        ("fields", "reason"),
        [
            (("", 1, ROOT), "origin must be a non-empty"),
            (("a\nb", 1, ROOT), "origin holds a newline"),
            (("log", -1, ROOT), "outside 0 .. 2\\*\\*64 - 1"),
            (("log", 2**64, ROOT), "outside 0 .. 2\\*\\*64 - 1"),
            (("log", True, ROOT), "must be an int"),
            (("log", "1", ROOT), "must be an int"),
            (("log", 1, bytes(31)), "must be 32 bytes"),
            (("log", 1, ROOT, ("",)), "extension line 1 must be a non-empty"),
            (("log", 1, ROOT, ("a", "b\nc")), "extension line 2 holds a newline"),
        ],
    )
    def test_invalid_fields(self, fields: tuple[Any, ...], reason: str) -> None:
        """Bad fields raise at construction."""
        with pytest.raises(CheckpointError, match=reason):
            Checkpoint(*fields)

    def test_extensions_become_a_tuple(self) -> None:
        """A list of extensions is kept as a tuple, so the value stays hashable."""
        checkpoint = Checkpoint("log", 1, ROOT, ["ext"])  # type: ignore[arg-type]
        assert checkpoint.extensions == ("ext",)
        assert hash(checkpoint) == hash(Checkpoint("log", 1, ROOT, ("ext",)))

    def test_to_text(self) -> None:
        """The body is origin, decimal size and base64 root, one per line."""
        text = Checkpoint("example.com/log", 42, ROOT).to_text()
        assert text == f"example.com/log\n42\n{ROOT_B64}\n".encode()


class TestSignAndOpen:
    """Checkpoints travel as signed notes and open only under a known key."""

    def test_round_trip(self, signer: Signer) -> None:
        """A signed checkpoint opens to the same value."""
        checkpoint = Checkpoint("example.com/log", 7, ROOT, ("ext",))
        note = sign_checkpoint(checkpoint, signer)
        assert open_checkpoint(note, [signer.verifier()]) == checkpoint
        assert note.startswith(checkpoint.to_text() + "\n\u2014 ".encode())

    @pytest.mark.parametrize("size", TESSERA_SIZES)
    def test_tessera_checkpoints_byte_for_byte(
        self, vectors: Path, tessera_key: dict[str, Any], size: int
    ) -> None:
        """Re-signing each tessera checkpoint with the test key reproduces the file."""
        published = (vectors / "tessera-log" / f"checkpoint.{size}").read_bytes()
        signer = Signer.from_private_key_string(tessera_key["skey"])
        verifier = Verifier.from_key_string(tessera_key["vkey"])
        checkpoint = open_checkpoint(published, [verifier], origin=TESSERA)
        assert checkpoint.size == size
        assert sign_checkpoint(checkpoint, signer) == published

    def test_expected_origin(self, signer: Signer) -> None:
        """A checkpoint of another log is refused when the origin is given."""
        note = sign_checkpoint(Checkpoint("example.com/other", 1, ROOT), signer)
        with pytest.raises(CheckpointError, match=r"'example\.com/other' is not the"):
            open_checkpoint(note, [signer.verifier()], origin="example.com/log")

    def test_another_key(self, signer: Signer) -> None:
        """A checkpoint signed by another key does not open."""
        note = sign_checkpoint(Checkpoint("example.com/log", 1, ROOT), signer)
        other = Signer.generate("example.com/log")
        with pytest.raises(NoteError, match="no verified signature"):
            open_checkpoint(note, [other.verifier()])

    def test_signed_but_malformed_body(self, signer: Signer) -> None:
        """A validly signed note that is no checkpoint is refused for its body."""
        note = sign_note(b"example.com/log\n01\n" + ROOT_B64.encode() + b"\n", signer)
        with pytest.raises(CheckpointError, match="not a canonical decimal"):
            open_checkpoint(note, [signer.verifier()])

    def test_tampered_size(self, signer: Signer) -> None:
        """Changing the size after signing breaks the signature."""
        note = sign_checkpoint(Checkpoint("example.com/log", 10, ROOT), signer)
        with pytest.raises(NoteError, match="does not verify"):
            open_checkpoint(note.replace(b"\n10\n", b"\n11\n"), [signer.verifier()])
