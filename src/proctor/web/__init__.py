"""The web console for auditors and approvers: server-rendered pages over the
ledger's forensics, behind per-person sign-in with sessions and CSRF tokens."""

from proctor.web.app import console_app

__all__ = ["console_app"]
