"""Proofs and roots read from a store: O(log n) subtree hashes in one round trip."""

from __future__ import annotations

from collections.abc import Mapping

from proctor.errors import LedgerError
from proctor.ledger import merkle
from proctor.storage.interface import NodeKey, Store


def inclusion_proof(store: Store, index: int, size: int) -> list[bytes]:
    """Return the proof that entry ``index`` is in the tree of ``size`` entries.

    Raises LedgerError when ``size`` is beyond the store, ProofError for a bad index.
    """
    return _build(store, size, merkle.inclusion_plan(index, size))


def consistency_proof(store: Store, old: int, new: int) -> list[bytes]:
    """Return the proof that the tree of ``old`` entries is a prefix of ``new``."""
    return _build(store, new, merkle.consistency_plan(old, new))


def root(store: Store, size: int) -> bytes:
    """Return the root hash of the tree of the first ``size`` entries."""
    keys = merkle.subtree_keys(0, size)
    if not keys:
        return merkle.EMPTY_ROOT
    lookup = _lookup(store, size, keys)

    return merkle.fold([lookup[key] for key in keys])


def _build(store: Store, size: int, plan: list[list[NodeKey]]) -> list[bytes]:
    return merkle.build_proof(
        plan, _lookup(store, size, [k for ks in plan for k in ks])
    )


def _lookup(store: Store, size: int, keys: list[NodeKey]) -> Mapping[NodeKey, bytes]:
    # One round trip in the common case: a tree beyond the ledger needs a subtree the
    # store cannot have, so the size is only read to explain a missing hash.
    lookup = store.nodes(keys)
    missing = [key for key in keys if key not in lookup]
    if missing or not keys:
        known = store.size()
        if size > known:
            raise LedgerError(
                f"tree size {size} is beyond the ledger's {known} entries"
            )
        if missing:
            raise LedgerError(f"the store lacks the hash of subtree {missing[0]}")
    return lookup
