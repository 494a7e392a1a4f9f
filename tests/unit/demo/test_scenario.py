"""The demo's scenario: the finance example reads from the installed package, and
staging it turns quarantine off, adds the alert webhook and points the service at
the API the demo started."""

from __future__ import annotations

import tomllib

import pytest

from proctor.demo.scenario import Scenario, configure
from proctor.demo.steps import money
from proctor.home import CONFIG_TEMPLATE
from proctor.policy import OrgPolicies
from proctor.policy.scope import Scope

FINANCE = "http://127.0.0.1:40001"
ALERTS = "http://127.0.0.1:40002/alerts"


@pytest.fixture
def scenario() -> Scenario:
    return Scenario.finance()


class TestFinanceExample:
    def test_files_are_installed(self, scenario: Scenario) -> None:
        """The policies, scope and route map come with the package."""
        assert set(scenario.policies) == {
            "finance.cedar",
            "schema.cedarschema",
            "entities.json",
        }
        assert "[services.finance]" in scenario.services

    def test_policies_and_scope_compile(self, scenario: Scenario) -> None:
        """The organisation's policies load and the scope fits beside them."""
        org = OrgPolicies.from_parts(scenario.policies)
        scope = Scope.from_toml(scenario.scope)

        assert "org-no-agent-vendors" in org.ids
        assert org.check_scope(scope) == []


class TestConfigure:
    def test_turns_quarantine_off_and_adds_the_service(
        self, scenario: Scenario
    ) -> None:
        """The staged proctor.toml reads back with the demo's settings."""
        text = configure(
            CONFIG_TEMPLATE.format(origin="o"), scenario.services, FINANCE, ALERTS
        )
        raw = tomllib.loads(text)

        assert raw["authority"]["quarantine_on_breach"] is False
        assert raw["authority"]["webhook"] == ALERTS
        assert raw["services"]["finance"]["base_url"] == FINANCE

    def test_refuses_a_config_without_the_quarantine_line(
        self, scenario: Scenario
    ) -> None:
        """A proctor.toml that does not read as expected is refused, not half-edited."""
        with pytest.raises(ValueError, match="quarantine_on_breach = true"):
            configure("[ledger]\n", scenario.services, FINANCE, ALERTS)

    def test_refuses_a_fragment_without_one_base_url(self) -> None:
        """The service fragment must name exactly one base_url to replace."""
        with pytest.raises(ValueError, match="0 base_url lines"):
            configure(
                CONFIG_TEMPLATE.format(origin="o"), "[services.x]\n", FINANCE, ALERTS
            )


class TestMoney:
    @pytest.mark.parametrize(
        ("cents", "shown"),
        [(0, "$0.00"), (5, "$0.05"), (50_000, "$500.00"), (1_000_000, "$10,000.00")],
    )
    def test_cents_read_as_dollars(self, cents: int, shown: str) -> None:
        """Whole cents are written as dollars with thousands separators."""
        assert money(cents) == shown
