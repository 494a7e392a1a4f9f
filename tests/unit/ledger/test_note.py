"""Tests for signed notes: the 25 published cases, byte-exact signing, key strings."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from proctor.errors import NoteError
from proctor.ledger.note import (
    COSIGNATURE_V1,
    ED25519,
    MAX_SIGNATURES,
    Cosigner,
    Signature,
    Signer,
    Verifier,
    check_text,
    cosignature_timestamp,
    decode_base64,
    key_id,
    open_note,
    parse_note,
    sign_note,
    signature_line,
)

# Every case of notes/notes.json; a test below insists the file holds exactly these.
NOTE_CASES = (
    "xmod-peter-verifies-enoch-unknown",
    "xmod-both-known",
    "xmod-no-known-keys",
    "xmod-101-signatures",
    "xmod-invalid-signature-known-key",
    "xmod-duplicates-and-bad-unknown",
    "xmod-malformed-0",
    "xmod-malformed-1",
    "xmod-malformed-2",
    "xmod-malformed-3",
    "xmod-malformed-4",
    "xmod-malformed-5",
    "xmod-malformed-6",
    "c2sp-signed-note-example",
    "sumdb-real-checkpoint-2024-09-23",
    "sigsum-checkpoint-ed25519",
    "sigsum-cosignature-v1",
    "rekor-v1-ecdsa",
    "pixel-ecdsa",
    "rekor-v1-ecdsa-wrong-name",
    "static-ct-rfc6962-note-signature",
    "tessera-checkpoint-0",
    "tessera-checkpoint-1",
    "tessera-checkpoint-3",
    "tessera-checkpoint-15",
)
BAD_VKEYS = 8
TESSERA_SIZES = range(16)
PETER_TEXT = (
    b"If you think cryptography is the answer to your problem,\n"
    b"then you don't know what your problem is.\n"
)


def _load(vectors: Path, name: str) -> Any:
    return json.loads((vectors / "notes" / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def cases(vectors: Path) -> dict[str, dict[str, Any]]:
    """The notes.json cases by id."""
    return {case["id"]: case for case in _load(vectors, "notes.json")["cases"]}


@pytest.fixture(scope="module")
def keys(vectors: Path) -> dict[str, Any]:
    """The published keys and the vkeys that must be refused."""
    loaded: dict[str, Any] = _load(vectors, "keys.json")
    return loaded


@pytest.fixture(scope="module")
def examples(vectors: Path) -> dict[str, dict[str, Any]]:
    """The C2SP parse-only examples by id."""
    loaded = _load(vectors, "c2sp_parse_examples.json")
    return {case["id"]: case for case in loaded["cases"]}


def _key(keys: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(key for key in keys["keys"] if key["name"] == name)
    return found


def _signer(keys: dict[str, Any], name: str) -> Signer:
    return Signer.from_private_key_string(_key(keys, name)["skey"])


def _peter(keys: dict[str, Any]) -> Verifier:
    return Verifier.from_key_string(_key(keys, "PeterNeumann")["vkey"])


def _note(case: dict[str, Any]) -> bytes:
    return base64.b64decode(case["note_b64"])


class TestPublishedCases:
    """Every notes.json case is accepted or refused as published."""

    def test_the_file_holds_exactly_the_listed_cases(
        self, cases: dict[str, dict[str, Any]]
    ) -> None:
        """No published case goes untested."""
        assert tuple(cases) == NOTE_CASES

    @pytest.mark.parametrize("case_id", NOTE_CASES)
    def test_case(self, cases: dict[str, dict[str, Any]], case_id: str) -> None:
        """The note opens with the published verified keys, or is refused."""
        case = cases[case_id]
        verifiers = [Verifier.from_key_string(vkey) for vkey in case["vkeys"]]
        if case["expect"] == "reject":
            with pytest.raises(NoteError, match=r"note|signature"):
                open_note(_note(case), verifiers)
            return

        opened = open_note(_note(case), verifiers)
        assert list(opened.verified) == case["verified_key_names"]
        if "unverified_key_names" in case:
            assert list(opened.unverified) == case["unverified_key_names"]
        assert _note(case).startswith(opened.text + b"\n")


class TestOpenNote:
    """open_note splits, checks and reports as C2SP signed-note requires."""

    def test_refusals_say_why(self, cases: dict[str, dict[str, Any]]) -> None:
        """Each refused case names its own reason."""
        reasons = {
            "xmod-no-known-keys": "no verified signature from a known key",
            "xmod-101-signatures": "101 signature lines, more than 100",
            "xmod-invalid-signature-known-key": "by PeterNeumann .* does not verify",
            "xmod-malformed-0": "no blank line",
            "xmod-malformed-1": "no signature lines",
            "xmod-malformed-2": "does not end in a newline",
            "xmod-malformed-3": "control character U\\+0001",
            "xmod-malformed-4": "not valid utf-8",
            "xmod-malformed-6": "line 2 does not start with an em dash",
        }
        for case_id, reason in reasons.items():
            case = cases[case_id]
            verifiers = [Verifier.from_key_string(vkey) for vkey in case["vkeys"]]
            with pytest.raises(NoteError, match=reason):
                open_note(_note(case), verifiers)

    def test_text_ends_at_the_last_blank_line(self, keys: dict[str, Any]) -> None:
        """Blank lines inside the text stay in the text."""
        signer = _signer(keys, "PeterNeumann")
        text = b"first\n\nsecond\n\n\nthird\n"
        opened = open_note(sign_note(text, signer), [signer.verifier()])
        assert opened.text == text

    def test_text_may_end_in_blank_lines(self, keys: dict[str, Any]) -> None:
        """A text ending in an empty line still splits at the last blank line."""
        signer = _signer(keys, "PeterNeumann")
        opened = open_note(sign_note(b"a\n\n", signer), [signer.verifier()])
        assert opened.text == b"a\n\n"

    def test_the_trap_key_id_of_sum_golang_org(
        self, keys: dict[str, Any], examples: dict[str, dict[str, Any]]
    ) -> None:
        """The C2SP example shares sum.golang.org's key ID but not its name: unknown."""
        note = examples["tlog-checkpoint-example"]["text"].encode()
        sumdb = Verifier.from_key_string(_key(keys, "sum.golang.org")["vkey"])
        assert parse_note(note)[1][0].key_id == sumdb.key_id
        with pytest.raises(NoteError, match="no verified signature"):
            open_note(note, [sumdb])

    def test_a_tampered_text_fails_the_known_key(self, keys: dict[str, Any]) -> None:
        """Changing one byte of the text makes the known signature fail."""
        signed = sign_note(PETER_TEXT, _signer(keys, "PeterNeumann"))
        tampered = signed.replace(b"answer", b"Answer")
        with pytest.raises(NoteError, match=r"PeterNeumann .* does not verify"):
            open_note(tampered, [_peter(keys)])

    def test_a_second_bad_line_of_a_known_key_is_refused(
        self, keys: dict[str, Any]
    ) -> None:
        """A known key with one good and one bad line refuses the whole note."""
        signer = _signer(keys, "PeterNeumann")
        good = signer.sign(PETER_TEXT)
        bad = signer.sign(b"other text\n")
        with pytest.raises(NoteError, match="does not verify"):
            open_note(PETER_TEXT + b"\n" + good + bad, [signer.verifier()])

    def test_signatures_hold_the_verified_lines(self, keys: dict[str, Any]) -> None:
        """Verified signatures come back once each, with their exact line."""
        signer = _signer(keys, "PeterNeumann")
        line = signer.sign(PETER_TEXT)
        opened = open_note(PETER_TEXT + b"\n" + line + line, [signer.verifier()])
        assert opened.signatures == (
            Signature("PeterNeumann", signer.key_id, base64.b64decode(line[17:-1])[4:]),
        )
        assert opened.signatures[0].line == line

    def test_sixteen_signatures_are_accepted(self) -> None:
        """C2SP signed-note: verifiers must accept at least 16 signatures."""
        signers = [Signer.generate(f"example.com/k{n}") for n in range(16)]
        note = sign_note(b"text\n", *signers)
        opened = open_note(note, [signer.verifier() for signer in signers])
        assert len(opened.verified) == 16

    def test_the_cap_is_exactly_one_hundred(self) -> None:
        """One hundred lines pass; one more is refused."""
        signer = Signer.generate("example.com/cap")
        line = signer.sign(b"text\n")
        note = b"text\n\n" + line * MAX_SIGNATURES
        assert open_note(note, [signer.verifier()]).verified == ("example.com/cap",)
        with pytest.raises(NoteError, match="more than 100"):
            open_note(note + line, [signer.verifier()])

    def test_verifiers_may_be_any_iterable(self, keys: dict[str, Any]) -> None:
        """A generator of verifiers works like a list."""
        signed = sign_note(PETER_TEXT, _signer(keys, "PeterNeumann"))
        opened = open_note(signed, (v for v in [_peter(keys)]))
        assert opened.verified == ("PeterNeumann",)

    def test_colliding_verifiers_are_refused(self) -> None:
        """Two different keys with the same name and key ID are ambiguous."""
        one = Verifier("example.com/a", ED25519, bytes(32))
        two = Verifier("example.com/a", ED25519, bytes(31) + b"\x01")
        two.key_id = one.key_id
        with pytest.raises(NoteError, match=r"share the name example\.com/a"):
            open_note(b"x\n\n", [one, two])


class TestSignatureLines:
    """Signature lines are parsed strictly."""

    @pytest.mark.parametrize(
        ("line", "reason"),
        [
            ("\u2014 PeterNeumann", "no valid key name"),
            ("\u2014  AAAAAAA=", "no valid key name"),
            ("\u2014 Peter+Neumann AAAAAAA=", "no valid key name"),
            ("\u2014 Peter\u00a0Neumann AAAAAAA=", "no valid key name"),
            ("- PeterNeumann AAAAAAA=", "does not start with an em dash"),
            ("\u2014PeterNeumann AAAAAAA=", "does not start with an em dash"),
            ("\u2014 PeterNeumann AAAAAAA", "not valid base64"),
            ("\u2014 PeterNeumann AAAAAAB=", "not canonical base64"),
            ("\u2014 PeterNeumann AAAA AAA=", "not valid base64"),
            ("\u2014 PeterNeumann AAAAAAA= ", "not valid base64"),
            ("\u2014 PeterNeumann AAAAAA==", "too short"),
            ("\u2014 PeterNeumann ", "too short"),
        ],
    )
    def test_malformed_lines(self, line: str, reason: str) -> None:
        """Each malformed line is refused with its reason."""
        with pytest.raises(NoteError, match=reason):
            parse_note(b"text\n\n" + line.encode() + b"\n")

    def test_a_line_is_name_and_key_id_and_signature(
        self, examples: dict[str, dict[str, Any]]
    ) -> None:
        """The C2SP checkpoint example has one line by key ID 033de0ae."""
        example = examples["tlog-checkpoint-example"]
        text, signatures = parse_note(example["text"].encode())
        assert len(signatures) == example["want"]["sig_lines"]
        assert signatures[0].name == "example.com/behind-the-sofa"
        assert signatures[0].key_id.hex() == example["want"]["first_sig_key_id_hex"]
        assert text.endswith(b"=\n")

    def test_the_cosignature_example(self, examples: dict[str, dict[str, Any]]) -> None:
        """The C2SP cosignature example carries its timestamp in 76 bytes."""
        example = examples["tlog-cosignature-example"]
        _, signatures = parse_note(example["text"].encode())
        assert len(signatures) == example["want"]["sig_lines"]
        cosignature = signatures[1]
        assert len(cosignature.key_id + cosignature.signature) == 76
        assert cosignature_timestamp(cosignature) == example["want"]["cosig_timestamp"]

    def test_signature_line_format(self) -> None:
        """A line is em dash, space, name, space, base64, newline."""
        line = signature_line("example.com/a", b"\x01\x02\x03\x04\x05")
        assert line == "\u2014 example.com/a AQIDBAU=\n".encode()


class TestSigning:
    """Ed25519 signing is deterministic and reproduces the published notes."""

    def test_peter_neumann_note_byte_for_byte(self, keys: dict[str, Any]) -> None:
        """The published test key reproduces the golang/mod signed note."""
        sign_test = _key(keys, "PeterNeumann")["sign_test"]
        signer = _signer(keys, "PeterNeumann")
        signed = sign_note(sign_test["text"].encode(), signer)
        assert signed == sign_test["want_signed_note"].encode()

    def test_sign_returns_the_line(self, keys: dict[str, Any]) -> None:
        """Signer.sign returns only the signature line."""
        sign_test = _key(keys, "PeterNeumann")["sign_test"]
        line = _signer(keys, "PeterNeumann").sign(PETER_TEXT)
        assert sign_test["want_signed_note"].encode() == PETER_TEXT + b"\n" + line

    @pytest.mark.parametrize("size", TESSERA_SIZES)
    def test_tessera_checkpoints_byte_for_byte(
        self, vectors: Path, keys: dict[str, Any], size: int
    ) -> None:
        """Re-signing each tessera checkpoint body reproduces the published file."""
        published = (vectors / "tessera-log" / f"checkpoint.{size}").read_bytes()
        signer = _signer(keys, "example.com/log/testdata")
        text, _ = parse_note(published)
        assert sign_note(text, signer) == published

    def test_several_signers_in_order(self) -> None:
        """sign_note appends one line per signer, in the order given."""
        one, two = (
            Signer.generate("example.com/one"),
            Signer.generate("example.com/two"),
        )
        note = sign_note(b"text\n", one, two)
        assert note == b"text\n\n" + one.sign(b"text\n") + two.sign(b"text\n")
        opened = open_note(note, [two.verifier(), one.verifier()])
        assert opened.verified == ("example.com/one", "example.com/two")

    def test_no_signer_is_refused(self) -> None:
        """A note without a signature is not a note."""
        with pytest.raises(NoteError, match="at least one signer"):
            sign_note(b"text\n")

    @pytest.mark.parametrize(
        ("text", "reason"),
        [
            (b"", "end with a newline"),
            (b"no newline", "end with a newline"),
            (b"tab\there\n", "control character U\\+0009"),
            (b"carriage\r\n", "control character U\\+000D"),
            (b"\xff\n", "not valid utf-8"),
        ],
    )
    def test_invalid_text_is_refused(self, text: bytes, reason: str) -> None:
        """Only text a verifier would accept is signed."""
        signer = Signer.generate("example.com/a")
        with pytest.raises(NoteError, match=reason):
            signer.sign(text)
        with pytest.raises(NoteError, match=reason):
            check_text(text)

    def test_generated_keys_round_trip(self) -> None:
        """A generated key survives its private string and verifies its own notes."""
        signer = Signer.generate("example.com/fresh")
        again = Signer.from_private_key_string(signer.private_key_string())
        verifier = Verifier.from_key_string(signer.verifier_key_string())
        note = sign_note(b"hello\n", again)
        assert open_note(note, [verifier]).verified == ("example.com/fresh",)
        assert again.key_id == signer.key_id == verifier.key_id

    def test_repr_hides_the_seed(self, keys: dict[str, Any]) -> None:
        """A signer's repr names the key, never the seed."""
        signer = _signer(keys, "PeterNeumann")
        seed = _key(keys, "PeterNeumann")["skey"].rsplit("+", 1)[1]
        assert seed not in repr(signer)
        assert "c74f20a3" in repr(signer)
        assert repr(signer.verifier()) == (
            "Verifier('PeterNeumann', key_id=c74f20a3, type=1)"
        )


class TestCosignatures:
    """cosignature/v1 lines (type 0x04) sign a timestamp and the note text."""

    def test_cosigner_round_trip(self) -> None:
        """A witness cosignature verifies and carries its timestamp."""
        cosigner = Cosigner.generate("example.com/witness")
        text = b"example.com/log\n1\n" + base64.b64encode(bytes(32)) + b"\n"
        line = cosigner.sign(text, timestamp=1_700_000_000)
        opened = open_note(text + b"\n" + line, [cosigner.verifier()])
        assert opened.verified == ("example.com/witness",)
        assert cosignature_timestamp(opened.signatures[0]) == 1_700_000_000

    def test_cosigner_reproduces_the_sigsum_line(
        self, keys: dict[str, Any], cases: dict[str, dict[str, Any]]
    ) -> None:
        """The published seed at timestamp 1234 gives the sigsum line byte for byte."""
        name = "example.org/witness"
        seed = bytes.fromhex(_key(keys, name)["seed_hex"])
        encoded = base64.b64encode(bytes([COSIGNATURE_V1]) + seed).decode()
        cosigner = Cosigner.from_private_key_string(
            f"PRIVATE+KEY+{name}+cacf2e50+{encoded}"
        )
        text, _ = parse_note(_note(cases["sigsum-cosignature-v1"]))
        published = _note(cases["sigsum-cosignature-v1"]).split(b"\n")[5] + b"\n"
        assert cosigner.sign(text, timestamp=1234) == published
        assert cosigner.verifier_key_string() == _key(keys, name)["vkey"]

    def test_cosigner_without_timestamp_uses_now(self) -> None:
        """Without a timestamp the cosignature is dated now."""
        cosigner = Cosigner.generate("example.com/witness")
        line = cosigner.sign(b"text\n")
        opened = open_note(b"text\n\n" + line, [cosigner.verifier()])
        assert cosignature_timestamp(opened.signatures[0]) > 1_700_000_000

    @pytest.mark.parametrize("timestamp", [-1, 2**63])
    def test_timestamp_out_of_range(self, timestamp: int) -> None:
        """C2SP tlog-cosignature: the timestamp must not exceed 2**63 - 1."""
        cosigner = Cosigner.generate("example.com/witness")
        with pytest.raises(NoteError, match="out of range"):
            cosigner.sign(b"text\n", timestamp=timestamp)

    def test_a_timestamp_above_the_limit_does_not_verify(self) -> None:
        """A line claiming a timestamp of 2**63 is refused by the verifier."""
        cosigner = Cosigner.generate("example.com/witness")
        verifier = cosigner.verifier()
        assert not verifier.verify(b"text\n", (2**63).to_bytes(8) + bytes(64))

    def test_changed_timestamp_fails(self) -> None:
        """The timestamp is signed: changing it breaks the cosignature."""
        cosigner = Cosigner.generate("example.com/witness")
        line = cosigner.sign(b"text\n", timestamp=5)
        raw = bytearray(base64.b64decode(line.split(b" ")[2]))
        raw[11] ^= 1
        forged = signature_line(cosigner.name, bytes(raw))
        with pytest.raises(NoteError, match="does not verify"):
            open_note(b"text\n\n" + forged, [cosigner.verifier()])

    def test_log_and_witness_keys_are_distinct(self) -> None:
        """The same Ed25519 key as log and as witness has two key IDs."""
        cosigner = Cosigner.generate("example.com/k")
        assert cosigner.key_id == key_id("example.com/k", 4, cosigner.public_key)
        assert cosigner.key_id != key_id("example.com/k", 1, cosigner.public_key)

    def test_an_ed25519_line_is_not_a_cosignature(self, keys: dict[str, Any]) -> None:
        """cosignature_timestamp refuses a plain Ed25519 signature."""
        signer = _signer(keys, "PeterNeumann")
        _, signatures = parse_note(sign_note(PETER_TEXT, signer))
        with pytest.raises(NoteError, match="not a cosignature/v1"):
            cosignature_timestamp(signatures[0])


class TestKeyStrings:
    """Verifier and private key strings are exactly as published, and strict."""

    def test_published_vkeys_round_trip(self, keys: dict[str, Any]) -> None:
        """Every published vkey loads and prints back unchanged."""
        for key in keys["keys"]:
            verifier = Verifier.from_key_string(key["vkey"])
            assert verifier.key_string() == key["vkey"]
            assert verifier.name == key["name"]

    def test_published_private_keys_round_trip(self, keys: dict[str, Any]) -> None:
        """Each published private key prints back and matches its vkey."""
        for key in keys["keys"]:
            if "skey" in key:
                signer = Signer.from_private_key_string(key["skey"])
                assert signer.private_key_string() == key["skey"]
                assert signer.verifier_key_string() == key["vkey"]

    def test_bad_vkey_list_is_complete(self, keys: dict[str, Any]) -> None:
        """The published must-reject list has its eight entries."""
        assert len(keys["bad_vkeys"]) == BAD_VKEYS

    @pytest.mark.parametrize("position", range(BAD_VKEYS))
    def test_bad_vkeys_are_refused(self, keys: dict[str, Any], position: int) -> None:
        """Each published malformed vkey is refused."""
        bad = keys["bad_vkeys"][position]
        with pytest.raises(NoteError, match=r"key|base64|type"):
            Verifier.from_key_string(bad["vkey"])

    def test_every_proper_substring_of_a_vkey_is_refused(
        self, keys: dict[str, Any]
    ) -> None:
        """Cutting any part off a valid vkey makes it invalid."""
        vkey = _key(keys, "PeterNeumann")["vkey"]
        for start in range(len(vkey)):
            for end in range(start + 1, len(vkey) + 1):
                if (start, end) == (0, len(vkey)):
                    continue
                with pytest.raises(NoteError, match=r"key|name"):
                    Verifier.from_key_string(vkey[start:end])

    def test_short_ed25519_key(self) -> None:
        """A 31-byte Ed25519 key is refused even with a matching key ID."""
        short = bytes(31)
        hex_id = key_id("example.com/a", ED25519, short).hex()
        material = base64.b64encode(b"\x01" + short).decode()
        with pytest.raises(NoteError, match="31 bytes, expected 32"):
            Verifier.from_key_string(f"example.com/a+{hex_id}+{material}")

    def test_uppercase_key_id(self, keys: dict[str, Any]) -> None:
        """The key ID is eight lowercase hex digits."""
        vkey = _key(keys, "PeterNeumann")["vkey"].replace("c74f20a3", "C74F20A3")
        with pytest.raises(NoteError, match="8 lowercase hex"):
            Verifier.from_key_string(vkey)

    @pytest.mark.parametrize("name", ["", "a b", "a+b", "tab\tname"])
    def test_invalid_names(self, name: str) -> None:
        """Key names are non-empty without spaces or '+'."""
        with pytest.raises(NoteError, match="key name"):
            Signer.generate(name)
        with pytest.raises(NoteError, match="key name"):
            Verifier(name, ED25519, bytes(32))

    def test_ecdsa_key_must_be_ecdsa(self) -> None:
        """An ECDSA vkey holding an Ed25519 SPKI is refused."""
        spki = bytes.fromhex("302a300506032b6570032100") + bytes(32)
        with pytest.raises(NoteError, match="not an ECDSA"):
            Verifier("example.com/a", 0x02, spki)

    def test_ecdsa_key_must_be_der(self) -> None:
        """An ECDSA vkey whose material is not DER is refused."""
        with pytest.raises(NoteError, match="not a DER public key"):
            Verifier("example.com/a", 0x02, b"\x30\x00")

    @pytest.mark.parametrize(
        ("skey", "reason"),
        [
            ("PeterNeumann+c74f20a3+AYEK", "does not start with"),
            (
                "PRIVATE+KEY+PeterNeumann+c74f20a4+"
                "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
                "does not match",
            ),
            (
                "PRIVATE+KEY+PeterNeumann+c74f20a3+"
                "BIEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
                "expected type 0x01",
            ),
            ("PRIVATE+KEY+PeterNeumann+c74f20a3+AYEK", "expected type 0x01"),
            ("PRIVATE+KEY+PeterNeumann+c74f20a3", "missing"),
        ],
    )
    def test_bad_private_keys(self, skey: str, reason: str) -> None:
        """Malformed private keys are refused without echoing the seed."""
        with pytest.raises(NoteError, match=reason) as caught:
            Signer.from_private_key_string(skey)
        assert "AYEKFALVFGyNhPJEMzD1QIDr" not in str(caught.value)

    def test_a_log_key_is_not_a_cosigner_key(self, keys: dict[str, Any]) -> None:
        """A type 0x01 private key does not load as a cosigner."""
        with pytest.raises(NoteError, match="expected type 0x04"):
            Cosigner.from_private_key_string(_key(keys, "PeterNeumann")["skey"])

    def test_unknown_type(self) -> None:
        """Signature types other than 1, 2, 4 and 5 are refused."""
        with pytest.raises(NoteError, match="unknown signature type 0x06"):
            Verifier("example.com/a", 0x06, bytes(32))


class TestOtherTypes:
    """ECDSA and RFC 6962 verifiers check what their specs sign."""

    def test_rfc6962_needs_a_checkpoint_by_its_origin(
        self, cases: dict[str, dict[str, Any]]
    ) -> None:
        """A static-ct signature covers only an origin-named, extension-free body."""
        case = cases["static-ct-rfc6962-note-signature"]
        verifier = Verifier.from_key_string(case["vkeys"][0])
        text, signatures = parse_note(_note(case))
        signature = signatures[0].signature
        assert verifier.verify(text, signature)
        assert not verifier.verify(text + b"extension\n", signature)
        assert not verifier.verify(text.replace(b"2024h1\n", b"2024h2\n", 1), signature)
        assert not verifier.verify(text.replace(b"115474666", b"115474667"), signature)
        assert not verifier.verify(text, signature[:-1])
        assert not verifier.verify(text, signature[:8] + b"\x04\x01" + signature[10:])

    @pytest.mark.parametrize(
        ("old", "new"),
        [
            (b"\n115474666\n", b"\n0115474666\n"),
            (b"\n115474666\n", b"\n18446744073709551616\n"),
            (b"xCw=\n", b"xCw\n"),
            (b"xCw=\n", b"xC==\n"),
            (b"2q1K6aiIJR+F7TyhiWOghoWOjY0/3dVBLsBbAvB4xCw=", b"AAAA"),
        ],
    )
    def test_rfc6962_body_must_be_a_plain_checkpoint(
        self, cases: dict[str, dict[str, Any]], old: bytes, new: bytes
    ) -> None:
        """A malformed size or root makes the tree head signature fail."""
        case = cases["static-ct-rfc6962-note-signature"]
        verifier = Verifier.from_key_string(case["vkeys"][0])
        text, signatures = parse_note(_note(case))
        changed = text.replace(old, new)
        assert changed != text
        assert not verifier.verify(changed, signatures[0].signature)

    def test_cosignature_of_the_wrong_length(self) -> None:
        """A cosignature verifier refuses anything but 72 signature bytes."""
        cosigner = Cosigner.generate("example.com/witness")
        assert not cosigner.verifier().verify(b"text\n", bytes(71))

    def test_ecdsa_key_in_compressed_form(self) -> None:
        """Only the canonical (uncompressed) SPKI encoding of a key is accepted."""
        key = ec.generate_private_key(ec.SECP256R1()).public_key()
        point = key.public_bytes(Encoding.X962, PublicFormat.CompressedPoint)
        header = "3039301306072a8648ce3d020106082a8648ce3d030107032200"
        with pytest.raises(NoteError, match="not in canonical DER"):
            Verifier("example.com/a", 0x02, bytes.fromhex(header) + point)

    def test_ecdsa_signature_covers_the_text(
        self, cases: dict[str, dict[str, Any]]
    ) -> None:
        """An ECDSA signature fails on other text."""
        case = cases["rekor-v1-ecdsa"]
        verifier = Verifier.from_key_string(case["vkeys"][0])
        text, signatures = parse_note(_note(case))
        assert verifier.verify(text, signatures[0].signature)
        assert not verifier.verify(text + b"x\n", signatures[0].signature)


class TestDecodeBase64:
    """The base64 decoder takes exactly the canonical encoding."""

    @pytest.mark.parametrize(
        "value", ["AAAA====", "AA=A", "AAA", " AAAA", "AAAA\n", "AAB=", "A===", "é"]
    )
    def test_refused(self, value: str) -> None:
        """Padding, whitespace, stray bits and foreign characters are refused."""
        with pytest.raises(ValueError, match="base64"):
            decode_base64(value)

    def test_accepted(self) -> None:
        """Canonical text and bytes decode alike."""
        assert decode_base64("AAE=") == decode_base64(b"AAE=") == b"\x00\x01"
        assert decode_base64("") == b""
