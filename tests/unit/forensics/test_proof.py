"""Inclusion proofs against the latest signed checkpoint, verified on the spot: they
hold for the entries as stored and fail, with the reason, for anything else."""

from __future__ import annotations

from pathlib import Path

from proctor.forensics.proof import prove
from proctor.ledger.note import Signer, Verifier
from proctor.storage.sqlite import SqliteStore

from .conftest import ORIGIN, STORY, Trail, open_ledger


def bodies(trail: Trail) -> dict[int, bytes]:
    return dict(enumerate(trail.store.entries()))


class TestProve:
    def test_every_entry_verifies(self, trail: Trail) -> None:
        """Each stored entry is proved in the checkpoint over all of them."""
        proofs = prove(trail.store, bodies(trail), [trail.verifier], ORIGIN)

        assert [proof.index for proof in proofs] == list(range(len(STORY)))
        assert all(proof.verified for proof in proofs)
        assert {proof.size for proof in proofs} == {len(STORY)}
        assert proofs[0].checkpoint is not None
        assert proofs[0].checkpoint.startswith(ORIGIN)

    def test_changed_bytes_fail(self, trail: Trail) -> None:
        """An entry that differs from what was signed does not prove."""
        changed = {4: trail.store.entry(4).replace(b"1500000", b"1500001")}
        (proof,) = prove(trail.store, changed, [trail.verifier], ORIGIN)

        assert not proof.verified
        assert proof.problem is not None

    def test_other_key_fails_every_proof(self, trail: Trail) -> None:
        """A checkpoint no trusted key signed proves nothing."""
        stranger = Verifier.from_key_string(
            Signer.generate(ORIGIN).verifier_key_string()
        )
        proofs = prove(trail.store, bodies(trail), [stranger], ORIGIN)

        assert not any(proof.verified for proof in proofs)
        assert "does not verify" in str(proofs[0].problem)

    def test_other_origin_fails(self, trail: Trail) -> None:
        """A checkpoint of another log is refused."""
        (proof,) = prove(trail.store, {0: trail.store.entry(0)}, [trail.verifier], "x")

        assert not proof.verified
        assert "origin" in str(proof.problem)

    def test_entry_after_the_checkpoint(self, trail: Trail) -> None:
        """An entry newer than the latest checkpoint says to sign one."""
        ledger = open_ledger(trail.store, trail.signer)
        try:
            index = ledger.append("test.note", {"text": "late"}).index
            (proof,) = prove(
                trail.store, {index: trail.store.entry(index)}, [trail.verifier], ORIGIN
            )
        finally:
            ledger.close()

        assert not proof.verified
        assert "proctor checkpoint" in str(proof.problem)

    def test_no_checkpoint_yet(self, tmp_path: Path) -> None:
        """A ledger without a checkpoint proves nothing and says why."""
        signer = Signer.generate(ORIGIN)
        with SqliteStore(tmp_path / "l.db") as store:
            ledger = open_ledger(store, signer)
            ledger.append("test.note", {"text": "first"})
            verifier = Verifier.from_key_string(signer.verifier_key_string())
            (proof,) = prove(store, {0: store.entry(0)}, [verifier], ORIGIN)
            ledger.close()

        assert not proof.verified
        assert "no checkpoint yet" in str(proof.problem)
