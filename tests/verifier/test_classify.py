"""Document kinds (verifier/classify.py) and the [documents] config that drives them (rules/signatures.py)."""

from __future__ import annotations

import copy

import pytest
from pydantic import ValidationError

from rules.signatures import CONFIGURED_KINDS, DocumentKind, DocumentSignatures
from verifier.classify import Classification, classify
from verifier.pdf_text import TextResult, TextStatus, extract_in_process

from .conftest import PRINTED_AT, fixture_pdf

K = DocumentKind

# Every kind, from at least three producers: reportlab (this project's fixtures and its guarantor
# renderer), a real headless Chromium print, and re-saves by Ghostscript, qpdf and cairo.
FIXTURES = [
    ("key_notice_reportlab.pdf", K.KEY_NOTICE),
    ("key_notice_two_reportlab.pdf", K.KEY_NOTICE),
    ("key_notice_with_certificate_words_reportlab.pdf", K.KEY_NOTICE),
    ("key_notice_guarantor.pdf", K.KEY_NOTICE),
    ("key_notice_printed_chromium.pdf", K.KEY_NOTICE),
    ("key_notice_gs.pdf", K.KEY_NOTICE),  # digits garbled by the re-save: still the key notice
    ("key_notice_two_qpdf.pdf", K.KEY_NOTICE),
    ("key_notice_guarantor_qpdf.pdf", K.KEY_NOTICE),
    ("key_notice_cairo.pdf", K.KEY_NOTICE),
    ("certificate_view_chromium.pdf", K.CERTIFICATE_VIEW),
    ("certificate_view_reportlab.pdf", K.CERTIFICATE_VIEW),
    ("certificate_view_guarantor.pdf", K.CERTIFICATE_VIEW),
    ("certificate_view_gs.pdf", K.CERTIFICATE_VIEW),
    ("certificate_view_guarantor_gs.pdf", K.CERTIFICATE_VIEW),
    ("certificate_view_cairo.pdf", K.CERTIFICATE_VIEW),
    ("fee_receipt_reportlab.pdf", K.FEE_RECEIPT),
    ("fee_receipt_guarantor.pdf", K.FEE_RECEIPT),
    ("fee_receipt_gs.pdf", K.FEE_RECEIPT),
    ("fee_statement_reportlab.pdf", K.FEE_STATEMENT),
    ("fee_statement_guarantor.pdf", K.FEE_STATEMENT),
    ("advance_claim_reportlab.pdf", K.ADVANCE_CLAIM),
    ("insurer_bond_reportlab.pdf", K.INSURER_BOND),
    ("other_reportlab.pdf", K.OTHER),
    ("scan_reportlab.pdf", K.NO_TEXT),
    ("encrypted_empty_password.pdf", K.ENCRYPTED),
    ("encrypted_password.pdf", K.ENCRYPTED),
    ("bomb.pdf", K.BROKEN),
    ("many_pages.pdf", K.BROKEN),
]


def _classify(name: str, signatures: DocumentSignatures) -> Classification:
    return classify(extract_in_process(fixture_pdf(name)), signatures)


@pytest.mark.parametrize(("name", "kind"), FIXTURES)
def test_fixture_kinds(name, kind, signatures):
    result = _classify(name, signatures)
    assert result.kind is kind, (result.kind, result.scores, result.evidence)
    assert result.evidence  # staff can see why


def test_every_kind_has_a_fixture_from_several_producers():
    kinds = {kind for _, kind in FIXTURES}
    assert kinds == set(DocumentKind)
    producers = {extract_in_process(fixture_pdf(n)).producer.split()[0] for n, k in FIXTURES if k is K.KEY_NOTICE}
    assert {"ReportLab", "keydesk", "Skia/PDF", "GPL", "cairo"} <= producers


def test_certificate_view_wins_clearly_even_without_its_marker(signatures):
    # A Ghostscript re-save garbles 「この画面は、印刷・保存が可能です」; title, labels and the
    # browser's header and footer still carry it.
    result = _classify("certificate_view_gs.pdf", signatures)
    assert result.kind is K.CERTIFICATE_VIEW
    assert not any("印刷・保存" in item for item in result.evidence)
    assert any(item.startswith("pattern: file://") for item in result.evidence)
    assert result.scores[1][1] <= result.score / 2


def test_key_notice_with_certificate_words_rules_out_the_certificate_view(signatures):
    result = _classify("key_notice_with_certificate_words_reportlab.pdf", signatures)
    scores = dict(result.scores)
    assert result.kind is K.KEY_NOTICE
    assert scores[K.CERTIFICATE_VIEW] == 0
    assert "a 認証キー is printed" in result.evidence


def test_the_words_電子証書_inside_the_key_notice_title_are_not_a_certificate_view_title(signatures):
    # No readable key (as after a garbling re-save), so nothing rules the certificate view out:
    # only its own evidence may count, and 「電子証書」 inside the key notice's title is not that.
    page = "電子証書閲覧用「認証キー」等のお知らせ\n保証契約番号 QULOOOPQRLT\n"
    result = classify(TextResult(TextStatus.OK, (page * 3,), 1), signatures)
    assert dict(result.scores)[K.CERTIFICATE_VIEW] == signatures.weights.label  # 保証契約番号 only
    assert _classify("key_notice_gs.pdf", signatures).kind is K.KEY_NOTICE


def test_live_guarantor_renderer(signatures, sample_certificate):
    pdf = pytest.importorskip("guarantor.pdf")
    cases = {
        K.KEY_NOTICE: pdf.render_key_notice(sample_certificate, "RRT3-1E5R-NMJM-AS3R", PRINTED_AT),
        K.CERTIFICATE_VIEW: pdf.render_certificate_view(sample_certificate, PRINTED_AT, "https://portal.example/c/1"),
        K.FEE_RECEIPT: pdf.render_fee_receipt(sample_certificate, PRINTED_AT),
        K.FEE_STATEMENT: pdf.render_fee_statement(sample_certificate, PRINTED_AT),
    }
    for kind, data in cases.items():
        assert classify(extract_in_process(data), signatures).kind is kind


def test_key_notice_bundled_after_a_cover_page_is_a_key_notice(signatures):
    notice = extract_in_process(fixture_pdf("key_notice_reportlab.pdf")).text[0]
    receipt = extract_in_process(fixture_pdf("fee_receipt_reportlab.pdf")).text[0]
    bundled = TextResult(TextStatus.OK, (receipt, receipt, notice), 3)
    assert classify(bundled, signatures).kind is K.KEY_NOTICE


def test_a_cover_letter_quoting_the_title_is_not_a_key_notice(signatures):
    letter = (
        "美郷町 契約係 御中\n株式会社美郷建設の美郷です。いつもお世話になっております。\n"
        "先日ご依頼のありました書類につきまして、電子証書閲覧用「認証キー」等のお知らせは別途お送りします。\n"
        "工事の工程表を添付いたしますので、ご確認のほどよろしくお願いいたします。\n"
    )
    result = classify(TextResult(TextStatus.OK, (letter,), 1), signatures)
    assert result.kind is K.OTHER
    assert "title (not at the top): 電子証書閲覧用「認証キー」等のお知らせ" in result.evidence


@pytest.mark.parametrize("order", ["letter first", "receipt first"])
def test_a_fee_receipt_with_a_cover_letter_is_a_fee_receipt_not_a_key_notice(signatures, order):
    """The letter names the key notice, but no page of it is one: the mail must go back for the notice."""
    letter = (
        "美郷町 契約係 御中\n株式会社美郷建設の美郷です。いつもお世話になっております。\n"
        "添付の書類をご確認ください。電子証書閲覧用「認証キー」等のお知らせは後ほどお送りします。\n"
    )
    receipt = extract_in_process(fixture_pdf("fee_receipt_reportlab.pdf")).text[0]
    pages = (letter, receipt) if order == "letter first" else (receipt, letter)
    result = classify(TextResult(TextStatus.OK, pages, 2), signatures)
    assert result.kind is K.FEE_RECEIPT, result.evidence


def test_near_empty_pages_are_no_text(signatures):
    result = classify(TextResult(TextStatus.OK, ("FAX 0120\n", "  \n", ""), 3), signatures)
    assert result.kind is K.NO_TEXT


def test_broken_and_encrypted_results_keep_their_reason(signatures):
    broken = classify(TextResult(TextStatus.BROKEN, reason="exceeded 10 s CPU"), signatures)
    assert (broken.kind, broken.evidence) == (K.BROKEN, ("exceeded 10 s CPU",))
    assert classify(TextResult(TextStatus.ENCRYPTED), signatures).kind is K.ENCRYPTED


def test_truncated_pdfs_classify_without_raising(signatures):
    data = fixture_pdf("certificate_view_chromium.pdf")
    kinds = set()
    for cut in range(0, len(data), len(data) // 60):
        kinds.add(classify(extract_in_process(data[:cut]), signatures).kind)
    assert kinds <= set(DocumentKind)
    assert K.BROKEN in kinds


# ------------------------------------------------------------------------- the [documents] config


def test_shipped_config_names_every_configured_kind(documents_section, signatures):
    assert set(signatures.kinds) == set(CONFIGURED_KINDS)
    # The TOML itself carries every value; nothing comes from a code default.
    for key in ("min_chars_per_page", "title_head_chars", "min_score", "weights", "patterns", "key_notice_labels"):
        assert key in documents_section
    for kind in CONFIGURED_KINDS:
        assert set(documents_section["kinds"][kind.value]) == set(type(signatures.kinds[kind]).model_fields)


def test_config_rejects_a_bad_regex_with_a_clear_message(documents_section):
    broken = copy.deepcopy(documents_section)
    broken["patterns"]["access_key"] = "[0-9A-Z{4}"
    with pytest.raises(ValidationError, match="is not a valid regular expression"):
        DocumentSignatures.model_validate(broken)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["kinds"].pop("fee_receipt"), "add a signature for fee_receipt"),
        (lambda d: d["kinds"].__setitem__("broken", copy.deepcopy(d["kinds"]["fee_receipt"])), "decided by the reader"),
        (lambda d: d.__setitem__("colour", "blue"), "Extra inputs are not permitted"),
        (lambda d: d.pop("min_score"), "Field required"),
        (lambda d: d["kinds"]["key_notice"]["titles"].append("  "), "phrases must not be empty"),
    ],
)
def test_config_mistakes_are_refused(documents_section, edit, message):
    broken = copy.deepcopy(documents_section)
    edit(broken)
    with pytest.raises(ValidationError, match=message):
        DocumentSignatures.model_validate(broken)


def test_an_admin_can_teach_a_new_title_without_code(documents_section):
    text = "電子証書閲覧用認証キー通知書\n保証契約番号 26-000123-5\n認証キー 1QFZ-2E8V-RKDT-WST0\n"
    result = TextResult(TextStatus.OK, (text,), 1)
    before = classify(result, DocumentSignatures.model_validate(documents_section))
    edited = copy.deepcopy(documents_section)
    edited["kinds"]["key_notice"]["titles"].append("電子証書閲覧用認証キー通知書")
    after = classify(result, DocumentSignatures.model_validate(edited))
    assert after.kind is K.KEY_NOTICE
    assert after.score > before.score


@pytest.mark.chromium
@pytest.mark.parametrize(
    ("html", "kind"), [("certificate_view.html", K.CERTIFICATE_VIEW), ("key_notice_printed.html", K.KEY_NOTICE)]
)
def test_a_fresh_chromium_print_classifies_like_the_committed_one(html, kind, signatures, tmp_path):
    import shutil
    import subprocess

    from .conftest import PDF_DIR

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (the committed PDFs cover this without it)")
    out = tmp_path / "out.pdf"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--print-to-pdf={out}",
            (PDF_DIR / html).as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert classify(extract_in_process(out.read_bytes()), signatures).kind is kind
