"""The auditor's tools: an entry index rebuilt from the ledger, the story of a task
and of one call told from entries alone, searches, and streaming exports.

A terminal command or a web page opens a :class:`Forensics` over a store and asks it
questions; every answer is a frozen value (``dataclasses.asdict`` or orjson give its
JSON) whose facts each name the entry they come from.
"""

from proctor.forensics.export import (
    Selection,
    export_jsonl,
    export_ocsf,
    ocsf_record,
    verify_jsonl,
)
from proctor.forensics.index import Index
from proctor.forensics.proof import Proof
from proctor.forensics.query import Comparison, Query, build_query, parse_where
from proctor.forensics.service import Activity, Finding, Findings, Forensics
from proctor.forensics.story import (
    ApprovalStory,
    DecisionStory,
    Event,
    Signoff,
    TaskStory,
)

__all__ = [
    "Activity",
    "ApprovalStory",
    "Comparison",
    "DecisionStory",
    "Event",
    "Finding",
    "Findings",
    "Forensics",
    "Index",
    "Proof",
    "Query",
    "Selection",
    "Signoff",
    "TaskStory",
    "build_query",
    "export_jsonl",
    "export_ocsf",
    "ocsf_record",
    "parse_where",
    "verify_jsonl",
]
