"""Inclusion proofs of entries against the ledger's latest signed checkpoint, built
from the store's subtree hashes in one round trip and verified on the spot."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from proctor.errors import CheckpointError, NoteError, ProofError
from proctor.ledger import merkle
from proctor.ledger.checkpoint import Checkpoint, open_checkpoint
from proctor.ledger.note import Verifier
from proctor.storage.interface import NodeKey, Store


@dataclass(frozen=True)
class Proof:
    """That one entry is in the tree a signed checkpoint commits to, and whether it
    verified: the leaf hash recomputed from the entry's bytes, the path to the root,
    and the checkpoint note itself so anyone can check it again offline."""

    index: int
    verified: bool
    leaf_hash: str
    size: int | None = None
    root: str | None = None
    hashes: tuple[str, ...] = ()
    checkpoint: str | None = None
    problem: str | None = None


@dataclass(frozen=True)
class Signed:
    """The latest checkpoint as opened with the home's key, or why it cannot be."""

    checkpoint: Checkpoint | None
    note: str | None
    problem: str | None


def latest_signed(
    store: Store, verifiers: Sequence[Verifier], origin: str | None
) -> Signed:
    """Open the store's latest checkpoint; a failure is reported, never raised."""
    stored = store.latest_checkpoint()
    if stored is None:
        return Signed(
            None, None, "the ledger has no checkpoint yet; run `proctor checkpoint`"
        )
    note = stored.note.decode("utf-8", errors="replace")
    try:
        checkpoint = open_checkpoint(stored.note, verifiers, origin=origin)
    except (NoteError, CheckpointError) as exc:
        return Signed(None, note, f"the latest checkpoint does not verify: {exc}")
    if checkpoint.size != stored.size:
        return Signed(
            None,
            note,
            f"the checkpoint stored at size {stored.size} says {checkpoint.size}",
        )

    return Signed(checkpoint, note, None)


def prove(
    store: Store,
    bodies: Mapping[int, bytes],
    verifiers: Sequence[Verifier],
    origin: str | None,
) -> tuple[Proof, ...]:
    """Prove and verify every entry in ``bodies`` (index to canonical bytes).

    Leaves are hashed from the bytes given, never taken from the store; the
    checkpoint's signature is checked with ``verifiers``. A failing proof comes
    back with ``verified`` false and the reason, so a caller can show it.
    """
    return prove_against(store, bodies, latest_signed(store, verifiers, origin))


def prove_against(
    store: Store, bodies: Mapping[int, bytes], signed: Signed
) -> tuple[Proof, ...]:
    """Prove and verify entries against one checkpoint already opened."""
    leaves = {index: merkle.leaf_hash(data) for index, data in bodies.items()}
    size = signed.checkpoint.size if signed.checkpoint else 0
    plans = {
        index: merkle.inclusion_plan(index, size) for index in leaves if index < size
    }
    keys = [key for plan in plans.values() for keys in plan for key in keys]
    lookup = store.nodes(keys) if keys else {}

    return tuple(
        _one(index, leaf, plans.get(index), lookup, signed)
        for index, leaf in sorted(leaves.items())
    )


def _one(
    index: int,
    leaf: bytes,
    plan: list[list[NodeKey]] | None,
    lookup: Mapping[NodeKey, bytes],
    signed: Signed,
) -> Proof:
    checkpoint, note = signed.checkpoint, signed.note
    if checkpoint is None:
        return Proof(index, False, _b64(leaf), checkpoint=note, problem=signed.problem)
    size, root = checkpoint.size, _b64(checkpoint.root)
    if plan is None:
        return Proof(
            index,
            False,
            _b64(leaf),
            size,
            root,
            checkpoint=note,
            problem=(
                f"entry {index} is newer than the latest checkpoint (size {size}); "
                "sign one with `proctor checkpoint`"
            ),
        )
    try:
        path = merkle.build_proof(plan, lookup)
        merkle.verify_inclusion(leaf, index, size, path, checkpoint.root)
    except ProofError as exc:
        return Proof(
            index, False, _b64(leaf), size, root, checkpoint=note, problem=str(exc)
        )

    return Proof(
        index, True, _b64(leaf), size, root, tuple(_b64(node) for node in path), note
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
