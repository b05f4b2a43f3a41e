"""End to end through the CLI on a tmp deployment: init, issue --json, lookup, revoke."""

from __future__ import annotations

import io
import json
import stat

import pytest
from pypdf import PdfReader
from sqlmodel import Session, select

from keydesk.database import make_engine
from store.tables import CertificateRecord, LookupFailure
from formats import access_key as keys
from tests.support.cli import invoke


@pytest.fixture
def run(deployment):
    def run_one(*args: str):
        if args[:1] == ("lookup",) and len(args) == 3:
            # The key is typed (stdin), never put on the command line.
            return invoke(deployment, *args[:2], input=args[2] + "\n")
        return invoke(deployment, *args)

    return run_one


@pytest.fixture
def ready(run, deployment):
    """A deployment with its schema and the guarantor's key."""
    assert run("db", "upgrade").exit_code == 0
    result = run("guarantor", "init")
    assert result.exit_code == 0, result.output
    return deployment


def _pdf_text(path: str) -> str:
    with open(path, "rb") as handle:
        return "".join(page.extract_text() for page in PdfReader(io.BytesIO(handle.read())).pages)


def test_init_creates_a_private_key_and_trusts_its_public_key(run, ready):
    home = ready.parent
    key = home / "var" / "guarantor" / "signing-key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    trusted = list((ready / "trust").glob("*.pem"))
    assert len(trusted) == 1
    again = run("guarantor", "init")
    assert again.exit_code == 0 and "すでにあります" in again.output
    assert list((ready / "trust").glob("*.pem")) == trusted
    rotated = run("guarantor", "init", "--rotate")
    assert rotated.exit_code == 0, rotated.output
    assert len(list((ready / "trust").glob("*.pem"))) == 2  # the old key stays trusted during a rotation


def test_issue_json_then_lookup_and_revoke(run, ready, fixtures_dir, tmp_path):
    out = tmp_path / "pdfs"
    result = run("guarantor", "issue", str(fixtures_dir / "guarantees.csv"), "--out", str(out), "--json")
    assert result.exit_code == 1  # one row (the 予約) was not issued; every other row was
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["line"] for line in lines] == [2, 3, 4, 5, 6, 7]
    refused = [line for line in lines if "error" in line]
    assert len(refused) == 1 and refused[0]["line"] == 6 and "契約保証予約" in refused[0]["error"]
    issued = [line for line in lines if "error" not in line]
    assert len(issued) == 5
    for line in issued:
        assert keys.is_valid(line["access_key"])
        assert set(line["files"]) == {"key_notice", "certificate_view", "fee_receipt", "fee_statement"}
        key_notice = _pdf_text(line["files"]["key_notice"])
        assert line["guarantee_no"] in key_notice and line["access_key"] in key_notice
        view = _pdf_text(line["files"]["certificate_view"])
        assert line["guarantee_no"] in view
        assert line["access_key"] not in view and keys.parse(line["access_key"]) not in view
        assert line["guarantee_no"] in _pdf_text(line["files"]["fee_receipt"])
    assert [line["files"]["fee_statement"] is not None for line in issued] == [False, True, False, False, False]

    first = issued[0]
    found = run("lookup", first["guarantee_no"], first["access_key"].lower())
    assert found.exit_code == 0, found.output
    assert f"保証契約番号：{first['guarantee_no']}" in found.output
    assert "保証金額：12,345,000円" in found.output
    assert "電子署名：有効" in found.output

    wrong_body = ("0" if first["access_key"][0] != "0" else "1") + keys.parse(first["access_key"])[1:15]
    no_match = run("lookup", first["guarantee_no"], wrong_body + keys.check_symbol(wrong_body))
    assert no_match.exit_code == 1 and "該当する電子証書がありません" in no_match.output

    revoked = run("guarantor", "revoke", first["guarantee_no"], "--reason", "契約解除のため")
    assert revoked.exit_code == 0, revoked.output
    after = run("lookup", first["guarantee_no"], first["access_key"])
    assert after.exit_code == 1 and "失効しています(理由: 契約解除のため)" in after.output
    again = run("guarantor", "revoke", first["guarantee_no"], "--reason", "もう一度")
    assert again.refused_with("すでに失効")


def test_a_mistyped_key_is_reported_without_a_lookup(run, ready, fixtures_dir, tmp_path):
    result = run("guarantor", "issue", str(fixtures_dir / "guarantees_bom.csv"), "--out", str(tmp_path), "--json")
    first = json.loads(result.stdout.splitlines()[0])
    key = first["access_key"]
    typo = key[:-1] + ("A" if key[-1] != "A" else "B")
    typed = run("lookup", first["guarantee_no"], typo)
    assert typed.refused_with("チェック文字")
    short = run("lookup", first["guarantee_no"], key[:-2])
    assert short.refused_with("16文字")
    engine = make_engine(f"sqlite:///{ready.parent / 'var' / 'keydesk.db'}")
    with Session(engine) as session:
        assert session.exec(select(LookupFailure)).all() == []
    engine.dispose()


def test_the_lockout_shows_until_when(run, ready, fixtures_dir, tmp_path):
    result = run("guarantor", "issue", str(fixtures_dir / "guarantees_cp932.csv"), "--out", str(tmp_path), "--json")
    first = json.loads(result.stdout.splitlines()[0])
    body = ("0" if first["access_key"][0] != "0" else "1") + keys.parse(first["access_key"])[1:15]
    for _ in range(5):
        assert run("lookup", first["guarantee_no"], body + keys.check_symbol(body)).exit_code == 1
    refused = run("lookup", first["guarantee_no"], first["access_key"])
    assert refused.exit_code == 1 and "まで停止しています" in refused.output


def test_the_human_table_masks_the_key(run, ready, fixtures_dir, tmp_path):
    result = run("guarantor", "issue", str(fixtures_dir / "guarantees.csv"), "--out", str(tmp_path / "o"))
    assert result.exit_code == 1
    output = result.stdout
    assert "-****-****-" in output
    assert "6行目  発行できません: 契約保証予約" in output
    assert f"保存先: {tmp_path / 'o'}" in output
    notices = sorted((tmp_path / "o").glob("*_key_notice.pdf"))
    assert len(notices) >= 2  # every issued guarantee has its notice: the loop below checks them
    for path in notices:
        text = _pdf_text(str(path))
        key = next(line.split("：", 1)[1] for line in text.splitlines() if line.startswith("認証キー："))
        assert key not in output and keys.parse(key) not in output


def test_issue_needs_the_signing_key_and_the_file(run, deployment, fixtures_dir):
    assert run("db", "upgrade").exit_code == 0
    missing_key = run("guarantor", "issue", str(fixtures_dir / "guarantees.csv"))
    assert missing_key.refused_with("keydesk guarantor init")
    assert run("guarantor", "init").exit_code == 0
    missing_file = run("guarantor", "issue", str(fixtures_dir / "nope.csv"))
    assert missing_file.refused_with("見つかりません")


def test_a_malformed_guarantee_number(run, ready):
    result = run("lookup", "26-12", "7K3M-Q9TX-2HVB-R4NC")
    assert result.refused_with("保証契約番号")


def test_a_bad_header_issues_nothing(run, ready, tmp_path):
    csv_file = tmp_path / "bad.csv"
    csv_file.write_text("guarantee_type,contractor_name\n前払金保証,株式会社美郷建設\n", encoding="utf-8")
    result = run("guarantor", "issue", str(csv_file), "--out", str(tmp_path / "o"))
    assert result.refused_with("1行目")
    assert not (tmp_path / "o").exists()


def test_a_tampered_registry_row_shows_an_invalid_signature(run, ready, fixtures_dir, tmp_path):
    result = run("guarantor", "issue", str(fixtures_dir / "guarantees_bom.csv"), "--out", str(tmp_path), "--json")
    first = json.loads(result.stdout.splitlines()[0])
    engine = make_engine(f"sqlite:///{ready.parent / 'var' / 'keydesk.db'}")
    with Session(engine) as session:
        row = session.exec(
            select(CertificateRecord).where(CertificateRecord.guarantee_no == first["guarantee_no"])
        ).one()
        row.signed_json = row.signed_json.replace("8140000", "9140000")
        session.add(row)
        session.commit()
    engine.dispose()
    shown = run("lookup", first["guarantee_no"], first["access_key"])
    assert "保証金額：9,140,000円" in shown.output
    assert "電子署名：無効です" in shown.output
    assert shown.exit_code == 1


def test_the_key_is_never_taken_from_the_command_line(ready, deployment):
    result = invoke(deployment, "lookup", "26-000123-4", "7K3M-Q9TX-2HVB-R4NC")
    assert result.exit_code != 0 and "コマンドラインに書かないでください" in result.output
    from formats.guarantee_no import luhn_digit

    number = f"26-000123-{luhn_digit('26000123')}"
    empty = invoke(deployment, "lookup", number, input="")
    assert empty.exit_code != 0 and "標準入力" in empty.output
