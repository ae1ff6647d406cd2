"""Split extracted pages into search chunks that keep where they came from.

A chunk never crosses a page (so it keeps its PDF page label and its page URL). Pages are cut
into sentence-like units (sentence ends and blank lines); units are packed greedily up to
`target_chars`, preferring to stop at a paragraph end once half full; a unit longer than
`max_chars` is cut at whitespace. The last unit of a chunk is repeated at the start of the next
when it is short (`overlap_chars`), so a fact that straddles two chunks is found in both.

`start`/`end` are character offsets into the document text: the pages joined with "\\n\\n"
(`Extracted.text`), so `document_text[start:end] == chunk.text`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from finetune_service.retrieval.extract import Page

_UNIT_END = re.compile(r"(?<=[.!?;:])\s+|\n\s*\n")
PAGE_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class ChunkSpec:
    text: str
    start: int
    end: int
    page_label: str | None
    source_url: str | None


def _units(text: str, max_chars: int) -> list[tuple[int, int, bool]]:
    """(start, end, ends_paragraph) spans of non-blank sentence-like pieces of `text`."""
    units: list[tuple[int, int, bool]] = []
    position = 0
    for match in [*_UNIT_END.finditer(text), None]:
        end = match.start() if match else len(text)
        paragraph = match is None or "\n" in match.group(0)
        segment = text[position:end]
        lead = len(segment) - len(segment.lstrip())
        start, stop = position + lead, position + len(segment.rstrip())
        while stop - start > max_chars:
            cut = text.rfind(" ", start + max_chars // 2, start + max_chars)
            cut = cut if cut > start else start + max_chars
            units.append((start, cut, False))
            start = cut
            while start < stop and text[start].isspace():
                start += 1
        if stop > start:
            units.append((start, stop, paragraph))
        position = match.end() if match else len(text)
    return units


def chunk_pages(pages: list[Page], *, target_chars: int = 800, max_chars: int = 1200,
                overlap_chars: int = 200) -> list[ChunkSpec]:
    chunks: list[ChunkSpec] = []
    base = 0
    for page in pages:
        text = page.text
        units = _units(text, max_chars)
        i = 0
        while i < len(units):
            j = i
            while j + 1 < len(units):
                if units[j + 1][1] - units[i][0] > target_chars:
                    break
                if units[j][2] and units[j][1] - units[i][0] >= target_chars // 2:
                    break
                j += 1
            start, end = units[i][0], units[j][1]
            chunks.append(ChunkSpec(text[start:end], base + start, base + end, page.label, page.url))
            last = units[j]
            i = j if j > i and last[1] - last[0] <= overlap_chars and not last[2] else j + 1
        base += len(text) + len(PAGE_SEPARATOR)
    return chunks


_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def count_tokens(text: str) -> int:
    """An approximate token count: words and punctuation marks (model tokenizers differ)."""
    return len(_TOKEN.findall(text))
