"""From a walked mail to the verifier's inputs: sender authentication, documents, problems."""

from __future__ import annotations

from pathlib import Path

import pytest

from intake.authentication_results import Authentication, MethodResult
from intake.mime import walk_mail
from intake.verify_inputs import sender_authentication, too_large_context, verify_inputs
from verifier.pdf_text import TextResult, TextStatus
from verifier.verify import SenderAuthentication

MAIL = Path(__file__).parents[1] / "fixtures" / "mail"


def auth(*results: tuple[str, str]) -> Authentication:
    return Authentication("mx.town.misato.example.jp", tuple(MethodResult(m, r) for m, r in results), 1, 0)


@pytest.mark.parametrize(
    "results, expected",
    [
        ((), SenderAuthentication.UNKNOWN),
        ((("dmarc", "pass"),), SenderAuthentication.PASSED),
        ((("spf", "pass"), ("dmarc", "fail")), SenderAuthentication.FAILED),
        ((("dkim", "pass"),), SenderAuthentication.PASSED),
        ((("spf", "softfail"), ("dkim", "none")), SenderAuthentication.FAILED),
        ((("spf", "none"),), SenderAuthentication.UNKNOWN),
        ((("dmarc", "temperror"), ("dkim", "pass")), SenderAuthentication.UNKNOWN),
    ],
)
def test_sender_authentication(results, expected) -> None:
    assert sender_authentication(auth(*results)) is expected


def test_only_our_servers_results_count_for_a_forged_mail() -> None:
    walked = walk_mail((MAIL / "authentication_results.eml").read_bytes(), authserv_id="mx.town.misato.example.jp")
    read: list[bytes] = []

    def read_pdf(data: bytes) -> TextResult:
        read.append(data)
        return TextResult(TextStatus.BROKEN, reason="not read in this test")

    documents, context = verify_inputs(walked, "misato", read_pdf)
    # Our server said dmarc=fail; the forger's own "pass" header is ignored.
    assert context.authentication is SenderAuthentication.FAILED
    assert context.desk == "misato" and not context.automatic
    assert len(documents) == len(walked.documents)
    assert len(read) == sum(1 for d in walked.documents if d.is_pdf)


def test_ppap_problems_reach_the_context() -> None:
    walked = walk_mail((MAIL / "ppap_encrypted_zip.eml").read_bytes())
    _documents, context = verify_inputs(walked, "misato", lambda data: TextResult(TextStatus.OK, ("x",), 1))
    assert "doc.encrypted_archive" in [f.code for f in context.problems]


def test_too_large_context_names_the_limit() -> None:
    context = too_large_context("misato", 25 * 1024 * 1024)
    [finding] = context.problems
    assert finding.code == "mail.too_large" and "25MB" in finding.message
