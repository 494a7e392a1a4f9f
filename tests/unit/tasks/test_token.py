"""Task tokens: issued with the claims the design names, and every bad token refused
with a reason."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from proctor.errors import ConfigError, TokenError
from proctor.tasks import token as token_module
from proctor.tasks.token import (
    DEFAULT_TTL,
    TaskClaims,
    TokenIssuer,
    TokenVerifier,
    generate_token_key,
    key_id,
    load_private_key,
    load_public_key,
)

NOW = datetime(2026, 12, 3, 15, 0, tzinfo=UTC)
REVOKED = {"jti-revoked": "task quarantined after a breach"}


class Clock:
    """A settable clock."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def issuer(key: Ed25519PrivateKey, clock: Clock) -> TokenIssuer:
    return TokenIssuer(key, clock=clock)


@pytest.fixture
def revoked() -> dict[str, str]:
    return {}


@pytest.fixture
def verifier(
    key: Ed25519PrivateKey, clock: Clock, revoked: dict[str, str]
) -> TokenVerifier:
    return TokenVerifier(
        key.public_key(),
        audience="proctor",
        is_revoked=lambda jti, task: revoked.get(jti) or revoked.get(task),
        clock=clock,
    )


def issue(
    issuer: TokenIssuer,
    user: str = "alice",
    agent: str = "ledger-bot",
    task: str = "task-1",
) -> str:
    return issuer.issue(user=user, agent=agent, task=task).token


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(
    header: Mapping[str, object], payload: Mapping[str, object], signature: bytes
) -> str:
    head = b64(json.dumps(header).encode())
    body = b64(json.dumps(payload).encode())
    return f"{head}.{body}.{b64(signature)}"


def claims_of(token: str) -> dict[str, object]:
    decoded: dict[str, object] = jwt.decode(token, options={"verify_signature": False})
    return decoded


class TestIssue:
    """Issued tokens carry the designed claims and header."""

    def test_a_token_verifies_to_its_claims(
        self, issuer: TokenIssuer, verifier: TokenVerifier
    ) -> None:
        """The verifier returns the user, agent, task, jti and expiry issued."""
        issued = issuer.issue(user="alice", agent="ledger-bot", task="task-1")

        claims = verifier.verify(issued.token)

        assert claims == issued.claims
        assert claims == TaskClaims(
            user="alice",
            agent="ledger-bot",
            task="task-1",
            jti=issued.claims.jti,
            expires=NOW + DEFAULT_TTL,
        )

    def test_the_payload_has_the_designed_claims(self, issuer: TokenIssuer) -> None:
        """sub is the user, act.sub the agent (RFC 8693), with task, aud, iss, times."""
        payload = claims_of(issue(issuer))

        assert payload["sub"] == "alice"
        assert payload["act"] == {"sub": "ledger-bot"}
        assert payload["task"] == "task-1"
        assert payload["aud"] == "proctor"
        assert payload["iss"] == "proctor"
        assert payload["iat"] == int(NOW.timestamp())
        assert payload["exp"] == int((NOW + timedelta(minutes=15)).timestamp())
        assert isinstance(payload["jti"], str)
        assert len(payload["jti"]) == 32

    def test_the_header_names_the_algorithm_and_key(
        self, issuer: TokenIssuer, key: Ed25519PrivateKey
    ) -> None:
        """Tokens are EdDSA and carry the token key's id."""
        header = jwt.get_unverified_header(issue(issuer))

        assert header["alg"] == "EdDSA"
        assert header["kid"] == key_id(key.public_key())

    def test_every_token_has_its_own_jti(self, issuer: TokenIssuer) -> None:
        """Two tokens for the same task differ in jti."""
        assert claims_of(issue(issuer))["jti"] != claims_of(issue(issuer))["jti"]

    def test_the_lifetime_is_configurable(
        self, key: Ed25519PrivateKey, clock: Clock, issuer: TokenIssuer
    ) -> None:
        """The issuer's default and a per-token lifetime both set exp."""
        five = TokenIssuer(key, ttl=timedelta(minutes=5), clock=clock)
        one = issuer.issue(user="u", agent="a", task="t", ttl=timedelta(seconds=60))

        assert five.issue(
            user="u", agent="a", task="t"
        ).claims.expires == NOW + timedelta(minutes=5)
        assert one.claims.expires == NOW + timedelta(seconds=60)

    @pytest.mark.parametrize("field", ["user", "agent", "task"])
    def test_an_empty_name_is_refused(self, issuer: TokenIssuer, field: str) -> None:
        """A token must name a user, an agent and a task."""
        with pytest.raises(TokenError, match=f"{field} is empty"):
            issue(issuer, **{field: ""})

    def test_a_lifetime_under_a_second_is_refused(
        self, key: Ed25519PrivateKey, issuer: TokenIssuer
    ) -> None:
        """Zero or negative lifetimes are mistakes, not tokens."""
        with pytest.raises(TokenError, match="at least one second"):
            TokenIssuer(key, ttl=timedelta(0))
        with pytest.raises(TokenError, match="at least one second"):
            issuer.issue(user="u", agent="a", task="t", ttl=timedelta(seconds=-1))


class TestTime:
    """Expiry and issue time are checked against the verifier's clock."""

    def test_an_expired_token_is_refused(
        self, issuer: TokenIssuer, verifier: TokenVerifier, clock: Clock
    ) -> None:
        """Past exp (and the leeway), the token is refused naming when it expired."""
        token = issue(issuer)
        clock.now = NOW + DEFAULT_TTL + timedelta(seconds=5)

        with pytest.raises(
            TokenError, match=r"token expired at 2026-12-03T15:15:00\+00:00"
        ):
            verifier.verify(token)

    def test_the_leeway_absorbs_small_skew(
        self, issuer: TokenIssuer, verifier: TokenVerifier, clock: Clock
    ) -> None:
        """Within five seconds of exp the token still verifies."""
        token = issue(issuer)
        clock.now = NOW + DEFAULT_TTL + timedelta(seconds=4)

        assert verifier.verify(token).task == "task-1"

    def test_a_token_from_the_future_is_refused(
        self, key: Ed25519PrivateKey, verifier: TokenVerifier
    ) -> None:
        """A token issued after now (beyond the leeway) is refused."""
        early = TokenIssuer(key, clock=Clock(NOW + timedelta(minutes=1)))

        with pytest.raises(TokenError, match="issued in the future"):
            verifier.verify(issue(early))

    def test_a_token_expiring_before_issue_is_refused(
        self, key: Ed25519PrivateKey, verifier: TokenVerifier
    ) -> None:
        """exp at or before iat is malformed even when signed."""
        payload = {
            **claims_of(issue(TokenIssuer(key, clock=Clock()))),
            "exp": int(NOW.timestamp()),
        }
        token = jwt.encode(payload, key, "EdDSA")

        with pytest.raises(TokenError, match="expires before it was issued"):
            verifier.verify(token)


class TestRemembered:
    """A token verified once skips the signature check, never the others."""

    def test_the_second_check_skips_the_signature(
        self,
        issuer: TokenIssuer,
        verifier: TokenVerifier,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """The same bytes verify the same way, so they are checked once."""
        token = issue(issuer)
        verifier.verify(token)
        decodes: list[str] = []
        monkeypatch.setattr(jwt, "decode", lambda *a, **k: decodes.append("x"))

        assert verifier.verify(token).task == "task-1"
        assert decodes == []

    def test_a_remembered_token_still_expires(
        self, issuer: TokenIssuer, verifier: TokenVerifier, clock: Clock
    ) -> None:
        """Expiry is checked on every call, against the clock of that call."""
        token = issue(issuer)
        verifier.verify(token)
        clock.now = NOW + DEFAULT_TTL + timedelta(seconds=5)

        with pytest.raises(TokenError, match="token expired at"):
            verifier.verify(token)

    def test_a_remembered_token_can_be_revoked(
        self, issuer: TokenIssuer, verifier: TokenVerifier, revoked: dict[str, str]
    ) -> None:
        """Revocation is asked on every call, so a revoked token stops at once."""
        issued = issuer.issue(user="alice", agent="ledger-bot", task="task-1")
        verifier.verify(issued.token)
        revoked["task-1"] = "task quarantined after a breach"

        with pytest.raises(TokenError, match="quarantined"):
            verifier.verify(issued.token)

    def test_a_changed_token_is_checked_in_full(
        self, issuer: TokenIssuer, verifier: TokenVerifier
    ) -> None:
        """Only the exact bytes are remembered: a tampered copy is verified anew."""
        token = issue(issuer)
        verifier.verify(token)
        head, _, signature = token.split(".")
        payload = {**claims_of(token), "task": "task-2"}
        tampered = f"{head}.{b64(json.dumps(payload).encode())}.{signature}"

        with pytest.raises(TokenError, match="signature does not verify"):
            verifier.verify(tampered)

    def test_memory_is_bounded(
        self,
        issuer: TokenIssuer,
        verifier: TokenVerifier,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Past its bound the verifier forgets its oldest token, not the newest."""
        monkeypatch.setattr(token_module, "VERIFIED_TOKENS", 3)
        tokens = [issue(issuer, task=f"task-{n}") for n in range(4)]
        for token in tokens:
            verifier.verify(token)
        decodes: list[str] = []
        real = jwt.decode

        def counted(*args: object, **kwargs: object) -> object:
            decodes.append("x")
            return real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(jwt, "decode", counted)
        verifier.verify(tokens[-1])
        verifier.verify(tokens[0])

        assert len(decodes) == 1


class TestRejection:
    """Every bad token is refused with a reason."""

    def test_a_revoked_token_is_refused(
        self, issuer: TokenIssuer, verifier: TokenVerifier, revoked: dict[str, str]
    ) -> None:
        """The revocation check is asked with jti and task and its reason reported."""
        issued = issuer.issue(user="alice", agent="ledger-bot", task="task-1")
        revoked[issued.claims.jti] = "revoked by ann"

        with pytest.raises(TokenError, match="task task-1 is revoked: revoked by ann"):
            verifier.verify(issued.token)

    def test_a_quarantined_task_revokes_all_its_tokens(
        self, issuer: TokenIssuer, verifier: TokenVerifier, revoked: dict[str, str]
    ) -> None:
        """is_revoked may answer by task as well as by jti."""
        revoked["task-1"] = "task quarantined after a breach"

        with pytest.raises(TokenError, match="quarantined"):
            verifier.verify(issue(issuer))

    def test_a_wrong_audience_is_refused(
        self, key: Ed25519PrivateKey, clock: Clock
    ) -> None:
        """A token for another audience is refused naming both."""
        token = issue(TokenIssuer(key, audience="billing", clock=clock))
        verifier = TokenVerifier(
            key.public_key(), audience="proctor", is_revoked=none, clock=clock
        )

        with pytest.raises(TokenError, match="audience 'billing' is not 'proctor'"):
            verifier.verify(token)

    def test_a_wrong_issuer_is_refused(
        self, key: Ed25519PrivateKey, clock: Clock, verifier: TokenVerifier
    ) -> None:
        """Tokens must come from the configured issuer."""
        token = issue(TokenIssuer(key, issuer="elsewhere", clock=clock))

        with pytest.raises(TokenError, match="issuer 'elsewhere' is not 'proctor'"):
            verifier.verify(token)

    def test_another_key_is_refused_by_its_key_id(
        self, clock: Clock, verifier: TokenVerifier
    ) -> None:
        """A token from another Ed25519 key names the key ids."""
        other = TokenIssuer(Ed25519PrivateKey.generate(), clock=clock)

        with pytest.raises(TokenError, match=r"signed by key [0-9a-f]{16}, not by key"):
            verifier.verify(issue(other))

    def test_another_key_without_a_key_id_fails_the_signature(
        self, issuer: TokenIssuer, verifier: TokenVerifier
    ) -> None:
        """Without a kid the signature check still catches the wrong key."""
        payload = claims_of(issue(issuer))
        token = jwt.encode(payload, Ed25519PrivateKey.generate(), "EdDSA")

        with pytest.raises(TokenError, match="signature does not verify"):
            verifier.verify(token)

    def test_a_tampered_payload_fails_the_signature(
        self, issuer: TokenIssuer, verifier: TokenVerifier
    ) -> None:
        """Changing the task in a signed token breaks its signature."""
        head, _, signature = issue(issuer).split(".")
        payload = {**claims_of(issue(issuer)), "task": "task-2"}
        token = f"{head}.{b64(json.dumps(payload).encode())}.{signature}"

        with pytest.raises(TokenError, match="signature does not verify"):
            verifier.verify(token)

    def test_alg_none_is_refused(
        self, issuer: TokenIssuer, verifier: TokenVerifier
    ) -> None:
        """An unsigned token is refused before anything else (RFC 8725 §3.1)."""
        token = forge({"alg": "none", "typ": "JWT"}, claims_of(issue(issuer)), b"")

        with pytest.raises(TokenError, match="algorithm 'none' is not allowed"):
            verifier.verify(token)

    def test_hs256_with_the_public_key_as_secret_is_refused(
        self, issuer: TokenIssuer, verifier: TokenVerifier, key: Ed25519PrivateKey
    ) -> None:
        """The algorithm-confusion attack: an HMAC keyed with the public key."""
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        header = {"alg": "HS256", "typ": "JWT"}
        unsigned = forge(header, claims_of(issue(issuer)), b"").rsplit(".", 1)[0]
        mac = hmac.new(public, unsigned.encode(), hashlib.sha256).digest()

        with pytest.raises(TokenError, match="algorithm 'HS256' is not allowed"):
            verifier.verify(f"{unsigned}.{b64(mac)}")

    @pytest.mark.parametrize(
        ("token", "match"),
        [
            ("", "no token given"),
            ("abc", "expected three dot-separated parts"),
            ("a.b.c.d", "expected three dot-separated parts"),
            ("a" * 9000, "expected three dot-separated parts"),
            ("!!.e30.AA", "malformed token"),
            (f"{b64(b'[1]')}.e30.AA", "malformed token"),
        ],
    )
    def test_a_malformed_token_is_refused(
        self, verifier: TokenVerifier, token: str, match: str
    ) -> None:
        """Garbage is refused with a reason and without echoing the token."""
        with pytest.raises(TokenError, match=match):
            verifier.verify(token)

    def test_a_signed_token_with_a_broken_payload_is_refused(
        self, key: Ed25519PrivateKey, verifier: TokenVerifier
    ) -> None:
        """A validly signed body that is not a JSON object is malformed."""
        token = jwt.api_jws.encode(b"not json", key, "EdDSA")

        with pytest.raises(TokenError, match="malformed token"):
            verifier.verify(token)

    @pytest.mark.parametrize(
        "case",
        [
            ("act", None, "lacks the act claim"),
            ("act", {"sub": ""}, "lacks the act.sub claim"),
            ("sub", 7, "lacks the sub claim"),
            ("task", None, "lacks the task claim"),
            ("jti", "", "lacks the jti claim"),
            ("exp", "soon", "lacks the exp claim as whole seconds"),
            ("iat", True, "lacks the iat claim as whole seconds"),
            ("exp", 10**20, "out of range"),
        ],
    )
    def test_a_missing_or_wrong_claim_is_refused(
        self,
        key: Ed25519PrivateKey,
        issuer: TokenIssuer,
        verifier: TokenVerifier,
        case: tuple[str, object, str],
    ) -> None:
        """Each required claim is checked for presence and type."""
        claim, value, match = case
        payload = claims_of(issue(issuer))
        if value is None:
            del payload[claim]
        else:
            payload[claim] = value
        token = jwt.encode(
            payload, key, "EdDSA", headers={"kid": key_id(key.public_key())}
        )

        with pytest.raises(TokenError, match=match):
            verifier.verify(token)

    def test_revocation_is_not_asked_about_forged_tokens(
        self, issuer: TokenIssuer, key: Ed25519PrivateKey, clock: Clock
    ) -> None:
        """The revocation store is consulted only after the signature verifies."""
        asked: list[tuple[str, str]] = []

        def is_revoked(jti: str, task: str) -> str | None:
            asked.append((jti, task))
            return None

        verifier = TokenVerifier(key.public_key(), is_revoked=is_revoked, clock=clock)
        forged = jwt.encode(
            claims_of(issue(issuer)), Ed25519PrivateKey.generate(), "EdDSA"
        )

        with pytest.raises(TokenError, match="signature"):
            verifier.verify(forged)
        assert asked == []


class TestKeyFiles:
    """Token keys are written private and read as PEM or raw bytes."""

    def test_a_generated_key_is_private_pem(self, tmp_path: Path) -> None:
        """generate_token_key writes PKCS#8 PEM with mode 0600 and loads back."""
        path = tmp_path / "token.key"
        key = generate_token_key(path)

        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
        assert key_id(load_private_key(path).public_key()) == key_id(key.public_key())

    def test_an_existing_key_is_not_overwritten(self, tmp_path: Path) -> None:
        """Generating over an existing file is refused."""
        path = tmp_path / "token.key"
        generate_token_key(path)

        with pytest.raises(ConfigError, match="already exists"):
            generate_token_key(path)

    def test_a_raw_private_key_loads(
        self, tmp_path: Path, key: Ed25519PrivateKey
    ) -> None:
        """32 raw bytes are read as an Ed25519 seed."""
        path = private_file(
            tmp_path,
            key.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            ),
        )

        assert key_id(load_private_key(path).public_key()) == key_id(key.public_key())

    def test_a_key_others_can_read_is_refused(self, tmp_path: Path) -> None:
        """A token key readable by group or others is refused."""
        path = tmp_path / "token.key"
        generate_token_key(path)
        path.chmod(0o644)

        with pytest.raises(ConfigError, match="mode 0644"):
            load_private_key(path)

    @pytest.mark.parametrize(
        ("data", "match"),
        [
            (b"short", "neither PEM nor 32 raw bytes"),
            (
                b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n",
                "unreadable",
            ),
        ],
    )
    def test_an_unreadable_key_is_refused(
        self, tmp_path: Path, data: bytes, match: str
    ) -> None:
        """Neither PEM nor raw, or broken PEM: ConfigError."""
        with pytest.raises(ConfigError, match=match):
            load_private_key(private_file(tmp_path, data))

    def test_a_key_of_another_type_is_refused(self, tmp_path: Path) -> None:
        """An EC key in PEM is not a token key."""
        pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

        with pytest.raises(ConfigError, match="not an Ed25519 private key"):
            load_private_key(private_file(tmp_path, pem))

    def test_a_missing_key_file_is_refused(self, tmp_path: Path) -> None:
        """A missing key is a configuration error naming the path."""
        with pytest.raises(ConfigError, match="does not exist"):
            load_private_key(tmp_path / "absent.key")

    @pytest.mark.parametrize("form", ["pem", "raw"])
    def test_a_public_key_loads_as_pem_or_raw(
        self, tmp_path: Path, key: Ed25519PrivateKey, form: str
    ) -> None:
        """The verification key may be SPKI PEM or 32 raw bytes."""
        public = key.public_key()
        data = (
            public.public_bytes(
                serialization.Encoding.PEM,
                serialization.PublicFormat.SubjectPublicKeyInfo,
            )
            if form == "pem"
            else public.public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        )
        path = tmp_path / "token.pub"
        path.write_bytes(data)

        assert key_id(load_public_key(path)) == key_id(public)

    @pytest.mark.parametrize(
        ("data", "match"),
        [
            (None, "cannot read public key"),
            (b"x" * 31, "neither PEM nor 32 raw bytes"),
            (b"-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n", "unreadable"),
        ],
    )
    def test_a_bad_public_key_is_refused(
        self, tmp_path: Path, data: bytes | None, match: str
    ) -> None:
        """Missing, wrong-sized or broken public keys raise ConfigError."""
        path = tmp_path / "token.pub"
        if data is not None:
            path.write_bytes(data)

        with pytest.raises(ConfigError, match=match):
            load_public_key(path)

    def test_a_public_key_of_another_type_is_refused(self, tmp_path: Path) -> None:
        """An EC public key is not a token verification key."""
        path = tmp_path / "token.pub"
        path.write_bytes(
            ec.generate_private_key(ec.SECP256R1())
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM,
                serialization.PublicFormat.SubjectPublicKeyInfo,
            )
        )

        with pytest.raises(ConfigError, match="not an Ed25519 public key"):
            load_public_key(path)


def none(jti: str, task: str) -> str | None:
    """A revocation check that revokes nothing."""
    return None


def private_file(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "token.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return path
