"""The finance example API: its key guards every route, invoices filter by vendor and
month, vendors can be added, and a payment must settle one open invoice exactly."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from proctor.examples.finance.api import API_KEY_HEADER, Books, create_app

KEY = "fin_test_key"


@pytest.fixture
def books() -> Books:
    """The seeded books, shared with the app so a test can look inside."""
    return Books.seeded()


@pytest.fixture
def client(books: Books) -> TestClient:
    """A client that sends the right key."""
    return TestClient(create_app(KEY, books), headers={API_KEY_HEADER: KEY})


class TestKey:
    @pytest.mark.parametrize("path", ["/invoices", "/vendors", "/payments"])
    def test_wrong_key_is_refused(self, books: Books, path: str) -> None:
        """Without the exact key every route answers 401."""
        stranger = TestClient(create_app(KEY, books), headers={API_KEY_HEADER: "x"})

        assert stranger.get(path).status_code == 401

    def test_missing_key_is_refused(self, books: Books) -> None:
        """A request without the header is refused too."""
        assert TestClient(create_app(KEY, books)).get("/vendors").status_code == 401

    def test_empty_key_cannot_be_configured(self) -> None:
        """An empty key would let anyone in, so it is refused."""
        with pytest.raises(ValueError, match="non-empty api key"):
            create_app("")


class TestInvoices:
    def test_filter_by_vendor_and_month(self, client: TestClient) -> None:
        """ACME's March invoices are the one of $10,000, open."""
        found = client.get("/invoices", params={"vendor": "acme", "month": "2026-03"})

        assert [(i["id"], i["amount"], i["status"]) for i in found.json()] == [
            ("INV-2026-0342", 1_000_000, "open")
        ]

    def test_one_invoice(self, client: TestClient) -> None:
        """An invoice reads by id; an unknown id is 404."""
        assert client.get("/invoices/INV-2026-0351").json()["vendor"] == "globex"
        assert client.get("/invoices/INV-0").status_code == 404


class TestVendors:
    def test_add_vendor(self, client: TestClient, books: Books) -> None:
        """A new vendor is created once; its id must be a short name."""
        created = client.post("/vendors", json={"id": "initech", "name": "Initech"})
        again = client.post("/vendors", json={"id": "initech", "name": "Initech"})
        bad = client.post("/vendors", json={"id": "Not Ok", "name": "x"})

        assert created.status_code == 201
        assert again.status_code == 409
        assert bad.status_code == 400
        assert "initech" in books.vendors


class TestPayments:
    def test_payment_settles_the_invoice(self, client: TestClient) -> None:
        """Paying an open invoice exactly records the payment and closes it."""
        body = {"amount": 1_000_000, "vendor": "acme", "invoice": "INV-2026-0342"}
        paid = client.post("/payments", json=body)

        assert paid.status_code == 201
        assert paid.json()["id"] == "PAY-0001"
        assert client.get("/payments").json()[0]["amount"] == 1_000_000
        assert client.get("/invoices/INV-2026-0342").json()["status"] == "paid"
        assert client.post("/payments", json=body).status_code == 422

    @pytest.mark.parametrize(
        ("body", "status"),
        [
            ({"amount": 1.5, "vendor": "acme", "invoice": "INV-2026-0342"}, 400),
            ({"amount": 0, "vendor": "acme", "invoice": "INV-2026-0342"}, 400),
            ({"amount": 1_000_000, "vendor": "acme-holdings", "invoice": "x"}, 422),
            ({"amount": 48_000, "vendor": "acme", "invoice": "INV-2026-0351"}, 422),
            ({"amount": 999, "vendor": "acme", "invoice": "INV-2026-0342"}, 422),
            ({"amount": 640_000, "vendor": "acme", "invoice": "INV-2026-0217"}, 422),
        ],
    )
    def test_bad_payments_are_refused(
        self, client: TestClient, body: dict[str, object], status: int
    ) -> None:
        """Odd amounts, unknown payees, others' or paid invoices pay nothing."""
        assert client.post("/payments", json=body).status_code == status
        assert client.get("/payments").json() == []
