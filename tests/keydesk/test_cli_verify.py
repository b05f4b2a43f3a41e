"""End to end: the guarantor issues, the desk imports its register, `keydesk verify` decides.

This is issue 4's "Done when": after `keydesk guarantor issue` and `keydesk contracts import` on
matching CSVs, `keydesk verify --json` says accepted for a key notice, returned with
doc.certificate_view for its certificate view, and broken for the key notice cut in half.
"""

from __future__ import annotations

import json
from pathlib import Path

from sqlmodel import Session, select

from keydesk.runtime import Runtime
from store.tables import Contract as ContractRow, InboundMessage, Submission
from tests.support.cli import invoke
from tests.support.deployment import CONTRACTS
from tests.support.desk_mail import mail, take


def verify_json(config: Path, *paths: Path) -> list[dict]:
    result = invoke(config, "verify", "--json", *map(str, paths))
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_done_when_accepted_certificate_view_returned_half_notice_broken(issued: dict) -> None:
    advance = issued["rows"][0]
    notice = Path(advance["files"]["key_notice"])
    view = Path(advance["files"]["certificate_view"])
    half = issued["tmp"] / "half.pdf"
    data = notice.read_bytes()
    half.write_bytes(data[: len(data) // 2])

    accepted, returned, broken = verify_json(issued["config"], notice, view, half)

    assert accepted["path"] == str(notice)
    assert accepted["verdict"] == "accepted", accepted
    assert accepted["findings"] == []
    key = advance["access_key"]
    assert accepted["documents"] == [
        {
            "kind": "key_notice",
            "guarantee_no": advance["guarantee_no"],
            "access_key_masked": f"****-****-****-{key[-4:]}",
        }
    ]

    assert returned["verdict"] == "returned"
    assert [f["code"] for f in returned["findings"]] == ["doc.certificate_view"]
    assert returned["findings"][0]["severity"] == "error"
    assert "STEP4" in returned["findings"][0]["message"]
    assert returned["documents"] == [{"kind": "certificate_view", "guarantee_no": None, "access_key_masked": None}]

    assert broken["verdict"] == "returned"
    assert broken["documents"][0]["kind"] == "broken"
    assert [f["code"] for f in broken["findings"]] == ["doc.broken"]


def test_every_issued_guarantee_matches_the_register(issued: dict) -> None:
    paths = [Path(row["files"]["key_notice"]) for row in issued["rows"]]
    results = verify_json(issued["config"], *paths)
    # 前払金 exactly 40%, 中間前払金 exactly 20% with the register's advance: 60% in total.
    assert [r["verdict"] for r in results] == ["accepted"] * 3, results


def test_a_mail_with_the_notice_and_its_fee_receipt(issued: dict) -> None:
    from email.message import EmailMessage

    row = issued["rows"][2]  # 契約保証 with bulk fee payment: receipt and statement exist
    message = EmailMessage()
    message["From"] = "keiri@yamada-doboku.example"
    message["To"] = "keiyaku@town.misato.example"
    message["Subject"] = "【電子保証】美郷川護岸補修工事"
    message.set_content("認証キー等のお知らせを送付します。")
    for kind in ("key_notice", "fee_receipt"):
        message.add_attachment(
            Path(row["files"][kind]).read_bytes(), maintype="application", subtype="pdf", filename=f"{kind}.pdf"
        )
    mail = issued["tmp"] / "mail.eml"
    mail.write_bytes(message.as_bytes())
    [result] = verify_json(issued["config"], mail)
    assert result["verdict"] == "accepted", result
    assert [f["code"] for f in result["findings"]] == ["doc.fee_receipt"]
    assert [d["kind"] for d in result["documents"]] == ["key_notice", "fee_receipt"]


def test_verify_records_nothing_and_reports_unreadable_paths(issued: dict) -> None:
    config = issued["config"]
    runtime = Runtime(config)
    with Session(runtime.engine) as session:
        before = len(session.exec(select(Submission)).all()), len(session.exec(select(InboundMessage)).all())
    result = invoke(config, "verify", "--json", str(issued["tmp"] / "missing.pdf"), str(issued["tmp"] / "x.txt"))
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.exit_code == 1
    assert [("error" in line) for line in lines] == [True, True]
    assert ".pdf または .eml" in lines[1]["error"]
    with Session(runtime.engine) as session:
        after = len(session.exec(select(Submission)).all()), len(session.exec(select(InboundMessage)).all())
    assert before == after == (0, 0)


def test_human_readable_output_is_japanese(issued: dict) -> None:
    view = Path(issued["rows"][0]["files"]["certificate_view"])
    result = invoke(issued["config"], "verify", str(view))
    assert result.exit_code == 0
    assert "返送" in result.output and "doc.certificate_view" in result.output and "STEP4" in result.output


def test_contracts_import_reports_bad_lines_and_updates_on_reimport(issued: dict) -> None:
    config, tmp = issued["config"], issued["tmp"]
    changed = tmp / "changed.csv"
    changed.write_text(
        CONTRACTS.splitlines()[0]
        + "\n"
        + 'R8-土木-002,misato,美郷川護岸補修工事,工事,有限会社山田土木,"16,000,000",2026/4/10,2026/12/25,,,keiyaku\n'
        + "R8-土木-009,tonari,隣町の工事,工事,隣村組,1000000,2026/4/10,2026/12/25,,,somu\n",
        encoding="utf-8-sig",
    )
    result = invoke(config, "contracts", "import", str(changed))
    assert result.exit_code == 1
    assert "更新 1 件" in result.output and "エラー 1 行" in result.output
    assert "changed.csv:3行目" in result.output and "tonari" in result.output
    with Session(Runtime(config).engine) as session:
        row = session.exec(select(ContractRow).where(ContractRow.contract_no == "R8-土木-002")).one()
        assert row.contract_amount == 16_000_000


def test_contracts_import_of_an_unreadable_file_fails_with_one_line(issued: dict) -> None:
    bad = issued["tmp"] / "bad.csv"
    bad.write_text("a,b\n1,2\n", encoding="utf-8")
    result = invoke(issued["config"], "contracts", "import", str(bad))
    assert result.exit_code != 0
    assert result.refused_with("足りない列")


def test_rules_check_and_replay(issued: dict) -> None:
    config = issued["config"]
    result = invoke(config, "rules", "check")
    assert result.exit_code == 0 and "rules.toml は正常です" in result.output

    # Two guarantees accepted under the current rules, taken in by the intake's pipeline.
    runtime = Runtime(config)
    advance, contract = issued["rows"][0], issued["rows"][2]
    for uid, row in enumerate((advance, contract), start=1):
        notice = Path(row["files"]["key_notice"]).read_bytes()
        inbound, outcome = take(runtime, mail([("お知らせ.pdf", notice)], subject=f"提出 {uid}"), uid=uid)
        assert outcome.verdict.value == "accepted", outcome.findings
        assert inbound.receipt_no == f"K-2026-00000{uid}"

    result = invoke(config, "rules", "check", "--replay", "10")
    assert result.exit_code == 0, result.output
    assert "判定が変わるもの 0 件" in result.output

    # Stricter rules: advances at most 30% → the 前払金 (40%) would now need review.
    rules_file = config / "rules.toml"
    text = rules_file.read_text(encoding="utf-8")
    rules_file.write_text(text.replace("advance_max_ratio = 0.40", "advance_max_ratio = 0.30", 1), encoding="utf-8")
    result = invoke(config, "rules", "check", "--replay", "10")
    assert result.exit_code == 0, result.output
    assert "判定が変わるもの 1 件" in result.output
    assert f"K-2026-000001 {advance['guarantee_no']}: accepted → needs_review" in result.output
    assert "追加: amount.advance_high" in result.output


def test_contracts_import_dry_run_shows_changes_and_writes_nothing(issued: dict) -> None:
    config, tmp = issued["config"], issued["tmp"]
    town = tmp / "town.csv"
    town.write_text(
        "契約番号,工事名,業務区分,受注者,請負代金額,契約日,工期末,前払金額,中間前払金額,担当課,低入札\n"
        'R8-土木-002,美郷川護岸補修工事,建設工事,山田土木 有限会社,"16,000,000",2026/4/10,2026/12/25,,,契約係,○\n',
        encoding="cp932",
    )
    result = invoke(config, "contracts", "import", "--dry-run", str(town))
    assert result.exit_code == 0, result.output
    assert "まだ書き込んでいません" in result.output and "更新 1 件" in result.output
    assert "15,400,000円 → 16,000,000円" in result.output and "low_bid - → ○" in result.output
    with Session(Runtime(config).engine) as session:
        row = session.exec(select(ContractRow).where(ContractRow.contract_no == "R8-土木-002")).one()
        assert row.contract_amount == 15_400_000 and row.low_bid is False
    result = invoke(config, "contracts", "import", str(town))
    assert result.exit_code == 0 and "更新 1 件" in result.output
    with Session(Runtime(config).engine) as session:
        row = session.exec(select(ContractRow).where(ContractRow.contract_no == "R8-土木-002")).one()
        assert row.contract_amount == 16_000_000 and row.low_bid is True


def test_rules_check_replay_names_the_effect_of_a_category_rule(issued: dict) -> None:
    config = issued["config"]
    runtime = Runtime(config)
    contract = issued["rows"][2]  # 契約保証 of 10% on a 工事 contract
    _inbound, outcome = take(
        runtime, mail([("お知らせ.pdf", Path(contract["files"]["key_notice"]).read_bytes())]), uid=1
    )
    assert outcome.verdict.value == "accepted", outcome.findings
    rules_file = config / "rules.toml"
    rules_file.write_text(
        rules_file.read_text(encoding="utf-8").replace(
            '[desks.misato.categories."建設コンサルタント業務"]',
            '[desks.misato.categories."工事"]\ncontract_guarantee_min_ratio = 0.20\n\n'
            '[desks.misato.categories."建設コンサルタント業務"]',
            1,
        ),
        encoding="utf-8",
    )
    result = invoke(config, "rules", "check", "--replay", "5")
    assert result.exit_code == 0, result.output
    assert "判定が変わるもの 1 件" in result.output
    assert (
        f"K-2026-000001 {contract['guarantee_no']}: accepted → returned(受付済 → 返送)"
        "  追加: amount.contract_guarantee_low(契約保証の保証金額が不足)"
    ) in result.output
