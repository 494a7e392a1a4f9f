"""C2SP signed notes: Ed25519 signers and cosigners, verifier keys for the assigned
signature types, and a strict parser that opens a note only when a known key verifies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar, Self

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from proctor.errors import NoteError

ED25519 = 0x01
ECDSA = 0x02
COSIGNATURE_V1 = 0x04
RFC6962 = 0x05
"""Signature type bytes assigned by C2SP signed-note §Signature types."""

MAX_SIGNATURES = 100
"""C2SP signed-note: verifiers SHOULD cap the signature lines and MUST accept 16."""

PRIVATE_PREFIX = "PRIVATE+KEY+"

_DASH = "\u2014 ".encode()
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")
_KEY_ID = re.compile("[0-9a-f]{8}")
_COSIGNATURE_HEADER = b"cosignature/v1\ntime %d\n"
_MAX_TIMESTAMP = 2**63 - 1
_ECDSA_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)

Check = Callable[[bytes, bytes], bool]


def decode_base64(data: str | bytes) -> bytes:
    """Decode standard base64 strictly: no whitespace, exact padding, canonical bits.

    Raises ValueError; callers translate it into their own error.
    """
    raw = data.encode("ascii", "replace") if isinstance(data, str) else data
    try:
        decoded = base64.b64decode(raw, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"not valid base64: {exc}") from exc
    # RFC 4648 §3.5: unused bits must be zero, so exactly one encoding is accepted.
    if base64.b64encode(decoded) != raw:
        raise ValueError("not canonical base64")

    return decoded


def key_id(name: str, kind: int, public_key: bytes) -> bytes:
    """Return the 4-byte key ID: SHA-256(name || 0x0A || type || public key)[:4]."""
    material = name.encode() + b"\n" + bytes([kind]) + public_key
    return hashlib.sha256(material).digest()[:4]


def is_valid_name(name: str) -> bool:
    """Tell whether a key name is non-empty, without Unicode spaces and without '+'."""
    return bool(name) and "+" not in name and not any(ch.isspace() for ch in name)


def check_text(text: bytes) -> None:
    """Refuse note text that is empty, lacks a final newline or has control bytes.

    Raises NoteError.
    """
    if not text.endswith(b"\n"):
        raise NoteError("note text must be non-empty and end with a newline")
    _check_characters(text, "note text")


@dataclass(frozen=True)
class Signature:
    """One signature line: the key's name and ID and the signature bytes after it."""

    name: str
    key_id: bytes
    signature: bytes

    @property
    def line(self) -> bytes:
        """The signature line as it appears in a note, newline included."""
        return signature_line(self.name, self.key_id + self.signature)


@dataclass(frozen=True)
class Note:
    """An opened note: its text and who signed it.

    ``verified`` names the known keys whose signatures verified, in order of first
    appearance and without repeats; ``unverified`` names the signers of lines from
    unknown keys (repeated identical lines once); ``signatures`` holds the verified
    lines themselves.
    """

    text: bytes
    verified: tuple[str, ...]
    unverified: tuple[str, ...] = ()
    signatures: tuple[Signature, ...] = ()


def signature_line(name: str, signature: bytes) -> bytes:
    """Return the line ``— <name> <base64(signature)>``; it starts with the key ID."""
    return _DASH + name.encode() + b" " + base64.b64encode(signature) + b"\n"


def parse_note(note: bytes) -> tuple[bytes, tuple[Signature, ...]]:
    """Split a note into its text and signature lines without verifying any.

    C2SP signed-note §Format: valid UTF-8 without control characters other than
    newline; the text ends at the last blank line; then one or more lines of
    ``— <name> <base64(key ID || signature)>``, each ending in a newline.

    Raises NoteError naming the first rule the note breaks.
    """
    _check_characters(note, "note")
    split = note.rfind(b"\n\n")
    if split < 0:
        raise NoteError("note has no blank line before its signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block:
        raise NoteError("note has no signature lines")
    if not block.endswith(b"\n"):
        raise NoteError("the last signature line does not end in a newline")

    lines = block[:-1].split(b"\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(
            f"note has {len(lines)} signature lines, more than {MAX_SIGNATURES}"
        )

    return text, tuple(_parse_line(n, line) for n, line in enumerate(lines, 1))


def open_note(note: bytes, verifiers: Iterable[Verifier]) -> Note:
    """Parse a note and verify the signatures of the keys in ``verifiers``.

    Lines whose (name, key ID) no verifier holds are ignored, as C2SP signed-note
    §Signatures requires. Raises NoteError when the note is malformed, when two
    verifiers share a name and key ID, when a known key's signature fails, or when
    no known key signed it.
    """
    known = _index(verifiers)
    text, signatures = parse_note(note)

    verified: dict[str, None] = {}
    unverified: dict[bytes, str] = {}
    good: dict[tuple[str, bytes], Signature] = {}
    for signature in signatures:
        verifier = known.get((signature.name, signature.key_id))
        if verifier is None:
            unverified.setdefault(signature.line, signature.name)
            continue
        # C2SP signed-note §Signatures: one failing known signature rejects the note.
        if not verifier.verify(text, signature.signature):
            raise NoteError(
                f"signature by {signature.name} (key {signature.key_id.hex()}) "
                "does not verify"
            )
        verified[signature.name] = None
        good.setdefault((signature.name, signature.key_id), signature)
    if not verified:
        raise NoteError("note has no verified signature from a known key")

    return Note(text, tuple(verified), tuple(unverified.values()), tuple(good.values()))


def sign_note(text: bytes, *signers: Signer) -> bytes:
    """Return ``text`` followed by a blank line and one signature line per signer.

    Raises NoteError when there is no signer or the text is not valid note text.
    """
    if not signers:
        raise NoteError("a note needs at least one signer")
    check_text(text)

    return text + b"\n" + b"".join(signer.sign(text) for signer in signers)


class Verifier:
    """A trusted public key that checks note signatures of one signature type.

    Ed25519 (0x01), ECDSA (0x02), cosignature/v1 (0x04) and RFC 6962 tree head
    (0x05) keys are understood; any other type is refused when the key is loaded.
    """

    __slots__ = ("_check", "key_id", "kind", "name", "public_key")

    def __init__(self, name: str, kind: int, public_key: bytes) -> None:
        """Load ``public_key`` as a key of signature type ``kind``.

        Raises NoteError when the name is invalid, the type unknown or the key bad.
        """
        if not is_valid_name(name):
            raise NoteError(f"key name {name!r} is empty or has a space or '+'")
        loader = _LOADERS.get(kind)
        if loader is None:
            raise NoteError(f"key {name}: unknown signature type 0x{kind:02x}")
        self.name = name
        self.kind = kind
        self.public_key = public_key
        self.key_id, self._check = loader(name, public_key)

    @classmethod
    def from_key_string(cls, vkey: str) -> Verifier:
        """Parse a verifier key ``<name>+<hex key ID>+<base64(type || key)>``.

        Raises NoteError when a part is malformed or the key ID does not match.
        """
        name, hex_id, material = _split_key_string(vkey, "verifier key")
        verifier = cls(name, material[0], material[1:])
        if verifier.key_id.hex() != hex_id:
            raise NoteError(
                f"verifier key {name}: key ID {hex_id} does not match the key "
                f"({verifier.key_id.hex()})"
            )

        return verifier

    def key_string(self) -> str:
        """Return this key as a verifier key string."""
        material = base64.b64encode(bytes([self.kind]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{material}"

    def verify(self, text: bytes, signature: bytes) -> bool:
        """Tell whether ``signature`` (the bytes after the key ID) signs ``text``."""
        return self._check(text, signature)

    def __repr__(self) -> str:
        return f"Verifier({self.name!r}, key_id={self.key_id.hex()}, type={self.kind})"


class Signer:
    """An Ed25519 key that signs note text (signature type 0x01)."""

    __slots__ = ("_private", "key_id", "name", "public_key")

    kind: ClassVar[int] = ED25519

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        """Wrap ``private_key`` under the key name ``name``; raises NoteError."""
        if not is_valid_name(name):
            raise NoteError(f"key name {name!r} is empty or has a space or '+'")
        self.name = name
        self._private = private_key
        self.public_key = private_key.public_key().public_bytes_raw()
        self.key_id = key_id(name, self.kind, self.public_key)

    @classmethod
    def generate(cls, name: str) -> Self:
        """Return a signer with a fresh random key; raises NoteError for a bad name."""
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_private_key_string(cls, skey: str) -> Self:
        """Parse ``PRIVATE+KEY+<name>+<hex key ID>+<base64(type || seed)>``.

        Raises NoteError when the string is malformed, of another signature type,
        or its key ID does not match the key; the message never holds the seed.
        """
        if not skey.startswith(PRIVATE_PREFIX):
            raise NoteError(f"private key does not start with {PRIVATE_PREFIX!r}")
        name, hex_id, material = _split_key_string(
            skey[len(PRIVATE_PREFIX) :], "private key"
        )
        if material[0] != cls.kind or len(material) != 33:
            raise NoteError(
                f"private key {name}: expected type 0x{cls.kind:02x} and a 32-byte seed"
            )
        signer = cls(name, Ed25519PrivateKey.from_private_bytes(material[1:]))
        if signer.key_id.hex() != hex_id:
            raise NoteError(f"private key {name}: key ID {hex_id} does not match")

        return signer

    def private_key_string(self) -> str:
        """Return the private key string; it holds the secret seed."""
        seed = self._private.private_bytes_raw()
        material = base64.b64encode(bytes([self.kind]) + seed).decode()
        return f"{PRIVATE_PREFIX}{self.name}+{self.key_id.hex()}+{material}"

    def verifier_key_string(self) -> str:
        """Return the public verifier key string for this signer."""
        return self.verifier().key_string()

    def verifier(self) -> Verifier:
        """Return the verifier of this signer's signatures."""
        return Verifier(self.name, self.kind, self.public_key)

    def sign(self, text: bytes) -> bytes:
        """Return the signature line ``— <name> <base64(key ID || sig)>\\n``.

        Raises NoteError when ``text`` is not valid note text.
        """
        check_text(text)
        return signature_line(self.name, self.key_id + self._private.sign(text))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, key_id={self.key_id.hex()})"


class Cosigner(Signer):
    """An Ed25519 witness key that signs C2SP tlog-cosignature/v1 lines (type 0x04).

    Its private key string carries type 0x04, so it cannot be mistaken for a log key.
    """

    __slots__ = ()

    kind: ClassVar[int] = COSIGNATURE_V1

    def sign(self, text: bytes, *, timestamp: int | None = None) -> bytes:
        """Return a cosignature line over ``text`` at ``timestamp`` (now if None).

        Raises NoteError when the text is not valid note text or the timestamp is
        outside 0 .. 2**63 - 1.
        """
        check_text(text)
        moment = int(time.time()) if timestamp is None else timestamp
        if not 0 <= moment <= _MAX_TIMESTAMP:
            raise NoteError(f"cosignature timestamp {moment} is out of range")
        signed = self._private.sign(_COSIGNATURE_HEADER % moment + text)

        return signature_line(self.name, self.key_id + moment.to_bytes(8) + signed)


def cosignature_timestamp(signature: Signature) -> int:
    """Return the POSIX time in a cosignature/v1 signature; raises NoteError."""
    if len(signature.signature) != 72:
        raise NoteError(f"signature by {signature.name} is not a cosignature/v1")
    return int.from_bytes(signature.signature[:8])


def _check_characters(data: bytes, what: str) -> None:
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NoteError(f"{what} is not valid utf-8 at byte {exc.start}") from exc
    found = _CONTROL.search(decoded)
    if found:
        raise NoteError(
            f"{what} holds control character U+{ord(found.group()):04X}, "
            "only newline is allowed"
        )


def _parse_line(number: int, line: bytes) -> Signature:
    if not line.startswith(_DASH):
        raise NoteError(f"signature line {number} does not start with an em dash")
    name, space, encoded = line[len(_DASH) :].decode().partition(" ")
    if not space or not is_valid_name(name):
        raise NoteError(f"signature line {number} has no valid key name")
    try:
        raw = decode_base64(encoded)
    except ValueError as exc:
        raise NoteError(f"signature line {number} by {name}: {exc}") from exc
    if len(raw) < 5:
        raise NoteError(f"signature line {number} by {name} is too short")

    return Signature(name, raw[:4], raw[4:])


def _index(verifiers: Iterable[Verifier]) -> dict[tuple[str, bytes], Verifier]:
    known: dict[tuple[str, bytes], Verifier] = {}
    for verifier in verifiers:
        slot = (verifier.name, verifier.key_id)
        if slot in known and known[slot].public_key != verifier.public_key:
            raise NoteError(
                f"two verifiers share the name {verifier.name} and key ID "
                f"{verifier.key_id.hex()}"
            )
        known[slot] = verifier

    return known


def _split_key_string(text: str, what: str) -> tuple[str, str, bytes]:
    # The name holds no '+', and the key ID none either, but base64 may.
    name, _, rest = text.partition("+")
    hex_id, _, encoded = rest.partition("+")
    if not is_valid_name(name):
        raise NoteError(f"{what} has no valid key name")
    if not _KEY_ID.fullmatch(hex_id):
        raise NoteError(f"{what} {name}: key ID is not 8 lowercase hex digits")
    try:
        material = decode_base64(encoded)
    except ValueError as exc:
        raise NoteError(f"{what} {name}: key material is {exc}") from exc
    if not material:
        raise NoteError(f"{what} {name}: key material is missing")

    return name, hex_id, material


def _load_ed25519(name: str, public_key: bytes) -> tuple[bytes, Check]:
    key = _ed25519_key(name, public_key)

    def check(text: bytes, signature: bytes) -> bool:
        return len(signature) == 64 and _ed25519_verifies(key, signature, text)

    return key_id(name, ED25519, public_key), check


def _load_cosignature(name: str, public_key: bytes) -> tuple[bytes, Check]:
    key = _ed25519_key(name, public_key)

    def check(text: bytes, signature: bytes) -> bool:
        # C2SP tlog-cosignature §Format: u64 timestamp || 64-byte Ed25519 signature
        # over "cosignature/v1\ntime <timestamp>\n" || note text.
        if len(signature) != 72:
            return False
        moment = int.from_bytes(signature[:8])
        if moment > _MAX_TIMESTAMP:
            return False
        message = _COSIGNATURE_HEADER % moment + text
        return _ed25519_verifies(key, signature[8:], message)

    return key_id(name, COSIGNATURE_V1, public_key), check


def _load_ecdsa(name: str, public_key: bytes) -> tuple[bytes, Check]:
    key = _ecdsa_key(name, public_key)

    def check(text: bytes, signature: bytes) -> bool:
        return _ecdsa_verifies(key, signature, text)

    # C2SP signed-note §Signature types: the ECDSA key ID hashes the SPKI alone.
    return hashlib.sha256(public_key).digest()[:4], check


def _load_rfc6962(name: str, public_key: bytes) -> tuple[bytes, Check]:
    key = _ecdsa_key(name, public_key)
    log_id = hashlib.sha256(public_key).digest()

    def check(text: bytes, signature: bytes) -> bool:
        head = _tree_head(name, text)
        # c2sp.org/static-ct-api: u64 timestamp || DigitallySigned, here
        # SHA-256 (4) with ECDSA (3), a u16 length and the DER signature.
        if head is None or len(signature) < 12 or signature[8:10] != b"\x04\x03":
            return False
        length = int.from_bytes(signature[10:12])
        if len(signature) != 12 + length:
            return False
        # RFC 6962 §3.5 TreeHeadSignature: v1 (0), tree_hash (1), timestamp,
        # tree_size, root hash.
        signed = b"\x00\x01" + signature[:8] + head
        return _ecdsa_verifies(key, signature[12:], signed)

    return key_id(name, RFC6962, log_id), check


_LOADERS: dict[int, Callable[[str, bytes], tuple[bytes, Check]]] = {
    ED25519: _load_ed25519,
    ECDSA: _load_ecdsa,
    COSIGNATURE_V1: _load_cosignature,
    RFC6962: _load_rfc6962,
}


def _ed25519_key(name: str, public_key: bytes) -> Ed25519PublicKey:
    if len(public_key) != 32:
        raise NoteError(
            f"key {name}: ed25519 public key is {len(public_key)} bytes, expected 32"
        )
    return Ed25519PublicKey.from_public_bytes(public_key)


def _ecdsa_key(name: str, spki: bytes) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_der_public_key(spki)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise NoteError(f"key {name}: not a DER public key") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(
        key.curve, _ECDSA_CURVES
    ):
        raise NoteError(f"key {name}: not an ECDSA P-256, P-384 or P-521 key")
    canonical = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if canonical != spki:
        raise NoteError(f"key {name}: public key is not in canonical DER")

    return key


def _ed25519_verifies(key: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def _ecdsa_verifies(
    key: ec.EllipticCurvePublicKey, signature: bytes, message: bytes
) -> bool:
    try:
        key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def _tree_head(origin: str, text: bytes) -> bytes | None:
    # c2sp.org/static-ct-api: the note must be a checkpoint whose origin is the key
    # name and which has no extension lines. Return u64 size || 32-byte root.
    lines = text.split(b"\n")
    if len(lines) != 4 or lines[0] != origin.encode() or lines[3]:
        return None
    size, encoded = lines[1], lines[2]
    if not re.fullmatch(rb"0|[1-9][0-9]{0,19}", size) or int(size) >= 2**64:
        return None
    try:
        root = decode_base64(encoded)
    except ValueError:
        return None
    if len(root) != 32:
        return None

    return int(size).to_bytes(8) + root
