"""Retrieval building blocks with no HTTP or database knowledge: text extraction, chunking,
embeddings, SSRF-safe fetching and hybrid-search scoring. `services/retrieval.py` composes them."""
