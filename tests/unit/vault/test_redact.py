"""Tests for the redactor: values in any common encoding, and sensitive field names."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from urllib.parse import quote, quote_plus, urlencode

import pytest
from hypothesis import given, reject
from hypothesis import strategies as st

from proctor.errors import VaultError
from proctor.vault import REDACTED, Redactor, Vault, encoded_forms

SECRET = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"
SPECIAL = "p@ss/w0rd+&=ü ~!*'()"

secret_values = st.text(min_size=8, max_size=40)
surroundings = st.text(max_size=60)


def _redactor(*values: str) -> Redactor:
    """A redactor for ``values``, or a rejected example when one is refused."""
    try:
        return Redactor(values)
    except VaultError:
        reject()


class TestRawValues:
    """A value is replaced wherever it occurs in a text."""

    def test_named_marker(self) -> None:
        """A named secret is replaced by a marker with its name."""
        redactor = Redactor(named=[("stripe", SECRET)])
        assert redactor.scrub_text(f"key={SECRET}; again {SECRET}") == (
            "key=[redacted:stripe]; again [redacted:stripe]"
        )

    def test_plain_marker(self) -> None:
        """An unnamed value is replaced by [redacted]."""
        assert Redactor([SECRET]).scrub_text(f"<{SECRET}>") == f"<{REDACTED}>"

    def test_longest_value_first(self) -> None:
        """A value that contains another is removed whole, not cut at the shorter."""
        short, long = "abcdefgh", "abcdefgh-and-more"
        redactor = Redactor(named=[("short", short), ("long", long)])
        assert redactor.scrub_text(f"{long} {short}") == (
            "[redacted:long] [redacted:short]"
        )

    def test_text_without_secrets_is_unchanged(self) -> None:
        """Text with no secret comes back identical."""
        text = "nothing to see here, sk_live_ but not the key"
        assert Redactor([SECRET]).scrub_text(text) == text

    def test_no_values_only_fields(self) -> None:
        """Without values, texts pass through and field names still apply."""
        redactor = Redactor()
        assert redactor.scrub_text(SECRET) == SECRET
        assert redactor.scrub({"password": "x"}) == {"password": REDACTED}

    def test_from_a_vault(self, vault: Vault) -> None:
        """A redactor built from a vault removes current and past versions."""
        vault.set("stripe", "sk_live_version_1")
        vault.set("stripe", "sk_live_version_2")
        redactor = Redactor(named=vault.named_values())
        assert redactor.scrub_text("sk_live_version_1 sk_live_version_2") == (
            "[redacted:stripe] [redacted:stripe]"
        )


class TestEncodings:
    """Base64, percent-encoded and JSON-escaped forms are removed too."""

    @pytest.mark.parametrize("value", [SECRET, SPECIAL])
    @pytest.mark.parametrize(
        "encode",
        [
            lambda v: base64.b64encode(v.encode()).decode(),
            lambda v: base64.urlsafe_b64encode(v.encode()).decode(),
            lambda v: base64.b64encode(v.encode()).decode().rstrip("="),
            lambda v: quote(v, safe=""),
            quote,
            quote_plus,
            lambda v: re.sub("%..", lambda m: m.group().lower(), quote(v, safe="")),
            lambda v: quote(v, safe="!'()*"),
            lambda v: urlencode({"key": v}),
            json.dumps,
            lambda v: json.dumps(v, ensure_ascii=False),
        ],
    )
    def test_encoded_value_removed(
        self, value: str, encode: Callable[[str], str]
    ) -> None:
        """The encoded value no longer appears, and a marker does."""
        encoded = encode(value)
        out = Redactor([value]).scrub_text(f"before {encoded} after")
        assert encoded.strip('"') not in out
        assert REDACTED in out

    @pytest.mark.parametrize("user", ["", "a", "ab", "abc", "user", "alice", "bob.x"])
    def test_inside_basic_credentials(self, user: str) -> None:
        """The password is found inside base64(user:password) at every alignment."""
        header = "Basic " + base64.b64encode(f"{user}:{SECRET}".encode()).decode()
        out = Redactor([SECRET]).scrub_text(header)
        assert REDACTED in out
        assert header[6:] not in out

    def test_json_body_with_escapes(self) -> None:
        """A value needing JSON escapes is removed from the serialised body."""
        value = 'quote"back\\slash/€'
        body = json.dumps({"password_hint": value, "note": f"x {value} y"})
        out = json.loads(Redactor([value]).scrub_text(body))
        assert value not in json.dumps(out, ensure_ascii=False)
        assert out["note"] == f"x {REDACTED} y"

    def test_forms_listed(self) -> None:
        """encoded_forms names the raw value and its URL and base64 forms."""
        forms = encoded_forms(SPECIAL)
        inside = base64.b64encode(b"user:" + SPECIAL.encode()).decode()
        assert {SPECIAL, quote(SPECIAL, safe=""), quote_plus(SPECIAL)} <= forms
        assert any(len(form) >= 10 and form in inside for form in forms)


class TestBytes:
    """Bodies as bytes are scrubbed without being decoded."""

    def test_bytes_body(self) -> None:
        """UTF-8 forms are replaced in bytes, with the marker in bytes."""
        body = f'{{"token_used": "{SECRET}"}}'.encode()
        out = Redactor(named=[("stripe", SECRET)]).scrub_bytes(body)
        assert out == b'{"token_used": "[redacted:stripe]"}'

    def test_non_utf8_body(self) -> None:
        """A body that is not UTF-8 is still scrubbed around the value."""
        body = b"\xff\xfe\x00" + SECRET.encode() + b"\x80"
        out = Redactor([SECRET]).scrub_bytes(body)
        assert out == b"\xff\xfe\x00[redacted]\x80"

    def test_non_ascii_value_in_bytes(self) -> None:
        """A non-ASCII value is found by its UTF-8 bytes."""
        out = Redactor([SPECIAL]).scrub_bytes(b"x" + SPECIAL.encode() + b"y")
        assert out == b"x[redacted]y"

    def test_base64_in_bytes(self) -> None:
        """The base64 forms are found in bytes as well."""
        body = base64.b64encode(b"user:" + SECRET.encode())
        assert REDACTED.encode() in Redactor([SECRET]).scrub_bytes(body)


class TestFieldNames:
    """Fields with credential names lose their value whatever it is."""

    @pytest.mark.parametrize(
        "name",
        [
            "Authorization",
            "proxy-authorization",
            "Cookie",
            "Set-Cookie",
            "X-Api-Key",
            "api_key",
            "password",
            "PASSWORD",
            "secret",
            "token",
            "db_password",
            "github_token",
            "client_secret",
            "x-amz-security-token",
        ],
    )
    def test_sensitive(self, name: str) -> None:
        """The field's value becomes [redacted]."""
        assert Redactor().scrub({name: "not-a-vault-value"}) == {name: REDACTED}

    @pytest.mark.parametrize(
        "name", ["max_tokens", "token_count", "content-type", "keyboard", "secretary"]
    )
    def test_not_sensitive(self, name: str) -> None:
        """Fields that only look alike keep their value."""
        assert Redactor().scrub({name: 5}) == {name: 5}

    def test_any_value_type(self) -> None:
        """A nested object or list under a sensitive name goes entirely."""
        data = {"credentials": {"user": "u", "key": [1, 2]}, "token": 12345}
        assert Redactor().scrub(data) == {"credentials": REDACTED, "token": REDACTED}

    def test_header_pairs(self) -> None:
        """(name, value) tuples, as raw headers, lose a sensitive value."""
        pairs = [("Authorization", "Bearer abc"), ("Accept", "*/*")]
        assert Redactor().scrub(pairs) == [
            ("Authorization", REDACTED),
            ("Accept", "*/*"),
        ]

    def test_raw_bytes_header_pairs(self) -> None:
        """ASGI raw headers keep their bytes type."""
        pairs = [(b"cookie", b"session=1"), (b"accept", b"*/*")]
        assert Redactor().scrub(pairs) == [
            (b"cookie", b"[redacted]"),
            (b"accept", b"*/*"),
        ]

    def test_custom_names(self) -> None:
        """Custom field names replace the defaults."""
        redactor = Redactor(field_names=["X-Tenant"], field_suffixes=[])
        assert redactor.scrub({"x_tenant": "t", "password": "p"}) == {
            "x_tenant": REDACTED,
            "password": "p",
        }

    def test_headers(self) -> None:
        """scrub_headers removes credential headers and values in the others."""
        headers = {"Authorization": "Bearer x", "X-Echo": f"v={SECRET}", "Accept": "a"}
        assert Redactor([SECRET]).scrub_headers(headers) == {
            "Authorization": REDACTED,
            "X-Echo": f"v={REDACTED}",
            "Accept": "a",
        }


class TestNested:
    """Secrets are removed at any depth, keys included, without changing the input."""

    def test_deep_structure(self) -> None:
        """Values inside lists in dicts in lists are replaced; other leaves stay."""
        data = {
            "request": {
                "url": f"https://api.example/v1?key={quote(SECRET)}",
                "body": [{"note": f"echo {SECRET}"}, 3, None, True, 2.5],
                SECRET: "a key that is a secret",
                "raw": SECRET.encode(),
            }
        }
        out = Redactor(named=[("stripe", SECRET)]).scrub(data)
        assert out == {
            "request": {
                "url": "https://api.example/v1?key=[redacted:stripe]",
                "body": [{"note": "echo [redacted:stripe]"}, 3, None, True, 2.5],
                "[redacted:stripe]": "a key that is a secret",
                "raw": b"[redacted:stripe]",
            }
        }
        assert SECRET in data["request"]

    def test_tuples_stay_tuples(self) -> None:
        """A tuple that is not a sensitive pair is walked and kept a tuple."""
        assert Redactor([SECRET]).scrub(("a", SECRET, 1)) == ("a", REDACTED, 1)

    def test_other_objects_pass(self) -> None:
        """Objects the redactor does not walk are returned as they are."""
        marker = object()
        assert Redactor([SECRET]).scrub([marker])[0] is marker  # type: ignore[index]


class TestRefusals:
    """Values that cannot be redacted reliably are refused."""

    @pytest.mark.parametrize("value", ["", "x", "1234567"])
    def test_short(self, value: str) -> None:
        """Values under 8 characters are refused."""
        with pytest.raises(VaultError, match="too short to redact"):
            Redactor([value])

    @pytest.mark.parametrize("value", ["redacted", "[redacted]", "edacted]"])
    def test_value_in_marker(self, value: str) -> None:
        """A value the marker itself contains is refused."""
        with pytest.raises(VaultError, match="shows in a redaction marker"):
            Redactor([value])

    def test_name_equal_to_value(self) -> None:
        """A named marker that would reproduce the value is refused."""
        with pytest.raises(VaultError, match="secret 'hunter2hunter2' cannot be"):
            Redactor(named=[("hunter2hunter2", "hunter2hunter2")])


class TestProperties:
    """For any text, no embedded secret survives."""

    @given(before=surroundings, value=secret_values, after=surroundings)
    def test_text(self, before: str, value: str, after: str) -> None:
        """A value anywhere in any text is gone from the output."""
        redactor = _redactor(value)
        assert value not in redactor.scrub_text(before + value + after)

    @given(before=surroundings, value=secret_values, after=surroundings)
    def test_bytes(self, before: str, value: str, after: str) -> None:
        """The same holds for the UTF-8 bytes of the text."""
        redactor = _redactor(value)
        data = (before + value + after).encode()
        assert value.encode() not in redactor.scrub_bytes(data)

    @given(values=st.lists(secret_values, min_size=2, max_size=4), text=surroundings)
    def test_several_values(self, values: list[str], text: str) -> None:
        """With several secrets interleaved, none survives."""
        redactor = _redactor(*values)
        out = redactor.scrub_text(text.join(values) + text + "".join(values))
        assert not any(value in out for value in values)

    @given(
        before=st.binary(max_size=20), value=secret_values, after=st.binary(max_size=20)
    )
    def test_base64_at_any_alignment(
        self, before: bytes, value: str, after: bytes
    ) -> None:
        """Base64 of any bytes around the value is always touched by a marker."""
        redactor = _redactor(value)
        encoded = base64.b64encode(before + value.encode() + after).decode()
        assert REDACTED in redactor.scrub_text(encoded)

    @given(text=st.text(alphabet="abcdefgh ", max_size=200))
    def test_no_secret_no_change(self, text: str) -> None:
        """A text without a secret is returned unchanged."""
        assert Redactor(["zzzzzzzzzz"]).scrub_text(text) == text
