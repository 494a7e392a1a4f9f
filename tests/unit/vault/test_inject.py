"""Tests for injection: each style fills exactly its slot and removes the agent's."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from proctor.errors import ConfigError, VaultError
from proctor.vault import Injection, Outbound, Style, apply

# RFC 7617 §2 and §2.1 give these encodings; they are not computed here.
RFC_PAIR_BASE64 = "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="  # Aladdin:open sesame
RFC_UTF8_BASE64 = "dGVzdDoxMjPCow=="  # test:123£


def _agent_request() -> Outbound:
    """What an agent sends: its own credentials in every slot, plus ordinary parts."""
    return Outbound(
        headers={
            "authorization": "Bearer agent-own-token",
            "AUTHORIZATION": "Basic YWdlbnQ6b3du",
            "X-Api-Key": "agent-own-key",
            "x-api-key": "agent-other-key",
            "Accept": "application/json",
        },
        query=(("page", "2"), ("API_KEY", "agent-own"), ("api_key", "agent-two")),
        env={"GITHUB_TOKEN": "agent-own", "PATH": "/usr/bin"},
    )


class TestHeader:
    """The header style sets one named header to the value."""

    def test_sets_the_header_and_removes_every_spelling(self) -> None:
        """X-Api-Key carries the secret; the agent's two spellings are gone."""
        injection = Injection(Style.HEADER, "service", name="X-Api-Key")
        out = apply(injection, "real-secret-value", _agent_request())
        assert [k for k in out.headers if k.lower() == "x-api-key"] == ["X-Api-Key"]
        assert out.headers["X-Api-Key"] == "real-secret-value"

    def test_leaves_other_parts_alone(self) -> None:
        """Other headers, the query and the environment are untouched."""
        request = _agent_request()
        injection = Injection(Style.HEADER, "service", name="X-Api-Key")
        out = apply(injection, "real-secret-value", request)
        assert out.headers["Accept"] == "application/json"
        assert out.headers["authorization"] == "Bearer agent-own-token"
        assert out.query == request.query
        assert out.env == request.env


class TestBearer:
    """The bearer style sets Authorization: Bearer <value>."""

    def test_exact_header(self) -> None:
        """One Authorization header remains, holding the bearer secret."""
        out = apply(Injection(Style.BEARER, "stripe"), "sk_live_123", _agent_request())
        authorization = {
            k: v for k, v in out.headers.items() if k.lower() == "authorization"
        }
        assert authorization == {"Authorization": "Bearer sk_live_123"}

    def test_nothing_else_changes(self) -> None:
        """Only the Authorization slot differs from the agent's request."""
        request = _agent_request()
        out = apply(Injection(Style.BEARER, "stripe"), "sk_live_123", request)
        assert {k: v for k, v in out.headers.items() if k != "Authorization"} == {
            k: v for k, v in request.headers.items() if k.lower() != "authorization"
        }


class TestBasic:
    """The basic style sends base64 of user:password (RFC 7617)."""

    def test_username_configured(self) -> None:
        """With a username, the secret is the password."""
        injection = Injection(Style.BASIC, "legacy", username="Aladdin")
        out = apply(injection, "open sesame", _agent_request())
        assert out.headers["Authorization"] == f"Basic {RFC_PAIR_BASE64}"
        assert "authorization" not in out.headers
        assert "AUTHORIZATION" not in out.headers

    def test_pair_in_the_secret(self) -> None:
        """Without a username, the secret holds user:password."""
        out = apply(Injection(Style.BASIC, "legacy"), "Aladdin:open sesame", Outbound())
        assert dict(out.headers) == {"Authorization": f"Basic {RFC_PAIR_BASE64}"}

    def test_utf8(self) -> None:
        """Non-ASCII passwords are encoded as UTF-8 (RFC 7617 §2.1)."""
        out = apply(
            Injection(Style.BASIC, "legacy", username="test"), "123£", Outbound()
        )
        assert out.headers["Authorization"] == f"Basic {RFC_UTF8_BASE64}"

    def test_password_may_hold_colons(self) -> None:
        """Only the first colon separates user from password."""
        injection = Injection(Style.BASIC, "legacy")
        out = apply(injection, "Aladdin:open sesame", Outbound())
        with_user = apply(
            Injection(Style.BASIC, "legacy", username="Aladdin"),
            "open sesame",
            Outbound(),
        )
        assert out.headers == with_user.headers

    def test_pair_required_without_username(self) -> None:
        """A secret without a colon cannot be a user:password pair."""
        with pytest.raises(VaultError, match="'legacy' must hold 'user:password'"):
            apply(Injection(Style.BASIC, "legacy"), "no-colon-here", Outbound())


class TestQuery:
    """The query style sets one parameter, removing the agent's of any case."""

    def test_sets_the_parameter(self) -> None:
        """api_key=value ends the query; the agent's two copies are gone."""
        injection = Injection(Style.QUERY, "maps", name="api_key")
        out = apply(injection, "real-key-value", _agent_request())
        assert out.query == (("page", "2"), ("api_key", "real-key-value"))

    def test_headers_untouched(self) -> None:
        """Query injection leaves headers as the agent sent them."""
        request = _agent_request()
        out = apply(Injection(Style.QUERY, "maps", name="key"), "value1234", request)
        assert out.headers == request.headers


class TestEnv:
    """The env style sets one environment variable for an MCP server."""

    def test_sets_the_variable(self) -> None:
        """GITHUB_TOKEN holds the secret; PATH stays."""
        injection = Injection(Style.ENV, "github", name="GITHUB_TOKEN")
        out = apply(injection, "ghp_real", _agent_request())
        assert dict(out.env) == {"GITHUB_TOKEN": "ghp_real", "PATH": "/usr/bin"}

    def test_nul_refused(self) -> None:
        """A NUL cannot go into an environment variable."""
        injection = Injection(Style.ENV, "github", name="GITHUB_TOKEN")
        with pytest.raises(VaultError, match="'github' holds a line break or NUL"):
            apply(injection, "abc\x00def", Outbound())


class TestHeaderSafety:
    """A value that could split a request is refused, never sent."""

    @pytest.mark.parametrize("style", [Style.BEARER, Style.BASIC, Style.HEADER])
    @pytest.mark.parametrize("bad", ["\r\nX-Evil: 1", "line\nbreak", "nul\x00"])
    def test_line_breaks_refused(self, style: Style, bad: str) -> None:
        """CR, LF and NUL never reach a header, and the message hides the value."""
        name = "X-Key" if style is Style.HEADER else None
        username = "user" if style is Style.BASIC else None
        injection = Injection(style, "svc", name=name, username=username)
        with pytest.raises(VaultError, match="'svc' holds a line break") as caught:
            apply(injection, bad, Outbound())
        assert bad not in str(caught.value)


class TestOutbound:
    """An Outbound is a value: read-only, copied, and silent about secrets."""

    def test_caller_dicts_are_not_changed(self) -> None:
        """apply copies; the dicts the caller passed keep the agent's values."""
        headers = {"Authorization": "Bearer agent"}
        env = {"TOKEN": "agent"}
        apply(Injection(Style.BEARER, "svc"), "real-value", Outbound(headers=headers))
        apply(
            Injection(Style.ENV, "svc", name="TOKEN"), "real-value", Outbound(env=env)
        )
        assert headers == {"Authorization": "Bearer agent"}
        assert env == {"TOKEN": "agent"}

    def test_read_only(self) -> None:
        """The headers cannot be changed after the fact."""
        out = apply(Injection(Style.BEARER, "svc"), "real-value", Outbound())
        with pytest.raises(TypeError, match="does not support item assignment"):
            out.headers["Authorization"] = "Bearer other"  # type: ignore[index]

    def test_repr_shows_names_only(self) -> None:
        """The repr lists header, parameter and variable names, never values."""
        out = apply(Injection(Style.BEARER, "svc"), "canary-value-1", _agent_request())
        out = apply(Injection(Style.QUERY, "q", name="k"), "canary-value-2", out)
        out = apply(Injection(Style.ENV, "e", name="E"), "canary-value-3", out)
        shown = repr(out)
        assert "Authorization" in shown
        assert "canary" not in shown
        assert "agent-own" not in shown


class TestSlot:
    """Each injection names the single place it fills."""

    @pytest.mark.parametrize(
        ("injection", "slot"),
        [
            (Injection(Style.BEARER, "s"), ("header", "authorization")),
            (Injection(Style.BASIC, "s", username="u"), ("header", "authorization")),
            (Injection(Style.HEADER, "s", name="X-Key"), ("header", "x-key")),
            (Injection(Style.QUERY, "s", name="Key"), ("query", "key")),
            (Injection(Style.ENV, "s", name="Key"), ("env", "Key")),
        ],
    )
    def test_slot(self, injection: Injection, slot: tuple[str, str]) -> None:
        """Header and query slots ignore case; environment names keep it."""
        assert injection.slot == slot


class TestFromConfig:
    """TOML tables become injections, and mistakes are named."""

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ('style = "bearer"\nsecret = "stripe"', Injection(Style.BEARER, "stripe")),
            (
                'style = "basic"\nsecret = "db"\nusername = "svc"',
                Injection(Style.BASIC, "db", username="svc"),
            ),
            (
                'style = "header"\nsecret = "k"\nname = "X-Api-Key"',
                Injection(Style.HEADER, "k", name="X-Api-Key"),
            ),
            (
                'style = "query"\nsecret = "k"\nname = "key"',
                Injection(Style.QUERY, "k", name="key"),
            ),
            (
                'style = "env"\nsecret = "gh"\nname = "GITHUB_TOKEN"',
                Injection(Style.ENV, "gh", name="GITHUB_TOKEN"),
            ),
        ],
    )
    def test_parses(self, text: str, expected: Injection) -> None:
        """Each style reads from its TOML form."""
        assert Injection.from_config(tomllib.loads(text)) == expected

    @pytest.mark.parametrize(
        ("table", "message"),
        [
            ({"style": "bearer", "secret": "s", "scheme": "x"}, "unknown key 'scheme'"),
            ({"style": "cookie", "secret": "s"}, "style must be one of header, bearer"),
            ({"secret": "s"}, "style must be one of"),
            ({"style": "bearer"}, "needs secret ="),
            ({"style": "bearer", "secret": 3}, "needs secret ="),
            ({"style": "bearer", "secret": "bad name"}, "is not a secret name"),
            (
                {"style": "bearer", "secret": "s", "name": "X"},
                "always uses Authorization",
            ),
            ({"style": "bearer", "secret": "s", "username": "u"}, "takes no username"),
            ({"style": "basic", "secret": "s", "username": "a:b"}, "without ':'"),
            ({"style": "basic", "secret": "s", "username": ""}, "must be non-empty"),
            ({"style": "header", "secret": "s"}, "style header needs a name"),
            ({"style": "header", "secret": "s", "name": "X Key"}, "not an HTTP token"),
            ({"style": "header", "secret": "s", "name": "Host"}, "frames the request"),
            (
                {"style": "header", "secret": "s", "name": "Transfer-Encoding"},
                "frames the request",
            ),
            ({"style": "query", "secret": "s", "name": ""}, "style query needs a name"),
            ({"style": "query", "secret": "s", "name": "a\nb"}, "control characters"),
            ({"style": "env", "secret": "s", "name": "1BAD"}, "is not valid"),
            ({"style": "env", "secret": "s", "name": 5}, "name must be a string"),
        ],
    )
    def test_refuses(self, table: dict[str, Any], message: str) -> None:
        """Each mistake is a ConfigError saying what is wrong."""
        with pytest.raises(ConfigError, match=message):
            Injection.from_config(table)
