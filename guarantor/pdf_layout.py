"""A small page-drawing helper over reportlab for the guarantor's documents.

Why not platypus: the desk reads these PDFs back with pypdf and matches labels and values, so
each label and its value are drawn as ONE string on one line (``保証契約番号：26-000123-4``).
Text in a Japanese CID font (no embedding needed) extracts exactly. A value too long for the
line is drawn smaller first and wrapped only as a last resort.
"""

from __future__ import annotations

import io
from functools import cache

from reportlab.lib.colors import Color
from reportlab.lib.pagesizes import A4
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfgen.canvas import Canvas

GOTHIC = "HeiseiKakuGo-W5"
MINCHO = "HeiseiMin-W3"
COLON = "："  # full-width: the desk's default labels end with it
PAGE_WIDTH, PAGE_HEIGHT = A4
MARGIN = 56.0
_MIN_SIZE = 7.0
_GREY = Color(0.55, 0.55, 0.55)
_SHADE = Color(0.93, 0.93, 0.93)


@cache
def register_fonts() -> None:
    for name in (GOTHIC, MINCHO):
        pdfmetrics.registerFont(UnicodeCIDFont(name))


def width_of(text: str, font: str, size: float) -> float:
    return pdfmetrics.stringWidth(text, font, size)


def _wrap(text: str, font: str, size: float, width: float) -> list[str]:
    lines, current = [], ""
    for char in text:
        if current and width_of(current + char, font, size) > width:
            lines.append(current)
            current = ""
        current += char
    return lines + [current]


class Sheet:
    """One A4 page drawn top-down with a cursor (``y``); ``finish`` returns the PDF bytes."""

    def __init__(self, title: str, author: str, subject: str = "") -> None:
        register_fonts()
        self._buffer = io.BytesIO()
        self.canvas = Canvas(self._buffer, pagesize=A4, pageCompression=1)
        self.canvas.setTitle(title)
        self.canvas.setAuthor(author)
        self.canvas.setSubject(subject or title)
        self.canvas.setCreator("keydesk guarantor")
        self.y = PAGE_HEIGHT - MARGIN
        self.left = MARGIN
        self.right = PAGE_WIDTH - MARGIN

    @property
    def width(self) -> float:
        return self.right - self.left

    def space(self, points: float) -> None:
        self.y -= points

    def line(
        self,
        text: str,
        size: float = 10.5,
        font: str = MINCHO,
        indent: float = 0.0,
        align: str = "left",
        leading: float = 1.6,
    ) -> None:
        """One line of text; shrunk to fit, wrapped only if even the smallest size is too wide."""
        available = self.width - indent
        while size > _MIN_SIZE and width_of(text, font, size) > available:
            size = max(_MIN_SIZE, size - 0.5)
        for part in _wrap(text, font, size, available):
            self.y -= size * leading
            self._draw(part, font, size, indent, align)

    def _draw(self, text: str, font: str, size: float, indent: float, align: str) -> None:
        self.canvas.setFont(font, size)
        if align == "center":
            self.canvas.drawCentredString((self.left + self.right) / 2, self.y, text)
        elif align == "right":
            self.canvas.drawRightString(self.right, self.y, text)
        else:
            self.canvas.drawString(self.left + indent, self.y, text)

    def field(self, label: str, value: str, size: float = 11.0, font: str = MINCHO) -> None:
        """A table row: ``label：value`` with a rule below, so the page reads like a form."""
        self.line(f"{label}{COLON}{value}", size=size, font=font, indent=8, leading=1.9)
        self.space(size * 0.6)
        self.canvas.setStrokeColor(_GREY)
        self.canvas.setLineWidth(0.4)
        self.canvas.line(self.left, self.y, self.right, self.y)
        self.canvas.setStrokeColor(Color(0, 0, 0))

    def table_top(self) -> None:
        self.canvas.setLineWidth(0.8)
        self.canvas.line(self.left, self.y, self.right, self.y)

    def bar(self, text: str, size: float = 11.0, font: str = GOTHIC) -> None:
        """A shaded band with a heading, like a section title on a web screen or a form."""
        height = size * 2
        self.y -= height
        self.canvas.setFillColor(_SHADE)
        self.canvas.rect(self.left, self.y, self.width, height, stroke=0, fill=1)
        self.canvas.setFillColor(Color(0, 0, 0))
        self.canvas.setFont(font, size)
        self.canvas.drawString(self.left + 8, self.y + size * 0.65, text)

    def box(self, top: float, padding: float = 6.0) -> None:
        """A frame from ``top`` down to the cursor (for the instructions block)."""
        self.y -= padding
        self.canvas.setLineWidth(0.8)
        self.canvas.rect(self.left, self.y, self.width, top - self.y, stroke=1, fill=0)

    def margin_text(self, text: str, y: float, align: str, size: float = 8.0, share: float = 0.45) -> None:
        """Text in the page margin (browser print headers and footers), at most ``share`` of the width."""
        while size > 5 and width_of(text, GOTHIC, size) > self.width * share:
            size -= 0.5
        self.canvas.setFont(GOTHIC, size)
        if align == "center":
            self.canvas.drawCentredString((self.left + self.right) / 2, y, text)
        elif align == "right":
            self.canvas.drawRightString(self.right, y, text)
        else:
            self.canvas.drawString(self.left, y, text)

    def finish(self) -> bytes:
        self.canvas.showPage()
        self.canvas.save()
        return self._buffer.getvalue()
