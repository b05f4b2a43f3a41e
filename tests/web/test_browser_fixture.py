"""The shared Chromium fixture renders a page served by web.server, Japanese text included."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from web.server import Listen, ServedApp


@pytest.mark.chromium
def test_chromium_renders_a_served_japanese_page(browser_page) -> None:
    app = FastAPI()

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return "<!doctype html><html lang=ja><meta charset=utf-8><title>照会</title><h1>保証契約番号</h1></html>"

    with ServedApp(app, Listen("127.0.0.1", 0, what="test")) as served:
        browser_page.goto(served.url + "/")
        assert browser_page.title() == "照会"
        assert browser_page.inner_text("h1") == "保証契約番号"
