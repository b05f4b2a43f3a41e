"""Authentication-Results (RFC 8601): what our own receiving server found out about a mail.

Only the topmost header whose authserv-id is the one configured for our server is believed: our
server adds its header above everything that came with the mail. Any other Authentication-Results
header was written by someone else, possibly the sender, and is ignored. That holds only if the
receiving MTA removes incoming headers that carry our authserv-id (RFC 8601 section 5); a sender
could otherwise put a forged one on top when our server adds none (README, "Authentication").

A pass counts for the From address only when it is aligned with the From domain (DMARC, RFC 7489
section 3.1): DMARC's own verdict, else a DKIM signature (header.d) or the SPF envelope domain
(smtp.mailfrom) in the From domain or one of its parent or child domains.
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
    for piece in pieces[1:]:
        piece = re.sub(r"\s*=\s*", "=", piece.strip())
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
    """Results of the topmost Authentication-Results header whose authserv-id is ours.

    Lower headers with our id are ignored too: only our server's newest header, written above what
    the mail brought along, is ours for certain."""
    wanted = (authserv_id or "").strip().lower()
    trusted, ignored = 0, 0
    results: list[MethodResult] = []
    for raw in raw_values(message, "authentication-results"):
        try:
            header_id, header_results = parse_authentication_results(raw_header_to_text(raw))
        except ValueError:
            ignored += 1
            continue
        if not wanted or header_id != wanted or trusted:
            ignored += 1
            continue
        trusted += 1
        results.extend(header_results)
    return Authentication(authserv_id, tuple(results), trusted, ignored)


def _address_domain(value: str | None) -> str:
    return (value or "").rpartition("@")[2].strip().strip(".").lower()


def aligned(domain: str, from_domain: str) -> bool:
    """Relaxed alignment without a public-suffix list: the same domain, or one inside the other."""
    domain, from_domain = domain.strip(".").lower(), from_domain.strip(".").lower()
    if not domain or not from_domain:
        return False
    return domain == from_domain or from_domain.endswith("." + domain) or domain.endswith("." + from_domain)


def authenticated_for(auth: Authentication, from_domain: str | None) -> bool:
    """Whether our server's results prove the From domain: DMARC pass, or an aligned DKIM/SPF pass.

    An explicit DMARC fail wins over any other pass (the domain's owner said so)."""
    if not from_domain:
        return False
    dmarc = auth.first("dmarc")
    if dmarc is not None:
        if dmarc.result == "pass":
            header_from = _address_domain(dmarc.get("header.from"))
            return not header_from or header_from == from_domain.lower()
        if dmarc.result == "fail":
            return False
    for result in auth.results:
        if result.result != "pass":
            continue
        if result.method == "dkim" and aligned(
                result.get("header.d") or _address_domain(result.get("header.i")), from_domain):
            return True
        if result.method == "spf" and aligned(_address_domain(result.get("smtp.mailfrom")), from_domain):
            return True
    return False
