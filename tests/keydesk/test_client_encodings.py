"""The neutral mail-client encoders the demo and the test fixtures write their mails with."""

from __future__ import annotations

import io
import zipfile

import pytest

from keydesk.client_encodings import encrypted_zip


def test_encrypted_zip_opens_only_with_its_password():
    content = "認証キー等のお知らせ".encode() * 50
    data = encrypted_zip([("お知らせ.pdf", content)], "Misato-2026")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        [info] = archive.infolist()
        assert info.filename == "お知らせ.pdf" and info.flag_bits & 0x1
        assert archive.read(info, pwd=b"Misato-2026") == content
        with pytest.raises(RuntimeError):
            archive.read(info)
