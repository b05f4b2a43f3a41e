"""Does a hostile mail cost more than an honest one of the same size?

Walks (``intake.mime.walk_mail``) mails of about the same size, best of three each, in one run:

- the floor: an honest mail with a plain-text body of SIZE bytes;
- a body of key-like strings (保証契約番号 + 認証キー on every line), the old quadratic pairing;
- a body declared ``charset=punycode`` (a quadratic codec in Python), now never run;
- many MIME parts (refused before parsing);
- nested ZIP archives.

Prints seconds per walk and the ratio to the floor: a bounded walk keeps every ratio small.
Run: ``.venv/bin/python benchmarks/mail_walk.py [--size 3000000]``
"""

from __future__ import annotations

import argparse
import base64
import io
import sys
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from intake.mime import walk_mail  # noqa: E402

HEAD = b"From: a@x.example\r\nTo: keiyaku@town.misato.example\r\nSubject: t\r\nMIME-Version: 1.0\r\n"


def _text(body: bytes, charset: str = "utf-8") -> bytes:
    return HEAD + f"Content-Type: text/plain; charset={charset}\r\nContent-Transfer-Encoding: 8bit\r\n\r\n".encode() + body


def _nested_zip(size: int) -> bytes:
    inner = b"%PDF-1.4 " + b"0" * min(size, 1_000_000)
    for level in range(10):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(f"level{level}.zip", inner)
        inner = buffer.getvalue()
    return (HEAD + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: application/zip\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(inner) + b"--b--\r\n")


def mails(size: int) -> dict[str, bytes]:
    line = "保証契約番号 26-000123-5 認証キー AB12-CD34-EF56-GH7K\n".encode()
    part = b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n"
    return {
        "honest text (floor)": _text(b"ordinary text line\n" * (size // 19)),
        "key-like strings": _text(line * (size // len(line))),
        "charset=punycode": _text(b"a" * (size // 2) + b"-" + b"9" * (size // 2), "punycode"),
        "many MIME parts": HEAD + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + part * (size // len(part)),
        "nested archives": _nested_zip(size),
    }


def best_of_three(raw: bytes) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        walk_mail(raw)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=3_000_000, help="bytes per mail (default 3 MB)")
    args = parser.parse_args()
    results = {name: best_of_three(raw) for name, raw in mails(args.size).items()}
    floor = results["honest text (floor)"]
    print(f"mail walk, about {args.size} bytes per mail (best of three)")
    for name, seconds in results.items():
        print(f"  {name:<22} {seconds * 1000:8.1f} ms   ratio {seconds / floor:5.2f}")


if __name__ == "__main__":
    main()
