"""The offline "training" engine shared by the Sandbox provider and the test emulators.

A fine-tune here is a nearest-neighbour responder over the training file: asked a
question, it answers with the assistant turn of the most similar training prompt
(TF-IDF cosine over words). Status moves through a realistic timeline driven by the
wall clock, so a job's state is a pure function of its start time and can be
recomputed after a restart.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

_WORD = re.compile(r"\w+", re.UNICODE)

# Stages every simulated job walks through; `running` lasts RUNNING_STEPS steps.
STAGES = ("validating", "queued", "running", "succeeded")
RUNNING_STEPS = 4


def tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def example_from_line(record: dict[str, Any]) -> tuple[str, str] | None:
    """(prompt text, answer) from any JSONL shape we produce or providers accept."""
    if "messages" in record or "conversations" in record:
        messages = record.get("messages") or record.get("conversations") or []
        last_assistant = max(
            (i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "assistant"),
            default=None,
        )
        if last_assistant is None:
            return None
        prompt = " ".join(
            content_text(m.get("content"))
            for m in messages[:last_assistant]
            if isinstance(m, dict) and m.get("role") == "user"
        )
        return prompt, content_text(messages[last_assistant].get("content"))
    if "prompt" in record and "completion" in record:
        return content_text(record["prompt"]), content_text(record["completion"])
    if "input" in record and "preferred_output" in record:
        inputs = record["input"].get("messages", [])
        prompt = " ".join(content_text(m.get("content")) for m in inputs if m.get("role") == "user")
        preferred = record["preferred_output"]
        return prompt, content_text(preferred[0].get("content") if preferred else "")
    if "contents" in record:
        parts = [c for c in record["contents"] if isinstance(c, dict)]
        users = [p for p in parts if p.get("role") == "user"]
        models = [p for p in parts if p.get("role") == "model"]
        if not models:
            return None
        text = lambda c: " ".join(str(x.get("text", "")) for x in c.get("parts", []))  # noqa: E731
        return " ".join(text(u) for u in users), text(models[-1])
    if "text" in record:
        return str(record["text"]), str(record["text"])
    return None


def parse_jsonl(data: bytes | str) -> list[dict[str, Any]]:
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    # Split on "\n" only: U+2028 inside a JSON string is content, not a line break.
    return [json.loads(line) for line in text.split("\n") if line.strip()]


@dataclass(frozen=True)
class NearestNeighbourResponder:
    prompts: tuple[str, ...]
    answers: tuple[str, ...]

    @classmethod
    def train(cls, records: Iterable[dict[str, Any]]) -> NearestNeighbourResponder:
        pairs = [p for p in (example_from_line(r) for r in records) if p is not None]
        return cls(tuple(p for p, _ in pairs), tuple(a for _, a in pairs))

    def to_json(self) -> str:
        return json.dumps({"prompts": self.prompts, "answers": self.answers}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> NearestNeighbourResponder:
        data = json.loads(text)
        return cls(tuple(data["prompts"]), tuple(data["answers"]))

    def best_index(self, question: str) -> int | None:
        if not self.prompts:
            return None
        return best_match(question, self.prompts)

    def answer(self, messages: Sequence[dict[str, Any]]) -> str | None:
        users = [content_text(m.get("content")) for m in messages if m.get("role") == "user"]
        index = self.best_index(users[-1] if users else "")
        return None if index is None else self.answers[index]

    def exact_match(self, records: Iterable[dict[str, Any]]) -> float | None:
        pairs = [p for p in (example_from_line(r) for r in records) if p is not None]
        if not pairs:
            return None
        hits = 0
        for prompt, expected in pairs:
            index = self.best_index(prompt)
            hits += index is not None and self.answers[index].strip() == expected.strip()
        return hits / len(pairs)


def best_match(question: str, passages: Sequence[str]) -> int | None:
    """Index of the passage most similar to `question` (TF-IDF cosine); None only when empty."""
    if not passages:
        return None
    docs = [Counter(tokens(p)) for p in passages]
    df: Counter[str] = Counter()
    for doc in docs:
        df.update(doc.keys())
    n = len(docs)
    idf = {t: math.log((1 + n) / (1 + c)) + 1.0 for t, c in df.items()}
    query = Counter(tokens(question))

    def weigh(counts: Counter[str]) -> dict[str, float]:
        return {t: c * idf.get(t, 0.0) for t, c in counts.items()}

    qv = weigh(query)
    qn = math.sqrt(sum(v * v for v in qv.values())) or 1.0
    # With no word in common, the first example still answers: a tuned model always replies.
    best, best_score = 0, 0.0
    for i, doc in enumerate(docs):
        dv = weigh(doc)
        dn = math.sqrt(sum(v * v for v in dv.values())) or 1.0
        score = sum(w * dv.get(t, 0.0) for t, w in qv.items()) / (qn * dn)
        if score > best_score:
            best, best_score = i, score
    return best


@dataclass(frozen=True)
class TimelinePoint:
    stage: str  # one of STAGES, or "cancelled"/"failed" when forced
    progress: float  # 0..100
    step: int  # completed training steps


def timeline_at(elapsed_seconds: float, step_seconds: float) -> TimelinePoint:
    """Where a simulated job is `elapsed_seconds` after creation.

    validating for one step, queued for one step, running for RUNNING_STEPS steps, then done.
    A step of 0 seconds finishes the job at once (handy for tests).
    """
    if step_seconds <= 0:
        return TimelinePoint("succeeded", 100.0, RUNNING_STEPS)
    steps = int(elapsed_seconds // step_seconds)
    if steps < 1:
        return TimelinePoint("validating", 0.0, 0)
    if steps < 2:
        return TimelinePoint("queued", 0.0, 0)
    done = steps - 2
    if done < RUNNING_STEPS:
        return TimelinePoint("running", 100.0 * done / RUNNING_STEPS, done)
    return TimelinePoint("succeeded", 100.0, RUNNING_STEPS)


def simulated_loss(step: int) -> float:
    """A decreasing training loss curve, so dashboards have something real-looking to draw."""
    return round(2.0 * math.exp(-0.6 * step) + 0.1, 4)


def hashed_embedding(text: str, dimensions: int = 256) -> list[float]:
    """Deterministic bag-of-words embedding (feature hashing), L2-normalised."""
    vector = [0.0] * dimensions
    for token in tokens(text):
        digest = hashlib.blake2b(token.encode(), digest_size=8).digest()
        index = int.from_bytes(digest[:4], "little") % dimensions
        sign = 1.0 if digest[4] & 1 else -1.0
        vector[index] += sign
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]
