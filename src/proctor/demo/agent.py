"""The scripted finance agent: a plain HTTP client that holds only Proctor's base URL
and its task token. It says why before it acts, through its task's reasoning
endpoint, as an agent built on a language model would; its choices are fixed, so
every run tells the same story."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

import httpx

from proctor.demo.scenario import LIMIT, SERVICE
from proctor.demo.steps import money

TIMEOUT = 30.0
_PAYEE = re.compile(r"add (?P<name>[^()]+?) \((?P<id>[a-z0-9-]+)\) as a payee")


@dataclass(frozen=True)
class Attempt:
    """One call the agent made: why (the reasoning entry it recorded first, if it
    recorded one), and the answer."""

    thought: str
    reasoning: int | None
    method: str
    path: str
    body: dict[str, Any] | None
    response: httpx.Response


class FinanceAgent:
    """Pays a vendor's open invoices of one month through Proctor's HTTP door."""

    def __init__(
        self,
        base_url: str,
        token: str,
        task: str,
        *,
        vendor: str = "acme",
        month: str = "2026-03",
    ) -> None:
        self.task = task
        self.vendor = vendor
        self.month = month
        self.invoices: list[dict[str, Any]] = []
        self._http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=TIMEOUT,
        )
        # One W3C trace for the whole run, one span per call.
        self._trace = secrets.token_hex(16)

    def __enter__(self) -> FinanceAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def read_invoices(self) -> Attempt:
        """List the vendor's invoices of the month and keep the open ones."""
        thought = (
            f"The user asked me to pay ACME's March invoices. First I list the "
            f"invoices of vendor {self.vendor} for {self.month}."
        )
        query = {"vendor": self.vendor, "month": self.month}
        attempt = self._act(thought, "GET", "/invoices", query=query)
        if attempt.response.status_code == httpx.codes.OK:
            self.invoices = [
                invoice
                for invoice in attempt.response.json()
                if invoice.get("status") == "open"
            ]
        return attempt

    def add_payee(self) -> Attempt:
        """Do what an invoice's note asks: add the new payee it names.

        Raises LookupError when no open invoice asks for one.
        """
        for invoice in self.invoices:
            found = _PAYEE.search(str(invoice.get("note", "")))
            if found is not None:
                break
        else:
            raise LookupError("no open invoice asks for a new payee")
        thought = (
            f"Invoice {invoice['id']} says ACME's bank details changed and asks to "
            f"pay {found['name']} from now on. That payee is not a vendor yet, so I "
            "add it before paying."
        )
        body = {"id": found["id"], "name": found["name"]}

        return self._act(thought, "POST", "/vendors", body=body)

    def pay(self) -> Attempt:
        """Pay the first open invoice to the vendor already on file.

        Raises LookupError when there is no open invoice.
        """
        if not self.invoices:
            raise LookupError("there is no open invoice to pay")
        invoice = self.invoices[0]
        amount = int(invoice["amount"])
        thought = (
            f"I may not add payees, so I pay {self.vendor}, the vendor on file: "
            f"{money(amount)} for invoice {invoice['id']}. That is more than the "
            f"{money(LIMIT)} I may pay alone, so a controller has to approve it."
        )
        body = {"amount": amount, "vendor": self.vendor, "invoice": invoice["id"]}

        return self._act(thought, "POST", "/payments", body=body)

    def retry(self, attempt: Attempt, approval: str) -> Attempt:
        """Send a held call again, naming the approval that releases it.

        The call is the same, so its reasoning is the held call's: the retry only
        says in ``Proctor-Reasoning`` that it was approved.
        """
        thought = f"The controller approved {approval}; same payment, sent again."
        return self._act(
            thought,
            attempt.method,
            attempt.path,
            body=attempt.body,
            approval=approval,
            record=False,
        )

    def _act(
        self,
        thought: str,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        approval: str | None = None,
        record: bool = True,
    ) -> Attempt:
        span = secrets.token_hex(8)
        traceparent = f"00-{self._trace}-{span}-01"
        reasoning = self._think(thought, traceparent) if record else None
        headers = {"traceparent": traceparent, "Proctor-Reasoning": thought[:200]}
        if approval is not None:
            headers["Proctor-Approval"] = approval
        response = self._http.request(
            method,
            f"/http/{SERVICE}{path}",
            params=query,
            json=body,
            headers=headers,
        )

        return Attempt(thought, reasoning, method, path, body, response)

    def _think(self, text: str, traceparent: str) -> int:
        """Record one reasoning step; raises httpx.HTTPStatusError when refused."""
        response = self._http.post(
            f"/v1/tasks/{self.task}/reasoning",
            json={"text": text, "trace": traceparent},
        )
        response.raise_for_status()

        return int(response.json()["entry"])
