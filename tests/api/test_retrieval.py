"""Retrieval API: uploads of every file type, search, grounded answers, deletes, tenant isolation,
malformed files. Every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, select, text

from finetune_service.db.engine import Database, is_sqlite
from finetune_service.db.tables import RetrievalChunk, RetrievalDocument
from finetune_service.services.retrieval import NO_CONTEXT_ANSWER
from finetune_service.settings import Settings
from tests.api.test_retrieval_helpers import Client, add_ready, minimal_pdf, search, upload_file, wait_ready
from tests.conftest import AUTH_A, AUTH_B

FACTS = ("The Eiffel Tower was completed in 1889 for the World's Fair in Paris.\n\n"
         "Bananas are rich in potassium and grow in tropical climates.\n\n"
         "The speed of light in vacuum is 299792 kilometres per second.")


async def test_upload_creates_folder_then_adds_to_it(client: Client) -> None:
    response = await upload_file(client, "facts.txt", FACTS.encode())
    assert response.status_code == 200, response.text
    body = response.json()
    folder = body["folder"]["apiFolderId"]
    assert set(body["folder"]) == {"apiFolderId", "createdAt"}
    assert set(body["file"]) == {"url", "tokens", "documentId", "createdAt"}
    assert body["file"]["url"] is None  # local upload: no source URL
    assert body["document"]["status"] in ("pending", "indexing", "ready")
    status = await wait_ready(client, folder, body["document"]["id"])
    assert status["status"] == "ready" and status["tokens"] > 20 and status["chunks"] >= 1

    second = await upload_file(client, "more.md", b"# Notes\n\nThe zebrafish can regrow its heart.", folder_id=folder)
    assert second.status_code == 200, second.text
    assert second.json()["folder"]["apiFolderId"] == folder
    await wait_ready(client, folder, second.json()["document"]["id"])
    files = (await client.get(f"/api/retrieval/folders/{folder}/files", headers=AUTH_A)).json()
    assert {d["metadata"]["file_name"] for d in files["docs"]} == {"facts.txt", "more.md"}
    assert files["count"] == len(files["docs"])


async def test_every_file_type_is_indexed_and_searchable(client: Client) -> None:
    pdf = minimal_pdf(["The mitochondria is the powerhouse of the cell.",
                       "Saturn has a hexagon shaped storm at its north pole."])
    html = (b"<html><head><title>T</title><script>var hidden = 'xylophone';</script></head><body>"
            b"<h1>Birds</h1><p>The albatross has the largest wingspan of any living bird.</p></body></html>")
    files = {
        "notes.txt": b"Copper is an excellent conductor of electricity.",
        "readme.md": b"# Volcanoes\n\nMount Etna is an active volcano in Sicily.",
        "page.html": html,
        "paper.pdf": pdf,
        "data.json": json.dumps([{"city": "Reykjavik", "fact": "northernmost capital of a sovereign state"}]).encode(),
        "table.csv": b"animal,habitat\ncapybara,South American wetlands\n",
        "rows.jsonl": b'{"q": "What colour is a ruby?", "a": "A ruby is red."}\n{"q": "x", "a": "y"}\n',
    }
    folder = None
    for name, content in files.items():
        fields = {"folder_id": folder} if folder else {}
        folder, _, status = await add_ready(client, name, content, **fields)
        assert status["fileName"] == name
    assert folder is not None
    expectations = {
        "conductor electricity copper": ("notes.txt", "Copper"),
        "Etna volcano Sicily": ("readme.md", "Etna"),
        "albatross wingspan": ("page.html", "albatross"),
        "Saturn hexagon storm": ("paper.pdf", "hexagon"),
        "mitochondria powerhouse": ("paper.pdf", "mitochondria"),
        "Reykjavik capital": ("data.json", "Reykjavik"),
        "capybara habitat": ("table.csv", "capybara"),
        "ruby colour": ("rows.jsonl", "ruby is red"),
    }
    for query, (file_name, needle) in expectations.items():
        response = await search(client, folder, query)
        assert response.status_code == 200, response.text
        best = response.json()["sentences"][0]
        assert best["metadata"]["file_name"] == file_name, (query, best)
        assert needle in best["sentence"]
        assert best["metadata"]["source_url"] is None
        assert 0 < best["score"] <= 1
    # PDF chunks keep their page labels; HTML scripts are not indexed.
    saturn = (await search(client, folder, "Saturn hexagon storm")).json()["sentences"][0]
    assert saturn["metadata"]["page_label"] == "2"
    mito = (await search(client, folder, "mitochondria powerhouse")).json()["sentences"][0]
    assert mito["metadata"]["page_label"] == "1"
    hidden = (await search(client, folder, "xylophone", similarity_threshold=0.0)).json()["sentences"]
    assert all("xylophone" not in s["sentence"] for s in hidden)
    # Offsets point into the document's text.
    capybara = (await search(client, folder, "capybara")).json()["sentences"][0]["metadata"]
    assert capybara["start_offset"] == 0 and capybara["end_offset"] > capybara["start_offset"]


async def test_search_by_collection_threshold_and_top(client: Client) -> None:
    folder, _, _ = await add_ready(client, "facts.txt", FACTS.encode())
    await add_ready(client, "other.txt", b"Potassium iodide protects the thyroid gland.", folder_id=folder,
                    collection_name="medical")
    everything = (await search(client, folder, "potassium", similarity_threshold=0.0)).json()["sentences"]
    assert {s["metadata"]["collection_name"] for s in everything} == {"default", "medical"}
    scores = [s["score"] for s in everything]
    assert scores == sorted(scores, reverse=True)

    medical = (await search(client, folder, "potassium", collection_name="medical",
                            similarity_threshold=0.0)).json()["sentences"]
    assert medical and all(s["metadata"]["collection_name"] == "medical" for s in medical)
    assert all("thyroid" in s["sentence"] for s in medical)

    strict = (await search(client, folder, "potassium", similarity_threshold=0.99)).json()["sentences"]
    assert strict == []
    unrelated = (await search(client, folder, "quantum chromodynamics lattice gauge")).json()["sentences"]
    assert unrelated == []  # default threshold 0.4 keeps unrelated chunks out
    one = (await search(client, folder, "potassium", top=1, similarity_threshold=0.0)).json()["sentences"]
    assert len(one) == 1

    missing = await search(client, folder, "potassium", collection_name="nope")
    assert missing.status_code == 404
    bad_top = await search(client, folder, "potassium", top=0)
    assert bad_top.status_code == 422


async def test_grounded_answer_and_only_with_context(client: Client) -> None:
    folder, _, _ = await add_ready(client, "facts.txt", FACTS.encode())
    grounded = await client.post("/api/retrieval/answer", headers=AUTH_A, json={
        "folder_id": folder, "conversation": [{"role": "user", "content": "When was the Eiffel Tower completed?"}],
        "only_with_context": True,
    })
    assert grounded.status_code == 200, grounded.text
    body = grounded.json()
    assert body["object"] == "chat.completion" and body["model"] == "sandbox/sandbox-chat-large"
    assert "1889" in body["choices"][0]["message"]["content"]
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["sources"] and "1889" in body["sources"][0]["sentence"]
    assert body["usage"]["prompt_tokens"] > 0  # the model was called

    refused = await client.post("/api/retrieval/answer", headers=AUTH_A, json={
        "folder_id": folder, "query": "Who won the 1954 chess olympiad?", "only_with_context": True})
    assert refused.status_code == 200
    refused_body = refused.json()
    assert refused_body["choices"][0]["message"]["content"] == NO_CONTEXT_ANSWER
    assert refused_body["sources"] == [] and refused_body["usage"]["total_tokens"] == 0

    # Without only_with_context the model answers anyway (the sandbox echoes when it has no context).
    free = await client.post("/api/retrieval/answer", headers=AUTH_A, json={
        "folder_id": folder, "query": "Who won the 1954 chess olympiad?", "model": "ROBIN_3"})
    assert free.status_code == 200
    assert free.json()["choices"][0]["message"]["content"].startswith("[sandbox]")
    assert free.json()["sources"] == []

    unknown_model = await client.post("/api/retrieval/answer", headers=AUTH_A, json={
        "folder_id": folder, "query": "Eiffel Tower", "model": "sandbox/nope"})
    assert unknown_model.status_code == 404


async def test_streamed_answer_ends_with_sources_and_done(client: Client) -> None:
    folder, _, _ = await add_ready(client, "facts.txt", FACTS.encode())
    response = await client.post("/api/retrieval/answer", headers=AUTH_A, json={
        "folder_id": folder, "query": "What is the speed of light?", "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [e[len("data: "):] for e in response.text.split("\n\n") if e.startswith("data: ")]
    assert events[-1] == "[DONE]"
    sources = json.loads(events[-2])
    assert sources["object"] == "retrieval.sources" and "299792" in sources["sources"][0]["sentence"]
    content = "".join((json.loads(e)["choices"][0]["delta"].get("content") or "")
                      for e in events[:-2] if json.loads(e).get("choices"))
    assert "299792" in content

    empty = await client.post("/api/retrieval/answer", headers=AUTH_A, json={
        "folder_id": folder, "query": "medieval tapestry weaving", "stream": True, "only_with_context": True})
    assert empty.status_code == 200
    assert NO_CONTEXT_ANSWER in empty.text and empty.text.rstrip().endswith("data: [DONE]")


async def _query(settings: Settings, sql: Any, params: dict[str, Any] | None = None) -> Any:
    """Run one query on the test database with an engine of this event loop (the app's is in another)."""
    database = Database(settings.database_url)
    try:
        async with database.session() as session:
            return (await session.execute(sql, params or {})).scalar_one_or_none()
    finally:
        await database.dispose()


async def _chunk_count(settings: Settings, **where: str) -> int:
    query = select(func.count()).select_from(RetrievalChunk)
    for key, value in where.items():
        query = query.where(getattr(RetrievalChunk, key) == value)
    return int(await _query(settings, query))


async def _full_text_hits(settings: Settings, word: str) -> int:
    if is_sqlite(settings.database_url):
        sql = "SELECT count(*) FROM retrieval_chunks_fts WHERE retrieval_chunks_fts MATCH :w"
    else:
        sql = "SELECT count(*) FROM retrieval_chunks WHERE search_vector @@ to_tsquery('english', :w)"
    return int(await _query(settings, text(sql), {"w": word}))


async def test_deletes_really_delete(client: Client, settings: Settings) -> None:
    folder, document, _ = await add_ready(client, "facts.txt", FACTS.encode())
    await add_ready(client, "keep.txt", b"Giraffes sleep about four hours a day.", folder_id=folder,
                    collection_name="keep")
    hit = (await search(client, folder, "bananas potassium")).json()["sentences"][0]
    element = hit["metadata"]["element_id"]
    assert await _full_text_hits(settings, "bananas") == 1

    gone = await client.delete(f"/api/retrieval/folders/{folder}/collections/default/elements/{element}",
                               headers=AUTH_A)
    assert gone.status_code == 200, gone.text
    assert await _chunk_count(settings, id=element) == 0
    assert await _full_text_hits(settings, "bananas") == 0
    after = (await search(client, folder, "bananas potassium", similarity_threshold=0.0)).json()["sentences"]
    assert element not in {s["metadata"]["element_id"] for s in after}
    again = await client.delete(f"/api/retrieval/folders/{folder}/collections/default/elements/{element}",
                                headers=AUTH_A)
    assert again.status_code == 404

    await add_ready(client, "more.txt", b"Octopuses have three hearts.", folder_id=folder)
    dropped = await client.delete(f"/api/retrieval/folders/{folder}/collections/default", headers=AUTH_A)
    assert dropped.status_code == 200 and dropped.json()["deleted"] >= 1
    assert await _chunk_count(settings, document_id=document) == 0
    listing = (await client.get(f"/api/retrieval/folders/{folder}/files", headers=AUTH_A)).json()
    assert {d["metadata"]["collection_name"] for d in listing["docs"]} == {"keep"}
    assert await _full_text_hits(settings, "octopuses") == 0
    assert await _query(settings, select(RetrievalDocument.id).where(RetrievalDocument.id == document)) is None
    assert (await client.get(f"/api/retrieval/folders/{folder}/documents/{document}", headers=AUTH_A)).status_code \
        == 404
    assert (await search(client, folder, "octopus hearts", collection_name="default")).status_code == 404
    kept = (await search(client, folder, "giraffes sleep")).json()["sentences"]
    assert kept and "Giraffes" in kept[0]["sentence"]
    twice = await client.delete(f"/api/retrieval/folders/{folder}/collections/default", headers=AUTH_A)
    assert twice.status_code == 404


async def test_other_tenants_get_404_and_no_results(client: Client) -> None:
    folder, document, _ = await add_ready(client, "facts.txt", FACTS.encode())
    element = (await search(client, folder, "Eiffel")).json()["sentences"][0]["metadata"]["element_id"]
    checks = [
        await search(client, folder, "Eiffel", headers=AUTH_B),
        await client.get(f"/api/retrieval/folders/{folder}/files", headers=AUTH_B),
        await client.get(f"/api/retrieval/folders/{folder}/documents/{document}", headers=AUTH_B),
        await client.delete(f"/api/retrieval/folders/{folder}/collections/default", headers=AUTH_B),
        await client.delete(f"/api/retrieval/folders/{folder}/collections/default/elements/{element}",
                            headers=AUTH_B),
        await upload_file(client, "x.txt", b"intruder text", headers=AUTH_B, folder_id=folder),
        await client.post("/api/retrieval/answer", headers=AUTH_B, json={"folder_id": folder, "query": "Eiffel"}),
    ]
    for response in checks:
        assert response.status_code == 404, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
    # B's own folder never sees A's chunks.
    b_folder, _, _ = await add_ready(client, "b.txt", b"Tenant B writes about lighthouses.", headers=AUTH_B)
    b_hits = (await search(client, b_folder, "Eiffel Tower 1889", headers=AUTH_B,
                           similarity_threshold=0.0)).json()["sentences"]
    assert all("Eiffel" not in s["sentence"] for s in b_hits)
    a_files = (await client.get(f"/api/retrieval/folders/{folder}/files", headers=AUTH_A)).json()
    assert a_files["count"] >= 1 and all(d["metadata"]["file_name"] == "facts.txt" for d in a_files["docs"])


async def test_malformed_files_are_clear_4xx(client: Client, settings: Settings) -> None:
    bad_pdf = await upload_file(client, "broken.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog >> garbage")
    assert bad_pdf.status_code == 422, bad_pdf.text
    assert "PDF" in bad_pdf.json()["detail"]
    not_pdf = await upload_file(client, "fake.pdf", b"hello, I am text")
    assert not_pdf.status_code == 422 and "not a PDF" in not_pdf.json()["detail"]
    bad_json = await upload_file(client, "data.json", b'{"a": 1,,}')
    assert bad_json.status_code == 422 and "Invalid JSON at line 1" in bad_json.json()["detail"]
    bad_jsonl = await upload_file(client, "rows.jsonl", b'{"a": 1}\n{"a": \n')
    assert bad_jsonl.status_code == 422 and "line 2" in bad_jsonl.json()["detail"]
    unsupported = await upload_file(client, "tool.exe", b"MZ\x90\x00binary")
    assert unsupported.status_code == 415 and ".pdf" in unsupported.json()["detail"]
    empty = await upload_file(client, "empty.txt", b"   \n  ")
    assert empty.status_code == 422 and "no text" in empty.json()["detail"]
    no_file = await client.post("/api/retrieval/files", data={"folder_id": "x"}, files={"other": ("a", b"b")},
                                headers=AUTH_A)
    assert no_file.status_code == 422 and "'file'" in no_file.json()["detail"]
    unknown_folder = await upload_file(client, "a.txt", b"text", folder_id="fld_missing")
    assert unknown_folder.status_code == 404
    assert await _chunk_count(settings) == 0


async def test_provider_embedding_collection(client: Client) -> None:
    folder, _, status = await add_ready(client, "facts.txt", FACTS.encode(), collection_name="provider",
                                        embedding_model="sandbox/sandbox-chat-small")
    assert status["embeddingModel"] == "sandbox/sandbox-chat-small"
    best = (await search(client, folder, "speed of light vacuum")).json()["sentences"][0]
    assert "299792" in best["sentence"] and best["metadata"]["collection_name"] == "provider"
    conflict = await upload_file(client, "x.txt", b"more", folder_id=folder, collection_name="provider",
                                 embedding_model="local/hashed-256")
    assert conflict.status_code == 409
    unknown = await upload_file(client, "x.txt", b"more", embedding_model="local/unknown")
    assert unknown.status_code == 422
