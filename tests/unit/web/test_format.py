"""How values read on a console page."""

from __future__ import annotations

from datetime import UTC, datetime

from proctor.web.format import number, request_text, short_action, when


class TestFormat:
    def test_action_short_name(self) -> None:
        """An action uid reads as its id; anything else as it is."""
        assert short_action('Payments::Action::"CreatePayment"') == "CreatePayment"
        assert short_action("plain") == "plain"
        assert short_action(None) == ""

    def test_times_read_in_utc(self) -> None:
        """Entry times and datetimes read as date, time and Z; junk as it is."""
        assert when("2026-12-03T15:33:16.123456Z") == "2026-12-03 15:33:16Z"
        assert when(datetime(2026, 12, 3, 15, 0, tzinfo=UTC)) == "2026-12-03 15:00:00Z"
        assert when("soon") == "soon"

    def test_numbers_are_grouped(self) -> None:
        """Integers get thousands separators; booleans are not numbers."""
        assert number(12_000) == "12,000"
        assert number(True) == "True"
        assert number(None) == ""

    def test_request_reads_like_http(self) -> None:
        """A recorded request shows its line, sorted headers, then the body."""
        text = request_text(
            {
                "method": "POST",
                "path": "/payments",
                "query": "dry=1",
                "headers": {"x-b": "2", "content-type": "application/json"},
                "body": {"amount": 5},
            }
        )

        assert text.splitlines()[:4] == [
            "POST /payments?dry=1",
            "content-type: application/json",
            "x-b: 2",
            "",
        ]
        assert '"amount": 5' in text
        assert request_text("not a request") == ""
