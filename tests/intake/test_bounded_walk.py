"""The bounded mail walk: no mail can stall the intake (issue 12, item 5 and 7).

Each adversarial mail must be walked in at most 2 s; a property test throws random structure at
the walk with a time bound per mail. Over a limit the mail is kept and answered "please resend"
(mail.unreadable), never dropped and never a crash.
"""

from __future__ import annotations

import base64
import io
import time
import zipfile

from hypothesis import HealthCheck, given, settings, strategies as st

from intake.mail_context import typed_keys
from intake.mime import MailLimits, walk_mail
from intake.text_decoding import charset_allowed, decode_bytes

BOUND_SECONDS = 2.0


def timed_walk(raw: bytes, **kwargs):
    started = time.monotonic()
    walked = walk_mail(raw, **kwargs)
    elapsed = time.monotonic() - started
    assert elapsed <= BOUND_SECONDS, f"walk took {elapsed:.2f} s"
    return walked


def codes(walked) -> list[str]:
    return [p.code for p in walked.problems]


HEAD = b"From: a@x.example\r\nTo: keiyaku@town.misato.example\r\nSubject: t\r\nMIME-Version: 1.0\r\n"


def test_a_punycode_body_is_never_run_through_the_quadratic_codec() -> None:
    assert not charset_allowed("punycode") and not charset_allowed("utf-7") and charset_allowed("iso-2022-jp")
    body = b"a" * 200_000 + b"-" + b"9" * 200_000
    raw = HEAD + b"Content-Type: text/plain; charset=punycode\r\n\r\n" + body
    walked = timed_walk(raw)
    assert walked.body_text  # read by the guesser instead, within the body cap
    assert decode_bytes(b"abc", "punycode") == "abc"


def test_a_hundred_thousand_mime_parts_are_refused_before_parsing() -> None:
    parts = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(100_000))
    raw = HEAD + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + parts + b"--b--\r\n"
    walked = timed_walk(raw)
    assert codes(walked) == ["mail.unreadable"] and walked.documents == () and walked.sender.valid


def test_megabytes_of_key_like_strings_are_matched_in_linear_time() -> None:
    line = "保証契約番号 26-000123-5 認証キー AB12-CD34-EF56-GH7K\n"
    body = (line * 60_000).encode()  # about 3.5 MB
    raw = HEAD + b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + body
    walked = timed_walk(raw)
    assert len(walked.typed_keys) <= 100
    started = time.monotonic()
    found = typed_keys(line * 20_000)  # the matcher alone on ~1 MB, uncapped body
    assert time.monotonic() - started <= BOUND_SECONDS and found


def _zip(name: str, content: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, content)
    return buffer.getvalue()


def test_nested_archives_stop_at_the_depth_limit() -> None:
    inner = b"%PDF-1.4 nested"
    for level in range(12):
        inner = _zip(f"level{level}.zip" if level else "a.pdf", inner)
    raw = (HEAD + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
           b'Content-Type: application/zip; name="n.zip"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
           + base64.encodebytes(inner) + b"--b--\r\n")
    walked = timed_walk(raw)
    assert "doc.archive_too_large" in codes(walked) and walked.documents == ()


def test_empty_and_truncated_parts_do_not_crash() -> None:
    raw = (HEAD + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n\r\n--b\r\n'
           b'Content-Type: application/pdf; name="a.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK'
           b"\r\n--b\r\nContent-Type: application/zip\r\nContent-Transfer-Encoding: base64\r\n\r\nUEsDBBQAAAAI")
    walked = timed_walk(raw)
    assert walked.sender.valid and all(d.content for d in walked.documents)


def test_the_wall_clock_limit_turns_a_slow_walk_into_an_unreadable_mail() -> None:
    parts = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(300))
    raw = HEAD + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + parts + b"--b--\r\n"
    walked = timed_walk(raw, limits=MailLimits(walk_seconds=0.000001))
    assert codes(walked) == ["mail.unreadable"] and "took longer" in walked.problems[0].detail


def test_body_text_is_capped_before_decoding() -> None:
    body = b"line of text\r\n" * 100_000  # 1.4 MB
    raw = HEAD + b"Content-Type: text/plain; charset=us-ascii\r\n\r\n" + body
    walked = timed_walk(raw, limits=MailLimits(body_text_max_bytes=64 * 1024))
    assert 0 < len(walked.body_text) <= 64 * 1024


_header_names = st.sampled_from(["Content-Type", "Content-Transfer-Encoding", "Content-Disposition", "Subject", "From"])
_values = st.one_of(
    st.sampled_from(['multipart/mixed; boundary="b"', "text/plain; charset=punycode", "application/zip",
                     "application/pdf", "base64", "quoted-printable", 'attachment; filename*=utf-8\'\'%E3%81', "message/rfc822",
                     "text/html; charset=iso-2022-jp", "=?utf-8?b?44GC?=", "multipart/report"]),
    st.text(max_size=40).map(lambda t: t.replace("\r", " ").replace("\n", " ")),
)
_part = st.tuples(st.lists(st.tuples(_header_names, _values), max_size=4), st.binary(max_size=300))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parts=st.lists(_part, max_size=30), boundary_garbage=st.binary(max_size=50))
def test_property_any_structure_is_walked_within_the_bound(parts, boundary_garbage) -> None:
    raw = HEAD + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    for headers, body in parts:
        raw += b"--b\r\n" + b"".join(f"{name}: {value}\r\n".encode("utf-8", "replace") for name, value in headers)
        raw += b"\r\n" + body + b"\r\n"
    raw += boundary_garbage
    walked = timed_walk(raw, limits=MailLimits(walk_seconds=1.5))
    assert walked.sender.valid
    assert all(problem.code for problem in walked.problems)


def test_html_that_makes_the_standard_parser_quadratic_is_read_in_linear_time() -> None:
    # html.parser of Python 3.11 needs seconds for a few hundred KB of "</" or "<!".
    for body in (b"</" * 200_000, b"<!" * 200_000, b"<script>" * 50_000 + b"text"):
        raw = HEAD + b"Content-Type: text/html; charset=us-ascii\r\n\r\n" + body
        timed_walk(raw)
    walked = timed_walk(HEAD + b"Content-Type: text/html\r\n\r\n<p>a &amp; b</p><!-- x --><div>c</div>")
    assert walked.body_text == "a & b\n\nc"


def test_absurd_headers_are_cut_not_parsed_for_minutes() -> None:
    # The library re-parses a structured header on each access, quadratic in its parameters.
    for head in (b"Content-Type: text/plain; " + b"a=b; " * 100_000,
                 b"Content-Type: text/plain; " + b"".join(b"name*%d*=%%41; " % i for i in range(50_000)),
                 b"Reply-To: " + b"a@x.example," * 50_000,
                 b"X-Filler: b\r\n" * 60_000):
        walked = timed_walk(HEAD + head + b"\r\n\r\nbody\r\n")
        assert walked.sender.valid
    walked = timed_walk(HEAD + b"X-Filler: b\r\n" * 60_000 + b"\r\nbody\r\n")
    assert codes(walked) == ["mail.unreadable"]


def test_the_worker_walks_as_in_process_and_is_stopped_at_its_deadline() -> None:
    import re
    from pathlib import Path

    from intake.walk_worker import MailWalkWorker

    samples = sorted((Path(__file__).resolve().parents[1] / "fixtures" / "mail").glob("*.eml"))
    with MailWalkWorker(margin_seconds=0.5) as worker:
        for path in samples[:6]:
            raw = path.read_bytes()
            assert worker.walk(raw) == walk_mail(raw), path.name
        # A step the walk cannot interrupt (here: a catastrophic pattern an admin might configure).
        raw = HEAD + b"Content-Type: text/plain\r\n\r\n" + b"a" * 40 + b"!\r\n"
        patterns = (re.compile(r"(a+)+$"), re.compile(r"(a+)+$"))
        started = time.monotonic()
        walked = worker.walk(raw, limits=MailLimits(walk_seconds=0.5), key_patterns=patterns)
        assert time.monotonic() - started < BOUND_SECONDS
        assert codes(walked) == ["mail.unreadable"] and "stopped" in walked.problems[0].detail
        assert walked.sender.valid
        # The next mail gets a fresh worker.
        assert worker.walk(samples[0].read_bytes()) == walk_mail(samples[0].read_bytes())


def test_recording_a_mail_reads_its_headers_in_bounded_time() -> None:
    # The record stage runs before any limit of the walk: its header summary must be cheap, too.
    from intake.intake_service import header_summary

    for head in (b"From: " + b"a@x.example," * 50_000, b"From: " + b'"a' * 100_000, b"From: " + b"(" * 100_000):
        started = time.monotonic()
        message_id, sender, subject = header_summary(b"Subject: s\r\n" + head + b"\r\n\r\nbody")
        assert time.monotonic() - started <= BOUND_SECONDS
        assert sender and len(sender) <= 998 and subject == "s"
