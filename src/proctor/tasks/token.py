"""Task tokens: short-lived JWTs (RFC 7519) signed with EdDSA over Ed25519 (RFC 8037)
by a token key kept apart from the ledger key, naming the user, the agent and the task.

Claims: ``sub`` the user, ``act: {"sub": agent}`` (the acting party, RFC 8693 §4.1),
``task`` the task id, ``aud``, ``iss``, ``iat``, ``exp`` and ``jti``. The header
carries ``kid``, the first 16 hex digits of SHA-256 over the raw public key.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from jwt.types import Options

from proctor.errors import ConfigError, TokenError
from proctor.files import read_private, write_private

ALGORITHM = "EdDSA"
AUDIENCE = "proctor"
ISSUER = "proctor"
DEFAULT_TTL = timedelta(minutes=15)
MAX_TOKEN_CHARS = 8192
VERIFIED_TOKENS = 4096
"""How many verified tokens a verifier remembers, so that an agent's next call with
the same token skips the signature check; its time and revocation are checked anew."""

Clock = Callable[[], datetime]
RevocationCheck = Callable[[str, str], str | None]

# PyJWT checks only the signature; the claims are checked here, against our clock.
_NO_CLAIM_CHECKS: Options = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
    "verify_iss": False,
    "verify_sub": False,
    "verify_jti": False,
}


@dataclass(frozen=True, slots=True)
class TaskClaims:
    """What a verified task token says: who asked, who acts, which task, until when."""

    user: str
    agent: str
    task: str
    jti: str
    expires: datetime


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A freshly issued token and its claims, for the ledger's "token issued" entry."""

    token: str
    claims: TaskClaims
    entry: int | None = None
    """The index of the "token issued" entry, once one records it."""


def utc_now() -> datetime:
    """Return the current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def key_id(public_key: Ed25519PublicKey) -> str:
    """Return the key id: 16 hex digits of SHA-256 over the raw public key."""
    raw = public_key.public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return hashlib.sha256(raw).hexdigest()[:16]


class TokenIssuer:
    """Issues task tokens signed with the token key."""

    def __init__(
        self,
        private_key: Ed25519PrivateKey,
        *,
        issuer: str = ISSUER,
        audience: str = AUDIENCE,
        ttl: timedelta = DEFAULT_TTL,
        clock: Clock = utc_now,
    ) -> None:
        """Keep the key and defaults; raise TokenError on a lifetime under a second."""
        if ttl < timedelta(seconds=1):
            raise TokenError(f"token lifetime must be at least one second, got {ttl}")
        self._key = private_key
        self._kid = key_id(private_key.public_key())
        self._issuer = issuer
        self._audience = audience
        self._ttl = ttl
        self._clock = clock

    def issue(
        self, *, user: str, agent: str, task: str, ttl: timedelta | None = None
    ) -> IssuedToken:
        """Sign a token for ``agent`` acting for ``user`` on ``task``; raise TokenError.

        ``ttl`` overrides the issuer's lifetime for this token.
        """
        for name, value in (("user", user), ("agent", agent), ("task", task)):
            if not value:
                raise TokenError(f"cannot issue a token: {name} is empty")
        lifetime = self._ttl if ttl is None else ttl
        if lifetime < timedelta(seconds=1):
            raise TokenError(f"token lifetime must be at least one second, got {ttl}")

        issued = int(self._clock().timestamp())
        expires = issued + int(lifetime.total_seconds())
        jti = secrets.token_hex(16)
        payload = {
            "iss": self._issuer,
            "sub": user,
            "aud": self._audience,
            "act": {"sub": agent},
            "task": task,
            "iat": issued,
            "exp": expires,
            "jti": jti,
        }
        token = jwt.encode(payload, self._key, ALGORITHM, headers={"kid": self._kid})
        claims = TaskClaims(user, agent, task, jti, _from_timestamp(expires))
        return IssuedToken(token=token, claims=claims)


class TokenVerifier:
    """Checks task tokens: signature, algorithm, audience, issuer, time, revocation."""

    def __init__(
        self,
        public_key: Ed25519PublicKey,
        *,
        audience: str = AUDIENCE,
        is_revoked: RevocationCheck,
        issuer: str | None = ISSUER,
        leeway: timedelta = timedelta(seconds=5),
        clock: Clock = utc_now,
    ) -> None:
        """Keep the key and checks; ``is_revoked(jti, task)`` returns a reason or None.

        ``issuer=None`` accepts any issuer; ``leeway`` absorbs clock skew on ``iat``
        and ``exp``.
        """
        self._key = public_key
        self._kid = key_id(public_key)
        self._audience = audience
        self._is_revoked = is_revoked
        self._issuer = issuer
        self._leeway = leeway
        self._clock = clock
        self._verified: dict[str, TaskClaims] = {}
        self._remembering = threading.Lock()

    def verify(self, token: str) -> TaskClaims:
        """Return the claims of a valid token; raise TokenError saying why it is not.

        A token whose signature and claims verified before is taken from memory:
        the same bytes verify the same way, so only its expiry and revocation,
        which change with time and the ledger, are checked again.
        """
        claims = self._verified.get(token) if isinstance(token, str) else None
        if claims is None:
            claims = self._verify_signed(token)
            self._remember(token, claims)
        elif claims.expires <= self._clock() - self._leeway:
            raise TokenError(
                f"token expired at {claims.expires.isoformat()}", claims=claims
            )
        reason = self._is_revoked(claims.jti, claims.task)
        if reason is not None:
            raise TokenError(
                f"token {claims.jti} for task {claims.task} is revoked: {reason}",
                claims=claims,
            )
        return claims

    def _remember(self, token: str, claims: TaskClaims) -> None:
        with self._remembering:
            if len(self._verified) >= VERIFIED_TOKENS:
                # Forget the oldest: dicts keep insertion order.
                del self._verified[next(iter(self._verified))]
            self._verified[token] = claims

    def _verify_signed(self, token: str) -> TaskClaims:
        self._check_header(token)
        try:
            payload = jwt.decode(
                token, self._key, algorithms=[ALGORITHM], options=_NO_CLAIM_CHECKS
            )
        except jwt.InvalidSignatureError as exc:
            raise TokenError(
                "token signature does not verify with the token key"
            ) from exc
        except jwt.PyJWTError as exc:
            raise TokenError(f"malformed token: {exc}") from exc

        return self._claims(payload)

    def _check_header(self, token: object) -> None:
        if not isinstance(token, str) or not token:
            raise TokenError("no token given")
        if len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
            raise TokenError("malformed token: expected three dot-separated parts")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenError(f"malformed token: {exc}") from exc

        # RFC 8725 §3.1: accept the one algorithm we issue, never what the token asks.
        algorithm = header.get("alg")
        if algorithm != ALGORITHM:
            raise TokenError(
                f"token algorithm {algorithm!r} is not allowed, only EdDSA"
            )
        kid = header.get("kid")
        if kid is not None and kid != self._kid:
            raise TokenError(f"token was signed by key {kid}, not by key {self._kid}")

    def _claims(self, payload: Mapping[str, Any]) -> TaskClaims:
        user = _text(payload, "sub")
        act = payload.get("act")
        if not isinstance(act, Mapping):
            raise TokenError("token lacks the act claim naming the agent")
        agent = _text(act, "sub", "act.sub")
        task = _text(payload, "task")
        jti = _text(payload, "jti")
        audience = payload.get("aud")
        if audience != self._audience:
            raise TokenError(f"token audience {audience!r} is not {self._audience!r}")
        issuer = payload.get("iss")
        if self._issuer is not None and issuer != self._issuer:
            raise TokenError(f"token issuer {issuer!r} is not {self._issuer!r}")

        expires = self._check_time(payload)
        return TaskClaims(user=user, agent=agent, task=task, jti=jti, expires=expires)

    def _check_time(self, payload: Mapping[str, Any]) -> datetime:
        now = self._clock()
        issued = _from_timestamp(_number(payload, "iat"))
        expires = _from_timestamp(_number(payload, "exp"))
        if issued > now + self._leeway:
            raise TokenError(f"token is issued in the future, at {issued.isoformat()}")
        if expires <= now - self._leeway:
            raise TokenError(f"token expired at {expires.isoformat()}")
        if expires <= issued:
            raise TokenError("token expires before it was issued")
        return expires


def generate_token_key(path: Path) -> Ed25519PrivateKey:
    """Create a new token key as a PKCS#8 PEM file of mode 0600 and return it.

    Raises ConfigError if the file already exists or cannot be written.
    """
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(path, pem, exclusive=True)
    return key


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read a token key file, PEM (PKCS#8) or 32 raw bytes; raise ConfigError.

    A key file that group or others may reach is refused.
    """
    data = read_private(path)
    try:
        if data.startswith(b"-----BEGIN"):
            key = serialization.load_pem_private_key(data, password=None)
        elif len(data) == 32:
            key = Ed25519PrivateKey.from_private_bytes(data)
        else:
            raise ConfigError(f"token key {path} is neither PEM nor 32 raw bytes")
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"token key {path} is unreadable: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"token key {path} is not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Read a token verification key, PEM (SPKI) or 32 raw bytes; raise ConfigError."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read public key {path}: {exc.strerror}") from exc
    try:
        if data.startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(data)
        elif len(data) == 32:
            key = Ed25519PublicKey.from_public_bytes(data)
        else:
            raise ConfigError(f"public key {path} is neither PEM nor 32 raw bytes")
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"public key {path} is unreadable: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"public key {path} is not an Ed25519 public key")
    return key


def _text(claims: Mapping[str, Any], name: str, label: str | None = None) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise TokenError(f"token lacks the {label or name} claim")
    return value


def _number(claims: Mapping[str, Any], name: str) -> int:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TokenError(f"token lacks the {name} claim as whole seconds")
    return value


def _from_timestamp(seconds: int) -> datetime:
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise TokenError(f"token time {seconds} is out of range") from exc
