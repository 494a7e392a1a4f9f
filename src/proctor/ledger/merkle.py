"""The ledger's Merkle tree: RFC 6962 / RFC 9162 §2 hashing over SHA-256, proof plans
that name stored subtrees, and the pure verifiers of inclusion and consistency.

A complete subtree is keyed ``(level, index)``: it covers leaves
``[index * 2**level, (index + 1) * 2**level)``; level 0 holds the leaf hashes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from proctor.errors import LedgerError, ProofError

NodeKey = tuple[int, int]
"""A complete subtree as ``(level, index)``."""

Plan = list[list[NodeKey]]
"""Per proof element, the complete subtrees whose folded hash is that element."""

HASH_SIZE = 32

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""RFC 9162 §2.1.1: the hash of the empty tree is the hash of the empty string."""

_LEAF = b"\x00"
_NODE = b"\x01"
_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """Return the RFC 9162 §2.1.1 hash of one leaf: SHA-256(0x00 || data)."""
    return _sha256(_LEAF + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 9162 §2.1.1 hash of an inner node: SHA-256(0x01 || l || r)."""
    return _sha256(_NODE + left + right).digest()


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """Return the Merkle tree hash of the given leaf hashes, all held in memory."""
    if not leaf_hashes:
        return EMPTY_ROOT
    level = list(leaf_hashes)
    # Pairing neighbours and lifting an odd last node unchanged gives the same tree as
    # RFC 9162 §2.1.1's split at the largest power of two below the size.
    while len(level) > 1:
        paired = [
            node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired

    return level[0]


def fold(hashes: Sequence[bytes]) -> bytes:
    """Return the hash of a ragged subtree from its complete parts, left to right.

    Raises LedgerError when there are no parts.
    """
    if not hashes:
        raise LedgerError("cannot fold an empty list of subtree hashes")
    result = hashes[-1]
    # The right edge of an RFC 9162 tree hangs each smaller subtree under the next
    # larger one, so the parts are combined from the right.
    for part in reversed(hashes[:-1]):
        result = _sha256(_NODE + part + result).digest()

    return result


def subtree_keys(start: int, end: int) -> list[NodeKey]:
    """Return the complete subtrees that tile leaves ``[start, end)``, left to right.

    Raises LedgerError when the range is negative or reversed.
    """
    if not 0 <= start <= end:
        raise LedgerError(f"leaf range [{start}, {end}) is not a valid range")
    keys: list[NodeKey] = []
    while start < end:
        level = (end - start).bit_length() - 1
        if start:
            # A subtree must start at a multiple of its own width.
            level = min(level, (start & -start).bit_length() - 1)
        keys.append((level, start >> level))
        start += 1 << level

    return keys


class CompactRange:
    """The right edge of a growing tree: its root in O(log n) memory.

    Holds the hashes of the complete subtrees that tile leaves ``[0, size)``, one per
    set bit of ``size``, the largest first.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._hashes: list[bytes] = []

    @property
    def size(self) -> int:
        """The number of leaves appended so far."""
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """The hashes of the complete subtrees on the edge, the largest first."""
        return tuple(self._hashes)

    @staticmethod
    def keys_for(size: int) -> list[NodeKey]:
        """Return the stored subtrees that ``from_nodes`` needs for ``size`` leaves.

        Raises LedgerError when the size is negative.
        """
        return subtree_keys(0, size)

    @classmethod
    def from_nodes(cls, size: int, lookup: Mapping[NodeKey, bytes]) -> CompactRange:
        """Rebuild the edge of a tree of ``size`` leaves from its stored subtrees.

        Raises LedgerError when the size is negative or a needed subtree is missing.
        """
        edge = cls()
        for key in cls.keys_for(size):
            found = lookup.get(key)
            if found is None:
                raise LedgerError(
                    f"the edge of a tree of size {size} needs subtree {key}, "
                    "which the lookup lacks"
                )
            edge._hashes.append(found)
        edge._size = size

        return edge

    def append(self, leaf_hash: bytes) -> list[tuple[int, int, bytes]]:
        """Add one leaf hash; return the subtrees it completes, the leaf itself first.

        Each is ``(level, index, hash)``, ready to store.
        """
        index = self._size
        hashes = self._hashes
        completed = [(0, index, leaf_hash)]
        level, node = 0, leaf_hash
        # Each trailing one bit of the old size is a left sibling now complete.
        while index & 1:
            node = _sha256(_NODE + hashes.pop() + node).digest()
            index >>= 1
            level += 1
            completed.append((level, index, node))
        hashes.append(node)
        self._size += 1

        return completed

    def root(self) -> bytes:
        """Return the root hash of the tree of all leaves appended so far."""
        if not self._hashes:
            return EMPTY_ROOT
        return fold(self._hashes)

    def copy(self) -> CompactRange:
        """Return an independent copy, for building a batch that may be dropped."""
        twin = CompactRange()
        twin._size = self._size
        twin._hashes = self._hashes.copy()

        return twin

    def __repr__(self) -> str:
        return f"CompactRange(size={self._size}, root={self.root().hex()})"


def inclusion_plan(index: int, size: int) -> Plan:
    """Plan the proof that leaf ``index`` is in the tree of ``size`` leaves.

    The plan lists, leaf to root, the subtrees whose folded hashes are the RFC 9162
    §2.1.3.1 audit path. Raises ProofError when ``index`` is not below ``size``.
    """
    if not 0 <= index < size:
        raise ProofError(
            f"no inclusion proof: leaf index {index} is not below size {size}"
        )
    siblings: list[tuple[int, int]] = []
    low, high = 0, size
    # RFC 9162 §2.1.3.1 PATH: descend from the root, keeping the sibling of each turn.
    while high - low > 1:
        split = low + _largest_power_below(high - low)
        if index < split:
            siblings.append((split, high))
            high = split
        else:
            siblings.append((low, split))
            low = split

    return [subtree_keys(start, end) for start, end in reversed(siblings)]


def consistency_plan(old: int, new: int) -> Plan:
    """Plan the proof that the tree of ``old`` leaves is a prefix of ``new``.

    The plan follows RFC 9162 §2.1.4.1 SUBPROOF; equal sizes give an empty plan.
    Raises ProofError when ``old`` is 0 (there is nothing to prove; see
    ``verify_consistency``) or above ``new``.
    """
    _check_consistency_sizes(old, new)
    if old == new:
        return []
    parts: list[tuple[int, int]] = []
    low, high, whole = 0, new, True
    while old != high:
        split = low + _largest_power_below(high - low)
        if old <= split:
            parts.append((split, high))
            high = split
        else:
            parts.append((low, split))
            low, whole = split, False
    # The old tree's own root is left out while it is one subtree of the new tree.
    if not whole:
        parts.append((low, high))

    return [subtree_keys(start, end) for start, end in reversed(parts)]


def build_proof(
    plan: Sequence[Sequence[NodeKey]], lookup: Mapping[NodeKey, bytes]
) -> list[bytes]:
    """Fold a plan's stored subtrees into proof hashes.

    Raises ProofError when the lookup lacks a subtree the plan names.
    """
    proof: list[bytes] = []
    for element in plan:
        parts: list[bytes] = []
        for key in element:
            found = lookup.get(key)
            if found is None:
                raise ProofError(f"cannot build the proof: subtree {key} is missing")
            parts.append(found)
        proof.append(fold(parts))

    return proof


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` with ``root``.

    Raises ProofError when the index is not below the size, a hash has the wrong
    length, the proof has the wrong number of hashes, or the root does not match.
    """
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not below tree size {size}")
    _check_hash_length("leaf hash", leaf_hash)
    _check_proof(proof, _inclusion_length(index, size))

    # RFC 9162 §2.1.3.2 steps 2 to 5. Once the path meets the right border
    # (position == last) the two stay equal and every later hash is a left sibling;
    # the RFC's extra shifts there only count levels, which the exact length check
    # above has already done, so they are left out.
    position, last = index, size - 1
    result = leaf_hash
    for sibling in proof:
        if position & 1 or position == last:
            result = node_hash(sibling, result)
        else:
            result = node_hash(result, sibling)
        position >>= 1
        last >>= 1
    _check_root("inclusion", result, root)


def verify_consistency(
    old_size: int,
    new_size: int,
    proof: Sequence[bytes],
    old_root: bytes,
    new_root: bytes,
) -> None:
    """Check that the tree of ``old_size`` leaves is a prefix of the new tree.

    The check is strict: an old size of 0 raises, even 0 -> 0, as current
    transparency-dev/merkle does, because the empty tree is a prefix of every tree
    and no proof can say anything about it. A client or witness (C2SP tlog-witness)
    that starts from size 0 has nothing to check: it must not call this, and must
    only insist that the proof it was given is empty.

    Raises ProofError when a size is out of range, a hash has the wrong length, the
    proof has the wrong number of hashes, or either root does not match.
    """
    _check_consistency_sizes(old_size, new_size)
    if old_size == new_size:
        # SUBPROOF gives nothing for equal sizes, so RFC 9162 §2.1.4.2 has no path
        # to check; as in transparency-dev/merkle, the roots must then be equal.
        _check_proof(proof, 0)
        if old_root != new_root:
            raise ProofError(
                f"roots differ for the same tree size {old_size}: "
                f"{old_root.hex()} and {new_root.hex()}"
            )
        return
    _check_proof(proof, _consistency_length(old_size, new_size))

    # RFC 9162 §2.1.4.2 step 2: an old tree that is one complete subtree of the new
    # one is not in the proof; its root seeds both computations.
    hashes = list(proof)
    if old_size & (old_size - 1) == 0:
        hashes.insert(0, old_root)
    position, last = old_size - 1, new_size - 1
    # Step 4: start from the level of the seed, the old tree's last complete subtree.
    while position & 1:
        position >>= 1
        last >>= 1
    old_result = new_result = hashes[0]
    # Steps 5 to 7, shortened at the right border as in ``verify_inclusion``.
    for sibling in hashes[1:]:
        if position & 1 or position == last:
            old_result = node_hash(sibling, old_result)
            new_result = node_hash(sibling, new_result)
        else:
            new_result = node_hash(new_result, sibling)
        position >>= 1
        last >>= 1
    _check_root("consistency old", old_result, old_root)
    _check_root("consistency new", new_result, new_root)


def _largest_power_below(width: int) -> int:
    # RFC 9162 §2.1.1: k is the largest power of two smaller than n (n > 1).
    return 1 << ((width - 1).bit_length() - 1)


def _inclusion_length(index: int, size: int) -> int:
    # Below the level where the paths to the leaf and to the last leaf part, every
    # level has a sibling; above it, only the levels where the leaf is a right child.
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def _consistency_length(old: int, new: int) -> int:
    # The proof is the inclusion path of the old tree's last complete subtree, seen
    # from that subtree's level, plus that subtree itself unless it is the old root.
    shift = (old & -old).bit_length() - 1
    inner = (((old - 1) >> shift) ^ ((new - 1) >> shift)).bit_length()
    border = ((old - 1) >> shift >> inner).bit_count()
    seed = 0 if old == 1 << shift else 1

    return seed + inner + border


def _check_consistency_sizes(old: int, new: int) -> None:
    if old < 0 or new < 0:
        raise ProofError(f"tree sizes must not be negative, got {old} and {new}")
    if old == 0:
        raise ProofError(
            "consistency from the empty tree (old size 0) proves nothing and is refused"
        )
    if old > new:
        raise ProofError(f"old tree size {old} is above new tree size {new}")


def _check_proof(proof: Sequence[bytes], expected: int) -> None:
    if len(proof) != expected:
        raise ProofError(
            f"wrong proof length: got {len(proof)} hashes, expected {expected}"
        )
    for position, element in enumerate(proof):
        _check_hash_length(f"proof hash {position}", element)


def _check_hash_length(what: str, value: bytes) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} is {len(value)} bytes, expected {HASH_SIZE}")


def _check_root(what: str, computed: bytes, expected: bytes) -> None:
    if computed != expected:
        raise ProofError(
            f"{what} root mismatch: computed {computed.hex()}, "
            f"expected {expected.hex()}"
        )
