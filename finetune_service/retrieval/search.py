"""Hybrid search scoring: full-text and vector candidates fused with reciprocal rank fusion.

Candidates: the `n` chunks closest to the query embedding (exact cosine, numpy over every
vector of the searched collections; on PostgreSQL with pgvector, an HNSW index scan instead —
see `pgvector.py`) and the `n` best full-text matches (SQLite FTS5 bm25 /
PostgreSQL `ts_rank_cd`, both over OR-ed query terms so partial matches count).

Score (0..1, what `similarity_threshold` is compared with). For a chunk at rank r_v in the vector
list with cosine c, and at rank r_t in the text list where it contains a share w of the query's
distinct terms (stop words removed):

    score = ( (k+1)/(k+r_v) * max(c, 0)  +  (k+1)/(k+r_t) * w ) / 2        k = 60

A list the chunk is not in contributes 0. This is reciprocal rank fusion, each list's 1/(k+r)
weighted by that list's own relevance, scaled so a chunk that is first in both lists with
cosine 1 and every query term scores 1.0. Because the relevance factors enter, an unrelated
query scores low (it is not rescued by being "first" of a bad list), and a chunk needs either
close meaning (cosine) or shared words (or both) to pass a threshold such as 0.4. Results are
ordered by this score, best first.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

RRF_K = 60
_WORD = re.compile(r"\w+", re.UNICODE)
_STOP_WORDS = """
a about above after again against all am an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here hers
herself him himself his how i if in into is it its itself just me more most my myself no nor not now of off on
once only or other our ours ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we were what when where which
while who whom why will with would you your yours yourself yourselves tell please give know
"""
STOP_WORDS = frozenset(_STOP_WORDS.split())


def _stem(word: str) -> str:
    for suffix in ("ies", "es", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix) and not word.endswith("ss"):
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


def query_terms(text: str, limit: int = 32) -> list[str]:
    """Distinct lower-case words of a query, without stop words (all words if only stop words)."""
    words = [w.lower() for w in _WORD.findall(text)]
    kept = [w for w in words if w not in STOP_WORDS] or words
    out: list[str] = []
    for word in kept:
        if word not in out:
            out.append(word)
    return out[:limit]


def fts5_match(terms: Sequence[str]) -> str:
    """An FTS5 MATCH expression: every term quoted (no operator injection), OR-ed."""
    return " OR ".join('"' + t.replace('"', "") + '"' for t in terms)


def websearch_query(terms: Sequence[str]) -> str:
    """A PostgreSQL websearch_to_tsquery string that OR-s the terms."""
    return " or ".join(terms)


def coverage(terms: Sequence[str], text: str) -> float:
    """Share of `terms` that occur in `text` (plural endings ignored on both sides)."""
    if not terms:
        return 0.0
    words = {_stem(w.lower()) for w in _WORD.findall(text)}
    return sum(_stem(t) in words for t in terms) / len(terms)


def fuse(vector: Sequence[tuple[int, float]], text: Sequence[int], coverage_of: dict[int, float],
         k: int = RRF_K) -> list[tuple[int, float]]:
    """(seq, score) best first; `vector` is (seq, cosine) best first, `text` seqs best first."""
    scores: dict[int, float] = {}
    for rank, (seq, cosine) in enumerate(vector, start=1):
        scores[seq] = scores.get(seq, 0.0) + (k + 1) / (k + rank) * max(float(cosine), 0.0)
    for rank, seq in enumerate(text, start=1):
        scores[seq] = scores.get(seq, 0.0) + (k + 1) / (k + rank) * coverage_of.get(seq, 0.0)
    ranked = sorted(((seq, min(1.0, s / 2.0)) for seq, s in scores.items()), key=lambda p: (-p[1], p[0]))
    return ranked


# ---------------------------------------------------------------------------------- vectors


def to_bytes(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def from_bytes(blobs: Iterable[bytes], dimensions: int) -> np.ndarray:
    joined = b"".join(blobs)
    return np.frombuffer(joined, dtype="<f4").reshape(-1, dimensions) if joined else np.zeros((0, dimensions),
                                                                                                np.float32)


@dataclass(frozen=True)
class VectorBlock:
    """Every vector of one collection at one revision: `seqs[i]` is the chunk of `matrix[i]`."""

    revision: int
    seqs: np.ndarray
    matrix: np.ndarray

    @property
    def nbytes(self) -> int:
        return int(self.seqs.nbytes + self.matrix.nbytes)


class VectorCache:
    """Collections' vectors kept in memory (LRU, bounded by bytes), valid while the revision matches."""

    def __init__(self, max_bytes: int = 512 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._blocks: OrderedDict[str, VectorBlock] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, collection_id: str, revision: int) -> VectorBlock | None:
        with self._lock:
            block = self._blocks.get(collection_id)
            if block is None or block.revision != revision:
                return None
            self._blocks.move_to_end(collection_id)
            return block

    def put(self, collection_id: str, block: VectorBlock) -> None:
        with self._lock:
            old = self._blocks.pop(collection_id, None)
            if old is not None:
                self._bytes -= old.nbytes
            if block.nbytes > self.max_bytes:
                return
            self._blocks[collection_id] = block
            self._bytes += block.nbytes
            while self._bytes > self.max_bytes and self._blocks:
                _, evicted = self._blocks.popitem(last=False)
                self._bytes -= evicted.nbytes

    def drop(self, collection_id: str) -> None:
        with self._lock:
            old = self._blocks.pop(collection_id, None)
            if old is not None:
                self._bytes -= old.nbytes


def top_by_cosine(query: np.ndarray, blocks: Sequence[VectorBlock], n: int) -> list[tuple[int, float]]:
    """The n (seq, cosine) pairs closest to `query` over every block (rows are unit vectors)."""
    seq_parts, score_parts = [], []
    for block in blocks:
        if len(block.seqs):
            seq_parts.append(block.seqs)
            score_parts.append(block.matrix @ query)
    if not seq_parts:
        return []
    seqs = np.concatenate(seq_parts) if len(seq_parts) > 1 else seq_parts[0]
    scores = np.concatenate(score_parts) if len(score_parts) > 1 else score_parts[0]
    n = min(n, len(scores))
    best = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
    best = best[np.argsort(-scores[best], kind="stable")]
    return [(int(seqs[i]), float(scores[i])) for i in best]
