"""Masking what goes back to an agent: same lengths, any split into pieces."""

from __future__ import annotations

import base64
import itertools
import json

from hypothesis import assume, given, reject
from hypothesis import strategies as st

from proctor.errors import VaultError
from proctor.vault import Redactor

SECRET = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"
STARS = b"*" * len(SECRET)

secret_values = st.text(min_size=8, max_size=40).filter(lambda value: "*" not in value)
surroundings = st.binary(max_size=80)


def _redactor(value: str) -> Redactor:
    """A redactor for ``value``, or a rejected example when it is refused."""
    try:
        return Redactor([value])
    except VaultError:
        reject()


def _pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[start:end] for start, end in itertools.pairwise(points)]


def _streamed(redactor: Redactor, pieces: list[bytes]) -> tuple[bytes, int]:
    masking = redactor.masking()
    out = b"".join(masking.feed(piece) for piece in pieces) + masking.finish()
    return out, masking.masked


class TestWhole:
    def test_value_becomes_stars_of_its_length(self) -> None:
        """The raw value is replaced by as many stars as it has bytes."""
        body = json.dumps({"token": SECRET}).encode()

        masked = Redactor([SECRET]).masking().whole(body)

        assert masked == json.dumps({"token": STARS.decode()}).encode()

    def test_encoded_forms_are_masked_too(self) -> None:
        """Basic auth's base64 of user:value loses the value's characters."""
        header = b"Basic " + base64.b64encode(f"agent:{SECRET}".encode())

        masked = Redactor([SECRET]).masking().whole(header)

        assert len(masked) == len(header)
        assert b"*" * 20 in masked
        assert base64.b64encode(SECRET.encode())[4:24] not in masked

    def test_without_secrets_nothing_changes(self) -> None:
        """An empty vault masks nothing and holds nothing back."""
        masking = Redactor().masking()

        assert masking.feed(SECRET.encode()[:10]) == SECRET.encode()[:10]
        assert masking.finish() == b""
        assert masking.masked == 0


class TestPieces:
    def test_text_that_cannot_begin_a_secret_passes_at_once(self) -> None:
        """Nothing is held back when no form of a secret could start in the piece."""
        masking = Redactor([SECRET]).masking()

        assert masking.feed(b'{"id": 42, "name": "widget"}') == (
            b'{"id": 42, "name": "widget"}'
        )

    def test_value_split_across_pieces_is_masked(self) -> None:
        """A value cut in two is held back from its start, then masked whole."""
        masking = Redactor([SECRET]).masking()
        first = masking.feed(b"key=" + SECRET.encode()[:9])
        second = masking.feed(SECRET.encode()[9:] + b"&n=1")
        rest = masking.finish()

        assert first == b"key="
        assert second + rest == STARS + b"&n=1"
        assert masking.masked == 1

    def test_last_piece_is_passed_whole(self) -> None:
        """A piece known to end the body leaves nothing held back."""
        masking = Redactor([SECRET]).masking()

        assert masking.feed(b"x" + SECRET.encode()[:5], last=True) == (
            b"x" + SECRET.encode()[:5]
        )
        assert masking.finish() == b""

    def test_long_secret(self) -> None:
        """A value of thousands of characters is masked across many pieces."""
        value = "k" + "0123456789abcdef" * 200
        body = b"begin " + value.encode() + b" end"

        out, masked = _streamed(Redactor([value]), _pieces(body, [7, 500, 3000]))

        assert out == b"begin " + b"*" * len(value) + b" end"
        assert masked == 1


class TestProperties:
    @given(
        before=surroundings,
        value=secret_values,
        after=surroundings,
        cuts=st.lists(st.integers(min_value=0), max_size=6),
    )
    def test_any_split_masks_as_the_whole(
        self, before: bytes, value: str, after: bytes, cuts: list[int]
    ) -> None:
        """However the body is cut, the agent gets what masking it whole gives:
        the same length, and no trace of the value."""
        redactor = _redactor(value)
        body = before + value.encode() + after
        assume(b"*" not in body)

        out, masked = _streamed(redactor, _pieces(body, cuts))

        assert out == redactor.masking().whole(body)
        assert len(out) == len(body)
        assert value.encode() not in out
        assert masked >= 1
