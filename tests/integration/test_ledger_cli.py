"""The ledger commands end to end on a real SQLite home, including every tamper case
that ``proctor verify`` must catch."""

from __future__ import annotations

import base64
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from proctor.home import Home
from proctor.ledger import merkle
from proctor.ledger.checkpoint import Checkpoint, sign_checkpoint
from proctor.ledger.log import CheckpointPolicy, Ledger
from proctor.ledger.note import Signer

from .conftest import Cli

ENTRIES = 50
FUTURE = "2099-01-01T00:00:00.000000Z"


@pytest.fixture
def filled(home: Home) -> Home:
    """A home whose ledger holds 50 entries with a checkpoint every 10."""
    ledger = Ledger(
        home.open_store(),
        home.signer(),
        origin=home.config().ledger.origin,
        policy=CheckpointPolicy(every=10, interval=0),
    )
    for number in range(ENTRIES):
        ledger.append("test.payment", {"amount": number * 100, "vendor": "acme"})
    ledger.close()
    ledger.store.close()

    return home


def tamper(home: Home, *statements: str, keep_triggers: bool = False) -> None:
    """Run SQL on the ledger file as an attacker with file access would."""
    db = sqlite3.connect(home.ledger_db)
    if not keep_triggers:
        names = db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        for (name,) in names.fetchall():
            db.execute(f'DROP TRIGGER "{name}"')
    for statement in statements:
        db.execute(statement)
    db.commit()
    db.close()


def rewrite(home: Home, index: int, edited: str) -> None:
    """Replace one entry and recompute every stored hash to match, as an attacker
    who knows the tree would."""
    bodies = [body(home, number).encode() for number in range(home_size(home))]
    bodies[index] = edited.encode()
    edge = merkle.CompactRange()
    rewritten = [
        node for data in bodies for node in edge.append(merkle.leaf_hash(data))
    ]
    tamper(
        home,
        f"UPDATE entries SET body = CAST('{edited}' AS BLOB) WHERE idx = {index}",
        *(
            f"UPDATE nodes SET hash = x'{digest.hex()}' "
            f"WHERE level = {level} AND idx = {number}"
            for level, number, digest in rewritten
        ),
    )


def home_size(home: Home) -> int:
    db = sqlite3.connect(home.ledger_db)
    (size,) = db.execute("SELECT count(*) FROM entries").fetchone()
    db.close()

    return int(size)


def body(home: Home, index: int) -> str:
    db = sqlite3.connect(home.ledger_db)
    (data,) = db.execute("SELECT body FROM entries WHERE idx = ?", (index,)).fetchone()
    db.close()

    return bytes(data).decode()


class TestIntactLedger:
    def test_verify_passes(self, filled: Home, cli: Cli) -> None:
        """An untouched ledger verifies with exit 0 and counts every entry."""
        result = cli("verify", "--home", str(filled.path))

        assert result.code == 0, result.err
        assert f"OK: {ENTRIES} entries verified" in result.out

    def test_verify_json(self, filled: Home, cli: Cli) -> None:
        """--json reports size, checkpoints and the recomputed root."""
        result = cli("verify", "--home", str(filled.path), "--json")
        report = json.loads(result.out)

        assert report["ok"] is True
        assert report["size"] == ENTRIES
        assert report["checkpoints"] == ENTRIES // 10

    def test_empty_ledger_verifies(self, home: Home, cli: Cli) -> None:
        """A new home's empty ledger verifies."""
        result = cli("verify", "--home", str(home.path))

        assert result.code == 0, result.err
        assert "OK: 0 entries" in result.out


class TestSignedWithin:
    def test_a_signed_ledger_passes_with_zero(self, filled: Home, cli: Cli) -> None:
        """A ledger closed cleanly has every entry signed, so even 0 s passes."""
        result = cli("verify", "--home", str(filled.path), "--signed-within", "0")
        report = json.loads(cli("verify", "--home", str(filled.path), "--json").out)

        assert result.code == 0, result.err
        assert report["unsigned"] == 0
        assert report["unsigned_since"] is None

    def test_entries_left_unsigned_fail_and_are_named(
        self, filled: Home, cli: Cli
    ) -> None:
        """With the last checkpoint gone, as when a signer stops signing, the
        entries after the one before are unsigned: the verify itself passes, and
        --signed-within fails once they are older than it allows."""
        tamper(filled, f"DELETE FROM checkpoints WHERE size = {ENTRIES}")
        plain = cli("verify", "--home", str(filled.path), "--json")
        lenient = cli("verify", "--home", str(filled.path), "--signed-within", "3600")
        strict = cli(
            "verify", "--home", str(filled.path), "--signed-within", "0", "--json"
        )
        report, failure = json.loads(plain.out), json.loads(strict.out)
        first = json.loads(body(filled, ENTRIES - 10))["time"]

        assert plain.code == 0, plain.err
        assert report["unsigned"] == 10
        assert report["unsigned_since"].replace("+00:00", "Z") == first
        assert lenient.code == 0, lenient.err
        assert strict.code == 1
        assert failure["ok"] is False
        assert failure["index"] == ENTRIES - 10
        assert (
            "no signed checkpoint covers 10 entries from entry 40" in failure["error"]
        )

    def test_a_time_ahead_of_the_clock_is_not_trusted(
        self, filled: Home, cli: Cli
    ) -> None:
        """An unsigned entry's time is unsigned too: one rewritten into the future
        (hashes recomputed) would make a stale tail look fresh, so it fails."""
        first = ENTRIES - 10
        tamper(filled, f"DELETE FROM checkpoints WHERE size = {ENTRIES}")
        recorded = json.loads(body(filled, first))["time"]
        rewrite(filled, first, body(filled, first).replace(recorded, FUTURE))
        plain = cli("verify", "--home", str(filled.path))
        bounded = cli("verify", "--home", str(filled.path), "--signed-within", "3600")

        assert plain.code == 0, plain.err
        assert bounded.code == 1
        assert f"entry {first}, which claims to be recorded" in bounded.err

    def test_a_time_without_its_offset_fails_the_bound(
        self, filled: Home, cli: Cli
    ) -> None:
        """A time that names no offset cannot be compared: the bound fails, plainly."""
        first = ENTRIES - 10
        tamper(filled, f"DELETE FROM checkpoints WHERE size = {ENTRIES}")
        recorded = json.loads(body(filled, first))["time"]
        rewrite(filled, first, body(filled, first).replace(recorded, recorded[:-1]))
        bounded = cli("verify", "--home", str(filled.path), "--signed-within", "3600")

        assert bounded.code == 1
        assert f"entry {first}, which has no readable time" in bounded.err
        assert "Traceback" not in bounded.err

    def test_an_unreadable_time_fails_the_index_check_plainly(
        self, filled: Home, cli: Cli
    ) -> None:
        """An unsigned entry rewritten, hashes and all, with a time no writer of
        Proctor's gives, once the entry index holds it: verify fails, naming the
        entry, in text and in JSON, with no traceback."""
        last = ENTRIES - 1
        tamper(filled, f"DELETE FROM checkpoints WHERE size = {ENTRIES}")
        assert cli("find", "--home", str(filled.path)).code == 0
        recorded = json.loads(body(filled, last))["time"]
        rewrite(filled, last, body(filled, last).replace(recorded, "garbage"))
        plain = cli("verify", "--home", str(filled.path))
        report = cli("verify", "--home", str(filled.path), "--json")
        failure = json.loads(report.out)

        assert plain.code == 1
        assert f"entry {last} cannot be indexed" in plain.err
        assert "has no readable time: 'garbage'" in plain.err
        assert "Traceback" not in plain.err + report.err
        assert report.code == 1
        assert failure["ok"] is False
        assert failure["index"] == last

    def test_a_trusted_checkpoint_covers_entries(
        self, filled: Home, cli: Cli, tmp_path: Path
    ) -> None:
        """Entries a checkpoint kept outside the home covers are signed, even when
        the home lost that checkpoint."""
        kept = tmp_path / "kept.note"
        kept.write_bytes(cli("checkpoint", "--home", str(filled.path)).out.encode())
        tamper(filled, f"DELETE FROM checkpoints WHERE size = {ENTRIES}")
        home, trusted = str(filled.path), str(kept)
        result = cli(
            "verify",
            "--home",
            home,
            "--trusted-checkpoint",
            trusted,
            "--json",
            "--signed-within",
            "0",
        )
        report = json.loads(result.out)

        assert result.code == 0, result.err
        assert (report["signed_size"], report["unsigned"]) == (ENTRIES - 10, 0)

    @pytest.mark.parametrize("bound", ["-1", "inf", "nan", "abc"])
    def test_a_bound_that_is_no_time_is_refused(
        self, filled: Home, cli: Cli, bound: str
    ) -> None:
        """A bound below zero, without end or not a number is a usage error, not a
        pass: an infinite one would never fail."""
        tamper(filled, f"DELETE FROM checkpoints WHERE size = {ENTRIES}")
        result = cli("verify", "--home", str(filled.path), "--signed-within", bound)

        assert result.code == 2
        assert "--signed-within" in result.err

    def test_the_bound_is_refused_with_tiles(
        self, filled: Home, cli: Cli, tiles: Path
    ) -> None:
        """--signed-within reads a home's unsigned entries; with --tiles it would
        check nothing, so it is refused rather than ignored."""
        key = filled.log_vkey.read_text().strip()
        result = cli(
            "verify", "--tiles", str(tiles), "--key", key, "--signed-within", "0"
        )

        assert result.code == 2
        assert "not --tiles" in result.err

    def test_a_fully_signed_ledger_says_so(self, filled: Home, cli: Cli) -> None:
        """No unsigned entries: the summary says a signature covers every entry."""
        result = cli("verify", "--home", str(filled.path))

        assert "a signature covers every entry" in result.err
        assert "0 entries no signature covers" not in result.err


class TestTamperIsCaught:
    def test_triggers_refuse_an_edit(self, filled: Home) -> None:
        """With its triggers in place the database itself refuses an edit."""
        with pytest.raises(sqlite3.DatabaseError, match=r"append-only|not|refuse"):
            tamper(
                filled,
                "UPDATE entries SET body = x'00' WHERE idx = 3",
                keep_triggers=True,
            )

    def test_edited_entry(self, filled: Home, cli: Cli) -> None:
        """An entry edited in place, triggers dropped first, is named."""
        edited = body(filled, 17).replace('"amount":1700', '"amount":1000000')
        tamper(
            filled, f"UPDATE entries SET body = CAST('{edited}' AS BLOB) WHERE idx = 17"
        )
        result = cli("verify", "--home", str(filled.path))

        assert result.code == 1
        assert "entry 17" in result.err

    def test_edited_entry_with_rehashed_leaf(self, filled: Home, cli: Cli) -> None:
        """An edit with its stored leaf hash rewritten too fails the signed root."""
        edited = body(filled, 17).replace('"amount":1700', '"amount":1000000')
        leaf = merkle.leaf_hash(edited.encode()).hex()
        tamper(
            filled,
            f"UPDATE entries SET body = CAST('{edited}' AS BLOB) WHERE idx = 17",
            f"UPDATE nodes SET hash = x'{leaf}' WHERE level = 0 AND idx = 17",
        )
        result = cli("verify", "--home", str(filled.path))

        assert result.code == 1
        assert "checkpoint at size 20" in result.err
        assert "[10, 20)" in result.err

    def test_edited_entry_with_every_hash_rewritten(
        self, filled: Home, cli: Cli
    ) -> None:
        """An edit with every stored hash recomputed to match still fails the root
        that was signed."""
        rewrite(
            filled, 17, body(filled, 17).replace('"amount":1700', '"amount":1000000')
        )
        result = cli("verify", "--home", str(filled.path))

        assert result.code == 1
        assert "checkpoint at size 20" in result.err
        assert "[10, 20)" in result.err

    def test_entry_stored_as_text(self, filled: Home, cli: Cli) -> None:
        """An entry stored as text, past the table's own check, is named."""
        tamper(
            filled,
            "PRAGMA ignore_check_constraints = ON",
            "UPDATE entries SET body = CAST(body AS TEXT) WHERE idx = 5",
        )
        result = cli("verify", "--home", str(filled.path))

        assert result.code == 1
        assert "entry 5 is stored as str, not bytes" in result.err

    def test_deleted_entry(self, filled: Home, cli: Cli) -> None:
        """A deleted entry is named by the position it leaves empty."""
        tamper(filled, "DELETE FROM entries WHERE idx = 20")
        result = cli("verify", "--home", str(filled.path))

        assert result.code == 1
        assert "entry 20" in result.err

    def test_swapped_entries(self, filled: Home, cli: Cli) -> None:
        """Two swapped entries are named at the first of them."""
        tamper(
            filled,
            "UPDATE entries SET idx = 1000 WHERE idx = 5",
            "UPDATE entries SET idx = 5 WHERE idx = 6",
            "UPDATE entries SET idx = 6 WHERE idx = 1000",
        )
        result = cli("verify", "--home", str(filled.path))

        assert result.code == 1
        assert "position 5" in result.err

    def test_inserted_entry(self, filled: Home, cli: Cli) -> None:
        """An entry slipped in mid-ledger shifts the rest and is named."""
        forged = body(filled, 30)
        statements = [
            f"UPDATE entries SET idx = idx + 1 WHERE idx = {index}"
            for index in range(ENTRIES - 1, 29, -1)
        ]
        tamper(
            filled,
            *statements,
            f"INSERT INTO entries (idx, body) VALUES (30, CAST('{forged}' AS BLOB))",
        )
        result = cli("verify", "--home", str(filled.path))

        assert result.code == 1
        assert "position 31" in result.err

    @pytest.mark.parametrize(
        ("level", "index", "named"),
        [
            (0, 25, "entry 25 does not match its stored leaf hash"),
            (3, 2, "entries [16, 24): their stored hash (level 3, index 2) is wrong"),
        ],
    )
    def test_corrupted_subtree_hash(
        self, filled: Home, cli: Cli, level: int, index: int, named: str
    ) -> None:
        """A stored subtree hash proofs would be built from, zeroed, is named."""
        tamper(
            filled,
            f"UPDATE nodes SET hash = zeroblob(32) WHERE level = {level} "
            f"AND idx = {index}",
        )
        result = cli("verify", "--home", str(filled.path))

        assert result.code == 1
        assert named in result.err

    def test_appended_unsigned_entry(self, filled: Home, cli: Cli) -> None:
        """An entry added after the last checkpoint without its hash is named."""
        forged = body(filled, 0).replace('"index":0', f'"index":{ENTRIES}')
        tamper(
            filled,
            f"INSERT INTO entries (idx, body) VALUES ({ENTRIES}, "
            f"CAST('{forged}' AS BLOB))",
        )
        result = cli("verify", "--home", str(filled.path))

        assert result.code == 1
        assert f"entry {ENTRIES}" in result.err

    def test_truncated_against_trusted_checkpoint(
        self, filled: Home, cli: Cli, tmp_path: Path
    ) -> None:
        """Dropping the newest entries and checkpoints fails an outside checkpoint."""
        trusted = tmp_path / "trusted.checkpoint"
        trusted.write_text(cli("checkpoint", "--home", str(filled.path)).out)
        tamper(
            filled,
            "DELETE FROM entries WHERE idx >= 40",
            "DELETE FROM nodes WHERE (idx + 1) * (1 << level) > 40",
            "DELETE FROM checkpoints WHERE size > 40",
        )
        untrusting = cli("verify", "--home", str(filled.path))
        result = cli(
            "verify", "--home", str(filled.path), "--trusted-checkpoint", str(trusted)
        )

        assert untrusting.code == 0, (
            "without an outside checkpoint truncation is silent"
        )
        assert result.code == 1
        assert "truncated" in result.err

    def test_missing_trusted_checkpoint_is_bad_usage(
        self, filled: Home, cli: Cli, tmp_path: Path
    ) -> None:
        """A trusted checkpoint file that is not there is one line and exit 2."""
        missing = tmp_path / "nowhere.checkpoint"
        result = cli(
            "verify", "--home", str(filled.path), "--trusted-checkpoint", str(missing)
        )

        assert result.code == 2
        assert result.err.strip() == f"proctor: {missing}: no such file or directory"

    def test_checkpoint_signed_by_another_key(self, filled: Home, cli: Cli) -> None:
        """A checkpoint replaced by one signed with a stranger's key is named."""
        origin = filled.config().ledger.origin
        stranger = Signer.generate(origin)
        root = _root(filled, 30)
        note = sign_checkpoint(Checkpoint(origin, 30, root), stranger)
        tamper(filled, f"UPDATE checkpoints SET note = x'{note.hex()}' WHERE size = 30")
        result = cli("verify", "--home", str(filled.path))

        assert result.code == 1
        assert "checkpoint at size 30" in result.err

    def test_checkpoint_with_wrong_root(self, filled: Home, cli: Cli) -> None:
        """A properly signed checkpoint whose root differs from the entries fails."""
        origin = filled.config().ledger.origin
        note = sign_checkpoint(Checkpoint(origin, 30, bytes(32)), filled.signer())
        tamper(filled, f"UPDATE checkpoints SET note = x'{note.hex()}' WHERE size = 30")
        result = cli("verify", "--home", str(filled.path))

        assert result.code == 1
        assert "root does not match" in result.err

    def test_copy_is_verified_independently(
        self, filled: Home, cli: Cli, tmp_path: Path
    ) -> None:
        """A copy verifies on its own; tampering with it leaves the original whole."""
        copy = Home(tmp_path / "copy")
        shutil.copytree(filled.path, copy.path)
        tamper(copy, "DELETE FROM entries WHERE idx = 1")

        assert cli("verify", "--home", str(copy.path)).code == 1
        assert cli("verify", "--home", str(filled.path)).code == 0


class TestProofs:
    def test_inclusion_proof_verifies(self, filled: Home, cli: Cli) -> None:
        """A printed inclusion proof passes the pure verifier against its root."""
        printed = json.loads(
            cli("proof", "inclusion", "7", "--home", str(filled.path)).out
        )
        decode = base64.b64decode

        merkle.verify_inclusion(
            decode(printed["leaf_hash"]),
            printed["index"],
            printed["size"],
            [decode(node) for node in printed["proof"]],
            decode(printed["root"]),
        )
        assert printed["size"] == ENTRIES
        assert decode(printed["leaf_hash"]) == merkle.leaf_hash(
            body(filled, 7).encode()
        )

    def test_consistency_proof_verifies(self, filled: Home, cli: Cli) -> None:
        """A printed consistency proof passes the pure verifier."""
        result = cli("proof", "consistency", "13", "50", "--home", str(filled.path))
        printed = json.loads(result.out)
        decode = base64.b64decode

        merkle.verify_consistency(
            13,
            50,
            [decode(node) for node in printed["proof"]],
            decode(printed["old_root"]),
            decode(printed["new_root"]),
        )
        assert decode(printed["new_root"]) == _root(filled, 50)

    def test_proof_beyond_the_ledger(self, filled: Home, cli: Cli) -> None:
        """Asking for a tree larger than the ledger is a clear error."""
        result = cli(
            "proof", "inclusion", "3", "--size", "999", "--home", str(filled.path)
        )

        assert result.code == 1
        assert "beyond the ledger" in result.err


class TestLogShow:
    def test_lines_name_index_and_type(self, filled: Home, cli: Cli) -> None:
        """log show prints one readable line per entry with its index and type."""
        result = cli(
            "log", "show", "--from", "3", "--limit", "2", "--home", str(filled.path)
        )
        lines = result.out.strip().splitlines()

        assert len(lines) == 2
        assert lines[0].startswith("#3 ")
        assert "test.payment" in lines[0]
        assert "amount=300" in lines[0]

    def test_json_lines_are_the_stored_entries(self, filled: Home, cli: Cli) -> None:
        """log show --json prints each stored entry byte for byte."""
        result = cli(
            "log", "show", "--limit", "1", "--json", "--home", str(filled.path)
        )

        assert result.out == body(filled, 0) + "\n"


class TestInit:
    def test_refuses_an_existing_home(self, home: Home, cli: Cli) -> None:
        """init never overwrites a home."""
        result = cli("init", "--home", str(home.path))

        assert result.code == 2
        assert "already exists" in result.err

    def test_key_is_private(self, tmp_path: Path, cli: Cli) -> None:
        """The log signing key is created with mode 0600."""
        result = cli("init", "--home", str(tmp_path / "new"))

        assert result.code == 0, result.err
        assert (tmp_path / "new" / "log.key").stat().st_mode & 0o777 == 0o600


def _root(home: Home, size: int) -> bytes:
    db = sqlite3.connect(home.ledger_db)
    rows = db.execute("SELECT body FROM entries WHERE idx < ? ORDER BY idx", (size,))
    leaves = [merkle.leaf_hash(bytes(data)) for (data,) in rows.fetchall()]
    db.close()

    return merkle.root(leaves)


@pytest.fixture
def tiles(filled: Home, cli: Cli, tmp_path: Path) -> Path:
    """The filled home's ledger exported as a tlog-tiles folder."""
    folder = tmp_path / "tiles"
    exported = cli("export", "--out", str(folder), "--home", str(filled.path))
    assert exported.code == 0, exported.err

    return folder


class TestTiles:
    def test_export_then_verify(self, filled: Home, cli: Cli, tmp_path: Path) -> None:
        """An exported tlog-tiles folder verifies with the home's verifier key."""
        folder = tmp_path / "tiles"
        exported = cli(
            "export",
            "--format",
            "tiles",
            "--out",
            str(folder),
            "--home",
            str(filled.path),
        )
        key = filled.log_vkey.read_text().strip()
        result = cli("verify", "--tiles", str(folder), "--key", key)

        assert exported.code == 0, exported.err
        assert result.code == 0, result.err
        assert f"OK: {ENTRIES} entries" in result.out

    def test_tampered_bundle_is_named(
        self, filled: Home, cli: Cli, tiles: Path
    ) -> None:
        """A changed byte in an exported entry bundle fails, naming the entry."""
        bundle = next((tiles / "tile" / "entries").rglob("*[0-9]"))
        data = bytearray(bundle.read_bytes())
        data[-3] ^= 0x01
        bundle.write_bytes(bytes(data))
        key = filled.log_vkey.read_text().strip()
        result = cli("verify", "--tiles", str(tiles), "--key", key)

        assert result.code == 1
        assert f"entry {ENTRIES - 1}" in result.err

    def test_key_may_be_the_file_init_wrote(
        self, filled: Home, cli: Cli, tiles: Path
    ) -> None:
        """--key takes the home's log.vkey file as well as the key it holds."""
        result = cli("verify", "--tiles", str(tiles), "--key", str(filled.log_vkey))

        assert result.code == 0, result.err
        assert f"OK: {ENTRIES} entries" in result.out

    def test_bad_key_or_folder_is_bad_usage(
        self, filled: Home, cli: Cli, tiles: Path, tmp_path: Path
    ) -> None:
        """A key that is no verifier key, or a folder that is not there, exits 2."""
        key = filled.log_vkey.read_text().strip()
        bad_key = cli("verify", "--tiles", str(tiles), "--key", "not-a-key")
        no_folder = cli("verify", "--tiles", str(tmp_path / "none"), "--key", key)

        assert (bad_key.code, no_folder.code) == (2, 2)
        assert bad_key.err.startswith("proctor: --key: ")
        assert "is not a folder" in no_folder.err

    def test_foreign_tessera_log(self, vectors: Path, cli: Cli) -> None:
        """The tiled log written by another implementation verifies from the CLI."""
        keys = json.loads((vectors / "notes" / "keys.json").read_text())
        vkey = next(k["vkey"] for k in keys["keys"] if "testdata" in k["name"])
        result = cli("verify", "--tiles", str(vectors / "tessera-log"), "--key", vkey)

        assert result.code == 0, result.err
        assert "OK: 15 entries" in result.out

    def test_export_needs_a_checkpoint(
        self, home: Home, cli: Cli, tmp_path: Path
    ) -> None:
        """Exporting a ledger that has never signed a checkpoint is a clear error."""
        result = cli("export", "--out", str(tmp_path / "t"), "--home", str(home.path))

        assert result.code == 1
        assert "no checkpoint" in result.err


class TestPrivacy:
    def test_ledger_file_is_private(self, home: Home) -> None:
        """The ledger holds requests as sent, so only its owner may read it."""
        assert home.ledger_db.stat().st_mode & 0o777 == 0o600
