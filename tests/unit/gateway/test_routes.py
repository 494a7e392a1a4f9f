"""Route maps from proctor.toml and the classification of requests against them."""

from __future__ import annotations

import re
import textwrap
import tomllib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proctor.errors import ConfigError
from proctor.gateway import pipeline, routes
from proctor.gateway.classify import BadRequest, Classified, Unmapped, classify
from proctor.gateway.routes import (
    MALFORMED,
    MAX_CONTEXT_STRING,
    MAX_SAFE_INTEGER,
    NO_BODY,
    UNMAPPED,
    ServiceConfig,
    load_services,
)
from proctor.vault.inject import Style

READ = 'Payments::Action::"ReadInvoice"'
PAY = 'Payments::Action::"CreatePayment"'


def service(*route_tables: dict[str, Any], **keys: Any) -> ServiceConfig:
    table = {"base_url": "http://127.0.0.1:8081", **keys, "routes": list(route_tables)}
    return ServiceConfig.from_table("finance", table)


def route(method: object = "GET", path: object = "/x", **keys: Any) -> dict[str, Any]:
    return {"method": method, "path": path, "action": READ, **keys}


def payments() -> ServiceConfig:
    return service(
        route("GET", "/invoices/{invoice}", resource='Payments::Invoice::"{invoice}"'),
        route(
            "POST",
            "/payments",
            action=PAY,
            resource='Payments::Account::"ops"',
            context={
                "amount": {"from": "body.amount", "type": "long"},
                "vendor": "body.vendor",
            },
        ),
    )


def documented_example() -> dict[str, Any]:
    doc = routes.__doc__ or ""
    block = doc.split("::\n\n", 1)[1].split("\n\nPaths.", 1)[0]
    return tomllib.loads(textwrap.dedent(block))


class TestDocumentedExample:
    def test_example_in_the_module_docstring_loads(self) -> None:
        """The format shown in routes.py's docstring is valid configuration."""
        services = load_services(documented_example())
        finance = services["finance"]

        assert finance.timeout == 10.0
        assert finance.max_body == 1048576
        assert finance.credential is not None
        assert finance.credential.style is Style.HEADER
        assert [r.method for r in finance.routes] == ["GET", "POST"]

    def test_example_classifies_a_payment(self) -> None:
        """The documented payment route yields its action, resource and context."""
        finance = load_services(documented_example())["finance"]
        result = classify(
            finance, "POST", "/payments", (), {"amount": 500, "vendor": "acme"}
        )

        assert result == Classified(
            PAY,
            'Payments::Account::"ops"',
            {"amount": 500, "vendor": "acme"},
            finance.routes[1],
        )


class TestServiceConfig:
    def test_no_services_is_an_empty_map(self) -> None:
        """A proctor.toml without [services] configures no upstream."""
        assert load_services({"ledger": {}}) == {}

    def test_services_must_be_a_table(self) -> None:
        """[services] holding anything but tables is refused."""
        with pytest.raises(ConfigError, match="must be a table of services"):
            load_services({"services": ["finance"]})

    def test_trailing_slash_of_base_url_is_dropped(self) -> None:
        """A base URL with a path prefix keeps it, without its trailing slash."""
        assert service(base_url="https://api.example.com/v1/").base_url == (
            "https://api.example.com/v1"
        )

    @pytest.mark.parametrize(
        ("base_url", "message"),
        [
            ("ftp://example.com", "must be an http"),
            ("http://", "must be an http"),
            ("http://user:pw@example.com", "must not hold credentials"),
            ("http://example.com/?a=1", "must not hold credentials, a query"),
            ("http://example.com/#top", "must not hold credentials, a query"),
            ("http://example.com:99999", "is not a valid URL"),
            ("http://example.com:0", "has port 0"),
            (42, "must be an http"),
        ],
    )
    def test_bad_base_url_is_refused(self, base_url: object, message: str) -> None:
        """Only a plain http(s) URL with a host may be an upstream."""
        with pytest.raises(ConfigError, match=message):
            service(base_url=base_url)

    @pytest.mark.parametrize("name", ["Finance", "fin/ance", "", "-x", "a" * 64])
    def test_service_name_must_be_a_url_segment(self, name: str) -> None:
        """A service name is lower-case text that fits in /http/<service>/."""
        with pytest.raises(ConfigError, match="must be lower-case"):
            ServiceConfig.from_table(name, {"base_url": "http://h"})

    def test_unknown_key_is_refused(self) -> None:
        """A misspelt key is an error, not silently ignored."""
        with pytest.raises(ConfigError, match="unknown key 'time_out'"):
            service(time_out=3)

    @pytest.mark.parametrize(
        ("key", "value"), [("timeout", 0), ("timeout", "3"), ("max_body", -1)]
    )
    def test_limits_must_be_positive_numbers(self, key: str, value: object) -> None:
        """Timeouts and body limits are positive numbers."""
        with pytest.raises(ConfigError, match=f"{key} must be a positive number"):
            service(**{key: value})

    def test_max_body_is_a_whole_number(self) -> None:
        """A fractional byte count is refused."""
        with pytest.raises(ConfigError, match="max_body must be a whole number"):
            service(max_body=10.5)

    def test_defaults(self) -> None:
        """Without limits a service gets 30 s and 1 MiB, and no credential."""
        plain = service()

        assert (plain.timeout, plain.max_body, plain.credential) == (30.0, 2**20, None)

    def test_credential_is_an_injection(self) -> None:
        """The credential table is read by Injection.from_config."""
        finance = service(credential={"secret": "finance-key", "style": "bearer"})

        assert finance.credential is not None
        assert finance.credential.style is Style.BEARER

    def test_environment_credential_is_refused(self) -> None:
        """The env style is for MCP servers; an HTTP upstream cannot receive it."""
        with pytest.raises(ConfigError, match="env is for MCP servers only"):
            service(credential={"secret": "k", "style": "env", "name": "K"})

    def test_bad_credential_is_refused(self) -> None:
        """A credential that Injection refuses stops the configuration."""
        with pytest.raises(ConfigError, match="injection style"):
            service(credential={"secret": "k", "style": "carrier-pigeon"})


class TestRouteConfig:
    @pytest.mark.parametrize("method", ["get", "", "G ET", 5])
    def test_method_is_upper_case(self, method: object) -> None:
        """A route's method is an upper-case token."""
        with pytest.raises(ConfigError, match="upper-case HTTP method"):
            service(route(method=method))

    @pytest.mark.parametrize(
        ("path", "message"),
        [
            ("invoices", "starting with '/'"),
            ("/a//b", "empty segment"),
            ("/a/../b", "neither text nor"),
            ("/a/{b", "neither text nor"),
            ("/a/x{b}", "neither text nor"),
            ("/{a}/{a}", r"repeats \{a\}"),
        ],
    )
    def test_bad_path_template_is_refused(self, path: str, message: str) -> None:
        """A template is literal segments and whole-segment {name} parameters."""
        with pytest.raises(ConfigError, match=message):
            service(route(path=path))

    @pytest.mark.parametrize(
        "action",
        [
            'Payments::Invoice::"read"',
            "ReadInvoice",
            'Payments::Action::"{x}"',
            'Proctor::Action::"Unmapped"',
        ],
    )
    def test_action_must_be_an_action_uid(self, action: str) -> None:
        """An action is a Cedar Action uid outside Proctor's own namespace."""
        with pytest.raises(ConfigError, match="action"):
            service(route(action=action))

    @pytest.mark.parametrize(
        ("resource", "message"),
        [
            ("Payments::Invoice", 'must read Type::"id"'),
            ('Payments::Invoice::"{nope}"', "not a path parameter"),
            ('Payments::Invoice::"a\\"b"', "quote, backslash"),
            ('Payments::Invoice::"a}"', "stray brace"),
        ],
    )
    def test_bad_resource_is_refused(self, resource: str, message: str) -> None:
        """A resource template names a type and fills only path parameters."""
        with pytest.raises(ConfigError, match=message):
            service(route(path="/x/{id}", resource=resource))

    def test_unknown_route_key_is_refused(self) -> None:
        """A misspelt route key is an error."""
        with pytest.raises(ConfigError, match="unknown key 'actoin'"):
            service(route(actoin=READ))

    @pytest.mark.parametrize(
        ("context", "message"),
        [
            ({"task": "body.task"}, "identifier other than"),
            ({"2x": "body.x"}, "identifier other than"),
            ({"x": 5}, "must be a source or a table"),
            ({"x": "amount"}, "source must read"),
            ({"x": "header.amount"}, "must start with path, query or body"),
            ({"x": "body.a..b"}, "has an empty name"),
            ({"x": "path.nope"}, "is not a path parameter"),
            ({"x": {"from": "body.x", "type": "float"}}, "string, long or bool"),
            ({"x": {"from": "body.x", "optional": "yes"}}, "true or false"),
            ({"x": {"from": "body.x", "kind": "long"}}, "unknown key 'kind'"),
            ([], "table of fields"),
        ],
    )
    def test_bad_context_field_is_refused(self, context: object, message: str) -> None:
        """Context fields are identifiers with a known source and type."""
        with pytest.raises(ConfigError, match=message):
            service(route(context=context))

    def test_routes_must_be_tables(self) -> None:
        """[[services.x.routes]] is an array of tables."""
        with pytest.raises(ConfigError, match="array of tables"):
            ServiceConfig.from_table("x", {"base_url": "http://h", "routes": ["GET /"]})

    def test_same_shape_twice_is_refused(self) -> None:
        """Two routes of one method matching the same requests clash."""
        with pytest.raises(ConfigError, match="match the same requests"):
            service(route(path="/a/{x}"), route(path="/a/{y}"))

    def test_same_shape_of_other_methods_is_fine(self) -> None:
        """GET and POST on one path are two routes."""
        assert len(service(route("GET"), route("POST")).routes) == 2


class TestMatching:
    def test_literal_beats_parameter_in_any_order(self) -> None:
        """/invoices/summary wins over /invoices/{id}, whichever comes first."""
        summary = 'Payments::Action::"Summary"'
        for order in (1, -1):
            tables = [
                route(path="/invoices/{id}"),
                route(path="/invoices/summary", action=summary),
            ][::order]
            result = classify(service(*tables), "GET", "/invoices/summary", ())

            assert isinstance(result, Classified)
            assert result.action == summary

    def test_earlier_literal_decides(self) -> None:
        """At the first differing segment a literal wins over a parameter."""
        literal_first = 'Payments::Action::"A"'
        finance = service(
            route(path="/{x}/b", action='Payments::Action::"B"'),
            route(path="/a/{y}", action=literal_first),
        )
        result = classify(finance, "GET", "/a/b", ())

        assert isinstance(result, Classified)
        assert result.action == literal_first

    def test_trailing_slash_is_part_of_the_path(self) -> None:
        """/x/ does not match a route for /x."""
        assert isinstance(classify(service(route()), "GET", "/x/", ()), Unmapped)

    def test_root_path_can_be_mapped(self) -> None:
        """A template of "/" matches the service's root."""
        result = classify(service(route(path="/")), "GET", "/", ())

        assert isinstance(result, Classified)

    def test_parameter_needs_a_non_empty_segment(self) -> None:
        """{id} does not match an empty segment."""
        finance = service(route(path="/x/{id}"))

        assert isinstance(classify(finance, "GET", "/x/", ()), Unmapped)

    def test_method_must_match(self) -> None:
        """A GET route does not map a DELETE."""
        result = classify(service(route()), "DELETE", "/x", ())

        assert isinstance(result, Unmapped)
        assert result.reason == "no route of service 'finance' maps DELETE"

    def test_path_without_leading_slash_is_unmapped(self) -> None:
        """A path that is not absolute matches nothing."""
        assert isinstance(classify(service(route()), "GET", "x", ()), Unmapped)


class TestResource:
    def test_parameters_fill_the_template(self) -> None:
        """Path parameters become the resource id, decoded."""
        result = classify(payments(), "GET", "/invoices/inv 7", ())

        assert isinstance(result, Classified)
        assert result.resource == 'Payments::Invoice::"inv 7"'

    def test_quotes_in_parameters_are_escaped(self) -> None:
        """A path cannot break out of the Cedar string literal."""
        result = classify(payments(), "GET", '/invoices/a"::x\\', ())

        assert isinstance(result, Classified)
        assert result.resource == 'Payments::Invoice::"a\\"::x\\\\"'

    def test_default_resource_is_the_service(self) -> None:
        """A route without a resource acts on Proctor::Service::"<name>"."""
        result = classify(service(route()), "GET", "/x", ())

        assert isinstance(result, Classified)
        assert result.resource == 'Proctor::Service::"finance"'

    def test_fixed_resource_is_kept(self) -> None:
        """A resource without placeholders is used as written."""
        result = classify(
            payments(), "POST", "/payments", (), {"amount": 1, "vendor": "a"}
        )

        assert isinstance(result, Classified)
        assert result.resource == 'Payments::Account::"ops"'


def typed(source: str, kind: str = "string", **more: Any) -> ServiceConfig:
    return service(
        route(
            "POST",
            "/things/{id}",
            context={"value": {"from": source, "type": kind, **more}},
        )
    )


def value_of(result: object) -> object:
    assert isinstance(result, Classified), result
    return result.context.get("value", NO_BODY)


class TestContext:
    @pytest.mark.parametrize(
        ("kind", "body", "expected"),
        [
            ("long", {"v": 12}, 12),
            ("long", {"v": -MAX_SAFE_INTEGER}, -MAX_SAFE_INTEGER),
            ("string", {"v": "acme"}, "acme"),
            ("bool", {"v": False}, False),
        ],
    )
    def test_body_values_are_typed(
        self, kind: str, body: object, expected: object
    ) -> None:
        """A JSON value of the configured type goes into the context as it is."""
        result = classify(typed("body.v", kind), "POST", "/things/1", (), body)

        assert value_of(result) == expected

    def test_dotted_source_reaches_into_objects_and_lists(self) -> None:
        """body.a.1.b walks objects by key and lists by index."""
        body = {"a": [{"b": "no"}, {"b": "yes"}]}
        result = classify(typed("body.a.1.b"), "POST", "/things/1", (), body)

        assert value_of(result) == "yes"

    @pytest.mark.parametrize(
        ("source", "kind", "query", "expected"),
        [
            ("query.n", "long", [("n", "-42")], -42),
            ("query.n", "bool", [("n", "true")], True),
            ("query.n", "string", [("n", "007")], "007"),
            ("path.id", "long", [], 1),
        ],
    )
    def test_text_sources_are_parsed(
        self, source: str, kind: str, query: list[tuple[str, str]], expected: object
    ) -> None:
        """Path and query text is read as a long or a bool when typed so."""
        result = classify(typed(source, kind), "POST", "/things/1", query)

        assert value_of(result) == expected

    def test_optional_field_may_be_absent(self) -> None:
        """An optional field that is missing is left out of the context."""
        result = classify(typed("body.v", optional=True), "POST", "/things/1", (), {})

        assert value_of(result) is NO_BODY

    def test_optional_field_is_still_typed(self) -> None:
        """An optional field that is present must have its type."""
        result = classify(
            typed("body.v", "long", optional=True), "POST", "/things/1", (), {"v": "1"}
        )

        assert isinstance(result, BadRequest)


class TestBadRequests:
    @pytest.mark.parametrize(
        ("source", "kind", "query", "body", "message"),
        [
            ("body.v", "long", [], {}, "body.v is missing"),
            ("body.v", "long", [], {"v": "12"}, "must be a whole number, got text"),
            ("body.v", "long", [], {"v": 1.5}, "got a fractional number"),
            ("body.v", "long", [], {"v": True}, "got a boolean"),
            ("body.v", "long", [], {"v": MAX_SAFE_INTEGER + 1}, "must be within"),
            ("body.v", "string", [], {"v": None}, "must be a string, got null"),
            ("body.v", "string", [], {"v": [1]}, "got a list"),
            ("body.v", "string", [], {"v": {}}, "got an object"),
            ("body.v", "bool", [], {"v": 1}, "must be true or false"),
            ("body.v.w", "string", [], {"v": "text"}, "body.v.w is missing"),
            ("body.v.3", "string", [], {"v": ["a"]}, "body.v.3 is missing"),
            ("body.v", "string", [], [1, 2], "body.v is missing"),
            ("query.n", "long", [("n", "1e3")], None, "must be a whole number"),
            ("query.n", "long", [("n", "99999999999999999")], None, "whole number"),
            ("query.n", "bool", [("n", "yes")], None, "must be true or false"),
            ("query.n", "string", [("n", "a"), ("n", "b")], None, "given 2 times"),
            ("query.n", "string", [], None, "query.n is missing"),
        ],
    )
    def test_mismatched_fields_are_bad_requests(
        self,
        source: str,
        kind: str,
        query: list[tuple[str, str]],
        body: object,
        message: str,
    ) -> None:
        """A missing, mistyped or ambiguous field is a 400 naming the field."""
        result = classify(typed(source, kind), "POST", "/things/1", query, body)

        assert isinstance(result, BadRequest)
        assert result.status == 400
        assert result.action == MALFORMED
        assert re.search(message, result.reason), result.reason
        assert result.reason.startswith("route POST /things/{id}: ")

    def test_long_string_is_refused(self) -> None:
        """A string field longer than the limit cannot go into a decision entry."""
        body = {"v": "x" * (MAX_CONTEXT_STRING + 1)}
        result = classify(typed("body.v"), "POST", "/things/1", (), body)

        assert isinstance(result, BadRequest)
        assert "at most 1024 allowed" in result.reason

    def test_route_reading_the_body_needs_one(self) -> None:
        """Without a JSON body a route reading body fields answers 415."""
        result = classify(payments(), "POST", "/payments", ())

        assert isinstance(result, BadRequest)
        assert result.status == 415
        assert "Content-Type: application/json" in result.reason

    def test_reason_never_shows_the_value(self) -> None:
        """A wrong value is described by its type, never echoed."""
        result = classify(
            typed("body.v", "long"), "POST", "/things/1", (), {"v": "sk_live_abcdef"}
        )

        assert isinstance(result, BadRequest)
        assert "sk_live" not in result.reason


class TestUnmapped:
    def test_unmapped_is_on_the_synthetic_action(self) -> None:
        """A request no route maps is recorded as Unmapped on the service."""
        result = classify(payments(), "GET", "/admin", ())

        assert isinstance(result, Unmapped)
        assert result.action == UNMAPPED
        assert result.resource == 'Proctor::Service::"finance"'
        assert result.context == {}

    def test_same_action_as_the_pipeline_denies(self) -> None:
        """The door's Unmapped action is the one the pipeline refuses."""
        assert UNMAPPED == pipeline.UNMAPPED


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=10,
)


class TestNeverRaises:
    @given(
        method=st.sampled_from(["GET", "POST", "PUT", "X"]),
        path=st.text(),
        query=st.lists(st.tuples(st.sampled_from(["n", "v", "x"]), st.text())),
        body=json_values,
    )
    def test_any_request_classifies(
        self, method: str, path: str, query: list[tuple[str, str]], body: object
    ) -> None:
        """Whatever arrives, classify answers with one of its three results."""
        finance = service(
            route("GET", "/a/{id}", resource='Payments::Invoice::"{id}"'),
            route(
                "POST",
                "/a/{id}",
                context={
                    "v": {"from": "body.v", "type": "long"},
                    "n": {"from": "query.n", "type": "bool", "optional": True},
                    "id": "path.id",
                },
            ),
        )
        result = classify(finance, method, path, query, body)

        assert isinstance(result, Classified | Unmapped | BadRequest)
