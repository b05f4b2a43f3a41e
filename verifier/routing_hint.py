"""What a mail that carries no usable key notice still says about itself, for routing (pure).

A returned mail (the STEP3 certificate-screen printout, a fee receipt, a notice whose key cannot be
read) has no verified guarantee, yet its documents usually show 保証の種類 and 受注者. Staff of the
department that handles that type of guarantee should see it, under the contractor's name, rather
than one department getting every returned mail as 受注者 (不明). Nothing here is trusted: it only
chooses a digest section and a label; the reply and the verdict do not depend on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rules.domain import GuaranteeType
from rules.signatures import DocumentSignatures
from verifier.extract import extract_fields
from verifier.pdf_text import TextStatus
from verifier.verify import InputDocument

# A contractor name longer than this is a misread label, not a name.
_NAME_MAX = 80


@dataclass(frozen=True)
class RoutingHint:
    guarantee_type: GuaranteeType | None = None
    contractor: str | None = None
    guarantee_no: str | None = None


def routing_hint(documents: Sequence[InputDocument], signatures: DocumentSignatures) -> RoutingHint:
    """The first guarantee type, contractor and guarantee number any readable document shows."""
    guarantee_type, contractor, guarantee_no = None, None, None
    for document in documents:
        result = document.text
        if result is None or result.status is not TextStatus.OK or not result.text:
            continue
        fields = extract_fields(result.full_text, signatures, tuple(range(len(result.text))))
        guarantee_type = guarantee_type or fields.guarantee_type
        if contractor is None and fields.contractor and len(fields.contractor) <= _NAME_MAX:
            contractor = fields.contractor
        guarantee_no = guarantee_no or fields.guarantee_no
        if guarantee_type and contractor and guarantee_no:
            break
    return RoutingHint(guarantee_type, contractor, guarantee_no)
