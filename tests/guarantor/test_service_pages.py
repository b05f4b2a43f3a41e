"""The obligee's look-up in a real Chromium: STEP1 → STEP2 → STEP3, in Japanese, with the PDF."""

from __future__ import annotations

import pytest

from guarantor.csv_input import GuaranteeRequest, read_requests
from guarantor.issue import issue_request
from guarantor.service.app import create_app
from verifier.certificate_signature import key_id
from formats import guarantee_no as numbers
from web.server import Listen, ServedApp

pytestmark = pytest.mark.chromium


# The pages do not depend on the database: one browser run, on SQLite, is enough.
ONE_DATABASE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def site(engine, settings, signing_key, now, fixtures_dir, tmp_path):
    request = next(
        r for r in read_requests((fixtures_dir / "guarantees.csv").read_bytes()) if isinstance(r, GuaranteeRequest)
    )
    issued = issue_request(
        engine, request, settings=settings, signing_key=signing_key, out_dir=tmp_path / "out", now=now
    )
    trusted = {key_id(signing_key.public_key()): signing_key.public_key()}
    with ServedApp(create_app(engine, settings, trusted), Listen("127.0.0.1", 0, what="guarantor.service")) as served:
        yield served.url, issued


def step_to_key(page, url: str, number: str) -> None:
    page.goto(url + "/")
    assert "STEP1 保証契約番号の入力" in page.content()
    page.fill("#guarantee_no", number)
    page.click("text=次へ")
    page.wait_for_selector("#access_key")
    assert "STEP2 認証キーの入力" in page.content()


@ONE_DATABASE
def test_step1_to_step3_shows_the_signed_certificate_and_its_pdf(site, browser_page) -> None:
    url, issued = site
    page = browser_page
    step_to_key(page, url, issued.guarantee_no)
    page.fill("#access_key", issued.access_key.lower())  # as people type it
    page.click("text=電子証書を表示する")
    page.wait_for_selector("#signature")
    text = page.inner_text("main")
    assert "電子証書の内容" in text and issued.certificate.contractor_name in text
    assert "12,345,000円" in text and "有効" in page.inner_text("#signature")
    assert "印刷・保存が可能です" in text
    with page.expect_download() as download:
        page.click("text=PDFで保存する")
    path = download.value.path()
    assert path.read_bytes()[:5] == b"%PDF-"


@ONE_DATABASE
def test_wrong_keys_and_unknown_numbers_look_the_same(site, browser_page) -> None:
    url, issued = site
    page = browser_page
    answers = []
    for number in (issued.guarantee_no, numbers.make(26, 999_999)):
        step_to_key(page, url, number)  # an unknown number reaches STEP2 like a real one
        page.fill("#access_key", "0000-0000-0000-0000")
        page.click("text=電子証書を表示する")
        page.wait_for_selector("[role=alert]")
        answers.append(page.inner_text("[role=alert]"))
    assert answers[0] == answers[1] == "該当する電子証書がありません。保証契約番号と認証キーをご確認ください。"

    page.goto(url + "/")
    page.fill("#guarantee_no", "12345")
    page.click("text=次へ")
    assert "保証契約番号の形式が正しくありません" in page.inner_text("[role=alert]")
