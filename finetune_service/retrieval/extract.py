"""Text out of uploaded or fetched files: plain text, Markdown, HTML, PDF, JSON, JSONL and CSV.

Every extractor returns `Extracted`: pages of text (a PDF page keeps its page label; other
formats are one page) plus, for HTML, the links found and the title. A file that cannot be
read raises `ExtractionError` with a message that says what is wrong, so the API answers 4xx.

PDF text comes from `pypdf`: pure Python (no system library, installs everywhere the service
does), actively maintained, reads page labels (`/PageLabels`, e.g. "iv" or "A-3") and raises a
clear `PdfReadError` on damaged files.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urldefrag, urljoin

FORMATS = ("text", "markdown", "html", "pdf", "json", "jsonl", "csv")
_EXTENSIONS = {
    "txt": "text", "text": "text", "log": "text", "md": "markdown", "markdown": "markdown",
    "html": "html", "htm": "html", "xhtml": "html", "pdf": "pdf", "json": "json", "jsonl": "jsonl",
    "ndjson": "jsonl", "csv": "csv",
}
_MEDIA_TYPES = {
    "text/plain": "text", "text/markdown": "markdown", "text/x-markdown": "markdown", "text/html": "html",
    "application/xhtml+xml": "html", "application/pdf": "pdf", "application/json": "json",
    "application/jsonl": "jsonl", "application/x-ndjson": "jsonl", "application/ndjson": "jsonl",
    "application/jsonlines": "jsonl", "text/csv": "csv",
}


class ExtractionError(ValueError):
    """The file is not what its type says, or cannot be read."""


class UnsupportedFormat(ValueError):
    """No extractor for this kind of file."""


@dataclass
class Page:
    text: str
    label: str | None = None
    url: str | None = None


@dataclass
class Extracted:
    format: str
    pages: list[Page]
    title: str | None = None
    links: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n\n".join(p.text for p in self.pages)


def detect_format(filename: str | None, media_type: str | None = None) -> str:
    """The format from a file name's extension, else from a media type; UnsupportedFormat if neither."""
    if filename:
        ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
        if ext in _EXTENSIONS:
            return _EXTENSIONS[ext]
    if media_type:
        base = media_type.split(";", 1)[0].strip().lower()
        if base in _MEDIA_TYPES:
            return _MEDIA_TYPES[base]
        if base.endswith("+json"):
            return "json"
    raise UnsupportedFormat(
        f"Cannot index {filename or media_type or 'this file'}: supported are text (.txt), Markdown (.md), "
        "HTML (.html), PDF (.pdf), JSON (.json), JSON Lines (.jsonl) and CSV (.csv)."
    )


def decode_text(data: bytes, charset: str | None = None) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="replace")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    if charset:
        try:
            return data.decode(charset)
        except (LookupError, UnicodeDecodeError):
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


# ---------------------------------------------------------------------------------- HTML

_BLOCK = {"p", "div", "section", "article", "main", "header", "footer", "aside", "nav", "li", "ul", "ol", "tr",
          "table", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote", "br", "hr", "dd", "dt", "figure",
          "figcaption", "form", "address", "details", "summary"}
_SKIP = {"script", "style", "noscript", "template", "svg", "head", "iframe", "object", "canvas"}


class _TextParser(HTMLParser):
    def __init__(self, base_url: str | None) -> None:
        super().__init__(convert_charrefs=True)
        self.base_url = base_url
        self.parts: list[str] = []
        self.links: list[str] = []
        self.title: str | None = None
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skip += 1
        if tag == "title":
            self._in_title = True
        if tag in _BLOCK:
            self.parts.append("\n\n" if tag not in {"br", "li", "tr"} else "\n")
        if tag == "a":
            href = dict(attrs).get("href")
            if href and not href.startswith(("#", "mailto:", "javascript:", "tel:", "data:")):
                link = urljoin(self.base_url, href) if self.base_url else href
                self.links.append(urldefrag(link)[0])

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP and self._skip:
            self._skip -= 1
        if tag == "title":
            self._in_title = False
        if tag in _BLOCK:
            self.parts.append("\n\n")
        elif tag in {"td", "th"}:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title = (self.title or "") + data.strip()
            return
        if not self._skip:
            self.parts.append(data)


def _tidy(text: str) -> str:
    lines = [re.sub(r"[ \t\f\v\r]+", " ", line).strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def extract_html(text: str, base_url: str | None = None) -> Extracted:
    parser = _TextParser(base_url)
    parser.feed(text)
    parser.close()
    body = _tidy("".join(parser.parts))
    seen: set[str] = set()
    links = [u for u in parser.links if not (u in seen or seen.add(u))]  # type: ignore[func-returns-value]
    return Extracted("html", [Page(body, url=base_url)], title=parser.title or None, links=links)


# ---------------------------------------------------------------------------------- PDF


def extract_pdf(data: bytes) -> Extracted:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise ExtractionError("The PDF is encrypted; upload a copy without a password.")
        labels: list[str] = list(reader.page_labels)
        pages = []
        for index, page in enumerate(reader.pages):
            label = labels[index] if index < len(labels) else str(index + 1)
            pages.append(Page(_tidy(page.extract_text() or ""), label=label))
    except ExtractionError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError, AssertionError) as error:
        raise ExtractionError(f"The file is not a readable PDF ({type(error).__name__}: {error}).") from None
    if not pages:
        raise ExtractionError("The PDF has no pages.")
    return Extracted("pdf", pages)


# ---------------------------------------------------------------------------------- structured


def _render(value: Any, prefix: str = "") -> list[str]:
    """Readable `key: value` lines for a JSON value (nested keys joined with dots)."""
    if isinstance(value, dict):
        lines: list[str] = []
        for key, item in value.items():
            lines.extend(_render(item, f"{prefix}.{key}" if prefix else str(key)))
        return lines
    if isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        lines = []
        for index, item in enumerate(value):
            lines.extend(_render(item, f"{prefix}[{index}]"))
        return lines
    if isinstance(value, list):
        text = ", ".join("" if v is None else str(v) for v in value)
    else:
        text = "" if value is None else str(value)
    return [f"{prefix}: {text}" if prefix else text]


def _records_text(records: list[Any]) -> str:
    return "\n\n".join("\n".join(_render(record)) for record in records)


def extract_json(text: str) -> Extracted:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ExtractionError(f"Invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}.") from None
    records = value if isinstance(value, list) else [value]
    return Extracted("json", [Page(_records_text(records))])


def extract_jsonl(text: str) -> Extracted:
    records = []
    # Split on \n only: str.splitlines would also split inside values on U+2028.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise ExtractionError(f"Invalid JSON on line {number}, column {error.colno}: {error.msg}.") from None
    return Extracted("jsonl", [Page(_records_text(records))])


def extract_csv(text: str) -> Extracted:
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as error:
        raise ExtractionError(f"Invalid CSV: {error}.") from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        return Extracted("csv", [Page("")])
    header, body = rows[0], rows[1:]
    if not body:
        return Extracted("csv", [Page(", ".join(header))])
    blocks = []
    for row in body:
        cells = [f"{header[i] if i < len(header) else f'column {i + 1}'}: {cell}" for i, cell in enumerate(row)
                 if cell.strip()]
        blocks.append("\n".join(cells))
    return Extracted("csv", [Page("\n\n".join(blocks))])


def extract(data: bytes, fmt: str, *, charset: str | None = None, url: str | None = None) -> Extracted:
    """Text of `data` read as `fmt` (one of FORMATS)."""
    if fmt == "pdf":
        if not data.lstrip()[:5].startswith(b"%PDF"):
            raise ExtractionError("The file is not a PDF (it does not start with '%PDF').")
        result = extract_pdf(data)
    else:
        if b"\x00" in data[:4096] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise ExtractionError(f"The file looks binary, not {fmt} text.")
        text = decode_text(data, charset)
        if fmt == "html":
            result = extract_html(text, url)
        elif fmt == "json":
            result = extract_json(text)
        elif fmt == "jsonl":
            result = extract_jsonl(text)
        elif fmt == "csv":
            result = extract_csv(text)
        else:
            result = Extracted(fmt, [Page(_tidy(text))])
    if url:
        for page in result.pages:
            page.url = page.url or url
    return result
