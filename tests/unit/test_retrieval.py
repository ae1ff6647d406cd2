"""Retrieval building blocks: chunking, extraction, address rules, scoring, embeddings."""

from __future__ import annotations

import ipaddress

import numpy as np
import pytest

from finetune_service.retrieval.chunking import chunk_pages, count_tokens
from finetune_service.retrieval.embeddings import HashedEmbedder, StaticModelEmbedder, bundled_model_dir
from finetune_service.retrieval.extract import (
    ExtractionError,
    Page,
    UnsupportedFormat,
    detect_format,
    extract,
)
from finetune_service.retrieval.fetch import FetchPolicy, FetchRefused, check_url, refusal_reason, same_host
from finetune_service.retrieval.search import (
    VectorBlock,
    VectorCache,
    coverage,
    fts5_match,
    fuse,
    query_terms,
    top_by_cosine,
)
from tests.api.test_retrieval_helpers import minimal_pdf


def test_chunks_keep_offsets_pages_and_urls() -> None:
    sentences = [f"Sentence number {i} talks about topic {i % 7} in some detail." for i in range(120)]
    page_one = "\n\n".join(" ".join(sentences[i:i + 6]) for i in range(0, 60, 6))
    page_two = " ".join(sentences[60:])
    pages = [Page(page_one, label="iv", url=None), Page(page_two, label="v", url="https://x.test/p")]
    document = "\n\n".join(p.text for p in pages)
    chunks = chunk_pages(pages, target_chars=500, max_chars=700, overlap_chars=120)
    assert len(chunks) > 6
    for chunk in chunks:
        assert document[chunk.start:chunk.end] == chunk.text
        assert len(chunk.text) <= 700
    assert {c.page_label for c in chunks} == {"iv", "v"}
    assert all(c.source_url == "https://x.test/p" for c in chunks if c.page_label == "v")
    # Every sentence is in some chunk, and page-two chunks never start inside page one.
    for sentence in sentences:
        assert any(sentence in c.text for c in chunks)
    boundary = len(page_one) + 2
    assert all(c.start >= boundary for c in chunks if c.page_label == "v")


def test_a_long_unbroken_text_is_cut_at_max_chars() -> None:
    text = "word " * 1000
    chunks = chunk_pages([Page(text.strip())], target_chars=300, max_chars=400)
    assert all(len(c.text) <= 400 for c in chunks)
    assert sum(len(c.text.split()) for c in chunks) >= 1000
    assert count_tokens("Hello, world!") == 4


def test_extraction_by_format() -> None:
    page = extract(b"<html><head><title>Hi</title><style>x{}</style></head><body><p>One</p><p>Two &amp; more</p>"
                   b"<a href='/next#frag'>n</a><a href='mailto:a@b'>m</a><script>evil()</script></body></html>",
                   "html", url="https://site.test/dir/page")
    assert page.title == "Hi" and page.text == "One\n\nTwo & more\n\nnm"
    assert page.links == ["https://site.test/next"]
    pdf = extract(minimal_pdf(["First page text", "Second page text"]), "pdf")
    assert [p.label for p in pdf.pages] == ["1", "2"] and "Second page" in pdf.pages[1].text
    csv = extract(b"name,age\nAda,36\nAlan,41\n", "csv")
    assert csv.text == "name: Ada\nage: 36\n\nname: Alan\nage: 41"
    js = extract(b'{"a": {"b": [1, 2]}, "c": null}', "json")
    assert js.text == "a.b: 1, 2\nc: "
    assert extract("caf\u00e9".encode("cp1252"), "text").text == "caf\u00e9"
    with pytest.raises(ExtractionError, match="line 2"):
        extract(b'{"a": 1}\nnope\n', "jsonl")
    with pytest.raises(ExtractionError, match="not a PDF"):
        extract(b"plain", "pdf")
    with pytest.raises(ExtractionError, match="readable PDF"):
        extract(b"%PDF-1.7\n%%garbage", "pdf")


def test_format_detection() -> None:
    assert detect_format("A.PDF") == "pdf"
    assert detect_format("rows.ndjson") == "jsonl"
    assert detect_format(None, "text/html; charset=utf-8") == "html"
    assert detect_format(None, "application/ld+json") == "json"
    with pytest.raises(UnsupportedFormat):
        detect_format("x.exe", "application/octet-stream")


@pytest.mark.parametrize(("address", "reason"), [
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"), ("10.1.2.3", "private"),
    ("172.16.0.1", "private"), ("192.168.1.1", "private"), ("fd00::1", "private"), ("169.254.169.254", "metadata"),
    ("fe80::1", "link-local"), ("169.254.1.1", "link-local"), ("224.0.0.251", "multicast"), ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"), ("::ffff:10.0.0.1", "private"), ("100.64.0.1", "non-public"),
    ("240.0.0.1", "address"), ("fd00:ec2::254", "metadata"), ("198.18.0.1", "private"),
])
def test_non_public_addresses_are_refused(address: str, reason: str) -> None:
    found = refusal_reason(ipaddress.ip_address(address))
    assert found is not None and reason in found


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) is None


async def test_allowlist_by_network_and_by_host() -> None:
    with pytest.raises(FetchRefused, match="loopback"):
        await check_url("http://127.0.0.1:9/x", FetchPolicy())
    checked = await check_url("http://127.0.0.1:9/x?q=1#frag", FetchPolicy(allowlist=("127.0.0.0/8",)))
    assert checked.url == "http://127.0.0.1:9/x?q=1" and str(checked.address) == "127.0.0.1"
    by_host = await check_url("http://LOCALHOST:9/", FetchPolicy(allowlist=("localhost",)))
    assert by_host.address.is_loopback
    with pytest.raises(FetchRefused, match="private"):
        await check_url("http://10.0.0.1/", FetchPolicy(allowlist=("127.0.0.1",)))
    assert same_host("http://a.test:80/x", "http://A.test/") and not same_host("https://a.test/", "http://a.test/")


def test_query_terms_and_fts_expression_cannot_inject() -> None:
    assert query_terms("What is the capital of France?") == ["capital", "france"]
    assert query_terms("the of") == ["the", "of"]  # only stop words: keep them
    expression = fts5_match(query_terms('NEAR(a b) OR "x" * col:y'))
    assert expression == '"near" OR "b" OR "x" OR "col" OR "y"'  # "a" and "or" are stop words
    assert coverage(["bananas", "potassium"], "Banana is rich in potassium.") == 1.0
    assert coverage(["zebra"], "nothing here") == 0.0


def test_fusion_scores_are_bounded_and_reward_both_lists() -> None:
    fused = dict(fuse([(1, 1.0), (2, 0.5)], [1, 3], {1: 1.0, 3: 0.5}))
    assert fused[1] == pytest.approx(1.0)
    assert fused[2] == pytest.approx((61 / 62 * 0.5) / 2)
    assert fused[3] == pytest.approx((61 / 62 * 0.5) / 2)
    assert all(0.0 <= s <= 1.0 for s in fused.values())
    assert list(dict(fuse([(5, -0.3)], [], {})).values()) == [0.0]  # negative cosine counts as nothing


def test_vector_search_and_cache() -> None:
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(1000, 16)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    block = VectorBlock(3, np.arange(100, 1100, dtype=np.int64), matrix)
    hits = top_by_cosine(matrix[42], [block], 5)
    assert hits[0][0] == 142 and hits[0][1] == pytest.approx(1.0, abs=1e-5)
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    cache = VectorCache(max_bytes=block.nbytes * 2)
    cache.put("c1", block)
    assert cache.get("c1", 3) is block and cache.get("c1", 4) is None
    cache.put("c2", block)
    cache.put("c3", block)
    assert cache.get("c1", 3) is None and cache.get("c3", 3) is block


async def test_static_model_ships_in_the_wheel_and_embeds_meaning() -> None:
    folder = bundled_model_dir()
    assert (folder / "model.safetensors").stat().st_size > 1_000_000
    vectors = await StaticModelEmbedder().embed([
        "Photosynthesis converts sunlight into chemical energy in plants.",
        "How do plants make energy from light?",
        "The invoice total includes value added tax.",
    ])
    assert vectors.shape == (3, 64) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2


def test_hashed_embedding_is_deterministic() -> None:
    a = HashedEmbedder().embed_sync(["alpha beta", "alpha beta", "gamma"])
    assert a.shape == (3, 256) and np.array_equal(a[0], a[1]) and abs(float(a[0] @ a[2])) < 0.5
