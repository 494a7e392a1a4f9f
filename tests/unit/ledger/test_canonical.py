"""Tests for canonical JSON: the RFC 8785 vectors, agreement with rfc8785, refusals."""

from __future__ import annotations

import collections
import datetime
import decimal
import enum
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from proctor.errors import EntryError
from proctor.ledger.canonical import (
    MAX_DEPTH,
    MAX_ENTRY_BYTES,
    MAX_SAFE_INTEGER,
    canonical,
    reference,
)

# Characters where JSON encoders are known to disagree, mixed into every string.
TRICKY = (
    '\x00\x01\x08\t\n\x0b\x0c\r\x1f\x20"\\/\x7f\x80\x9f\xa0\xff\u0100'
    "\u2028\u2029\ud7ff\ue000\ufeff\ufffd\uffff\U00010000\U0001f389\U0010ffff"
)

texts = st.text(st.sampled_from(TRICKY) | st.characters(codec="utf-8"), max_size=20)
ascii_keys = st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=10)
safe_integers = st.integers(min_value=-MAX_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER)
scalars = st.none() | st.booleans() | safe_integers | texts
entry_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(ascii_keys, children, max_size=5)
    ),
    max_leaves=40,
)
"""Any value of the restricted entry format."""


def _cases(vectors: Path) -> list[dict[str, Any]]:
    data = json.loads((vectors / "jcs-canonicalization.json").read_text("utf-8"))
    cases: list[dict[str, Any]] = data["canonicalization_vectors"]
    return cases


def _receipts(vectors: Path) -> list[dict[str, Any]]:
    data = json.loads((vectors / "jcs-canonicalization.json").read_text("utf-8"))
    receipts: list[dict[str, Any]] = data["receipt_hash_vectors"]
    return receipts


def _in_format(value: Any) -> bool:
    """Whether a value is in the restricted format, judged apart from the module."""
    if isinstance(value, dict):
        return all(
            isinstance(key, str) and key.isascii() and _in_format(item)
            for key, item in value.items()
        )
    if isinstance(value, list):
        return all(_in_format(item) for item in value)
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return True
    return isinstance(value, int) and abs(value) <= MAX_SAFE_INTEGER


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


class TestVectors:
    """The 32 RFC 8785 cases of jcs-canonicalization.json."""

    def test_there_are_32_cases(self, vectors: Path) -> None:
        """The vector file holds the 32 cases the README promises."""
        assert len(_cases(vectors)) == 32

    def test_reference_passes_every_case(
        self, vectors: Path, subtests: pytest.Subtests
    ) -> None:
        """reference() gives every canonical form and refuses the one unsafe integer."""
        for case in _cases(vectors):
            with subtests.test(msg=case["name"]):
                value = case["input"]
                if isinstance(value, int) and abs(value) > MAX_SAFE_INTEGER:
                    with pytest.raises(EntryError, match=r"outside ±\(2\*\*53 - 1\)"):
                        reference(value)
                else:
                    assert reference(value) == case["canonical"].encode("utf-8")

    def test_canonical_within_the_format(
        self, vectors: Path, subtests: pytest.Subtests
    ) -> None:
        """canonical() gives the vector for cases in the format and refuses the rest."""
        inside = 0
        for case in _cases(vectors):
            with subtests.test(msg=case["name"]):
                value = case["input"]
                if _in_format(value):
                    inside += 1
                    assert canonical(value) == case["canonical"].encode("utf-8")
                else:
                    with pytest.raises(
                        EntryError, match=r"^\$: (floats|key .* is not ascii|integer)"
                    ):
                        canonical(value)
        assert inside == 19

    def test_unsafe_integer_case_is_refused_by_both(self, vectors: Path) -> None:
        """The 2**53 case is refused by rfc8785 itself and by canonical()."""
        (case,) = [case for case in _cases(vectors) if case["name"] == "number_2_to_53"]
        with pytest.raises(rfc8785.IntegerDomainError, match="exceeds safe integer"):
            rfc8785.dumps(case["input"])
        with pytest.raises(
            EntryError, match=r"\$: integer is outside ±\(2\*\*53 - 1\)"
        ):
            canonical(case["input"])

    def test_receipt_hashes(self, vectors: Path, subtests: pytest.Subtests) -> None:
        """Receipts given as written hash to their expected SHA-256 when canonical."""
        hashes: dict[str, str] = {}
        for case in _receipts(vectors):
            # The other cases test a null-dropping sweep of that SDK, not RFC 8785.
            if "receipt" not in case or case.get("preNormalizationInput"):
                continue
            with subtests.test(msg=case["name"]):
                data = canonical(case["receipt"])
                digest = "sha256:" + hashlib.sha256(data).hexdigest()
                hashes[case["name"]] = digest
                want = case["expectedHash"]
                if want.startswith("SAME_AS_"):
                    want = hashes[want.removeprefix("SAME_AS_")]
                assert digest == want
                assert data == reference(case["receipt"])
                if "mustContainSubstring" in case:
                    assert case["mustContainSubstring"].encode("utf-8") in data
        assert len(hashes) == 8


class TestMatchesReference:
    """canonical() and rfc8785 agree byte for byte on the whole format."""

    @given(entry_values)
    def test_any_value(self, value: Any) -> None:
        """Any value of the format encodes exactly as rfc8785 encodes it."""
        assert canonical(value) == rfc8785.dumps(value) == reference(value)

    @given(entry_values)
    def test_round_trip(self, value: Any) -> None:
        """Parsing the canonical bytes gives back the value."""
        assert orjson.loads(canonical(value)) == value

    @given(st.dictionaries(ascii_keys, st.integers(0, 9), min_size=2, max_size=20))
    def test_key_order(self, value: dict[str, int]) -> None:
        """Keys come out sorted, whatever order they went in."""
        shuffled = dict(reversed(list(value.items())))
        assert canonical(shuffled) == canonical(value) == rfc8785.dumps(value)

    def test_every_code_point(self) -> None:
        """Every Unicode scalar value is written as rfc8785 writes it."""
        scalar_values = [
            chr(point)
            for point in range(sys.maxunicode + 1)
            if not 0xD800 <= point <= 0xDFFF
        ]
        for start in range(0, len(scalar_values), 4096):
            text = "".join(scalar_values[start : start + 4096])
            assert canonical(text) == rfc8785.dumps(text)

    def test_escapes(self) -> None:
        """Controls are escaped; DEL, '/', U+2028/9 and non-ASCII are written raw."""
        text = '\x00\x1f\b\t\n\f\r"\\\x7f/\u2028\u2029é\U0001f389'
        expected = '"\\u0000\\u001f\\b\\t\\n\\f\\r\\"\\\\\x7f/\u2028\u2029é\U0001f389"'

        assert canonical(text) == expected.encode("utf-8")

    def test_integer_bounds(self) -> None:
        """The largest safe integers, both signs, are written in full."""
        assert canonical([MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER]) == (
            b"[9007199254740991,-9007199254740991]"
        )

    def test_nothing_but_the_bytes(self) -> None:
        """No whitespace is added between tokens."""
        value = {"b": [1, True, None], "a": {"c": ""}}
        assert canonical(value) == b'{"a":{"c":""},"b":[1,true,null]}'


class EntryKind(enum.StrEnum):
    """A string enum, which is a str subclass."""

    OPENED = "task.opened"


class TestRefusals:
    """canonical() refuses what is outside the format, naming the offending path."""

    def test_float_names_its_path(self) -> None:
        """A float deep in an entry is refused with its path."""
        entry = {"request": {"body": {"amount": 12.5}}}
        with pytest.raises(
            EntryError, match=r"^\$\.request\.body\.amount: floats are not allowed"
        ):
            canonical(entry)

    def test_negative_zero_float(self) -> None:
        """Even an integral float is refused."""
        with pytest.raises(EntryError, match=r"^\$\[1\]: floats are not allowed"):
            canonical([1, -0.0])

    @pytest.mark.parametrize("number", [2**53, -(2**53), 10**30])
    def test_unsafe_integer(self, number: int) -> None:
        """An integer beyond ±(2**53 - 1) is refused with its path."""
        with pytest.raises(
            EntryError, match=r"^\$\.total: integer is outside ±\(2\*\*53 - 1\)"
        ):
            canonical({"total": number})

    def test_non_ascii_key(self) -> None:
        """A key outside ASCII is refused, quoted in escaped form."""
        with pytest.raises(
            EntryError, match=r'^\$\.body: key "caf\\u00e9" is not ascii'
        ):
            canonical({"body": {"café": 1}})

    def test_surrogate_key(self) -> None:
        """A key holding a lone surrogate is refused as non-ASCII."""
        with pytest.raises(EntryError, match=r'^\$: key "\\ud800" is not ascii'):
            canonical({"\ud800": 1})

    def test_non_string_key(self) -> None:
        """A key that is not a string is refused with its type."""
        with pytest.raises(EntryError, match=r"^\$\.codes: has a key of type int"):
            canonical({"codes": {200: "ok"}})

    def test_lone_surrogate_in_string(self) -> None:
        """A string with a lone surrogate is refused with its path."""
        with pytest.raises(
            EntryError, match=r"^\$\.notes\[1\]: string holds a lone surrogate"
        ):
            canonical({"notes": ["fine", "bad \udc00 half"]})

    def test_first_fault_after_clean_containers(self) -> None:
        """Clean nested containers before the fault are walked past."""
        entry = {"a": {"x": 1, "y": [2]}, "b": [1, [2, {"z": None}]], "c": 1.5}
        with pytest.raises(EntryError, match=r"^\$\.c: floats are not allowed"):
            canonical(entry)

    def test_quoted_path_for_odd_keys(self) -> None:
        """Keys that are not plain names appear quoted in the path."""
        with pytest.raises(EntryError, match=r'^\$\["a b"\]\[0\]\["@id"\]: floats'):
            canonical({"a b": [{"@id": 1.0}]})

    @pytest.mark.parametrize(
        ("value", "name"),
        [
            ((1, 2), "tuple"),
            ({1, 2}, "set"),
            (b"raw", "bytes"),
            (decimal.Decimal("1.5"), "Decimal"),
            (datetime.datetime(2026, 12, 3, tzinfo=datetime.UTC), "datetime"),
            (EntryKind.OPENED, "EntryKind"),
            (collections.OrderedDict(a=1), "OrderedDict"),
        ],
    )
    def test_unsupported_type(self, value: object, name: str) -> None:
        """Types other than the plain JSON built-ins are refused by name."""
        with pytest.raises(EntryError, match=rf"^\$\.v: type {name} is not allowed"):
            canonical({"v": value})

    def test_depth_limit(self) -> None:
        """MAX_DEPTH containers nest; one more is refused."""
        assert canonical(_nested(MAX_DEPTH)) == (
            b"[" * MAX_DEPTH + b"1" + b"]" * MAX_DEPTH
        )
        with pytest.raises(EntryError, match=rf"nests deeper than {MAX_DEPTH}"):
            canonical(_nested(MAX_DEPTH + 1))

    def test_size_limit(self) -> None:
        """An entry of MAX_ENTRY_BYTES is accepted; one byte more is refused."""
        padding = MAX_ENTRY_BYTES - len(b'{"p":""}')
        assert len(canonical({"p": "x" * padding})) == MAX_ENTRY_BYTES
        with pytest.raises(
            EntryError, match=r"^\$: entry is 65536 bytes, above the limit of 65535"
        ):
            canonical({"p": "x" * (padding + 1)})


class TestReference:
    """reference() is rfc8785, with its refusals translated to EntryError."""

    def test_accepts_floats(self) -> None:
        """The reference encoder writes floats as RFC 8785 numbers."""
        assert reference({"b": 1e21, "a": 0.1}) == b'{"a":0.1,"b":1e+21}'

    def test_refuses_nan(self) -> None:
        """NaN has no JSON form."""
        with pytest.raises(EntryError, match="float that is nan or infinite"):
            reference(float("nan"))

    def test_refuses_non_string_key(self) -> None:
        """Keys must be strings."""
        with pytest.raises(EntryError, match="object keys must be strings"):
            reference({1: 2})

    def test_refuses_lone_surrogate(self) -> None:
        """A lone surrogate is not UTF-8."""
        with pytest.raises(EntryError, match="non-UTF-8 codepoints"):
            reference("\ud800")

    def test_refuses_unsupported_type(self) -> None:
        """Bytes are not JSON."""
        with pytest.raises(EntryError, match="rfc 8785 refuses the value: unsupported"):
            reference(b"raw")

    def test_refuses_runaway_nesting(self) -> None:
        """Nesting beyond Python's recursion limit is refused, not crashed on."""
        with pytest.raises(EntryError, match="nests too deeply"):
            reference(_nested(sys.getrecursionlimit() + 10))
