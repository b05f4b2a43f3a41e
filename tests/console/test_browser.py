"""The main journeys in a real Chromium: a clerk signs in, finds the needs_review item, reveals the
key, accepts it, and the contractor's mailbox (embedded pymap behind the embedded SMTP server)
receives the reply; the audit names the clerk. A clerk of another department cannot see it; CSRF
and script injection fail; new items appear in the inbox without a reload."""

from __future__ import annotations

import contextlib
import json
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from imapclient import IMAPClient
from sqlmodel import Session, select

from console.web.app import create_app
from keydesk.deployment import create_missing_secrets
from keydesk.daemon import start_embedded
from keydesk.companions import deliver_now
from keydesk.demo.run import set_toml_value
from tests.support.servers import free_port
from keydesk.settings import load_settings, read_secret
from store.tables import AuditEvent
from tests.support.cli import wait_until
from tests.support.console import PASSWORD, build_desk, files, take_stored
from tests.support.desk_mail import mail
from web.server import Listen, ServedApp

pytestmark = [pytest.mark.chromium, pytest.mark.slow]
CONTRACTOR = "info@misato-kensetsu.example"


def with_contractor_mailbox(config: Path) -> None:
    """The deployment's embedded servers on free ports, with a mailbox for the contractor."""
    path = config / "keydesk.toml"
    text = path.read_text(encoding="utf-8")
    imap_port, smtp_port = free_port(), free_port()
    text = set_toml_value(text, "smtp", "port", str(smtp_port))
    text = set_toml_value(text, "embedded", "imap_port", str(imap_port))
    text = set_toml_value(text, "embedded", "smtp_port", str(smtp_port))
    text += f'\n[[embedded.users]]\naddress = "{CONTRACTOR}"\npassword_file = "var/secrets/contractor.password"\n'
    path.write_text(text, encoding="utf-8")
    create_missing_secrets(load_settings(config))


def contractor_subjects(runtime) -> list[str]:
    settings = runtime.settings
    user = next(u for u in settings.embedded.users if u.address == CONTRACTOR)
    with IMAPClient(settings.embedded.host, settings.embedded.imap_port, ssl=False, timeout=30) as client:
        client.login(CONTRACTOR, read_secret(user.password_env, user.password_file, "contractor"))
        client.select_folder("INBOX", readonly=True)
        uids = client.search("ALL")
        fetched = client.fetch(uids, ["BODY.PEEK[]"]) if uids else {}
    return [str(message_from_bytes(data[b"BODY[]"], policy=policy.default)["Subject"]) for data in fetched.values()]


def sign_in(page, url: str, login: str) -> None:
    page.goto(f"{url}/login")
    page.fill("#login", login)
    page.fill("#password", PASSWORD)
    page.get_by_role("button", name="ログイン").click()
    page.wait_for_selector("h1:has-text('受付一覧')")


def test_a_clerk_reveals_the_key_accepts_and_the_contractor_gets_the_reply(issued: dict, browser_page) -> None:
    with_contractor_mailbox(issued["config"])
    desk = build_desk(issued)
    runtime = desk["runtime"]
    dialogs: list[str] = []
    browser_page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    with contextlib.ExitStack() as stack:
        start_embedded(runtime, stack)
        app = create_app(desk["context"], "a-test-session-secret-of-enough-length", refresh_seconds=1)
        url = stack.enter_context(ServedApp(app, Listen("127.0.0.1", 0, what="console"))).url
        page = browser_page

        sign_in(page, url, "tanaka")
        page.select_option("select[name=state]", "open")
        page.get_by_role("button", name="絞り込む").click()
        page.get_by_role("link", name=desk["review"]).click()
        page.wait_for_selector("h1:has-text('受付番号')")
        assert "alert(" in page.inner_text("main")  # shown as text, never run
        masked = page.inner_text("code.key")
        assert "****" in masked
        page.get_by_role("button", name="表示").click()
        page.wait_for_selector("text=表示は記録されました")
        assert page.inner_text("code.key") == desk["unregistered"]["access_key"]

        # CSRF: a request without the page's token is refused, with it the API works.
        status = page.evaluate(
            """async (path) => (await fetch(path, {method: 'POST',
            headers: {'Content-Type': 'application/json'}, body: JSON.stringify({decision: 'accept'})})).status""",
            f"/api/v1/submissions/{desk['review']}/decision",
        )
        assert status == 403

        page.check("input[value=accept]")
        page.get_by_role("button", name="判断を記録する").click()
        page.wait_for_selector("text=判断を記録しました")
        assert "田中 一郎 さんが「受理」と判断しました" in page.inner_text("main")

        deliver_now(runtime)
        subjects = wait_until(
            lambda: [s for s in contractor_subjects(runtime) if desk["review"] in s and "受け付けました" in s],
            timeout=30,
            what="the decision's reply in the contractor's mailbox",
        )
        assert len(subjects) == 1  # exactly one reply for the decision (the robot's お預かり reply came before)
        with Session(runtime.engine) as session:
            events = session.exec(
                select(AuditEvent).where(AuditEvent.action.in_(["console.decided", "console.key_revealed"]))
            ).all()
        assert {json.loads(e.detail_json)["staff"] for e in events} == {"田中 一郎"} and len(events) == 2

        # New submissions appear in the open inbox without a reload.
        page.goto(f"{url}/")
        fresh = take_stored(
            runtime, mail([("中間.pdf", files(issued["rows"][1])["key_notice"])], subject="中間前払金"), uid=9
        )
        page.wait_for_selector(f"a:has-text('{fresh.receipt_no}')", timeout=20_000)

        # Another department's clerk sees neither the item nor its page.
        page.get_by_role("button", name="ログアウト").click()
        sign_in(page, url, "sato")
        assert desk["review"] not in page.inner_text("main")
        response = page.goto(f"{url}/submissions/{desk['review']}")
        assert response.status == 404 and "見つかりません" in page.inner_text("main")
    assert dialogs == []


def test_the_console_works_by_keyboard_alone_and_on_a_tablet(issued: dict, browser_page) -> None:
    desk = build_desk(issued)
    app = create_app(desk["context"], "a-test-session-secret-of-enough-length")
    with ServedApp(app, Listen("127.0.0.1", 0, what="console")) as served:
        page = browser_page
        page.set_viewport_size({"width": 820, "height": 1180})  # a tablet held upright
        page.goto(f"{served.url}/login")
        page.keyboard.type("tanaka")  # the login field has the focus
        page.keyboard.press("Tab")
        page.keyboard.type(PASSWORD)
        page.keyboard.press("Enter")
        page.wait_for_selector("h1:has-text('受付一覧')")
        assert page.evaluate("document.documentElement.scrollWidth") <= 820 + 1  # no sideways scrolling
        page.focus(f"a:has-text('{desk['review']}')")
        page.keyboard.press("Enter")
        page.wait_for_selector("h1:has-text('受付番号')")
        page.focus("input[value=handled]")
        page.keyboard.press("Space")
        page.focus("button:has-text('判断を記録する')")
        page.keyboard.press("Enter")
        page.wait_for_selector("text=判断を記録しました")
        assert "「対応済み」と判断しました" in page.inner_text("main")


def test_a_clerk_looks_a_key_up_by_hand_and_the_contractor_gets_one_result(issued: dict, browser_page) -> None:
    """Manual mode (issue 10) in the console: 照会待ち in the inbox, the audited reveal, a mistyped
    amount answered with the form again in Japanese, then the rules run on what the clerk recorded."""
    from tests.support.console import SITE, manual_desk

    with_contractor_mailbox(issued["config"])
    desk = manual_desk(issued)
    runtime, receipt = desk["runtime"], desk["waiting"].receipt_no
    dialogs: list[str] = []
    browser_page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    with contextlib.ExitStack() as stack:
        start_embedded(runtime, stack)
        app = create_app(desk["context"], "a-test-session-secret-of-enough-length")
        url = stack.enter_context(ServedApp(app, Listen("127.0.0.1", 0, what="console"))).url
        page = browser_page

        sign_in(page, url, "tanaka")
        page.select_option("select[name=state]", "held")
        page.get_by_role("button", name="絞り込む").click()
        assert "照会待ち" in page.inner_text("table.inbox")
        page.get_by_role("link", name=receipt).click()
        page.wait_for_selector("h2:has-text('照会結果の記録'), h3:has-text('照会結果の記録')")
        assert page.get_attribute("a:has-text('保証会社の照会サイト')", "href") == SITE
        page.get_by_role("button", name="表示").click()
        page.wait_for_selector("text=表示は記録されました")
        assert page.inner_text("code.key") == issued["rows"][1]["access_key"]

        def fill(amount: str) -> None:
            page.select_option("select[name=guarantee_type]", "中間前払金保証")
            for name, value in {
                "obligee": "美郷町長",
                "contractor_name": "株式会社美郷建設",
                "contract_no": "R8-土木-001",
                "work_name": "町道美郷中央線道路改良工事",
                "work_category": "工事",
                "contract_amount": amount,
                "guarantee_amount": "6,172,500",
                "contract_date": "2026-04-01",
                "completion_date": "2027-03-15",
                "period_start": "2026-10-01",
                "period_end": "2027-03-31",
            }.items():
                page.fill(f"[name={name}]", value)
            page.get_by_role("button", name="照会結果を記録する").click()

        fill("三千万円")
        page.wait_for_selector("p.error")
        assert "請負代金額" in page.inner_text("p.error")
        assert page.input_value("[name=contractor_name]") == "株式会社美郷建設"  # what was typed stays
        fill("30,862,500")
        page.wait_for_selector("text=照会結果を記録し")
        assert "照会結果を記録" in page.inner_text("main") and "照会結果を記録する" not in page.inner_text("main")

        deliver_now(runtime)
        subjects = wait_until(
            lambda: [s for s in contractor_subjects(runtime) if receipt in s and "受け付けました" in s],
            timeout=30,
            what="the look-up's result in the contractor's mailbox",
        )
        assert len(subjects) == 1
        with Session(runtime.engine) as session:
            recorded = session.exec(select(AuditEvent).where(AuditEvent.action == "lookup.manual_recorded")).all()
            revealed = session.exec(select(AuditEvent).where(AuditEvent.action == "console.key_revealed")).all()
        assert [e.actor for e in recorded] == ["staff:田中 一郎"]
        assert [json.loads(e.detail_json)["staff"] for e in revealed] == ["田中 一郎"]
        assert len([s for s in contractor_subjects(runtime) if receipt in s]) == 2  # お預かり, then the result
    assert dialogs == []
