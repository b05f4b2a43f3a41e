"""Authentication-Results (RFC 8601): what our own receiving server found out about a mail.

Only headers whose authserv-id is the one configured for our server are believed. Any other
Authentication-Results header was written by someone else, possibly the sender, and is ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message

from intake.mime_headers import raw_values, split_outside_quotes, unquote
from intake.text_decoding import clean_line, raw_header_to_text


@dataclass(frozen=True)
class MethodResult:
    method: str  # "spf", "dkim", "dmarc", ...
    result: str  # "pass", "fail", "none", ...
    properties: tuple[tuple[str, str], ...] = ()  # ("smtp.mailfrom", "x@example.jp"), ("header.d", ...)
    reason: str = ""

    def get(self, name: str) -> str | None:
        for key, value in self.properties:
            if key == name:
                return value
        return None


@dataclass(frozen=True)
class Authentication:
    """Results our own server recorded; other servers' headers are ignored (a sender can write them)."""

    authserv_id: str | None
    results: tuple[MethodResult, ...] = ()
    trusted_headers: int = 0
    ignored_headers: int = 0

    def first(self, method: str) -> MethodResult | None:
        for result in self.results:
            if result.method == method:
                return result
        return None

    def result(self, method: str) -> str | None:
        found = self.first(method)
        return found.result if found else None

    @property
    def spf(self) -> str | None:
        return self.result("spf")

    @property
    def dmarc(self) -> str | None:
        return self.result("dmarc")

    @property
    def dkim(self) -> str | None:
        """"pass" if any signature passed, else the first result."""
        results = [r.result for r in self.results if r.method == "dkim"]
        if "pass" in results:
            return "pass"
        return results[0] if results else None

    @property
    def dkim_pass_domains(self) -> tuple[str, ...]:
        return tuple(
            (r.get("header.d") or "").lower() for r in self.results if r.method == "dkim" and r.result == "pass"
        )


def strip_comments(text: str) -> str:
    """The text without RFC 5322 comments (parenthesised, nestable), quoted strings kept."""
    out, depth, quoted, escaped = [], 0, False, False
    for char in text:
        if escaped:
            escaped = False
            if depth == 0:
                out.append(char)
            continue
        if char == "\\" and (quoted or depth):
            escaped = True
            if depth == 0:
                out.append(char)
            continue
        if char == '"' and depth == 0:
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
            continue
        elif not quoted and char == ")" and depth:
            depth -= 1
            continue
        if depth == 0:
            out.append(char)
    return "".join(out)


_TOKEN = re.compile(r'(?:[^\s"]|"(?:[^"\\]|\\.)*"?)+')


def parse_authentication_results(value: str) -> tuple[str, list[MethodResult]]:
    """(authserv-id, results) of one header value; raises ValueError if it has no authserv-id."""
    text = strip_comments(clean_line(value))
    pieces = split_outside_quotes(text, ";")
    head = pieces[0].split()
    if not head:
        raise ValueError("no authserv-id")
    authserv_id = unquote(head[0]).lower()
    results = []
    for raw_piece in pieces[1:]:
        piece = re.sub(r"\s*=\s*", "=", raw_piece.strip())
        tokens = _TOKEN.findall(piece)
        if not tokens or "=" not in tokens[0]:
            continue  # "none", or garbage
        method, _, result = tokens[0].partition("=")
        method = method.split("/")[0].lower()
        properties, reason = [], ""
        for token in tokens[1:]:
            key, _, prop_value = token.partition("=")
            if key.lower() == "reason":
                reason = unquote(prop_value)
            elif "." in key:
                properties.append((key.lower(), unquote(prop_value)))
        results.append(MethodResult(method, result.lower(), tuple(properties), reason))
    return authserv_id, results


def authentication(message: Message, authserv_id: str | None) -> Authentication:
    """Results from Authentication-Results headers whose authserv-id is ours, top header first."""
    wanted = (authserv_id or "").strip().lower()
    trusted, ignored = 0, 0
    results: list[MethodResult] = []
    for raw in raw_values(message, "authentication-results"):
        try:
            header_id, header_results = parse_authentication_results(raw_header_to_text(raw))
        except ValueError:
            ignored += 1
            continue
        if not wanted or header_id != wanted:
            ignored += 1
            continue
        trusted += 1
        results.extend(header_results)
    return Authentication(authserv_id, tuple(results), trusted, ignored)
