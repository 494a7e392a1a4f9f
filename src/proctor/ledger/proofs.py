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
    _check_size(store, size)
    return _build(store, merkle.inclusion_plan(index, size))


def consistency_proof(store: Store, old: int, new: int) -> list[bytes]:
    """Return the proof that the tree of ``old`` entries is a prefix of ``new``."""
    _check_size(store, new)
    return _build(store, merkle.consistency_plan(old, new))


def root(store: Store, size: int) -> bytes:
    """Return the root hash of the tree of the first ``size`` entries."""
    _check_size(store, size)
    keys = merkle.subtree_keys(0, size)
    if not keys:
        return merkle.EMPTY_ROOT
    lookup = store.nodes(keys)

    return merkle.fold([_node(lookup, key) for key in keys])


def _check_size(store: Store, size: int) -> None:
    known = store.size()
    if not 0 <= size <= known:
        raise LedgerError(f"tree size {size} is beyond the ledger's {known} entries")


def _build(store: Store, plan: list[list[NodeKey]]) -> list[bytes]:
    lookup = store.nodes(key for keys in plan for key in keys)
    for keys in plan:
        for key in keys:
            _node(lookup, key)

    return merkle.build_proof(plan, lookup)


def _node(lookup: Mapping[NodeKey, bytes], key: NodeKey) -> bytes:
    try:
        return lookup[key]
    except KeyError:
        raise LedgerError(f"the store lacks the hash of subtree {key}") from None
