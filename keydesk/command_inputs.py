"""What commands read from the command line, files and standard input, within limits: the desk a
command is for, a CSV file, the facts a clerk read off the guarantor's site, a backup's passphrase. The messages are the
ones a person can act on; the CLI modules only parse the options and print.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from foundation.errors import UserFacingError
from keydesk.settings import Settings

# A CSV file of guarantees or of the contract register.
MAX_CSV_BYTES = 20 * 1024 * 1024
# The facts of one certificate as JSON.
MAX_FACTS_BYTES = 64 * 1024


def desk_id_of(settings: Settings, desk: str | None) -> str:
    """The desk given with --desk, or the only one configured."""
    if desk is not None:
        if desk not in settings.desks:
            raise UserFacingError(f"窓口 {desk!r} は設定にありません(設定済み: {', '.join(sorted(settings.desks))})")
        return desk
    if len(settings.desks) == 1:
        return next(iter(settings.desks))
    raise UserFacingError(f"窓口が複数あります。--desk で指定してください({', '.join(sorted(settings.desks))})")


def read_csv(file: Path) -> bytes:
    """A CSV file's bytes, refused when it is over ``MAX_CSV_BYTES``, missing or a folder."""
    try:
        if file.stat().st_size > MAX_CSV_BYTES:
            raise UserFacingError(f"{file}: CSV ファイルが大きすぎます({MAX_CSV_BYTES // (1024 * 1024)} MB まで)")
        return file.read_bytes()
    except IsADirectoryError:
        raise UserFacingError(f"{file}: ファイルではなくフォルダです") from None
    except FileNotFoundError:
        raise UserFacingError(f"{file}: ファイルが見つかりません") from None


def facts_data(path: Path | None, status: str | None, reason: str) -> dict[str, Any]:
    """The facts of `keydesk manual record`: --status alone, or the JSON object of --facts FILE ('-': stdin)."""
    if status is not None:
        if status not in ("no_match", "revoked"):
            raise UserFacingError("--status は no_match か revoked です(見つかった場合は --facts で内容を指定します)")
        if path is not None:
            raise UserFacingError("--status と --facts は一緒に指定できません")
        return {"status": status, "revoked_reason": reason}
    if path is None:
        raise UserFacingError("--facts FILE(- で標準入力)か --status を指定してください")
    text = sys.stdin.read(MAX_FACTS_BYTES + 1) if str(path) == "-" else _read(path)
    if len(text) > MAX_FACTS_BYTES:
        raise UserFacingError("照会結果の JSON が大きすぎます")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserFacingError(f"照会結果の JSON を読み取れません: {exc}") from None
    if not isinstance(data, dict):
        raise UserFacingError("照会結果の JSON はオブジェクト({...})で指定してください")
    return data


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserFacingError(f"{path}: ファイルが見つかりません") from None


def read_passphrase(env_name: str, file: Path | None) -> str | None:
    """A backup's passphrase: from --passphrase-file, else from the environment variable; None when neither is set."""
    if file is not None:
        return file.read_text(encoding="utf-8").strip()
    return os.environ.get(env_name) or None
