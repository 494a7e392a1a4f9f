"""Tests for the Merkle tree: RFC 6962 vectors, golden probes and properties."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proctor.errors import LedgerError, ProofError
from proctor.ledger import merkle

# Every message a refused proof may carry; a probe must fail for a stated reason.
REFUSED = (
    r"mismatch|wrong proof length|not below|bytes, expected|refused|is above|differ"
)
MAX_SIZE = 300


def _load(vectors: Path, name: str) -> Any:
    return json.loads((vectors / name).read_text(encoding="utf-8"))


def _hexes(values: Sequence[str]) -> list[bytes]:
    return [bytes.fromhex(value) for value in values]


def _b64(value: str) -> bytes:
    return base64.b64decode(value)


def _b64s(values: Sequence[str] | None) -> list[bytes]:
    return [_b64(value) for value in values or []]


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _mth(leaves: Sequence[bytes]) -> bytes:
    """Naive RFC 9162 §2.1.1 MTH over leaf hashes, independent of the module."""
    if not leaves:
        return _sha(b"")
    if len(leaves) == 1:
        return leaves[0]
    split = 1
    while split * 2 < len(leaves):
        split *= 2

    return _sha(b"\x01" + _mth(leaves[:split]) + _mth(leaves[split:]))


LEAVES = [_sha(b"\x00" + index.to_bytes(4, "big")) for index in range(512)]


@functools.cache
def _all_nodes() -> dict[tuple[int, int], bytes]:
    """Every complete subtree of the 512-leaf tree, by naive recursion."""
    nodes: dict[tuple[int, int], bytes] = {}
    for level in range(10):
        width = 1 << level
        for index in range(len(LEAVES) // width):
            nodes[(level, index)] = _mth(LEAVES[index * width : (index + 1) * width])

    return nodes


def _nodes(size: int) -> dict[tuple[int, int], bytes]:
    """The complete subtrees that exist in the tree of the first ``size`` leaves."""
    return {
        (level, index): value
        for (level, index), value in _all_nodes().items()
        if (index + 1) << level <= size
    }


@functools.cache
def _root(size: int) -> bytes:
    return _mth(LEAVES[:size])


def _flip(value: bytes, bit: int) -> bytes:
    bit %= len(value) * 8
    flipped = bytearray(value)
    flipped[bit // 8] ^= 1 << (bit % 8)

    return bytes(flipped)


sizes = st.integers(min_value=1, max_value=MAX_SIZE)


@st.composite
def leaf_positions(draw: st.DrawFn) -> tuple[int, int]:
    """A tree size and a leaf index inside it."""
    size = draw(sizes)
    return draw(st.integers(min_value=0, max_value=size - 1)), size


@st.composite
def size_pairs(draw: st.DrawFn) -> tuple[int, int]:
    """An old tree size and a new one at least as large."""
    new = draw(sizes)
    return draw(st.integers(min_value=1, max_value=new)), new


class TestHasher:
    """The RFC 6962 hashing primitives match the transparency-dev vectors."""

    def test_every_hasher_vector(
        self, vectors: Path, subtests: pytest.Subtests
    ) -> None:
        """Empty root, leaf and node hashes equal every vector."""
        for case in _load(vectors, "rfc6962/hasher.json")["vectors"]:
            with subtests.test(msg=case["desc"]):
                want = bytes.fromhex(case["want_hex"])
                if case["op"] == "empty_root":
                    assert want == merkle.EMPTY_ROOT
                    assert merkle.root([]) == want
                elif case["op"] == "leaf":
                    assert merkle.leaf_hash(bytes.fromhex(case["input_hex"])) == want
                else:
                    left = bytes.fromhex(case["left_hex"])
                    right = bytes.fromhex(case["right_hex"])
                    assert merkle.node_hash(left, right) == want


class TestTree8:
    """The standard 8-leaf tree: roots, edges, nodes and proofs match the vectors."""

    @pytest.fixture
    def tree8(self, vectors: Path) -> Any:
        return _load(vectors, "rfc6962/tree8.json")

    @staticmethod
    def _lookup(tree8: Any, size: int) -> dict[tuple[int, int], bytes]:
        return {
            (level, index): bytes.fromhex(value)
            for level, row in enumerate(tree8["node_hashes_hex"])
            for index, value in enumerate(row)
            if (index + 1) << level <= size
        }

    def test_roots_of_every_size(self, tree8: Any) -> None:
        """root() and a compact range give the vector root for sizes 0 to 8."""
        leaves = [merkle.leaf_hash(data) for data in _hexes(tree8["leaf_inputs_hex"])]
        edge = merkle.CompactRange()
        for size, want in enumerate(_hexes(tree8["root_hashes_hex"])):
            assert merkle.root(leaves[:size]) == want
            assert edge.root() == want
            if size < len(leaves):
                edge.append(leaves[size])

    def test_compact_ranges_of_every_size(self, tree8: Any) -> None:
        """The edge after n appends holds the vector's perfect subtrees for n."""
        leaves = [merkle.leaf_hash(data) for data in _hexes(tree8["leaf_inputs_hex"])]
        by_size = tree8["compact_ranges"]["by_size"]
        for size, want in enumerate(by_size):
            edge = merkle.CompactRange()
            for leaf in leaves[:size]:
                edge.append(leaf)
            assert list(edge.hashes) == _hexes(want)

    def test_appends_complete_every_vector_node(self, tree8: Any) -> None:
        """The nodes returned by eight appends are exactly the vector's node hashes."""
        leaves = [merkle.leaf_hash(data) for data in _hexes(tree8["leaf_inputs_hex"])]
        edge = merkle.CompactRange()
        completed = [node for leaf in leaves for node in edge.append(leaf)]

        got = {(level, index): value for level, index, value in completed}
        assert len(got) == len(completed)
        assert got == self._lookup(tree8, 8)

    def test_inclusion_proofs(self, tree8: Any, subtests: pytest.Subtests) -> None:
        """Each vector inclusion proof verifies and equals the planned proof."""
        roots = _hexes(tree8["root_hashes_hex"])
        leaves = _hexes(tree8["node_hashes_hex"][0])
        for case in tree8["inclusion_proofs"]:
            index, size = case["leaf_index"], case["tree_size"]
            with subtests.test(msg=f"index {index} size {size}"):
                proof = _hexes(case["proof_hex"])
                merkle.verify_inclusion(leaves[index], index, size, proof, roots[size])
                plan = merkle.inclusion_plan(index, size)
                assert merkle.build_proof(plan, self._lookup(tree8, size)) == proof

    def test_consistency_proofs(self, tree8: Any, subtests: pytest.Subtests) -> None:
        """Each vector consistency proof verifies and equals the planned proof."""
        roots = _hexes(tree8["root_hashes_hex"])
        for case in tree8["consistency_proofs"]:
            old, new = case["size1"], case["size2"]
            with subtests.test(msg=f"{old} to {new}"):
                proof = _hexes(case["proof_hex"])
                merkle.verify_consistency(old, new, proof, roots[old], roots[new])
                plan = merkle.consistency_plan(old, new)
                assert merkle.build_proof(plan, self._lookup(tree8, new)) == proof


class TestInclusionProbes:
    """Every transparency-dev inclusion probe is accepted or refused as it says."""

    def test_every_probe(self, vectors: Path, subtests: pytest.Subtests) -> None:
        """A probe passes when wantErr is false and raises ProofError when true."""
        probes = _load(vectors, "merkle-probes/inclusion.json")["probes"]
        assert len(probes) == 98
        for probe in probes:
            with subtests.test(msg=probe["id"]):
                args = (
                    _b64(probe["leafHash"]),
                    probe["leafIdx"],
                    probe["treeSize"],
                    _b64s(probe["proof"]),
                    _b64(probe["root"]),
                )
                if probe["wantErr"]:
                    with pytest.raises(ProofError, match=REFUSED):
                        merkle.verify_inclusion(*args)
                else:
                    merkle.verify_inclusion(*args)


class TestConsistencyProbes:
    """Every transparency-dev consistency probe is accepted or refused as it says."""

    def test_every_probe(self, vectors: Path, subtests: pytest.Subtests) -> None:
        """A probe passes when wantErr is false and raises ProofError when true."""
        probes = _load(vectors, "merkle-probes/consistency.json")["probes"]
        assert len(probes) == 98
        for probe in probes:
            with subtests.test(msg=probe["id"]):
                args = (
                    probe["size1"],
                    probe["size2"],
                    _b64s(probe["proof"]),
                    _b64(probe["root1"]),
                    _b64(probe["root2"]),
                )
                if probe["wantErr"]:
                    with pytest.raises(ProofError, match=REFUSED):
                        merkle.verify_consistency(*args)
                else:
                    merkle.verify_consistency(*args)


class TestRoot:
    """root() is the RFC 9162 MTH of its leaf hashes."""

    def test_empty_tree(self) -> None:
        """The empty tree's root is the hash of the empty string."""
        assert merkle.root([]) == hashlib.sha256(b"").digest()

    @given(sizes)
    def test_matches_naive_mth(self, size: int) -> None:
        """root() equals the naive recursive MTH for any size."""
        assert merkle.root(LEAVES[:size]) == _root(size)


class TestSubtreeKeys:
    """subtree_keys tiles a leaf range with aligned complete subtrees."""

    def test_examples(self) -> None:
        """A few ranges decompose as drawn by hand."""
        assert merkle.subtree_keys(0, 0) == []
        assert merkle.subtree_keys(0, 7) == [(2, 0), (1, 2), (0, 6)]
        assert merkle.subtree_keys(3, 8) == [(0, 3), (2, 1)]
        assert merkle.subtree_keys(5, 13) == [(0, 5), (1, 3), (2, 2), (0, 12)]

    @given(st.integers(0, 2000), st.integers(0, 2000))
    def test_tiles_the_range(self, start: int, width: int) -> None:
        """The keys are aligned, adjacent, cover exactly the range and stay few."""
        keys = merkle.subtree_keys(start, start + width)
        position = start
        for level, index in keys:
            assert index << level == position
            position += 1 << level
        assert position == start + width
        assert len(keys) <= 2 * max(1, width.bit_length())

    def test_refuses_reversed_range(self) -> None:
        """A range that ends before it starts is refused."""
        with pytest.raises(LedgerError, match=r"leaf range \[5, 4\) is not a valid"):
            merkle.subtree_keys(5, 4)


class TestFold:
    """fold combines a ragged subtree's parts from the right."""

    def test_single_part(self) -> None:
        """One part is its own hash."""
        assert merkle.fold([LEAVES[0]]) == LEAVES[0]

    @given(st.integers(0, 9), st.data())
    def test_ragged_range_hash(self, level: int, data: Any) -> None:
        """Folding the keys of a right edge [a, a + w) gives the MTH of those leaves."""
        block = 1 << level
        start = data.draw(st.integers(0, len(LEAVES) // block - 1), label="at") * block
        end = start + data.draw(st.integers(1, block), label="width")
        nodes = _all_nodes()
        parts = [nodes[key] for key in merkle.subtree_keys(start, end)]

        assert merkle.fold(parts) == _mth(LEAVES[start:end])

    def test_refuses_nothing(self) -> None:
        """There is no hash of zero parts."""
        with pytest.raises(LedgerError, match="cannot fold an empty list"):
            merkle.fold([])


class TestInclusion:
    """Planned inclusion proofs verify, and any tampering is caught."""

    @given(leaf_positions())
    def test_planned_proof_verifies(self, position: tuple[int, int]) -> None:
        """The proof built from the plan verifies against the naive root."""
        index, size = position
        plan = merkle.inclusion_plan(index, size)
        proof = merkle.build_proof(plan, _nodes(size))

        merkle.verify_inclusion(LEAVES[index], index, size, proof, _root(size))

    @given(leaf_positions())
    def test_plan_costs_few_reads(self, position: tuple[int, int]) -> None:
        """A plan names O(log n) subtrees, all inside the tree."""
        index, size = position
        keys = [
            key for element in merkle.inclusion_plan(index, size) for key in element
        ]

        assert len(keys) <= 2 * size.bit_length()
        assert all((i + 1) << level <= size for level, i in keys)

    @given(leaf_positions(), st.data())
    def test_any_flipped_bit_fails(self, position: tuple[int, int], data: Any) -> None:
        """Flipping one bit of a proof hash, the leaf hash or the root is refused."""
        index, size = position
        proof = merkle.build_proof(merkle.inclusion_plan(index, size), _nodes(size))
        leaf, root = LEAVES[index], _root(size)
        target = data.draw(st.integers(0, len(proof) + 1), label="target")
        bit = data.draw(st.integers(0, 255), label="bit")
        if target < len(proof):
            proof[target] = _flip(proof[target], bit)
        elif target == len(proof):
            leaf = _flip(leaf, bit)
        else:
            root = _flip(root, bit)

        with pytest.raises(ProofError, match="inclusion root mismatch"):
            merkle.verify_inclusion(leaf, index, size, proof, root)

    def test_single_leaf_tree(self) -> None:
        """A tree of one leaf has an empty proof and the leaf hash as root."""
        assert merkle.inclusion_plan(0, 1) == []
        merkle.verify_inclusion(LEAVES[0], 0, 1, [], LEAVES[0])

    def test_plan_refuses_index_at_size(self) -> None:
        """No plan exists for a leaf that is not in the tree."""
        with pytest.raises(ProofError, match="leaf index 8 is not below size 8"):
            merkle.inclusion_plan(8, 8)

    def test_refuses_index_at_size(self) -> None:
        """An index equal to the size is refused before any hashing."""
        with pytest.raises(ProofError, match="leaf index 3 is not below tree size 3"):
            merkle.verify_inclusion(LEAVES[3], 3, 3, [], _root(3))

    def test_refuses_negative_index(self) -> None:
        """A negative index is refused."""
        with pytest.raises(ProofError, match="leaf index -1 is not below"):
            merkle.verify_inclusion(LEAVES[0], -1, 3, [], _root(3))

    def test_refuses_short_proof(self) -> None:
        """A proof missing its last hash is refused by length."""
        proof = merkle.build_proof(merkle.inclusion_plan(2, 7), _nodes(7))
        with pytest.raises(ProofError, match="got 2 hashes, expected 3"):
            merkle.verify_inclusion(LEAVES[2], 2, 7, proof[:-1], _root(7))

    def test_refuses_long_proof(self) -> None:
        """A proof with an extra hash is refused by length."""
        proof = merkle.build_proof(merkle.inclusion_plan(2, 7), _nodes(7))
        with pytest.raises(ProofError, match="got 4 hashes, expected 3"):
            merkle.verify_inclusion(LEAVES[2], 2, 7, [*proof, LEAVES[0]], _root(7))

    def test_refuses_short_hash(self) -> None:
        """A proof hash that is not 32 bytes is refused."""
        proof = merkle.build_proof(merkle.inclusion_plan(2, 7), _nodes(7))
        proof[1] = proof[1][:31]
        with pytest.raises(ProofError, match="proof hash 1 is 31 bytes, expected 32"):
            merkle.verify_inclusion(LEAVES[2], 2, 7, proof, _root(7))

    def test_refuses_short_leaf_hash(self) -> None:
        """A leaf hash that is not 32 bytes is refused."""
        with pytest.raises(ProofError, match="leaf hash is 0 bytes, expected 32"):
            merkle.verify_inclusion(b"", 0, 1, [], LEAVES[0])

    def test_refuses_wrong_leaf(self) -> None:
        """A proof for one leaf does not verify another."""
        proof = merkle.build_proof(merkle.inclusion_plan(2, 7), _nodes(7))
        with pytest.raises(ProofError, match="inclusion root mismatch: computed"):
            merkle.verify_inclusion(LEAVES[3], 2, 7, proof, _root(7))

    def test_build_refuses_missing_node(self) -> None:
        """A lookup without a planned subtree cannot give a proof."""
        plan = merkle.inclusion_plan(2, 7)
        with pytest.raises(ProofError, match=r"subtree \(0, 3\) is missing"):
            merkle.build_proof(plan, {})


class TestConsistency:
    """Planned consistency proofs verify, and any tampering is caught."""

    @given(size_pairs())
    def test_planned_proof_verifies(self, pair: tuple[int, int]) -> None:
        """The proof built from the plan verifies against the naive roots."""
        old, new = pair
        proof = merkle.build_proof(merkle.consistency_plan(old, new), _nodes(new))

        merkle.verify_consistency(old, new, proof, _root(old), _root(new))

    @given(size_pairs())
    def test_plan_costs_few_reads(self, pair: tuple[int, int]) -> None:
        """A plan names O(log n) subtrees, all inside the new tree."""
        old, new = pair
        keys = [key for element in merkle.consistency_plan(old, new) for key in element]

        assert len(keys) <= 2 * new.bit_length()
        assert all((i + 1) << level <= new for level, i in keys)

    @given(size_pairs(), st.data())
    def test_any_flipped_bit_fails(self, pair: tuple[int, int], data: Any) -> None:
        """Flipping one bit of a proof hash or either root is refused."""
        old, new = pair
        proof = merkle.build_proof(merkle.consistency_plan(old, new), _nodes(new))
        old_root, new_root = _root(old), _root(new)
        target = data.draw(st.integers(0, len(proof) + 1), label="target")
        bit = data.draw(st.integers(0, 255), label="bit")
        if target < len(proof):
            proof[target] = _flip(proof[target], bit)
        elif target == len(proof):
            old_root = _flip(old_root, bit)
        else:
            new_root = _flip(new_root, bit)

        with pytest.raises(ProofError, match=r"mismatch|roots differ"):
            merkle.verify_consistency(old, new, proof, old_root, new_root)

    @given(size_pairs())
    def test_other_tree_fails(self, pair: tuple[int, int]) -> None:
        """A proof does not tie the old root to a tree that is not its extension."""
        old, new = pair
        proof = merkle.build_proof(merkle.consistency_plan(old, new), _nodes(new))
        forged = _mth([*LEAVES[: new - 1], _sha(b"forged")])

        with pytest.raises(ProofError, match=r"mismatch|roots differ"):
            merkle.verify_consistency(old, new, proof, _root(old), forged)

    def test_equal_sizes(self) -> None:
        """Equal sizes need an empty proof and the same root."""
        assert merkle.consistency_plan(5, 5) == []
        merkle.verify_consistency(5, 5, [], _root(5), _root(5))

    def test_equal_sizes_refuse_a_proof(self) -> None:
        """Equal sizes with any proof hash are refused."""
        with pytest.raises(ProofError, match="got 1 hashes, expected 0"):
            merkle.verify_consistency(5, 5, [LEAVES[0]], _root(5), _root(5))

    def test_equal_sizes_refuse_different_roots(self) -> None:
        """Equal sizes with different roots are refused."""
        with pytest.raises(ProofError, match="roots differ for the same tree size 5"):
            merkle.verify_consistency(5, 5, [], _root(5), _root(4))

    @pytest.mark.parametrize("new", [0, 1, 8])
    def test_refuses_old_size_zero(self, new: int) -> None:
        """Consistency from the empty tree is refused, even 0 to 0."""
        with pytest.raises(ProofError, match=r"old size 0\) proves nothing"):
            merkle.verify_consistency(0, new, [], merkle.EMPTY_ROOT, _root(new))

    def test_plan_refuses_old_size_zero(self) -> None:
        """No plan is made from the empty tree."""
        with pytest.raises(ProofError, match=r"old size 0\) proves nothing"):
            merkle.consistency_plan(0, 4)

    def test_refuses_shrinking(self) -> None:
        """An old size above the new size is refused."""
        with pytest.raises(
            ProofError, match="old tree size 5 is above new tree size 4"
        ):
            merkle.verify_consistency(5, 4, [], _root(5), _root(4))

    def test_refuses_negative_size(self) -> None:
        """A negative size is refused."""
        with pytest.raises(ProofError, match="must not be negative, got -1 and 4"):
            merkle.consistency_plan(-1, 4)

    def test_refuses_truncated_proof(self) -> None:
        """A proof missing its last hash is refused by length."""
        proof = merkle.build_proof(merkle.consistency_plan(6, 8), _nodes(8))
        with pytest.raises(ProofError, match="got 2 hashes, expected 3"):
            merkle.verify_consistency(6, 8, proof[:-1], _root(6), _root(8))

    def test_refuses_wrong_old_root(self) -> None:
        """A proof does not tie a different old root to the new one."""
        proof = merkle.build_proof(merkle.consistency_plan(6, 8), _nodes(8))
        with pytest.raises(ProofError, match="consistency old root mismatch"):
            merkle.verify_consistency(6, 8, proof, _root(5), _root(8))


class TestCompactRange:
    """The streaming edge gives the same roots and nodes as the whole tree."""

    def test_empty(self) -> None:
        """A new edge has size 0 and the empty root."""
        edge = merkle.CompactRange()
        assert edge.size == 0
        assert edge.root() == merkle.EMPTY_ROOT
        assert merkle.CompactRange.keys_for(0) == []

    @given(sizes)
    def test_root_of_every_prefix(self, size: int) -> None:
        """After each append the root equals the naive root of that prefix."""
        edge = merkle.CompactRange()
        for count, leaf in enumerate(LEAVES[:size], start=1):
            edge.append(leaf)
            assert edge.size == count
            assert edge.root() == _root(count)

    @given(sizes)
    def test_appends_yield_every_complete_node(self, size: int) -> None:
        """The nodes returned by appends are the tree's complete subtrees, once each."""
        edge = merkle.CompactRange()
        completed: list[tuple[int, int, bytes]] = []
        for index, leaf in enumerate(LEAVES[:size]):
            nodes = edge.append(leaf)
            assert nodes[0] == (0, index, leaf)
            completed.extend(nodes)

        assert {(lvl, i): value for lvl, i, value in completed} == _nodes(size)
        assert len(completed) == len(_nodes(size))

    @given(sizes, st.integers(0, 40))
    def test_from_nodes_rebuilds_state(self, size: int, more: int) -> None:
        """An edge rebuilt from stored nodes equals the streamed one and grows alike."""
        streamed = merkle.CompactRange()
        for leaf in LEAVES[:size]:
            streamed.append(leaf)
        keys = merkle.CompactRange.keys_for(size)
        stored = _nodes(size)
        lookup = {key: stored[key] for key in keys}
        rebuilt = merkle.CompactRange.from_nodes(size, lookup)

        assert (rebuilt.size, rebuilt.hashes) == (streamed.size, streamed.hashes)
        for leaf in LEAVES[size : size + more]:
            assert rebuilt.append(leaf) == streamed.append(leaf)
        assert rebuilt.root() == streamed.root() == _root(streamed.size)

    def test_from_nodes_refuses_missing_node(self) -> None:
        """Rebuilding without a needed subtree is refused, naming it."""
        with pytest.raises(LedgerError, match=r"needs subtree \(0, 6\)"):
            merkle.CompactRange.from_nodes(7, {(2, 0): LEAVES[0], (1, 2): LEAVES[1]})

    def test_copy_is_independent(self) -> None:
        """Appending to a copy leaves the original as it was."""
        edge = merkle.CompactRange()
        for leaf in LEAVES[:5]:
            edge.append(leaf)
        twin = edge.copy()
        twin.append(LEAVES[5])

        assert (edge.size, edge.root()) == (5, _root(5))
        assert (twin.size, twin.root()) == (6, _root(6))

    def test_repr_names_size_and_root(self) -> None:
        """The repr shows the size and the root in hex."""
        edge = merkle.CompactRange()
        edge.append(LEAVES[0])
        assert repr(edge) == f"CompactRange(size=1, root={LEAVES[0].hex()})"
