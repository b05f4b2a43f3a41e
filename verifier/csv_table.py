"""Reading the CSV files people save from Excel: the guarantor's issuing list and the town's
contract register share this, so both accept the same encodings and report the same way.

Excel writes UTF-8 (with or without BOM) or CP932; a header row names the columns; a quoted
field may span lines, so each record is reported with the line it starts on (header = line 1).
Cell values are left as text: what a cell may hold is the caller's rule.
"""

from __future__ import annotations

import csv
import io
import unicodedata
from typing import Iterator, Mapping, Sequence


class CsvTableError(ValueError):
    """The file as a whole cannot be read (encoding, header, CSV syntax); worded for staff."""

    def __init__(self, reason: str, line: int | None = None) -> None:
        super().__init__(f"{line}行目: {reason}" if line else reason)
        self.reason = reason
        self.line = line


def decode(data: bytes) -> str:
    for encoding in ("utf-8-sig", "cp932"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise CsvTableError("文字コードを判別できません: UTF-8 でも Shift_JIS (CP932) でもないファイルです"
                        "(どちらかで保存してください)")


def open_table(
    data: bytes, columns: Sequence[str], optional: Sequence[str] = (), aliases: Mapping[str, str] | None = None,
) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    """(the header's column names, the records as (first line number, values)); blank rows skipped.

    The header must hold every one of ``columns`` and may hold ``optional`` ones, in any order;
    ``aliases`` maps other header names (a town's own, e.g. 契約番号) to those names, and the
    returned names are the canonical ones. The records iterator raises CsvTableError naming the
    line when the CSV syntax breaks.
    """
    reader = csv.reader(io.StringIO(decode(data), newline=""))
    return _header(reader, columns, optional, aliases or {}), _records(reader)


def _header(reader, columns: Sequence[str], optional: Sequence[str] = (),
            aliases: Mapping[str, str] | None = None) -> list[str]:
    try:
        header = next(reader)
    except StopIteration:
        raise CsvTableError("ファイルが空です(1行目に列名が必要です)") from None
    except csv.Error as error:
        raise CsvTableError(f"CSVとして読めません: {error}", line=1) from None
    names = [unicodedata.normalize("NFKC", name).strip() for name in header]
    while names and not names[-1]:
        names.pop()  # Excel may leave empty columns at the end
    folded = {"".join(key.split()): value for key, value in (aliases or {}).items()}
    names = [folded.get("".join(name.split()), name) for name in names]
    missing = [c for c in columns if c not in names]
    unknown = [n for n in names if n not in columns and n not in optional]
    repeated = sorted({n for n in names if names.count(n) > 1})
    problems = []
    if missing:
        problems.append(f"足りない列: {', '.join(missing)}")
    if unknown:
        problems.append(f"不明な列: {', '.join(repr(n) for n in unknown)}")
    if repeated:
        problems.append(f"重複した列: {', '.join(repeated)}")
    if problems:
        raise CsvTableError(f"{'、'.join(problems)}(必要な列: {', '.join(columns)})", line=1)
    return names


def _records(reader) -> Iterator[tuple[int, list[str]]]:
    previous_end = reader.line_num
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise CsvTableError(f"CSVとして読めません: {error}", line=previous_end + 1) from None
        if any(value.strip() for value in values):
            yield previous_end + 1, values
        previous_end = reader.line_num
