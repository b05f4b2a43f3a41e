"""The one shape of findings stored on a row (``InboundMessage`` and ``Submission.findings_json``,
``StaffDecision.reasons_json``).

A JSON list with one object per finding::

    [{"code": "doc.fee_receipt", "severity": "error", "message": "…", "detail": "…",
      "guarantee_no": "26-000123-4" | null, "document": "領収書.pdf" | null}]

Every writer goes through :func:`dump` (:func:`append` and :func:`without` to change stored findings,
:func:`dump_codes` when only the codes are known) and
every reader through :func:`codes` (or :func:`items` for the whole objects); migration 0002 rewrote rows of the older code-only shape,
0009 the staff decisions' reasons.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from rules.findings import CODES, Finding


def _item(
    code: str, severity: str | None, message: str, detail: str, guarantee_no: str | None, document: str | None
) -> dict[str, Any]:
    return {
        "code": code,
        "severity": severity,
        "message": message,
        "detail": detail,
        "guarantee_no": guarantee_no,
        "document": document,
    }


def dump(findings: Sequence[Finding]) -> str:
    """The stored form of ``findings``."""
    return json.dumps(
        [_item(f.code, f.severity.value, f.message, f.detail, f.guarantee_no, f.document) for f in findings],
        ensure_ascii=False,
    )


def append(findings_json: str | None, findings: Sequence[Finding]) -> str:
    """The stored form of ``findings_json`` with ``findings`` added at the end."""
    items = _items(findings_json)
    items.extend(json.loads(dump(findings)))
    return json.dumps(items, ensure_ascii=False)


def without(findings_json: str | None, unwanted: Collection[str]) -> str:
    """The stored form of ``findings_json`` without the findings whose code is in ``unwanted``."""
    return json.dumps(
        [item for item in _items(findings_json) if not (isinstance(item, dict) and item.get("code") in unwanted)],
        ensure_ascii=False,
    )


def dump_codes(codes: Iterable[str]) -> str:
    """The stored form when only codes are known (severity and message come from the code table)."""
    items = []
    for code in codes:
        spec = CODES.get(code)
        if spec is None:  # a code this version does not know: kept, without what it cannot know
            items.append(_item(code, None, "", "", None, None))
        else:
            items.append(_item(code, spec.severity.value, Finding(code).message, "", None, None))
    return json.dumps(items, ensure_ascii=False)


def codes(findings_json: str | None) -> list[str]:
    """The codes of stored findings, in order; a value that is not the stored shape gives none."""
    return [
        item["code"] for item in _items(findings_json) if isinstance(item, dict) and isinstance(item.get("code"), str)
    ]


def items(findings_json: str | None) -> list[dict[str, Any]]:
    """The stored findings as objects of the one shape, in order (anything else is skipped)."""
    return [item for item in _items(findings_json) if isinstance(item, dict) and isinstance(item.get("code"), str)]


def _items(findings_json: str | None) -> list[Any]:
    """The stored list (empty when the value is not a JSON list)."""
    try:
        items = json.loads(findings_json or "[]")
    except ValueError:
        return []
    return items if isinstance(items, list) else []
